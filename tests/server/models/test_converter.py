"""The warm converter (server/models/converter.py): `nanoserve convert` in a spawned process
that imported torch and transformers ahead; one conversion per process, none left behind."""

import os

import pytest
from nanoserve.server.models.converter import WarmConverter

from tests.support.checkpoints import char_checkpoint_dir


@pytest.mark.slow
def test_each_conversion_gets_a_fresh_warm_process_and_none_outlives_close(tmp_path):
    root, _ = char_checkpoint_dir(tmp_path / "run", scale=8)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((root / "ckpt.pt").read_bytes()[:5000])
    converter = WarmConverter()
    converter.warm()
    first = converter._next[0]
    code, err = converter([str(root / "ckpt.pt"), "--out", str(tmp_path / "hf")])
    assert (code, err) == (0, "")
    assert (tmp_path / "hf" / "config.json").is_file()  # converted and verified
    assert not first.is_alive() and first.exitcode == 0  # it converted once and exited
    second = converter._next[0]
    assert second.is_alive() and second.pid != first.pid  # the next one is warming already
    code, err = converter([str(truncated), "--out", str(tmp_path / "bad")])
    assert code == 2 and err.startswith("error: not a PyTorch checkpoint")
    assert not (tmp_path / "bad").exists()  # nothing of a failed conversion stays
    converter.close()
    assert converter._next is None and not second.is_alive()
    assert os.getcwd() != str(tmp_path)  # the conversion's chdir happened in its own process
