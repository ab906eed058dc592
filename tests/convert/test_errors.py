"""`nanoserve convert` errors: one line on stderr, exit code 2, nothing written or lost."""

import json
import os
import pickle

from nanoserve.convert import verify
from nanoserve.convert.tokenizer import write_gpt2

from tests.support.checkpoints import (
    char_checkpoint_dir,
    nanogpt_checkpoint,
    run_cli,
    save_checkpoint,
    tiny_model,
)


def assert_one_line_error(code: int, err: str, message: str) -> None:
    assert code == 2
    assert err == f"error: {message}\n"
    assert "Traceback" not in err


def assert_nothing_written(tmp_path):
    assert not (tmp_path / "hf").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hf.")], "temp dir left behind"


def test_missing_checkpoint(tmp_path, capsys):
    code, _, err = run_cli([tmp_path / "nope", "--out", tmp_path / "hf"], capsys)
    assert_one_line_error(code, err, f"checkpoint not found: {tmp_path / 'nope'}")
    assert_nothing_written(tmp_path)


def test_not_a_nanogpt_checkpoint_names_missing_keys(tmp_path, capsys):
    path = save_checkpoint({"state_dict": tiny_model().state_dict()}, tmp_path / "ckpt.pt")
    code, _, err = run_cli([path, "--out", tmp_path / "hf"], capsys)
    assert_one_line_error(
        code, err, f"not a nanoGPT checkpoint: {path} lacks keys model, model_args"
    )
    assert_nothing_written(tmp_path)


def test_shape_mismatch(tmp_path, capsys):
    ckpt = nanogpt_checkpoint(tiny_model())
    ckpt["model_args"]["n_embd"] = 128
    path = save_checkpoint(ckpt, tmp_path / "ckpt.pt")
    code, _, err = run_cli([path, "--out", tmp_path / "hf"], capsys)
    assert_one_line_error(
        code, err, "shape mismatch: transformer.wte.weight is (65, 64), model_args imply (65, 128)"
    )
    assert_nothing_written(tmp_path)


def test_unsafe_meta_pickle(tmp_path, capsys):
    ckpt, _ = char_checkpoint_dir(tmp_path / "ckpt", meta=False)
    # what a malicious meta.pkl carries: a reference to a callable (here os.system, not called)
    (tmp_path / "ckpt" / "meta.pkl").write_bytes(pickle.dumps({"stoi": {"a": 0}, "f": os.system}))
    code, _, err = run_cli([ckpt, "--out", tmp_path / "hf"], capsys)
    assert_one_line_error(
        code,
        err,
        f"refusing to unpickle meta.pkl: it asks for {os.system.__module__}.system; "
        "only plain dict/list/str/int are accepted",
    )
    assert_nothing_written(tmp_path)


def test_output_exists_without_force_keeps_it_untouched(tmp_path, capsys):
    ckpt, _ = char_checkpoint_dir(tmp_path / "ckpt")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "precious.txt").write_text("keep me")
    code, _, err = run_cli([ckpt, "--out", tmp_path / "hf"], capsys)
    assert_one_line_error(
        code, err, f"output exists: {tmp_path / 'hf'} (pass --force to replace it)"
    )
    assert [p.name for p in (tmp_path / "hf").iterdir()] == ["precious.txt"]
    assert (tmp_path / "hf" / "precious.txt").read_text() == "keep me"


def test_force_refuses_to_replace_a_directory_that_is_not_a_conversion(tmp_path, capsys):
    ckpt, _ = char_checkpoint_dir(tmp_path / "ckpt")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "precious.txt").write_text("keep me")
    code, _, err = run_cli([ckpt, "--out", tmp_path / "hf", "--force"], capsys)
    assert_one_line_error(
        code,
        err,
        f"refusing to replace {tmp_path / 'hf'}: it is not a nanoserve conversion "
        "(no nanoserve.json)",
    )
    assert (tmp_path / "hf" / "precious.txt").read_text() == "keep me"


def test_force_replaces_a_previous_conversion(tmp_path, capsys):
    ckpt, _ = char_checkpoint_dir(tmp_path / "ckpt")
    assert run_cli([ckpt, "--out", tmp_path / "hf", "--dtype", "bfloat16"], capsys)[0] == 0
    assert run_cli([ckpt, "--out", tmp_path / "hf", "--force"], capsys)[0] == 0
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["dtype"] == "float32"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "hf"]  # no temp or backup dirs


def test_unknown_dtype(tmp_path, capsys):
    ckpt, _ = char_checkpoint_dir(tmp_path / "ckpt")
    code, _, err = run_cli([ckpt, "--out", tmp_path / "hf", "--dtype", "fp8"], capsys)
    assert_one_line_error(
        code, err, "unknown dtype 'fp8': choose one of float32, float16, bfloat16"
    )
    assert_nothing_written(tmp_path)


def test_char_model_without_meta_is_told_to_pass_meta(tmp_path, capsys):
    ckpt, _ = char_checkpoint_dir(tmp_path / "ckpt", meta=False)
    code, _, err = run_cli([ckpt, "--out", tmp_path / "hf"], capsys)
    assert_one_line_error(
        code,
        err,
        "tokenizer has 50257 tokens but the model only 65 (a char-level model? pass --meta)",
    )
    assert_nothing_written(tmp_path)


def test_meta_and_tokenizer_together_are_refused(tmp_path, capsys):
    ckpt, _ = char_checkpoint_dir(tmp_path / "ckpt")
    argv = [ckpt, "--out", tmp_path / "hf", "--meta", ckpt / "meta.pkl", "--tokenizer", ckpt]
    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, "--meta and --tokenizer are exclusive: give one vocabulary")
    assert_nothing_written(tmp_path)


def test_failed_verification_leaves_nothing_behind(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(verify, "MAPPING_BOUND", 0.0)
    ckpt, _ = char_checkpoint_dir(tmp_path / "ckpt")
    code, out, err = run_cli([ckpt, "--out", tmp_path / "hf"], capsys)
    assert code == 2
    assert err.startswith("error: verification failed: max |Δ| ")
    assert "FAILED" in out
    assert_nothing_written(tmp_path)


def test_custom_tokenizer_larger_than_the_model_is_refused(tmp_path, capsys):
    ckpt, _ = char_checkpoint_dir(tmp_path / "ckpt", meta=False)
    (tmp_path / "tok").mkdir()
    write_gpt2(tmp_path / "tok", max_len=32)
    code, _, err = run_cli(
        [ckpt, "--out", tmp_path / "hf", "--tokenizer", tmp_path / "tok"], capsys
    )
    assert_one_line_error(code, err, "tokenizer has 50257 tokens but the model only 65")
    assert_nothing_written(tmp_path)
