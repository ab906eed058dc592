"""The pure nanoGPT -> HF GPT-2 mapping: names, transposes, biases, vocabulary trim, config."""

import pytest
import torch
from nanoserve.convert.errors import ConvertError
from nanoserve.convert.mapping import (
    ModelShape,
    check_state_dict,
    generation_config,
    hf_config,
    hf_state_dict,
    nanogpt_shapes,
)

from tests.support.checkpoints import GPT2_PADDED, tiny_model


def shape_of(model) -> ModelShape:
    c = model.config
    return ModelShape(c.n_layer, c.n_head, c.n_embd, c.block_size, c.vocab_size, c.bias)


def test_linear_weights_are_transposed_to_conv1d_layout():
    model = tiny_model()
    sd = model.state_dict()
    out = hf_state_dict(sd, shape_of(model), 65, torch.float32)
    for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
        key = f"transformer.h.1.{name}.weight"
        assert torch.equal(out[key], sd[key].t()), key
    assert out["transformer.h.0.attn.c_attn.weight"].shape == (64, 192)
    assert out["transformer.h.0.mlp.c_proj.weight"].shape == (256, 64)


def test_other_tensors_are_copied_unchanged():
    model = tiny_model()
    sd = model.state_dict()
    out = hf_state_dict(sd, shape_of(model), 65, torch.float32)
    for key in (
        "transformer.wpe.weight",
        "transformer.h.0.ln_1.weight",
        "transformer.ln_f.bias",
        "transformer.h.1.attn.c_attn.bias",
        "transformer.wte.weight",
    ):
        assert torch.equal(out[key], sd[key]), key


def test_key_count_is_4_plus_12_per_layer_and_lm_head_is_left_to_tying():
    model = tiny_model(n_layer=3)
    out = hf_state_dict(model.state_dict(), shape_of(model), 65, torch.float32)
    assert len(out) == 4 + 12 * 3
    assert "lm_head.weight" not in out


def test_bias_false_gets_exact_zero_biases_hf_always_has():
    model = tiny_model(bias=False)
    sd = model.state_dict()
    assert not any(k.endswith(".bias") for k in sd)
    out = hf_state_dict(sd, shape_of(model), 65, torch.float32)
    biases = {k: v for k, v in out.items() if k.endswith(".bias")}
    assert len(biases) == 6 * 2 + 1
    assert biases["transformer.h.0.attn.c_attn.bias"].shape == (192,)
    assert biases["transformer.h.1.mlp.c_fc.bias"].shape == (256,)
    assert all(torch.count_nonzero(v) == 0 for v in biases.values())


def test_padded_vocabulary_rows_are_trimmed_to_tokenizer_size():
    model = tiny_model(GPT2_PADDED)
    sd = model.state_dict()
    out = hf_state_dict(sd, shape_of(model), 50257, torch.float32)
    assert out["transformer.wte.weight"].shape == (50257, 64)
    assert torch.equal(out["transformer.wte.weight"], sd["transformer.wte.weight"][:50257])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_rounds_every_tensor(dtype):
    model = tiny_model()
    out = hf_state_dict(model.state_dict(), shape_of(model), 65, dtype)
    assert {t.dtype for t in out.values()} == {dtype}


def test_shape_mismatch_names_the_tensor_and_both_shapes():
    model = tiny_model()
    sd = dict(model.state_dict())
    sd["transformer.h.1.mlp.c_fc.weight"] = torch.zeros(200, 64)
    with pytest.raises(ConvertError) as e:
        check_state_dict(sd, shape_of(model))
    assert str(e.value) == (
        "shape mismatch: transformer.h.1.mlp.c_fc.weight is (200, 64), model_args imply (256, 64)"
    )


def test_model_args_disagreeing_with_tensors_is_a_shape_mismatch():
    model = tiny_model()
    wrong = ModelShape(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab_size=65)
    with pytest.raises(ConvertError, match=r"shape mismatch: transformer.wpe.weight is \(32, 64\)"):
        check_state_dict(model.state_dict(), wrong)


def test_missing_tensors_are_named():
    model = tiny_model()
    sd = dict(model.state_dict())
    del sd["transformer.h.1.attn.c_proj.weight"], sd["transformer.ln_f.weight"]
    with pytest.raises(ConvertError) as e:
        check_state_dict(sd, shape_of(model))
    assert str(e.value) == (
        "not a nanoGPT checkpoint: state dict lacks transformer.ln_f.weight, "
        "transformer.h.1.attn.c_proj.weight"
    )


def test_biases_model_args_do_not_explain_are_refused():
    model = tiny_model(bias=True)
    no_bias = ModelShape(2, 2, 64, 32, 65, bias=False)
    with pytest.raises(ConvertError, match="unexpected tensors for model_args"):
        check_state_dict(model.state_dict(), no_bias)


def test_untied_lm_head_is_refused():
    model = tiny_model()
    sd = dict(model.state_dict())
    sd["lm_head.weight"] = sd["lm_head.weight"].clone() + 1
    with pytest.raises(
        ConvertError, match=r"lm_head\.weight differs from transformer\.wte\.weight"
    ):
        check_state_dict(sd, shape_of(model))


def test_expected_shapes_count_matches_nanogpt_state_dict():
    for bias in (True, False):
        model = tiny_model(bias=bias, n_layer=3)
        keys = set(model.state_dict()) - {"lm_head.weight"}
        assert set(nanogpt_shapes(shape_of(model))) == keys


def test_n_embd_not_divisible_by_n_head_is_an_error():
    args = {"n_layer": 1, "n_head": 3, "n_embd": 64, "block_size": 8, "vocab_size": 10}
    with pytest.raises(ConvertError, match="n_embd 64 is not a multiple of n_head 3"):
        ModelShape.from_model_args(args)


def test_config_declares_exact_gelu_and_nanogpt_geometry():
    shape = ModelShape(n_layer=2, n_head=2, n_embd=64, block_size=32, vocab_size=50304)
    cfg = hf_config(shape, 50257, "float32", 50256, 50256)
    assert cfg["activation_function"] == "gelu"
    assert cfg["architectures"] == ["GPT2LMHeadModel"]
    assert (cfg["n_positions"], cfg["vocab_size"], cfg["n_inner"]) == (32, 50257, 256)
    assert (cfg["layer_norm_epsilon"], cfg["tie_word_embeddings"]) == (1e-5, True)
    assert (cfg["bos_token_id"], cfg["eos_token_id"]) == (50256, 50256)


def test_char_model_config_has_no_special_ids_anywhere():
    shape = ModelShape(n_layer=2, n_head=2, n_embd=64, block_size=32, vocab_size=65)
    cfg = hf_config(shape, 65, "float32", None, None)
    # present and null: absent keys would fall back to GPT2Config's 50256
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (None, None, None)
    assert generation_config(None, None) == {
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
    }
