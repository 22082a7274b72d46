"""Small shared helpers: seeds, devices, paths, atomic writes, results files."""
from __future__ import annotations

import json
import os
import random
import tempfile
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


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """torch.save through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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


def save_results(output_dir: str | os.PathLike, stem: str, results: dict) -> Path:
    """Write a notebook's headline numbers to <output_dir>/<stem>.json (atomically)."""
    path = repo_path(output_dir) / f"{stem}.json"
    return atomic_write_bytes(path, json.dumps(_jsonable(results), indent=2, sort_keys=True).encode())


def load_results(output_dir: str | os.PathLike, stem: str) -> dict | None:
    """A notebook's results file, or None when that notebook has not run yet into output_dir."""
    path = repo_path(output_dir) / f"{stem}.json"
    return json.loads(path.read_text()) if path.is_file() else None
