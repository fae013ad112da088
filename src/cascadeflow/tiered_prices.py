"""A model's tiered prices in closed form, checked against genai-prices before use.

Some models' rates change with the prompt's size, as a cliff: past a tier's start every token of the
request pays that tier's rate (Anthropic's long-context prices, Gemini's and GPT-5.4's above 200k or
272k tokens). genai-prices prices them through its general unit machinery, about 200–280 µs a call on
this project's benchmark machine against ~2 µs for a flat price, and a request to such a model
(``claude-haiku-5-5``, the default draft for Claude Code's Opus; ``claude-sonnet-4-5``; ``gpt-5.4``)
is priced at least once. A request's usage needs four rates (plain input, output, cache write, cache
read) and the tier the prompt falls in, so :func:`compile_tiers` reads them once per model, then prices
probe usages in every tier both ways: a model whose prices do not fit this form (a price per request,
a rule genai-prices adds later) gets None, and stays priced by genai-prices.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from genai_prices import Usage as GenaiUsage

__all__ = ["TieredRates", "compile_tiers"]

#: the genai-prices keys of the four rates, in :class:`TieredRates`' order (:class:`.Usage`'s)
_KEYS = ("input_mtok", "output_mtok", "cache_write_mtok", "cache_read_mtok")
#: the largest relative difference from genai-prices' figure a probe may show (float against Decimal rounding)
_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class TieredRates:
    """USD per token of (plain input, output, cache write, cache read), per tier of the prompt's size."""

    #: each tier's start in prompt tokens, ascending: a prompt of more than ``starts[i]`` tokens pays ``rates[i + 1]``
    starts: tuple[int, ...]
    #: the base rates first, then each tier's
    rates: tuple[tuple[float, float, float, float], ...]

    def cost(self, plain: int, output: int, write: int, read: int) -> float:
        """USD for these token counts; the tier is the whole prompt's (``plain + write + read``)."""
        p, o, w, r = self.rates[bisect_left(self.starts, plain + write + read)]
        return plain * p + output * o + write * w + read * r

    def rates_at(self, prompt: int) -> tuple[float, float, float, float]:
        """The four rates a prompt of ``prompt`` tokens pays."""
        return self.rates[bisect_left(self.starts, prompt)]


def compile_tiers(prices: object) -> TieredRates | None:
    """``prices`` (a genai-prices ``ModelPrice``) as :class:`TieredRates`, or None where they do not fit it.

    A missing cache rate is the input rate, as for flat prices; the probes tell whether genai-prices
    agrees, tier by tier, and with every count on its own and together.
    """
    values: dict[str, Any] = {key: getattr(prices, key, None) for key in _KEYS}
    if values["input_mtok"] is None or values["output_mtok"] is None:
        return None
    try:
        starts = sorted({int(tier.start) for value in values.values() if _is_tiered(value) for tier in value.tiers})
        rates = []
        for region in range(len(starts) + 1):
            prompt = 0 if region == 0 else starts[region - 1] + 1  # every prompt in this region pays the same rates
            plain, output, write, read = (_rate(values[key], prompt) for key in _KEYS)
            rates.append((plain, output, plain if write is None else write, plain if read is None else read))
    except (TypeError, ValueError, ArithmeticError, AttributeError):  # data of a shape not known here
        return None
    compiled = TieredRates(tuple(starts), tuple(rates))  # type: ignore[arg-type]
    return compiled if _agrees(compiled, prices) else None


def _is_tiered(value: object) -> bool:
    return hasattr(value, "tiers") and hasattr(value, "base")


def _rate(value: object, prompt: int) -> float | None:
    """USD per token of a genai-prices price (per million tokens, flat or tiered) for a prompt of ``prompt`` tokens."""
    if value is None:
        return None
    if _is_tiered(value):
        applicable = value.base  # type: ignore[attr-defined]
        for tier in reversed(value.tiers):  # type: ignore[attr-defined]
            if prompt > tier.start:
                applicable = tier.price
                break
        value = applicable
    return float(Decimal(value) / 1_000_000)  # type: ignore[arg-type]


def _agrees(compiled: TieredRates, prices: object) -> bool:
    """Whether ``compiled`` prices probe usages as genai-prices does: nothing at all, then in every tier (at a
    start, which is below it, and one token past it) each count alone and all four together."""
    totals = sorted({1_000, *compiled.starts, *(start + 1 for start in compiled.starts)})
    probes = [(0, 0, 0, 0)]  # (plain, output, write, read), as Usage has them
    for total in totals:
        write, read = total // 5, total // 2
        probes += [(total, 0, 0, 0), (0, 0, total, 0), (0, 0, 0, total), (total - write - read, 997, write, read)]
    probes.append((0, 997, 0, 0))
    for plain, output, write, read in probes:
        usage = GenaiUsage(input_tokens=plain + read + write, output_tokens=output, cache_read_tokens=read,
                           cache_write_tokens=write)
        try:
            expected = float(prices.calc_price(usage)["total_price"])  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - genai-prices refusing a probe: this model is not of this form
            return False
        if abs(compiled.cost(plain, output, write, read) - expected) > _TOLERANCE * max(abs(expected), 1e-12):
            return False
    return True
