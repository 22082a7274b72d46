"""One results schema: every notebook writes its results file through `save`, and notebook 08 and the site read
them through `load`, which checks them. No reader needs to know a notebook's own keys.

A results file `<output_dir>/<stem>.json` is a dict with, besides whatever the notebook keeps for itself:

* ``schema``: SCHEMA_VERSION.
* ``smoke``: bool.
* ``provenance``: commit (and ``dirty``: whether the tree had uncommitted changes), date (UTC, ISO), seconds,
  device, ``threads`` (torch's CPU threads: a one-thread run repeats exactly, a two-thread one need not), ``cpu`` (the
  processor's model name), versions of python/torch/transformers/peft/numpy, the notebook's parameters (``params``:
  every value the run used; ``changed``: those that differ from the parameters cell's defaults) and ``caches``: every
  cache the run read or wrote (``lib.utils.CACHE_LOG``: path and "hit", "computed", "recomputed" or "not used").
* ``n_users``: the number of users of the dataset (every ``ranks`` list has this length).
* ``methods``: {name: {"setting": str, "reference": "stem/method" or None, "runs": [run, ...]}}, a run being
  ``metrics.evaluate(..., ranks=True)``'s dict (at least "overall" and "ranks"; None ranks: users not evaluated).
* ``claims``: {claim id: `lib.claims.decide`'s dict}, each id registered in `lib.claims`.
* ``headline`` (optional): one line for the site's index, for notebooks without a headline claim.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
import subprocess
import time

import numpy as np

from lib import claims as claims_registry
from lib import metrics, utils

SCHEMA_VERSION = 2
DEFAULT_REFERENCE = "evidence/01_sasrec_baseline/SASRec"
PROVENANCE_KEYS = ("commit", "dirty", "date", "seconds", "device", "threads", "cpu", "smoke", "versions", "params",
                   "changed", "caches")
CLAIM_KEYS = ("id", "text", "kind", "metric", "mean_a", "mean_b", "diff", "ci", "p_value", "mde", "n_users",
              "n_seeds", "verdict")
VERSIONED = ("torch", "transformers", "peft", "numpy")


class ResultsError(ValueError):
    """A results file does not follow the schema; the message names the file, the key and what is valid."""


def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the repository, or (None, None) where git or the repository is not there."""
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=utils.REPO, capture_output=True, text=True, timeout=10)
        head = run("rev-parse", "HEAD")
        if head.returncode:
            return None, None
        status = run("status", "--porcelain", "--untracked-files=no")
        return head.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def versions() -> dict:
    return {"python": platform.python_version(), **utils.package_versions(VERSIONED)}


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The processor's model name ("AMD EPYC 9B14", say), from /proc/cpuinfo on Linux, else platform's word."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def provenance(params: dict, *, seconds: float, device: str, smoke: bool) -> dict:
    """The provenance block of a results file. params: `lib.params.snapshot`'s dict (values and defaults)."""
    import torch
    commit, dirty = git_state()
    values, defaults = params.get("values", {}), params.get("defaults", {})
    return {"commit": commit, "dirty": dirty,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "seconds": float(seconds), "device": str(device), "threads": torch.get_num_threads(), "cpu": cpu_model(),
            "smoke": bool(smoke), "versions": versions(),
            "params": values, "changed": {k: v for k, v in values.items() if k in defaults and defaults[k] != v},
            "caches": [dict(e) for e in utils.CACHE_LOG]}


def method(runs: list[dict], setting: str, reference: str | None = DEFAULT_REFERENCE, k_events: int = 1) -> dict:
    """A method's entry: its runs (one per seed; each keeps its overall and group metrics and per-user ranks),
    a sentence on how it was run, the row its forest-plot difference is taken against ("stem/method"), and the split
    its runs were tested on: `k_events` test events per user (`lib.data.last_k_events`; 1 = leave-one-out). Rows of
    different splits are never compared (the leaderboard pairs a row with its reference only on the same split)."""
    if not isinstance(k_events, (int, np.integer)) or isinstance(k_events, bool) or k_events < 1:
        raise ResultsError(f"k_events (test events per user) must be an integer >= 1, got {k_events!r}")
    keep = [{k: v for k, v in r.items() if k in metrics.GROUPS or k == "ranks"} for r in runs]
    return {"setting": setting, "reference": reference, "runs": keep, "k_events": int(k_events)}


def full_ranks(ranks, users, n_users: int) -> list:
    """Ranks of a subset of users (in `users` order) as a list over all n_users, None where not evaluated."""
    out = [None] * int(n_users)
    for u, r in zip(users, ranks):
        out[int(u)] = r
    return out


