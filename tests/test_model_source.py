"""`nanoserve serve out/ckpt.pt` from a nanoGPT checkout finds data/<dataset>/meta.pkl."""

import json

from nanoserve.server.engine.model_source import resolve

from tests.helpers import nanogpt_checkpoint, save_checkpoint, tiny_model, write_meta


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
