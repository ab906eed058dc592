"""What nanoserve changes in how vLLM starts, checked without starting an engine."""

import json

from nanoserve.server.engine import vllm_adapter
from nanoserve.server.settings import Settings
from vllm.model_executor.models import registry


def test_on_cpu_the_model_class_is_inspected_without_a_second_python(monkeypatch, tmp_path):
    # a cold start used to spend 16-22 s in a subprocess that imported torch and vLLM again
    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path))
    monkeypatch.setattr(registry, "_run_in_subprocess", registry._run_in_subprocess)  # undone after

    def no_python(*args, **kwargs):
        raise AssertionError(f"vLLM ran a subprocess: {args}")

    monkeypatch.setattr(registry.subprocess, "run", no_python)
    vllm_adapter._inspect_models_in_process()
    info = registry.ModelRegistry.models["GPT2LMHeadModel"].inspect_model_cls()
    assert info.architecture == "GPT2LMHeadModel"
    assert info.is_text_generation_model
    # cached as vLLM caches it, so the next start reads the file
    assert list((tmp_path / "modelinfos").iterdir())


def _model(tmp_path, dtype: str):
    (tmp_path / "config.json").write_text(json.dumps({"dtype": dtype}))
    return tmp_path


AVX2 = {"fpu", "sse2", "avx", "avx2", "fma"}


def test_bfloat16_on_a_cpu_without_a_bfloat16_matmul_is_warned_about(tmp_path):
    model = _model(tmp_path, "float32")
    asked = Settings(no_auth=True, dtype="bfloat16")
    warning = vllm_adapter.slow_dtype_warning(model, asked, AVX2)
    assert "--dtype float32" in warning and "bfloat16" in warning
    # the dtype a model was converted to counts as asked for ("auto")
    converted = _model(tmp_path, "bfloat16")
    assert vllm_adapter.slow_dtype_warning(converted, Settings(no_auth=True), AVX2)


def test_no_warning_where_bfloat16_is_fast_or_not_asked_for(tmp_path):
    model = _model(tmp_path, "float32")
    bf16 = Settings(no_auth=True, dtype="bfloat16")
    assert vllm_adapter.slow_dtype_warning(model, bf16, AVX2 | {"avx512f", "avx512_bf16"}) is None
    assert vllm_adapter.slow_dtype_warning(model, bf16, AVX2 | {"amx_bf16"}) is None
    assert vllm_adapter.slow_dtype_warning(model, bf16, set()) is None  # flags unknown
    auto = Settings(no_auth=True)
    assert vllm_adapter.slow_dtype_warning(model, auto, AVX2) is None
