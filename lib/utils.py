"""Small shared helpers: seeds, paths, atomic writes, the one on-disk cache, a model's eval mode, JSON-ready values
(lib.results writes the files)."""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
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
    """Seed Python, NumPy and torch.

    What repeats exactly: a run on one CPU thread (``torch.set_num_threads(1)``) with the same code, data and package
    versions gives the same numbers to the last digit. What does not: with several threads, torch's CPU reductions
    (matrix products, sums over a batch) split the work by thread and add the parts in an order that can change,
    so a two-thread training run drifts in the last digits and, over many epochs, in the reported metrics (measured:
    two-thread CPU training is not bit-reproducible). Results files record the thread count and the CPU model."""
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


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."             # the writer's pid: a killed writer's leftovers can be found


@contextmanager
def atomic_path(path: str | os.PathLike, mode: int = 0o644, directory: bool = False):
    """Yield a temporary path beside `path` (a file, or a folder with directory=True) to write into; on success it
    is renamed onto `path` in one step, so readers never see half a result; on any error it is removed. The result
    gets an ordinary mode (0644 files, 0755 folders), not mkstemp's private 0600: on a shared teaching machine
    another user or a web server can read runs/ and data/cache/. The temporary name carries the writer's pid
    (`remove_stale_tmp` removes those whose writer is gone). A folder is renamed only onto a free place: when
    `path` already exists (another process finished first), FileExistsError is raised and the temporary removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_tmp_prefix(path), suffix=".tmp"))
    else:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=_tmp_prefix(path), suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o755 if directory else mode)
        if directory:
            try:
                os.rename(tmp, path)                  # fails on an existing non-empty folder: never clobbers
            except OSError as e:
                if path.exists():
                    raise FileExistsError(f"{path} was written by another process meanwhile") from e
                raise
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if directory else tmp.unlink(missing_ok=True)
        raise


_TMP = re.compile(r"^\..+\.(\d+)\.[^.]*\.tmp$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:                            # another user's live process
        return True
    return True


def remove_stale_tmp(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files and folders that `atomic_path` left in `folder` when its writer was killed (the
    pid in the name is no running process); returns what was removed. A live writer's temporary is left alone."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TMP.match(p.name)
        if m and not _alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return Path(path)


def digest(*parts) -> str:
    """md5 (hex) of arrays or tensors, each by its dtype, shape and bytes and a separator: a cache key's stand-in
    for data."""
    h = hashlib.md5()
    for part in parts:
        part = part.detach().cpu().numpy() if torch.is_tensor(part) else np.asarray(part)
        h.update(f"{part.dtype}{part.shape}".encode() + np.ascontiguousarray(part).tobytes() + b"|")
    return h.hexdigest()


def text_digest(*texts) -> str:
    """md5 (hex) of texts (strings, or lists of strings such as an item's genres), each ended by a separator: a cache
    key's stand-in for text read from disk (the titles and genres a prompt carries)."""
    h = hashlib.md5()
    for t in texts:
        h.update(("\x1f".join(map(str, t)) if isinstance(t, (list, tuple)) else str(t)).encode("utf-8") + b"\x00")
    return h.hexdigest()


def _key_value(o):
    """JSON for a value JSON does not know: an array or tensor by its digest (never its str(), which elides the
    middle of a large one), numpy scalars as numbers, a path as text, a set sorted, a function by its name and the
    md5 of its source text; anything else is refused."""
    if torch.is_tensor(o) or isinstance(o, np.ndarray):
        return {"array_md5": digest(o)}
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o, key=repr)
    if callable(o):                                     # a function handed to a fit (on_epoch=, batches=): by its
        import inspect                                  # name and the text of its source (a notebook cell's too)
        try:
            src = hashlib.md5(inspect.getsource(o).encode()).hexdigest()
        except (OSError, TypeError):
            src = None
        return {"callable": f"{getattr(o, '__module__', '?')}.{getattr(o, '__qualname__', type(o).__name__)}",
                "source_md5": src}
    raise TypeError(f"a cache key cannot hold a {type(o).__name__} ({o!r:.80}): pass numbers, text, lists, dicts "
                    f"or arrays (hashed by content)")


def config_text(config: dict) -> str:
    """`config` as JSON with sorted keys, arrays and tensors by their digest: the text a cache key hashes."""
    return json.dumps(config, sort_keys=True, default=_key_value)


# --------------------------------------------------------------------------- what made a cache: code and versions
KEY_PACKAGES = ("torch", "numpy", "transformers", "peft", "sentence-transformers", "gguf")
_LIB = Path(__file__).resolve().parent
_IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+(lib(?:\.\w+)*)[ \t]+import[ \t]+(\([^)]*\)|[\w \t,]+)|import[ \t]+(lib(?:\.\w+)+))",
                     re.M)


