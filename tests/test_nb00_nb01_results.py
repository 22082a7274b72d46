"""Checks on what notebooks 00 and 01 (lesson and evidence) record under smoke=True (bounds, not exact values,
except where the number does not depend on training: the data statistics and the popularity baseline); and the
check of lesson 01's exercise, on right and wrong answers."""
import math

import nbformat
import numpy as np
import pytest

from lib import metrics, run


@pytest.mark.notebook
def test_data_tour_records_ml100k_statistics(smoke_results):
    res = smoke_results("00_data_tour")
    assert res["stats"]["users"] == 943 and res["stats"]["items"] == 1682 and res["stats"]["actions"] == 100000
    assert 0 < res["tie_fraction"] < 1
    assert res["example_prompt"].startswith("The movie item has following attributes: \n Title: ")


def _check_runs(runs):
    for r in runs:
        o = r["overall"]
        for m in ("HR", "NDCG", "MRR"):
            assert 0 <= o[f"{m}@5"] <= o[f"{m}@10"] <= o[f"{m}@20"] <= 1
        assert o["MRR@10"] <= o["NDCG@10"] <= o["HR@10"]


@pytest.mark.notebook
def test_sasrec_evidence_records_protocol_numbers(smoke_results):
    res = smoke_results("evidence/01_sasrec_baseline")
    pop = res["pop"]["overall"]
    # Pop does not train: its numbers are the same in smoke and full runs (RecBole's Pop reports 0.0354)
    assert 0.03 < pop["NDCG@10"] < 0.06
    assert res["pop"]["overall"]["users"] == 943
    for runs in (res["sasrec"]["runs"], res["sasrec_unmasked"]["runs"]):
        _check_runs(runs)
    # group sizes follow LLMDiRec Table 3: cold and hot users are 20% of the users each
    run0 = res["sasrec"]["runs"][0]
    assert run0["cold"]["users"] == run0["hot"]["users"] == round(0.2 * 943)
    assert set(metrics.GROUPS) <= set(run0)
    assert len(res["seeds"]) == len(res["sasrec"]["runs"]) == len(res["fit"])
    # what notebooks 02, 04 and 07 read: the methods SASRec (every seed, per-user ranks) and Pop
    assert set(res["methods"]) == {"SASRec", "Pop"}
    assert len(res["methods"]["SASRec"]["runs"]) == len(res["seeds"])
    assert all(len(r["ranks"]) == 943 for m in res["methods"].values() for r in m["runs"])
    assert set(res["claims"]) == {"01.sasrec_vs_pop", "01.sasrec_vs_pop_hr"}


@pytest.mark.notebook
def test_sasrec_lesson_records_one_seed_and_no_claims(smoke_results):
    res = smoke_results("01_sasrec_baseline")
    assert res["claims"] == {}, "a lesson decides nothing: its claims live in evidence/01_sasrec_baseline"
    assert set(res["methods"]) == {"SASRec", "Pop"} and res["seeds"] == [0]
    sas, pop = res["methods"]["SASRec"]["runs"], res["methods"]["Pop"]["runs"]
    assert len(sas) == len(pop) == 1
    _check_runs(sas + pop)
    assert 0.03 < pop[0]["overall"]["NDCG@10"] < 0.06
    # the cross-entropy by hand equals the library's loss; an untrained model is near-uniform over the items
    lc = res["loss_check"]
    # float32 means over thousands of positions differ by summation order (seen: 7.432317 vs 7.432302 on a fresh
    # clone under load, 2e-6 relative); a wrong loss (no mask, wrong target shift) is off by far more than 1e-5 relative
    assert lc["by_hand"] == pytest.approx(lc["library"], rel=1e-5)
    assert abs(lc["by_hand"] - math.log(1682)) < 0.1 and lc["last_position"] != pytest.approx(lc["by_hand"], abs=1e-6)
    w = res["attention_recency"]["mean weight"]
    assert all(0 <= v <= 1 for v in w if v == v)


def _lesson_function(name):
    """The function `name` as lesson 01 defines it (exec of its defining cell, with the lesson's imports)."""
    nb = nbformat.read(run.NOTEBOOKS / "01_sasrec_baseline.ipynb", 4)
    src = next(c.source for c in nb.cells if c.cell_type == "code" and c.source.startswith(f"def {name}("))
    ns = {"np": np, "metrics": metrics, "math": math}
    exec(src.split("\n\n\nif ")[0], ns)
    return ns[name]


def test_lesson_01_exercise_check_passes_right_and_fails_wrong_answers():
    check = _lesson_function("check_ndcg10")
    ranks = np.arange(1, 200)
    right = lambda r: (r <= 10) / math.log2(r + 1)
    assert check(right, ranks) == pytest.approx(metrics.per_user(ranks, "NDCG@10").mean())
    wrong = {"no discount offset": lambda r: (r <= 10) / math.log2(r) if r > 1 else math.inf,
             "no cut-off": lambda r: 1 / math.log2(r + 1),
             "rank 10 left out": lambda r: (r < 10) / math.log2(r + 1),
             "natural log": lambda r: (r <= 10) / math.log(r + 1),
             "MRR instead": lambda r: (r <= 10) / r}
    for name, fn in wrong.items():
        with pytest.raises(AssertionError, match="expected"):
            check(fn, ranks)


def test_lesson_01_trains_with_the_library_schedule():
    """Lesson 01 writes its fit arguments inline; they must be TRAIN_DEFAULTS (values and types: the cache key is
    their JSON text), so the lesson, evidence 01 and notebook 03 read one seed-0 fit from data/cache."""
    import ast

    from lib.models.sasrec import TRAIN_DEFAULTS
    nb = nbformat.read(run.NOTEBOOKS / "01_sasrec_baseline.ipynb", 4)
    line = next(l for c in nb.cells if c.cell_type == "code" for l in c.source.splitlines()
                if l.startswith("fit_args = dict("))
    call = ast.parse(line).body[0].value
    fit_args = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    assert fit_args == TRAIN_DEFAULTS
    assert all(type(fit_args[k]) is type(v) for k, v in TRAIN_DEFAULTS.items())
