"""The sampled scan for integers beyond 64 bits finds a run of 20 digits exactly where a full scan does."""

from __future__ import annotations

import random

import pytest

from cascadeflow.gateway import bounds
from cascadeflow.gateway.bounds import _has_wide_run

DIGITS = b"0123456789"


def full_scan(raw: bytes) -> bool:
    return any(len(run) >= 20 for run in bytes(c if c in DIGITS else 32 for c in raw).split())


def bodies(seed: int, count: int):
    """Bodies of every digit density (base64-like ones hit the fallback), many with a run of 18–22 digits."""
    rng = random.Random(seed)
    for _ in range(count):
        density = rng.random()
        body = bytes(rng.choice(DIGITS) if rng.random() < density else rng.choice(b'ab,:" {}') for _ in range(rng.randint(0, 300)))
        if rng.random() < 0.4:
            at = rng.randint(0, len(body))
            body = body[:at] + bytes(rng.choice(DIGITS) for _ in range(rng.randint(18, 22))) + body[at:]
        yield body


@pytest.mark.parametrize("candidates", [32, 1, 0])  # 0 and 1: the whole-body fallback at once, or after one place
def test_the_sampled_scan_agrees_with_a_full_scan(monkeypatch, candidates):
    monkeypatch.setattr(bounds, "_CANDIDATES", candidates)
    found = 0
    for body in bodies(candidates, 4000):
        assert _has_wide_run(body) == full_scan(body), body
        found += full_scan(body)
    assert 500 < found < 3500  # both answers were exercised


@pytest.mark.parametrize("at", [0, 1, 9, 10, 11, 19, 20, 99, 1000])
def test_a_run_anywhere_is_found_and_nineteen_digits_are_not(at):
    pad = b'{"a":"' + b"x" * at
    assert _has_wide_run(pad + b"1" * 20 + b'"}')
    assert not _has_wide_run(pad + b"1" * 19 + b'"}' + b"2" * 19)
