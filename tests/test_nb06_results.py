"""Recorded smoke results of notebook 06 (HDRec): loose bounds, not exact values."""
import math

import pytest

from lib import metrics

STEM = "06_hdrec_dual_lora"


@pytest.mark.notebook
def test_nb06_smoke_results(smoke_results):
    res = smoke_results(STEM)
    assert res["smoke"] is True and res["seeds"] == [0]
    p = res["params"]
    assert p["steps"] <= 5 and p["n_eval_users"] <= 10, "smoke shrinks every size"
    assert p["T"] >= 2 and len(res["eval_users"]) == p["n_eval_users"]
    assert p["llm_layers"] <= 2 and p["preset"] == "laptop", "smoke keeps at most 2 decoder blocks"
    assert p["ipl_init"] == "sasrec" and p["ipl_standardize"] is True, "the defaults' warm start runs under smoke"
    assert p["ipl_probe"] is True and p["probe_users"] <= 10, "the default probe start runs under smoke"
    assert res["probe"]["ridge"] > 0 and res["probe"]["r2_holdout"] <= 1.0
    # the probe's hold-out is by user, with an R^2 per adapter
    assert res["probe"]["holdout_by"] == "user" and set(res["probe"]["r2_holdout_by_kind"]) == {"text", "id"}
    # every probe-started row says so; the paper's start is there too
    tag, paper = " (SASRec-probe head)", " (paper's start)"
    expected = {"Pop", "SASRec (reference)", f"text only{tag}", f"ID only{tag}", f"HDRec{tag}: its text adapter (alpha = 0)",
                f"HDRec{tag}: its ID adapter", f"text adapter at the start{tag} (no step)",
                f"ID adapter at the start{tag} (no step)", f"text only{paper}"}
    assert expected <= set(res["test"])
    for prefix in (f"HDRec fused{tag}", f"w/o DLA fused{tag}", f"w/o KL fused{tag}", f"HDRec fused{paper}"):
        assert any(k.startswith(prefix) for k in res["test"]), prefix
    assert all(tag in k or paper in k for k in res["test"] if k not in ("Pop", "SASRec (reference)"))
    cl = res["claims"]
    assert "not the paper's setting" in cl["06.text_vs_id"]["note"] and "note" not in cl["06.paper_start.hdrec_vs_text"]
    assert {"06.paper_start.text_vs_pop", "06.paper_start.hdrec_vs_pop", "06.probe.text"} <= set(cl)
    # section 7b: the curves of the text adapter, the two one-change runs, the read-position check
    b = res["bf16"]                                                    # the bf16 measurement ran, both precisions
    assert set(b["valid_NDCG@10_start"]) == {"float32", "bfloat16"} and 0 <= b["top10_agreement"] <= 1
    assert b["float32"]["training step (s)"] > 0 and isinstance(b["used"], bool)
    why = res["why"]
    assert set(why["histories"]) == {"lr_lora = 0 (head only)", "IPL dropout 0"}
    assert set(why["position_check"]) == {"start", "text only"}
    assert all(0 <= v <= 1 for pc in why["position_check"].values() for v in pc.values())
    for name, m in {**res["test"], **res["fusion_variants"]}.items():
        for k, v in m.items():
            assert 0.0 <= v <= 1.0, (name, k, v)
        assert m["HR@10"] <= m["HR@20"] + 1e-12 and m["NDCG@10"] <= m["HR@10"] + 1e-12, name
    assert len(res["fusion_variants"]) == 4
    starts = [res["claims"][k] for k in ("06.text_vs_start", "06.id_vs_start")]
    assert all(c["verdict"] in metrics.VERDICTS and c["kind"] == "sanity" for c in starts)
    assert all(m["runs"][0]["ranks"].count(None) == 943 - len(res["eval_users"]) for m in res["methods"].values())
    assert all(0.0 <= a <= 1.0 for a in res["best_alpha"].values())
    # DLA histories: both losses and both KL terms, finite, one row per step
    h = res["histories"]["HDRec"]
    assert len(h) == p["steps"]
    for row in h:
        for k in ("ce_text", "ce_id", "kl_text", "kl_id", "align"):
            assert math.isfinite(row[k]) and row[k] >= 0, (k, row)
    assert "kl_text" not in res["histories"]["text only"][0] and "valid_NDCG@10 (text)" in res["histories"]["text only"][-1]
    assert set(res["histories"]["ID only"][0]) == {"step", "ce_id", "train_seconds", "seconds"}
    # cross-entropy over ~1.7k items starts near log(n_items)
    assert 4.0 < h[0]["ce_text"] < 12.0
    s = res["seconds"]
    assert s["total"] > 0 and set(s["runs"]) >= {"HDRec", "w/o KL", "w/o DLA", "text only", "ID only"}
    assert res["llm_source"] in ("cache", "gguf")
