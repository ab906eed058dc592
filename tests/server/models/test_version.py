"""Version ids and the same-architecture test (server/models/version.py)."""

import json

from nanoserve.server.models.version import architecture, describe

CONFIG = {"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "vocab_size": 65, "n_positions": 64}


def model_dir(path, config=CONFIG, source=None, weights=b"w"):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    (path / "tokenizer.json").write_text('{"model": {"vocab": {"a": 0}}}')
    (path / "model.safetensors").write_bytes(weights)
    if source is not None:
        (path / "nanoserve.json").write_text(json.dumps({"source": source}))
    return path


def test_a_nanogpt_version_is_its_iteration_and_checkpoint_hash(tmp_path):
    d = model_dir(tmp_path / "a", source={"iter_num": 2000, "sha256": "1a2b3c4d" + "0" * 56,
                                          "best_val_loss": 1.47})  # fmt: skip
    v = describe(d)
    assert v.id == "iter2000-1a2b3c4d"
    assert (v.iter_num, v.best_val_loss, v.directory) == (2000, 1.47, d)


def test_a_directory_without_an_iteration_is_named_by_its_weights(tmp_path):
    one, same, other = (model_dir(tmp_path / n, weights=w) for n, w in
                        (("one", b"w1"), ("same", b"w1"), ("other", b"w2")))  # fmt: skip
    assert len(describe(one).id) == 8 and describe(one).iter_num is None
    assert describe(one).id == describe(same).id != describe(other).id


def test_same_architecture_means_same_config_and_tokenizer_not_same_weights(tmp_path):
    a = model_dir(tmp_path / "a", weights=b"a")
    b = model_dir(tmp_path / "b", config=dict(reversed(CONFIG.items())), weights=b"b")
    deeper = model_dir(tmp_path / "c", config=CONFIG | {"n_layer": 3})
    assert architecture(a) == architecture(b)  # key order and weights do not matter
    assert architecture(a) != architecture(deeper)
    (b / "tokenizer.json").write_text('{"model": {"vocab": {"b": 0}}}')
    assert architecture(a) != architecture(b)  # another vocabulary: not in place
