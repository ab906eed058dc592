"""`nanoserve serve [MODEL] [--flags]` (also `python -m nanoserve.server`).

Flags are generated from the Settings fields (`max_model_len` -> `--max-model-len`), so every
setting has exactly one spelling per source and the CLI can't drift from the docs.
"""

import argparse
import ipaddress
import logging
import signal
import sys
import types
import typing
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import uvicorn
from nanoserve.server.engine.interface import Engine, StartupError
from nanoserve.server.settings import Settings
from pydantic import ValidationError

from nanoserve import __version__

if TYPE_CHECKING:  # the serving modules load only when serving (--help stays quick)
    from nanoserve.server.models.live import Source

log = logging.getLogger("nanoserve.cli")

POSITIONAL = {"model"}
ALIASES = {"config_file": "--config", "api_keys": "--api-key", "model_aliases": "--model-alias"}


def _flag_kwargs(annotation) -> dict:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in args if a is not type(None))
        args = typing.get_args(annotation)
    if annotation is bool:
        return {"action": "store_const", "const": True}
    if typing.get_origin(annotation) is Literal:
        return {"choices": list(args)}
    if typing.get_origin(annotation) is list:
        return {"action": "append"}
    return {}


def flag_of(name: str) -> str:
    """The command-line spelling of a Settings field (`max_model_len` -> `--max-model-len`)."""
    return "MODEL" if name in POSITIONAL else ALIASES.get(name, "--" + name.replace("_", "-"))


def env_of(name: str) -> str:
    """The environment variable of a Settings field (`max_model_len` -> NANOSERVE_MAX_MODEL_LEN)."""
    return Settings.model_config["env_prefix"] + name.upper()


# --help's sections, in the order a new user needs them; every setting is in exactly one
# (tests/test_cli.py checks that)
GROUPS = {
    "model": (
        "model",
        "meta",
        "tokenizer",
        "served_model_name",
        "model_aliases",
        "cache_dir",
        "watch",
        "watch_settle",
        "keep_versions",
        "chat_template",
        "config_file",
    ),
    "API": ("host", "port", "keep_alive_timeout", "sse_ping_interval", "no_playground"),
    "security": (
        "api_keys",
        "api_key_file",
        "jwt_secret",
        "jwt_public_key_file",
        "jwt_algorithms",
        "jwt_audience",
        "jwt_issuer",
        "jwt_leeway",
        "no_auth",
        "allow_public_no_auth",
        "metrics_open",
        "max_auth_failures",
        "forwarded_allow_ips",
    ),
    "limits (per caller, per request, per connection)": (
        "rpm",
        "tpm",
        "concurrency",
        "ratelimit_window",
        "ratelimit_storage",
        "ratelimit_fail_open",
        "usage_max_callers",
        "max_n",
        "max_logprobs",
        "max_prompts",
        "crop_max_tokens",
        "max_request_bytes",
        "max_header_bytes",
        "max_header_count",
        "header_timeout",
        "body_timeout",
        "max_connections",
        "max_queued_requests",
        "max_queued_tokens",
        "request_timeout",
    ),
    "engine (vLLM's names)": (
        "dtype",
        "max_model_len",
        "max_num_seqs",
        "max_num_batched_tokens",
        "gpu_memory_utilization",
        "cpu_kvcache_space",
        "enforce_eager",
        "quantization",
        "tensor_parallel_size",
        "seed",
    ),
    "observability": ("log_level", "log_format", "log_text_chars", "ttft_alert_seconds"),
    "deployment": ("graceful_shutdown_timeout", "sagemaker"),
}

EXAMPLES = """\
examples:
  nanoserve serve --no-auth                              the bundled demo, on 127.0.0.1:8000
  nanoserve serve out/ckpt.pt --api-key-file keys.txt    your nanoGPT run (from its checkout)
  nanoserve serve out/ --watch --no-auth                 ... following it while it trains
  NANOSERVE_PORT=9000 nanoserve serve ./converted --config configs/cpu-demo.toml

Precedence: flags > NANOSERVE_* environment > --config TOML > defaults."""


def _default(name: str) -> str:
    value = Settings.model_fields[name].get_default(call_default_factory=True)
    if value is False:
        return "off"
    return "unset" if value is None or value == [] else str(value)


