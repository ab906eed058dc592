"""The vLLM adapter: the one module in nanoserve that imports vllm.

It starts `AsyncLLM` the way `vllm serve` does (with `UsageContext.OPENAI_API_SERVER`, without
which vLLM picks different batching defaults), translates `engine.Sampling` to `SamplingParams`
and vLLM's `RequestOutput` back to `engine.Update`. vLLM's own OpenAI server modules are not
imported: they moved between 0.32 and 0.33, while `AsyncLLM` and `SamplingParams` did not.
"""

import asyncio
import inspect
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import vllm
from nanoserve.convert.tokenizer import load_char_vocab
from nanoserve.server.engine.cpu import BF16_SLOW, bfloat16_is_slow
from nanoserve.server.engine.interface import (
    ChoiceUpdate,
    EngineDead,
    EngineRejected,
    ModelInfo,
    Sampling,
    StartupError,
    TokenLogprob,
    Update,
)
from nanoserve.server.settings import Settings
from vllm import AsyncEngineArgs, SamplingParams
from vllm.exceptions import VLLMValidationError
from vllm.inputs import tokens_input
from vllm.platforms import current_platform
from vllm.sampling_params import RequestOutputKind
from vllm.usage.usage_lib import UsageContext
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.exceptions import EngineDeadError

log = logging.getLogger("nanoserve.engine")

# How long the engine core gets to exit after SIGTERM before vLLM kills it (and warns). It waits
# for its worker, then both tear down an interpreter holding torch and vLLM: 4.4-7.0 s on 2
# cores, more than vLLM's default of 5 s in 9 runs of 14. Kubernetes' grace period (60 s,
# deploy/k8s) covers the endpoints' 10 s, the 30 s drain, this, and the memory freed after it.
EXIT_SECONDS = 10.0


class UnservableModel(StartupError):
    """The model can't run on this backend; the message says why and what to do."""


def platform_summary() -> str:
    """Which vLLM build runs here and on what, e.g. "vLLM 0.32.0 on cpu"."""
    return f"vLLM {_version()} on {current_platform.device_type}"


def cpu_head_sizes() -> list[int]:
    """Head sizes (n_embd / n_head) vLLM's CPU attention has kernels for, asked of vLLM itself."""
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    return list(CPUAttentionBackend.get_supported_head_sizes())


def check_servable(model_dir: Path) -> None:
    """Raise UnservableModel if this platform can't run the model in `model_dir`."""
    if not current_platform.is_cpu():
        return
    # vLLM's CPU attention kills the engine core on other head sizes with a stack trace;
    # say it up front, in one line, before spending 30 s on a doomed start.
    cfg = json.loads((model_dir / "config.json").read_text())
    head = cfg["n_embd"] // cfg["n_head"]
    supported = cpu_head_sizes()
    if head not in supported:
        raise UnservableModel(
            f"head size {head} (n_embd {cfg['n_embd']} / n_head {cfg['n_head']}) is not supported "
            f"by vLLM's CPU attention (supported: {', '.join(map(str, supported))}); "
            "serve it on a GPU, or train with a supported head size"
        )


# Tested here on CPU (vLLM 0.32, x86-64 with AVX2): what serves a GPT-2 model correctly. vLLM's
# CPU platform declares no list of its own (`supported_quantization` is empty, meaning "not
# checked"), and its fp8 methods pass every check, then crash the worker in a kernel the CPU
# build lacks (`_C::static_scaled_fp8_quant`).
CPU_TESTED = ("compressed-tensors",)  # the int8 W8A8 checkpoint `convert --quantize int8` writes
INT8_ON_CPU = "convert with `nanoserve convert CKPT --out DIR --quantize int8` and serve DIR"


def checkpoint_method(model_dir: Path) -> str | None:
    """The quantization method a checkpoint was written with (its config.json says), or None."""
    cfg = json.loads((model_dir / "config.json").read_text())
    return (cfg.get("quantization_config") or {}).get("quant_method")


