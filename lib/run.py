"""Run notebooks headless with papermill: ``python -m lib.run [NOTEBOOK ...] [-p NAME VALUE ...]``.

Two kinds of notebook: lessons (``notebooks/NN_<name>.ipynb``) and evidence notebooks
(``notebooks/evidence/NN_<name>.ipynb``, stem ``evidence/NN_<name>``). A lesson is named by its number (``05``)
or its stem (``05_adarec_adaptive_depth``), an evidence notebook by ``evidence/05`` or its stem; ``lessons``,
``evidence`` and ``all`` name the folders. None named means all, in order: each lesson, then its evidence, 08 last.

Parameters. Every ``-p`` name must be defined by the parameters cell of at least one named notebook: a name that
none defines (``-p epochz 5``) is refused before any kernel starts, with the closest valid names. Each notebook is
passed only the names its cell defines, so ``-p smoke True`` goes to all and ``-p epochs 5`` to those with epochs.
Values are typed as papermill's CLI types them (True/False/None, int, float, else str), except that a parameter
whose default is text keeps the text (``-p dataset 100`` is the folder "100", ``-p output_dir 5`` the folder "5").

Output. Executed copies go to ``<output_dir>/<stem>.ipynb`` (default ``runs/``; ``runs/evidence/`` for evidence),
never over the sources; each notebook also writes ``<output_dir>/<stem>.json``. While a notebook runs, papermill
writes its copy after every cell to ``<stem>.ipynb.<pid>.part`` beside it; the copy becomes ``<stem>.ipynb`` only when
the notebook has run to the end (an older ``<stem>.failed.ipynb`` is then removed). A failed or interrupted run
leaves ``<stem>.failed.ipynb`` (the cells up to the failure, with the full traceback) and never touches the
``<stem>.ipynb`` of an earlier run, so a reader of ``runs/`` never sees half a notebook under the whole one's name.

Progress. Each notebook prints a line per code cell (its number, the time so far, its first line), or papermill's
progress bar when the output is a terminal (``--progress``), and when it ends its time against its budget (BUDGETS,
minutes at the default parameters on 2 CPU cores); a run of several notebooks ends with a table of their times.

Kernel. Notebooks run on the Jupyter kernel ``intentlab`` ("IntentLab (.venv)", registered by ``make install``)
when it runs this checkout's interpreter; otherwise on ``python3`` (this interpreter's ipykernel), with a line
saying why. ``python -m lib.run --lab`` (``make lab``) opens JupyterLab on working copies in ``lab/``.

When a notebook fails, the command prints a short report (notebook, cell, error, where the partly executed
copy is: it holds the full traceback), goes on with the next notebook, and exits with status 1 at the end.
`run` itself raises at the first failure (the tests rely on that).
"""
from __future__ import annotations

import argparse
import ast
import difflib
import hashlib
import json
import os
import re
import signal
import sys
import time
import warnings
from functools import cache
from pathlib import Path

from lib.utils import REPO, repo_path

NOTEBOOKS = REPO / "notebooks"
LAB = REPO / "lab"                       # make lab's working copies (git-ignored)

# The kernel `make install` registers for the user (Makefile: KERNEL, KERNEL_DISPLAY); notebooks name it.
KERNEL = "intentlab"
KERNEL_DISPLAY = "IntentLab (.venv)"
KERNELSPEC = {"display_name": KERNEL_DISPLAY, "language": "python", "name": KERNEL}

# Minutes a notebook may take at its default parameters on 2 CPU cores; None: no budget. A lesson not named here
# has LESSON_BUDGET (every lesson 01-07: issue 35).
BUDGETS = {
    "00": None, "08": None,
    "evidence/01": 10, "evidence/02": 15, "evidence/03": 10, "evidence/04": 20, "evidence/05": 15,
    "evidence/06": 25, "evidence/07": 20,
}
LESSON_BUDGET = 10


class ParameterError(ValueError):
    """A -p name that no named notebook's parameters cell defines; the message names it and the closest names."""


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


def budget(stem: str) -> float | None:
    """Minutes `stem` may take at its default parameters (BUDGETS); a lesson not in the table has LESSON_BUDGET."""
    evidence_nb = stem.startswith("evidence/")
    key = ("evidence/" if evidence_nb else "") + stem.removeprefix("evidence/")[:2]
    return BUDGETS.get(key, None if evidence_nb else LESSON_BUDGET)


def clock(seconds: float) -> str:
    """12.3 -> '0:12', 754 -> '12:34', 3725 -> '1:02:05'."""
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


