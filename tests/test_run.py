"""lib.run: naming notebooks, typing -p values like papermill, refusing unknown parameter names before a kernel
starts, never writing over the sources, a whole executed copy or a .failed one, progress and budgets, the kernel."""
import json
import sys

import pytest

from lib import run


def test_resolve_type_like_papermill():
    assert run.resolve_type("True") is True and run.resolve_type("False") is False
    assert run.resolve_type("None") is None
    assert run.resolve_type("3") == 3 and isinstance(run.resolve_type("3"), int)
    assert run.resolve_type("0.5") == 0.5 and run.resolve_type("ml-100k") == "ml-100k"


def test_find_notebooks_by_number_or_stem():
    nbs = run.all_notebooks()
    assert [p.stem[:2] for p in nbs] == sorted(p.stem[:2] for p in nbs)
    assert run.find_notebooks(["00"])[0].stem == "00_data_tour"
    assert run.find_notebooks(["01_sasrec_baseline"])[0].stem == "01_sasrec_baseline"
    assert run.find_notebooks([]) == nbs
    with pytest.raises(SystemExit, match=r"unknown notebook '99'; valid: 00_data_tour"):
        run.find_notebooks(["99"])
    assert run.find_notebooks(["lessons"]) == run.lessons()
    assert all(run.stem_of(p).startswith("evidence/") for p in run.find_notebooks(["evidence"]))
    order = [(p.name[:2], p.parent.name) for p in nbs]
    assert order == sorted(order, key=lambda o: (o[0], o[1] == "evidence")), "a lesson runs before its evidence"


def test_refuses_to_write_into_notebooks():
    with pytest.raises(SystemExit, match="must not be notebooks/"):
        run.run(["00"], output_dir="notebooks")


def test_cli_parses_parameters(monkeypatch):
    seen = {}
    monkeypatch.setattr(run, "run", lambda names, params, output_dir, **kw: seen.update(
        names=names, params=params, output_dir=output_dir))
    run.main(["01", "-p", "smoke", "True", "-p", "seed", "3", "--output-dir", "/tmp/x"])
    assert seen == {"names": ["01_sasrec_baseline"], "params": {"smoke": True, "seed": 3}, "output_dir": "/tmp/x"}


def test_main_reports_a_failure_briefly_goes_on_and_exits_nonzero(monkeypatch, capsys, tmp_path):
    from papermill.exceptions import PapermillExecutionError
    calls = []

    def fake_run(names, params, output_dir, **kw):
        calls.append(names)
        if names == ["00_data_tour"]:
            raise PapermillExecutionError(4, 3, "import x\nP = params.check(seed=seed)\n", "ParamError",
                                          "seed must be an integer >= 0, got -1",
                                          ["ParamError  Traceback", "Cell \x1b[0;32mIn[3], line 2\x1b[0m"])
    monkeypatch.setattr(run, "run", fake_run)
    assert run.main(["00", "01", "--output-dir", str(tmp_path)]) == 1
    assert calls == [["00_data_tour"], ["01_sasrec_baseline"]], "the next notebook still runs"
    err = capsys.readouterr().err
    assert "FAILED 00_data_tour" in err and "In [3]" in err and "line 2" in err
    assert "P = params.check(seed=seed)" in err and "ParamError: seed must be an integer >= 0, got -1" in err
    assert "1 of 2 notebooks failed: 00_data_tour" in err
    monkeypatch.setattr(run, "run", lambda names, params, output_dir, **kw: None)
    assert run.main(["00"]) == 0


@pytest.mark.notebook
def test_cli_bad_parameter_gives_a_short_report(tmp_path):
    """A real run: notebook 00's first code cell refuses seed=-1; the user sees a few lines, not papermill's 40."""
    import subprocess
    import sys
    import time

    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lib.run", "00", "-p", "smoke", "True", "-p", "seed", "-1",
                           "--output-dir", str(tmp_path)], cwd=run.REPO, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "FAILED 00_data_tour" in out and "cell index 2 of notebooks/00_data_tour.ipynb" in out, out
    assert "params.check(" in out, "names the failing line"
    assert "ParamError: seed must be an integer >= 0, got -1" in out, out
    assert "Traceback" not in out, out
    assert len(out.strip().splitlines()) < 15, out
    copy = tmp_path / "00_data_tour.failed.ipynb"
    assert copy.is_file() and str(copy) in out
    assert "ParamError" in copy.read_text(), "the full traceback stays in the executed copy"
    assert not (tmp_path / "00_data_tour.ipynb").exists(), "a failed run leaves no <stem>.ipynb"
    assert not list(tmp_path.glob("*.part")), "nor its temporary file"
    print(f"failing run took {seconds:.1f} s")


# --- parameters: names checked before any kernel starts, each notebook gets its own, text stays text --------------

