"""Every method of the suite side by side, from the notebooks' results files (notebook 08, `make site`).

Nothing here trains or types a number of ours: rows come from `<output_dir>/<stem>.json` as each notebook wrote it,
read through `lib.results` (the schema: methods, claims by id, provenance), comparisons from their per-user ranks
through `lib.metrics.compare` (on the users both rows evaluated). The papers' numbers and the family of claims Holm
adjusts over live in `lib.claims` (every registered claim is listed, "not run" where no results file decided it); the
external references below are quotations, named as such.
"""
from __future__ import annotations

import numpy as np

from lib import claims as claims_registry
from lib import metrics, results, utils

EXPECTED = tuple(claims_registry.NOTEBOOKS.values())          # the notebooks whose results 08 reads, 01-07

# quoted, not computed: RecBole 1.2.1 on ML-100K under this suite's protocol (leave-one-out, full ranking,
# history masked), measured outside the suite; see notebook 01
EXTERNAL = [{"method": "RecBole 1.2.1 SASRec (quoted)", "NDCG@10": 0.1030, "source": "RecBole 1.2.1, ML-100K, same protocol"},
            {"method": "RecBole 1.2.1 BPR-MF (quoted)", "NDCG@10": 0.0631, "source": "RecBole 1.2.1, ML-100K, same protocol"}]


def load_all(output_dir="runs") -> tuple[dict, list[str]]:
    """({stem: results} for every expected notebook whose results file exists, [stems that are missing]); every
    file is read through `lib.results.load`, which checks the schema."""
    found = {s: r for s in EXPECTED if (r := results.load(output_dir, s)) is not None}
    return found, [s for s in EXPECTED if s not in found]


def split_reference(ref: str) -> tuple[str, str]:
    """("evidence/01_sasrec_baseline", "SASRec") from "evidence/01_sasrec_baseline/SASRec": a stem is one folder
    deep at most, and a method's name may hold a '/' ("w/o L_align")."""
    parts = ref.split("/")
    k = 2 if parts[0] == "evidence" else 1
    return "/".join(parts[:k]), "/".join(parts[k:])


def split_name(k_events: int) -> str:
    """How a row was tested: "last item" (leave-one-out) or "last K items" (`lib.data.last_k_events`)."""
    return "last item" if k_events == 1 else f"last {k_events} items"


