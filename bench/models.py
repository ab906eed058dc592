"""The benchmark's models, each converted once by `nanoserve convert` into a directory of its own.

- `shakespeare_char`: the bundled demo checkpoint (`examples/shakespeare_char/ckpt.pt`).
- `gpt2-124m`: GPT-2-124M's shape (12 layers, 12 heads, 768 wide, 1024 context, GPT-2 BPE) with
  random weights; speed does not depend on what the weights are.

The directory name is the served model name (`-int8` appended for `nanoserve convert --quantize
int8`). Conversions are reused while their source is unchanged (the converter records the
source's sha256 in `nanoserve.json`).

    python -m bench.models --build-gpt2 CKPT   # internal: write the 124M checkpoint
"""

import json
import subprocess
import sys
from pathlib import Path

from nanoserve.convert.output import sha256_file

ROOT = Path(__file__).resolve().parents[1]
DEMO_CKPT = ROOT / "examples" / "shakespeare_char" / "ckpt.pt"
MODELS = ("shakespeare_char", "gpt2-124m")


def _converted_from(out: Path) -> str | None:
    """The sha256 of the checkpoint `out` was converted from, if `out` is a finished conversion."""
    prov = out / "nanoserve.json"
    if not (out / "config.json").is_file() or not prov.is_file():
        return None
    return json.loads(prov.read_text())["source"]["sha256"]


def _convert(ckpt: Path, out: Path, quantize: str | None) -> None:
    ckpt, out = ckpt.resolve(), out.resolve()
    cmd = [sys.executable, "-m", "nanoserve.convert", str(ckpt), "--out", str(out), "--force"]
    cmd += ["--quantize", quantize] if quantize else []
    # cwd: the checkpoint's folder, where nanoGPT's own tools look for data/<dataset>/meta.pkl
    done = subprocess.run(cmd, cwd=ckpt.parent, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}")


def build_gpt2(path: Path) -> None:
    """A GPT-2-124M-shaped nanoGPT checkpoint with random (seeded) weights."""
    import torch
    from nanoserve.convert.reference import GPT, GPTConfig, make_checkpoint

    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304)
    torch.save(make_checkpoint(GPT(cfg)), path)


def prepare(
    name: str, models_dir: Path, demo_ckpt: Path = DEMO_CKPT, quantize: str | None = None
) -> Path:
    """The converted directory for model `name` under `models_dir`, converting if needed."""
    out = models_dir / (f"{name}-{quantize}" if quantize else name)
    if name == "shakespeare_char":
        if not demo_ckpt.is_file():
            raise FileNotFoundError(
                f"{demo_ckpt} is missing: train the demo model first "
                "(examples/shakespeare_char/train.py) or pass --demo-ckpt"
            )
        if _converted_from(out) != sha256_file(demo_ckpt):
            _convert(demo_ckpt, out, quantize)
        return out
    if name == "gpt2-124m":
        if _converted_from(out) is None:  # seeded random weights: a finished one is the one
            src = models_dir / "gpt2-124m-src" / "ckpt.pt"
            src.parent.mkdir(parents=True, exist_ok=True)
            # a child process, so this harness never holds the 124M model's memory
            build = [sys.executable, "-m", "bench.models", "--build-gpt2", str(src.resolve())]
            subprocess.run(build, cwd=ROOT, check=True)
            _convert(src, out, quantize)
            src.unlink()  # 500 MB we no longer need
        return out
    raise ValueError(f"unknown model {name!r} (known: {', '.join(MODELS)})")


def max_model_len(model_dir: Path) -> int:
    """The model's context length (its converted config's n_positions)."""
    return json.loads((model_dir / "config.json").read_text())["n_positions"]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--build-gpt2"] and len(sys.argv) == 3:
        build_gpt2(Path(sys.argv[2]))
    else:
        sys.exit(__doc__)
