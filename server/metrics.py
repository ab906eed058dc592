"""nanoserve's own Prometheus metrics, next to vLLM's `vllm:*` families in the same registry.

vLLM registers its metrics in prometheus_client's default registry, so serving that registry
exposes both. Tests pass a fresh `CollectorRegistry` and read samples back.
"""

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

_BY_REGISTRY: dict[int, "Metrics"] = {}


class Metrics:
    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.requests = Counter(
            "nanoserve_requests",
            "HTTP requests answered, by route and status code.",
            ["route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "nanoserve_request_duration_seconds",
            "Time to the last byte of the response.",
            ["route"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.in_flight = Gauge(
            "nanoserve_requests_in_flight", "Requests being answered now.", registry=registry
        )
        self.prompt_tokens = Counter(
            "nanoserve_prompt_tokens",
            "Prompt tokens of admitted requests, counted when each ends.",
            registry=registry,
        )
        self.completion_tokens = Counter(
            "nanoserve_completion_tokens",
            "Tokens generated, counted when each request ends (an aborted stream included).",
            registry=registry,
        )
        self.engine_unfinished = Gauge(
            "nanoserve_engine_requests_unfinished",
            "Requests inside the engine (running or waiting), read live from the engine.",
            registry=registry,
        )
        self.limiter_errors = Counter(
            "nanoserve_ratelimit_storage_errors",
            "Times the rate-limit storage (Redis) could not be reached.",
            registry=registry,
        )
        # per caller (labels bounded by usage.py)
        self.caller_requests = Counter(
            "nanoserve_caller_requests",
            "Requests admitted, per caller.",
            ["caller"],
            registry=registry,
        )
        self.caller_prompt_tokens = Counter(
            "nanoserve_caller_prompt_tokens",
            "Prompt tokens processed, per caller.",
            ["caller"],
            registry=registry,
        )
        self.caller_completion_tokens = Counter(
            "nanoserve_caller_completion_tokens",
            "Tokens generated, per caller.",
            ["caller"],
            registry=registry,
        )
        self.caller_rejections = Counter(
            "nanoserve_caller_rejections",
            "Requests refused, per caller and reason.",
            ["caller", "reason"],
            registry=registry,
        )
        self.engine_up = Gauge(
            "nanoserve_engine_up", "1 while the engine is loaded and alive.", registry=registry
        )

    @classmethod
    def for_registry(cls, registry: CollectorRegistry | None = None) -> "Metrics":
        """One Metrics per registry: a process may build several apps (tests), names stay unique."""
        registry = registry or REGISTRY
        if id(registry) not in _BY_REGISTRY:
            _BY_REGISTRY[id(registry)] = cls(registry)
        return _BY_REGISTRY[id(registry)]