def _act_dtypes(method: str) -> list[str]:
    """The compute dtypes vLLM's config class for `method` accepts (it refuses others at start)."""
    from vllm.model_executor.layers.quantization import get_quantization_config

    cls = get_quantization_config(method)
    # a classmethod on most configs, a plain function taking `cls` on compressed-tensors'
    static = inspect.getattr_static(cls, "get_supported_act_dtypes")
    dtypes = cls.get_supported_act_dtypes() if isinstance(static, classmethod) else static(cls)
    return [str(d).removeprefix("torch.") for d in dtypes]


def _quantizes_linear(method: str) -> bool:
    """Whether vLLM's load-time quantization `method` touches Linear layers (GPT-2 has no other
    kind it quantizes: no mixture-of-experts)."""
    from vllm.config.quantization import resolve_quantization_config
    from vllm.model_executor.layers.linear import RowParallelLinear
    from vllm.model_executor.layers.quantization.online.base import OnlineQuantizationConfig

    args = resolve_quantization_config(method, None)
    if args is None:  # a name that is also a checkpoint format: resolved against the checkpoint
        return True
    config = OnlineQuantizationConfig(args)
    return (
        config.resolve_quant_method_cls(RowParallelLinear, "transformer.h.0.attn.c_proj")
        is not None
    )


def check_quantization(model_dir: Path, s: Settings) -> None:
    """Raise UnservableModel if --quantization/--dtype/this device can't serve `model_dir`.

    Each refusal is one line naming what works, said before a start that would end in vLLM's
    list of 30 names, a dtype error, or a worker's stack trace."""
    from vllm.config.quantization import ONLINE_QUANT_SHORTHAND_NAMES
    from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS

    stored, flag = checkpoint_method(model_dir), s.quantization
    method = flag or stored
    if method is None:
        return
    if method not in QUANTIZATION_METHODS:
        raise UnservableModel(
            f"--quantization {method} is not a vLLM method (vLLM {_version()}: "
            f"{', '.join(QUANTIZATION_METHODS)}); for INT8 on CPU, {INT8_ON_CPU}"
        )
    if stored and flag and stored != flag:
        raise UnservableModel(f"{model_dir} is quantized with {stored}: drop --quantization {flag}")
    # fp8 quantizes float weights at load time too; vLLM lists only its newer shorthands
    if not stored and method not in (*ONLINE_QUANT_SHORTHAND_NAMES, "fp8"):
        raise UnservableModel(
            f"--quantization {method} reads a checkpoint quantized for it, and {model_dir} has "
            f"no quantization_config; for INT8 on CPU, {INT8_ON_CPU}"
        )
    if not stored and not _quantizes_linear(method):
        raise UnservableModel(
            f"--quantization {method} quantizes only mixture-of-experts layers in vLLM "
            f"{_version()}, and a GPT-2 model has none (it would serve unquantized); "
            f"for INT8 on CPU, {INT8_ON_CPU}"
        )
    if current_platform.is_cpu() and method not in CPU_TESTED:
        fails = "does not run on CPU with vLLM {} (no CPU kernel: the worker crashes)"
        if "fp8" not in method:  # seen to crash: fp8; the others were not tried here
            fails = "is not tested on CPU with vLLM {}"
        raise UnservableModel(
            f"--quantization {method} {fails.format(_version())}; for INT8 on CPU, {INT8_ON_CPU}"
        )
    dtype, accepted = _model_dtype(model_dir, s.dtype), _act_dtypes(method)
    if dtype not in accepted:
        raise UnservableModel(
            f"{method} needs --dtype {' or '.join(d for d in accepted if d != 'float8_e4m3fn')}"
            f" (vLLM refuses {dtype} for it)"
        )


