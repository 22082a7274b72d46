"""`make wheels-check`: does every pinned package resolve to a wheel for Python 3.11, 3.12 and 3.13?

For each version, pip's dry run for Linux x86-64 (`--only-binary=:all: --python-version X --dry-run --target <tmp>`;
nothing is installed, only package metadata is fetched where the index serves it):

1. every pin of pyproject.toml and the two no-deps packages, each without its dependencies: is there a wheel of
   that exact version for that Python? A failure here fails the check (exit 1), naming pip's last lines.
2. the pins with all their dependencies: reported, not failed on. On this workplace's index PyPI's torch (a CUDA
   build) needs NVIDIA wheels that may not be served; a CPU-only torch wheel (the one `make install` uses here, from
   the machine's wheel folder, or download.pytorch.org's) has none of them.
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
    """(the pinned dependencies with those of every extra, such as `test`; the no-deps packages) of pyproject.toml."""
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = [d for ds in meta["project"].get("optional-dependencies", {}).values() for d in ds]
    return list(meta["project"]["dependencies"]) + extras, list(meta["tool"]["intentlab"]["no-deps"])


def pip_dry_run(version: str, packages: list[str], no_deps: bool) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--only-binary=:all:",
               "--python-version", version, "--implementation", "cp", "--target", tmp, "--ignore-installed",
               *[a for p in PLATFORMS for a in ("--platform", p)], *(["--no-deps"] if no_deps else []), *packages]
        return subprocess.run(cmd, capture_output=True, text=True)


def _tail(r: subprocess.CompletedProcess) -> str:
    return "\n".join(line for line in (r.stderr or r.stdout).strip().splitlines() if not line.startswith("WARNING"))[-600:]


def check(versions=VERSIONS) -> dict[str, str | None]:
    """{version: None when every pin has a wheel for it, else pip's last lines}; the full resolution is printed."""
    deps, nodeps = pins()
    out = {}
    for v in versions:
        r = pip_dry_run(v, deps + nodeps, no_deps=True)
        out[v] = _tail(r) if r.returncode else None
        print(f"Python {v}: " + ("every pin has a wheel" if out[v] is None else f"a pin has no wheel:\n{out[v]}"), flush=True)
        if out[v] is None:
            full = pip_dry_run(v, deps, no_deps=False)
            print(f"  with every dependency: " + ("resolves" if not full.returncode else
                                                  f"does not resolve here (information, not a failure):\n  {_tail(full)}"),
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
