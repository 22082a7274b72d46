"""Notebook 02's smoke results: every variant ran, numbers are in range, the semantic view has genre structure."""
import pytest

from lib import claims, metrics

STEM = "02_dual_view_fusion"
NAMES = ("ID-only (SASRec)", "gated w/o L_align", "concat", "weighted", "cross-attention", "text-only")


@pytest.mark.notebook
def test_nb02_smoke_results(smoke_results):
    res = smoke_results(STEM)
    assert res["smoke"] is True and res["dataset"] == "ml-100k"
    assert res["seeds"] == [0, 1] and res["d_text"] == 384 and res["text_model"] == "all-MiniLM-L6-v2"
    lam = res["lambda_selection"]["chosen"]
    assert lam in res["lambda_selection"]["grid"] and 0.0 in res["lambda_selection"]["grid"]   # 0 is a candidate
    gated, best_pos = res["names"]["gated"], res["names"]["gated_best_positive_lambda"]
    assert gated == f"gated (lambda={lam:g})" and best_pos == "gated (lambda=1)"
    assert set(res["variants"]) == set(NAMES) | {gated, best_pos}       # lambda = 0 chosen: L_align's row is lambda 1
    for name, v in res["variants"].items():
        for run in v["runs"]:
            assert set(metrics.GROUPS) <= set(run)
            for g in metrics.GROUPS:
                hr, nd, mrr = run[g]["HR@10"], run[g]["NDCG@10"], run[g]["MRR@10"]
                assert 0 <= mrr <= nd <= hr <= 1, (name, g)
            # even one epoch of a small model beats random ranking (HR@10 ~ 10/1682 = 0.006) overall
            assert run["overall"]["HR@10"] > 0.01, name
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
    cl = res["claims"]
    assert {c["verdict"] for c in cl.values()} <= set(metrics.VERDICTS)
    # every claim of 02 but the one against notebook 01's results file, which a smoke run does not read
    assert set(cl) == {c.id for c in claims.for_notebook("02")} - {"02.gated_vs_sasrec01"}
    assert all(c["id"] == k for k, c in cl.items())
    assert cl["02.align"]["a"] == "gated fusion" and cl["02.noalign_vs_id"]["verdict"] in metrics.VERDICTS
    main = cl["02.gated_vs_id"]
    assert main["kind"] == "paper" and main["paper_effect"] == pytest.approx(0.4300 / 0.4188 - 1, abs=1e-4)
    assert main["size"] in metrics.SIZES and main["mde"] > 0 and 0 <= main["p_value"] <= 1
    assert main["n_seeds"] == [2, 2] and main["seed_std"] is not None and main["n_users"] == 943
    assert main["ci"][0] <= main["diff"] <= main["ci"][1]
    rival = cl["02.rival.concat"]
    assert rival["n_seeds"] == [2, 1]
