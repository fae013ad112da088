"""Retries with backoff, and a circuit breaker per upstream.

A call is retried only while nothing has reached the client: for a stream, until the
upstream's headers arrive. Retryable: 429, 500, 502, 503, 504, 529 and transport
failures. The wait honours the upstream's ``retry-after`` / ``retry-after-ms`` (capped by
``max_backoff``), else grows exponentially with full jitter; attempts and the total time
spent retrying are bounded.

The breaker counts consecutive failures per route. At ``failure_threshold`` it opens:
calls fail at once (``ProxyTransportError``, 503) for ``cooldown`` seconds, then one
probe is let through (half-open); its success closes the breaker, its failure opens it
again.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["RetrySettings", "BreakerSettings", "CircuitBreaker", "RETRYABLE_STATUSES", "retry_delay"]

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504, 529})


class RetrySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(default=3, ge=1, le=20, description="tries in all, the first included")
    backoff: float = Field(default=0.5, ge=0, description="first wait in seconds; doubles per retry")
    max_backoff: float = Field(default=8.0, ge=0, description="cap on one wait (retry-after included)")
    max_total: float = Field(default=30.0, ge=0, description="cap on the time spent waiting to retry")


class BreakerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    failure_threshold: int = Field(default=5, ge=1, description="consecutive failures that open the breaker")
    cooldown: float = Field(default=30.0, gt=0, description="seconds open before one probe is allowed")


def retry_delay(attempt: int, settings: RetrySettings, headers: dict[str, str], rng: random.Random) -> float:
    """Seconds to wait before retry number ``attempt`` (1 = the first retry)."""
    hinted = _retry_after(headers)
    if hinted is not None:
        return min(hinted, settings.max_backoff)
    ceiling = min(settings.backoff * 2 ** (attempt - 1), settings.max_backoff)
    return rng.uniform(0, ceiling)  # full jitter: retries of many clients spread out


def _retry_after(headers: dict[str, str]) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(float(value) * scale, 0.0)
        except ValueError:
            continue  # an HTTP date: not worth parsing for a short wait
    return None


@dataclass(slots=True)
class CircuitBreaker:
    """Closed → open (after consecutive failures) → half-open (one probe) → closed or open."""

    settings: BreakerSettings
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if time.monotonic() - self.opened_at >= self.settings.cooldown:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """May a call go out now? In half-open state only one probe at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self.probing:
            self.probing = True
            return True
        return False

    def retry_in(self) -> float:
        """Seconds until a probe will be allowed (0 when closed)."""
        if self.opened_at is None:
            return 0.0
        return max(self.settings.cooldown - (time.monotonic() - self.opened_at), 0.0)

    def success(self) -> None:
        self.failures, self.opened_at, self.probing = 0, None, False

    def failure(self) -> None:
        self.failures += 1
        if self.probing or self.failures >= self.settings.failure_threshold:
            self.opened_at = time.monotonic()
        self.probing = False

    def snapshot(self) -> dict:
        return {"state": self.state, "consecutive_failures": self.failures, "retry_in_seconds": round(self.retry_in(), 1)}