def _help(name: str) -> str:
    """A setting's description, then its default (unless the description says it) and its
    environment variable."""
    text = Settings.model_fields[name].description or ""
    env = env_of(name)
    tail = env if "Default:" in text else f"default: {_default(name)}; {env}"
    # argparse %-formats help strings ("%(default)s"): a literal % must be doubled
    return f"{text} [{tail}]".replace("%", "%%")


def build_parser(prog: str = "nanoserve serve") -> argparse.ArgumentParser:
    """The `serve` command line, one flag per Settings field, in GROUPS' sections."""
    p = argparse.ArgumentParser(
        prog=prog,
        usage=f"{prog} [MODEL] [options]",
        description="Serve a nanoGPT model with vLLM behind an OpenAI-compatible API.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the examples keep their lines
    )
    p.add_argument("--version", action="version", version=f"nanoserve {__version__}")
    for title, names in GROUPS.items():
        group = p.add_argument_group(title)
        for name in names:
            _add(group, name)
    return p


def _add(group, name: str) -> None:
    if name in POSITIONAL:
        group.add_argument(name, nargs="?", default=None, metavar="MODEL", help=_help(name))
        return
    kwargs = _flag_kwargs(Settings.model_fields[name].annotation)
    if name in ALIASES:  # `--model-alias MODEL_ALIAS`, not argparse's MODEL_ALIASES (the dest)
        kwargs["metavar"] = ALIASES[name][2:].upper().replace("-", "_")
    group.add_argument(flag_of(name), dest=name, default=None, help=_help(name), **kwargs)


def load_settings(argv: list[str]) -> Settings:
    ns = build_parser().parse_args(argv)
    given = {k: v for k, v in vars(ns).items() if v is not None}
    return Settings(**given)


class _Server(uvicorn.Server):
    """uvicorn, plus: SIGTERM flips /ready to 503 at once (draining), and requests still open
    near the graceful-shutdown timeout end by their deadline rather than being cut."""

    runtime = None

    def handle_exit(self, sig, frame) -> None:
        if self.runtime is not None:
            self.runtime.drain(self.config.timeout_graceful_shutdown or 0)
        super().handle_exit(sig, frame)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_problem(s: Settings) -> str | None:
    """Why these settings must not serve, or None."""
    if s.sagemaker and not _is_loopback(s.host) and not s.allow_public_no_auth:
        return (
            f"refusing --sagemaker on {s.host}: /ping and /invocations answer without "
            "credentials there, so only SageMaker (which authenticates callers at its endpoint) "
            "may reach that address. Add --allow-public-no-auth to confirm, or bind 127.0.0.1"
        )
    if s.no_auth:
        if not _is_loopback(s.host) and not s.allow_public_no_auth:
            return (
                f"refusing to serve without authentication on {s.host}: that address is "
                "reachable from other machines. Configure --api-key/--api-key-file/--jwt-*, "
                "bind 127.0.0.1, or add --allow-public-no-auth if you really mean it"
            )
        return None
    if not s.auth_configured:
        return (
            "no credentials configured: give --api-key KEY, --api-key-file PATH, "
            "--jwt-secret or --jwt-public-key-file (or --no-auth for a local experiment)"
        )
    return None


