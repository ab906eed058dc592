"""Resolve `nanoserve serve MODEL` to a converted directory vLLM can load.

A converted directory is served as is. A nanoGPT checkpoint is converted once, in a separate
process (serving never unpickles), into `cache_dir/<sha256 prefix>`; later starts reuse it.
No MODEL: the bundled Shakespeare demo checkpoint.
"""

import logging
import subprocess
import sys
from pathlib import Path

from convert.output import sha256_file

log = logging.getLogger("nanoserve.model")

DEMO_CHECKPOINT = Path(__file__).resolve().parent.parent / "examples" / "shakespeare_char"


class ModelResolutionError(Exception):
    """MODEL can't be served; the message says why."""


def _checkpoint_file(path: Path) -> Path | None:
    if path.is_file() and path.suffix in (".pt", ".pth", ".bin"):
        return path
    if path.is_dir() and (path / "ckpt.pt").is_file():
        return path / "ckpt.pt"
    return None


def _convert_cached(ckpt: Path, cache_dir: Path) -> Path:
    out = cache_dir / sha256_file(ckpt)[:16]
    if (out / "config.json").is_file():
        log.info("using cached conversion %s of %s", out, ckpt)
        return out
    log.info("converting %s into %s (once; later starts reuse it)", ckpt, out)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # In our working directory, like nanoGPT's sample.py: its char models' vocabulary is
    # data/<dataset>/meta.pkl under the nanoGPT checkout, next to out/, not under out/.
    cmd = [sys.executable, "-m", "convert", str(ckpt), "--out", str(out)]
    done = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr)
    if done.returncode != 0:
        raise ModelResolutionError(f"converting {ckpt} failed (see the converter's message above)")
    return out


def resolve(model: str | None, cache_dir: Path) -> tuple[Path, str]:
    """(directory to serve, default served name) for MODEL."""
    path = Path(model).expanduser() if model else DEMO_CHECKPOINT
    if not path.exists():
        raise ModelResolutionError(f"model not found: {path}")
    if path.is_dir() and (path / "config.json").is_file():
        return path.resolve(), path.resolve().name
    ckpt = _checkpoint_file(path)
    if ckpt is None:
        raise ModelResolutionError(
            f"{path} is neither a converted model directory (no config.json) nor a nanoGPT "
            "checkpoint (ckpt.pt); run `nanoserve convert` on your checkpoint first"
        )
    return _convert_cached(ckpt.resolve(), cache_dir.expanduser()), ckpt.resolve().parent.name
