"""Notebook 08's reading of the results files: every registered claim by id (not run where no file decided it), the
registry's paper effect, Holm over the fixed family."""
import numpy as np
import pytest

from lib import claims, leaderboard, metrics


def _pair(shift, n, seed=0):
    rng = np.random.default_rng(seed)
    b = rng.integers(1, 60, n)
    return np.maximum(1, b - shift), b


def _decided(cid, shift, seed=0):
    return claims.decide(cid, *_pair(shift, 600, seed))


def test_claims_take_the_paper_effect_from_the_registry_and_adjust_over_the_fixed_family():
    stale = {**_decided("04.cold", 3), "paper_effect": -0.2185, "size": "stale"}      # a file older than the registry
    found = {"04_intent_clusters": {"claims": {"04.cold": stale, "04.llmdirec_vs_id": _decided("04.llmdirec_vs_id", 0),
                                               "04.partial_noise": _decided("04.partial_noise", 5)}}}
    rows = {r["id"]: r for r in leaderboard.claims(found)}
    assert list(rows) == list(claims.REGISTRY)                       # every registered claim, in registry order
    cold = rows["04.cold"]
    assert cold["paper effect"] == claims.REGISTRY["04.cold"].effect
    assert cold["size"] == metrics.size_of(stale, claims.REGISTRY["04.cold"].effect)["size"] != "stale"
    # Holm over the whole family (fixed by the registry); the claims that did not run count with p = 1
    m = len(claims.family())
    p = sorted([rows["04.cold"]["p"], rows["04.llmdirec_vs_id"]["p"]])
    assert min(rows["04.cold"]["p (Holm)"], rows["04.llmdirec_vs_id"]["p (Holm)"]) == pytest.approx(min(1, m * p[0]))
    assert rows["04.partial_noise"]["p (Holm)"] is None and rows["04.partial_noise"]["verdict (Holm)"] is None
    assert rows["04.llmdirec_vs_id"]["verdict (Holm)"] in ("negligible", "undecided")
    # a claim whose notebook did not run is there, "not run", in the family with p (Holm) 1
    assert rows["06.hdrec_vs_sasrec"]["verdict"] == "not run" and rows["06.hdrec_vs_sasrec"]["p (Holm)"] == 1.0
    assert rows["06.hdrec_vs_sasrec"]["verdict (Holm)"] == "not run" and rows["01.sasrec_vs_pop"]["verdict"] == "not run"


def test_the_family_does_not_depend_on_which_notebooks_ran_and_holm_can_pass():
    clear = claims.decide("04.llmdirec_vs_id", *_pair(3, 943))
    assert clear["p_value"] < 1e-4
    alone = {r["id"]: r for r in leaderboard.claims({"04_intent_clusters": {"claims": {"04.llmdirec_vs_id": clear}}})}
    more = {r["id"]: r for r in leaderboard.claims({
        "04_intent_clusters": {"claims": {"04.llmdirec_vs_id": clear}},
        "07_deftrec_contrastive_diffusion": {"claims": {"07.bpr": _decided("07.bpr", 0)}}})}
    assert alone["04.llmdirec_vs_id"]["p (Holm)"] == pytest.approx(more["04.llmdirec_vs_id"]["p (Holm)"])
    assert alone["04.llmdirec_vs_id"]["verdict (Holm)"] == clear["verdict"] in ("holds", "partly")


def test_a_replication_is_shown_but_kept_out_of_the_family():
    dec = claims.decide("02.tail", *_pair(3, 600))
    rows = {r["id"]: r for r in leaderboard.claims({"02_dual_view_fusion": {"claims": {"02.tail": dec}}})}
    assert rows["02.tail"]["family"] == "replication of 04.tail" and rows["02.tail"]["p (Holm)"] is None
    assert rows["04.tail"]["family"] == "in the family" and rows["04.tail"]["verdict"] == "not run"


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


def _run(ranks):
    return {"overall": {"NDCG@10": 0.1, "HR@10": 0.2, "MRR@10": 0.05}, "ranks": ranks}


def test_a_row_is_compared_with_its_reference_only_on_the_same_split():
    from lib import results
    rng = np.random.default_rng(0)
    loo = [_run(rng.integers(1, 50, 200).tolist())]
    events = [_run([rng.integers(1, 50, 3).tolist() for _ in range(200)])]
    found = {"evidence/01_sasrec_baseline": {"n_users": 200, "methods": {
                 "SASRec": results.method(loo, "leave-one-out", reference=None)}},
             "evidence/02_dual_view_fusion": {"n_users": 200, "methods": {
                 "SASRec (01's schedule)": results.method(events, "last 3", reference=None, k_events=3),
                 "gated": results.method(events, "last 3", k_events=3,
                                         reference="evidence/02_dual_view_fusion/SASRec (01's schedule)"),
                 "gated vs 01": results.method(events, "last 3", k_events=3)}}}   # default reference: 01's, other split
    rows = leaderboard.method_rows(found)
    pairs = {(f["label"], f["vs"]) for f in leaderboard.forest(rows)}
    assert pairs == {("02 · gated", "02 · SASRec (01's schedule)")}       # never the leave-one-out row
    tab = leaderboard.table(rows).set_index("method")
    assert tab.loc["SASRec", "test"] == "last item" and tab.loc["gated", "test"] == "last 3 items"
    with pytest.raises(results.ResultsError, match="k_events"):
        results.method(loo, "x", k_events=0)