def _module_file(name: str) -> Path | None:
    parts = name.split(".")[1:]
    if not parts:
        return _LIB / "__init__.py"
    rel = Path(*parts)
    for cand in (_LIB / rel.with_suffix(".py"), _LIB / rel / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def lib_closure(*modules: str) -> list[str]:
    """The lib modules that `modules` (names such as "lib.models.sasrec") import, directly or through each other
    (read from their sources: `from lib import x`, `from lib.x import y`, `import lib.x`), themselves included."""
    seen, todo = set(), [m for m in modules if m == "lib" or m.startswith("lib.")]
    while todo:
        name = todo.pop()
        f = _module_file(name)
        if name in seen or f is None:
            continue
        seen.add(name)
        for frm, names, imp in _IMPORT.findall(f.read_text()):
            if imp:
                todo.append(imp)
                continue
            todo.append(frm)
            todo += [f"{frm}.{n.split()[0]}" for n in names.strip("()").split(",") if n.strip()]
    return sorted(seen)


def code_fingerprint(*modules: str) -> str:
    """sha256 (16 hex) of the sources of `modules` and every lib module they import (`lib_closure`); no modules:
    every file of lib/. A cache made by other code misses: an edit of a function body on the path retrains."""
    files = sorted(_LIB.rglob("*.py")) if not modules else [_module_file(m) for m in lib_closure(*modules)]
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(_LIB).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def package_versions(names=KEY_PACKAGES) -> dict:
    """{package: installed version or None}: the versions a cached computation depends on."""
    from importlib import metadata
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def cache_file(name: str, config: dict, suffix: str = ".pt", code=None) -> Path:
    """data/cache/<name>_<16 hex>.pt, the hex digits an md5 of config_text of `config` together with the code that
    computes it (`code`: lib module names, fingerprinted with what they import; None: all of lib/) and the versions of
    torch, numpy, transformers, peft, sentence-transformers and gguf. Everything else that decides a cached value
    belongs in `config` (settings, seed, a hash of the data and of any text read from disk). name may hold a folder
    ("deftrec/llm_pass")."""
    full = {"config": config, "code": code_fingerprint(*(code or ())), "versions": package_versions()}
    return CACHE / f"{name}_{hashlib.md5(config_text(full).encode()).hexdigest()[:16]}{suffix}"


def _torch_load(path: Path):
    return torch.load(path, map_location="cpu", weights_only=True)


CACHE_LOG: list[dict] = []     # every `cached` call of this process: {"path", "status"}; results files keep it


def cached(path: str | os.PathLike, compute, *, use: bool = True, load=_torch_load, save=torch.save,
           directory: bool = False):
    """(value, hit): `load(path)` when a cache is there and reads back, else `compute()`, written atomically with
    `save(value, temporary path)` (a temporary folder with directory=True) and renamed onto `path`.

    Every cache of the suite goes through here (fits, text embeddings, the LLM, notebook 07's LLM pass). A cache that
    exists but cannot be read (a corrupt or truncated file, another format, a failed check inside `load`) is
    recomputed and overwritten with a warning, never a crash. When two processes compute the same folder at once,
    the one that finishes second loads the first one's folder. Temporaries of killed writers beside `path` are
    removed first. use=False computes and writes nothing. Each call is logged in CACHE_LOG (path, "hit",
    "computed", "recomputed" for an unreadable cache, or "not used")."""
    path = Path(path)
    status = "computed"
    if use:
        remove_stale_tmp(path.parent)
    if use and path.exists():
        try:
            value = load(path)
            CACHE_LOG.append({"path": _shown(path), "status": "hit"})
            return value, True
        except Exception as e:
            why = (str(e).strip().splitlines() or [""])[0]                     # torch's errors run to many lines
            warnings.warn(f"cache {path} is unreadable ({type(e).__name__}: {why}); recomputing it", stacklevel=2)
            status = "recomputed"
            _discard(path)
    value = compute()
    if use:
        try:
            with atomic_path(path, directory=directory) as tmp:
                save(value, tmp)
        except FileExistsError:                                            # another process wrote it first
            value, status = load(path), "computed (another process's copy kept)"
    CACHE_LOG.append({"path": _shown(path), "status": status if use else "not used"})
    return value, False


def _shown(path: Path) -> str:
    """A cache path as results files show it: relative to the repository where it lies inside it."""
    try:
        return path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return str(path)


def _discard(path: Path) -> None:
    """Move an unreadable cache out of the way (a rename: a reader never sees it half-deleted), then delete it."""
    trash = path.with_name(f"{_tmp_prefix(path)}discard.tmp")
    try:
        os.replace(path, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True) if trash.is_dir() else trash.unlink(missing_ok=True)


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
