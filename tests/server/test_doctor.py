"""`nanoserve doctor`: one line per check, the fix on each failure, exit code 1 if any fails."""

import os
import socket
import subprocess
import sys

import pytest
from nanoserve.convert.cli import main as convert_main
from nanoserve.server import doctor as doctor_module

from harness.processes import free_port
from tests.support.checkpoints import nanogpt_checkpoint, save_checkpoint, tiny_model, write_meta
from tests.support.servers import REPO

CHECKS = ["keys", "port", "redis", "cpu", "model", "parity", "vllm", "head size", "quantization"]


def doctor(*args: str) -> tuple[int, dict[str, str]]:
    """(exit code, {check name: its line}) of `nanoserve doctor ARGS`, without NANOSERVE_* env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NANOSERVE_")}
    done = subprocess.run(
        [sys.executable, "-m", "nanoserve.cli", "doctor", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = {}
    for line in done.stdout.splitlines():
        status, _, rest = line.partition("  ")
        name = rest.strip().split(":")[0]
        lines[name] = f"{status} {rest.strip()}"
    return done.returncode, lines


@pytest.mark.slow
def test_servable_setup_passes_every_check(redis_url, demo_cache):
    code, lines = doctor(
        "--api-key", "sk-doctor", "--port", str(free_port()),
        "--ratelimit-storage", redis_url, "--cache-dir", str(demo_cache),
    )  # fmt: skip
    assert list(lines) == CHECKS, lines
    assert all(line.startswith("ok ") for line in lines.values()), lines
    assert code == 0
    assert "vLLM 0.32.0 on cpu" in lines["vllm"]


@pytest.mark.slow
def test_each_failure_is_named_with_its_fix(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        closed = free_port()  # nothing listens there
        code, lines = doctor(
            str(tmp_path / "missing" / "ckpt.pt"), "--port", str(port),
            "--ratelimit-storage", f"redis://127.0.0.1:{closed}",
        )  # fmt: skip
    assert code == 1
    assert lines["keys"].startswith("FAIL keys: no credentials configured -> fix: give --api-key")
    assert lines["port"].startswith(f"FAIL port: 127.0.0.1:{port} is not free")
    assert "fix: stop what listens there, or pass --port N" in lines["port"]
    assert lines["redis"].startswith(f"FAIL redis: redis://127.0.0.1:{closed} unreachable")
    assert "model not found" in lines["model"] and lines["model"].startswith("FAIL")
    assert "parity" not in lines and "head size" not in lines  # nothing to check them on
    assert lines["vllm"].startswith("ok ")


@pytest.mark.slow
def test_unsupported_head_size_and_unverified_conversion_fail(tmp_path):
    # head size 16 (n_embd 32 / n_head 2): vLLM's CPU attention has no kernel for it
    ckpt = save_checkpoint(nanogpt_checkpoint(tiny_model(n_embd=32)), tmp_path / "ckpt.pt")
    write_meta(tmp_path / "meta.pkl")
    model_dir = tmp_path / "hf"
    assert convert_main([str(ckpt), "--out", str(model_dir), "--no-verify"]) == 0

    code, lines = doctor(str(model_dir), "--no-auth", "--port", str(free_port()))
    assert code == 1
    assert lines["keys"].startswith("ok ")
    assert lines["parity"].startswith("FAIL parity: converted with --no-verify")
    assert lines["head size"].startswith("FAIL head size: head size 16")
    assert "fix: serve it on a GPU, or train with a supported head size" in lines["head size"]


AVX2 = {"fpu", "sse2", "avx", "avx2", "fma"}


@pytest.mark.parametrize(
    ("flags", "slow"),
    [
        (AVX2, True),
        (AVX2 | {"avx512f"}, True),
        (AVX2 | {"avx512f", "avx512_bf16"}, False),
        (AVX2 | {"amx_bf16"}, False),
    ],
)
def test_the_cpu_check_says_when_bfloat16_would_be_slow(monkeypatch, flags, slow):
    # passes either way (float32 is fast), but the dtype choice is made knowing it
    monkeypatch.setattr(doctor_module.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(doctor_module, "cpu_flags", lambda: flags)
    check = doctor_module.check_cpu()
    assert check.ok
    assert ("bfloat16 is slow, use float32" in check.detail) == slow, check
