"""Headless Chromium (Debian's package) driven by Playwright for Python, for the site and JupyterLab tests.

No browser is downloaded: Playwright starts /usr/bin/chromium (installed by `make` when missing, see Makefile).
The flags are the ones this offline machine needs (no sandbox as root, no background network).
"""
from __future__ import annotations

import shutil
from contextlib import contextmanager

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def browser():
    """A headless Chromium (Playwright Browser); RuntimeError naming the fix when Chromium is missing."""
    path = chromium_path()
    if path is None:
        raise RuntimeError("Chromium is not installed: `apt-get install chromium` (make test does it when missing)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True, args=ARGS)
        try:
            yield b
        finally:
            b.close()
