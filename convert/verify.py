"""Prove a converted directory computes what the checkpoint computes.

Loads the output with `transformers.GPT2LMHeadModel` and compares its logits with
`convert.reference.GPT` running the checkpoint's original weights, on seeded random sequences
(one of them a full block_size long): final hidden states at every position, logits at every
position of short sequences and every 64th (plus the last) of long ones.

Bounds. Both sides always compute in float32, so a correct mapping differs only by float32
summation order: `MAPPING_BOUND` = 1e-4 (absolute) holds for every dtype. For float16/bfloat16
outputs the HF side holds rounded weights, so the mapping is checked against a reference with the
same rounding, and the rounding itself is measured against the unrounded reference, relative to
the range of the reference's values (hidden states and logits each). float16 keeps 11
significant bits (relative step 4.9e-4), bfloat16 8 (3.9e-3); a few layers of accumulation stay
well inside 20x that step, hence 1e-2 and 8e-2. That check exists to catch overflow (float16
tops out at 65504) and gross damage, not to grade precision.

INT8 (`--quantize int8`) is measured the same way, with transformers holding the dequantized
weights: a step of 1/127 of each output channel's largest weight is about bfloat16's relative
step for typical weights, so it gets bfloat16's bound, `INT8_BOUND` = 8e-2.
"""

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from nanoserve.convert.errors import ConvertError
from nanoserve.convert.mapping import ModelShape
from nanoserve.convert.reference import GPT, GPTConfig

MAPPING_BOUND = 1e-4
ROUNDING_BOUND = {"float16": 1e-2, "bfloat16": 8e-2}  # relative, see docstring
INT8_BOUND = 8e-2  # relative, see docstring
LOGIT_STRIDE = 64


@dataclass
class VerifyResult:
    """Outcome of a verification, as recorded in nanoserve.json."""

    passed: bool
    max_abs_diff: float
    bound: float
    lengths: list[int]
    dtype: str
    rounding_rel_diff: float | None = None  # half precision only
    rounding_bound: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def reference_model(
    sd: dict[str, torch.Tensor], shape: ModelShape, dtype: torch.dtype = torch.float32
) -> GPT:
    """The reference GPT holding `sd` rounded to `dtype`, computing in float32."""
    cfg = GPTConfig(
        block_size=shape.block_size,
        vocab_size=shape.vocab_size,
        n_layer=shape.n_layer,
        n_head=shape.n_head,
        n_embd=shape.n_embd,
        bias=shape.bias,
    )
    with torch.device("meta"):  # no random init of weights we replace right away
        model = GPT(cfg)
    weights = {k: v.to(dtype).float() for k, v in sd.items()}  # no copy when already float32
    weights.setdefault("lm_head.weight", weights["transformer.wte.weight"])
    model.load_state_dict(weights, assign=True, strict=True)
    return model.eval()


def sample_sequences(vocab_size: int, block_size: int, seed: int = 0) -> list[torch.Tensor]:
    """Seeded token sequences of lengths 1, a prime in between, and the full block_size."""
    g = torch.Generator().manual_seed(seed)
    lengths = sorted({1, min(13, block_size), block_size})
    return [torch.randint(0, vocab_size, (1, n), generator=g) for n in lengths]


def logit_positions(length: int, every: int = LOGIT_STRIDE) -> list[int]:
    """Positions whose logits are compared: all of a short sequence; a stride plus the last."""
    return list(range(length)) if length <= every else [*range(0, length, every), length - 1]


# Per sequence: (final hidden states at every position, logits at `logit_positions`). lm_head is
# one linear map, so hidden states + these logits prove every logit, without building a
# (T, vocab) matrix per model for long sequences (most of the cost at GPT-2 size).
Outputs = list[tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def _outputs(
    hidden: Callable, head: torch.nn.Module, seqs: list[torch.Tensor], vocab: int
) -> Outputs:
    out = []
    for ids in seqs:
        h = hidden(ids)
        out.append((h, head(h[:, logit_positions(ids.shape[1])])[..., :vocab]))
    return out


def _max_abs(t: torch.Tensor) -> float:
    m = t.abs().max().item()
    return math.inf if math.isnan(m) else m  # Python's max() would silently drop a NaN


def compare(got: Outputs, want: Outputs) -> tuple[float, float]:
    """(max |Δ|, max |Δ| relative to the range of `want`) over hidden states and logits."""
    diff, rel = 0.0, 0.0
    for pair_got, pair_want in zip(got, want, strict=True):
        for a, b in zip(pair_got, pair_want, strict=True):
            d = _max_abs(a - b)
            diff, rel = max(diff, d), max(rel, d / max(_max_abs(b), 1e-30))
    return diff, rel


@dataclass
class Expected:
    """The reference's outputs: all verification needs once the original weights are gone."""

    seqs: list[torch.Tensor]
    exact: Outputs  # original weights
    rounded: Outputs  # weights rounded to the output dtype (== exact for float32)
    vocab: int
    dtype: str


def reference_outputs(
    sd: dict[str, torch.Tensor], shape: ModelShape, vocab: int, dtype: str
) -> Expected:
    """Run the reference on the original weights (and on them rounded to `dtype`)."""
    seqs = sample_sequences(vocab, shape.block_size)

    def run(model: GPT) -> Outputs:
        return _outputs(model.hidden_states, model.lm_head, seqs, vocab)

    exact = run(reference_model(sd, shape))
    rounded = (
        exact if dtype == "float32" else run(reference_model(sd, shape, getattr(torch, dtype)))
    )
    return Expected(seqs, exact, rounded, vocab, dtype)


def load_hf(out_dir: Path) -> torch.nn.Module:
    """Load the converted directory with transformers in float32; every key must match exactly."""
    from transformers import GPT2LMHeadModel  # heavy: only verification needs it
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its "Loading weights" bar would interleave our progress
    try:
        model, info = GPT2LMHeadModel.from_pretrained(
            str(out_dir), dtype=torch.float32, output_loading_info=True
        )
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    problems = {k: v for k, v in info.items() if v}
    if problems:
        raise ConvertError(f"transformers did not load the output exactly: {problems}")
    return model.eval()


def hf_outputs(hf: torch.nn.Module, expected: Expected) -> Outputs:
    """What a transformers GPT-2 computes on the reference's sequences."""
    return _outputs(
        lambda ids: hf.transformer(ids).last_hidden_state, hf.lm_head, expected.seqs, expected.vocab
    )


def check_output(out_dir: Path, expected: Expected) -> VerifyResult:
    """Compare what transformers computes from `out_dir` with the reference's outputs."""
    got = hf_outputs(load_hf(out_dir), expected)
    lengths, dtype = [s.shape[1] for s in expected.seqs], expected.dtype
    diff, _ = compare(got, expected.rounded)
    if dtype == "float32":
        return VerifyResult(diff <= MAPPING_BOUND, diff, MAPPING_BOUND, lengths, dtype)
    _, rel = compare(got, expected.exact)
    ok = diff <= MAPPING_BOUND and rel <= ROUNDING_BOUND[dtype]
    return VerifyResult(ok, diff, MAPPING_BOUND, lengths, dtype, rel, ROUNDING_BOUND[dtype])
