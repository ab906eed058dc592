"""Who is calling and what they may use: the identity every limit and usage count hangs on."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Limits:
    """Per-caller limits; None means no limit of that kind."""

    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens per minute (prompt + completion)
    concurrency: int | None = None  # requests in flight

    def over(self, defaults: "Limits") -> "Limits":
        """These limits, falling back to `defaults` where unset."""
        return Limits(
            rpm=self.rpm if self.rpm is not None else defaults.rpm,
            tpm=self.tpm if self.tpm is not None else defaults.tpm,
            concurrency=self.concurrency if self.concurrency is not None else defaults.concurrency,
        )


@dataclass(frozen=True)
class Caller:
    id: str  # key id or JWT subject: safe to log, never the secret itself
    limits: Limits = field(default_factory=Limits)
    admin: bool = False  # /v1/usage, and /metrics
    metrics: bool = False  # /metrics only: for scrapers (the metrics name every caller)
    kind: str = "key"  # "key" | "jwt" | "anonymous"

    @property
    def reads_metrics(self) -> bool:
        return self.admin or self.metrics


ANONYMOUS = Caller(id="anonymous", kind="anonymous", metrics=True)  # --no-auth: all open
