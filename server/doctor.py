"""`nanoserve doctor [MODEL] [--flags]`: will `nanoserve serve` work here, with this configuration?

It takes serve's flags, NANOSERVE_* environment and --config file, and prints one line per check
with the fix when it fails: credentials, the port, Redis (when limits are counted there), the CPU's
instruction set, vLLM's platform, the model directory and its parity record, the head size,
the quantization.
Exit code 1 if any check fails. Converting a ckpt.pt MODEL fills the same cache serve reuses.
"""

import json
import platform
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from nanoserve.server.cli import auth_problem, build_parser
from nanoserve.server.engine.cpu import bfloat16_is_slow, cpu_flags
from nanoserve.server.settings import Settings
from pydantic import ValidationError


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        status = "ok  " if self.ok else "FAIL"
        fix = f" -> fix: {self.fix}" if not self.ok and self.fix else ""
        return f"{status}  {self.name}: {self.detail}{fix}"


def check_keys(s: Settings) -> Check:
    if problem := auth_problem(s):
        return Check("keys", False, problem.split(":")[0], problem.split(":", 1)[-1].strip())
    if s.no_auth:
        return Check("keys", True, f"none (--no-auth on {s.host}: loopback only)")
    kinds = [
        f"{len(s.api_keys)} API key(s)" if s.api_keys else "",
        f"key file {s.api_key_file}" if s.api_key_file else "",
        "JWT" if s.jwt_secret or s.jwt_public_key_file else "",
    ]
    return Check("keys", True, ", ".join(k for k in kinds if k))


def check_port(s: Settings) -> Check:
    try:
        with socket.socket() as sock:
            sock.bind((s.host, s.port))
    except OSError as e:
        return Check(
            "port",
            False,
            f"{s.host}:{s.port} is not free ({e.strerror})",
            "stop what listens there, or pass --port N",
        )
    return Check("port", True, f"{s.host}:{s.port} is free")


def check_redis(s: Settings) -> Check:
    url = s.ratelimit_storage
    if not url.startswith(("redis://", "rediss://")):
        return Check("redis", True, f"not used (limits counted in {url}, per process)")
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3).ping()
    except redis.RedisError as e:
        fail = "answered 503" if not s.ratelimit_fail_open else "admitted unlimited"
        return Check(
            "redis",
            False,
            f"{url} unreachable ({e}); requests would be {fail}",
            "start Redis there or fix --ratelimit-storage",
        )
    return Check("redis", True, f"{url} answers")


def check_cpu() -> Check:
    machine = platform.machine()
    if machine not in ("x86_64", "AMD64"):
        return Check("cpu", True, f"{machine} (vLLM's CPU backend has ARM/Power builds)")
    flags = cpu_flags()
    # a fact to know before choosing --dtype for the CPU backend, not a failure: float32 runs
    # at full speed (and on a GPU machine the model does not run on this CPU at all)
    bf16 = (
        "; no AVX512-BF16/AMX: on this CPU bfloat16 is slow, use float32"
        if bfloat16_is_slow(flags)
        else ""
    )
    if "avx512f" in flags:
        return Check("cpu", True, f"x86-64 with AVX-512 (vLLM's fastest CPU kernels){bf16}")
    if "avx2" in flags:
        avx2 = "x86-64 with AVX2, no AVX-512 (CPU inference works, slower)"
        return Check("cpu", True, avx2 + bf16)
    return Check(
        "cpu", False, "x86-64 without AVX2", "vLLM's CPU backend needs AVX2: use another machine"
    )


def check_model(s: Settings) -> tuple[Check, Path | None]:
    """MODEL resolves (a ckpt.pt is converted, once, into the cache) and its directory loads."""
    from nanoserve.server.engine.model_source import ModelResolutionError, resolve

    try:
        model_dir, _ = resolve(s.model, s.cache_dir, s.meta, s.tokenizer)
    except ModelResolutionError as e:
        return Check(
            "model", False, str(e), "pass a converted directory or a nanoGPT ckpt.pt"
        ), None
    try:
        _load(model_dir)
    except Exception as e:  # whatever transformers or safetensors say is the diagnosis
        return Check(
            "model",
            False,
            f"{model_dir} does not load ({type(e).__name__}: {e})",
            "convert the checkpoint again: nanoserve convert CKPT --out DIR --force",
        ), None
    return Check("model", True, f"{model_dir} loads"), model_dir


