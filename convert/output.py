"""Writing a converted directory: atomically (stage, then rename), safetensors and JSON only."""

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from nanoserve.convert.errors import ConvertError
from safetensors.torch import save_file

MARKER = "nanoserve.json"  # present in every finished conversion; --force replaces only those


def check_out(out: Path, force: bool) -> None:
    """Refuse an existing output unless --force, and even then only a previous conversion."""
    if not out.exists():
        return
    if not force:
        raise ConvertError(f"output exists: {out} (pass --force to replace it)")
    if not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file()):
        raise ConvertError(
            f"refusing to replace {out}: it is not a nanoserve conversion (no {MARKER})"
        )


def _swap_in(tmp: Path, out: Path, force: bool) -> None:
    check_out(out, force)  # again: something may have appeared while we worked
    if not out.exists():
        os.rename(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rename(out, old / out.name)
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(old / out.name, out)  # put the previous conversion back: nothing is lost
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staging_dir(out: Path, force: bool) -> Iterator[Path]:
    """A temp dir next to `out`, renamed to `out` on success and removed on any failure."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it owner-only; the result is an ordinary model directory
    try:
        yield tmp
        _swap_in(tmp, out, force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # no-op after a successful rename


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_json(path: Path, obj: dict) -> None:
    """Strict JSON (NaN/inf refused), indented, newline-terminated."""
    path.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n")


def write_weights(path: Path, sd: dict[str, torch.Tensor]) -> None:
    """model.safetensors with the metadata transformers checks for."""
    save_file(sd, str(path), metadata={"format": "pt"})
    path.chmod(0o644)  # safetensors creates it owner-only; it is an ordinary model file


def jsonable(value: object) -> object:
    """Plain JSON values from checkpoint metadata (tensors become numbers, the rest str)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return str(value)
