"""`make wheels-check`: does every pinned package resolve to a wheel for Python 3.11, 3.12 and 3.13?

For each version, pip resolves the pins of pyproject.toml (with their dependencies) and the two no-deps packages
in a dry run for Linux x86-64 (`--only-binary=:all: --python-version X --dry-run --target <tmp>`): nothing is
installed, and only package metadata is fetched where the index serves it. Prints one line per version and exits 1
naming the versions that do not resolve, with pip's last lines.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import tomllib

from lib.utils import REPO

VERSIONS = ("3.11", "3.12", "3.13")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64", "linux_x86_64")


def pins() -> tuple[list[str], list[str]]:
    """(the pinned dependencies, the no-deps packages) of pyproject.toml."""
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    return list(meta["project"]["dependencies"]), list(meta["tool"]["intentlab"]["no-deps"])


def pip_dry_run(version: str, packages: list[str], no_deps: bool) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--only-binary=:all:",
               "--python-version", version, "--implementation", "cp", "--target", tmp, "--ignore-installed",
               *[a for p in PLATFORMS for a in ("--platform", p)], *(["--no-deps"] if no_deps else []), *packages]
        return subprocess.run(cmd, capture_output=True, text=True)


def check(versions=VERSIONS) -> dict[str, str | None]:
    """{version: None when every pin resolves, else pip's last lines}."""
    deps, nodeps = pins()
    out = {}
    for v in versions:
        failed = None
        for packages, no_deps in ((deps, False), (nodeps, True)):
            r = pip_dry_run(v, packages, no_deps)
            if r.returncode:
                failed = "\n".join((r.stderr or r.stdout).strip().splitlines()[-6:])
                break
        out[v] = failed
        print(f"Python {v}: " + ("every pin resolves to a wheel" if failed is None else f"does not resolve:\n{failed}"),
              flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lib.wheelcheck", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("versions", nargs="*", default=list(VERSIONS), help="Python versions (default 3.11 3.12 3.13)")
    failed = [v for v, why in check(ap.parse_args(argv).versions).items() if why]
    if failed:
        print(f"no wheel set for Python {', '.join(failed)}: move the pin that pip names above", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
