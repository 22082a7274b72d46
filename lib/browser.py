"""Headless Chromium driven by Playwright for Python, for the site and JupyterLab tests.

No browser is downloaded: Playwright starts the machine's Chromium (or Google Chrome), found on PATH, in macOS's
/Applications, or named by the environment variable INTENTLAB_CHROMIUM. `python -m lib.browser` (`make browser`, run
by `make test`) installs Debian's package with apt-get where it can (root on Debian: CI); elsewhere (no root, another
system, macOS) it prints how to install one, and the browser tests are skipped with that message (tests/conftest.py
turns ChromiumMissing into a skip). The flags are the ones an offline machine needs (no sandbox as root, no
background network).
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MAC_APPS = ("/Applications/Chromium.app/Contents/MacOS/Chromium",
            "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome")


class ChromiumMissing(RuntimeError):
    """No Chromium here; the message says how to install one."""


def chromium_path() -> str | None:
    """INTENTLAB_CHROMIUM when set (None if that file is missing), else the first Chromium or Chrome found."""
    named = os.environ.get("INTENTLAB_CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    for name in NAMES:
        if shutil.which(name):
            return shutil.which(name)
    return next((app for app in MAC_APPS if Path(app).is_file()), None)


def _os_release() -> dict:
    try:
        lines = Path("/etc/os-release").read_text().splitlines()
    except OSError:
        return {}
    return {k: v.strip('"') for k, _, v in (line.partition("=") for line in lines) if k}


def can_install() -> bool:
    """apt-get can install Chromium here: root on Debian (Ubuntu's chromium package is a snap, not a browser)."""
    return (sys.platform.startswith("linux") and os.geteuid() == 0 and shutil.which("apt-get") is not None
            and _os_release().get("ID") == "debian")


def how_to_install() -> str:
    """One sentence for this system on how to get a Chromium the tests can use."""
    if sys.platform == "darwin":
        how = "`brew install --cask chromium`, or install Google Chrome"
    else:
        ids = {_os_release().get("ID", "")} | set(_os_release().get("ID_LIKE", "").split())
        if "ubuntu" in ids:
            how = "install Google Chrome's .deb, or `sudo snap install chromium`"
        elif "debian" in ids:
            how = "`sudo apt-get install chromium` (or `sudo make browser`)"
        elif ids & {"fedora", "rhel", "centos"}:
            how = "`sudo dnf install chromium`"
        elif "arch" in ids:
            how = "`sudo pacman -S chromium`"
        else:
            how = f"install Chromium or Google Chrome with {platform.system()}'s package manager"
    return f"{how}; or set INTENTLAB_CHROMIUM to the browser's executable"


def missing_message() -> str:
    named = os.environ.get("INTENTLAB_CHROMIUM")
    where = (f"INTENTLAB_CHROMIUM={named} is not a file" if named else
             f"none of {', '.join(NAMES)} is on PATH" + (" or in /Applications" if sys.platform == "darwin" else ""))
    return f"Chromium is not installed ({where}): the browser tests need it. To install it: {how_to_install()}."


@contextmanager
def browser():
    """A headless Chromium (Playwright Browser); ChromiumMissing, saying how to install one, when there is none."""
    path = chromium_path()
    if path is None:
        raise ChromiumMissing(missing_message())
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def main() -> int:
    """`make browser`: find Chromium, or install Debian's where apt-get can (failing loudly if that fails), or say
    how to install it (status 0: the browser tests will be skipped)."""
    path = chromium_path()
    if path:
        print(f"Chromium for the browser tests: {path}")
        return 0
    if can_install():
        print("installing Debian's chromium for the browser tests (apt-get)", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env, stdout=subprocess.DEVNULL)
        if chromium_path() is None:
            print("apt-get installed chromium but it is not on PATH", file=sys.stderr)
            return 1
        print(f"Chromium for the browser tests: {chromium_path()}")
        return 0
    print(f"{missing_message()} They will be skipped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