# --- parameters -------------------------------------------------------------------------------------------------

def notebook_parameters(nb: Path) -> dict[str, str]:
    """{name: default as written} of a notebook's parameters cell, as papermill reads it (inspect_notebook)."""
    import papermill as pm
    try:
        found = pm.inspect_notebook(str(nb))
    except ValueError as e:                        # papermill: "No kernel name found in notebook ..."
        raise ParameterError(f"cannot read the parameters of {nb}: {e} (`.venv/bin/python -c 'from lib import run; "
                             f"run.set_kernelspec()'` names the IntentLab kernel in every notebook)") from None
    return {name: p["default"] for name, p in found.items()}


def _is_text(default: str) -> bool:
    try:
        return isinstance(ast.literal_eval(default), str)
    except (ValueError, SyntaxError):
        return False


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parameters_for(notebooks: list[Path], parameters: dict, cli: bool = False) -> dict[Path, dict]:
    """{notebook: the parameters to pass it}: each notebook gets the names its parameters cell defines. A name that
    no notebook defines is a ParameterError naming it and the closest valid names. A number given for a parameter
    whose default is text becomes text (a folder called "100"). With cli=True the values are -p strings, typed here
    (resolve_type), so that such a parameter keeps the text as typed."""
    defined = {nb: notebook_parameters(nb) for nb in notebooks}
    valid = sorted(set().union(*defined.values())) if defined else []
    for name in parameters:
        if not any(name in d for d in defined.values()):
            raise ParameterError(_unknown(name, valid, {stem_of(nb): d for nb, d in defined.items()}))
    out = {}
    for nb, d in defined.items():
        mine = {}
        for name, value in parameters.items():
            if name not in d:
                continue
            typed = resolve_type(value) if cli and isinstance(value, str) else value
            if _is_text(d[name]) and _number(typed):
                typed = value if cli and isinstance(value, str) else str(value)
            mine[name] = typed
        out[nb] = mine
    return out


def _unknown(name: str, valid: list[str], defined: dict[str, dict]) -> str:
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
    if len(defined) == 1:
        (stem, names), = defined.items()
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        return (f"unknown parameter {name!r}: the parameters cell of {stem} does not define it; {hint}"
                f"its parameters: {', '.join(sorted(names))}")
    where = {c: [s for s, names in defined.items() if c in names] for c in close}
    hint = ("did you mean " + " or ".join(f"{c!r} ({', '.join(where[c][:3])}{', ...' if len(where[c]) > 3 else ''})"
                                          for c in close) + "? ") if close else ""
    return (f"unknown parameter {name!r}: none of the {len(defined)} notebooks named defines it; {hint}"
            f"each notebook's parameters cell lists its names")


# --- kernel -----------------------------------------------------------------------------------------------------

def _same_interpreter(argv0: str) -> bool:
    """A kernelspec's python is this interpreter's (same bin folder: the same venv)."""
    return Path(argv0).expanduser().absolute().parent == Path(sys.executable).absolute().parent


def kernel_choice() -> tuple[str, str | None]:
    """(kernel name, why not KERNEL or None): KERNEL when it is registered and runs this interpreter, else
    'python3' with the reason."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    ksm = KernelSpecManager()
    try:
        python3 = ksm.get_kernel_spec("python3").argv[0]
        here = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}
        fallback = f"'python3' ({sys.executable})" if python3 in here else f"'python3' ({python3})"
    except NoSuchKernel:
        fallback = "'python3'"
    try:
        spec = ksm.get_kernel_spec(KERNEL)
    except NoSuchKernel:
        return "python3", (f"the Jupyter kernel {KERNEL!r} is not registered (`make install` registers it): "
                           f"running the notebooks on {fallback}")
    if not _same_interpreter(spec.argv[0]):
        return "python3", (f"the Jupyter kernel {KERNEL!r} runs {spec.argv[0]}, not this checkout's "
                           f"{sys.executable} (`make kernel` here registers it for this checkout): running the "
                           f"notebooks on {fallback}")
    return KERNEL, None


@cache
def default_kernel() -> str:
    """kernel_choice()'s name; the reason for a fallback is printed once."""
    name, why = kernel_choice()
    if why:
        print(f"[lib.run] {why}", file=sys.stderr, flush=True)
    return name


