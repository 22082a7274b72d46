"""Every notebook runs top to bottom under papermill with smoke=True and records its results."""
import math

import nbformat
import pytest

from lib import run

NOTEBOOKS = [run.stem_of(p) for p in run.all_notebooks()]


def _numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_source_is_clean_and_parameterized(stem):
    nb = nbformat.read(run.NOTEBOOKS / f"{stem}.ipynb", as_version=4)
    for cell in nb.cells:
        assert not cell.get("outputs"), f"{stem}: committed notebooks carry no outputs"
        assert cell.get("execution_count") is None, f"{stem}: committed notebooks carry no execution counts"
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{stem}: exactly one cell tagged 'parameters'"
    src = tagged[0].source
    for name in ("dataset", "seed", "device", "smoke", "output_dir"):
        assert f"{name} =" in src, f"{stem}: parameters cell lacks {name}"
    import re

    import papermill as pm
    assigned = re.findall(r"^(\w+)\s*=", src, flags=re.M)
    parsed = pm.inspect_notebook(str(run.NOTEBOOKS / f"{stem}.ipynb"))
    assert sorted(parsed) == sorted(assigned), f"{stem}: papermill must parse every parameter line"
    after = nb.cells[nb.cells.index(tagged[0]) + 1:]
    first_code = next(c for c in after if c.cell_type == "code")
    assert "params.check(" in first_code.source, f"{stem}: first code cell after parameters validates them"


LESSONS = [run.stem_of(p) for p in run.lessons() if p.name[:2] in ("01", "02", "03", "04", "05", "06", "07")]


@pytest.mark.parametrize("stem", LESSONS)
def test_a_lesson_teaches_and_decides_nothing(stem):
    """Issue 35: a lesson has at most 12 parameters, calls no claims.decide / decide_all / metrics.compare, ends with a
    Summary and Exercises, and links to its evidence notebook, which exists."""
    import re
    nb = nbformat.read(run.NOTEBOOKS / f"{stem}.ipynb", as_version=4)
    par = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", []))
    names = re.findall(r"^([A-Za-z_]\w*)\s*=", par.source, flags=re.M)
    assert len(names) <= 12, f"{stem} is a lesson with {len(names)} parameters (at most 12): {names}"
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert not re.search(r"claims\.decide|decide_all|metrics\.compare\(", code), f"{stem} decides claims"
    md = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "## Summary" in md and "## Exercises" in md, f"{stem} needs '## Summary' and '## Exercises'"
    assert f"evidence/{stem}.ipynb" in md, f"{stem} links to its evidence notebook"
    assert (run.NOTEBOOKS / "evidence" / f"{stem}.ipynb").is_file()


@pytest.mark.notebook
@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_notebook_smoke(stem, smoke_results, smoke_dir):
    res = smoke_results(stem)
    assert res["smoke"] is True
    assert (smoke_dir / f"{stem}.ipynb").is_file(), "executed copy written next to the results"
    nums = list(_numbers(res))
    assert nums, "results carry numbers"
    bad = [x for x in nums if isinstance(x, float) and not math.isfinite(x)]
    assert not bad, f"{stem} records non-finite numbers (NaN or inf): {bad[:5]}"