@pytest.fixture()
def no_kernel(monkeypatch):
    """papermill must not be asked to run anything."""
    import papermill

    def refuse(*a, **kw):
        raise AssertionError("a kernel was started")
    monkeypatch.setattr(papermill, "execute_notebook", refuse)


def test_unknown_parameter_is_refused_naming_it_and_the_closest(no_kernel, capsys, tmp_path):
    nb = run.find_notebooks(["01"])[0]
    name = max(run.notebook_parameters(nb), key=len)                    # 01's longest parameter name, misspelt
    typo = name[:-1] + ("z" if name[-1] != "z" else "y")
    assert run.main(["01", "-p", "smoke", "True", "-p", typo, "5", "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"unknown parameter {typo!r}: the parameters cell of 01_sasrec_baseline does not define it" in err, err
    assert "did you mean" in err and f"{name!r}" in err.split("did you mean")[1].split("?")[0], err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert run.main(["00", "-p", "epochz", "5"]) == 2                   # no name close to it: 00's names are listed
    err = capsys.readouterr().err
    assert "unknown parameter 'epochz'" in err and "its parameters: dataset, device" in err
    with pytest.raises(run.ParameterError, match=f"unknown parameter {typo!r}.*did you mean.*{name!r}"):
        run.run(["01"], {typo: 0.1}, output_dir=str(tmp_path))
    assert not list(tmp_path.iterdir()), "nothing written"


def test_several_notebooks_a_name_one_of_them_defines_goes_to_it_alone(no_kernel, capsys):
    nbs = run.all_notebooks()
    defined = {nb: run.notebook_parameters(nb) for nb in nbs}
    some = sorted({n for d in defined.values() for n in d} - set.intersection(*(set(d) for d in defined.values())))
    name = max(some, key=len)                                           # a name some notebooks define, not all
    per = run.parameters_for(nbs, {name: "3", "smoke": "True"}, cli=True)
    for nb in nbs:
        assert per[nb].get("smoke") is True, "every notebook defines smoke"
        assert (name in per[nb]) == (name in defined[nb])
    first = next(run.stem_of(nb) for nb in nbs if name in defined[nb])
    with pytest.raises(run.ParameterError, match=rf"none of the \d+ notebooks named defines it; did you mean .*"
                                                 rf"{name!r} \({first}"):
        run.parameters_for(nbs, {name[:-1] + ("z" if name[-1] != "z" else "y"): "3"}, cli=True)


def test_text_parameters_keep_their_text(no_kernel):
    nb = run.find_notebooks(["00"])
    cli = run.parameters_for(nb, {"dataset": "100", "output_dir": "5", "seed": "3", "smoke": "True"}, cli=True)[nb[0]]
    assert cli == {"dataset": "100", "output_dir": "5", "seed": 3, "smoke": True}
    assert run.parameters_for(nb, {"dataset": "1e3"}, cli=True)[nb[0]] == {"dataset": "1e3"}, "the text as typed"
    assert run.parameters_for(nb, {"dataset": "None"}, cli=True)[nb[0]] == {"dataset": None}, "None stays None"
    py = run.parameters_for(nb, {"dataset": 100, "output_dir": 5, "seed": 3})[nb[0]]
    assert py == {"dataset": "100", "output_dir": "5", "seed": 3}
    assert run.executed_dir({"output_dir": 5}) == run.REPO / "5"


# --- what a run leaves: the whole copy under <stem>.ipynb, a failed one under <stem>.failed.ipynb -----------------

def _fake_papermill(monkeypatch, fail=None):
    """execute_notebook that writes a partial copy to its output path (as papermill does after each cell) and then
    succeeds, or raises `fail`."""
    import papermill
    seen = {}

    def fake(input_path, output_path, **kw):
        seen.update(output=output_path, **kw)
        with open(output_path, "w") as f:
            f.write('{"partial": true}')
        if fail is not None:
            raise fail
        with open(output_path, "w") as f:
            f.write('{"whole": true}')
    monkeypatch.setattr(papermill, "execute_notebook", fake)
    return seen


def test_the_copy_appears_whole_and_only_at_the_end(monkeypatch, tmp_path, capsys):
    (tmp_path / "00_data_tour.failed.ipynb").write_text("an older failure")
    (tmp_path / "00_data_tour.ipynb.999999999.part").write_text("left by a killed run")
    seen = _fake_papermill(monkeypatch)
    assert run.run(["00"], {"smoke": True}, output_dir=str(tmp_path), kernel="python3") == [tmp_path / "00_data_tour.ipynb"]
    assert seen["output"].endswith(".part") and seen["output"].startswith(str(tmp_path / "00_data_tour.ipynb."))
    assert seen["parameters"] == {"output_dir": str(tmp_path), "smoke": True} and seen["kernel_name"] == "python3"
    assert json.loads((tmp_path / "00_data_tour.ipynb").read_text()) == {"whole": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00_data_tour.ipynb"], "old .failed and stale .part gone"
    out = capsys.readouterr().out
    assert "00_data_tour done in" in out and "(no budget)" in out


@pytest.mark.parametrize("error", [RuntimeError("cell 3 failed"), KeyboardInterrupt(), SystemExit(143)])
def test_a_failed_or_interrupted_run_leaves_the_old_copy_and_a_failed_one(monkeypatch, tmp_path, error):
    (tmp_path / "01_sasrec_baseline.ipynb").write_text("an earlier whole run")
    _fake_papermill(monkeypatch, fail=error)
    with pytest.raises(type(error)) as info:
        run.run(["01"], {"smoke": True}, output_dir=str(tmp_path), kernel="python3")
    assert (tmp_path / "01_sasrec_baseline.ipynb").read_text() == "an earlier whole run"
    assert json.loads((tmp_path / "01_sasrec_baseline.failed.ipynb").read_text()) == {"partial": True}
    assert not list(tmp_path.glob("*.part"))
    if isinstance(error, Exception):
        assert any("01_sasrec_baseline.failed.ipynb" in n for n in info.value.__notes__)


@pytest.mark.notebook
def test_a_process_killed_mid_run_leaves_no_half_written_copy(tmp_path):
    """SIGTERM to `python -m lib.run` while a cell runs: the partial copy becomes <stem>.failed.ipynb; SIGKILL leaves
    only a .part file (the next run of that notebook removes it); never a half-written <stem>.ipynb."""
    import signal
    import subprocess
    import threading
    import time

    nbs, out = tmp_path / "notebooks", tmp_path / "out"
    nbs.mkdir()
    _tiny(nbs / "01_sleepy.ipynb", ["import time", "time.sleep(600)"])
    code = (f"import sys; from pathlib import Path; from lib import run; run.NOTEBOOKS = Path({str(nbs)!r}); "
            f"sys.exit(run.main(['01', '--output-dir', {str(out)!r}, '--kernel', 'python3', '--progress', 'lines']))")
    for sig in (signal.SIGTERM, signal.SIGKILL):
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=run.REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        guard = threading.Timer(300, proc.kill)                      # never hang the test session
        guard.start()
        lines = []
        for line in proc.stdout:                                    # until the sleeping cell runs
            lines.append(line)
            if "01_sleepy  cell" in line and "import time" in line:
                break
        time.sleep(1.0)
        proc.send_signal(sig)
        rest = proc.communicate(timeout=120)[0]
        guard.cancel()
        assert proc.returncode != 0, "".join(lines) + rest
        assert not (out / "01_sleepy.ipynb").exists(), "".join(lines) + rest
        leftovers = sorted(p.name for p in out.iterdir())
        if sig == signal.SIGTERM:
            assert leftovers == ["01_sleepy.failed.ipynb"], leftovers
            assert "interrupted during 01_sleepy" in rest, rest
            cells = json.loads((out / "01_sleepy.failed.ipynb").read_text())["cells"]
            assert "time.sleep(600)" in "".join(cells[-1]["source"]), "a whole JSON file, up to the cell it stopped in"
        else:
            assert f"01_sleepy.ipynb.{proc.pid}.part" in leftovers, leftovers


# --- progress and budgets ----------------------------------------------------------------------------------------

def _tiny(path, *cells):
    """A notebook with a parameters cell (smoke, output_dir) and a code cell per list of lines."""
    import nbformat
    nb = nbformat.v4.new_notebook()
    par = nbformat.v4.new_code_cell('smoke = False  # shrink\noutput_dir = "runs"  # where results go')
    par.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# tiny"), par]
    nb.cells += [nbformat.v4.new_code_cell("\n".join(c)) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.mark.notebook
def test_progress_lines_and_budget_of_a_real_run(tmp_path, monkeypatch, capsys):
    """A tiny notebook on a real kernel: a line per code cell with its number, the time so far and its first line,
    the time against the budget, the whole copy renamed into place."""
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _tiny(nbs / "01_tiny.ipynb", ["x = 6 * 7"], ["print(x)"])
    monkeypatch.setattr(run, "NOTEBOOKS", nbs)
    assert run.main(["01", "--output-dir", str(tmp_path / "out"), "--progress", "lines", "--kernel", "python3"]) == 0
    out = capsys.readouterr().out
    assert "[lib.run] 01_tiny  cell 1/4  0:" in out and "smoke = False" in out, out
    assert "[lib.run] 01_tiny  cell 4/4  0:" in out and "print(x)" in out, out
    assert "01_tiny done in 0:" in out and "(budget 10 min: within)" in out, out
    copy = json.loads((tmp_path / "out" / "01_tiny.ipynb").read_text())
    assert copy["cells"][-1]["outputs"][0]["text"] == ["42\n"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["01_tiny.ipynb"]


def test_budgets_table():
    assert run.budget("00_data_tour") is None and run.budget("08_leaderboard") is None
    assert all(run.budget(f"0{n}_x") == 10 for n in range(1, 8)), "every lesson: 10 minutes"
    assert {n: run.budget(f"evidence/0{n}_x") for n in range(1, 8)} == {1: 10, 2: 15, 3: 10, 4: 20, 5: 15, 6: 25, 7: 20}
    for nb in run.all_notebooks():
        stem = run.stem_of(nb)
        assert stem.startswith(("00", "08")) == (run.budget(stem) is None), stem
    assert run.clock(5) == "0:05" and run.clock(754) == "12:34" and run.clock(3725) == "1:02:05"


def test_summary_marks_a_default_run_over_its_budget():
    rows = [("00_data_tour", 30.0, "ok"), ("evidence/02_dual_view_fusion", 16 * 60.0, "ok"),
            ("04_intent_clusters", 9 * 60.0, "FAILED")]
    text = run.summary(rows, default_run=True)
    lines = text.splitlines()
    assert "evidence/02_dual_view_fusion" in lines[2] and "16:00" in lines[2] and "15:00" in lines[2]
    assert lines[2].endswith("OVER") and lines[1].endswith("ok") and lines[3].endswith("FAILED")
    assert "total" in lines[-1] and "25:30" in lines[-1]
    assert "OVER" not in run.summary(rows, default_run=False), "budgets are for the default parameters"


# --- the kernel ---------------------------------------------------------------------------------------------------

def test_kernel_choice_falls_back_saying_why(monkeypatch):
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager, NoSuchKernel
    specs = {}

    def get(self, name):
        if name not in specs:
            raise NoSuchKernel(name)
        return specs[name]
    monkeypatch.setattr(KernelSpecManager, "get_kernel_spec", get)
    specs["python3"] = KernelSpec(argv=["/usr/bin/python3", "-m", "ipykernel_launcher"], display_name="Python 3")
    name, why = run.kernel_choice()
    assert name == "python3" and "'intentlab' is not registered (`make install` registers it)" in why
    assert "running the notebooks on 'python3' (/usr/bin/python3)" in why
    specs["python3"] = KernelSpec(argv=["python", "-m", "ipykernel_launcher"])     # jupyter_client's native spec
    assert f"on 'python3' ({sys.executable})" in run.kernel_choice()[1], "jupyter_client runs 'python' as this one"
    specs["intentlab"] = KernelSpec(argv=["/elsewhere/.venv/bin/python", "-m", "ipykernel_launcher"])
    name, why = run.kernel_choice()
    assert name == "python3" and "runs /elsewhere/.venv/bin/python, not this checkout's" in why
    specs["intentlab"] = KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher"])
    assert run.kernel_choice() == ("intentlab", None)


def test_makefile_registers_the_kernel_lib_run_uses():
    text = (run.REPO / "Makefile").read_text()
    assert f"KERNEL         := {run.KERNEL}\n" in text and f"KERNEL_DISPLAY := {run.KERNEL_DISPLAY}\n" in text
    assert "ipykernel install --user --name $(KERNEL)" in text
    env = text.split("KERNEL_ENV     :=")[1].splitlines()[0].split()
    assert {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "PYTHONHASHSEED"} <= set(env)
    assert all(f"export {v} :=" in text for v in env), "the kernel gets the variables make exports"


def test_set_kernelspec_changes_only_the_kernelspec(tmp_path):
    import shutil
    copies = []
    for nb in run.all_notebooks():
        copies.append(tmp_path / nb.name)
        shutil.copy(nb, copies[-1])
    before = {p: p.read_text().splitlines() for p in copies}
    run.set_kernelspec(copies)
    for p in copies:
        assert json.loads(p.read_text())["metadata"]["kernelspec"] == run.KERNELSPEC
        after = p.read_text().splitlines()
        changed = [a for a, b in zip(after, before[p]) if a != b]
        assert len(after) == len(before[p]) and len(changed) <= 3, (p.name, changed)   # the kernelspec's lines
    assert run.set_kernelspec(copies) == [], "a second pass changes nothing"


def test_every_notebook_names_the_intentlab_kernel():
    """Fails until the notebooks are updated once: `python -c "from lib import run; run.set_kernelspec()"`."""
    wrong = [run.stem_of(nb) for nb in run.all_notebooks()
             if json.loads(nb.read_text())["metadata"].get("kernelspec") != run.KERNELSPEC]
    assert not wrong, (f"these notebooks do not name the kernel {run.KERNEL!r}: {wrong}; run "
                       f"`.venv/bin/python -c 'from lib import run; run.set_kernelspec()'`")
