"""Notebook 02: the lesson (one seed, no claims) and the evidence notebook (claims, seeds, rivals) at smoke sizes;
the lesson's rules and its exercise check, without running the notebook."""

import pytest
import torch

from lib import claims, metrics, run
from nbtools import cells, notebook_function

LESSON, EVIDENCE = "02_dual_view_fusion", "evidence/02_dual_view_fusion"
REF = "SASRec (01's schedule)"           # the ID-only row: evidence 01's SASRec trained on the K-event split
NAMES = (REF, "gated w/o L_align", "concat", "weighted", "cross-attention", "text-only")


def test_evidence_links_back_to_its_lesson():
    """(The rules every lesson follows are tests/test_notebooks.py's.)"""
    assert "[lesson 02](../02_dual_view_fusion.ipynb)" in "".join(cells(EVIDENCE)[0]["source"])


def _gate_check():
    return notebook_function(LESSON, "check_gated_fusion", {"torch": torch})


def test_gate_exercise_check_passes_a_right_answer_and_names_the_common_mistakes():
    from lib.models.fusion import Fusion
    check = _gate_check()
    torch.manual_seed(0)
    fusion = Fusion("gated", 8, 12)
    e_id, e_llm = torch.randn(20, 8), torch.randn(20, 12)

    def right(e_id, a, W, b):
        g = torch.sigmoid(torch.cat([e_id, a], -1) @ W.T + b)
        return g * e_id + (1 - g) * a
    assert check(right, fusion, e_id, e_llm)
    wrong = {"weights the text view": lambda e_id, a, W, b: (lambda g: g * a + (1 - g) * e_id)(
                 torch.sigmoid(torch.cat([e_id, a], -1) @ W.T + b)),
             "sigmoid": lambda e_id, a, W, b: (lambda z: z * e_id + (1 - z) * a)(torch.cat([e_id, a], -1) @ W.T + b),
             "order": lambda e_id, a, W, b: (lambda g: g * e_id + (1 - g) * a)(torch.sigmoid(torch.cat([a, e_id], -1) @ W.T + b)),
             "not quite": lambda e_id, a, W, b: 0.5 * e_id + 0.5 * a}
    for hint, fn in wrong.items():
        with pytest.raises(AssertionError, match=hint):
            check(fn, fusion, e_id, e_llm)


def test_id_only_twin_is_sasrec():
    """The ID-only row of every "beats ID-only" claim is evidence 01's SASRec fitted on this notebook's own split
    (`train.fit_sasrec_reference`, its cache key), evaluated on that split's test events, fitted once per seed; not a
    weaker twin trained here. The default split is a K-event split."""
    from lib import params
    calls, evaluated = [], []

    class Model:
        max_len = 7

        def cpu(self):
            return self

        def eval(self):
            return self

    class Fit:
        best_epoch, history, best_valid, seconds = 1, [{}], {"NDCG@10": 0.1}, 2.0

    class Train:
        @staticmethod
        def fit_sasrec_reference(ds, split, seed, **kw):
            calls.append((ds, split, seed, kw))
            return Model(), Fit(), False

        @staticmethod
        def evaluate_model(model, split, max_len, stage, **kw):
            evaluated.append((split, max_len, stage))
            return {"overall": {"NDCG@10": 0.2}}

    ns = {"fits": {}, "runs": {}, "models": {}, "REF": REF, "train": Train, "ds": "DS", "split": "SPLIT",
          "device": "cpu", "smoke": False}
    fit_reference = notebook_function(EVIDENCE, "fit_reference", ns)
    model = fit_reference(2)
    fit_reference(2)                                                   # a second ask is the same fit, not a second one
    assert calls == [("DS", "SPLIT", 2, {"device": "cpu", "smoke": False})]
    assert evaluated == [("SPLIT", 7, "test")] and ns["models"][(REF, 2)] is model
    assert ns["runs"][(REF, 2)] == {"overall": {"NDCG@10": 0.2}}
    src = "\n".join("".join(c["source"]) for c in cells(EVIDENCE) if c["cell_type"] == "code")
    assert "split = data.last_k_events(ds, k_events)" in src and "leave_one_out" not in src
    assert params.defaults(EVIDENCE)["k_events"] == 10


@pytest.mark.notebook
def test_nb02_lesson_smoke_results(smoke_results):
    res = smoke_results(LESSON)
    assert res["smoke"] is True and res["dataset"] == "ml-100k" and "claims" not in res
    assert set(res["methods"]) == {"Pop", "SASRec", "gated fusion"}
    assert all(len(m["runs"]) == 1 for m in res["methods"].values())             # one seed
    for name, m in res["methods"].items():
        o = m["runs"][0]["overall"]
        assert 0 <= o["NDCG@10"] <= o["HR@10"] <= 1, name
    assert res["lambda_align"] >= 0 and res["lambda_source"]
    assert 0 < res["gate"]["mean"] < 1 and len(res["gate"]["by_popularity_bin"]) == 5
    fg = res["forced_gate"]
    assert set(fg) == {"learned", "0.0", "0.25", "0.5", "0.75", "1.0"} and all(0 <= v <= 1 for v in fg.values())
    assert res["genre_overlap_at10"]["text"] > res["genre_overlap_chance"] + 0.2


