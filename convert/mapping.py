"""The pure part of the converter: nanoGPT state dict + model_args -> HF GPT-2 state dict + config.

No I/O here. Names on both sides are GPT-2's own, so the mapping is mechanical:
- nanoGPT's four projections are `nn.Linear` (weight is (out, in)); HF GPT-2 uses `Conv1D`
  (weight is (in, out)), so those weights are transposed.
- `bias=False` models have no Linear/LayerNorm biases; HF GPT-2 always has them, and zeros are
  exactly "no bias".
- `lm_head` is tied to `wte`; HF re-ties it from `tie_word_embeddings`, so it is not stored.
- The embedding is cut to the tokenizer's vocabulary (nanoGPT pads 50257 -> 50304 for speed).
  With the padded rows gone the served model cannot emit an id its tokenizer cannot decode, which
  masking at sampling time would only promise; the kept rows' logits are unchanged.
"""

from dataclasses import dataclass

import torch
from nanoserve.convert.errors import ConvertError

TRANSPOSED = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")  # Linear -> Conv1D
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ModelShape:
    """The architecture numbers of a nanoGPT model, from its checkpoint's `model_args`."""

    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    vocab_size: int
    bias: bool = True

    @classmethod
    def from_model_args(cls, args: dict) -> "ModelShape":
        """Read the fields nanoGPT's train.py stores; `bias` defaults to True as nanoGPT's."""
        try:
            kw = {k: int(args[k]) for k in ("n_layer", "n_head", "n_embd", "block_size")}
            kw["vocab_size"] = int(args["vocab_size"])
        except (KeyError, TypeError, ValueError) as e:
            raise ConvertError(f"model_args unusable: {e}") from None
        shape = cls(**kw, bias=bool(args.get("bias", True)))
        if shape.n_embd % shape.n_head:
            raise ConvertError(f"n_embd {shape.n_embd} is not a multiple of n_head {shape.n_head}")
        return shape

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head


def nanogpt_shapes(m: ModelShape) -> dict[str, tuple[int, ...]]:
    """Every tensor a nanoGPT state dict must hold (minus mask buffers and lm_head), with shape."""
    C = m.n_embd
    shapes: dict[str, tuple[int, ...]] = {
        "transformer.wte.weight": (m.vocab_size, C),
        "transformer.wpe.weight": (m.block_size, C),
        "transformer.ln_f.weight": (C,),
    }
    per_layer = {  # Linear weights are (out, in)
        "ln_1.weight": (C,),
        "attn.c_attn.weight": (3 * C, C),
        "attn.c_proj.weight": (C, C),
        "ln_2.weight": (C,),
        "mlp.c_fc.weight": (4 * C, C),
        "mlp.c_proj.weight": (C, 4 * C),
    }
    if m.bias:
        shapes["transformer.ln_f.bias"] = (C,)
        per_layer |= {k.replace(".weight", ".bias"): v[:1] for k, v in per_layer.items()}
    for i in range(m.n_layer):
        shapes |= {f"transformer.h.{i}.{k}": v for k, v in per_layer.items()}
    return shapes


def check_state_dict(sd: dict[str, torch.Tensor], m: ModelShape) -> None:
    """Raise ConvertError naming missing/unexpected keys and shape mismatches against model_args."""
    expected = nanogpt_shapes(m)
    missing = [k for k in expected if k not in sd]
    if missing:
        shown = ", ".join(missing[:6]) + (
            f" (+{len(missing) - 6} more)" if len(missing) > 6 else ""
        )
        raise ConvertError(f"not a nanoGPT checkpoint: state dict lacks {shown}")
    unexpected = [k for k in sd if k not in expected and k != "lm_head.weight"]
    if unexpected:
        raise ConvertError(f"unexpected tensors for model_args {m}: {', '.join(unexpected[:6])}")
    for key, shape in expected.items():
        if tuple(sd[key].shape) != shape:
            raise ConvertError(
                f"shape mismatch: {key} is {tuple(sd[key].shape)}, model_args imply {shape}"
            )
    head, wte = sd.get("lm_head.weight"), sd["transformer.wte.weight"]
    if head is not None and head.data_ptr() != wte.data_ptr() and not torch.equal(head, wte):
        raise ConvertError(
            "lm_head.weight differs from transformer.wte.weight: untied heads are "
            "not nanoGPT's architecture"
        )


def hf_state_dict(
    sd: dict[str, torch.Tensor], m: ModelShape, vocab_size: int, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """The HF GPT2LMHeadModel state dict (without the tied lm_head) for a checked nanoGPT one."""
    assert 0 < vocab_size <= m.vocab_size, f"vocab {vocab_size} must be in 1..{m.vocab_size}"
    C = m.n_embd
    out: dict[str, torch.Tensor] = {}
    for key, tensor in sd.items():
        if key == "lm_head.weight":
            continue  # tied: HF rebuilds it from wte
        if key == "transformer.wte.weight":
            tensor = tensor[:vocab_size]  # drop padded rows, see module docstring
        elif key.endswith(".weight") and any(f".{t}." in key for t in TRANSPOSED):
            tensor = tensor.t()  # (out, in) -> Conv1D's (in, out)
        out[key] = tensor.to(dtype).contiguous()
    if not m.bias:
        zero_bias = {
            "ln_1": C,
            "attn.c_attn": 3 * C,
            "attn.c_proj": C,
            "ln_2": C,
            "mlp.c_fc": 4 * C,
            "mlp.c_proj": C,
        }
        for i in range(m.n_layer):
            for name, n in zero_bias.items():
                out[f"transformer.h.{i}.{name}.bias"] = torch.zeros(n, dtype=dtype)
        out["transformer.ln_f.bias"] = torch.zeros(C, dtype=dtype)
    # as nanoGPT's from_pretrained: the key count is fixed by the architecture
    assert len(out) == 4 + 12 * m.n_layer, f"{len(out)} tensors, expected {4 + 12 * m.n_layer}"
    assert out["transformer.wte.weight"].shape == (vocab_size, C), "embedding not trimmed"
    return out


def hf_config(
    m: ModelShape, vocab_size: int, dtype: str, bos_id: int | None, eos_id: int | None
) -> dict:
    """config.json for GPT2LMHeadModel; token ids may be None (char models have no EOS)."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": vocab_size,
        "n_positions": m.block_size,  # vLLM's max_model_len comes from here
        "n_embd": m.n_embd,
        "n_layer": m.n_layer,
        "n_head": m.n_head,
        "n_inner": 4 * m.n_embd,
        # nanoGPT uses nn.GELU() (exact erf); HF's default gelu_new is the tanh approximation
        "activation_function": "gelu",
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        # written even when None: GPT2Config would otherwise default both to 50256
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": None,
        "use_cache": True,
        "dtype": dtype,
    }


def generation_config(bos_id: int | None, eos_id: int | None) -> dict:
    """generation_config.json: only the special ids, so no sampling defaults leak into serving."""
    return {"bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": None}
