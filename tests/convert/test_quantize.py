"""`nanoserve convert --quantize int8`: int8 weights in vLLM's compressed-tensors W8A8 layout."""

import json

import pytest
import torch
from nanoserve.convert.quantize import (
    W8A8_CONFIG,
    dequantize_weight,
    dequantized,
    int8_state_dict,
    is_projection,
    quantize_weight,
)
from safetensors.torch import load_file
from transformers import GPT2Config, GPT2LMHeadModel

from tests.support.checkpoints import char_checkpoint_dir, run_cli

PROJECTIONS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def test_each_output_channel_gets_its_own_scale_and_rounds_within_half_a_step():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 48, generator=g) * torch.linspace(0.01, 3.0, 48)  # (in, out)
    q, scale = quantize_weight(w)
    assert (q.dtype, q.shape, scale.dtype, scale.shape) == (
        torch.int8,
        (64, 48),
        torch.float32,
        (48, 1),
    )
    assert q.abs().max().item() == 127  # each channel's largest |w| maps to 127
    assert torch.allclose(scale.flatten(), w.abs().amax(dim=0) / 127)
    err = (dequantize_weight(q, scale) - w).abs()
    assert (err <= scale.reshape(1, -1) / 2 + 1e-7).all()


def test_an_all_zero_channel_stays_zero():
    w = torch.zeros(8, 4)
    w[:, 1] = 1.0
    q, scale = quantize_weight(w)
    assert torch.equal(dequantize_weight(q, scale), w)


def test_only_projection_weights_are_quantized():
    sd = {
        "transformer.wte.weight": torch.randn(65, 64),
        "transformer.h.0.ln_1.weight": torch.ones(64),
        "transformer.h.0.attn.c_attn.bias": torch.zeros(192),
        **{f"transformer.h.0.{p}.weight": torch.randn(64, 64) for p in PROJECTIONS},
    }
    q = int8_state_dict(sd)
    assert sorted(n for n in sd if is_projection(n)) == [
        f"transformer.h.0.{p}.weight" for p in sorted(PROJECTIONS)
    ]
    for name, t in q.items():
        if is_projection(name):
            assert t.dtype == torch.int8, name
            assert q[name.removesuffix("weight") + "weight_scale"].shape == (t.shape[1], 1)
        elif not name.endswith("weight_scale"):
            assert torch.equal(t, sd[name]), name
    assert set(dequantized(q)) == set(sd)


def test_int8_conversion_is_verified_and_loads_as_w8a8(tmp_path, capsys):
    ckpt, model = char_checkpoint_dir(tmp_path / "ckpt")
    code, out, err = run_cli([ckpt, "--out", tmp_path / "hf", "--quantize", "int8"], capsys)
    assert code == 0, err
    assert "quantize: 8 projection weights int8" in out and "int8 W8A8" in out
    hf_dir = tmp_path / "hf"
    config = json.loads((hf_dir / "config.json").read_text())
    assert config["quantization_config"] == W8A8_CONFIG
    record = json.loads((hf_dir / "nanoserve.json").read_text())["quantization"]
    assert record["method"] == "int8 W8A8" and record["format"] == "compressed-tensors"
    assert 0 < record["rel_diff"] <= record["bound"] == 8e-2
    sd = load_file(hf_dir / "model.safetensors")
    assert {t.dtype for n, t in sd.items() if is_projection(n)} == {torch.int8}
    assert sd["transformer.wte.weight"].dtype == torch.float32

    # independently of convert.verify: the dequantized weights compute nearly the checkpoint's
    # logits (float32 here; vLLM also rounds activations to int8 per token)
    config.pop("quantization_config")
    hf = GPT2LMHeadModel(GPT2Config.from_dict(config))
    hf.load_state_dict(dequantized(sd), strict=False)  # lm_head: tied to wte
    ids = torch.randint(0, 65, (1, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = model(ids)[0][..., :65], hf.eval()(ids).logits
    assert 0 < (got - want).abs().max().item() <= 0.05 * want.abs().max().item()


def test_no_verify_still_quantizes_and_says_unmeasured(tmp_path, capsys):
    ckpt, _ = char_checkpoint_dir(tmp_path / "ckpt")
    args = [ckpt, "--out", tmp_path / "hf", "--quantize", "int8", "--no-verify"]
    assert run_cli(args, capsys)[0] == 0
    record = json.loads((tmp_path / "hf" / "nanoserve.json").read_text())["quantization"]
    assert record["rel_diff"] is None


def test_unknown_quantization_is_a_usage_error(tmp_path, capsys):
    ckpt, _ = char_checkpoint_dir(tmp_path / "ckpt")
    with pytest.raises(SystemExit) as e:  # argparse's choices
        run_cli([ckpt, "--out", tmp_path / "hf", "--quantize", "int4"], capsys)
    assert e.value.code == 2
    assert "invalid choice: 'int4'" in capsys.readouterr().err
