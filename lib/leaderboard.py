"""Every method of the suite side by side, from the notebooks' results files (notebook 08, `make site`).

Nothing here trains or types a number of ours: rows come from `<output_dir>/<stem>.json` as each notebook wrote it,
comparisons from their per-user ranks through `lib.metrics.compare` (on the users both rows evaluated). The paper
numbers and the external references below are quotations, named as such.
"""
from __future__ import annotations

import numpy as np

from lib import metrics, utils

N_USERS_ML100K = 943
EXPECTED = ("01_sasrec_baseline", "02_dual_view_fusion", "03_diffusion_trajectories", "04_intent_clusters",
            "05_adarec_adaptive_depth", "06_hdrec_dual_lora", "07_deftrec_contrastive_diffusion")

# quoted, not computed: RecBole 1.2.1 on ML-100K under this suite's protocol (leave-one-out, full ranking,
# history masked), measured outside the suite; see notebook 01
EXTERNAL = [{"method": "RecBole 1.2.1 SASRec (quoted)", "NDCG@10": 0.1030, "source": "RecBole 1.2.1, ML-100K, same protocol"},
            {"method": "RecBole 1.2.1 BPR-MF (quoted)", "NDCG@10": 0.0631, "source": "RecBole 1.2.1, ML-100K, same protocol"}]

# the papers' own numbers for the headline claims each notebook tests (quoted from ../shared/papers)
PAPER = {
    ("02_dual_view_fusion", "gated beats ID-only, overall ("): "LLMDiRec +2.7% NDCG@10 over InDiRec (ML-1M, Table 2)",
    ("02_dual_view_fusion", "gated beats ID-only on tail items"): "tail HR@10 0.0550 -> 0.1429, +160% (ML-1M, Table 3)",
    ("02_dual_view_fusion", "L_align helps"): "w/o L_align costs 4-6% on the Amazon sets (Table 4)",
    ("03_diffusion_trajectories", "x0_hat at the highest noise keeps"): "ADARec: 'predictive relevance is maintained' at high noise (no number)",
    ("04_intent_clusters", "LLMDiRec beats its ID-only twin"): "+2-7% NDCG@10 over InDiRec (Table 2)",
    ("04_intent_clusters", "diffusion + L_cl help"): "the method's core (no ablation number for it)",
    ("05_adarec_adaptive_depth", "ADARec beats SASRec at L"): "+10-20% over the best diffusion baseline on histories of at most 5 (Table 2)",
    ("05_adarec_adaptive_depth", "full ADARec beats w/o HDA"): "Beauty NDCG@20 0.0568 vs 0.0528 (Table 4)",
    ("06_hdrec_dual_lora", "HDRec beats SASRec"): "HDRec far above SASRec on Amazon sets (Table 3)",
    ("06_hdrec_dual_lora", "HDRec beats w/o DLA"): "w/o DLA is the worst ablation (Fig. 4)",
    ("07_deftrec_contrastive_diffusion", "DeftRec beats LightGCN (Table 2), NDCG@10"): "NDCG@10 0.0633 -> 0.0863 (Software, Table 2)",
    ("07_deftrec_contrastive_diffusion", "BPR term helps"): "w/o BPR HR@10 0.1475 vs 0.1584 (Software, Table 5)",
    ("07_deftrec_contrastive_diffusion", "diffusion helps"): "w/o Diffusion HR@10 0.1443 vs 0.1584 (Software, Table 5)",
    ("07_deftrec_contrastive_diffusion", "CF targets help"): "w/o CF HR@10 0.1217 vs 0.1584 (Software, Table 5)",
}


def load_all(output_dir="runs") -> tuple[dict, list[str]]:
    """({stem: results} for every expected notebook whose results file exists, [stems that are missing])."""
    found = {s: r for s in EXPECTED if (r := utils.load_results(output_dir, s)) is not None}
    return found, [s for s in EXPECTED if s not in found]


def _full_ranks(ranks, users, n=N_USERS_ML100K) -> list:
    """Ranks of a subset of users (in `users` order) as a list over all n users, None where not evaluated."""
    out = [None] * n
    for u, r in zip(users, ranks):
        out[int(u)] = r
    return out


