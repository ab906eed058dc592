"""Loading nanoGPT checkpoints: locating, validating, and normalising what train.py saved."""

import argparse
import math

import pytest
import torch
from nanoserve.convert.checkpoint import find_checkpoint, load_checkpoint
from nanoserve.convert.errors import ConvertError, UnsafePickleError

from tests.support.checkpoints import nanogpt_checkpoint, save_checkpoint, tiny_model


def test_a_directory_means_its_ckpt_pt(tmp_path):
    path = save_checkpoint(nanogpt_checkpoint(tiny_model()), tmp_path / "out" / "ckpt.pt")
    assert find_checkpoint(tmp_path / "out") == path
    assert find_checkpoint(path) == path


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConvertError) as e:
        load_checkpoint(tmp_path / "nope.pt")
    assert str(e.value) == f"checkpoint not found: {tmp_path / 'nope.pt'}"


def test_directory_without_ckpt_pt_is_named(tmp_path):
    with pytest.raises(ConvertError) as e:
        load_checkpoint(tmp_path)
    assert str(e.value) == f"checkpoint not found: {tmp_path / 'ckpt.pt'}"


def test_garbage_file_is_not_a_pytorch_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    path.write_text("hello, I am not a checkpoint\n")
    with pytest.raises(ConvertError, match=r"^not a PyTorch checkpoint: "):
        load_checkpoint(path)


def test_non_dict_checkpoint_is_refused(tmp_path):
    path = save_checkpoint([torch.zeros(2)], tmp_path / "ckpt.pt")
    with pytest.raises(
        ConvertError, match=r"holds a list, expected a dict with keys model, model_args"
    ):
        load_checkpoint(path)


def test_bare_state_dict_names_the_missing_keys(tmp_path):
    path = save_checkpoint(tiny_model().state_dict(), tmp_path / "ckpt.pt")
    with pytest.raises(ConvertError) as e:
        load_checkpoint(path)
    assert str(e.value) == f"not a nanoGPT checkpoint: {path} lacks keys model, model_args"


def test_incomplete_model_args_names_the_missing_keys(tmp_path):
    ckpt = nanogpt_checkpoint(tiny_model())
    del ckpt["model_args"]["n_head"], ckpt["model_args"]["block_size"]
    path = save_checkpoint(ckpt, tmp_path / "ckpt.pt")
    with pytest.raises(ConvertError) as e:
        load_checkpoint(path)
    assert (
        str(e.value)
        == f"not a nanoGPT checkpoint: {path}: model_args lacks keys n_head, block_size"
    )


def test_torch_compile_prefix_is_stripped(tmp_path):
    model = tiny_model()
    path = save_checkpoint(nanogpt_checkpoint(model, compiled=True), tmp_path / "ckpt.pt")
    ckpt = load_checkpoint(path)
    assert set(ckpt.state_dict) == set(model.state_dict())
    assert torch.equal(
        ckpt.state_dict["transformer.h.1.mlp.c_fc.weight"],
        model.state_dict()["transformer.h.1.mlp.c_fc.weight"],
    )


def test_causal_mask_buffers_are_dropped(tmp_path):
    model = tiny_model()
    ckpt = nanogpt_checkpoint(model, mask_buffers=True, compiled=True)
    assert "_orig_mod.transformer.h.0.attn.bias" in ckpt["model"]
    loaded = load_checkpoint(save_checkpoint(ckpt, tmp_path / "ckpt.pt"))
    assert set(loaded.state_dict) == set(model.state_dict())


def test_best_val_loss_zero_dim_tensor_becomes_a_float(tmp_path):
    ckpt = nanogpt_checkpoint(tiny_model())
    assert ckpt["best_val_loss"].dim() == 0
    loaded = load_checkpoint(save_checkpoint(ckpt, tmp_path / "ckpt.pt"))
    assert isinstance(loaded.best_val_loss, float)
    assert math.isclose(loaded.best_val_loss, 1.4697, rel_tol=1e-6)
    assert loaded.iter_num == 250


@pytest.mark.parametrize("value", [float("inf"), torch.tensor(float("inf")), None])
def test_best_val_loss_inf_or_absent_is_none(tmp_path, value):
    ckpt = nanogpt_checkpoint(tiny_model())
    ckpt["best_val_loss"] = value
    assert load_checkpoint(save_checkpoint(ckpt, tmp_path / "ckpt.pt")).best_val_loss is None


@pytest.mark.parametrize("optimizer", [True, False])
def test_optimizer_state_present_or_absent(tmp_path, optimizer):
    ckpt = nanogpt_checkpoint(tiny_model(), optimizer=optimizer)
    assert ("optimizer" in ckpt) is optimizer
    loaded = load_checkpoint(save_checkpoint(ckpt, tmp_path / "ckpt.pt"))
    assert loaded.has_optimizer is optimizer
    assert len(loaded.state_dict) == len(tiny_model().state_dict())


def test_train_config_is_kept_for_meta_lookup(tmp_path):
    ckpt = nanogpt_checkpoint(tiny_model(), dataset="shakespeare_char")
    loaded = load_checkpoint(save_checkpoint(ckpt, tmp_path / "ckpt.pt"))
    assert loaded.config["dataset"] == "shakespeare_char"


def test_checkpoint_holding_arbitrary_objects_is_refused(tmp_path):
    ckpt = nanogpt_checkpoint(tiny_model())
    ckpt["config"] = argparse.Namespace(dataset="x")  # a class instance: not weights-only data
    path = save_checkpoint(ckpt, tmp_path / "ckpt.pt")
    with pytest.raises(UnsafePickleError) as e:
        load_checkpoint(path)
    assert str(e.value) == (
        f"refusing to load {path}: it asks for argparse.Namespace; "
        "a checkpoint may hold only tensors and plain data"
    )
