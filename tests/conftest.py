"""Shared fixtures. `smoke_results(stem)` runs a notebook once per test session under papermill with
smoke=True into a temporary folder and returns its results JSON; tests of recorded results use it.
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


@pytest.fixture(scope="session")
def smoke_results(smoke_dir):
    from lib import run

    cache = {}

    def get(stem: str) -> dict:
        if stem not in cache:
            # a cell that hangs fails the test after 10 minutes instead of blocking CI
            run.run([stem], {"smoke": True}, output_dir=str(smoke_dir), execution_timeout=600)
            path = smoke_dir / f"{stem}.json"
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
