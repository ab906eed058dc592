"""What nanoserve changes in how vLLM starts, checked without starting an engine."""

from vllm.model_executor.models import registry

from server import vllm_engine


def test_on_cpu_the_model_class_is_inspected_without_a_second_python(monkeypatch, tmp_path):
    # a cold start used to spend 16-22 s in a subprocess that imported torch and vLLM again
    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path))
    monkeypatch.setattr(registry, "_run_in_subprocess", registry._run_in_subprocess)  # undone after

    def no_python(*args, **kwargs):
        raise AssertionError(f"vLLM ran a subprocess: {args}")

    monkeypatch.setattr(registry.subprocess, "run", no_python)
    vllm_engine._inspect_models_in_process()
    info = registry.ModelRegistry.models["GPT2LMHeadModel"].inspect_model_cls()
    assert info.architecture == "GPT2LMHeadModel"
    assert info.is_text_generation_model
    # cached as vLLM caches it, so the next start reads the file
    assert list((tmp_path / "modelinfos").iterdir())
