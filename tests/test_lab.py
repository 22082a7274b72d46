"""The interactive path, in headless Chromium against JupyterLab on a free local port with a temporary token:
`make lab`'s working copies (a cell run and saved there leaves notebooks/ as committed, on the IntentLab kernel), and
notebook 05's cells run up to the level explorer with smoke=True, the widget moved, its output checked to change."""
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import nbformat
import pytest

from lib import browser, run

pytestmark = pytest.mark.notebook
STEM = "evidence/05_adarec_adaptive_depth"   # its level explorer (widgets.interactive) drives a real JupyterLab


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lab_kernel() -> tuple[dict, str]:
    """(the kernelspec the notebooks are opened with, its display name): the IntentLab kernel where it runs this
    checkout's .venv, else python3 (the test then still runs, on the server's own interpreter)."""
    if run.kernel_choice()[0] == run.KERNEL:
        return dict(run.KERNELSPEC), run.KERNEL_DISPLAY
    return {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}, "Python 3 (ipykernel)"


def start_lab(argv: list[str], root) -> tuple[subprocess.Popen, str, str]:
    """JupyterLab from `argv` (its own flags) served from `root` on a free port; (process, url, token)."""
    port, token = free_port(), uuid.uuid4().hex
    if not any(a.startswith("--ServerApp.root_dir=") for a in argv):
        argv = argv + [f"--ServerApp.root_dir={root}"]
    proc = subprocess.Popen(argv + ["--no-browser", f"--port={port}", "--ip=127.0.0.1",
                                    f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False", "--LabApp.news_url=",
                                    "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
                            + (["--allow-root"] if os.geteuid() == 0 else []),                  # CI runs as root
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=run.REPO)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=1)
            return proc, url, token
        except OSError:
            time.sleep(0.5)
    stop(proc)
    pytest.fail("JupyterLab did not start within 60 s")


