"""The false-equation signal of the learned scorer (cascade.arithmetic): which equations it judges, and its cost."""

from __future__ import annotations

import time

import pytest

from cascadeflow.cascade.arithmetic import false_equations


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("He runs 3 x 60 = <<3*60=180>>180 meters.", (1, 0)),  # GSM8K's calculator annotation
        ("So 180 x 3 = 541 meters a week.", (1, 1)),
        ("(2 + 3) * 4 = 21", (1, 1)),
        ("1,000 + 200 = 1,200 and $15 / 3 = $5", (2, 0)),
        ("10/3 = 3.33", (1, 0)),  # rounded to the decimals it states: not an error
        ("10/3 = 3.4", (1, 1)),
        ("5 - 7 = -2", (1, 0)),
        ("3 \\times 4 = 13", (1, 1)),  # LaTeX
        ("Cost: 17 / (1/4) = 17 * 4 = 68", (1, 0)),  # a chain is judged at its last "=", never misread
        ("Cost: 17 / (1/4) = 17 * 4 = 69", (1, 1)),
        ("1 * 30 = 10x, so x = 3", (0, 0)),  # algebra: the right side is not a number
        ("2x + 3 = 9", (0, 0)),  # a variable glued to the left side
        ("half of it, a / 2 + 3 = 9", (0, 0)),  # the tail of a longer expression
        ("2 * 3 = 6.5%", (0, 0)),
        ("No arithmetic here.", (0, 0)),
    ],
)
def test_only_whole_equations_are_judged(answer, expected):
    assert false_equations(answer) == expected


def test_the_cost_is_bounded_on_adversarial_answers():
    worst = 0.0
    for answer in ("=" + "1" * 16_000, ("1" * 100 + "=") * 160, "1+1=2 " * 2_600, "1+" * 8_000 + "=1", "=" * 16_000):
        start = time.perf_counter()
        false_equations(answer[:16_000])
        worst = max(worst, time.perf_counter() - start)
    assert worst < 0.05  # catastrophic backtracking took seconds; about 1 ms each on one core today