def set_kernelspec(paths=None) -> list[Path]:
    """Name the IntentLab kernel (KERNELSPEC) in the metadata of every notebook (or of `paths`); returns the files
    changed. The JSON is written as Jupyter writes it (indent 1, UTF-8), so only the kernelspec lines change."""
    changed = []
    for path in paths or all_notebooks():
        path = Path(path)
        nb = json.loads(path.read_text(encoding="utf-8"))
        if nb.get("metadata", {}).get("kernelspec") == KERNELSPEC:
            continue
        nb.setdefault("metadata", {})["kernelspec"] = dict(KERNELSPEC)
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        changed.append(path)
    return changed


# --- JupyterLab on working copies -------------------------------------------------------------------------------

def lab_copies(dest: Path = LAB) -> list[str]:
    """Copy each notebook that has no working copy in `dest` yet (lab/NN_*.ipynb, lab/evidence/NN_*.ipynb) with the
    IntentLab kernel in its metadata; an existing copy is kept (the learner's work). Returns one note per copy whose
    source has changed since it was copied (it is not replaced: delete it to get a fresh one)."""
    dest, notes = Path(dest), []
    for nb in all_notebooks():
        copy = dest / f"{stem_of(nb)}.ipynb"
        digest = hashlib.sha256(nb.read_bytes()).hexdigest()
        if copy.exists():
            try:
                seen = json.loads(copy.read_text(encoding="utf-8"))["metadata"].get("intentlab", {})
            except (ValueError, KeyError):
                seen = {}
            if seen.get("source_sha256") != digest:
                notes.append(f"{nb.relative_to(REPO)} has changed since {copy.relative_to(dest.parent)} was copied; "
                             f"delete the copy to get the new version (your copy is kept)")
            continue
        data = json.loads(nb.read_text(encoding="utf-8"))
        data["metadata"]["kernelspec"] = dict(KERNELSPEC)
        data["metadata"]["intentlab"] = {"source": nb.relative_to(REPO).as_posix(), "source_sha256": digest}
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return notes


def lab_argv(root: Path = LAB) -> list[str]:
    """The JupyterLab command of `make lab`: served from `root`, new notebooks on the IntentLab kernel."""
    return [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={root}",
            f"--MappingKernelManager.default_kernel_name={default_kernel()}"]


def lab(root: Path = LAB, extra=()) -> None:
    """`make lab`: working copies in `root` (lab_copies), then JupyterLab on them (this process becomes it), with
    `extra` flags for JupyterLab (`make lab LAB_ARGS="--port 8899"`; `--allow-root` in a container run as root)."""
    for note in lab_copies(root):
        print(f"[lib.run] {note}", flush=True)
    argv = lab_argv(root) + list(extra)
    print(f"[lib.run] JupyterLab on the working copies in {root} (git-ignored; notebooks/ stays as committed)",
          flush=True)
    os.execv(argv[0], argv)


# --- execution --------------------------------------------------------------------------------------------------

ENGINE = "intentlab"


@cache
def _register_engine() -> str:
    """papermill's nbclient engine with an execution manager that says which notebook and cell run, and for how long.
    Its ``progress_bar`` argument is {"stem": ..., "mode": "lines" | "bar" | "none"}."""
    from papermill.engines import NBClientEngine, NotebookExecutionManager, papermill_engines

    class Progress(NotebookExecutionManager):
        def __init__(self, nb, progress_bar=True, **kw):
            opts = dict(progress_bar) if isinstance(progress_bar, dict) else {}
            self.stem, self.mode = opts.get("stem", ""), opts.get("mode", "lines")
            super().__init__(nb, progress_bar={"desc": self.stem} if self.mode == "bar" else False, **kw)
            self.t0, self.done = time.perf_counter(), 0
            self.n_code = sum(c.get("cell_type") == "code" for c in nb.cells)

        def cell_start(self, cell, cell_index=None, **kw):
            super().cell_start(cell, cell_index, **kw)
            if cell.get("cell_type") != "code":
                return
            self.done += 1
            if self.mode == "lines":
                first = next((x.strip() for x in cell.source.splitlines() if x.strip()), "")
                print(f"[lib.run] {self.stem}  cell {self.done}/{self.n_code}  "
                      f"{clock(time.perf_counter() - self.t0)}  {_cut(first, 70)}", flush=True)

    class Engine(NBClientEngine):
        @classmethod
        def execute_notebook(cls, nb, kernel_name, output_path=None, progress_bar=True, log_output=False,
                             autosave_cell_every=30, **kwargs):
            # papermill's Engine.execute_notebook with Progress in place of its manager
            nb_man = Progress(nb, output_path=output_path, progress_bar=progress_bar, log_output=log_output,
                              autosave_cell_every=autosave_cell_every)
            nb_man.notebook_start()
            try:
                cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
            finally:
                nb_man.cleanup_pbar()
                nb_man.notebook_complete()
            return nb_man.nb

    papermill_engines.register(ENGINE, Engine)
    return ENGINE


