"""Retries with backoff, and a circuit breaker per upstream model.

A call is retried only while nothing has reached the client: for a stream, until the
upstream's headers arrive. Retryable: 429, 500, 502, 503, 504, 529 and transport
failures. The wait honours the upstream's ``retry-after`` / ``retry-after-ms`` in full
when it fits ``max_backoff``; a longer one is not retried early but relayed at once.
Otherwise the wait grows exponentially with full jitter; attempts and the total time
spent retrying are bounded.

The breaker of a (route, model) counts *requests* that failed after their retries: a
5xx, a 529, a transport failure or an answer that is not the API. 4xx, 429 and a
caller's cancel are no failure. At ``failure_threshold`` consecutive failures it
opens; then, for ``cooldown`` seconds, a call that has somewhere better to go (a
fallback model, the verifier after a draft) is refused at once, while a call with no
alternative is still sent, so the caller gets the upstream's own answer. After the
cooldown one call probes (half-open): success closes the breaker, failure opens it
again, and a probe that ends any other way (cancelled, a bug) frees the slot.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from ..route_config import BreakerSettings, RetrySettings

__all__ = ["RetrySettings", "BreakerSettings", "CircuitBreaker", "RETRYABLE_STATUSES", "retry_delay"]

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504, 529})


def retry_delay(attempt: int, settings: RetrySettings, headers: dict[str, str], rng: random.Random) -> float | None:
    """Seconds to wait before retry number ``attempt`` (1 = the first retry).

    None when the upstream asks for a longer wait than ``max_backoff``: retrying sooner
    would only be refused again, so its answer (and ``retry-after``) goes to the caller.
    """
    hinted = _retry_after(headers)
    if hinted is not None:
        return hinted if hinted <= settings.max_backoff else None
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
    """Closed → open (after consecutive failed requests) → half-open (one probe) → closed or open."""

    settings: BreakerSettings
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False
    #: what the last failed request got (``529``, ``timeout``…), for refusals and /health
    last_failure: str = ""

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if time.monotonic() - self.opened_at >= self.settings.cooldown:
            return "half_open"
        return "open"

    @property
    def idle(self) -> bool:
        """Closed with nothing counted: no need to keep it."""
        return self.opened_at is None and self.failures == 0 and not self.probing

    def allow(self) -> bool:
        """May a refusable call go out now? In half-open state only one probe at a time."""
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

    def failure(self, what: str) -> None:
        self.failures += 1
        self.last_failure = what
        if self.probing or self.opened_at is not None or self.failures >= self.settings.failure_threshold:
            self.opened_at = time.monotonic()
        self.probing = False

    def release(self) -> None:
        """A call ended with no verdict on the upstream (cancelled, a bug): a probe's slot is free again."""
        self.probing = False

    def refusal(self) -> str:
        """Why calls are refused now, for the error message."""
        return (f"failed {self.failures} requests in a row (last: {self.last_failure}); "
                f"not trying it for another {self.retry_in():.0f}s")

    def snapshot(self) -> dict:
        return {"state": self.state, "consecutive_failures": self.failures, "retry_in_seconds": round(self.retry_in(), 1),
                "last_failure": self.last_failure}
