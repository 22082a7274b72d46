"""The claims registry: stable ids, kinds, the papers' effects as hand-computed numbers, decide by id."""
import numpy as np
import pytest

from lib import claims, metrics


def test_every_claim_has_an_id_kind_metric_and_paper_claims_their_effect():
    assert len(claims.REGISTRY) >= 62
    for cid, c in claims.REGISTRY.items():
        assert c.id == cid and cid[:2] in claims.NOTEBOOKS and c.kind in claims.KINDS, cid
        metrics.per_user([1.0], c.metric)                           # a metric compare can compute
        if c.kind != "paper":
            assert c.effect is None and c.paper is None, cid
        else:
            assert c.paper in ("LLMDiRec", "ADARec", "HDRec", "DeftRec") and c.where, cid
    # one headline claim per notebook at most, and 02-07 each have one
    for nn in ("02", "03", "04", "05", "06", "07"):
        assert sum(c.headline for c in claims.for_notebook(nn)) == 1, nn
        assert claims.headline(nn).kind == "paper"


def test_paper_effects_against_the_papers_numbers():
    r = claims.REGISTRY
    assert r["02.gated_vs_id"].effect == pytest.approx(0.4300 / 0.4188 - 1, abs=1e-4)       # LLMDiRec Table 2 ML-1M
    assert r["02.tail"].effect == pytest.approx(1.5982, abs=1e-4)                           # 0.0550 -> 0.1429
    assert r["05.ablation.hda"].effect == pytest.approx(0.0758, abs=1e-4)                  # ADARec Table 4, 0.0528
    assert r["05.ablation.hda"].metric == "NDCG@20"
    assert r["06.hdrec_vs_sasrec"].effect == pytest.approx(0.1190 / 0.0812 - 1, abs=1e-4)   # HDRec Table 3 Scientific
    assert r["07.deftrec_vs_lightgcn"].effect == pytest.approx(0.3633, abs=1e-4)           # DeftRec 0.0633 -> 0.0863
    assert r["07.bpr"].effect == pytest.approx(0.1584 / 0.1475 - 1, abs=1e-4)
    assert r["06.hdrec_vs_wo_dla"].effect is None                                         # a bar chart: no number


def test_decide_by_id_carries_the_claim_and_the_paper_effect():
    rng = np.random.default_rng(0)
    b = rng.integers(1, 60, 400)
    a = np.maximum(1, b - 4)
    c = claims.decide("02.gated_vs_id", a, b)
    plain = metrics.compare(a, b, "NDCG@10", paper_effect=claims.REGISTRY["02.gated_vs_id"].effect)
    assert c["id"] == "02.gated_vs_id" and c["kind"] == "paper" and c["notebook"] == "evidence/02_dual_view_fusion"
    assert c["ci"] == plain["ci"] and c["verdict"] == plain["verdict"] and c["size"] == plain["size"]
    assert claims.decide("02.tail", a, b)["metric"] == "HR@10"                  # the registry sets the metric
    assert "size" not in claims.decide("01.sasrec_vs_pop", a, b)                # a sanity check has no paper number
    both = claims.decide_all([("01.sasrec_vs_pop", a, b), ("02.head", a, b, np.arange(400) < 100)])
    assert list(both) == ["01.sasrec_vs_pop", "02.head"] and both["02.head"]["n_users"] == 100
    table = claims.table(both)
    assert list(table.index) == ["01.sasrec_vs_pop", "02.head"] and "detectable" in table
    text = claims.describe(c)
    assert f"**{c['verdict']}**" in text and c["size"] in text


def test_unknown_id_names_the_valid_ones():
    with pytest.raises(KeyError, match="unknown claim id '02.gated_vs_idd'.*02.gated_vs_id"):
        claims.get("02.gated_vs_idd")


def test_the_family_one_claim_per_paper_number_and_replications_point_into_it():
    fam = claims.family()
    assert len(fam) == sum(c.kind == "paper" for c in claims.REGISTRY.values()) - 4 == 41
    numbers = [(c.where, c.metric, c.group) for c in map(claims.get, fam) if c.effect is not None]
    assert len(numbers) == len(set(numbers))                         # one claim per paper number
    reps = {cid: c.replicates for cid, c in claims.REGISTRY.items() if c.replicates}
    assert reps == {"02.gated_vs_id": "04.llmdirec_vs_id", "02.tail": "04.tail", "02.cold": "04.cold",
                    "06.paper_start.hdrec_vs_text": "06.hdrec_vs_text"}
    assert all(r in fam and cid not in fam for cid, r in reps.items())


def test_the_negligible_band_is_at_most_half_the_papers_effect():
    assert claims.band("05.ablation.router") == pytest.approx(claims.REGISTRY["05.ablation.router"].effect / 2)
    assert claims.band("05.ablation.router") < 0.01 and claims.band("02.tail") == metrics.NEGLIGIBLE_REL
    assert claims.band("01.sasrec_vs_pop") == metrics.NEGLIGIBLE_REL
    for cid, c in claims.REGISTRY.items():
        if c.effect:
            assert claims.band(cid) <= abs(c.effect) / 2 + 1e-12, cid
    rng = np.random.default_rng(0)
    b = rng.integers(1, 60, 400)
    d = claims.decide("05.ablation.router", np.maximum(1, b - 1), b)
    assert d["margin_rel"] == pytest.approx(claims.band("05.ablation.router"))
    assert d["replicates"] is None and claims.decide("02.tail", b, b)["replicates"] == "04.tail"


def test_07s_sasrec_claim_names_the_reference_trained_on_its_own_split():
    """Evidence 07 decides 'DeftRec beats SASRec' against evidence 01's SASRec trained on 07's own K-event split
    (train.fit_sasrec_reference), the row the suite calls "SASRec (01's schedule)"; not 01's leave-one-out rows."""
    c = claims.REGISTRY["07.deftrec_vs_sasrec"]
    assert c.b == "SASRec (01's schedule)" and c.a == "DeftRec (paper)" and c.kind == "paper"
    assert not any("notebook 01" in (x.b + x.a) for x in claims.for_notebook("07"))


def test_every_beats_sasrec_claim_of_02_04_06_07_names_the_reference_and_none_is_decided_twice():
    """The B of 02's ID-only claims, 04's, 06's and 07's "beats SASRec" is the row "SASRec (01's schedule)" (evidence
    01's SASRec on the notebook's own split); 02.gated_vs_sasrec01 (the same rows as 02.gated_vs_id there) is retired,
    and no two claims of a notebook compare the same rows on the same metric and group (a duplicate in 08's Holm family)."""
    for cid in ("02.gated_vs_id", "02.gated_vs_id_hr", "02.noalign_vs_id", "04.llmdirec_vs_sasrec",
                "06.hdrec_vs_sasrec", "07.deftrec_vs_sasrec"):
        assert claims.REGISTRY[cid].b == "SASRec (01's schedule)", cid
    assert "02.gated_vs_sasrec01" not in claims.REGISTRY
    for nb in ("02", "03", "04", "05", "06", "07"):
        keys = [(c.a, c.b, c.metric, c.group) for c in claims.for_notebook(nb)]
        assert len(keys) == len(set(keys)), nb