def slow_dtype_warning(model_dir: Path, s: Settings, cpu_flags: set[str]) -> str | None:
    """A warning when the compute dtype runs slower than float32 on this CPU, else None. The
    dtype still halves the weights' memory, so it is not refused."""
    if not current_platform.is_cpu() or not bfloat16_is_slow(cpu_flags):
        return None  # no flags: not Linux on x86, where nothing was measured
    if _model_dtype(model_dir, s.dtype) != "bfloat16":
        return None
    return f"{BF16_SLOW}. For speed, serve with --dtype float32"


def _inspect_models_in_process() -> None:
    """On CPU, let vLLM inspect the model class in this process rather than a fresh Python.

    Before its first start with a model class (its cache, VLLM_CACHE_ROOT/modelinfos, is empty:
    a new machine, a container whose cache volume starts empty), vLLM imports the class in a
    subprocess so that the API process never initializes CUDA; that Python imports torch and
    vLLM again, 16-22 s of a cold start on 2 cores (bench/startup.py). A CPU has no CUDA to
    keep out, so the inspection runs here; it returns the same record, cached the same way.
    The hook is private to vLLM (pinned at 0.32): if it is gone, vLLM's subprocess stays.
    """
    from vllm.model_executor.models import registry

    if callable(getattr(registry, "_run_in_subprocess", None)):
        registry._run_in_subprocess = lambda fn: fn()


def _version() -> str:
    return vllm.__version__


def _model_dtype(model_dir: Path, requested: str) -> str:
    # vLLM's "auto" downcasts float32 weights to bfloat16 on CPU, which breaks greedy parity with
    # the checkpoint; nanoserve's "auto" means the dtype the model was converted to.
    if requested != "auto":
        return requested
    cfg = json.loads((model_dir / "config.json").read_text())
    return cfg.get("dtype") or cfg.get("torch_dtype") or "auto"


def _window(model_dir: Path, s: Settings) -> int:
    """The context window clients get: --max-model-len, else the model's block size."""
    cfg = json.loads((model_dir / "config.json").read_text())
    positions = cfg.get("n_positions") or cfg["max_position_embeddings"]
    if s.max_model_len is not None and s.max_model_len > positions:
        # vLLM would refuse it, were it not for VLLM_ALLOW_LONG_MAX_MODEL_LEN (see start())
        raise UnservableModel(
            f"--max-model-len {s.max_model_len} is more than the model's block size {positions}"
        )
    return s.max_model_len or positions


def _engine_args(model_dir: Path, name: str, s: Settings) -> AsyncEngineArgs:
    on_cpu = current_platform.is_cpu()
    return AsyncEngineArgs(
        model=str(model_dir),
        served_model_name=[name],
        dtype=_model_dtype(model_dir, s.dtype),
        # One position more than the window: nanoGPT's cropping (window.py) asks for the token
        # after a full window, and vLLM refuses a prompt as long as its max_model_len. Position
        # `window` is never fed: every request is checked against the window (prepare.py) and a
        # full-window prompt gets max_tokens=1, whose token ends the request unfed.
        max_model_len=_window(model_dir, s) + 1,
        max_num_seqs=s.max_num_seqs,
        max_num_batched_tokens=s.max_num_batched_tokens,
        gpu_memory_utilization=s.gpu_memory_utilization,
        enforce_eager=s.enforce_eager,
        quantization=s.quantization,
        tensor_parallel_size=s.tensor_parallel_size,
        seed=s.seed,
        max_logprobs=s.max_logprobs,
        kv_cache_memory_bytes=int(s.cpu_kvcache_space * 2**30) if on_cpu else None,
        disable_log_stats=False,  # keeps vllm:* metrics flowing into the default registry
        use_tqdm_on_load=s.log_format == "text",  # a progress bar is no JSON log line
        worker_extension_cls=f"{__name__}.{WeightSwap.__qualname__}",
    )


