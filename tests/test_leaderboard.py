"""Notebook 08's reading of the results files: claims by id with the registry's paper effect, Holm over paper claims."""
import numpy as np
import pytest

from lib import claims, leaderboard, metrics


def _decided(cid, shift, seed=0):
    rng = np.random.default_rng(seed)
    b = rng.integers(1, 60, 600)
    return claims.decide(cid, np.maximum(1, b - shift), b)


def test_claims_take_the_paper_effect_from_the_registry_and_adjust_paper_claims_only():
    stale = {**_decided("02.cold", 3), "paper_effect": -0.2185, "size": "stale"}      # a file older than the registry
    found = {"02_dual_view_fusion": {"claims": {"02.cold": stale, "02.gated_vs_id": _decided("02.gated_vs_id", 0),
                                                "02.rarest_fifth": _decided("02.rarest_fifth", 5)}}}
    rows = {r["id"]: r for r in leaderboard.claims(found)}
    cold = rows["02.cold"]
    assert cold["paper effect"] == claims.REGISTRY["02.cold"].effect
    assert cold["size"] == metrics.size_of(stale, claims.REGISTRY["02.cold"].effect)["size"] != "stale"
    # Holm over the two paper claims: the smaller p doubled; the diagnosis is not in the family
    p = sorted([rows["02.cold"]["p"], rows["02.gated_vs_id"]["p"]])
    assert min(rows["02.cold"]["p (Holm)"], rows["02.gated_vs_id"]["p (Holm)"]) == pytest.approx(min(1, 2 * p[0]))
    assert rows["02.rarest_fifth"]["p (Holm)"] is None and rows["02.rarest_fifth"]["verdict (Holm)"] is None
    assert rows["02.gated_vs_id"]["verdict (Holm)"] in ("negligible", "undecided")


def test_a_verdict_that_loses_its_significance_after_holm_reads_undecided():
    rows = [{"kind": "paper", "p": 0.03, "verdict": "holds"}, {"kind": "paper", "p": 0.04, "verdict": "holds"},
            {"kind": "paper", "p": 0.001, "verdict": "reversed"}, {"kind": "sanity", "p": 0.2, "verdict": "undecided"}]
    out = leaderboard.adjusted(rows)
    assert [r["verdict (Holm)"] for r in out] == ["undecided", "undecided", "reversed", None]
    # sorted: 0.001 x 3 = 0.003, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06 (monotone)
    assert [r["p (Holm)"] for r in out[:3]] == pytest.approx([0.06, 0.06, 0.003])


def test_a_note_on_the_rows_compared_reaches_the_claims_table_and_08():
    rng = np.random.default_rng(0)
    b = rng.integers(1, 60, 300)
    note = "both rows start from the SASRec-probe head: not the paper's setting"
    dec = claims.decide_all([("06.text_vs_id", b, b + 1), ("06.hdrec_vs_text", b, b)], notes={"06.text_vs_id": note})
    assert dec["06.text_vs_id"]["note"] == note and "note" not in dec["06.hdrec_vs_text"]
    tab = claims.table(dec)
    assert tab.loc["06.text_vs_id", "note"] == note and tab.loc["06.hdrec_vs_text", "note"] == ""
    rows = {r["id"]: r for r in leaderboard.claims({"06_hdrec_dual_lora": {"claims": dec}})}
    assert rows["06.text_vs_id"]["note"] == note and rows["06.hdrec_vs_text"]["note"] is None
