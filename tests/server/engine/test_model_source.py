"""server/engine/model_source.py: what `nanoserve serve MODEL` resolves to (from a nanoGPT
checkout, data/<dataset>/meta.pkl is found), and which conversion it reuses (the cache key
follows the vocabulary)."""

import json
import logging

import pytest
from nanoserve.server.engine.model_source import (
    DEMO_CHECKPOINT,
    ModelResolutionError,
    cache_key,
    resolve,
)

from tests.support.checkpoints import nanogpt_checkpoint, save_checkpoint, tiny_model, write_meta


@pytest.fixture
def ckpt(tmp_path):
    return save_checkpoint({"model": {}, "model_args": {}}, tmp_path / "out" / "ckpt.pt")


def test_key_depends_on_the_working_directory_when_the_vocabulary_is_looked_up(tmp_path, ckpt):
    # data/<dataset>/meta.pkl is found from the working directory, as nanoGPT's sample.py does:
    # a conversion made elsewhere (maybe with GPT-2 BPE) must not be reused
    assert cache_key(ckpt, None, None, tmp_path / "a") != cache_key(ckpt, None, None, tmp_path)


def test_key_follows_an_explicit_or_adjacent_meta_not_the_directory(tmp_path, ckpt):
    meta = write_meta(tmp_path / "m" / "meta.pkl")
    assert cache_key(ckpt, meta, None, tmp_path / "a") == cache_key(ckpt, meta, None, tmp_path)
    other = write_meta(tmp_path / "m2" / "meta.pkl", chars="abc")
    assert cache_key(ckpt, meta, None, tmp_path) != cache_key(ckpt, other, None, tmp_path)
    write_meta(ckpt.parent / "meta.pkl")
    assert cache_key(ckpt, None, None, tmp_path / "a") == cache_key(ckpt, None, None, tmp_path)


def test_meta_for_a_converted_directory_is_refused(tmp_path):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    with pytest.raises(ModelResolutionError, match="already converted"):
        resolve(str(tmp_path / "hf"), tmp_path / "cache", meta=tmp_path / "meta.pkl")


def test_missing_meta_is_named(tmp_path, ckpt):
    with pytest.raises(ModelResolutionError, match="--meta not found"):
        resolve(str(ckpt), tmp_path / "cache", meta=tmp_path / "nope.pkl")


def test_the_converters_progress_is_logged_as_info_lines(tmp_path, caplog):
    # its lines (print()ed on its stdout) are our log's lines, under a logger of their own
    caplog.set_level(logging.INFO, "nanoserve.convert")
    out, name = resolve(str(DEMO_CHECKPOINT), tmp_path / "cache")
    assert (out / "config.json").is_file() and name == "shakespeare_char"
    lines = [r for r in caplog.records if r.name == "nanoserve.convert"]
    steps = [r.getMessage().split(":")[0] for r in lines]
    assert steps == ["load", "tokenizer", "write", "verify", "done"]
    assert {r.levelname for r in lines} == {"INFO"}


def test_nanogpt_layout_finds_meta_from_the_working_directory(tmp_path, monkeypatch):
    # nanoGPT's layout: out/ckpt.pt, and the char vocabulary under data/, not next to the ckpt.
    checkout = tmp_path / "nanoGPT"
    model = tiny_model()
    save_checkpoint(nanogpt_checkpoint(model, dataset="shakespeare_char"), checkout / "out/ckpt.pt")
    write_meta(checkout / "data/shakespeare_char/meta.pkl")
    monkeypatch.chdir(checkout)

    served, name = resolve("out/ckpt.pt", tmp_path / "cache")

    assert name == "out"
    vocab = json.loads((served / "tokenizer.json").read_text())["model"]["vocab"]
    assert len(vocab) == 65, "the char vocabulary from data/shakespeare_char/meta.pkl"
