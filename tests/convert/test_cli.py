"""`nanoserve convert` end to end: outputs, logit parity, options, and every user error."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from nanoserve.convert.tokenizer import write_gpt2
from safetensors import safe_open
from transformers import GPT2LMHeadModel

from nanoserve import __version__
from nanoserve.cli import main as nanoserve_main
from tests.support.checkpoints import (
    GPT2_PADDED,
    char_checkpoint_dir,
    gpt2_checkpoint_dir,
    nanogpt_checkpoint,
    run_cli,
    save_checkpoint,
    tiny_model,
    write_meta,
)

OUTPUT_FILES = [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "nanoserve.json",
    "tokenizer.json",
    "tokenizer_config.json",
]


def max_logit_gap(model, out_dir, vocab: int) -> float:
    """Independent of convert.verify: full logits of every position, reference vs transformers."""
    hf = GPT2LMHeadModel.from_pretrained(out_dir, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(123)
    gap = 0.0
    with torch.no_grad():
        for n in (5, model.config.block_size):
            ids = torch.randint(0, vocab, (2, n), generator=g)
            ref = model(ids)[..., :vocab]
            got = hf(ids).logits
            assert got.shape == ref.shape
            gap = max(gap, (got - ref).abs().max().item())
    return gap


VARIANTS = {
    "char-bias": dict(vocab="char", model={}, ckpt={}),
    "char-nobias-compiled-masks-optimizer": dict(
        vocab="char",
        model={"bias": False},
        ckpt=dict(compiled=True, mask_buffers=True, optimizer=True),
    ),
    "gpt2-bias": dict(vocab="gpt2", model={}, ckpt={}),
    "gpt2-nobias-compiled": dict(vocab="gpt2", model={"bias": False}, ckpt={"compiled": True}),
    "char-1layer-head64": dict(
        vocab="char", model=dict(n_layer=1, n_embd=128, n_head=2, block_size=16), ckpt={}
    ),
    "char-3layers-3heads": dict(
        vocab="char", model=dict(n_layer=3, n_embd=96, n_head=3, block_size=48, seed=3), ckpt={}
    ),
}


@pytest.mark.parametrize("name", VARIANTS)
def test_conversion_matches_reference_logits(name, tmp_path, capsys):
    v = VARIANTS[name]
    vocab_rows = 65 if v["vocab"] == "char" else GPT2_PADDED
    model = tiny_model(vocab_rows, **v["model"])
    save_checkpoint(nanogpt_checkpoint(model, **v["ckpt"]), tmp_path / "ckpt" / "ckpt.pt")
    if v["vocab"] == "char":
        write_meta(tmp_path / "ckpt" / "meta.pkl")
    code, _, err = run_cli([tmp_path / "ckpt", "--out", tmp_path / "hf"], capsys)
    assert code == 0, err
    vocab = 65 if v["vocab"] == "char" else 50257
    assert max_logit_gap(model, tmp_path / "hf", vocab) <= 1e-4
    info = json.loads((tmp_path / "hf" / "nanoserve.json").read_text())
    assert info["verification"]["passed"] is True
    assert info["verification"]["max_abs_diff"] <= 1e-4
    assert info["verification"]["lengths"][-1] == model.config.block_size
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == OUTPUT_FILES


def test_progress_lines_and_one_line_summary(tmp_path, capsys):
    ckpt, _ = char_checkpoint_dir(tmp_path / "ckpt")
    code, out, _ = run_cli([ckpt, "--out", tmp_path / "hf"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["load", "tokenizer", "write", "verify", "done"]
    assert lines[1] == f"tokenizer: char vocabulary of 65 from {ckpt / 'meta.pkl'}"
    assert lines[-1].startswith(f"done: {tmp_path / 'hf'}  params 0.11M  dtype float32  vocab 65 ")
    assert "(char)  parity max |Δ| " in lines[-1]


def test_provenance_records_source_and_verification(tmp_path, capsys):
    ckpt, _ = char_checkpoint_dir(tmp_path / "ckpt")
    assert run_cli([ckpt / "ckpt.pt", "--out", tmp_path / "hf"], capsys)[0] == 0
    info = json.loads((tmp_path / "hf" / "nanoserve.json").read_text())
    src = info["source"]
    assert src["path"] == str((ckpt / "ckpt.pt").resolve())
    assert src["sha256"] == hashlib.sha256((ckpt / "ckpt.pt").read_bytes()).hexdigest()
    assert (src["iter_num"], round(src["best_val_loss"], 4)) == (250, 1.4697)
    assert src["model_args"] == {
        "block_size": 32,
        "vocab_size": 65,
        "n_layer": 2,
        "n_head": 2,
        "n_embd": 64,
        "dropout": 0.0,
        "bias": True,
    }
    assert info["converter"] == {"name": "nanoserve", "version": __version__}
    assert info["tokenizer"]["kind"] == "char"
    assert (info["dtype"], info["head_size"]) == ("float32", 32)


def test_char_model_has_no_eos_anywhere(tmp_path, capsys):
    ckpt, _ = char_checkpoint_dir(tmp_path / "ckpt")
    assert run_cli([ckpt, "--out", tmp_path / "hf"], capsys)[0] == 0
    for name in ("config.json", "generation_config.json"):
        cfg = json.loads((tmp_path / "hf" / name).read_text())
        assert (cfg["eos_token_id"], cfg["bos_token_id"]) == (None, None), name


def test_gpt2_model_is_trimmed_and_uses_endoftext(tmp_path, capsys):
    ckpt, _ = gpt2_checkpoint_dir(tmp_path / "ckpt")
    code, out, _ = run_cli([ckpt, "--out", tmp_path / "hf"], capsys)
    assert code == 0
    assert "tokenizer: no meta.pkl next to the checkpoint; using GPT-2 BPE" in out
    assert "map: keeping 50257 of 50304 embedding rows" in out
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (cfg["vocab_size"], cfg["eos_token_id"], cfg["bos_token_id"]) == (50257, 50256, 50256)
    with safe_open(tmp_path / "hf" / "model.safetensors", "pt") as f:
        assert f.get_slice("transformer.wte.weight").get_shape() == [50257, 64]


def test_meta_found_in_data_dataset_relative_to_cwd(tmp_path, capsys, monkeypatch):
    model = tiny_model()
    ckpt = save_checkpoint(
        nanogpt_checkpoint(model, dataset="tiny_chars"), tmp_path / "out/ckpt.pt"
    )
    meta = write_meta(tmp_path / "data" / "tiny_chars" / "meta.pkl")
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli([ckpt, "--out", tmp_path / "hf"], capsys)
    assert code == 0
    assert (
        f"tokenizer: char vocabulary of 65 from {Path.cwd() / meta.relative_to(tmp_path)}\n" in out
    )


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_outputs_verify_within_stated_bounds(tmp_path, capsys, dtype):
    ckpt, _ = char_checkpoint_dir(tmp_path / "ckpt")
    code, _, err = run_cli([ckpt, "--out", tmp_path / "hf", "--dtype", dtype], capsys)
    assert code == 0, err
    with safe_open(tmp_path / "hf" / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118 (safe_open is no dict) == {getattr(torch, dtype)}
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["dtype"] == dtype
    v = json.loads((tmp_path / "hf" / "nanoserve.json").read_text())["verification"]
    assert (v["passed"], v["dtype"], v["bound"]) == (True, dtype, 1e-4)
    assert v["max_abs_diff"] <= 1e-4
    assert (
        v["rounding_rel_diff"] <= v["rounding_bound"] == {"float16": 1e-2, "bfloat16": 8e-2}[dtype]
    )


def test_no_verify_records_that_nothing_was_verified(tmp_path, capsys):
    ckpt, _ = char_checkpoint_dir(tmp_path / "ckpt")
    code, out, _ = run_cli([ckpt, "--out", tmp_path / "hf", "--no-verify"], capsys)
    assert code == 0
    assert "verify:" not in out
    assert "parity not verified (--no-verify)" in out
    assert json.loads((tmp_path / "hf" / "nanoserve.json").read_text())["verification"] is None


def test_any_head_size_converts_and_is_recorded(tmp_path, capsys):
    # whether the engine can run it is the server's question (it asks vLLM at start)
    ckpt, _ = char_checkpoint_dir(tmp_path / "ckpt", n_embd=48, n_head=3)
    code, _, _ = run_cli([ckpt, "--out", tmp_path / "hf"], capsys)
    assert code == 0
    assert json.loads((tmp_path / "hf" / "nanoserve.json").read_text())["head_size"] == 16


def test_custom_tokenizer_dir_is_used_and_recorded(tmp_path, capsys):
    ckpt, model = gpt2_checkpoint_dir(tmp_path / "ckpt")
    (tmp_path / "tok").mkdir()
    write_gpt2(tmp_path / "tok", max_len=32)
    code, out, err = run_cli(
        [ckpt, "--out", tmp_path / "hf", "--tokenizer", tmp_path / "tok"], capsys
    )
    assert code == 0, err
    assert f"tokenizer: copied {tmp_path / 'tok'} (50257 tokens)" in out
    info = json.loads((tmp_path / "hf" / "nanoserve.json").read_text())
    assert info["tokenizer"] == {
        "kind": "custom",
        "vocab_size": 50257,
        "source": str((tmp_path / "tok").resolve()),
        "bos_token_id": 50256,
        "eos_token_id": 50256,
    }
    assert max_logit_gap(model, tmp_path / "hf", 50257) <= 1e-4


# --- entry points ------------------------------------------------------------------------------


def test_python_dash_m_convert_runs_the_cli(tmp_path):
    ckpt, _ = char_checkpoint_dir(tmp_path / "ckpt")
    argv = [
        sys.executable,
        "-m",
        "convert",
        str(ckpt),
        "--out",
        str(tmp_path / "hf"),
        "--no-verify",
    ]
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("done: ")


def test_nanoserve_convert_dispatches_to_the_converter(tmp_path, capsys):
    ckpt, _ = char_checkpoint_dir(tmp_path / "ckpt")
    assert nanoserve_main(["convert", str(ckpt), "--out", str(tmp_path / "hf"), "--no-verify"]) == 0
    assert (tmp_path / "hf" / "model.safetensors").is_file()


def test_package_exposes_convert_checkpoint_lazily():
    code = "import sys, convert; f = convert.convert_checkpoint; print(f.__module__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "nanoserve.convert.pipeline"


def test_nanoserve_unknown_subcommand_is_exit_2(capsys):
    assert nanoserve_main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err
