"""--quantization is checked against vLLM's own tables before the engine starts.

Every refusal here happens before vLLM spawns anything: on CPU a wrong choice used to cost a 30 s
start and end in vLLM's list of names, a dtype error, or a worker's stack trace (fp8).
"""

import json
import subprocess
import sys

import pytest
from nanoserve.convert.cli import main as convert_main
from nanoserve.server.engine import vllm_adapter
from nanoserve.server.settings import Settings

from harness.processes import free_port
from tests.support.checkpoints import char_checkpoint_dir
from tests.support.servers import REPO

INT8_HINT = "nanoserve convert CKPT --out DIR --quantize int8"


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict:
    """A tiny char model converted twice: float32, and int8 W8A8."""
    root = tmp_path_factory.mktemp("quant")
    ckpt, _ = char_checkpoint_dir(root / "ckpt", n_embd=64, n_head=2)
    dirs = {"float32": root / "f32", "int8": root / "int8"}
    assert convert_main([str(ckpt), "--out", str(dirs["float32"]), "--no-verify"]) == 0
    args = [str(ckpt), "--out", str(dirs["int8"]), "--no-verify", "--quantize", "int8"]
    assert convert_main(args) == 0
    return dirs


def refusal(model_dir, **settings) -> str:
    with pytest.raises(vllm_adapter.UnservableModel) as e:
        vllm_adapter.check_quantization(model_dir, Settings(**settings))
    message = str(e.value)
    assert "\n" not in message
    return message


def test_unquantized_model_without_flag_passes(converted):
    vllm_adapter.check_quantization(converted["float32"], Settings())


def test_int8_checkpoint_passes_on_cpu_in_every_dtype_vllm_accepts(converted):
    for dtype in ("auto", "float32", "bfloat16"):
        vllm_adapter.check_quantization(converted["int8"], Settings(dtype=dtype))
    # naming the method its config.json records is the same thing
    vllm_adapter.check_quantization(converted["int8"], Settings(quantization="compressed-tensors"))


@pytest.mark.parametrize("name", ["int8", "bitsandbytes"])
def test_a_name_vllm_does_not_know_is_refused_naming_the_int8_path(converted, name):
    message = refusal(converted["float32"], quantization=name)
    assert message.startswith(f"--quantization {name} is not a vLLM method (vLLM 0.32.0: awq,")
    assert "int8_per_channel_weight_only" in message  # vLLM's own list, not one we typed
    assert message.endswith(f"for INT8 on CPU, convert with `{INT8_HINT}` and serve DIR")


def test_int8_weight_only_is_refused_because_it_skips_every_gpt2_layer(converted):
    # vLLM 0.32 applies int8_per_channel_weight_only to mixture-of-experts layers only: on a
    # GPT-2 model it starts, logs "Quantizing 0 layers" and serves plain bfloat16
    message = refusal(
        converted["float32"], quantization="int8_per_channel_weight_only", dtype="bfloat16"
    )
    assert "quantizes only mixture-of-experts layers in vLLM 0.32.0" in message
    assert INT8_HINT in message


@pytest.mark.parametrize("method", ["fp8", "fp8_per_tensor", "fp8_per_channel"])
@pytest.mark.parametrize("dtype", ["auto", "bfloat16"])
def test_fp8_is_refused_on_cpu_whatever_the_dtype(converted, method, dtype):
    message = refusal(converted["float32"], quantization=method, dtype=dtype)
    assert message.startswith(f"--quantization {method} does not run on CPU with vLLM 0.32.0")
    assert INT8_HINT in message


def test_other_load_time_methods_are_refused_on_cpu_as_untested(converted):
    message = refusal(converted["float32"], quantization="mxfp4", dtype="bfloat16")
    assert message.startswith("--quantization mxfp4 is not tested on CPU with vLLM 0.32.0;")


def test_a_checkpoint_format_method_needs_its_checkpoint(converted):
    message = refusal(converted["float32"], quantization="awq", dtype="bfloat16")
    assert message.startswith("--quantization awq reads a checkpoint quantized for it")
    assert "has no quantization_config" in message


def test_a_flag_contradicting_the_checkpoint_is_refused(converted):
    message = refusal(converted["int8"], quantization="fp8")
    assert (
        message
        == f"{converted['int8']} is quantized with compressed-tensors: drop --quantization fp8"
    )


def test_on_gpu_fp8_needs_a_half_precision_dtype(converted, monkeypatch):
    # the dtype rule is vLLM's (Fp8Config.get_supported_act_dtypes); on CPU the device rule
    # comes first, so pretend to be a GPU to reach it
    monkeypatch.setattr(vllm_adapter.current_platform, "is_cpu", lambda: False)
    message = refusal(converted["float32"], quantization="fp8")
    assert message == "fp8 needs --dtype bfloat16 or float16 (vLLM refuses float32 for it)"
    vllm_adapter.check_quantization(
        converted["float32"], Settings(quantization="fp8", dtype="bfloat16")
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--quantization", "int8"], "--quantization int8 is not a vLLM method"),
        (
            ["--quantization", "int8_per_channel_weight_only", "--dtype", "bfloat16"],
            "quantizes only mixture-of-experts layers",
        ),
        (["--quantization", "fp8", "--dtype", "bfloat16"], "fp8 does not run on CPU"),
    ],
    ids=["unknown-name", "int8-weight-only", "fp8"],
)
def test_serve_refuses_in_one_line_with_exit_2_before_the_engine(converted, flags, said):
    cmd = [sys.executable, "-m", "nanoserve.server", str(converted["float32"]), "--no-auth"]
    cmd += ["--port", str(free_port()), "--log-format", "text", *flags]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=REPO)
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [ln for ln in out.stderr.splitlines() if " ERROR " in ln]
    assert len(errors) == 1 and said in errors[0], out.stderr[-2000:]
    assert INT8_HINT in errors[0]
    assert "Traceback" not in out.stderr and "EngineCore" not in out.stderr


def test_int8_config_is_what_vllm_reads_as_w8a8(converted):
    # vLLM's compressed-tensors loader picks its int8 W8A8 scheme (CPU kernels: oneDNN) when
    # this predicate holds for the Linear layers' weights and activations
    from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors import (
        CompressedTensorsConfig,
    )

    qc = json.loads((converted["int8"] / "config.json").read_text())["quantization_config"]
    linear = CompressedTensorsConfig.from_config(qc).target_scheme_map["Linear"]
    assert CompressedTensorsConfig._is_dynamic_token_w8a8(
        linear["weights"], linear["input_activations"]
    )
