"""lib.browser: which Chromium the browser tests use, how to install one per system, and a missing one as a skip
(where it cannot be installed) rather than an error."""
import os
import subprocess
import sys

import pytest

from lib import browser


def test_intentlab_chromium_names_the_browser(monkeypatch, tmp_path):
    exe = tmp_path / "my-chrome"
    exe.write_text("")
    monkeypatch.setenv("INTENTLAB_CHROMIUM", str(exe))
    assert browser.chromium_path() == str(exe)
    monkeypatch.setenv("INTENTLAB_CHROMIUM", str(tmp_path / "gone"))
    assert browser.chromium_path() is None
    assert f"INTENTLAB_CHROMIUM={tmp_path / 'gone'} is not a file" in browser.missing_message()


@pytest.mark.parametrize("system, release, expect", [
    ("darwin", {}, "brew install --cask chromium"),
    ("linux", {"ID": "ubuntu", "ID_LIKE": "debian"}, "snap install chromium"),
    ("linux", {"ID": "debian"}, "sudo apt-get install chromium"),
    ("linux", {"ID": "fedora"}, "sudo dnf install chromium"),
    ("linux", {"ID": "alpine"}, "install Chromium or Google Chrome with"),
])
def test_how_to_install_per_system(monkeypatch, system, release, expect):
    monkeypatch.setattr(browser.sys, "platform", system)
    monkeypatch.setattr(browser, "_os_release", lambda: release)
    assert expect in browser.how_to_install() and "INTENTLAB_CHROMIUM" in browser.how_to_install()


def test_only_root_on_debian_installs(monkeypatch):
    monkeypatch.setattr(browser.sys, "platform", "linux")
    monkeypatch.setattr(browser.shutil, "which", lambda name: "/usr/bin/apt-get" if name == "apt-get" else None)
    monkeypatch.setattr(browser, "_os_release", lambda: {"ID": "debian"})
    monkeypatch.setattr(browser.os, "geteuid", lambda: 0)
    assert browser.can_install()
    monkeypatch.setattr(browser.os, "geteuid", lambda: 1000)
    assert not browser.can_install(), "no root"
    monkeypatch.setattr(browser.os, "geteuid", lambda: 0)
    monkeypatch.setattr(browser, "_os_release", lambda: {"ID": "ubuntu", "ID_LIKE": "debian"})
    assert not browser.can_install(), "Ubuntu's chromium package is a snap"
    monkeypatch.setattr(browser.sys, "platform", "darwin")
    assert not browser.can_install()


def test_make_browser_says_how_and_succeeds_where_it_cannot_install(monkeypatch, capsys):
    monkeypatch.setattr(browser, "chromium_path", lambda: None)
    monkeypatch.setattr(browser, "can_install", lambda: False)
    ran = []
    monkeypatch.setattr(browser.subprocess, "run", lambda *a, **kw: ran.append(a))
    assert browser.main() == 0 and not ran
    out = capsys.readouterr().out
    assert "Chromium is not installed" in out and "To install it:" in out and "will be skipped" in out
    with pytest.raises(browser.ChromiumMissing, match="To install it:"):
        with browser.browser():
            pass


@pytest.mark.skipif(os.environ.get("INTENTLAB_HOOK_TARGET") != "1", reason="run by the test below, in a subprocess")
def test_hook_target(monkeypatch):
    monkeypatch.setattr(browser, "chromium_path", lambda: None)
    monkeypatch.setattr(browser, "can_install", lambda: os.environ.get("INTENTLAB_CAN_INSTALL") == "1")
    with browser.browser():
        pass


@pytest.mark.parametrize("can_install, outcome", [("0", "1 skipped"), ("1", "1 failed")])
def test_a_missing_chromium_skips_the_test_unless_make_browser_could_install_it(can_install, outcome):
    """tests/conftest.py: ChromiumMissing in a test is a skip with the message saying how to install Chromium; where
    `make browser` installs it (root on Debian, as in CI) it is a failure, so CI never skips the browser tests."""
    env = {**os.environ, "INTENTLAB_HOOK_TARGET": "1", "INTENTLAB_CAN_INSTALL": can_install}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           f"{__file__}::test_hook_target"], capture_output=True, text=True, env=env,
                          cwd=os.path.dirname(os.path.dirname(__file__)), timeout=300)
    out = proc.stdout + proc.stderr
    assert outcome in out, out
    assert "Chromium is not installed" in out and "To install it:" in out, out
    if can_install == "1":
        assert "make browser` installs it" in out, out
