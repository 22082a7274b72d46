"""lib.run: naming notebooks, typing -p values like papermill, never writing over the sources."""
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
    monkeypatch.setattr(run, "run", lambda names, params, output_dir, kernel: seen.update(
        names=names, params=params, output_dir=output_dir))
    run.main(["01", "-p", "smoke", "True", "-p", "epochs", "3", "--output-dir", "/tmp/x"])
    assert seen == {"names": ["01_sasrec_baseline"], "params": {"smoke": True, "epochs": 3}, "output_dir": "/tmp/x"}


def test_main_reports_a_failure_briefly_goes_on_and_exits_nonzero(monkeypatch, capsys, tmp_path):
    from papermill.exceptions import PapermillExecutionError
    calls = []

    def fake_run(names, params, output_dir, kernel):
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
    monkeypatch.setattr(run, "run", lambda names, params, output_dir, kernel: None)
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
    copy = tmp_path / "00_data_tour.ipynb"
    assert copy.is_file() and str(copy) in out
    assert "ParamError" in copy.read_text(), "the full traceback stays in the executed copy"
    print(f"failing run took {seconds:.1f} s")
