"""The access record: one log line and one count in the metrics per HTTP request.

RequestContext (middleware.py) opens an `Exchange` when a request arrives and hands it down
with the request id. Whoever decides how the request ends closes it, exactly once:
- the guard, for a request it refuses before admission (401, 403, 429, 503);
- the completion service, when it settles an admitted job (tokens, time to first token,
  finish reasons, a client that left);
- RequestContext itself, for everything else (probes, /v1/models, errors raised before a job
  existed), with the status it saw going out.
The line and the metrics share their names (route, status, reason), so one request can be
followed from its access line to the series it was counted in.
"""

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from nanoserve.server.errors import rejection_reason
from nanoserve.server.observability.metrics import Metrics
from starlette.routing import Match

log = logging.getLogger("nanoserve.access")


def route_of(scope: dict) -> str:
    """The route template (`/v1/models/{model_id:path}`), not the raw path: a client can't grow
    the metrics' cardinality by inventing paths. A request the guard refused never reached the
    router, so the app's routes are matched here."""
    route = scope.get("route")
    if route is None and "app" in scope:
        route = next(
            (r for r in scope["app"].router.routes if r.matches(scope)[0] is Match.FULL), None
        )
    return getattr(route, "path", "unmatched")


@dataclass
class Outcome:
    """What an admitted completion adds to its access line (completions.Job.outcome())."""

    prompt_tokens: int
    completion_tokens: int
    first_token_at: float | None  # perf_counter when the first token went to the HTTP layer
    gaps: list[tuple[float, int]]  # streams: (seconds per token, tokens) between deliveries
    finish_reasons: list[str]  # one per choice
    disconnected: bool
    prompt_text: str | None = None  # only with --log-text-chars
    completion_text: str | None = None
    model_version: str | None = None  # the weights that answered (models/version.py)


@dataclass
class Exchange:
    """One HTTP request, from arrival to its access line."""

    request_id: str
    scope: dict
    metrics: Metrics
    client: str  # the resolved address (middleware.client_address)
    started: float = field(default_factory=time.perf_counter)
    caller: str | None = None  # set by the guard once the credentials are known
    closed: bool = False

    def close(self, status: int, reason: str | None = None, outcome: Outcome | None = None):
        """Count and log this request once; later calls do nothing. `reason`: why it was refused
        or not completed (metrics.REJECTION_REASONS); by default derived from `status`."""
        if self.closed:
            return
        self.closed = True
        seconds = time.perf_counter() - self.started
        route = route_of(self.scope)
        m = self.metrics
        m.requests.labels(route, str(status)).inc()
        m.latency.labels(route).observe(seconds)
        if reason is None and status >= 400:
            reason = rejection_reason(status)
        if reason is not None:
            m.rejections.labels(reason).inc()
        fields = {
            "request_id": self.request_id,
            "caller": self.caller,
            "client": self.client,
            "method": self.scope["method"],
            "path": self.scope["path"],
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 1),
            "reason": reason,
        }
        if outcome is not None:
            fields |= self._completion(route, outcome)
        log.info("%s %s %s", self.scope["method"], self.scope["path"], status, extra=fields)

    def _completion(self, route: str, o: Outcome) -> dict:
        """Observe a settled completion's metrics; its fields for the access line."""
        m = self.metrics
        ttft = None
        if o.first_token_at is not None:
            ttft = o.first_token_at - self.started
            m.ttft.labels(route).observe(ttft)
        observe_gap = m.itl.labels(route).observe  # once: a stream has a gap per token
        for gap, tokens in o.gaps:
            for _ in range(tokens):
                observe_gap(gap)
        counts = Counter(o.finish_reasons)
        for reason, n in counts.items():
            m.finish_reasons.labels(route, reason).inc(n)
        fields = {
            "prompt_tokens": o.prompt_tokens,
            "completion_tokens": o.completion_tokens,
            "ttft_ms": round(ttft * 1000, 1) if ttft is not None else None,
            "finish_reason": _summary(counts),
            "disconnected": o.disconnected,
            "model_version": o.model_version,
        }
        if o.prompt_text is not None:
            fields |= {"prompt_text": o.prompt_text, "completion_text": o.completion_text}
        return fields


def _summary(counts: Counter) -> str | None:
    """One reason when every choice agrees ("length"), else each with its count
    ("length:3,stop:1")."""
    if len(counts) <= 1:
        return next(iter(counts), None)
    return ",".join(f"{r}:{n}" for r, n in sorted(counts.items()))