def executed_dir(parameters: dict | None, output_dir: str = "runs") -> Path:
    """Where `run` writes executed copies: the ``output_dir`` parameter when given, else ``output_dir``."""
    value = (parameters or {}).get("output_dir", output_dir)
    return repo_path(str(value) if _number(value) else value)


def failed_path(target: Path) -> Path:
    """Where a failed run leaves its partly executed copy: runs/05_x.ipynb -> runs/05_x.failed.ipynb."""
    return target.with_name(f"{target.stem}.failed.ipynb")


def _remove_stale_parts(target: Path) -> None:
    """Delete <target>.<pid>.part files left by runs that were killed (their process is gone)."""
    for part in target.parent.glob(f"{target.name}.*.part"):
        pid = part.name[len(target.name) + 1:-len(".part")]
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                part.unlink(missing_ok=True)
            except PermissionError:
                pass


def _progress_mode(progress: str) -> str:
    if progress == "auto":
        return "bar" if sys.stderr.isatty() else "lines"
    return progress


def _budget_note(stem: str, seconds: float, default_run: bool) -> str:
    minutes = budget(stem)
    if minutes is None:
        return "no budget"
    if not default_run:
        return f"budget {minutes:g} min at the default parameters"
    over = seconds - 60 * minutes
    return f"budget {minutes:g} min: " + (f"OVER by {clock(over)}" if over > 0 else "within")


def run(names=(), parameters: dict | None = None, output_dir: str = "runs", kernel: str | None = None,
        execution_timeout: int | None = None, progress: str = "auto") -> list[Path]:
    """Execute the named notebooks (all when none), in order; raises at the first that fails, with papermill's
    full traceback (the partly executed copy is left at <stem>.failed.ipynb before the error is raised).
    Every parameter name is checked against the notebooks' parameters cells first (ParameterError, before any
    kernel starts); kernel None is default_kernel()."""
    import papermill as pm

    notebooks = find_notebooks(list(names))
    params = dict(parameters or {})
    out_dir = executed_dir(params, output_dir)
    if out_dir.resolve() == NOTEBOOKS.resolve():
        raise SystemExit("output_dir must not be notebooks/: executed copies never overwrite the sources")
    per_notebook = parameters_for(notebooks, params)
    engine, mode = _register_engine(), _progress_mode(progress)
    kernel = kernel or default_kernel()
    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for nb in notebooks:
        stem = stem_of(nb)
        given = per_notebook[nb]
        nb_params = {"output_dir": output_dir, **given} if "output_dir" in notebook_parameters(nb) else given
        target = out_dir / f"{stem}.ipynb"
        part, failed = target.with_name(f"{target.name}.{os.getpid()}.part"), failed_path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_parts(target)
        t0 = time.perf_counter()
        print(f"[lib.run] {stem} -> {target} (kernel {kernel})", flush=True)
        try:
            with warnings.catch_warnings():         # papermill warns that "*.part" does not end in .ipynb
                warnings.filterwarnings("ignore", message=r"The specified file .* does not end in one of")
                pm.execute_notebook(str(nb), str(part), parameters=nb_params, kernel_name=kernel,
                                    cwd=str(NOTEBOOKS), engine_name=engine, progress_bar={"stem": stem, "mode": mode},
                                    execution_timeout=execution_timeout)
        except BaseException as e:                  # a failure, Ctrl-C or SIGTERM: the partial copy is set aside
            if part.exists():
                os.replace(part, failed)
            if isinstance(e, Exception):
                e.add_note(f"[lib.run] partly executed copy of {stem}: {failed}")
            raise
        os.replace(part, target)                    # atomic: readers see the old copy or the whole new one
        failed.unlink(missing_ok=True)
        seconds = time.perf_counter() - t0
        default_run = not (set(given) - {"output_dir"})
        print(f"[lib.run] {stem} done in {clock(seconds)} ({_budget_note(stem, seconds, default_run)})", flush=True)
        done.append(target)
    return done


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def failure_report(nb: Path, copy: Path, err: BaseException, since: float = 0.0) -> str:
    """A few lines on a failed notebook: its name, the cell and line, the error, and where the partly executed copy
    is when it was written after ``since`` (a time.time(); an older copy is from another run)."""
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
    if copy.is_file() and copy.stat().st_mtime >= since:
        lines.append(f"  partly executed copy, full traceback inside: {copy}")
    return "\n".join(lines)