def serve(settings: Settings) -> int:
    """Resolve MODEL, then run the server on vLLM. Returns the process exit code."""
    from nanoserve.server.engine.model_source import (
        ModelResolutionError,
        checkpoint_of,
        in_subprocess,
        resolve,
    )
    from nanoserve.server.models.converter import WarmConverter
    from nanoserve.server.models.live import Source
    from nanoserve.server.observability import logs

    logs.configure(settings)
    if problem := auth_problem(settings):
        log.error("%s", problem)
        return 2
    checkpoint = checkpoint_of(settings.model)
    if settings.watch and checkpoint is None:
        log.error(
            "--watch follows a nanoGPT checkpoint (a ckpt.pt, or the out/ directory holding "
            "it); %s is a converted directory: serve the checkpoint itself",
            settings.model,
        )
        return 2
    try:
        model_dir, default_name = resolve(
            settings.model, settings.cache_dir, settings.meta, settings.tokenizer
        )
    except ModelResolutionError as e:
        log.error("%s", e)
        return 2
    name = settings.served_model_name or default_name
    # imports vLLM (~15 s): only once there is something to serve
    from nanoserve.server.engine.cpu import cpu_flags
    from nanoserve.server.engine.vllm_adapter import (
        UnservableModel,
        VLLMEngine,
        check_quantization,
        check_servable,
        slow_dtype_warning,
    )

    try:  # before a 30 s engine start that would end in a stack trace
        check_servable(model_dir)
        check_quantization(model_dir, settings)
    except UnservableModel as e:
        log.error("%s", e)
        return 2
    if slow := slow_dtype_warning(model_dir, settings, cpu_flags()):
        log.warning("%s", slow)

    def start(directory: Path) -> Awaitable[Engine]:
        return VLLMEngine.start(directory, name, settings)

    converter = WarmConverter() if settings.watch else None

    def resolve_again() -> Path:
        directory, _ = resolve(
            settings.model,
            settings.cache_dir,
            settings.meta,
            settings.tokenizer,
            converter or in_subprocess,
        )
        check_servable(directory)
        check_quantization(directory, settings)
        return directory

    cache = settings.cache_dir.expanduser().resolve()
    source = Source(
        first=lambda: start(model_dir),
        directory=model_dir,
        resolve=resolve_again,
        start=start,
        checkpoint=checkpoint if settings.watch else None,
        owns=lambda path: path.resolve().parent == cache,  # a conversion of ours
        warm=converter.warm if converter else None,
        close=converter.close if converter else None,
    )
    log.info("loading model %s from %s", name, model_dir)
    return run(settings, source)


def run(settings: Settings, load_engine: "Source | Callable[[], Awaitable[Engine]]") -> int:
    """Serve until SIGTERM/SIGINT or until the engine can't go on (returns 1).

    On SIGTERM, uvicorn closes the listener at once (a load balancer's next connection fails
    and goes to another replica), answers 503 + Retry-After to requests that still arrive on
    open connections, lets in-flight requests finish (up to graceful_shutdown_timeout), and we
    return 0: a drain is the normal end of a replica, not a failure."""
    from nanoserve.server.app import create_app
    from nanoserve.server.security.keyfile import KeyFileError
    from nanoserve.server.transport.connection import bounded_protocol

    if problem := auth_problem(settings):  # (again: run() has callers besides serve())
        log.error("%s", problem)
        return 2
    if settings.no_auth:
        log.warning(
            "AUTHENTICATION IS DISABLED (--no-auth): anyone who can reach %s:%d can use "
            "this server",
            settings.host,
            settings.port,
        )
    exit_code = 0

    def on_fatal(code: int) -> None:
        nonlocal exit_code
        exit_code = code
        server.should_exit = True

    try:
        app = create_app(settings, load_engine, on_fatal=on_fatal)
    except (KeyFileError, OSError, StartupError) as e:  # a bad key file, JWT key or chat
        # template: say so in one line, no trace
        log.error("%s", e)
        return 2
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_keep_alive=settings.keep_alive_timeout,
        timeout_graceful_shutdown=settings.graceful_shutdown_timeout,
        # uvicorn's httptools protocol with bounds on heads, bodies, pipelining and connections:
        # unbounded, a client could hold the server before authentication (http.py)
        http=bounded_protocol(
            settings.max_header_bytes,
            settings.header_timeout,
            settings.body_timeout,
            settings.max_connections,
        ),
        # uvicorn trusts X-Forwarded-For from 127.0.0.1 unless told otherwise: any local
        # process could then claim any address. Only the proxies named are trusted.
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=",".join(settings.forwarded_allow_ips),
    )
    server = _Server(config)
    server.runtime = app.state.runtime
    log.info("listening on http://%s:%d", settings.host, settings.port)
    # After its graceful shutdown uvicorn re-raises the signal to the handler that was in place
    # before it started: a do-nothing one turns "killed by SIGTERM" (exit 143, which Kubernetes
    # and compose report as an error) into a return from run() with our own exit code.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return exit_code


def settings_errors(e: ValidationError) -> str:
    """One line per problem, naming the setting and never its value: pydantic's own message
    repeats the input, and a model-level check's input is every setting, secrets included."""
    lines = []
    for err in e.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv)
    except ValidationError as e:
        print(f"nanoserve serve: invalid settings:\n{settings_errors(e)}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"nanoserve serve: {e}", file=sys.stderr)
        return 2
    return serve(settings)
