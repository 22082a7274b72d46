"""Notebook 03's recorded smoke results, against loose bounds (the numbers come from a tiny run)."""
import math

import pytest

STEM = "03_diffusion_trajectories"


@pytest.mark.notebook
def test_nb03_smoke_results(smoke_results):
    r = smoke_results(STEM)
    assert r["smoke"] is True and r["seeds"] == [0]
    # ADARec's released configuration (linear 1e-4..0.02, T=50) at its deepest noise t=10 keeps ~99% of the signal
    a = r["adarec_code_max"]
    assert 0.98 < a["signal sqrt(alpha_bar)"] < 0.995 and 30 < a["SNR"] < 60
    assert 35 <= a["equivalent_t"] <= 50, "same alpha_bar on the 1000-step linear schedule"
    # the toy denoiser learned, and the real one beats predicting zero on held-out users
    assert r["toy"]["loss_last100"] < r["toy"]["loss_first100"]
    assert r["denoiser"]["held_out"] < r["denoiser"]["held_out_zero_predictor"]
    # x_0 . E^T is SASRec's own scorer
    assert r["x0"]["HR@10"] == pytest.approx(r["sasrec"]["test"]["HR@10"], abs=1e-9)
    one = r["hierarchy"]["one_shot"]
    assert one["t"] == sorted(one["t"]) and one["t"][0] == 0
    assert one["cos"][0] > 0.95, "at t=0 the prediction is essentially x_0"
    assert one["cos"][0] > one["cos"][-1] + 0.1, "more noise, less of x_0 kept"
    for key in ("HR@10", "NDCG@10"):
        assert all(0 <= v <= 1 for v in one[key])
    assert all(-1 <= v <= 1 for v in one["silhouette"])
    runs = r["hierarchy"]["runs"]
    partial = next(v for k, v in runs.items() if k.startswith("reverse from"))
    noise = runs["from pure noise"]
    assert partial["final"]["cos"] > noise["final"]["cos"] + 0.2, "a partial reverse keeps the user, pure noise not"
    assert all(math.isfinite(v) for v in r["seconds"].values())
    cl = r["claims"]
    assert len(cl) == 3 and all(c["n_users"] == 943 and c["ci"][0] <= c["diff"] <= c["ci"][1] for c in cl.values())
    # a representation at the highest noise level cannot keep all of SASRec's accuracy in a tiny run
    assert cl["03.high_noise_keeps"]["diff"] < 0.05 and cl["03.high_noise_keeps"]["kind"] == "paper"
