"""The results schema: save adds provenance and checks; load checks; errors name the file, key and what is valid."""
import json

import numpy as np
import pytest

from lib import claims, params, results


def _res(n=5):
    ranks = [1, 3, 20, None, 7][:n]
    run = {"overall": {"NDCG@10": 0.4}, "ranks": ranks}
    a, b = np.array([1, 3, 20, 2, 7.0]), np.array([2, 4, 30, 2, 9.0])
    return {"smoke": True, "n_users": n, "methods": {"M": results.method([run], "1 seed")},
            "claims": {"01.sasrec_vs_pop": claims.decide("01.sasrec_vs_pop", a, b, n_boot=50, n_perm=50)}}


def test_save_adds_provenance_and_load_reads_it_back(tmp_path):
    snap = params.snapshot({"dataset": "ml-100k", "seed": 3, "smoke": True}, "01_sasrec_baseline")
    path = results.save(tmp_path, "01_sasrec_baseline", _res(), params=snap, t_start=0.0, device="cpu")
    r = results.load(tmp_path, "01_sasrec_baseline")
    prov = r["provenance"]
    assert json.loads(path.read_text()) == r and r["schema"] == results.SCHEMA_VERSION
    assert set(results.PROVENANCE_KEYS) <= set(prov) and prov["device"] == "cpu" and prov["smoke"] is True
    assert prov["params"]["seed"] == 3 and prov["changed"] == {"seed": 3, "smoke": True}   # defaults: seed 0, smoke False
    assert prov["versions"]["torch"] and prov["versions"]["numpy"] and prov["seconds"] > 0
    assert prov["commit"] is None or len(prov["commit"]) == 40
    assert isinstance(prov["threads"], int) and prov["threads"] >= 1 and prov["cpu"]
    assert results.load(tmp_path, "02_dual_view_fusion") is None                           # not run yet


def test_provenance_lists_the_caches_the_run_read_and_wrote(tmp_path, monkeypatch):
    from lib import utils
    monkeypatch.setattr(utils, "CACHE_LOG", [])
    utils.cached(tmp_path / "a.pt", lambda: 1)
    utils.cached(tmp_path / "a.pt", lambda: 1)
    snap = params.snapshot({"dataset": "ml-100k", "seed": 0, "smoke": True}, "01_sasrec_baseline")
    results.save(tmp_path, "01_sasrec_baseline", _res(), params=snap, t_start=0.0, device="cpu")
    caches = results.load(tmp_path, "01_sasrec_baseline")["provenance"]["caches"]
    assert caches == [{"path": str(tmp_path / "a.pt"), "status": "computed"},
                      {"path": str(tmp_path / "a.pt"), "status": "hit"}]


def test_an_evidence_stem_writes_under_evidence(tmp_path):
    snap = params.snapshot({"dataset": "ml-100k", "seed": 0, "smoke": True}, "01_sasrec_baseline")
    path = results.save(tmp_path, "evidence/01_sasrec_baseline", _res(), params=snap, t_start=0.0, device="cpu")
    assert path == tmp_path / "evidence" / "01_sasrec_baseline.json"
    assert results.load(tmp_path, "evidence/01_sasrec_baseline")["n_users"] == 5


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.update(schema=0), "schema is 0"),
    (lambda r: r.update(smoke="yes"), "'smoke' must be true or false"),
    (lambda r: r["methods"]["M"]["runs"][0]["ranks"].pop(), "'ranks' of length n_users = 5"),
    (lambda r: r["claims"].update({"99.nope": r["claims"]["01.sasrec_vs_pop"]}), "'99.nope' is not registered"),
    (lambda r: r["claims"]["01.sasrec_vs_pop"].update(verdict="not here"), "valid: holds"),
    (lambda r: r["claims"]["01.sasrec_vs_pop"].pop("mde"), "missing \\['mde'\\]"),
    (lambda r: r["provenance"].pop("commit"), "'provenance' must hold"),
    (lambda r: r["methods"]["M"]["runs"][0]["overall"].update({"NDCG@10": float("nan")}), "NaN or infinite"),
    (lambda r: r["claims"]["01.sasrec_vs_pop"].update(kind="paper"), "the registry now says 'sanity': re-run"),
])
def test_a_malformed_file_is_refused_by_name(tmp_path, mutate, message):
    results.save(tmp_path, "01_sasrec_baseline", _res(), params={"values": {}, "defaults": {}}, t_start=0.0,
                 device="cpu")
    path = tmp_path / "01_sasrec_baseline.json"
    r = json.loads(path.read_text())
    mutate(r)
    path.write_text(json.dumps(r))
    with pytest.raises(results.ResultsError, match=f"results of 01_sasrec_baseline: .*{message}"):
        results.load(tmp_path, "01_sasrec_baseline")


def test_save_stores_non_finite_numbers_as_none(tmp_path):
    res = {**_res(), "silhouette": float("nan"), "ratio": [1.0, float("inf")]}
    results.save(tmp_path, "04_intent_clusters", res, params={"values": {}, "defaults": {}}, t_start=0.0, device="cpu")
    r = results.load(tmp_path, "04_intent_clusters")
    assert r["silhouette"] is None and r["ratio"] == [1.0, None]


def test_not_json_and_full_ranks(tmp_path):
    (tmp_path / "03_diffusion_trajectories.json").write_text("{half")
    with pytest.raises(results.ResultsError, match="not valid JSON.*re-run notebook 03"):
        results.load(tmp_path, "03_diffusion_trajectories")
    assert results.full_ranks([5, 9], [3, 0], 4) == [9, None, None, 5]


def test_snapshot_reads_the_parameters_cell_defaults():
    d = params.defaults("evidence/02_dual_view_fusion")
    assert d["n_seeds"] == 3 and d["dataset"] == "ml-100k" and d["smoke"] is False
    snap = params.snapshot({**d, "n_seeds": 1, "other": 5}, "evidence/02_dual_view_fusion")
    assert snap["values"]["n_seeds"] == 1 and "other" not in snap["values"]
