"""Recorded smoke results of lesson 06 and evidence 06 (HDRec): loose bounds, not exact values; and the lesson's
exercise check (it passes on a right answer and names the common wrong ones)."""
import math

import nbformat
import pytest
import torch
import torch.nn.functional as F

from lib import metrics, run
from lib.models import hdrec

STEM = "06_hdrec_dual_lora"
EVIDENCE = "evidence/06_hdrec_dual_lora"


@pytest.mark.notebook
def test_nb06_lesson_smoke_results(smoke_results):
    res = smoke_results(STEM)
    assert res["smoke"] is True and res["seeds"] == [0]
    assert "claims" not in res, "a lesson decides nothing: its claims live in the evidence notebook"
    p = res["params"]
    assert p["steps"] <= 5 and p["n_eval_users"] <= 10 and p["llm_layers"] <= 2, "smoke shrinks every size"
    assert set(res["test"]) == {"Pop", "SASRec", "HDRec: text adapter (alpha = 0)", "HDRec: ID adapter",
                                f"HDRec fused (alpha = {res['best_alpha']})"}
    for name, m in res["test"].items():
        assert all(0.0 <= v <= 1.0 for v in m.values()), name
        assert m["NDCG@10"] <= m["HR@10"] + 1e-12 <= m["HR@20"] + 2e-12, name
    assert set(res["methods"]) == set(res["test"])
    assert all(len(m["runs"]) == 1 for m in res["methods"].values()), "one seed"
    assert 0.0 <= res["best_alpha"] <= 1.0 and len(res["alpha_curve"]["alpha"]) == 11
    # the toy's KL picture: more KL weight, closer distributions of the two adapters
    kl_end = {float(k): v for k, v in res["toy_kl_end"].items()}
    assert kl_end[2.0] < kl_end[0.5] < kl_end[0.0]
    assert len(res["history"]) == p["steps"]
    for row in res["history"]:
        for k in ("ce_text", "ce_id", "kl_text", "kl_id"):
            assert math.isfinite(row[k]) and row[k] >= 0, (k, row)
    assert res["seconds"]["train"] > 0 and res["llm_source"] in ("cache", "gguf")


