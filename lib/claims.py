"""The claims registry: every claim the suite decides, with a stable id, where the paper says it and how big.

A notebook decides a claim by its id (`decide("02.gated_vs_id", runs_a, runs_b)`); notebook 08 and the site read
the decided claims back by id from the results files. The registry says what a claim *is*; the run says what we
*see* (`lib.metrics.compare`: paired per-user difference, one model for the 95 % interval and the two-sided p (users
resampled, the seed level added once), detectable effect, direction word, and for a paper's number a size word).
`family()` is the fixed set of paper claims Holm's adjustment runs over (one per paper number; `replicates` marks a
second test of the same number).

Kinds:
* paper: the paper states it (table, figure or equation); `effect` is its relative size A / B - 1 where the paper
  prints the two numbers (None where it gives none). Quoted from ../shared/papers; `where` names the numbers.
* sanity: a check that a model learned anything (beats Pop, beats its own start); not a paper's claim.
* diagnosis: ours, to explain what we see (a released-code variant, another retriever, a rarer group).

The paper's effect is measured on the paper's data (ML-1M, Amazon, LastFM), not ML-100K; we read it as a relative
change at our B's level. Where a notebook's rows stand in for the paper's (our ID-only twin for InDiRec, say), the
claim's `a` and `b` say which rows were compared.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from lib import metrics

KINDS = ("paper", "sanity", "diagnosis")
# the notebook that decides each number's claims: its evidence notebook (notebooks/evidence/<stem>.ipynb)
NOTEBOOKS = {"01": "evidence/01_sasrec_baseline", "02": "evidence/02_dual_view_fusion",
             "03": "evidence/03_diffusion_trajectories", "04": "evidence/04_intent_clusters",
             "05": "evidence/05_adarec_adaptive_depth", "06": "evidence/06_hdrec_dual_lora",
             "07": "evidence/07_deftrec_contrastive_diffusion"}


@dataclass(frozen=True)
class Claim:
    id: str                      # "<notebook number>.<name>", stable across runs and commits
    text: str                    # the claim in words, "A beats B (where)"
    kind: str                    # one of KINDS
    metric: str                  # HR@k / NDCG@k / MRR@k
    a: str                       # the row that should win
    b: str                       # the row it should beat
    paper: str | None = None     # LLMDiRec, ADARec, HDRec, DeftRec
    where: str | None = None     # the table / figure / equation and the numbers quoted
    effect: float | None = None  # the paper's relative effect A / B - 1 (None: the paper gives no number)
    group: str | None = None     # the users compared, when not all
    headline: bool = False       # the notebook's headline paper claim (the site's index shows it)
    replicates: str | None = None  # a second test of the same paper number: the id of the claim in the family

    @property
    def notebook(self) -> str:
        return NOTEBOOKS[self.id[:2]]


def _rel(a: float, b: float) -> float:
    return round(a / b - 1, 4)


_C = Claim
_LLMDIREC_T2 = "ML-1M, Table 2: InDiRec -> LLMDiRec"
_COLD = ("Toys, Table 3 and sec. 6: cold HR@10 0.0993 -> 0.1091, the smaller of the two gains the text names (Sports "
         "+10.1 %); on ML-1M LLMDiRec loses for cold users (0.6141 -> 0.4799)")
_CLAIMS = [
    # 01: the baseline and the protocol
    _C("01.sasrec_vs_pop", "SASRec beats Pop", "sanity", "NDCG@10", "SASRec", "Pop"),
    _C("01.sasrec_vs_pop_hr", "SASRec beats Pop (HR@10)", "sanity", "HR@10", "SASRec", "Pop"),
    # 02: dual-view fusion (LLMDiRec sec. 3.1); ID-only SASRec stands in for InDiRec
    _C("02.gated_vs_id", "gated beats ID-only, overall (Table 2 direction)", "paper", "NDCG@10", "gated fusion",
       "SASRec (01's schedule)", "LLMDiRec", f"{_LLMDIREC_T2}, NDCG@10 0.4188 -> 0.4300", _rel(0.4300, 0.4188),
       headline=True, replicates="04.llmdirec_vs_id"),
    _C("02.gated_vs_id_hr", "gated beats ID-only, overall HR@10", "paper", "HR@10", "gated fusion", "SASRec (01's schedule)",
       "LLMDiRec", f"{_LLMDIREC_T2}, HR@10 0.6291 -> 0.6417", _rel(0.6417, 0.6291)),
    _C("02.tail", "gated beats ID-only on tail items (Table 3)", "paper", "HR@10", "gated fusion", "SASRec (01's schedule)",
       "LLMDiRec", "ML-1M, Table 3: tail HR@10 0.0550 -> 0.1429", _rel(0.1429, 0.0550), group="tail",
       replicates="04.tail"),
    _C("02.rarest_fifth", "gated beats ID-only on the rarest fifth of targets", "diagnosis", "HR@10", "gated fusion",
       "SASRec (01's schedule)", group="rarest fifth of targets"),
    _C("02.head", "gated beats ID-only on head items", "paper", "HR@10", "gated fusion", "SASRec (01's schedule)",
       "LLMDiRec", "ML-1M, Table 3: head HR@10 0.6291 -> 0.6445", _rel(0.6445, 0.6291), group="head"),
    _C("02.cold", "gated beats ID-only for cold users", "paper", "HR@10", "gated fusion", "SASRec (01's schedule)",
       "LLMDiRec", _COLD, _rel(0.1091, 0.0993), group="cold", replicates="04.cold"),
    _C("02.hot", "gated beats ID-only for hot users", "paper", "HR@10", "gated fusion", "SASRec (01's schedule)",
       "LLMDiRec", "ML-1M, Table 3: hot HR@10 0.6075 -> 0.7109", _rel(0.7109, 0.6075), group="hot"),
    _C("02.align", "L_align helps (Table 4: gated vs w/o L_align)", "paper", "NDCG@10", "gated fusion",
       "gated w/o L_align", "LLMDiRec", "Table 4 text: +4.1 % (Beauty), +4.5 % (Sports), +5.6 % (Toys); the smallest",
       0.041, headline=False),
    _C("02.noalign_vs_id", "gated w/o L_align beats ID-only (the text view without the alignment loss)", "diagnosis",
       "NDCG@10", "gated w/o L_align", "SASRec (01's schedule)"),
    _C("02.rival.concat", "gated beats concat (Table 4)", "paper", "NDCG@10", "gated fusion", "concat", "LLMDiRec",
       "Table 4 text: +9.5 % (Toys) to +11.6 % (Sports) over concatenation; the smallest", 0.095),
    _C("02.rival.weighted", "gated beats weighted (Table 4)", "paper", "NDCG@10", "gated fusion", "weighted",
       "LLMDiRec", "Table 4 text: 'gains remain consistent' (no number)"),
    _C("02.rival.cross_attention", "gated beats cross-attention (Table 4)", "paper", "NDCG@10", "gated fusion",
       "cross-attention", "LLMDiRec", "Table 4: dataset-dependent (cross-attention wins on ML-1M; no single number)"),
    _C("02.rival.text_only", "gated beats text-only (ours: not in Table 4)", "diagnosis", "NDCG@10", "gated fusion",
       "text-only"),
    # 03: trajectories
    _C("03.high_noise_vs_pop", "x0_hat at the highest noise beats Pop (HR@10)", "sanity", "HR@10",
       "x0_hat at the highest noise", "Pop"),
    _C("03.high_noise_keeps", "x0_hat at the highest noise keeps SASRec's accuracy (HR@10; 'reversed' = it loses)",
       "paper", "HR@10", "x0_hat at the highest noise", "SASRec's own x_0", "ADARec",
       "sec. 3: 'predictive relevance is maintained' at high noise (no number)", headline=True),
    _C("03.partial_keeps", "the partial reverse from T_u keeps SASRec's accuracy (NDCG@10)", "diagnosis", "NDCG@10",
       "partial reverse from T_u", "SASRec's own x_0"),
    # 04: intents (LLMDiRec sec. 3.2-3.3); ID-only twin stands in for InDiRec
    _C("04.llmdirec_vs_id", "LLMDiRec beats its ID-only twin (Table 2)", "paper", "NDCG@10", "LLMDiRec", "ID-only",
       "LLMDiRec", f"{_LLMDIREC_T2}, NDCG@10 0.4188 -> 0.4300", _rel(0.4300, 0.4188), headline=True),
    _C("04.llmdirec_vs_fusion", "LLMDiRec beats fusion alone (Table 4)", "paper", "NDCG@10", "LLMDiRec",
       "fusion only (gated)", "LLMDiRec", "Table 4 / sec. 7: diffusion and intents add to the dual view (no number)"),
    _C("04.llmdirec_vs_sasrec", "LLMDiRec beats SASRec", "paper", "NDCG@10", "LLMDiRec", "SASRec (01's schedule)",
       "LLMDiRec",
       "ML-1M, Table 2: SASRec NDCG@10 0.0906 -> LLMDiRec 0.4300", _rel(0.4300, 0.0906)),
    _C("04.tail", "tail items: LLMDiRec beats ID-only (Table 3)", "paper", "HR@10", "LLMDiRec", "ID-only", "LLMDiRec",
       "ML-1M, Table 3: tail HR@10 0.0550 -> 0.1429", _rel(0.1429, 0.0550), group="tail"),
    _C("04.cold", "cold users: LLMDiRec beats ID-only (Table 3)", "paper", "HR@10", "LLMDiRec", "ID-only", "LLMDiRec",
       _COLD, _rel(0.1091, 0.0993), group="cold"),
    _C("04.diffusion_cl", "diffusion + L_cl help (full vs both off, one seed)", "paper", "NDCG@10", "LLMDiRec",
       "LLMDiRec, no diffusion, no L_cl", "LLMDiRec", "sec. 3.2-3.3: the method's core (no ablation number)"),
    _C("04.partial_noise", "partial noising of the row's own x beats pure-noise augmentation (InDiRec-style, one seed)",
       "diagnosis", "NDCG@10", "LLMDiRec, partial noise", "LLMDiRec, one seed"),
    # 05: ADARec
    _C("05.adarec_vs_sasrec", "ADARec beats SASRec at L (Table 2)", "paper", "NDCG@10", "ADARec (paper)", "SASRec",
       "ADARec", "Table 2 (histories of at most 5) compares ADARec with diffusion baselines only (+2.5 % to +19.7 %), "
       "not with SASRec: no number for this pair in this regime", headline=True),
    _C("05.normal_regime", "ADARec beats SASRec at L = 50, warm start, one seed (Table 1)", "paper", "NDCG@20",
       "ADARec (L = 50, warm start)", "SASRec (L = 50)", "ADARec",
       "Table 1 (full histories): SASRec NDCG@20 0.0441 -> ADARec 0.0646 on Toys, the smallest gain over SASRec "
       "(Beauty +46.8 %, Sports +57.9 %, Yelp +62.6 %)", _rel(0.0646, 0.0441)),
    _C("05.adarec_vs_fixed_noise", "ADARec beats fixed-depth noise (the code's augmentation)", "diagnosis", "NDCG@10",
       "ADARec (paper)", "fixed-depth noise (code)"),
    _C("05.adarec_vs_two_sasrecs", "ADARec beats two SASRecs averaged", "diagnosis", "NDCG@10", "ADARec (paper)",
       "two SASRecs, scores averaged"),
    _C("05.paper_vs_code", "ADARec (paper) beats ADARec (code's choices)", "diagnosis", "NDCG@10", "ADARec (paper)",
       "ADARec (code's choices)"),
    _C("05.adarec_vs_pop", "ADARec beats Pop", "sanity", "NDCG@10", "ADARec (paper)", "Pop"),
]
# ADARec Table 4 (Beauty, NDCG@20; full model 0.0568): each ablation against the full model, seed `seed`
_ADARec_T4 = {"adc": ("w/o ADC (T_u = T_max)", 0.0545), "hda": ("w/o HDA", 0.0528),
              "adc_hda": ("w/o ADC, w/o HDA", 0.0505), "moe": ("w/o MoE + router", 0.0539),
              "router": ("w/o router", 0.0561), "lcont": ("w/o L_cont", 0.0553)}
_CLAIMS += [_C(f"05.ablation.{k}", f"full ADARec beats {n} (Table 4)", "paper", "NDCG@20", "ADARec (paper), one seed", n,
               "ADARec", f"Beauty, Table 4: NDCG@20 {v:.4f} -> 0.0568 (full)", _rel(0.0568, v))
            for k, (n, v) in _ADARec_T4.items()]
_CLAIMS += [_C("05.ablation.levels", 'full ADARec beats levels = "spread" (ours)', "diagnosis", "NDCG@20",
               "ADARec (paper)", 'levels = "spread"')]
# 05, section 6b: why ADARec loses here (ours: each switch against the paper's model, seed `seed`)
_CLAIMS += [_C(f"05.why.{k}", f"{t} (section 6b, one seed)", "diagnosis", "NDCG@10", n, "ADARec (paper), one seed")
            for k, (n, t) in {"shared_draws": ("shared draws", "one noise and one dropout mask for every level help"),
                              "depth_cost": ("depth cost", "a cost on depth helps")}.items()]
# 06: HDRec (Scientific, Table 3-4: ID only 0.1103, text only 0.1154, HDRec 0.1190, SASRec 0.0812 NDCG@10)
_CLAIMS += [
    _C("06.hdrec_vs_wo_dla", "HDRec beats w/o DLA (Fig. 4)", "paper", "NDCG@10", "HDRec fused", "w/o DLA fused", "HDRec",
       "Fig. 4: w/o DLA is the worst variant (a bar chart, no number)"),
    _C("06.hdrec_vs_wo_kl", "HDRec beats w/o KL (Fig. 4)", "paper", "NDCG@10", "HDRec fused", "w/o KL fused", "HDRec",
       "Fig. 4 (a bar chart, no number)"),
    _C("06.hdrec_vs_text", "HDRec beats text only (Fig. 4)", "paper", "NDCG@10", "HDRec fused", "text only", "HDRec",
       "Scientific, Table 4: text only 0.1154 -> HDRec 0.1190", _rel(0.1190, 0.1154)),
    _C("06.hdrec_vs_id", "HDRec beats ID only (Fig. 4)", "paper", "NDCG@10", "HDRec fused", "ID only", "HDRec",
       "Scientific, Table 4: ID only 0.1103 -> HDRec 0.1190", _rel(0.1190, 0.1103)),
    _C("06.text_vs_id", "text only beats ID only (Table 4)", "paper", "NDCG@10", "text only", "ID only", "HDRec",
       "Scientific, Table 4: ID only 0.1103 -> text only 0.1154", _rel(0.1154, 0.1103)),
    _C("06.fusion_text_vs_id", "text-dominant fusion beats ID-dominant (Fig. 5)", "paper", "NDCG@10",
       "text-dominant fusion", "ID-dominant fusion", "HDRec", "Fig. 5 (a bar chart, no number)"),
    _C("06.fusion_text_vs_conf", "text-dominant fusion beats confidence-weighted (Fig. 5)", "paper", "NDCG@10",
       "text-dominant fusion", "confidence-weighted fusion", "HDRec", "Fig. 5 (a bar chart, no number)"),
    _C("06.hdrec_vs_sasrec", "HDRec beats SASRec (Table 3)", "paper", "NDCG@10", "HDRec fused", "SASRec (01's schedule)",
       "HDRec",
       "Scientific, Table 3: SASRec 0.0812 -> HDRec 0.1190", _rel(0.1190, 0.0812), headline=True),
]
_HD_ROWS = {"hdrec": "HDRec fused", "wo_dla": "w/o DLA fused", "wo_kl": "w/o KL fused", "text": "text only",
            "id": "ID only"}
_CLAIMS += [_C(f"06.{k}_vs_pop", f"{n.replace(' fused', '')} beats Pop (it learned something)", "sanity", "NDCG@10",
               n, "Pop") for k, n in _HD_ROWS.items()]
_CLAIMS += [_C(f"06.{k}_vs_start", f"{n} beats its start (the training steps add)", "sanity", "NDCG@10", n,
               f"{n.split()[0]} adapter at the start (no step)") for k, n in (("text", "text only"), ("id", "ID only"))]
# 06 at the paper's start: the IPL at PyTorch's default (no probe, no SASRec table, no standardisation)
_CLAIMS += [
    _C("06.paper_start.hdrec_vs_text", "HDRec beats text only, both from the paper's start (Fig. 4)", "paper", "NDCG@10",
       "HDRec fused (paper's start)", "text only (paper's start)", "HDRec",
       "Scientific, Table 4: text only 0.1154 -> HDRec 0.1190", _rel(0.1190, 0.1154), replicates="06.hdrec_vs_text"),
    _C("06.paper_start.text_vs_pop", "text only from the paper's start beats Pop (what titles alone give)", "sanity",
       "NDCG@10", "text only (paper's start)", "Pop"),
    _C("06.paper_start.hdrec_vs_pop", "HDRec from the paper's start beats Pop", "sanity", "NDCG@10",
       "HDRec fused (paper's start)", "Pop"),
    _C("06.probe.text", "the SASRec-probe head helps the text adapter (probe start vs the paper's start)", "diagnosis",
       "NDCG@10", "text only (SASRec-probe head)", "text only (paper's start)"),
]
# 07: DeftRec (Software: LightGCN 0.1177 / 0.0633, SASRec 0.0596 NDCG@10, DeftRec 0.1584 / 0.0863; Table 2, 5)
_T5 = "Software, Table 5: HR@10 {} -> 0.1584 (full)"
_CLAIMS += [
    _C("07.deftrec_vs_lightgcn", "DeftRec beats LightGCN (Table 2), NDCG@10", "paper", "NDCG@10", "DeftRec (paper)",
       "LightGCN", "DeftRec", "Software, Table 2: LightGCN 0.0633 -> DeftRec 0.0863", _rel(0.0863, 0.0633),
       headline=True),
    _C("07.deftrec_vs_lightgcn_hr", "DeftRec beats LightGCN (Table 2), HR@10", "paper", "HR@10", "DeftRec (paper)",
       "LightGCN", "DeftRec", "Software, Table 2: LightGCN 0.1177 -> DeftRec 0.1584", _rel(0.1584, 0.1177)),
    _C("07.deftrec_vs_sasrec", "DeftRec beats SASRec (Table 2)", "paper", "NDCG@10", "DeftRec (paper)",
       "SASRec (01's schedule)", "DeftRec", "Software, Table 2: SASRec 0.0596 -> DeftRec 0.0863", _rel(0.0863, 0.0596)),
    _C("07.bpr", "BPR term helps (Table 5 w/o BPR; Fig. 4 gamma2 > 0)", "paper", "HR@10", "DeftRec (paper)", "w/o BPR",
       "DeftRec", _T5.format("0.1475"), _rel(0.1584, 0.1475)),
    _C("07.diffusion", "diffusion helps (Table 5 w/o Diffusion)", "paper", "HR@10", "DeftRec (paper)",
       "w/o Diffusion", "DeftRec", _T5.format("0.1443"), _rel(0.1584, 0.1443)),
    _C("07.cf", "CF targets help (Table 5 w/o CF)", "paper", "HR@10", "DeftRec (paper)", "w/o CF", "DeftRec",
       _T5.format("0.1217"), _rel(0.1584, 0.1217)),
    _C("07.paper_vs_code", "DeftRec beats the released code's choices", "diagnosis", "NDCG@10", "DeftRec (paper)",
       "DeftRec (released code's choices)"),
    _C("07.genre_bonus", "the genre bonus helps (Eq. 14, pi = 0.1 vs 0)", "paper", "HR@10", "DeftRec (paper)",
       "DeftRec, pi = 0", "DeftRec", "Eq. 14: pi = 0.1 (no ablation number)"),
    _C("07.dot_vs_cosine", "the inner product beats cosine (ours, same samples)", "diagnosis", "NDCG@10",
       "DeftRec, inner-product retriever", "DeftRec (paper)"),
    _C("07.deftrec_vs_pop", "DeftRec learned something (beats Pop)", "sanity", "NDCG@10", "DeftRec (paper)", "Pop"),
    _C("07.lightgcn_vs_pop", "LightGCN learned something (beats Pop)", "sanity", "NDCG@10", "LightGCN", "Pop"),
]
_CLAIMS += [_C(f"07.condition_vs_{s}", f"the notebook's condition source beats '{s}' (one seed)", "diagnosis",
               "NDCG@10", "condition: the `source` parameter", f"condition: {s}")
            for s in ("generated", "hidden", "gold", "minilm", "none")]
# 07, section 7c: why DeftRec loses here (ours: each switch against the paper's recipe, seed `seed`)
_WHY = {"mean16": "the mean of 16 samples per user beats one sample", "neg_norm": "norm-matched negatives help",
        "standardize": "standardised CF targets help", "valid_sampler": "choosing the epoch with the test's sampler helps",
        "longer": "training until validation stops improving helps", "all": "all the switches together help"}
_CLAIMS += [_C(f"07.why.{k}", f"{t} (section 7c, one seed)", "diagnosis", "NDCG@10", f"DeftRec, {k}",
               "DeftRec (paper), one seed") for k, t in _WHY.items()]
_CLAIMS += [_C("07.why.all_vs_lightgcn", "DeftRec with every switch beats LightGCN (section 7c, one seed)", "diagnosis",
               "NDCG@10", "DeftRec, all", "LightGCN")]
_SUB = " (section 7b's users, one seed)"
_CLAIMS += [
    _C("07.tok.mask", "masking helps (Table 5 w/o Mask: rho = 0)" + _SUB, "paper", "HR@10", "the default tokenizer",
       "rho = 0", "DeftRec", _T5.format("0.1540"), _rel(0.1584, 0.1540)),
    _C("07.tok.rho", "the default rho beats rho = 0.4 (Fig. 3)" + _SUB, "paper", "HR@10", "the default tokenizer",
       "rho = 0.4", "DeftRec", "Fig. 3: HR@10 peaks at rho = 0.2 (a curve, no table)"),
    _C("07.tok.K", "the default K beats K = 1 (Table 5)" + _SUB, "paper", "HR@10", "the default tokenizer", "K = 1",
       "DeftRec", "Software, Table 5: K = 1 HR@10 0.1446 -> K = 2 0.1584", _rel(0.1584, 0.1446)),
    _C("07.tok.encoder", "the encoder helps (Table 5 w/o Encoder)" + _SUB, "paper", "HR@10", "the default tokenizer",
       "w/o Encoder (one linear map per token)", "DeftRec", _T5.format("0.1506"), _rel(0.1584, 0.1506)),
]

REGISTRY: dict[str, Claim] = {}
for _c in _CLAIMS:
    assert _c.id not in REGISTRY, f"duplicate claim id {_c.id}"
    assert _c.kind in KINDS and (_c.kind == "paper" or _c.effect is None), _c.id
    REGISTRY[_c.id] = _c
for _c in _CLAIMS:      # a replication points at a paper claim of the family that tests the same number
    assert _c.replicates is None or (_c.kind == "paper" and REGISTRY[_c.replicates].kind == "paper"
                                     and REGISTRY[_c.replicates].replicates is None
                                     and REGISTRY[_c.replicates].effect == _c.effect), _c.id


def family() -> list[str]:
    """The ids of the family Holm's adjustment runs over, fixed by the registry (not by which results files exist):
    every paper claim, one per paper number. A second test of the same number (`replicates`: 02's gated fusion and
    04's LLMDiRec read the same LLMDiRec Table 2/3 numbers; 06 tests HDRec vs text only from two starts) is reported
    beside it but kept out, so a number is not counted twice. The same comparison on two metrics (NDCG@10 and HR@10 of
    one table) stays in: those are two numbers the paper prints, and Holm holds under any dependence between them.
    Sanity checks and our diagnoses are not claims of the papers and are not in it."""
    return [cid for cid, c in REGISTRY.items() if c.kind == "paper" and c.replicates is None]


def band(claim_id: str) -> float:
    """The claim's negligible band, relative to the two models' mean level: metrics.NEGLIGIBLE_REL (2 %), or half the
    paper's effect where the paper gives a smaller one (what `decide` passes to `metrics.compare`)."""
    c = get(claim_id)
    return min(metrics.NEGLIGIBLE_REL, abs(c.effect) / 2) if c.effect else metrics.NEGLIGIBLE_REL


def get(claim_id: str) -> Claim:
    """The registered claim; an unknown id is a KeyError naming the valid ids of that notebook."""
    try:
        return REGISTRY[claim_id]
    except KeyError:
        near = [k for k in REGISTRY if k[:2] == str(claim_id)[:2]] or list(REGISTRY)
        raise KeyError(f"unknown claim id {claim_id!r}; registered ids of that notebook: {', '.join(near)}") from None


def for_notebook(nn: str) -> list[Claim]:
    """The registered claims of a notebook, by its two-digit number or stem, in registry order."""
    return [c for c in REGISTRY.values() if c.id[:2] == str(nn)[:2]]


def headline(nn: str) -> Claim | None:
    """The notebook's headline claim (the site's index shows it), or None."""
    return next((c for c in for_notebook(nn) if c.headline), None)


def decide(claim_id: str, a, b, users=None, note: str | None = None, **kw) -> dict:
    """Decide a registered claim by the suite's rule: `metrics.compare(a, b, claim.metric, users=users)`, with the
    paper's effect for a paper claim (the size word, and the claim's negligible band: `band`); the result carries the
    claim's id, text, kind, paper, where and replicates. users: a mask per user or per test event (`compare`). note:
    what a reader must know about the rows compared (e.g. both start from a head the paper does not have); 08 shows
    it."""
    c = get(claim_id)
    out = metrics.compare(a, b, c.metric, users=users, paper_effect=c.effect, **kw)
    meta = {k: v for k, v in asdict(c).items() if k not in ("metric", "effect")}     # compare names it paper_effect
    return {**meta, **out, "notebook": c.notebook, **({"note": note} if note else {})}


def decide_all(specs, notes: dict | None = None) -> dict[str, dict]:
    """{id: decided claim} for an iterable of (id, a, b) or (id, a, b, users); notes: {id: note} (see `decide`)."""
    out = {}
    for spec in specs:
        cid, a, b, *rest = spec
        out[cid] = decide(cid, a, b, users=rest[0] if rest else None, note=(notes or {}).get(cid))
    return out


def table(decided: dict[str, dict]):
    """The claims table a notebook shows: one row per decided claim (metrics.row), indexed by id."""
    import pandas as pd

    rows = [{"id": cid, **metrics.row(c["text"], c), "kind": c["kind"]} for cid, c in decided.items()]
    df = pd.DataFrame(rows).set_index("id")
    if any(c.get("note") for c in decided.values()):
        df["note"] = [decided[cid].get("note") or "" for cid in df.index]
    cols = [c for c in ("claim", "kind", "metric", "A", "B", "A - B [95 % CI]", "rel", "detectable", "p", "users",
                        "seeds", "verdict", "paper", "size", "note") if c in df]
    return df[cols].fillna("")


def describe(c: dict) -> str:
    """One markdown phrase for a decided claim: the numbers, the interval, p, the direction word in bold, what
    the test can detect and, for a paper's number, the size word and the users that number would need."""
    p = "—" if c.get("p_value") is None else f"{c['p_value']:.3g}"
    differ = (f", only {c['n_differ']} users differ" if c["verdict"] == "not testable" and c.get("n_differ") is not None
              else "")
    out = (f"{c['mean_a']:.4f} vs {c['mean_b']:.4f} {c['metric']} ({metrics.pct(c['rel'])}; "
           f"{c['diff']:+.4f} [{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}], p = {p}, "
           f"{c['n_users']} users, seeds {c['n_seeds'][0]}/{c['n_seeds'][1]}{differ}): **{c['verdict']}**; "
           f"detectable {metrics.pct(c['mde_rel']).lstrip('+')}")
    if c.get("size"):
        need = (f", which would need about {c['n_needed']:,} users" if c.get("n_needed") else
                f"; {c['reach']}" if c.get("reach") else "")
        out += f"; {c['size']} ({metrics.pct(c['paper_effect'])}{need})"
    return out
