"""The interactive path: JupyterLab on a free local port with a temporary token, notebook 05 opened in headless
Chromium, its cells run up to the level explorer with smoke=True, the widget moved, and its output checked to change."""
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
STEM = "05_adarec_adaptive_depth"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def lab(tmp_path):
    nb = nbformat.read(run.NOTEBOOKS / f"{STEM}.ipynb", as_version=4)
    cut = next(i for i, c in enumerate(nb.cells) if "widgets.interactive(" in c.source)
    nb.cells = nb.cells[:cut + 1]                                       # up to the widget
    par = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    par.source = par.source.replace("smoke = False", "smoke = True").replace('output_dir = "runs"',
                                                                            f'output_dir = "{tmp_path}"')
    nbformat.write(nb, tmp_path / "explore.ipynb")
    port, token = free_port(), uuid.uuid4().hex
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}",
                             "--ServerApp.open_browser=False", "--LabApp.news_url=",
                             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
                            + (["--allow-root"] if os.geteuid() == 0 else []),                  # CI runs as root
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=run.NOTEBOOKS)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start within 60 s")
        yield url, token
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_widget_moves_in_jupyterlab(lab):
    url, token = lab
    with browser.browser() as b:
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/lab/tree/explore.ipynb?token={token}", timeout=60_000)
        page.wait_for_selector(".jp-Notebook", timeout=60_000)
        page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=60_000)      # the kernel is up
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
