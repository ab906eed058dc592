"""Tokenizers written by the converter, read back the way transformers and vLLM read them."""

import json
import subprocess
import sys

import pytest
from nanoserve.convert.errors import ConvertError
from nanoserve.convert.tokenizer import (
    char_tokenizer,
    copy_custom,
    unknown_chars,
    write_char,
    write_gpt2,
)
from transformers import AutoTokenizer

from tests.support.checkpoints import SHAKESPEARE_CHARS, encode_chars

ITOS = list(SHAKESPEARE_CHARS)
TRICKY = "  First Citizen:\n\nBefore we proceed any further, hear me speak.\n \n  x  "


@pytest.fixture(scope="module")
def char_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("char_tok")
    write_char(d, ITOS, max_len=256)
    return d


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpt2_tok")
    write_gpt2(d, max_len=1024)
    return d


def test_char_ids_are_nanogpts_ids():
    tok = char_tokenizer(ITOS)
    assert tok.encode(TRICKY).ids == encode_chars(TRICKY)


def test_every_vocab_char_round_trips_alone_and_together():
    tok = char_tokenizer(ITOS)
    for i, ch in enumerate(ITOS):
        assert tok.encode(ch).ids == [i], repr(ch)
        assert tok.decode([i]) == ch, repr(ch)
    everything = SHAKESPEARE_CHARS + SHAKESPEARE_CHARS[::-1]
    assert tok.decode(tok.encode(everything).ids) == everything


def test_transformers_loads_char_tokenizer_as_fast_without_special_tokens(char_dir):
    tok = AutoTokenizer.from_pretrained(char_dir)
    assert tok.is_fast
    assert len(tok) == 65
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == (None,) * 4
    assert tok.all_special_ids == []
    assert tok.model_max_length == 256


def test_transformers_round_trip_inserts_and_strips_nothing(char_dir):
    tok = AutoTokenizer.from_pretrained(char_dir)
    ids = tok.encode(TRICKY)
    assert ids == encode_chars(TRICKY)  # no BOS, nothing added
    assert tok.decode(ids) == TRICKY
    assert tok.decode(tok.encode(" .  ,\n")) == " .  ,\n"  # no clean-up of spaces
    assert [tok.decode([i]) for i in ids] == list(TRICKY)


def test_tokenizer_config_disables_space_cleanup(char_dir):
    config = json.loads((char_dir / "tokenizer_config.json").read_text())
    assert config["clean_up_tokenization_spaces"] is False
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_unknown_chars_are_listed_once_in_order():
    assert unknown_chars("héllo wörld, é!", set(SHAKESPEARE_CHARS)) == ["é", "ö"]
    assert unknown_chars("hello", SHAKESPEARE_CHARS) == []


def test_tokenizer_module_imports_without_torch_or_transformers():
    code = (
        "import sys, convert.tokenizer\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_gpt2_bpe_matches_gpt2_ids(gpt2_dir):
    tok = AutoTokenizer.from_pretrained(gpt2_dir)
    assert tok.is_fast
    assert tok("Hello world")["input_ids"] == [15496, 995]
    assert tok(" Hello world")["input_ids"] == [18435, 995]
    assert (tok.eos_token_id, tok.bos_token_id, len(tok)) == (50256, 50256, 50257)
    assert tok.encode("<|endoftext|>") == [50256]


def test_gpt2_bpe_round_trips_arbitrary_unicode(gpt2_dir):
    tok = AutoTokenizer.from_pretrained(gpt2_dir)
    text = "héllo  wörld 🙂\n\n\tx . , ;"
    assert tok.decode(tok.encode(text)) == text


def test_custom_tokenizer_dir_is_copied_without_pickles(gpt2_dir, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for f in gpt2_dir.iterdir():
        (src / f.name).write_bytes(f.read_bytes())
    (src / "training_args.bin").write_bytes(b"\x80\x04 not copied")
    out = tmp_path / "out"
    out.mkdir()
    info = copy_custom(src, out)
    assert (info.kind, info.vocab_size, info.eos_id, info.bos_id) == ("custom", 50257, 50256, 50256)
    assert sorted(p.name for p in out.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]


def test_custom_tokenizer_dir_without_tokenizer_files_is_an_error(tmp_path):
    with pytest.raises(ConvertError, match=r"holds no tokenizer\.json or tokenizer_config\.json"):
        copy_custom(tmp_path, tmp_path)