@pytest.mark.notebook
def test_nb02_evidence_smoke_results(smoke_results):
    res = smoke_results(EVIDENCE)
    assert res["smoke"] is True and res["dataset"] == "ml-100k"
    assert res["seeds"] == [0, 1] and res["d_text"] == 384 and res["text_model"] == "all-MiniLM-L6-v2"
    lam = res["lambda_selection"]["chosen"]
    assert lam in res["lambda_selection"]["grid"] and 0.0 in res["lambda_selection"]["grid"]   # 0 is a candidate
    gated, best_pos = res["names"]["gated"], res["names"]["gated_best_positive_lambda"]
    assert gated == f"gated (lambda={lam:g})" and best_pos == "gated (lambda=1)"
    assert set(res["variants"]) == set(NAMES) | {gated, best_pos}       # lambda = 0 chosen: L_align's row is lambda 1
    for name, v in res["variants"].items():
        for r in v["runs"]:
            assert set(metrics.GROUPS) <= set(r)
            for g in metrics.GROUPS:
                hr, nd, mrr = r[g]["HR@10"], r[g]["NDCG@10"], r[g]["MRR@10"]
                assert 0 <= mrr <= nd <= hr <= 1, (name, g)
            # even one epoch of a small model beats random ranking (HR@10 ~ 10/1682 = 0.006) overall
            assert r["overall"]["HR@10"] > 0.01, name
    gate = res["gate"]
    assert 0 < gate["mean"] < 1 and -1 <= gate["spearman_popularity"] <= 1
    assert len(gate["by_popularity_bin"]) == 5
    # the frozen text space groups movies by genre far above chance, trained or not
    ov = res["genre_overlap_at10"]
    assert ov["semantic (e_llm)"] > res["genre_overlap_chance"] + 0.2
    assert 0 <= ov["ID (SASRec)"] <= 1 and 0 <= ov["fused (gated)"] <= 1
    # smoke: ID-only x 2 seeds, the grid {0, 1} at seed 0 (lambda 0 is also "w/o L_align"), the chosen lambda and
    # w/o L_align at seed 1 (one fit when lambda 0 is chosen), 4 rivals x 1 seed
    assert res["timings"]["fits"] == (9 if lam == 0 else 10) and len(res["seeds"]) == 2
    # the K-event split (smoke: 3 events per user): recorded, and every row tested on it
    assert res["k_events"] == 3 and res["n_users"] == 943 and 943 < res["n_events"] <= 3 * 943
    assert res["names"]["id_only"] == REF and "vs_sasrec01" not in res
    for name, m in res["methods"].items():
        assert m["k_events"] == 3, name
        assert m["reference"] == (None if name == REF else f"{EVIDENCE}/{REF}"), name
        for r in m["runs"]:
            assert len(r["ranks"]) == 943 and sum(len(x) for x in r["ranks"]) == res["n_events"], name
    assert len(res["methods"][REF]["runs"]) == len(res["seeds"])
    cl = res["claims"]
    assert {c["verdict"] for c in cl.values()} <= set(metrics.VERDICTS)
    # every claim of 02, each against the rows of this run (none read from another notebook's file)
    assert set(cl) == {c.id for c in claims.for_notebook("02")}
    assert all(c["id"] == k for k, c in cl.items())
    # every "beats ID-only" claim's B is the reference row: its mean is the reference's (all users, every event)
    ref_ndcg = sum(r["overall"]["NDCG@10"] for r in res["methods"][REF]["runs"]) / len(res["seeds"])
    for cid in ("02.gated_vs_id", "02.noalign_vs_id"):
        assert cl[cid]["mean_b"] == pytest.approx(ref_ndcg, abs=1e-9) and cl[cid]["n_users"] == 943, cid
    assert "02.gated_vs_sasrec01" not in cl      # retired: on the K-event split it was 02.gated_vs_id twice
    assert cl["02.align"]["a"] == "gated fusion" and cl["02.noalign_vs_id"]["verdict"] in metrics.VERDICTS
    main = cl["02.gated_vs_id"]
    assert main["kind"] == "paper" and main["paper_effect"] == pytest.approx(0.4300 / 0.4188 - 1, abs=1e-4)
    assert main["size"] in metrics.SIZES and main["mde"] > 0 and 0 <= main["p_value"] <= 1
    assert main["n_seeds"] == [2, 2] and main["seed_std"] is not None and main["n_users"] == 943
    assert main["ci"][0] <= main["diff"] <= main["ci"][1]
    assert cl["02.rival.concat"]["n_seeds"] == [2, 1]
