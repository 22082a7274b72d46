"""Shared fixtures. `smoke_results(stem)` runs a notebook once per test session under papermill with
smoke=True into a temporary folder and returns its results JSON; tests of recorded results use it. The first call
runs every notebook the session smoke-runs (but 08), two at a time on one torch thread each (`_prefetch`).
A test that needs Chromium where there is none (lib.browser.ChromiumMissing) is skipped with the message that says
how to install it, except where `make browser` could have installed it (root on Debian: CI), where it fails."""
import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    from lib import browser
    try:
        return (yield)
    except browser.ChromiumMissing as e:
        if browser.can_install():
            raise browser.ChromiumMissing(f"{e} Here `make browser` installs it (make test runs it).") from None
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def smoke_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs_smoke")


@pytest.hookimpl(trylast=True)      # after -k and -m have deselected: only the notebooks this session runs
def pytest_collection_modifyitems(config, items):
    """The notebooks this session runs at smoke size (test_notebook_smoke's stems), for `smoke_results` to run ahead."""
    config._smoke_stems = {it.callspec.params["stem"] for it in items
                           if it.originalname == "test_notebook_smoke" and hasattr(it, "callspec")}


# Two notebooks at a time, each kernel on one torch thread: most of a smoke run is one-threaded (the kernel's start,
# importing torch/pandas/seaborn, tokenizing, small tensors), so two side by side take about as long each as one alone
# on two threads (measured here: the 15 lessons and evidence notebooks 306 s one after the other, 183 s two at a time).
PREFETCH_WORKERS = 2
PREFETCH_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _prefetch(stems, out_dir):
    """Run `stems` at smoke size into out_dir, PREFETCH_WORKERS at a time, longest (evidence, 07 first) first. Each
    runs in its own process; one that fails leaves no results file and is run again in this process by
    `smoke_results`, where its error is raised."""
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, **PREFETCH_ENV}
    code = ("import sys; from lib import run; "
            "run.run([sys.argv[1]], {'smoke': True}, output_dir=sys.argv[2], execution_timeout=600, progress='none')")

    def one(stem):
        try:
            subprocess.run([sys.executable, "-c", code, stem, str(out_dir)], cwd=root, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900)
        except subprocess.TimeoutExpired:
            pass                                # no results file: smoke_results runs it again and reports

    order = sorted(stems, key=lambda s: (s.startswith("evidence/"), s), reverse=True)   # evidence/07 ... 01, 07 ... 00
    with ThreadPoolExecutor(PREFETCH_WORKERS) as pool:
        list(pool.map(one, order))


@pytest.fixture(scope="session")
def smoke_results(smoke_dir, request):
    from lib import run

    cache = {}
    # every notebook this session smoke-runs, but the leaderboard (it reads the others' results), two at a time
    ahead = {s for s in getattr(request.config, "_smoke_stems", []) if not s.startswith("08")}

    def get(stem: str) -> dict:
        if len(ahead) > 1 and stem in ahead:
            _prefetch(ahead, smoke_dir)
            ahead.clear()
        if stem not in cache:
            path = smoke_dir / f"{stem}.json"
            if not path.is_file():
                # a cell that hangs fails the test after 10 minutes instead of blocking CI
                run.run([stem], {"smoke": True}, output_dir=str(smoke_dir), execution_timeout=600)
            assert path.is_file(), f"{stem} did not write its results file {path}"
            cache[stem] = json.loads(path.read_text())
        return cache[stem]
    return get


@pytest.fixture(scope="module")
def one_thread():
    """Tests on tiny models run on one torch thread: as fast alone, far faster when other jobs share the CPU.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``; the thread count is restored afterwards."""
    from lib.utils import one_thread as one
    with one():
        yield