def _finite(o, path="") -> str | None:
    """The path of the first NaN or infinite float in o, or None."""
    if isinstance(o, float) and not math.isfinite(o):
        return path or "(top)"
    if isinstance(o, dict):
        return next((p for k, v in o.items() if (p := _finite(v, f"{path}.{k}" if path else str(k)))), None)
    if isinstance(o, (list, tuple)):
        return next((p for i, v in enumerate(o) if (p := _finite(v, f"{path}[{i}]"))), None)
    return None


def _finite_or_none(o):
    """NaN and infinities as None (JSON null): a silhouette of one cluster or a correlation of a constant is "no
    value", and JSON has no faithful NaN."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _finite_or_none(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_finite_or_none(v) for v in o]
    return o


def validate(r: dict, stem: str) -> dict:
    """Check a results dict against the schema; returns it, or raises ResultsError naming what is wrong."""
    def bad(msg):
        raise ResultsError(f"results of {stem}: {msg}")
    if not isinstance(r, dict):
        bad(f"expected a JSON object, got {type(r).__name__}")
    if r.get("schema") != SCHEMA_VERSION:
        bad(f"schema is {r.get('schema')!r}, this code reads schema {SCHEMA_VERSION}: re-run the notebook "
            f"(`.venv/bin/python -m lib.run {stem}`)")
    if not isinstance(r.get("smoke"), bool):
        bad(f"'smoke' must be true or false, got {r.get('smoke')!r}")
    prov = r.get("provenance")
    if not isinstance(prov, dict) or (miss := [k for k in PROVENANCE_KEYS if k not in prov]):
        bad(f"'provenance' must hold {', '.join(PROVENANCE_KEYS)}; missing {miss if isinstance(prov, dict) else 'all'}")
    methods = r.get("methods", {})
    if not isinstance(methods, dict):
        bad("'methods' must map a method's name to its entry")
    n = r.get("n_users")
    if methods and (not isinstance(n, int) or n <= 0):
        bad(f"'n_users' must be a positive integer when methods are recorded, got {n!r}")
    for name, m in methods.items():
        if not isinstance(m, dict) or not isinstance(m.get("setting"), str) or not m.get("runs"):
            bad(f"methods[{name!r}] needs a 'setting' sentence and at least one run")
        k = m.get("k_events", 1)
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            bad(f"methods[{name!r}].k_events must be an integer >= 1 (test events per user), got {k!r}")
        for i, run in enumerate(m["runs"]):
            if "overall" not in run or len(run.get("ranks") or ()) != n:
                bad(f"methods[{name!r}].runs[{i}] needs 'overall' and 'ranks' of length n_users = {n} "
                    f"(got {len(run.get('ranks') or ())} ranks)")
    for cid, c in (r.get("claims") or {}).items():
        if cid not in claims_registry.REGISTRY:
            bad(f"claim id {cid!r} is not registered in lib.claims")
        if not isinstance(c, dict) or (miss := [k for k in CLAIM_KEYS if k not in c]) or c["id"] != cid:
            bad(f"claims[{cid!r}] must be lib.claims.decide's dict (missing {miss if isinstance(c, dict) else 'all'})")
        if c["verdict"] not in metrics.VERDICTS:
            bad(f"claims[{cid!r}] has verdict {c['verdict']!r}; valid: {', '.join(metrics.VERDICTS)}")
        if c["kind"] != claims_registry.REGISTRY[cid].kind:
            bad(f"claims[{cid!r}] was decided as kind {c['kind']!r}; the registry now says "
                f"{claims_registry.REGISTRY[cid].kind!r}: re-run notebook {stem}")
    if (where := _finite(r)):
        bad(f"{where} is NaN or infinite (JSON cannot hold it faithfully): store None for 'no value'")
    return r


def save(output_dir, stem: str, results: dict, *, params: dict, t_start: float, device: str) -> os.PathLike:
    """Add schema and provenance to a notebook's results, check them, and write <output_dir>/<stem>.json atomically.
    t_start: time.perf_counter() at the notebook's start (seconds = now - t_start)."""
    r = {**results, "schema": SCHEMA_VERSION,
         "provenance": provenance(params, seconds=time.perf_counter() - t_start, device=device,
                                  smoke=results.get("smoke"))}
    r = _finite_or_none(json.loads(json.dumps(utils._jsonable(r))))   # what the file will hold, checked before
    validate(r, stem)                                                   # writing
    path = utils.repo_path(output_dir) / f"{stem}.json"
    return utils.atomic_write_bytes(path, json.dumps(r, indent=2, sort_keys=True).encode())


def load(output_dir, stem: str) -> dict | None:
    """A notebook's results file, checked against the schema; None when the notebook has not run into output_dir.
    A file of another schema or a malformed one raises ResultsError naming the file."""
    path = utils.repo_path(output_dir) / f"{stem}.json"
    if not path.is_file():
        return None
    try:
        r = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path} is not valid JSON ({e}): re-run notebook {stem}") from None
    return validate(r, stem)