class WeightSwap:
    """The worker's half of `VLLMEngine.swap_weights` (vLLM adds these methods to its worker
    class: `worker_extension_cls`).

    vLLM's in-place `reload_weights` reloads each layer whose weights are in the checkpoint and
    re-runs its post-load processing. A tied output layer (GPT-2's lm_head *is* the token
    embedding: the checkpoint has no lm_head.weight) is not in the checkpoint, so vLLM puts its
    old kernel tensors back ("ParallelLMHead: Failed to load weights"). Its parameter is shared,
    so it already holds the new values, but on CPU the matmul runs on a copy repacked for oneDNN
    at load time, which stays the old model's: the new model's body with the old one's output
    layer, garbage text. Re-running the post-load processing of every module that shares a
    parameter with another repacks it from the new values (on GPU that processing is a no-op,
    and the shared parameter is all there is)."""

    def nanoserve_swap_weights(self, model_dir: str) -> int:
        runner = self.model_runner  # type: ignore[attr-defined]  (the worker's own attribute)
        runner.reload_weights(weights_path=model_dir, is_checkpoint_format=True)
        tied = _modules_sharing_a_parameter(runner.get_model())
        for module in tied:
            module.quant_method.process_weights_after_loading(module)
        return len(tied)


def _modules_sharing_a_parameter(model) -> list:
    """Modules with a parameter that an earlier module owns too (tied weights), which have a
    quantization method whose post-load processing can be re-run."""
    owner: dict[int, str] = {}
    tied = []
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) not in owner:
            owner[id(param)] = name
            continue
        module = model.get_submodule(name.rpartition(".")[0])
        if getattr(module, "quant_method", None) is not None and module not in tied:
            tied.append(module)
    return tied


def _sampling_params(s: Sampling) -> SamplingParams:
    return SamplingParams(
        n=s.n,
        max_tokens=s.max_tokens,
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=s.top_k,
        min_p=s.min_p,
        presence_penalty=s.presence_penalty,
        frequency_penalty=s.frequency_penalty,
        repetition_penalty=s.repetition_penalty,
        seed=s.seed,
        stop=list(s.stop) or None,
        stop_token_ids=list(s.stop_token_ids) or None,
        ignore_eos=s.ignore_eos,
        min_tokens=s.min_tokens,
        logprobs=s.logprobs,
        prompt_logprobs=s.prompt_logprobs,
        logit_bias=s.logit_bias,
        # Deltas even for a non-streamed answer: the service counts tokens as they come, so a
        # request cancelled midway (its client left) is charged what was generated.
        output_kind=RequestOutputKind.DELTA,
    )


def _position(chosen: int, entries: dict | None) -> TokenLogprob | None:
    """vLLM's {token_id: Logprob} for one position -> the chosen token + its ranked alternatives."""
    if entries is None:
        return None
    top = {}
    for lp in sorted(entries.values(), key=lambda lp: lp.rank or 0):
        top.setdefault(lp.decoded_token or "", lp.logprob)
    pick = entries[chosen]
    return TokenLogprob(token=pick.decoded_token or "", logprob=pick.logprob, top=top)


def _choice(out) -> ChoiceUpdate:
    ids = list(out.token_ids)
    logprobs = None
    if out.logprobs is not None:
        logprobs = [_position(t, e) for t, e in zip(ids, out.logprobs, strict=True)]
    return ChoiceUpdate(out.index, out.text, ids, logprobs, out.finish_reason)


def _update(ro) -> Update:
    prompt_ids = list(ro.prompt_token_ids or [])
    prompt_lps = None
    # Streams carry the prompt's logprobs once, in the first delta; later deltas have none.
    if ro.prompt_logprobs and len(ro.prompt_logprobs) == len(prompt_ids):
        prompt_lps = [_position(t, e) for t, e in zip(prompt_ids, ro.prompt_logprobs, strict=True)]
    return Update(prompt_ids, [_choice(o) for o in ro.outputs], prompt_lps, ro.finished)


