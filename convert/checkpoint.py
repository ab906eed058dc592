"""Find, load and validate a nanoGPT `ckpt.pt`; hand back its weights in nanoGPT's own names."""

import math
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from nanoserve.convert.errors import ConvertError, UnsafePickleError

REQUIRED_TOP = ("model", "model_args")
REQUIRED_ARGS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")
COMPILE_PREFIX = "_orig_mod."  # torch.compile wraps the model and prefixes every key with this
# Causal-mask buffers, not weights: nanoGPT's non-flash attention registers `attn.bias`; some
# GPT-2 exports also carry `attn.masked_bias`. The mask is implied by the architecture.
MASK_SUFFIXES = (".attn.bias", ".attn.masked_bias")


@dataclass
class Checkpoint:
    """A validated nanoGPT checkpoint: weights (prefix-free, no mask buffers) and metadata."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    model_args: dict
    iter_num: int | None = None
    best_val_loss: float | None = None  # None when absent or not finite (fresh runs save inf)
    config: dict = field(default_factory=dict)  # train.py's config: `dataset` locates meta.pkl
    has_optimizer: bool = False


def find_checkpoint(path: str | Path) -> Path:
    """`path` itself if it is a file, else `path/ckpt.pt` (nanoGPT's `out_dir` layout)."""
    p = Path(path)
    if p.is_dir():
        p = p / "ckpt.pt"
    if not p.is_file():
        raise ConvertError(f"checkpoint not found: {p}")
    return p


def _torch_load(path: Path) -> object:
    # weights_only refuses arbitrary globals; mmap keeps the optimizer state (2x the weights in
    # a training checkpoint) on disk because nothing ever touches it.
    try:
        mmap = zipfile.is_zipfile(path)  # only the zip format (torch >= 1.6) can be mmapped
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # garbage input surfaces as any of a dozen exception types
        msg = str(e)
        if isinstance(e, pickle.UnpicklingError) and "Weights only load failed" in msg:
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", msg)
            what = f"it asks for {found.group(1)}" if found else "weights-only loading failed"
            raise UnsafePickleError(
                f"refusing to load {path}: {what}; "
                "a checkpoint may hold only tensors and plain data"
            ) from None
        first = msg.splitlines()[0].split(". ")[0] if msg else ""
        raise ConvertError(
            f"not a PyTorch checkpoint: {path} ({type(e).__name__}: {first})"
        ) from None


def clean_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip `_orig_mod.` prefixes and drop causal-mask buffers."""
    out = {}
    for key, tensor in sd.items():
        while key.startswith(COMPILE_PREFIX):
            key = key[len(COMPILE_PREFIX) :]
        if not key.endswith(MASK_SUFFIXES):
            out[key] = tensor
    return out


def _as_float(value: object) -> float | None:
    # nanoGPT saves best_val_loss as a 0-dim tensor (it comes straight out of estimate_loss)
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _check_structure(obj: object, path: Path) -> None:
    if not isinstance(obj, dict):
        raise ConvertError(
            f"not a nanoGPT checkpoint: {path} holds a {type(obj).__name__}, "
            f"expected a dict with keys {', '.join(REQUIRED_TOP)}"
        )
    missing = [k for k in REQUIRED_TOP if k not in obj]
    if missing:
        raise ConvertError(f"not a nanoGPT checkpoint: {path} lacks keys {', '.join(missing)}")
    args = obj["model_args"]
    if not isinstance(args, dict):
        raise ConvertError(f"not a nanoGPT checkpoint: {path}: model_args is not a dict")
    missing = [k for k in REQUIRED_ARGS if k not in args]
    if missing:
        raise ConvertError(
            f"not a nanoGPT checkpoint: {path}: model_args lacks keys {', '.join(missing)}"
        )
    if not isinstance(obj["model"], dict):
        raise ConvertError(f"not a nanoGPT checkpoint: {path}: 'model' is not a state dict")


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load and validate a checkpoint file or directory (see `find_checkpoint`)."""
    ckpt_path = find_checkpoint(path)
    obj = _torch_load(ckpt_path)
    _check_structure(obj, ckpt_path)
    config = obj.get("config")
    iter_num = obj.get("iter_num")
    return Checkpoint(
        path=ckpt_path.resolve(),
        state_dict=clean_state_dict(obj["model"]),
        model_args=dict(obj["model_args"]),
        iter_num=int(iter_num) if isinstance(iter_num, int | torch.Tensor) else None,
        best_val_loss=_as_float(obj.get("best_val_loss")),
        config=config if isinstance(config, dict) else {},
        has_optimizer=obj.get("optimizer") is not None,
    )
