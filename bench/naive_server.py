"""Baseline (c), the seed document's naive server: nanoGPT's `generate` loop with no KV cache.

    python -m bench.naive_server MODEL_DIR --port PORT

Every new token re-runs the model over the whole sequence (as nanoGPT's `generate` does), one
request at a time (`naive_api`). Weights come from the converted directory, mapped back onto the
nanoGPT-architecture reference model, so all four servers run the very same weights and vocabulary.
"""

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from nanoserve.convert.mapping import TRANSPOSED
from nanoserve.convert.reference import GPT, GPTConfig
from safetensors.torch import load_file

from bench import naive_api


def load_reference(model_dir: Path) -> GPT:
    """The reference GPT holding a converted directory's weights (HF layout mapped back)."""
    cfg = json.loads((model_dir / "config.json").read_text())
    dims = {k: cfg[k] for k in ("n_layer", "n_head", "n_embd", "vocab_size")}
    # HF GPT-2 always has biases (a bias=False model's are zeros), so the reference gets them too
    shape = GPTConfig(block_size=cfg["n_positions"], bias=True, **dims)
    sd = load_file(model_dir / "model.safetensors")
    for key in sd:
        if key.endswith(".weight") and any(f".{t}." in key for t in TRANSPOSED):
            sd[key] = sd[key].t()  # HF Conv1D (in, out) -> nn.Linear (out, in)
    sd["lm_head.weight"] = sd["transformer.wte.weight"]  # tied
    model = GPT(shape)
    model.load_state_dict(sd)
    return model.eval()


@torch.no_grad()
def next_token(model: GPT, idx: torch.Tensor, temperature: float) -> torch.Tensor:
    """One step of nanoGPT's generate: the full (cropped) sequence through the model, (1, 1)."""
    idx = idx[:, -model.config.block_size :]
    logits = model.lm_head(model.hidden_states(idx)[:, -1])  # (1, vocab): last position only
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    return torch.multinomial(torch.softmax(logits / temperature, dim=-1), num_samples=1)


def generator(model: GPT):
    def generate(ids: list[int], max_tokens: int, temperature: float) -> Iterator[int]:
        idx = torch.tensor([ids])  # (1, T)
        for _ in range(max_tokens):
            nxt = next_token(model, idx, temperature)
            idx = torch.cat([idx, nxt], dim=1)
            yield int(nxt)

    return generate


def load(model_dir: Path):
    return generator(load_reference(model_dir))


if __name__ == "__main__":
    naive_api.main(__doc__, load)
