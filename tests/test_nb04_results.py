"""Notebook 04's smoke results: the recorded numbers exist, have the right shape and lie in sane bounds."""
import math

import pytest

from lib import metrics

STEM = "04_intent_clusters"


@pytest.mark.notebook
def test_nb04_smoke_results(smoke_results):
    res = smoke_results(STEM)
    assert res["smoke"] is True and res["seeds"] == [0, 1]        # two seeds: the multi-seed paths run
    # augmentations start from real noise: the recorded schedule's first sampling step has alpha_bar ~ 0
    from lib import diffusion
    p = res["params"]
    s = diffusion.Scheduler(p["T"], p["beta_schedule"], timestep_spacing=p["timestep_spacing"])
    assert s.start_alpha_bar(p["n_inference_steps"])[1] < diffusion.MAX_START_ALPHA_BAR
    cl = res["claims"]
    assert len(cl) == 7 and {c["verdict"] for c in cl.values()} <= set(metrics.VERDICTS)
    assert cl["04.partial_noise"]["n_seeds"] == [1, 1]                 # the partial-noise switch ran (t = 5 in smoke)
    assert res["partial_noise"]["aug_start_t"] == 5 and "valid_NDCG@10" in res["partial_noise"]["fit"]
    spec = res["augmentation_specificity"]
    assert len(spec) == 2 and all(0 <= v["rank percentile of its own (0 = nearest, 0.5 = chance)"] <= 1 for v in spec.values())
    assert all(v["rows sharing its prototype"] >= 2 for v in spec.values())
    assert 0 <= res["prototype_agreement_train_eval"] <= 1
    main = cl["04.llmdirec_vs_id"]
    assert main["n_seeds"] == [2, 2] and main["seed_std"] is not None and main["ci"][0] <= main["diff"] <= main["ci"][1]
    abl = cl["04.diffusion_cl"]
    assert abl["n_seeds"] == [1, 1] and abl["seed_std"] is None
    models = res["models"]
    assert {"LLMDiRec", "ID-only", "SASRec", "fusion only (gated)"} <= set(models)
    for name, m in models.items():
        assert len(m["runs"]) == len(res["seeds"]), name
        for g in ("overall", "tail", "head", "cold", "hot"):
            v = m["summary"][g]["NDCG@10"]["mean"]
            assert 0.0 <= v <= 1.0, (name, g, v)
        assert m["runs"][0]["overall"]["users"] == 943
    assert set(res["ablations"]) == {"no diffusion, no L_cl", "no diffusion (L_cl vs c_k)", "no L_cl", "no L_align"}
    sil = res["silhouette"]
    K = res["params"]["K"]
    assert sil["K"] == K and sil["paper_toys"] == {"InDiRec": 0.0294, "LLMDiRec": 0.1197}
    for name in ("ID-only", "LLMDiRec"):
        s = sil[name]
        assert len(s["kmeans_per_training_seed"]) == len(res["seeds"])
        for key in ("kmeans_mean", "genre"):
            assert -1.0 <= s[key] <= 1.0, (name, key, s[key])
        # K-means clusters of the points themselves separate them better than random, i.e. above 0
        assert s["kmeans_mean"] > 0
        assert len(sil["vs_K"][name]) == len(sil["vs_K"]["K"])
    scratch = res["intents_from_scratch"]
    assert sum(scratch["sizes"]) > 0 and len(scratch["sizes"]) == K
    # recent-window intents are sticky: far more often kept than a uniform assignment (1/K) would
    assert scratch["stay_probability"] > 2 / K
    assert all(math.isfinite(v) and v >= 0 for v in res["timings"].values())