def _load(model_dir: Path) -> None:
    # what vLLM reads first: the config, the tokenizer, and the weights' header
    from safetensors import safe_open
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with safe_open(str(model_dir / "model.safetensors"), "pt") as weights:
        rows, width = weights.get_slice("transformer.wte.weight").get_shape()
    assert (rows, width) == (config.vocab_size, config.n_embd), "weights don't match config.json"
    assert len(tokenizer) <= config.vocab_size, "tokenizer has more tokens than the model"


def check_parity(model_dir: Path) -> Check:
    """The converter's verification against the checkpoint, as recorded in nanoserve.json."""
    record = model_dir / "nanoserve.json"
    fix = "re-run nanoserve convert (verification on) and serve its output"
    if not record.is_file():
        return Check("parity", False, f"no {record.name}: not made by nanoserve convert", fix)
    verification = json.loads(record.read_text()).get("verification")
    if verification is None:
        return Check("parity", False, "converted with --no-verify: parity unknown", fix)
    diff = f"max |diff| {verification['max_abs_diff']:.1e} (bound {verification['bound']:.0e})"
    if not verification["passed"]:
        return Check("parity", False, f"verification failed, {diff}", fix)
    return Check("parity", True, f"matches the checkpoint, {diff}")


def check_engine(s: Settings, model_dir: Path | None) -> Iterator[Check]:
    """vLLM's platform, then whether it can run this model (head size on CPU, quantization)."""
    try:
        from nanoserve.server.engine import vllm_adapter
    except ImportError as e:
        yield Check(
            "vllm",
            False,
            f"vLLM does not import ({e})",
            "scripts/setup.sh (CPU) or scripts/setup.sh gpu",
        )
        return
    yield Check("vllm", True, vllm_adapter.platform_summary())
    if model_dir is None:
        return
    try:
        vllm_adapter.check_servable(model_dir)
    except vllm_adapter.UnservableModel as e:
        detail, _, fix = str(e).partition("; ")
        yield Check("head size", False, detail, fix)
        return
    cfg = json.loads((model_dir / "config.json").read_text())
    yield Check("head size", True, f"{cfg['n_embd'] // cfg['n_head']} is supported here")
    yield check_quantization(s, model_dir, vllm_adapter)


def check_quantization(s: Settings, model_dir: Path, vllm_adapter) -> Check:
    """--quantization and --dtype against the model and this device, as serve checks them."""
    try:
        vllm_adapter.check_quantization(model_dir, s)
    except vllm_adapter.UnservableModel as e:
        detail, _, fix = str(e).partition("; ")
        return Check("quantization", False, detail, fix)
    method = s.quantization or vllm_adapter.checkpoint_method(model_dir)
    return Check("quantization", True, f"{method} runs here" if method else "none")


def run_checks(s: Settings, emit: Callable[[Check], None]) -> bool:
    """Run every check in order (cheap ones first), emitting each as it ends; True if all pass."""
    checks = [check_keys(s), check_port(s), check_redis(s), check_cpu()]
    for c in checks:
        emit(c)
    model, model_dir = check_model(s)
    emit(model)
    checks.append(model)
    if model_dir is not None:
        checks.append(check_parity(model_dir))
        emit(checks[-1])
    for c in check_engine(s, model_dir):
        emit(c)
        checks.append(c)
    return all(c.ok for c in checks)


def main(argv: list[str]) -> int:
    parser = build_parser("nanoserve doctor")
    parser.description = (
        "Check that `nanoserve serve` with these flags, NANOSERVE_* environment and --config "
        "can work on this machine: one line per check, with the fix. Exit code 1 on a failure."
    )
    parser.epilog = "example:\n  nanoserve doctor out/ckpt.pt --api-key-file keys.txt"
    ns = parser.parse_args(argv)
    try:
        settings = Settings(**{k: v for k, v in vars(ns).items() if v is not None})
    except (ValidationError, ValueError) as e:
        print(f"FAIL  settings: {e}", file=sys.stdout)
        return 1
    ok = run_checks(settings, lambda c: print(c.line(), flush=True))
    return 0 if ok else 1