class VLLMEngine:
    """A started AsyncLLM plus what the server needs to know about its model."""

    def __init__(self, llm: AsyncLLM, info: ModelInfo):
        self.llm = llm
        self.info = info
        self.tokenizer = llm.get_tokenizer()

    @classmethod
    async def start(cls, model_dir: Path, name: str, settings: Settings) -> "VLLMEngine":
        os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
        # vLLM refuses a max_model_len above the model's positions without it (see _engine_args)
        os.environ["VLLM_ALLOW_LONG_MAX_MODEL_LEN"] = "1"
        if current_platform.is_cpu():
            # vLLM 0.32 on CPU saves an AOT-compiled model that it then fails to load on every
            # later start ("'function' object has no attribute 'finalize_loading'") and compiles
            # again; without AOT, inductor's own cache (TORCHINDUCTOR_CACHE_DIR) serves warm
            # starts: their compile took 5.9 s instead of 12-14 s (bench/startup.py).
            os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")
            _inspect_models_in_process()
        args = _engine_args(model_dir, name, settings)
        # Loading takes tens of seconds; a thread keeps /live and /ready answering meanwhile.
        llm = await asyncio.to_thread(
            AsyncLLM.from_engine_args, args, usage_context=UsageContext.OPENAI_API_SERVER
        )
        mc = llm.model_config
        info = ModelInfo(
            name=name,
            max_model_len=mc.max_model_len - 1,  # the window (see _engine_args)
            vocab_size=mc.get_vocab_size(),
            char_vocab=_char_vocab(model_dir),
            created=int(time.time()),
            dtype=str(mc.dtype).removeprefix("torch."),
            device=current_platform.device_type,
            engine_version=f"vllm {_version()}",
        )
        return cls(llm, info)

    @property
    def dead(self) -> bool:
        return self.llm.errored

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids)

    async def generate(
        self, prompt_token_ids: list[int], sampling: Sampling, request_id: str
    ) -> AsyncIterator[Update]:
        # The engine's own input type for token ids: a TokensPrompt is a "raw prompt" that vLLM
        # 0.32 renders again (a deprecated path, with a warning); the ids are checked either way
        prompt = tokens_input(prompt_token_ids)
        try:
            params = _sampling_params(sampling)
            async for ro in self.llm.generate(prompt, params, request_id):
                yield _update(ro)
        except EngineDeadError as e:
            raise EngineDead(str(e)) from e
        except VLLMValidationError as e:
            raise EngineRejected(str(e)) from e

    def check(self, sampling: Sampling) -> None:
        try:
            _sampling_params(sampling)
        except VLLMValidationError as e:
            raise EngineRejected(str(e)) from e

    async def swap_weights(self, model_dir: Path) -> None:
        """Load `model_dir`'s weights (same architecture) into the running engine, in place.
        The caller makes sure nothing is generating; the pause also empties the prefix cache,
        whose blocks hold the old weights' keys and values."""
        await self.llm.pause_generation(mode="wait", clear_cache=True)
        try:
            await self.llm.collective_rpc(
                "nanoserve_swap_weights", kwargs={"model_dir": str(model_dir)}
            )
        finally:
            await self.llm.resume_generation()

    async def check_health(self) -> None:
        try:
            await self.llm.check_health()
        except EngineDeadError as e:
            raise EngineDead(str(e)) from e

    def num_unfinished(self) -> int:
        return self.llm.get_num_unfinished_requests()

    def shutdown(self) -> None:
        self.llm.shutdown(timeout=EXIT_SECONDS)


def _char_vocab(model_dir: Path) -> frozenset[str] | None:
    """The characters a char-level model knows (from the converter's records), else None."""
    if not (model_dir / "nanoserve.json").is_file():  # a directory nanoserve did not convert
        return None
    vocab = load_char_vocab(model_dir)
    return frozenset(vocab) if vocab is not None else None
