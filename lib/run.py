"""Run notebooks headless with papermill: ``python -m lib.run [NOTEBOOK ...] [-p NAME VALUE ...]``.

Two kinds of notebook: lessons (``notebooks/NN_<name>.ipynb``) and evidence notebooks
(``notebooks/evidence/NN_<name>.ipynb``, stem ``evidence/NN_<name>``). A lesson is named by its number (``05``)
or its stem (``05_adarec_adaptive_depth``), an evidence notebook by ``evidence/05`` or its stem; ``lessons``,
``evidence`` and ``all`` name the folders. None named means all, in order: each lesson, then its evidence, 08 last.
Executed copies go to ``<output_dir>/<stem>.ipynb`` (default ``runs/``; ``runs/evidence/`` for evidence),
never over the sources; each notebook also writes ``<output_dir>/<stem>.json``. ``-p`` values are typed as papermill's own CLI
types them (True/False/None, int, float, else str).

When a notebook fails, the command prints a short report (notebook, cell, error, where the partly executed
copy is: it holds the full traceback), goes on with the next notebook, and exits with status 1 at the end.
`run` itself raises at the first failure (the tests rely on that).
"""
from __future__ import annotations

import argparse
import re
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


def stem_of(path: Path) -> str:
    """A notebook's stem: its path under notebooks/ without .ipynb ("05_adarec_adaptive_depth",
    "evidence/05_adarec_adaptive_depth")."""
    return path.relative_to(NOTEBOOKS).with_suffix("").as_posix()


def lessons() -> list[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def evidence() -> list[Path]:
    return sorted((NOTEBOOKS / "evidence").glob("[0-9][0-9]_*.ipynb"))


def all_notebooks() -> list[Path]:
    """Every notebook in running order: by number, a lesson before its evidence notebook."""
    return sorted(lessons() + evidence(), key=lambda p: (p.name[:2], p.parent != NOTEBOOKS))


FOLDERS = {"lessons": lessons, "evidence": evidence, "all": all_notebooks}


def find_notebooks(names: list[str]) -> list[Path]:
    known = all_notebooks()
    if not names:
        return known
    out = []
    for name in names:
        if name.rstrip("/") in FOLDERS:
            out += [p for p in FOLDERS[name.rstrip("/")]() if p not in out]
            continue
        ev = name.startswith("evidence/")
        stem = Path(name.removeprefix("evidence/")).stem
        pool = evidence() if ev else lessons()
        hits = [p for p in pool if p.stem == stem or p.stem.split("_", 1)[0] == stem]
        if len(hits) != 1:
            raise SystemExit(f"unknown notebook {name!r}; valid: {', '.join(stem_of(p) for p in known)} "
                             f"(or their numbers: NN for a lesson, evidence/NN for its evidence), or a folder: "
                             f"{', '.join(FOLDERS)}")
        out += [hits[0]] if hits[0] not in out else []
    return out


def executed_dir(parameters: dict | None, output_dir: str = "runs") -> Path:
    """Where `run` writes executed copies: the ``output_dir`` parameter when given, else ``output_dir``."""
    return repo_path((parameters or {}).get("output_dir", output_dir))


def run(names=(), parameters: dict | None = None, output_dir: str = "runs", kernel: str = "python3",
        execution_timeout: int | None = None) -> list[Path]:
    """Execute the named notebooks (all when none), in order; raises at the first that fails, with papermill's
    full traceback (the executed copy, up to the failing cell, is written before the error is raised)."""
    import papermill as pm

    params = dict(parameters or {})
    params.setdefault("output_dir", output_dir)
    out_dir = executed_dir(params)
    if out_dir.resolve() == NOTEBOOKS.resolve():
        raise SystemExit("output_dir must not be notebooks/: executed copies never overwrite the sources")
    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for nb in find_notebooks(list(names)):
        target = out_dir / f"{stem_of(nb)}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        print(f"[lib.run] {stem_of(nb)} -> {target}", flush=True)
        try:
            pm.execute_notebook(str(nb), str(target), parameters=params, kernel_name=kernel,
                                cwd=str(NOTEBOOKS), progress_bar=False, execution_timeout=execution_timeout)
        except Exception as e:
            e.add_note(f"[lib.run] partly executed copy of {stem_of(nb)}: {target}")
            raise
        print(f"[lib.run] {stem_of(nb)} done in {time.perf_counter() - t0:.1f} s", flush=True)
        done.append(target)
    return done


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def failure_report(nb: Path, target: Path, err: BaseException, since: float = 0.0) -> str:
    """A few lines on a failed notebook: its name, the cell and line, the error, and where the executed copy is
    when it was written after ``since`` (a time.time(); an older copy is from another run)."""
    from papermill.exceptions import PapermillExecutionError

    lines = [f"[lib.run] FAILED {stem_of(nb)}"]
    if isinstance(err, PapermillExecutionError):
        src = err.source or ""
        where = f"In [{err.exec_count}] of the executed copy"
        try:
            import nbformat
            cells = nbformat.read(nb, as_version=4).cells
            index = next(i for i, c in enumerate(cells) if c.source == src)
            where = f"cell index {index} of {nb.relative_to(REPO)} ({where})"
        except (StopIteration, OSError, ValueError):
            pass
        tb = _ANSI.sub("", "\n".join(err.traceback or []))
        m = re.search(rf"Cell In\[{err.exec_count}\], line (\d+)", tb)
        code = src.splitlines()
        if m and 0 < int(m.group(1)) <= len(code):
            where, line = f"{where}, line {m.group(1)}", code[int(m.group(1)) - 1]
        else:
            where, line = f"{where}, first line", next((x for x in code if x.strip()), "")
        lines += [f"  at {where}:", f"    {_cut(line.strip())}", f"  {err.ename}: {_cut(err.evalue)}"]
    else:
        lines.append(f"  {type(err).__name__}: {_cut(str(err).strip())}")
    if target.is_file() and target.stat().st_mtime >= since:
        lines.append(f"  partly executed copy, full traceback inside: {target}")
    return "\n".join(lines)


def _cut(text: str, width: int = 200) -> str:
    """The first line of ``text``, at most ``width`` characters."""
    first = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return first if len(first) <= width else first[:width - 3] + "..."


def main(argv=None) -> int:
    """The command line: runs each notebook in turn, reports failures briefly, goes on; 1 if any failed, else 0."""
    ap = argparse.ArgumentParser(prog="python -m lib.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", help="numbers or stems; none = all, in order")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    ap.add_argument("--output-dir", default="runs")
    ap.add_argument("--kernel", default="python3")
    a = ap.parse_args(argv)
    params = {k: resolve_type(v) for k, v in a.parameter}
    notebooks = find_notebooks(a.notebooks)          # every name checked before anything runs
    failed = []
    for nb in notebooks:
        started = time.time() - 1.0                  # file times can be coarser than the clock
        try:
            run([stem_of(nb)], params, output_dir=a.output_dir, kernel=a.kernel)
        except Exception as e:
            target = executed_dir(params, a.output_dir) / f"{stem_of(nb)}.ipynb"
            print(failure_report(nb, target, e, since=started), file=sys.stderr, flush=True)
            failed.append(stem_of(nb))
    if failed:
        if len(notebooks) > 1:
            print(f"[lib.run] {len(failed)} of {len(notebooks)} notebooks failed: {', '.join(failed)}",
                  file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