def _cut(text: str, width: int = 200) -> str:
    """The first line of ``text``, at most ``width`` characters."""
    first = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return first if len(first) <= width else first[:width - 3] + "..."


def summary(rows: list[tuple[str, float, str]], default_run: bool) -> str:
    """The table a run of several notebooks ends with: (stem, seconds, status) per notebook, its budget beside it."""
    width = max(len(s) for s, *_ in rows)
    lines = [f"[lib.run] {'notebook':<{width}}  {'time':>8}  {'budget':>6}  status"]
    for stem, seconds, status in rows:
        minutes = budget(stem)
        limit = "-" if minutes is None else clock(60 * minutes)
        over = default_run and minutes is not None and seconds > 60 * minutes and status == "ok"
        lines.append(f"[lib.run] {stem:<{width}}  {clock(seconds):>8}  {limit:>6}  {status}{'  OVER' if over else ''}")
    lines.append(f"[lib.run] {'total':<{width}}  {clock(sum(r[1] for r in rows)):>8}"
                 + ("" if default_run else "   (budgets are for the default parameters)"))
    return "\n".join(lines)


def _terminate(signum, frame):
    raise SystemExit(128 + signum)              # unwinds like Ctrl-C: the partial copy goes to <stem>.failed.ipynb


def main(argv=None) -> int:
    """The command line: runs each notebook in turn, reports failures briefly, goes on; 1 if any failed, else 0
    (2 for a parameter that no named notebook defines: nothing runs)."""
    ap = argparse.ArgumentParser(prog="python -m lib.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", help="numbers, stems or folders (lessons, evidence, all); none = all")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    ap.add_argument("--output-dir", default="runs")
    ap.add_argument("--kernel", default=None,
                    help=f"Jupyter kernel (default: {KERNEL!r} where it runs this interpreter, else 'python3')")
    ap.add_argument("--progress", choices=("auto", "lines", "bar", "none"), default="auto",
                    help="a line per code cell, papermill's bar, or nothing (auto: the bar on a terminal)")
    ap.add_argument("--lab", action="store_true",
                    help="JupyterLab on working copies in lab/ (make lab); the arguments after it go to JupyterLab")
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--lab" in argv:
        lab(extra=argv[argv.index("--lab") + 1:])    # becomes JupyterLab: does not return
    a = ap.parse_args(argv)
    notebooks = find_notebooks(a.notebooks)          # every name checked before anything runs
    try:
        per_notebook = parameters_for(notebooks, dict(a.parameter), cli=True)
    except ParameterError as e:
        print(f"[lib.run] {e}", file=sys.stderr, flush=True)
        return 2
    for nb in notebooks:
        left = [name for name, _ in a.parameter if name not in per_notebook[nb]]
        if left:
            print(f"[lib.run] {stem_of(nb)} does not define {', '.join(dict.fromkeys(left))}: not passed to it",
                  flush=True)
    kernel = a.kernel or default_kernel()
    failed, rows = [], []
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        for nb in notebooks:
            params = per_notebook[nb]
            started, t0 = time.time() - 1.0, time.perf_counter()  # file times can be coarser than the clock
            try:
                run([stem_of(nb)], params, output_dir=a.output_dir, kernel=kernel, progress=a.progress)
                rows.append((stem_of(nb), time.perf_counter() - t0, "ok"))
            except Exception as e:
                target = executed_dir(params, a.output_dir) / f"{stem_of(nb)}.ipynb"
                print(failure_report(nb, failed_path(target), e, since=started), file=sys.stderr, flush=True)
                failed.append(stem_of(nb))
                rows.append((stem_of(nb), time.perf_counter() - t0, "FAILED"))
            except (KeyboardInterrupt, SystemExit) as e:     # Ctrl-C or SIGTERM (_terminate)
                target = executed_dir(params, a.output_dir) / f"{stem_of(nb)}.ipynb"
                print(f"[lib.run] interrupted during {stem_of(nb)}: partly executed copy {failed_path(target)}",
                      file=sys.stderr, flush=True)
                return 130 if isinstance(e, KeyboardInterrupt) else e.code
    finally:
        signal.signal(signal.SIGTERM, previous)
    if len(notebooks) > 1:
        default_run = not (set(dict(a.parameter)) - {"output_dir"})
        print(summary(rows, default_run), flush=True)
    if failed:
        if len(notebooks) > 1:
            print(f"[lib.run] {len(failed)} of {len(notebooks)} notebooks failed: {', '.join(failed)}",
                  file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
