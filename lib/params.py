"""A notebook's parameters: the first code cell after the parameters cell applies a preset (`apply_preset`) and
validates every value through `check`; `defaults` and `snapshot` read the cell for results files."""
from __future__ import annotations

import numbers
import os
from pathlib import Path

import torch

from lib import data
from lib.utils import REPO, repo_path


class ParamError(ValueError):
    """A notebook parameter has a value it cannot take; the message names it and what is valid."""


# Named sets of a notebook's parameters, by notebook stem; a preset's values replace the parameters cell's.
# evidence 06 "laptop" changes nothing (the cell's defaults are sized for 2 CPU cores and 25 minutes). 06 "paper-scale" moves
# toward the paper (HDRec Table 2: batch 10, lr 1.5e-4, whole sequences, every user, the whole model); on 2 CPU cores
# it costs days (the notebook prints its estimate), so it is meant for a GPU (device="cuda").
PRESETS = {
    "evidence/06_hdrec_dual_lora": {
        "laptop": {},
        "paper-scale": dict(llm_layers=None, title_words=None, L=20, batch_size=10, steps=1000, n_train_users=943,
                            n_eval_users=943, lr_lora=1.5e-4, lr_head=1e-3),
    },
}


def apply_preset(namespace: dict, stem: str, preset: str) -> dict:
    """Set preset `preset` of notebook `stem` (PRESETS) in `namespace`, the notebook's globals(); returns the values
    it set. An unknown preset is a ParamError naming the valid ones."""
    presets = PRESETS.get(stem, {})
    if preset not in presets:
        raise ParamError(f"unknown preset {preset!r} for {stem}; valid values are "
                         f"{', '.join(map(repr, presets)) or 'none (this notebook has no presets)'}")
    unknown = set(presets[preset]) - set(defaults(stem))
    if unknown:
        raise ParamError(f"preset {preset!r} sets {sorted(unknown)}, which are not parameters of {stem}")
    namespace.update(presets[preset])
    return dict(presets[preset])


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is there, else 'cpu'; an explicit device must exist."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if isinstance(device, str) and device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ParamError(f"device={device!r} but this machine has no CUDA GPU; valid: 'auto', 'cpu'")
        idx = device.partition(":")[2]
        if idx and (not idx.isdigit() or int(idx) >= torch.cuda.device_count()):
            raise ParamError(f"device={device!r} does not exist; this machine has "
                             f"{torch.cuda.device_count()} GPU(s): valid 'cuda', 'cuda:0'..")
        return device
    if device == "mps":
        if not torch.backends.mps.is_available():
            raise ParamError("device='mps' but Apple's MPS backend is not available here; valid: 'auto', 'cpu'")
        return device
    raise ParamError(f"unknown device {device!r}; valid: 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'")


def _number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real)


def check(*, dataset, seed, device, smoke, output_dir, choices: dict | None = None, nonneg: dict | None = None,
          optional: dict | None = None, integers: dict | None = None, fractions: dict | None = None,
          flags: dict | None = None, rules=(), **sizes) -> dict:
    """Check the common parameters and any number of others; return {"device", "dataset_dir", "output_dir"}.
    Every check of a notebook's parameters goes through here, so a bad value stops the notebook at its first code
    cell with a ParamError that names the parameter and what is valid.

    sizes: name=value pairs that must be positive numbers (epochs, hidden sizes, learning rates...).
    nonneg: name=value pairs that must be numbers >= 0 (loss weights, where 0 switches a term off; guidance 0).
    optional: name=value pairs that may be None (off) or else must be positive numbers.
    integers: name=(value, minimum) pairs that must be integers >= minimum (counts, depths; threads 0 = default).
    fractions: name=value pairs that must be numbers in [0, 1) (dropout, masking ratios).
    flags: name=value pairs that must be True or False.
    choices: name=(value, allowed) pairs for options such as a fusion variant.
    rules: (test, message) pairs for what ties parameters together (joint_updates <= batch_size): test() is called
    after every single value has passed, and a False raises ParamError(message).
    """
    for name, value in (("dataset", dataset), ("output_dir", output_dir)):
        if not isinstance(value, (str, os.PathLike)):
            raise ParamError(f"{name} must be text (a folder, or a dataset name for dataset), got {value!r} of type "
                             f"{type(value).__name__}; quote it in the parameters cell ({name} = \"{value}\")")
    if not isinstance(smoke, bool):
        raise ParamError(f"smoke must be True or False, got {smoke!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ParamError(f"seed must be an integer >= 0, got {seed!r}")
    for name, value in sizes.items():
        if not _number(value) or not value > 0:
            raise ParamError(f"{name} must be a positive number, got {value!r}")
    for name, value in (nonneg or {}).items():
        if not _number(value) or not value >= 0:
            raise ParamError(f"{name} must be a number >= 0 (0 switches it off), got {value!r}")
    for name, value in (optional or {}).items():
        if value is not None and (not _number(value) or not value > 0):
            raise ParamError(f"{name} must be None (off) or a positive number, got {value!r}")
    for name, (value, minimum) in (integers or {}).items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
            raise ParamError(f"{name} must be an integer >= {minimum}, got {value!r}")
    for name, value in (fractions or {}).items():
        if not _number(value) or not 0 <= value < 1:
            raise ParamError(f"{name} must be a number in [0, 1), got {value!r}")
    for name, value in (flags or {}).items():
        if not isinstance(value, bool):
            raise ParamError(f"{name} must be True or False, got {value!r}")
    for name, (value, allowed) in (choices or {}).items():
        if value not in allowed:
            raise ParamError(f"unknown {name} {value!r}; valid values are {', '.join(map(repr, allowed))}")
    for test, message in rules:
        if not test():
            raise ParamError(message)
    out = repo_path(output_dir)
    if out.resolve() == (REPO / "notebooks").resolve():
        raise ParamError(f"output_dir={output_dir!r} is the notebooks folder: executed copies never overwrite "
                         f"the sources; use 'runs' or another folder")
    try:
        folder = data.dataset_dir(dataset)
    except data.DataError as e:
        raise ParamError(str(e)) from None
    return {"device": resolve_device(device), "dataset_dir": Path(folder), "output_dir": out}


def defaults(stem: str) -> dict:
    """{name: default value} of a notebook's parameters cell (the source in notebooks/, read, not run): the
    literal values as committed. A value that is not a literal (an expression) is left out."""
    import ast
    import json

    path = REPO / "notebooks" / f"{stem}.ipynb"
    nb = json.loads(path.read_text())
    cell = next((c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        raise ParamError(f"{path} has no cell tagged 'parameters'")
    out = {}
    for node in ast.parse("".join(cell["source"])).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def snapshot(namespace: dict, stem: str) -> dict:
    """The parameters a run uses, taken before any smoke shrinking: {"values": {name: value}, "defaults": {...}}
    for every name of the notebook's parameters cell (results files keep it as provenance)."""
    d = defaults(stem)
    return {"values": {k: namespace[k] for k in d if k in namespace}, "defaults": d}
