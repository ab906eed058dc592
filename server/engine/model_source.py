"""Resolve `nanoserve serve MODEL` to a converted directory vLLM can load.

A converted directory is served as is. A nanoGPT checkpoint is converted once, in a separate
process (serving never unpickles), into `cache_dir/<key>`; later starts reuse it. The converter
runs in the user's working directory, so it finds `data/<dataset>/meta.pkl` exactly as
`nanoserve convert` and nanoGPT's sample.py do. No MODEL: the bundled Shakespeare demo.
"""

import hashlib
import logging
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from nanoserve.convert.output import sha256_file

log = logging.getLogger("nanoserve.model")
progress = logging.getLogger("nanoserve.convert")  # the converter's lines, as it prints them

# the repository root (installs are editable, so the demo is found next to the code)
DEMO_CHECKPOINT = Path(__file__).resolve().parents[2] / "examples" / "shakespeare_char"


class ModelResolutionError(Exception):
    """MODEL can't be served; the message says why."""


def _checkpoint_file(path: Path) -> Path | None:
    if path.is_file() and path.suffix in (".pt", ".pth", ".bin"):
        return path
    if path.is_dir() and (path / "ckpt.pt").is_file():
        return path / "ckpt.pt"
    return None


def _tree_digest(directory: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in directory.rglob("*") if p.is_file()):
        h.update(f.relative_to(directory).as_posix().encode() + b"\0" + sha256_file(f).encode())
    return h.hexdigest()


def cache_key(ckpt: Path, meta: Path | None, tokenizer: Path | None, cwd: Path) -> str:
    """What the conversion depends on: the checkpoint and the vocabulary the converter will
    pick. Without --meta/--tokenizer that is meta.pkl beside the checkpoint, else one found
    from `cwd` (data/<dataset>/meta.pkl), so the working directory is part of the key."""
    h = hashlib.sha256(b"ckpt\0" + sha256_file(ckpt).encode())
    if meta is not None:
        h.update(b"meta\0" + sha256_file(meta).encode())
    elif tokenizer is not None:
        h.update(b"tokenizer\0" + _tree_digest(tokenizer).encode())
    elif (ckpt.parent / "meta.pkl").is_file():
        h.update(b"meta\0" + sha256_file(ckpt.parent / "meta.pkl").encode())
    else:
        h.update(b"cwd\0" + str(cwd).encode())
    return h.hexdigest()[:16]


# `nanoserve convert ARGV` -> (exit code, what it wrote to stderr); its progress is logged
Converter = Callable[[list[str]], tuple[int, str]]


def in_subprocess(argv: list[str]) -> tuple[int, str]:
    """`python -m nanoserve.convert ARGV` in a new process, in our working directory. Its
    progress (stdout) becomes our log's lines as it comes."""
    cmd = [sys.executable, "-m", "nanoserve.convert", *argv]
    with (
        tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as errors,
        subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=errors, encoding="utf-8", errors="replace"
        ) as proc,
    ):
        for line in proc.stdout:
            if line.strip():
                progress.info("%s", line.rstrip())
        proc.wait()
        errors.seek(0)
        return proc.returncode, errors.read()


def _convert_cached(
    ckpt: Path, cache_dir: Path, meta: Path | None, tokenizer: Path | None, convert: Converter
) -> Path:
    out = cache_dir / cache_key(ckpt, meta, tokenizer, Path.cwd())
    if (out / "config.json").is_file():
        log.info("using cached conversion %s of %s", out, ckpt)
        return out
    log.info("converting %s into %s (once; later starts reuse it)", ckpt, out)
    cache_dir.mkdir(parents=True, exist_ok=True)
    argv = [str(ckpt), "--out", str(out)]
    if meta is not None:
        argv += ["--meta", str(meta)]
    if tokenizer is not None:
        argv += ["--tokenizer", str(tokenizer)]
    code, said = convert(argv)
    sys.stderr.write(said)  # its errors as they are (the relay makes them JSON warnings)
    if code != 0:
        last = next((ln for ln in reversed(said.splitlines()) if ln.strip()), "")
        raise ModelResolutionError(f"converting {ckpt} failed: {last.strip() or 'no message'}")
    return out


def checkpoint_of(model: str | None) -> Path | None:
    """The nanoGPT checkpoint file MODEL names (a ckpt.pt, or a directory holding one), else
    None (a converted directory)."""
    path = Path(model).expanduser() if model else DEMO_CHECKPOINT
    if path.is_dir() and (path / "config.json").is_file():
        return None
    ckpt = _checkpoint_file(path)
    return ckpt.resolve() if ckpt is not None else None


def _existing(path: Path | None, what: str) -> Path | None:
    if path is None:
        return None
    path = path.expanduser().resolve()
    if not path.exists():
        raise ModelResolutionError(f"{what} not found: {path}")
    return path


def resolve(
    model: str | None,
    cache_dir: Path,
    meta: Path | None = None,
    tokenizer: Path | None = None,
    convert: Converter = in_subprocess,
) -> tuple[Path, str]:
    """(directory to serve, default served name) for MODEL; a checkpoint is converted (once
    for each content) by `convert`."""
    path = Path(model).expanduser() if model else DEMO_CHECKPOINT
    if not path.exists():
        raise ModelResolutionError(f"model not found: {path}")
    if path.is_dir() and (path / "config.json").is_file():
        if meta is not None or tokenizer is not None:
            raise ModelResolutionError(
                f"{path} is already converted: --meta and --tokenizer apply to a ckpt.pt MODEL"
            )
        return path.resolve(), path.resolve().name
    ckpt = _checkpoint_file(path)
    if ckpt is None:
        raise ModelResolutionError(
            f"{path} is neither a converted model directory (no config.json) nor a nanoGPT "
            "checkpoint (ckpt.pt); run `nanoserve convert` on your checkpoint first"
        )
    meta, tokenizer = _existing(meta, "--meta"), _existing(tokenizer, "--tokenizer")
    out = _convert_cached(ckpt.resolve(), cache_dir.expanduser(), meta, tokenizer, convert)
    return out, ckpt.resolve().parent.name
