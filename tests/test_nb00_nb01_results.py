"""Checks on what notebooks 00 and 01 record under smoke=True (bounds, not exact values, except where the
number does not depend on training: the data statistics and the popularity baseline)."""
import pytest

from lib import metrics

pytestmark = pytest.mark.notebook


def test_data_tour_records_ml100k_statistics(smoke_results):
    res = smoke_results("00_data_tour")
    assert res["stats"]["users"] == 943 and res["stats"]["items"] == 1682 and res["stats"]["actions"] == 100000
    assert 0 < res["tie_fraction"] < 1
    assert res["example_prompt"].startswith("The movie item has following attributes: \n Title: ")


def test_sasrec_baseline_records_protocol_numbers(smoke_results):
    res = smoke_results("01_sasrec_baseline")
    pop = res["pop"]["overall"]
    # Pop does not train: its numbers are the same in smoke and full runs (RecBole's Pop reports 0.0354)
    assert 0.03 < pop["NDCG@10"] < 0.06
    assert res["pop"]["overall"]["users"] == 943
    for runs in (res["sasrec"]["runs"], res["sasrec_unmasked"]["runs"]):
        for r in runs:
            o = r["overall"]
            for m in ("HR", "NDCG", "MRR"):
                assert 0 <= o[f"{m}@5"] <= o[f"{m}@10"] <= o[f"{m}@20"] <= 1
            assert o["MRR@10"] <= o["NDCG@10"] <= o["HR@10"]
    # group sizes follow LLMDiRec Table 3: cold and hot users are 20% of the users each
    run0 = res["sasrec"]["runs"][0]
    assert run0["cold"]["users"] == run0["hot"]["users"] == round(0.2 * 943)
    assert set(metrics.GROUPS) <= set(run0)
    assert len(res["seeds"]) == len(res["sasrec"]["runs"]) == len(res["fit"])
