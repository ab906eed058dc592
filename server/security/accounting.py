"""Per-caller usage: requests, prompt and completion tokens, rejections by reason.

Exported on /metrics with the caller id as a label — bounded: the first `usage_max_callers`
distinct ids get their own label, later ones count as `other` — and returned as JSON by
GET /v1/usage (admin scope). Counts are this replica's since it started; sum over replicas in
Prometheus for the fleet.
"""

from collections import defaultdict

from nanoserve.server.observability.metrics import Metrics

OTHER = "other"


class Accounting:
    """Requests, tokens and rejections per caller id, with a bounded set of metric labels."""

    def __init__(self, metrics: Metrics, max_callers: int):
        self.max_callers = max_callers
        self._labels: set[str] = set()
        self.table: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.requests = metrics.caller_requests
        self.prompt_tokens = metrics.caller_prompt_tokens
        self.completion_tokens = metrics.caller_completion_tokens
        self.rejections = metrics.caller_rejections

    def label(self, caller_id: str) -> str:
        if caller_id in self._labels:
            return caller_id
        if len(self._labels) < self.max_callers:
            self._labels.add(caller_id)
            return caller_id
        return OTHER

    def admitted(self, caller_id: str) -> None:
        label = self.label(caller_id)
        self.requests.labels(label).inc()
        self.table[label]["requests"] += 1

    def tokens(self, caller_id: str, prompt: int, completion: int) -> None:
        label = self.label(caller_id)
        self.prompt_tokens.labels(label).inc(prompt)
        self.completion_tokens.labels(label).inc(completion)
        self.table[label]["prompt_tokens"] += prompt
        self.table[label]["completion_tokens"] += completion

    def rejected(self, caller_id: str, reason: str) -> None:
        label = self.label(caller_id)
        self.rejections.labels(label, reason).inc()
        self.table[label][f"rejected_{reason}"] += 1

    def report(self) -> dict:
        return {
            "object": "usage",
            "data": [{"caller": cid, **dict(counts)} for cid, counts in sorted(self.table.items())],
        }
