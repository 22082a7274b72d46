"""Small shared helpers: seeds, devices, paths, atomic writes, JSON-ready values (lib.results writes the files)."""
from __future__ import annotations

import os
import random
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent   # the repository root
CACHE = REPO / "data" / "cache"


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch so that a CPU run repeats exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def repo_path(p: str | os.PathLike) -> Path:
    """A relative path is taken from the repository root, so notebooks and the runner agree wherever they run."""
    p = Path(p).expanduser()
    return p if p.is_absolute() else REPO / p


@contextmanager
def atomic_path(path: str | os.PathLike, mode: int = 0o644, directory: bool = False):
    """Yield a temporary path beside `path` (a file, or a folder with directory=True) to write into; on success it
    is renamed onto `path` in one step, so readers never see half a result; on any error it is removed. The result
    gets an ordinary mode (0644 files, 0755 folders), not mkstemp's private 0600: on a shared teaching machine
    another user or a web server can read runs/ and data/cache/."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    else:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o755 if directory else mode)
        if directory and path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if directory else tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return Path(path)


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """torch.save through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


@contextmanager
def one_thread():
    """Run a block on one torch thread and one BLAS/OpenMP thread (threadpoolctl), then restore: small matrices,
    t-SNE and silhouettes run as fast on one thread, and far faster when another job shares the CPU."""
    from threadpoolctl import threadpool_limits
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(n)


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return o
