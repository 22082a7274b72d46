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


def test_refuses_to_write_into_notebooks():
    with pytest.raises(SystemExit, match="must not be notebooks/"):
        run.run(["00"], output_dir="notebooks")


def test_cli_parses_parameters(monkeypatch):
    seen = {}
    monkeypatch.setattr(run, "run", lambda names, params, output_dir, kernel: seen.update(
        names=names, params=params, output_dir=output_dir))
    run.main(["01", "-p", "smoke", "True", "-p", "epochs", "3", "--output-dir", "/tmp/x"])
    assert seen == {"names": ["01"], "params": {"smoke": True, "epochs": 3}, "output_dir": "/tmp/x"}
