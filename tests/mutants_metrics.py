"""Broken variants of lib.metrics.compare that tests/test_metrics.py must catch (issue 34, item 6).

Not collected by pytest (no test_ prefix). Run by hand: `.venv/bin/python tests/mutants_metrics.py`; for each variant it
copies lib/ and tests/ into a temporary folder, applies the variant's text edit to lib/metrics.py, runs
tests/test_metrics.py there, and prints the tests that fail. A variant no test catches is reported as SURVIVED and the
script exits non-zero.
"""
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ONLY = sys.argv[1:]
VARIANTS = {
    "MDE without the seed level": ("mde = (t_crit + float(stats.t.ppf(POWER, df))) * se",
                                   "mde = (t_crit + float(stats.t.ppf(POWER, df))) * math.sqrt(var_users)"),
    "one-sided p": ("p = float(2 * stats.t.sf(abs(diff) / se, df))", "p = float(stats.t.sf(diff / se, df))"),
    "unpaired permutation p": (
        "p = float(2 * stats.t.sf(abs(diff) / se, df))",
        "p = float(stats.permutation_test((va.mean(0), vb.mean(0)), lambda x, y, axis: x.mean(axis) - y.mean(axis), "
        "permutation_type='independent', vectorized=True, n_resamples=200, rng=np.random.default_rng(seed)).pvalue)"),
    "a 10 % negligible band": ("NEGLIGIBLE_REL = 0.02 ", "NEGLIGIBLE_REL = 0.10 "),
    "a 90 % interval": ("t_crit = float(stats.t.ppf(1 - alpha / 2, df))", "t_crit = float(stats.t.ppf(0.95, df))"),
    "seeds ignored": ("var_seed = max(0.0, gross - noise)", "var_seed = 0.0"),
    "seed i of A against seed i of B": (
        "pair_diffs = (va.mean(1)[:, None] - vb.mean(1)[None, :]).ravel().tolist()",
        "pair_diffs = (va.mean(1)[:min(len(A), len(B))] - vb.mean(1)[:min(len(A), len(B))]).tolist()"),
    "events as independent users": (
        "        who = np.repeat(np.arange(U), np.maximum(c, 0))                       # (N,) the user of each event",
        "        who = np.repeat(np.arange(U), np.maximum(c, 0))\n        if (c > 1).any():\n"
        "            return np.stack([per_user(r, metric) for r, _ in runs]), np.ones(len(r), bool)"),
}


def main() -> int:
    survived = []
    for name, (old, new) in VARIANTS.items():
        if ONLY and name not in ONLY:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copytree(ROOT / "lib", Path(tmp) / "lib")
            shutil.copytree(ROOT / "tests", Path(tmp) / "tests")
            shutil.copy(ROOT / "pyproject.toml", tmp)
            src = (Path(tmp) / "lib" / "metrics.py").read_text()
            assert src.count(old) == 1, f"variant {name!r}: the text to replace is not in lib/metrics.py once"
            (Path(tmp) / "lib" / "metrics.py").write_text(src.replace(old, new))
            res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                  "tests/test_metrics.py"], cwd=tmp, capture_output=True, text=True,
                                 env={"PYTHONPATH": tmp, "PATH": "/usr/bin:/bin"})
            failed = sorted(set(re.findall(r"FAILED tests/test_metrics.py::(\w+)", res.stdout)))
            print(f"{name}: {'caught by ' + ', '.join(failed) if failed else 'SURVIVED'}", flush=True)
            if not failed:
                survived.append(name)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
