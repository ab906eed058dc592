"""Converted models in the real vLLM engine reproduce the reference model's greedy tokens.

One engine start per model (the `served` fixture is module-scoped and parametrized,
so pytest runs all char tests, shuts that engine down, then starts the GPT-2 one).
"""

import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from nanoserve.convert.pipeline import convert_checkpoint
from nanoserve.convert.reference import GPT
from tokenizers import Tokenizer

from tests.support.checkpoints import (
    GPT2_PADDED,
    SHAKESPEARE_CHARS,
    greedy,
    greedy_margin,
    nanogpt_checkpoint,
    save_checkpoint,
    tiny_model,
    write_meta,
)

pytestmark = pytest.mark.engine

BLOCK = 64
NEW = 24
PROMPTS = {
    "char": ["ROMEO:\n", "First Citizen:\nBefore we proceed", " ", "a\n\nb  c", "O" * 40],
    "gpt2": ["Hello world", " The quick brown fox", "<|endoftext|>", "naïve café 🙂", "The " * 40],
}
ENGINE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1"}


@dataclass
class Served:
    kind: str
    model: GPT  # the reference holding the checkpoint's weights
    vocab: int
    tokenizer: Tokenizer  # read from the converted directory, independently of vLLM
    llm: object  # vllm.LLM

    def ids(self, prompt: str) -> list[int]:
        return self.tokenizer.encode(prompt).ids


def _convert(kind: str, root: Path) -> tuple[GPT, Path]:
    # scale 8 spreads the logits: greedy paths with clear top-1 margins, not degenerate repeats
    model = tiny_model(65 if kind == "char" else GPT2_PADDED, scale=8, block_size=BLOCK, seed=2)
    save_checkpoint(nanogpt_checkpoint(model, compiled=True), root / "ckpt.pt")
    if kind == "char":
        write_meta(root / "meta.pkl")
    return model, convert_checkpoint(root, root / "hf", log=lambda _: None)


@pytest.fixture(scope="module", params=["char", "gpt2"])
def served(request, tmp_path_factory) -> Iterator[Served]:
    kind = request.param
    model, out = _convert(kind, tmp_path_factory.mktemp(f"engine_{kind}"))
    with pytest.MonkeyPatch.context() as mp:  # the engine process reads these when spawned
        for k, v in ENGINE_ENV.items():
            mp.setenv(k, os.environ.get(k, v))
        from vllm import LLM

        llm = LLM(model=str(out), dtype="float32", max_model_len=BLOCK, seed=0, max_num_seqs=8)
    try:
        tok = Tokenizer.from_file(str(out / "tokenizer.json"))
        yield Served(kind, model, 65 if kind == "char" else 50257, tok, llm)
    finally:
        # LLM has no shutdown(); stop its engine-core process now, before the next engine
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()


def _greedy_params(max_tokens: int, ignore_eos: bool = True):
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=ignore_eos)


def _generate(served: Served, prompts: list[str]) -> list:
    # the last prompt is long enough that prompt + completion fills the whole block
    budgets = [min(NEW, BLOCK - len(served.ids(p))) for p in prompts]
    return served.llm.generate(prompts, [_greedy_params(n) for n in budgets], use_tqdm=False)


def test_vllm_tokenizes_prompts_like_the_converted_tokenizer(served):
    outs = _generate(served, PROMPTS[served.kind])
    for prompt, out in zip(PROMPTS[served.kind], outs, strict=True):
        assert out.prompt_token_ids == served.ids(prompt), prompt
    if served.kind == "gpt2":
        assert outs[0].prompt_token_ids == [15496, 995]


def test_greedy_generation_matches_reference_token_for_token(served):
    prompts = PROMPTS[served.kind]
    outs = _generate(served, prompts)
    for prompt, out in zip(prompts, outs, strict=True):
        ids = served.ids(prompt)
        got = list(out.outputs[0].token_ids)
        want = greedy(served.model, ids, len(got), served.vocab)
        # a near-tie would make float32 rounding decide: the test would prove nothing
        assert greedy_margin(served.model, ids, want, served.vocab) > 1e-3, prompt
        assert got == want, prompt
    assert len(served.ids(prompts[-1])) + len(outs[-1].outputs[0].token_ids) == BLOCK


def test_completion_text_is_the_exact_decoding_of_its_tokens(served):
    for out in _generate(served, PROMPTS[served.kind]):
        ids = list(out.outputs[0].token_ids)
        if served.kind == "char":
            assert out.outputs[0].text == "".join(SHAKESPEARE_CHARS[i] for i in ids)
        else:
            assert out.outputs[0].text == served.tokenizer.decode(ids, skip_special_tokens=True)


def test_eos_is_endoftext_for_gpt2_and_absent_for_char_models(served):
    tok = served.llm.get_tokenizer()
    if served.kind == "gpt2":
        assert tok.eos_token_id == 50256
        return
    assert tok.eos_token_id is None
    # without ignore_eos a char model must still run to max_tokens: no character ends it
    prompts = PROMPTS["char"][:4]
    outs = served.llm.generate(prompts, _greedy_params(NEW, ignore_eos=False), use_tqdm=False)
    assert [(o.outputs[0].finish_reason, len(o.outputs[0].token_ids)) for o in outs] == [
        ("length", NEW)
    ] * 4
