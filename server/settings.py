"""The one Settings object: CLI flags > NANOSERVE_* environment > TOML file (--config) > defaults.

Engine fields keep vLLM's own names, so `--max-model-len`, `--max-num-seqs`, `--enforce-eager`...
read the same as with `vllm serve`. docs/SETTINGS.md's table is generated from the field
descriptions below (scripts/settings_table.py), so a description is documentation.
"""

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

import jwt
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

LogFormat = Literal["json", "text"]
HMAC_KEY_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
SAGEMAKER_PORT = 8080
Dtype = Literal["auto", "float32", "float16", "bfloat16"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NANOSERVE_", extra="forbid")

    # --- what to serve
    model: str | None = Field(
        None,
        description="Converted model directory, or a nanoGPT ckpt.pt (or its directory), "
        "converted once into the cache (run from your nanoGPT checkout, as for sample.py). "
        "Unset: the bundled Shakespeare demo model.",
    )
    meta: Path | None = Field(
        None,
        description="With a ckpt.pt MODEL: its character vocabulary (nanoGPT's meta.pkl). Default: "
        "meta.pkl next to the checkpoint, else data/<dataset>/meta.pkl under the current "
        "directory (as nanoGPT's sample.py looks), else GPT-2's BPE.",
    )
    tokenizer: Path | None = Field(
        None,
        description="With a ckpt.pt MODEL: a Hugging Face tokenizer directory to use instead.",
    )
    served_model_name: str | None = Field(
        None, description="Name clients pass as `model`. Default: the model directory's name."
    )
    model_aliases: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="More names the model answers to (repeat --model-alias; "
        "NANOSERVE_MODEL_ALIASES is comma-separated). Responses carry the served name, so with "
        "a versioned name (`--served-model-name shakespeare-v2 --model-alias shakespeare`) "
        "clients of the alias see which version answered and clients pinning a version are "
        "never switched silently (see Rolling updates in docs/DEPLOY.md).",
    )
    cache_dir: Path = Field(
        Path("~/.cache/nanoserve").expanduser(),
        description="Where checkpoints given as MODEL are converted to (keyed by sha256).",
    )
    watch: bool = Field(
        False,
        description="Follow a nanoGPT checkpoint MODEL as training rewrites it: each complete "
        "new version is converted, checked against nanoGPT's forward pass and swapped in "
        "without failing a request; one that fails leaves the current version serving.",
    )
    watch_settle: float = Field(
        2.0,
        gt=0,
        description="Seconds a watched checkpoint's size and modification time must stay the "
        "same before it is taken as completely written.",
    )
    keep_versions: int = Field(
        3,
        ge=1,
        description="Versions of a watched model kept converted in --cache-dir (the current "
        "one included); older ones are deleted.",
    )
    config_file: Path | None = Field(
        None, description="TOML file with any of these settings (CLI: --config)."
    )
    chat_template: Path | None = Field(
        None,
        description="Jinja chat template for /v1/chat/completions (Hugging Face's format: a "
        ".jinja file, or a tokenizer_config.json with a `chat_template`). Default: a plain "
        "transcript, `role: content` lines, then `assistant:`.",
    )

    # --- HTTP
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on.")
    keep_alive_timeout: int = Field(
        75,
        ge=1,
        description="Seconds an idle keep-alive connection stays open. Keep it above your load "
        "balancer's idle timeout (60 s on most), or it will reuse connections we already closed.",
    )
    sse_ping_interval: float = Field(
        15.0,
        ge=0,
        description="Seconds without a token after which a stream gets an SSE comment "
        "(`: ping`), so proxies with an idle timeout keep it open; 0 = never. `vllm bench "
        "serve` (0.32) loses a stream whose ping arrives in a read of its own: benchmark "
        "slow first tokens with 0.",
    )
    graceful_shutdown_timeout: int = Field(
        30, ge=0, description="Seconds in-flight requests get to finish after SIGTERM."
    )
    sagemaker: bool = Field(
        False,
        description="SageMaker container mode: GET /ping and POST /invocations answer without "
        "credentials (SageMaker authenticates callers at its endpoint), on port 8080 unless "
        "--port is given. Every other route keeps its authentication.",
    )
    no_playground: bool = Field(
        False,
        description="Do not serve the browser playground at GET /playground (a static page, "
        "open without a key; every API call it makes needs the same credentials as any client).",
    )
    log_level: str = Field("info", description="Log level (debug, info, warning, error).")
    log_format: LogFormat = Field("json", description="`json` (one object a line) or `text`.")
    log_text_chars: int = Field(
        0,
        ge=0,
        le=10_000,
        description="Put up to this many characters of each request's (first) prompt and "
        "completion on its access line; 0 (the default) logs no text. Risk: the logs then hold "
        "what users wrote and read, possibly personal or secret data; keep them accordingly.",
    )
    ttft_alert_seconds: float = Field(
        2.0,
        gt=0,
        description="The p95 time to first token (as clients see it) above which the Prometheus "
        "rule NanoserveSlowFirstToken fires; exported as nanoserve_ttft_alert_threshold_seconds.",
    )

    # --- authentication (deny by default)
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="API keys (repeat --api-key; NANOSERVE_API_KEYS is comma-separated). Each "
        "gets the id `key-<first 8 hex of its sha256>` in logs and metrics.",
    )
    api_key_file: Path | None = Field(
        None,
        description="Key file: one `ID KEY-or-sha256:HEX [rpm=N] [tpm=N] [concurrency=N] [admin] "
        "[metrics]` per line, # comments. Reloaded on SIGHUP.",
    )
    jwt_secret: SecretStr | None = Field(None, description="HS256 secret for JWT bearer tokens.")
    jwt_public_key_file: Path | None = Field(
        None, description="PEM public key for RS256/ES256 JWT bearer tokens."
    )
    jwt_algorithms: Annotated[list[str], NoDecode] | None = Field(
        None,
        description="Accepted JWT algorithms (comma-separated). Default: HS256 with a secret, "
        "RS256,ES256 with a public key. Never taken from the token.",
    )
    jwt_audience: str | None = Field(None, description="Required JWT `aud`, if set.")
    jwt_issuer: str | None = Field(None, description="Required JWT `iss`, if set.")
    jwt_leeway: int = Field(30, ge=0, le=300, description="Clock skew allowed on exp/nbf (s).")
    no_auth: bool = Field(
        False, description="Serve without credentials (loud warning; loopback only)."
    )
    allow_public_no_auth: bool = Field(
        False,
        description="With --no-auth or --sagemaker, also allow a non-loopback --host. Think twice.",
    )
    metrics_open: bool = Field(
        False,
        description="Serve /metrics without credentials. Otherwise it needs a key with the "
        "`metrics` or `admin` scope (its per-caller series name every tenant).",
    )
    max_auth_failures: int = Field(
        30,
        ge=1,
        description="Failed authentications per minute from one client address (an IPv6 "
        "client's /64) before its further failed attempts get 429 for the rest of the minute. "
        "Valid credentials are never refused by it.",
    )
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Proxies (addresses or CIDRs, comma-separated) whose X-Forwarded-For names "
        "the client: the rightmost address in it that is not one of them is the client's. "
        "Default: none, every client is its TCP peer. Set it to exactly your proxy's address "
        "or network, and have the proxy replace the header (nginx: `X-Forwarded-For "
        "$remote_addr`), or clients can claim any address.",
    )

    # --- per-caller limits (defaults; a key-file line or JWT claim overrides them)
    rpm: int | None = Field(None, ge=1, description="Requests per minute per caller.")
    tpm: int | None = Field(
        None,
        ge=1,
        description="Tokens per minute per caller: prompt + max_tokens*n reserved at admission, "
        "corrected to the real count at the end.",
    )
    concurrency: int | None = Field(None, ge=1, description="Requests in flight per caller.")
    ratelimit_window: int = Field(
        60,
        ge=1,
        le=3600,
        description="Length of the rate-limit window in seconds: rpm and tpm are counted per "
        "window (per minute by default).",
    )
    ratelimit_storage: str = Field(
        "memory://",
        description="Where limits are counted: memory:// (this process) or redis://HOST:PORT "
        "(shared by every replica).",
    )
    ratelimit_fail_open: bool = Field(
        False,
        description="If the limit storage is unreachable: admit (true) or answer 503 (false).",
    )
    usage_max_callers: int = Field(
        1000, ge=1, description="Distinct caller labels in metrics; the rest count as `other`."
    )

    # --- request limits: each caps something that multiplies work (uncapped `n`, empty prompts,
    # and oversized bodies were each a published vLLM denial-of-service: CVE-2026-34756,
    # CVE-2024-8768, CVE-2025-48956)
    max_n: int = Field(16, ge=1, le=128, description="Largest `n` (and `best_of`) accepted.")
    max_logprobs: int = Field(
        5, ge=0, le=20, description="Largest `logprobs` accepted (OpenAI's cap is 5; up to 20)."
    )
    max_prompts: int = Field(64, ge=1, description="Most prompts in one request's `prompt` list.")
    crop_max_tokens: int = Field(
        1024,
        ge=1,
        description="Most tokens /generate (and crop_context) may ask for: past the context "
        "window each token costs a full-window engine step.",
    )
    max_request_bytes: int = Field(
        1_000_000, ge=1024, description="Largest request body in bytes (413 above)."
    )
    max_header_bytes: int = Field(
        32_768,
        ge=1024,
        description="Largest request head (request line and headers) in bytes; 431 and a close "
        "above, before authentication.",
    )
    max_header_count: int = Field(
        100, ge=8, description="Most request header lines; 431 above, before authentication."
    )
    header_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a client has to send a complete request head after connecting (or, "
        "on a kept-alive connection, after its first byte); 408 and a close after.",
    )
    body_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds a client has to send the rest of a request body after its head; "
        "408 and a close after (the request's deadline starts only once the body is in).",
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="Open client connections at most; a connection over it gets 503 and a "
        "close at once. Keep it below the process's open-file limit (`ulimit -n`).",
    )

    # --- admission and deadlines: a replica says "full, try another" (503) at once rather than
    # letting a queue grow that no client will wait out
    max_queued_requests: int = Field(
        512,
        ge=1,
        description="Requests admitted but still waiting for their first token, at most; above, "
        "an immediate 503 `server_overloaded` with Retry-After (a load balancer tries another "
        "replica).",
    )
    max_queued_tokens: int = Field(
        262_144,
        ge=1,
        description="Prompt tokens of the requests waiting for their first token, at most; "
        "above, the same 503. A lone request is always admitted, however long its prompt.",
    )
    request_timeout: float = Field(
        600.0,
        gt=0,
        description="Deadline of a request in seconds from arrival; a client may ask for less "
        "with the header X-Request-Timeout. No first token by then: 503 `queue_timeout`. "
        "Still generating: the text so far, with finish_reason `timeout`.",
    )

    # --- engine (vLLM's names)
    dtype: Dtype = Field(
        "auto", description="Compute dtype; auto = the dtype the model was converted to."
    )
    max_model_len: int | None = Field(
        None, ge=1, description="Context length. Default: the model's block size."
    )
    max_num_seqs: int | None = Field(
        None, ge=1, description="Most sequences batched at once. Default: vLLM's."
    )
    max_num_batched_tokens: int | None = Field(
        None, ge=1, description="Most tokens per engine step. Default: vLLM's."
    )
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="GPU only: share of GPU memory vLLM may use."
    )
    cpu_kvcache_space: float = Field(
        2.0,
        gt=0,
        description="CPU only: KV-cache size in GiB. (vLLM's own default reserves 90 percent of "
        "RAM and refuses to start when other processes hold memory.)",
    )
    enforce_eager: bool = Field(False, description="Disable CUDA graphs / compilation.")
    quantization: str | None = Field(
        None,
        description="vLLM quantization method applied while loading (vLLM's names), checked "
        "before the engine starts. GPU: fp8 (or fp8_per_tensor, fp8_per_channel, "
        "fp8_per_block) with --dtype bfloat16 or float16. CPU: none of vLLM's applies to a "
        "GPT-2 model; serve a checkpoint from `nanoserve convert --quantize int8` instead (its "
        "config.json names the method: no flag needed). See docs/QUANTIZATION.md's table.",
    )
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs to shard the model over.")
    seed: int = Field(0, description="Engine random seed.")

    @field_validator(
        "api_keys", "jwt_algorithms", "model_aliases", "forwarded_allow_ips", mode="before"
    )
    @classmethod
    def _comma_separated(cls, v):
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            return [part.strip() for x in v for part in x.split(",") if part.strip()]
        return v

    @field_validator("jwt_algorithms", mode="after")
    @classmethod
    def _known_algorithms(cls, v: list[str] | None) -> list[str] | None:
        # PyJWT's names are case-sensitive ("HS256", "EdDSA"): spell them its way once, here,
        # so the start-up checks and every later decode agree
        if v is None:
            return v
        known = {name.lower(): name for name in jwt.algorithms.get_default_algorithms()}
        unknown = [a for a in v if a.lower() not in known or a.lower() == "none"]
        if unknown:
            raise ValueError(f"unknown JWT algorithm(s) {', '.join(unknown)}")
        return [known[a.lower()] for a in v]

    @field_validator("forwarded_allow_ips", mode="after")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        # checked here, not left to uvicorn, which takes a typo for a host name and trusts
        # nothing without saying so; "*" would let every client write its own address
        for entry in v:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or CIDR network (name the proxies "
                    "exactly: '*' or a host name would let clients choose their address)"
                ) from None
        return v

    @model_validator(mode="after")
    def _auth_is_coherent(self) -> "Settings":
        if self.jwt_secret and self.jwt_public_key_file:
            raise ValueError("give jwt_secret or jwt_public_key_file, not both")
        algs = self.jwt_algorithms or []
        if self.jwt_secret:
            # RFC 7518 3.2: an HMAC key at least as long as the hash (32 bytes for HS256)
            need = max([HMAC_KEY_BYTES.get(a, 32) for a in algs] or [32])
            if len(self.jwt_secret.get_secret_value().encode()) < need:
                raise ValueError(
                    f"jwt_secret is too short: HMAC keys need at least {need} bytes "
                    '(RFC 7518); make one with: python -c "import secrets; '
                    'print(secrets.token_urlsafe(48))"'
                )
        if self.jwt_secret and any(not a.startswith("HS") for a in algs):
            raise ValueError("with jwt_secret, jwt_algorithms must be HS256/HS384/HS512")
        if self.jwt_public_key_file and any(a.startswith("HS") or a == "none" for a in algs):
            # an HS algorithm with a public key lets anyone sign with the (public) key
            raise ValueError("with jwt_public_key_file, jwt_algorithms must be RS*/ES*/PS*")
        return self

    @model_validator(mode="after")
    def _sagemaker_port(self) -> "Settings":
        # SageMaker sends /ping and /invocations to port 8080 of the container
        if self.sagemaker and "port" not in self.model_fields_set:
            self.port = SAGEMAKER_PORT
        return self

    @property
    def auth_configured(self) -> bool:
        return bool(
            self.api_keys or self.api_key_file or self.jwt_secret or self.jwt_public_key_file
        )

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, v: str) -> str:
        if v.lower() not in ("debug", "info", "warning", "error", "critical"):
            raise ValueError("log_level must be debug, info, warning, error or critical")
        return v.lower()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file is named by the CLI (init kwargs) or the environment, and sits below both.
        sources = [init_settings, env_settings]
        config = init_settings.init_kwargs.get("config_file") or env_settings().get("config_file")
        if config:
            path = Path(config)
            if not path.is_file():
                raise ValueError(f"config file not found: {path}")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)
