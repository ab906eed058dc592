"""nanoserve's own Prometheus metrics, all declared here, next to vLLM's `vllm:*` families.

vLLM registers its metrics in prometheus_client's default registry, so serving that registry
exposes both. Tests pass a fresh `CollectorRegistry` and read samples back.

Times are measured as the client sees them: from the moment the request reached this process
(before authentication, limits and the engine's queue) to the moment a byte left it. vLLM's own
`vllm:time_to_first_token_seconds` starts when the engine got the request, so it can't show
time lost in front of the engine.
"""

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Info

_BY_REGISTRY: dict[int, "Metrics"] = {}

# LLM-sized: a cached short reply is milliseconds, a long generation behind a queue is minutes
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600,
)  # fmt: skip
# between two tokens: a batch step, from ~1 ms (tiny model) to seconds (a saturated CPU)
TOKEN_GAP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# `reason` of nanoserve_rejections_total: why a request got no (complete) answer
REJECTION_REASONS = (
    "auth",  # 401 missing/wrong credentials, 403 wrong scope, 429 after repeated failures
    "rate_limit_rpm",  # 429: the caller's requests per window
    "rate_limit_tpm",  # 429: the caller's tokens per window
    "rate_limit_concurrency",  # 429: the caller's requests in flight
    "limiter_unavailable",  # 503: the limit storage (Redis) is unreachable
    "overload",  # 503: this replica is loading, draining or its engine is gone
    "queue_full",  # 503: the backlog (max_queued_requests/tokens) is full
    "queue_timeout",  # 503: the request's deadline passed before the engine started it
    "invalid_request",  # 4xx: the request itself (the message names the parameter)
    "context_too_long",  # 400 context_length_exceeded
    "client_disconnect",  # the client left before the answer was complete
    "engine_error",  # the engine failed or died under an admitted request
    "internal_error",  # 500: a bug in the server (logged with its stack trace)
)
# `reason` of nanoserve_finish_reasons_total, one per choice: the engine's `length` and
# `stop`, `timeout` (its deadline passed: the text so far), `error` (the engine failed) and
# `abort` (the client left)
FINISH_REASONS = ("length", "stop", "timeout", "error", "abort")


class Metrics:
    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        r = registry
        # --- every request (counted once, when its access line is written: access.py)
        self.requests = Counter(
            "nanoserve_requests", "HTTP requests answered, by route and status code.",
            ["route", "status"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "nanoserve_request_duration_seconds",
            "From arrival to the last byte of the response, by route.",
            ["route"], registry=r, buckets=LATENCY_BUCKETS,
        )  # fmt: skip
        self.rejections = Counter(
            "nanoserve_rejections",
            "Requests refused or not completed, by reason (see REJECTION_REASONS).",
            ["reason"], registry=r,
        )  # fmt: skip
        self.in_flight = Gauge(
            "nanoserve_requests_in_flight", "Requests being answered now.", registry=r
        )
        # --- completions (counted when the completion service settles a job)
        self.ttft = Histogram(
            "nanoserve_time_to_first_token_seconds",
            "From arrival (before authentication, limits and the engine queue) to the first "
            "generated token handed to the HTTP layer, by route.",
            ["route"], registry=r, buckets=LATENCY_BUCKETS,
        )  # fmt: skip
        self.itl = Histogram(
            "nanoserve_inter_token_latency_seconds",
            "Streams only: time between tokens as the client receives them, one observation "
            "per token after the first, by route.",
            ["route"], registry=r, buckets=TOKEN_GAP_BUCKETS,
        )  # fmt: skip
        self.finish_reasons = Counter(
            "nanoserve_finish_reasons",
            "Choices finished, by route and reason: length, stop, error, abort.",
            ["route", "reason"], registry=r,
        )  # fmt: skip
        self.prompt_tokens = Counter(
            "nanoserve_prompt_tokens",
            "Prompt tokens of admitted requests, counted when each ends.",
            registry=r,
        )
        self.completion_tokens = Counter(
            "nanoserve_completion_tokens",
            "Tokens generated, counted when each request ends (an aborted stream included).",
            registry=r,
        )
        # --- the replica
        self.engine_unfinished = Gauge(
            "nanoserve_engine_requests_unfinished",
            "Requests inside the engine (running or waiting), read live from the engine.",
            registry=r,
        )
        self.engine_up = Gauge(
            "nanoserve_engine_up", "1 while the engine is loaded and alive.", registry=r
        )
        self.ready = Gauge(
            "nanoserve_ready",
            "1 while this replica takes requests (what /ready answers 200 to): 0 while loading, "
            "draining or dead.",
            registry=r,
        )
        self.build = Info(
            "nanoserve_build",
            "Versions, model and engine shape of this replica (value 1, facts in labels).",
            registry=r,
        )
        # --- models and their versions (models/live.py); join on {model, version}
        self.model_info = Gauge(
            "nanoserve_model_info",
            "1 for the version of each model being served (`version` is the answers' "
            "system_fingerprint and x-model-version).",
            ["model", "version"], registry=r,
        )  # fmt: skip
        self.reloads = Counter(
            "nanoserve_model_reloads",
            "Reloads of a model, by outcome: in_place (weights swapped in the running engine), "
            "new_engine (another architecture), unchanged, failed (the old version served on).",
            ["model", "outcome"], registry=r,
        )  # fmt: skip
        self.ttft_alert = Gauge(
            "nanoserve_ttft_alert_threshold_seconds",
            "--ttft-alert-seconds: the p95 time to first token the alert rule fires above.",
            registry=r,
        )
        self.limiter_errors = Counter(
            "nanoserve_ratelimit_storage_errors",
            "Times the rate-limit storage (Redis) could not be reached.",
            registry=r,
        )
        # --- per caller (labels bounded by security/accounting.py: --usage-max-callers)
        self.caller_requests = Counter(
            "nanoserve_caller_requests", "Requests admitted, per caller.", ["caller"], registry=r
        )
        self.caller_prompt_tokens = Counter(
            "nanoserve_caller_prompt_tokens",
            "Prompt tokens processed, per caller.",
            ["caller"],
            registry=r,
        )
        self.caller_completion_tokens = Counter(
            "nanoserve_caller_completion_tokens",
            "Tokens generated, per caller.",
            ["caller"],
            registry=r,
        )
        self.caller_rejections = Counter(
            "nanoserve_caller_rejections",
            "Requests refused, per caller and reason.",
            ["caller", "reason"],
            registry=r,
        )

    @classmethod
    def for_registry(cls, registry: CollectorRegistry | None = None) -> "Metrics":
        """One Metrics per registry: a process may build several apps (tests), names stay unique."""
        registry = registry or REGISTRY
        if id(registry) not in _BY_REGISTRY:
            _BY_REGISTRY[id(registry)] = cls(registry)
        return _BY_REGISTRY[id(registry)]
