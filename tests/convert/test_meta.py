"""meta.pkl: safe unpickling and nanoGPT's lookup order."""

import os
import pickle

import pytest
from nanoserve.convert.errors import ConvertError, UnsafePickleError
from nanoserve.convert.meta import find_meta, load_meta, load_plain_pickle

from tests.support.checkpoints import SHAKESPEARE_CHARS, write_meta


class Exploit:
    """Unpickling this runs a shell command under the stock unpickler."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_nanogpt_meta_gives_the_char_vocabulary_in_id_order(tmp_path):
    vocab = load_meta(write_meta(tmp_path / "meta.pkl"))
    assert vocab.size == 65
    assert "".join(vocab.itos) == SHAKESPEARE_CHARS
    assert (vocab.itos[0], vocab.itos[1]) == ("\n", " ")


def test_code_execution_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "meta.pkl"
    path.write_bytes(pickle.dumps({"stoi": {"a": 0}, "x": Exploit(marker)}))
    with pytest.raises(UnsafePickleError) as e:
        load_meta(path)
    assert str(e.value) == (
        f"refusing to unpickle meta.pkl: it asks for {os.system.__module__}.system; "
        "only plain dict/list/str/int are accepted"
    )
    assert not marker.exists()


def test_class_instances_are_refused_by_name():
    from collections import OrderedDict

    with pytest.raises(UnsafePickleError, match=r"it asks for collections\.OrderedDict"):
        load_plain_pickle(pickle.dumps({"stoi": OrderedDict(a=0)}))


def test_values_beyond_dict_list_str_int_are_refused():
    with pytest.raises(UnsafePickleError) as e:
        load_plain_pickle(pickle.dumps({"stoi": {"a": 0}, "lr": 0.5}))
    assert str(e.value) == (
        "refusing meta.pkl: meta['lr'] is a float; only plain dict/list/str/int are accepted"
    )


def test_plain_nested_data_is_accepted():
    data = {"vocab_size": 2, "stoi": {"a": 0, "b": 1}, "itos": {0: "a", 1: "b"}, "l": [1, "x"]}
    assert load_plain_pickle(pickle.dumps(data)) == data


def test_corrupt_pickle_is_a_clear_error(tmp_path):
    path = tmp_path / "meta.pkl"
    path.write_bytes(pickle.dumps({"stoi": {"a": 0}})[:-5])
    with pytest.raises(ConvertError, match=r"^meta\.pkl is not a readable pickle"):
        load_meta(path)


def test_multi_character_tokens_are_not_a_char_vocabulary(tmp_path):
    path = tmp_path / "meta.pkl"
    path.write_bytes(pickle.dumps({"vocab_size": 2, "stoi": {"a": 0, "th": 1}}))
    with pytest.raises(ConvertError, match=r"not a char vocabulary, multi-char tokens \['th'\]"):
        load_meta(path)


def test_ids_with_gaps_are_refused(tmp_path):
    path = tmp_path / "meta.pkl"
    path.write_bytes(pickle.dumps({"vocab_size": 2, "stoi": {"a": 0, "b": 2}}))
    with pytest.raises(ConvertError, match=r"stoi ids are not exactly 0\.\.1"):
        load_meta(path)


@pytest.fixture
def layout(tmp_path, monkeypatch):
    """out/ckpt.pt, out/meta.pkl, data/shakespeare_char/meta.pkl, cwd = tmp_path."""
    (tmp_path / "out").mkdir()
    ckpt = tmp_path / "out" / "ckpt.pt"
    ckpt.touch()
    beside = write_meta(tmp_path / "out" / "meta.pkl")
    in_data = write_meta(tmp_path / "data" / "shakespeare_char" / "meta.pkl")
    explicit = write_meta(tmp_path / "elsewhere" / "meta.pkl")
    monkeypatch.chdir(tmp_path)
    return ckpt, explicit, beside, in_data


def test_explicit_meta_wins(layout):
    ckpt, explicit, _, _ = layout
    assert find_meta(explicit, ckpt, "shakespeare_char") == explicit


def test_meta_next_to_checkpoint_comes_second(layout):
    ckpt, _, beside, _ = layout
    assert find_meta(None, ckpt, "shakespeare_char") == beside


def test_data_dataset_meta_relative_to_cwd_comes_third(layout):
    ckpt, _, beside, in_data = layout
    beside.unlink()
    found = find_meta(None, ckpt, "shakespeare_char")
    assert found.resolve() == in_data.resolve()


def test_no_meta_anywhere_means_none(layout):
    ckpt, _, beside, in_data = layout
    beside.unlink()
    in_data.unlink()
    assert find_meta(None, ckpt, "shakespeare_char") is None
    assert find_meta(None, ckpt, None) is None


def test_explicit_meta_that_does_not_exist_is_an_error(layout):
    ckpt, _, _, _ = layout
    with pytest.raises(ConvertError, match=r"^meta file not found: missing\.pkl$"):
        find_meta("missing.pkl", ckpt, "shakespeare_char")
