"""Run notebooks headless with papermill: ``python -m lib.run [NOTEBOOK ...] [-p NAME VALUE ...]``.

A notebook is named by its number (``01``) or its stem (``01_sasrec_baseline``); none named means all, in
order. Executed copies go to ``<output_dir>/<stem>.ipynb`` (default ``runs/``), never over the sources;
each notebook also writes ``<output_dir>/<stem>.json``. ``-p`` values are typed as papermill's own CLI
types them (True/False/None, int, float, else str).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lib.utils import REPO, repo_path

NOTEBOOKS = REPO / "notebooks"


def resolve_type(value: str):
    """papermill's CLI typing of -p values."""
    if value == "True":
        return True
    if value == "False":
        return False
    if value == "None":
        return None
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def all_notebooks() -> list[Path]:
    return sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def find_notebooks(names: list[str]) -> list[Path]:
    known = all_notebooks()
    if not names:
        return known
    out = []
    for name in names:
        stem = Path(name).stem
        hits = [p for p in known if p.stem == stem or p.stem.split("_", 1)[0] == stem]
        if len(hits) != 1:
            raise SystemExit(f"unknown notebook {name!r}; valid: {', '.join(p.stem for p in known)} "
                             f"(or their numbers {', '.join(p.stem[:2] for p in known)})")
        out.append(hits[0])
    return out


def run(names=(), parameters: dict | None = None, output_dir: str = "runs", kernel: str = "python3") -> list[Path]:
    import papermill as pm

    params = dict(parameters or {})
    params.setdefault("output_dir", output_dir)
    out_dir = repo_path(params["output_dir"])
    if out_dir.resolve() == NOTEBOOKS.resolve():
        raise SystemExit("output_dir must not be notebooks/: executed copies never overwrite the sources")
    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for nb in find_notebooks(list(names)):
        target = out_dir / nb.name
        t0 = time.perf_counter()
        print(f"[lib.run] {nb.name} -> {target}", flush=True)
        pm.execute_notebook(str(nb), str(target), parameters=params, kernel_name=kernel,
                            cwd=str(NOTEBOOKS), progress_bar=False)
        print(f"[lib.run] {nb.name} done in {time.perf_counter() - t0:.1f} s", flush=True)
        done.append(target)
    return done


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m lib.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", help="numbers or stems; none = all, in order")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    ap.add_argument("--output-dir", default="runs")
    ap.add_argument("--kernel", default="python3")
    a = ap.parse_args(argv)
    params = {k: resolve_type(v) for k, v in a.parameter}
    run(a.notebooks, params, output_dir=a.output_dir, kernel=a.kernel)


if __name__ == "__main__":
    sys.exit(main())
