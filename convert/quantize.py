"""INT8 weights for CPU serving: the converted state dict -> vLLM's compressed-tensors W8A8 format.

Pure, like mapping.py. vLLM 0.32's one INT8 path with CPU kernels for a GPT-2 model is
compressed-tensors "W8A8": int8 weights with one float32 scale per output channel (symmetric,
stored in the checkpoint) and activations quantized to int8 per token at run time, multiplied by
oneDNN's int8 GEMM. Its `--quantization int8_per_channel_weight_only` quantizes only
mixture-of-experts layers, of which GPT-2 has none.

What is quantized: the four projections of every block (`c_attn`, `attn.c_proj`, `c_fc`,
`mlp.c_proj`), ~2/3 of GPT-2-124M's parameters. The embeddings (`wte`, tied to the output head,
and `wpe`), LayerNorms and biases keep the conversion's dtype.
"""

import torch
from nanoserve.convert.mapping import TRANSPOSED

INT8_MAX = 127  # symmetric: -127..127, so the scale maps the largest |w| of a channel to 127

# config.json's `quantization_config`, as vLLM's compressed-tensors loader reads it
W8A8_CONFIG = {
    "quant_method": "compressed-tensors",
    "format": "int-quantized",
    "config_groups": {
        "group_0": {
            "targets": ["Linear"],
            "weights": {
                "num_bits": 8,
                "type": "int",
                "symmetric": True,
                "strategy": "channel",
                "dynamic": False,
            },
            "input_activations": {
                "num_bits": 8,
                "type": "int",
                "symmetric": True,
                "strategy": "token",
                "dynamic": True,
            },
        }
    },
    "ignore": ["lm_head"],  # tied to wte: an embedding, not a Linear
}


def is_projection(name: str) -> bool:
    """A block's projection weight (HF Conv1D layout, (in, out)), the tensors that get int8."""
    return name.endswith(".weight") and any(f".{p}." in name for p in TRANSPOSED)


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A Conv1D weight (in, out) -> int8 weight (in, out) and float32 scales (out, 1).

    vLLM's GPT-2 loader transposes every `c_attn/c_proj/c_fc` `.weight` to (out, in) and leaves
    `.weight_scale` alone, so the scales are stored per output channel as vLLM wants them."""
    w = w.float()
    scale = w.abs().amax(dim=0).clamp(min=torch.finfo(torch.float32).tiny) / INT8_MAX  # (out,)
    q = torch.round(w / scale).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q.contiguous(), scale.reshape(-1, 1).contiguous()


def dequantize_weight(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """What the int8 weight stands for, in float32 (the same (in, out) layout)."""
    return q.float() * scale.reshape(1, -1)


def int8_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The HF state dict with every projection weight int8 plus its `weight_scale`."""
    out: dict[str, torch.Tensor] = {}
    for name, t in sd.items():
        if is_projection(name):
            out[name], out[name.removesuffix("weight") + "weight_scale"] = quantize_weight(t)
        else:
            out[name] = t
    assert sum(map(is_projection, out)) == sum(map(is_projection, sd)), "lost a projection"
    return out


def dequantized(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An int8 state dict back in float32 (scales folded in): what the int8 weights compute."""
    out = {}
    for name, t in sd.items():
        if name.endswith(".weight_scale"):
            continue
        if is_projection(name):
            out[name] = dequantize_weight(t, sd[name.removesuffix("weight") + "weight_scale"])
        else:
            out[name] = t.float()
    return out
