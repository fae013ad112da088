"""The retry policy and the circuit breaker as pure functions of their inputs (the e2e tests drive them over HTTP)."""

from __future__ import annotations

import random
import time

from cascadeflow.proxy.resilience import BreakerSettings, CircuitBreaker, RetrySettings, retry_delay

SETTINGS = RetrySettings(attempts=3, backoff=0.5, max_backoff=8.0)


def test_retry_after_is_waited_in_full_or_not_at_all():
    rng = random.Random(1)
    assert retry_delay(1, SETTINGS, {"retry-after": "5"}, rng) == 5.0
    assert retry_delay(1, SETTINGS, {"retry-after-ms": "250"}, rng) == 0.25
    assert retry_delay(1, SETTINGS, {"retry-after": "20"}, rng) is None  # beyond max_backoff: relayed at once
    assert 0 <= retry_delay(2, SETTINGS, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, rng) <= 1.0


def test_the_breaker_opens_after_consecutive_failures_and_probes_once():
    breaker = CircuitBreaker(BreakerSettings(failure_threshold=2, cooldown=0.05))
    breaker.failure("529 from the upstream")
    assert breaker.state == "closed" and breaker.allow()
    breaker.failure("500 from the upstream")
    assert breaker.state == "open" and not breaker.allow()
    assert "2 requests in a row (last: 500 from the upstream)" in breaker.refusal()
    time.sleep(0.06)
    assert breaker.state == "half_open" and breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.failure("timeout")  # the probe failed: open again
    assert breaker.state == "open"
    time.sleep(0.06)
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.idle


def test_a_probe_without_a_verdict_frees_its_slot():
    breaker = CircuitBreaker(BreakerSettings(failure_threshold=1, cooldown=0.01))
    breaker.failure("unreachable")
    time.sleep(0.02)
    assert breaker.allow() and not breaker.allow()
    breaker.release()  # cancelled, or a bug: neither success nor failure
    assert breaker.state == "half_open" and breaker.allow()