def stop(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture()
def lab(tmp_path):
    browser.chromium_path() or pytest.skip(browser.missing_message())     # before starting a server for nothing
    nb = nbformat.read(run.NOTEBOOKS / f"{STEM}.ipynb", as_version=4)
    cut = next(i for i, c in enumerate(nb.cells) if "widgets.interactive(" in c.source)
    nb.cells = nb.cells[:cut + 1]                                       # up to the widget
    par = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    par.source = par.source.replace("smoke = False", "smoke = True").replace('output_dir = "runs"',
                                                                            f'output_dir = "{tmp_path}"')
    nb.metadata["kernelspec"], display = lab_kernel()
    nbformat.write(nb, tmp_path / "explore.ipynb")
    proc, url, token = start_lab([sys.executable, "-m", "jupyterlab"], tmp_path)
    try:
        yield url, token, display
    finally:
        stop(proc)


def test_widget_moves_in_jupyterlab(lab):
    url, token, display = lab
    with browser.browser() as b:
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/lab/tree/explore.ipynb?token={token}", timeout=60_000)
        page.wait_for_selector(".jp-Notebook", timeout=60_000)
        page.get_by_text(f"{display} | Idle").wait_for(timeout=60_000)      # the kernel is up
        dropdown = page.locator(".widget-dropdown select")
        for attempt in range(2):                                # a click before the session is wired can be lost
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_text("Run All Cells", exact=True).click()
            try:
                page.wait_for_selector(".jp-InputArea-prompt:has-text('[1]')", timeout=20_000)   # something ran
                break
            except Exception:
                if attempt:
                    raise
        dropdown.wait_for(timeout=110_000)
        show = page.get_by_role("button", name="show")                  # the explorer draws on a click
        show.click()
        page.wait_for_function("() => document.querySelector('.widget-interact').innerText.includes('ADARec (paper), user')",
                               timeout=30_000)
        out = page.locator(".widget-interact .jp-OutputArea-output").first
        before = out.inner_text()
        dropdown.select_option(label="ADARec (code's choices)")
        show.click()
        page.wait_for_function("() => document.querySelector('.widget-interact').innerText.includes(\"code's choices), user\")",
                               timeout=30_000)
        after = page.locator(".widget-interact .jp-OutputArea-output").first.inner_text()
        assert after != before and "ADARec (code's choices), user" in after


# --- make lab: working copies in lab/, notebooks/ untouched ------------------------------------------------------

def _sources() -> dict[str, str]:
    return {run.stem_of(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in run.all_notebooks()}


def _git_status_notebooks() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--", "notebooks/"], cwd=run.REPO, capture_output=True,
                          text=True, check=True).stdout


def test_lab_copies_are_made_once_and_name_the_kernel(tmp_path):
    assert run.lab_copies(tmp_path) == []
    first = None
    for nb in run.all_notebooks():
        copy = tmp_path / f"{run.stem_of(nb)}.ipynb"
        data, source = json.loads(copy.read_text()), json.loads(nb.read_text())
        assert data["metadata"]["kernelspec"] == run.KERNELSPEC and data["cells"] == source["cells"]
        first = first or copy
    mine = json.loads(first.read_text())
    mine["cells"][0]["source"] = ["my notes"]
    first.write_text(json.dumps(mine))
    assert run.lab_copies(tmp_path) == [] and "my notes" in first.read_text(), "a learner's copy is kept"
    mine["metadata"]["intentlab"]["source_sha256"] = "0" * 64                   # as if the source changed since
    first.write_text(json.dumps(mine))
    notes = run.lab_copies(tmp_path)
    assert len(notes) == 1 and "has changed since" in notes[0] and "delete the copy" in notes[0]
    assert "my notes" in first.read_text(), "still kept"
    first.unlink()
    run.lab_copies(tmp_path)
    assert "my notes" not in first.read_text(), "a deleted copy comes back fresh"
    argv = run.lab_argv(tmp_path)
    assert argv[1:3] == ["-m", "jupyterlab"] and f"--ServerApp.root_dir={tmp_path}" in argv


def test_make_lab_leaves_notebooks_clean(tmp_path):
    """make lab's server (lab_argv) on its working copies: a cell run and saved in JupyterLab lands in the copy, on
    the IntentLab kernel; notebooks/ is byte for byte as before and git sees no change there."""
    browser.chromium_path() or pytest.skip(browser.missing_message())
    if run.kernel_choice()[0] != run.KERNEL:
        pytest.skip(run.kernel_choice()[1])                          # make test registers it (make kernel)
    before, status = _sources(), _git_status_notebooks()
    root = tmp_path / "lab"
    run.lab_copies(root)
    proc, url, token = start_lab(run.lab_argv(root), root)
    stem = "00_data_tour"
    try:
        with browser.browser() as b:
            page = b.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/lab/tree/{stem}.ipynb?token={token}", timeout=60_000)
            page.wait_for_selector(".jp-Notebook", timeout=60_000)
            page.get_by_text(f"{run.KERNEL_DISPLAY} | Idle").wait_for(timeout=60_000)   # make lab's kernel
            cell = page.locator(".jp-CodeCell").first                              # the parameters cell
            for attempt in range(2):                       # a run before the session is wired can be lost
                cell.locator(".jp-InputArea-editor").click()
                page.keyboard.press("Control+Enter")
                try:
                    cell.locator(".jp-InputArea-prompt:has-text('[1]')").wait_for(timeout=20_000)
                    break
                except Exception:
                    if attempt:
                        raise
            page.keyboard.press("Escape")
            page.keyboard.press("Control+s")
            for _ in range(60):
                saved = json.loads((root / f"{stem}.ipynb").read_text())
                if any(c.get("execution_count") for c in saved["cells"]):
                    break
                time.sleep(0.5)
            else:
                pytest.fail("the run cell was not saved into the working copy")
    finally:
        stop(proc)
    assert saved["metadata"]["kernelspec"]["name"] == run.KERNEL
    assert _sources() == before, "notebooks/ is byte for byte as committed"
    assert _git_status_notebooks() == status
    assert (root / ".ipynb_checkpoints").is_dir(), "JupyterLab's checkpoints go beside the copies"