def method_rows(found: dict) -> list[dict]:
    """One dict per method: notebook, method, setting, runs (evaluate dicts with per-user "ranks" over all users),
    reference (the method its forest-plot difference is taken against)."""
    rows = []

    def add(stem, method, runs, setting, ref=("01_sasrec_baseline", "SASRec")):
        runs = [r for r in runs if "ranks" in r]
        if runs:
            rows.append({"notebook": stem, "method": method, "runs": runs, "setting": setting, "reference": ref})

    if (r := found.get("01_sasrec_baseline")):
        p = r["params"]
        sched = f"{p.get('decay_epochs', '?')}-epoch schedule"
        add("01_sasrec_baseline", "SASRec", r["sasrec"]["runs"], f"{sched}, {len(r['seeds'])} seeds, all users", None)
        add("01_sasrec_baseline", "Pop", [r["pop"]], "no training, all users")
    if (r := found.get("02_dual_view_fusion")):
        for name, v in r["variants"].items():
            add("02_dual_view_fusion", name, v["runs"], f"{len(v['runs'])} seed(s), trained to the end of the schedule")
    if (r := found.get("04_intent_clusters")):
        for name, v in r["models"].items():
            add("04_intent_clusters", name, v["runs"], f"{len(v['runs'])} seed(s)")
        for name, v in r.get("ablations", {}).items():
            add("04_intent_clusters", f"LLMDiRec {name}", v["runs"], "1 seed (ablation)")
    if (r := found.get("05_adarec_adaptive_depth")):
        for name, v in r["models"].items():
            add("05_adarec_adaptive_depth", name, v["runs"], f"last {r['L']} items read, {len(v['runs'])} seed(s)",
                ("05_adarec_adaptive_depth", "SASRec"))
    if (r := found.get("06_hdrec_dual_lora")):
        users = r["eval_users"]
        for name, ranks in r.get("test_ranks", {}).items():
            run = {"overall": r["test"][name], "ranks": _full_ranks(ranks, users)}
            add("06_hdrec_dual_lora", name, [run], f"{len(users)} evaluation users only, {r['params']['steps']} steps, 1 seed")
    if (r := found.get("07_deftrec_contrastive_diffusion")):
        for name, v in r["models"].items():
            if name not in ("SASRec (notebook 01)", "Pop"):          # 01's rows, already listed
                add("07_deftrec_contrastive_diffusion", name, v["runs"],
                    f"{len(v['runs'])} seed(s), LLM cut to {r['params']['llm_layers']} blocks")
    return rows


def _mean_std(runs, group, m):
    v = [r[group][m] for r in runs if group in r and m in r[group]]
    if not v:
        return None, None
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else None


def table(rows: list[dict], metrics_=("HR@10", "NDCG@10", "MRR@10"), groups=("tail", "head", "cold", "hot")):
    """A DataFrame: one row per method, mean ± seed std of each metric, NDCG@10 per group where recorded."""
    import pandas as pd

    out = []
    for row in rows:
        d = {"notebook": row["notebook"][:2], "method": row["method"], "setting": row["setting"],
             "users": int(sum(x is not None for x in row["runs"][0]["ranks"]))}
        for m in metrics_:
            mu, sd = _mean_std(row["runs"], "overall", m)
            d[m] = "—" if mu is None else (f"{mu:.4f}" if sd is None else f"{mu:.4f} ± {sd:.4f}")
        for g in groups:
            mu, _ = _mean_std(row["runs"], g, "NDCG@10")
            d[f"{g} NDCG@10"] = "—" if mu is None else f"{mu:.4f}"
        out.append(d)
    return pd.DataFrame(out)


def forest(rows: list[dict], metric: str = "NDCG@10") -> list[dict]:
    """Each method's paired difference to its reference (notebook 01's SASRec; notebook 05's SASRec at the same
    cut history for 05's rows), `metrics.compare` on the users both evaluated."""
    by = {(r["notebook"], r["method"]): r for r in rows}
    out = []
    for r in rows:
        ref = by.get(r["reference"]) if r["reference"] else None
        if ref is None or ref is r:
            continue
        c = metrics.compare(r["runs"], ref["runs"], metric)
        out.append({"label": f"{r['notebook'][:2]} · {r['method']}", "vs": f"{ref['notebook'][:2]} · {ref['method']}",
                    **{k: c[k] for k in ("diff", "ci", "n_users", "verdict", "mean_a", "mean_b")}})
    return out


def claims(found: dict) -> list[dict]:
    """Every claim every notebook decided, with the paper's number where the headline is quoted in PAPER."""
    out = []
    for stem, r in found.items():
        for text, c in (r.get("claims") or {}).items():
            paper = next((v for (s, k), v in PAPER.items() if s == stem and text.startswith(k)), "—")
            out.append({"notebook": stem[:2], "claim": text, "paper": paper,
                        "ours": f"{c['mean_a']:.4f} vs {c['mean_b']:.4f} ({c['metric']})",
                        "difference [95 % CI]": f"{c['diff']:+.4f} [{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}]",
                        "users": c["n_users"], "verdict": c["verdict"], "headline": paper != "—"})
    return out


def headline(stem: str, r: dict) -> str:
    """One line of a notebook's headline numbers for the site's index (from its results file)."""
    try:
        if stem.startswith("00"):
            s = r["stats"]
            return f"{s['users']} users, {s['items']} items, {s['actions']} interactions"
        if stem.startswith("01"):
            s = r["sasrec"]["summary"]["overall"]["NDCG@10"]
            return f"SASRec NDCG@10 {s['mean']:.4f} ± {s['std']:.4f}; Pop {r['pop']['overall']['NDCG@10']:.4f}"
        if stem.startswith("08"):
            return "verdicts over the suite: " + ", ".join(f"{k} {v}" for k, v in r["verdict_counts"].items())
        cl = r.get("claims") or {}
        if isinstance(cl, dict) and cl:
            first = next(iter(cl.items()))
            return f"{first[0]}: {first[1]['diff']:+.4f} [{first[1]['ci'][0]:+.4f}, {first[1]['ci'][1]:+.4f}], {first[1]['verdict']}"
    except (KeyError, TypeError, StopIteration, AttributeError):
        pass
    return "results recorded"
