"""Notebook 04: the lesson (one seed, no claims) and the evidence notebook (claims, seeds, ablations, section 4b) at
smoke sizes; the lesson's rules, its exercise check and the evidence notebook's refusal of another dataset's rows,
without running the notebooks."""
import math

import pytest
import torch
import torch.nn.functional as F

from lib import intents, metrics, run
from nbtools import cells, notebook_function

LESSON, EVIDENCE = "04_intent_clusters", "evidence/04_intent_clusters"
REF = "SASRec (01's schedule)"           # evidence 01's SASRec trained on this notebook's K-event split


def test_evidence_links_back_to_its_lesson():
    """(The rules every lesson follows are tests/test_notebooks.py's.)"""
    assert "[lesson 04](../04_intent_clusters.ipynb)" in "".join(cells(EVIDENCE)[0]["source"])
    code = "\n".join("".join(c["source"]) for c in cells(LESSON) if c["cell_type"] == "code")
    text = "\n".join("".join(c["source"]) for c in cells(LESSON) if c["cell_type"] == "markdown")
    assert "Interactive intent clusters" in text and "explore.intent_scatter(" in code


def test_info_nce_exercise_check_passes_a_right_answer_and_names_the_common_mistakes():
    check = notebook_function(LESSON, "check_info_nce", {"torch": torch, "F": F, "intents": intents})
    torch.manual_seed(0)
    z_i, z_j, tau = torch.randn(6, 4), torch.randn(6, 4), 0.2

    def right(z_i, z_j, tau):
        z = F.normalize(torch.cat([z_i, z_j]), dim=-1)
        n2 = len(z)
        S = (z @ z.T / tau).masked_fill(torch.eye(n2, dtype=torch.bool), float("-inf"))
        return F.cross_entropy(S, (torch.arange(n2) + n2 // 2) % n2)
    assert check(right, z_i, z_j, tau)

    def no_tau(z_i, z_j, tau):
        return right(z_i, z_j, 1.0)

    def no_mask(z_i, z_j, tau):
        z = F.normalize(torch.cat([z_i, z_j]), dim=-1)
        return F.cross_entropy(z @ z.T / tau, (torch.arange(len(z)) + len(z) // 2) % len(z))

    def dot(z_i, z_j, tau):                          # no normalisation: dot products instead of cosines
        z = torch.cat([z_i, z_j])
        S = (z @ z.T / tau).masked_fill(torch.eye(12, dtype=torch.bool), float("-inf"))
        return F.cross_entropy(S, (torch.arange(12) + 6) % 12)

    def half(z_i, z_j, tau):
        z = F.normalize(torch.cat([z_i, z_j]), dim=-1)
        S = (z @ z.T / tau).masked_fill(torch.eye(12, dtype=torch.bool), float("-inf"))
        return F.cross_entropy(S[:6], torch.arange(6) + 6)
    for fn, hint in ((no_tau, "tau"), (no_mask, "diagonal"), (dot, "normalise"), (half, "2N views"),
                     (lambda z_i, z_j, tau: right(z_i, z_j, tau) + 0.1, "expected")):
        with pytest.raises(AssertionError, match=hint):
            check(fn, z_i, z_j, tau)


def test_evidence_refuses_results_of_another_dataset_split_or_kind_of_run():
    same_run = notebook_function(EVIDENCE, "same_run", {"smoke": False, "dataset": "ml-100k", "k_events": 10})
    ok = {"smoke": False, "k_events": 10, "provenance": {"params": {"dataset": "ml-100k"}}}
    assert same_run(ok)
    assert not same_run(None)
    assert not same_run({**ok, "provenance": {"params": {"dataset": "data/other"}}})    # another dataset: retrain
    assert not same_run({**ok, "smoke": True})                                          # a smoke run's rows
    assert not same_run({"smoke": False})                                                # no provenance params
    assert not same_run({**ok, "k_events": 3})                                        # another K-event split
    loo = {k: v for k, v in ok.items() if k != "k_events"}                            # a file of the leave-one-out era
    assert not same_run(loo)
    assert notebook_function(EVIDENCE, "same_run", {"smoke": False, "dataset": "ml-100k", "k_events": 1})(loo)


def test_sasrec_row_is_evidence_01s_sasrec_on_this_split():
    """The SASRec row (the B of "beats SASRec", beside every "beats ID-only" claim) is evidence 01's SASRec fitted on this
    notebook's own split (`train.fit_sasrec_reference`) and tested there; the default split is a K-event split."""
    from lib import params
    calls = []

    class Model:
        max_len = 7

    class Train:
        @staticmethod
        def fit_sasrec_reference(ds, split, seed, **kw):
            calls.append((ds, split, seed, kw))
            return Model(), "fit", True

        @staticmethod
        def evaluate_model(model, split, max_len, stage, **kw):
            return {"split": split, "max_len": max_len, "stage": stage}

    reference_run = notebook_function(EVIDENCE, "reference_run", {"train": Train, "ds": "DS", "split": "SPLIT",
                                                                  "device": "cpu", "smoke": False})
    assert reference_run(1) == ({"split": "SPLIT", "max_len": 7, "stage": "test"}, "fit", True)
    assert calls == [("DS", "SPLIT", 1, {"device": "cpu", "smoke": False})]
    src = "\n".join("".join(c["source"]) for c in cells(EVIDENCE) if c["cell_type"] == "code")
    assert "split = data.last_k_events(ds, k_events)" in src and "leave_one_out" not in src
    assert params.defaults(EVIDENCE)["k_events"] == 10


@pytest.mark.notebook
def test_nb04_lesson_smoke_results(smoke_results):
    res = smoke_results(LESSON)
    assert res["smoke"] is True and "claims" not in res
    assert set(res["methods"]) == {"Pop", "SASRec", "LLMDiRec"}
    assert all(len(m["runs"]) == 1 for m in res["methods"].values())
    for name, m in res["methods"].items():
        o = m["runs"][0]["overall"]
        assert 0 <= o["NDCG@10"] <= o["HR@10"] <= 1, name
    assert set(res["silhouette"]) == {"SASRec (lesson 01)", "LLMDiRec"}
    assert all(-1 <= v <= 1 for v in res["silhouette"].values())
    assert sum(res["intent_sizes_test"]) == 943 and len(res["intent_sizes_test"]) == res["K"]
    for w, g in res["guidance"].items():
        assert 0 <= g["intent kept"] <= 1 and g["spread of a user's draws / spread of h"] >= 0, w


@pytest.mark.notebook
def test_nb04_evidence_smoke_results(smoke_results):
    res = smoke_results(EVIDENCE)
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
    assert {"LLMDiRec", "ID-only", REF, "fusion only (gated)"} <= set(models)
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
    # the K-event split (smoke: 3 events per user): recorded, and every row tested on it
    assert res["k_events"] == 3 and res["n_users"] == 943 and 943 < res["n_events"] <= 3 * 943
    for name, m in res["methods"].items():
        assert m["k_events"] == 3, name
        assert m["reference"] == (None if name == REF else f"{EVIDENCE}/{REF}"), name
        for r in m["runs"]:
            assert len(r["ranks"]) == 943 and sum(len(x) for x in r["ranks"]) == res["n_events"], name
    # "beats SASRec" is decided against the reference row (all users, every event), which has the headline seeds
    ref = res["methods"][REF]["runs"]
    assert len(ref) == len(res["seeds"]) == len(res["reference_fits"])
    assert cl["04.llmdirec_vs_sasrec"]["mean_b"] == pytest.approx(sum(r["overall"]["NDCG@10"] for r in ref) / len(ref),
                                                                  abs=1e-9)
    assert cl["04.llmdirec_vs_sasrec"]["n_seeds"] == [2, 2] and cl["04.llmdirec_vs_sasrec"]["n_users"] == 943
    # SASRec (01's schedule) beside every claim against the 20-epoch ID-only twin, on the same users and events
    assert set(res["vs_reference"]) == {"04.llmdirec_vs_id", "04.tail", "04.cold"} and "vs_sasrec01" not in res
    assert all(cl[cid]["note"] for cid in res["vs_reference"])
    for cid, v in res["vs_reference"].items():
        assert v["mean_a"] == pytest.approx(cl[cid]["mean_a"]) and v["n_users"] == cl[cid]["n_users"], cid