def method_rows(found: dict) -> list[dict]:
    """One dict per method of every results file: notebook, method, setting, runs (with per-user ranks over the
    file's n_users), reference ((stem, method) its forest-plot difference is taken against, or None)."""
    rows = []
    for stem, r in found.items():
        for name, m in r.get("methods", {}).items():
            ref = split_reference(m["reference"]) if m.get("reference") else None
            rows.append({"notebook": stem, "method": name, "runs": m["runs"], "setting": m["setting"],
                         "reference": ref, "n_users": r["n_users"], "k_events": m.get("k_events", 1)})
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
        d = {"notebook": utils.stem_number(row["notebook"]), "method": row["method"], "setting": row["setting"],
             "test": split_name(row.get("k_events", 1)),
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
        if (ref is None or ref is r or ref["n_users"] != r["n_users"]
                or ref.get("k_events", 1) != r.get("k_events", 1)):     # only on the same users and the same split
            continue
        c = metrics.compare(r["runs"], ref["runs"], metric, n_perm=0)   # the interval; no p-value needed
        out.append({"label": f"{utils.stem_number(r['notebook'])} · {r['method']}",
                    "vs": f"{utils.stem_number(ref['notebook'])} · {ref['method']}",
                    **{k: c[k] for k in ("diff", "ci", "n_users", "verdict", "mean_a", "mean_b", "mde")}})
    return out


def _row(reg, stem_nn: str, c: dict | None) -> dict:
    """One claims-table row: the registry's claim and, where a results file decided it, what it found."""
    family = ("in the family" if reg.kind == "paper" and reg.replicates is None else
              f"replication of {reg.replicates}" if reg.replicates else f"not in the family ({reg.kind})")
    base = {"notebook": stem_nn, "id": reg.id, "claim": reg.text, "kind": reg.kind, "paper": reg.paper or "—",
            "where": reg.where or "—", "headline": reg.headline, "replicates": reg.replicates, "family": family,
            "paper effect": reg.effect if reg.kind == "paper" else None, "metric": reg.metric,
            "band": claims_registry.band(reg.id)}
    if c is None:
        return {**base, "A": None, "B": None, "diff": None, "ci": [None, None], "rel": None, "rel ci": [None, None],
                "detectable": None, "p": None, "users": None, "n_differ": None, "seeds": None, "verdict": "not run",
                "size": None, "n_needed": None, "reach": None, "note": None}
    if reg.kind == "paper" and reg.effect is not None:      # the paper's number from the registry, not the file: one
        c = {**c, **metrics.size_of(c, reg.effect)}         # place for it (a file may predate it)
    else:
        c = {**c, "paper_effect": None, "size": None, "n_needed": None, "reach": None}
    mb = c["mean_b"]
    rel = (lambda x: x / mb if mb else None)
    return {**base, "claim": c.get("text", reg.text), "A": c["mean_a"], "B": c["mean_b"], "diff": c["diff"],
            "ci": c["ci"], "rel": rel(c["diff"]), "rel ci": [rel(c["ci"][0]), rel(c["ci"][1])] if mb else [None, None],
            "detectable": c["mde_rel"], "p": c["p_value"], "users": c["n_users"], "n_differ": c.get("n_differ"),
            "seeds": c["n_seeds"], "verdict": c["verdict"], "size": c.get("size"), "n_needed": c.get("n_needed"),
            "reach": c.get("reach"), "note": c.get("note"), "band": c.get("margin_rel", base["band"])}


def claims(found: dict) -> list[dict]:
    """Every registered claim, in registry order, with what its notebook's results file decided: its kind, its place
    in the family (`lib.claims.family`), (paper claims) the paper's effect, our relative difference with its interval,
    the detectable effect, both words. A claim whose notebook has no results file among `found`, or whose file did not
    decide it, is there with the verdict "not run" (never absent: the family does not depend on what ran). The family's
    claims get Holm's adjusted p-value (`adjusted`)."""
    decided = {}
    for stem, r in found.items():
        for cid, c in (r.get("claims") or {}).items():
            claims_registry.get(cid)                                   # an unknown id is an error naming valid ones
            decided[cid] = c
    out = [_row(reg, reg.id[:2], decided.get(cid)) for cid, reg in claims_registry.REGISTRY.items()]
    return adjusted(out)


def adjusted(rows: list[dict]) -> list[dict]:
    """Holm's adjustment (`metrics.holm`) over the family among rows (paper claims that replicate none): each gets
    "p (Holm)" and "verdict (Holm)": its verdict where the adjusted p stays below 0.05, else "undecided". A claim of
    the family that did not run counts with p = 1 (it keeps its place, so the others' adjusted p do not change with
    what ran) and reads "not run". Replications, sanity and diagnosis claims are not in the family and keep None."""
    fam = [r for r in rows if r["kind"] == "paper" and not r.get("replicates")]
    adj = metrics.holm([r["p"] for r in fam]) if fam else []
    for r in rows:
        r["p (Holm)"], r["verdict (Holm)"] = None, None
    for r, p in zip(fam, adj):
        r["p (Holm)"] = p
        keeps = p < 0.05 or r["verdict"] in ("undecided", "negligible", "not testable", "not run")
        r["verdict (Holm)"] = r["verdict"] if keeps else "undecided"
    return rows


def headline(stem: str, r: dict) -> str:
    """One line of a notebook's headline for the site's index: its registered headline claim, decided in its
    results file; else the file's own "headline" line; else a plain "results recorded"."""
    h = claims_registry.headline(utils.stem_number(stem)) if utils.stem_number(stem) in claims_registry.NOTEBOOKS else None
    c = (r.get("claims") or {}).get(h.id) if h else None
    if c:
        size = f"; {c['size']} ({metrics.pct(c['paper_effect'])})" if c.get("size") else ""
        return (f"{c['text']}: {c['mean_a']:.4f} vs {c['mean_b']:.4f} {c['metric']}, {c['diff']:+.4f} "
                f"[{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}], {c['verdict']} (detectable {metrics.pct(c['mde_rel']).lstrip('+')}"
                f"){size}")
    return r.get("headline") or "results recorded"