def test_nb06_lesson_source_is_a_lesson():
    nb = nbformat.read(run.NOTEBOOKS / f"{STEM}.ipynb", as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for banned in ("claims.decide", "decide_all", "metrics.compare("):
        assert banned not in code, banned
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert len([ln for ln in params.source.splitlines() if ln and not ln.startswith(" ")]) <= 12
    heads = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown"]
    assert any(h.startswith("## Summary") for h in heads)
    md = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "## Exercises" in md and "(evidence/06_hdrec_dual_lora.ipynb)" in md
    ev = nbformat.read(run.NOTEBOOKS / f"{EVIDENCE}.ipynb", as_version=4)
    assert "(../06_hdrec_dual_lora.ipynb)" in ev.cells[0].source, "the evidence links back to its lesson"
    assert "In our trials" not in "\n".join(c.source for c in ev.cells), "no trial log: a defaults table instead"


def test_nb06_evidence_decides_on_the_k_event_split_beside_01s_sasrec():
    """Evidence 06 at its defaults: the K-event split (K >= 2) built once, and the reference row evidence 01's SASRec
    fitted on it with each seed (a weaker SASRec, or leave-one-out, fails here; the smoke test checks the file)."""
    import re

    from lib import params
    d = params.defaults(EVIDENCE)
    assert d["k_events"] >= 2 and d["sasrec_epochs"] is None and d["seeds"] >= 3
    ev = nbformat.read(run.NOTEBOOKS / f"{EVIDENCE}.ipynb", as_version=4)
    code = "\n".join(c.source for c in ev.cells if c.cell_type == "code")
    assert "leave_one_out(" not in code and len(re.findall(r"data\.last_k_events\(ds, k_events\)", code)) == 1
    assert re.search(r"return train\.fit_sasrec_reference\(ds, split, s, device=device, smoke=smoke\)", code)
    assert """REF = "SASRec (01's schedule)" if sasrec_epochs is None""" in code


@pytest.mark.notebook
def test_nb06_evidence_smoke_results(smoke_results):
    res = smoke_results(EVIDENCE)
    assert res["smoke"] is True and res["seeds"] == [0, 1], "smoke runs the seeds' code with 2 seeds"
    p = res["params"]
    assert p["steps"] <= 5 and p["n_eval_users"] <= 10, "smoke shrinks every size"
    assert p["T"] >= 2 and len(res["eval_users"]) == p["n_eval_users"] and p["seeds"] == 2
    assert p["llm_layers"] <= 2 and p["preset"] == "laptop", "smoke keeps at most 2 decoder blocks"
    assert p["ipl_init"] == "sasrec" and p["ipl_standardize"] is True, "the defaults' warm start runs under smoke"
    assert p["ipl_probe"] is True and p["probe_users"] <= 10, "the default probe start runs under smoke"
    assert res["probe"]["ridge"] > 0 and res["probe"]["r2_holdout"] <= 1.0
    # the probe's hold-out is by user, with an R^2 per adapter
    assert res["probe"]["holdout_by"] == "user" and set(res["probe"]["r2_holdout_by_kind"]) == {"text", "id"}
    # every probe-started row says so; the paper's start is there too
    tag, paper = " (SASRec-probe head)", " (paper's start)"
    expected = {"Pop", "SASRec (01's schedule)", f"text only{tag}", f"ID only{tag}", f"HDRec{tag}: its text adapter (alpha = 0)",
                f"HDRec{tag}: its ID adapter", f"text adapter at the start{tag} (no step)",
                f"ID adapter at the start{tag} (no step)", f"text only{paper}"}
    assert expected <= set(res["test"])
    for prefix in (f"HDRec fused{tag}", f"w/o DLA fused{tag}", f"w/o KL fused{tag}", f"HDRec fused{paper}"):
        assert any(k.startswith(prefix) for k in res["test"]), prefix
    assert all(tag in k or paper in k for k in res["test"] if k not in ("Pop", res["reference_row"]))
    cl = res["claims"]
    assert "not the paper's setting" in cl["06.text_vs_id"]["note"] and "note" not in cl["06.paper_start.hdrec_vs_text"]
    assert {"06.paper_start.text_vs_pop", "06.paper_start.hdrec_vs_pop", "06.probe.text"} <= set(cl)
    # the headline rows carry every seed, the ablations one
    assert cl["06.hdrec_vs_text"]["n_seeds"] == [2, 2] and cl["06.hdrec_vs_wo_kl"]["n_seeds"] == [2, 1]
    assert cl["06.hdrec_vs_pop"]["n_seeds"] == [2, 1] and cl["06.hdrec_vs_sasrec"]["n_seeds"] == [2, 2]
    assert cl["06.paper_start.hdrec_vs_text"]["n_seeds"] == [1, 1], "the paper's-start rows run seed `seed` only"
    assert set(res["seed_runs"]) == {"HDRec", "text only", "ID only", "SASRec"}
    assert all([x["seed"] for x in v] == [1] for v in res["seed_runs"].values())
    hd = next(k for k in res["methods"] if k.startswith(f"HDRec fused{tag}"))
    assert len(res["methods"][hd]["runs"]) == 2 and len(res["methods"]["Pop"]["runs"]) == 1
    assert res["params"]["seed_users"] == len(res["eval_users"])
    # the K-event split: every row is tested on each evaluation user's last k_events items, beside evidence 01's
    # SASRec trained on the same split with every seed of the headline rows
    k, ref = p["k_events"], res["reference_row"]
    assert k == res["k_events"] >= 2 and res["n_events"] == k * len(res["eval_users"])
    assert ref == "SASRec (01's schedule)" and ref in res["methods"] and ref in res["test"]
    for name, m in res["methods"].items():
        assert m["k_events"] == k, name
        assert m["reference"] == (None if name == ref else f"{EVIDENCE}/{ref}"), name
        for run in m["runs"]:
            tested = [i for i, r in enumerate(run["ranks"]) if r is not None]
            assert tested == res["eval_users"], name                      # the same users in every run
            assert all(isinstance(run["ranks"][i], list) and len(run["ranks"][i]) == k for i in tested), name
    assert len(res["methods"][ref]["runs"]) == 2, "the reference runs every seed of the headline rows"
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
    assert s["total"] > 0 and set(s["runs"]) >= {"HDRec", "w/o KL", "w/o DLA", "text only", "ID only", "HDRec, seed 1"}
    assert res["llm_source"] in ("cache", "gguf")


# --------------------------------------------------------------------------- the lesson's exercise check
def _right(z_other, z_self, targets):
    keep = targets > 0
    p = F.softmax(z_other.detach()[keep], -1)
    return (p * (p.log() - F.log_softmax(z_self[keep], -1))).sum(-1).mean()


def test_exercise_check_passes_a_right_answer():
    assert hdrec.check_kl_answer(_right).startswith("right")
    assert hdrec.check_kl_answer(hdrec.kl).startswith("right")


@pytest.mark.parametrize("wrong, says", [
    (lambda zo, zs, t: _right(zs, zo, t), "direction is reversed"),
    (lambda zo, zs, t: (lambda k, p: (p * (p.log() - F.log_softmax(zs[k], -1))).sum(-1).mean())(
        t > 0, F.softmax(zo[t > 0], -1)), "gradient reaches z_other"),
    (lambda zo, zs, t: (lambda p: (p * (p.log() - F.log_softmax(zs, -1))).sum(-1).mean())(
        F.softmax(zo.detach(), -1)), "padded position"),
    (lambda zo, zs, t: (lambda k, p: (p * (p.log() - F.log_softmax(zs[k], -1))).sum())(
        t > 0, F.softmax(zo.detach()[t > 0], -1)), "a sum over positions"),
    (lambda zo, zs, t: F.kl_div(F.log_softmax(zo.detach()[t > 0], -1), F.softmax(zs[t > 0], -1),
                                reduction="batchmean"), "direction is reversed"),
    (lambda zo, zs, t: torch.tensor(0.5), "not D_KL"),
])
def test_exercise_check_names_the_common_mistakes(wrong, says):
    with pytest.raises(AssertionError, match=says):
        hdrec.check_kl_answer(wrong)
