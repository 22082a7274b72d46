"""Small shared helpers: seeds, paths, atomic writes, the one on-disk cache, a model's eval mode, JSON-ready values
(lib.results writes the files)."""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
import warnings
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


def stem_number(stem: str) -> str:
    """The two-digit number of a notebook's stem: "05" for "05_adarec_adaptive_depth" and for its evidence notebook
    "evidence/05_adarec_adaptive_depth" (a stem is the notebook's path under notebooks/, without .ipynb)."""
    return Path(stem).name[:2]


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


def digest(*parts) -> str:
    """md5 (hex) of arrays or tensors, each by its bytes and a separator: a cache key's stand-in for data."""
    h = hashlib.md5()
    for part in parts:
        part = part.detach().cpu().numpy() if torch.is_tensor(part) else np.asarray(part)
        h.update(np.ascontiguousarray(part).tobytes() + b"|")
    return h.hexdigest()


def config_text(config: dict) -> str:
    """`config` as JSON with sorted keys (a value JSON does not know by its str): the text a cache key hashes."""
    return json.dumps(config, sort_keys=True, default=str)


def cache_file(name: str, config: dict, suffix: str = ".pt") -> Path:
    """data/cache/<name>_<16 hex>.pt, the hex digits an md5 of config_text(config): everything that decides a cached
    value belongs in `config` (settings, seed, a hash of the data). name may hold a folder ("deftrec/llm_pass")."""
    return CACHE / f"{name}_{hashlib.md5(config_text(config).encode()).hexdigest()[:16]}{suffix}"


def _torch_load(path: Path):
    return torch.load(path, map_location="cpu", weights_only=True)


def cached(path: str | os.PathLike, compute, *, use: bool = True, load=_torch_load, save=torch.save,
           directory: bool = False):
    """(value, hit): `load(path)` when a cache is there and reads back, else `compute()`, written atomically with
    `save(value, temporary path)` (a temporary folder with directory=True) and renamed onto `path`.

    Every cache of the suite goes through here (fits, text embeddings, the LLM, notebook 07's LLM pass). A cache that
    exists but cannot be read (a corrupt or truncated file, another format, a failed check inside `load`) is
    recomputed and overwritten with a warning, never a crash. use=False computes and writes nothing."""
    path = Path(path)
    if use and path.exists():
        try:
            return load(path), True
        except Exception as e:
            why = (str(e).strip().splitlines() or [""])[0]                     # torch's errors run to many lines
            warnings.warn(f"cache {path} is unreadable ({type(e).__name__}: {why}); recomputing it", stacklevel=2)
    value = compute()
    if use:
        with atomic_path(path, directory=directory) as tmp:
            save(value, tmp)
    return value, False


@contextmanager
def eval_mode(model: torch.nn.Module):
    """Run a block with `model` in eval mode (dropout off, masks off), then give every submodule back the mode it
    had, also when the block raises."""
    modes = [(m, m.training) for m in model.modules()]          # model itself first
    model.eval()
    try:
        yield model
    finally:
        model.train(modes[0][1])
        for m, training in modes[1:]:
            m.training = training                            # a submodule that had a mode of its own keeps it


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
