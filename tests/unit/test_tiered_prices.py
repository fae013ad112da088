"""Tiered prices in closed form (cascadeflow.tiered_prices): the same figures as genai-prices, for every
tiered model it knows, and genai-prices itself where a model's prices do not fit the form."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace

import pytest
from genai_prices import Usage as GenaiUsage
from genai_prices import data_snapshot
from genai_prices.types import ModelPrice as GenaiPrice
from genai_prices.types import Tier, TieredPrices

from cascadeflow import ModelRegistry, Usage
from cascadeflow.pricing import ModelInfo
from cascadeflow.tiered_prices import compile_tiers


def _tiered_models() -> list[tuple[str, str, GenaiPrice]]:
    found = []
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            prices = model.get_prices(datetime.now(UTC))
            if any(isinstance(value, TieredPrices) for value in vars(prices).values()):
                found.append((provider.id, model.id, prices))
    return found


def _usages(starts: tuple[int, ...], rng: random.Random) -> list[Usage]:
    """Usages whose prompts lie in every tier, at each start (the tier below) and one token past it."""
    prompts = [1, 5_000, *starts, *(s + 1 for s in starts), *(s + rng.randrange(2, 90_000) for s in starts)]
    usages = []
    for prompt in prompts:
        read = rng.randrange(0, prompt + 1)
        write = rng.randrange(0, prompt - read + 1)
        one_hour = rng.choice([0, write // 3, write])
        usages.append(Usage(prompt - read - write, rng.randrange(0, 30_000), write, read,
                            cache_write_1h_tokens=one_hour, web_searches=rng.choice([0, 0, 2])))
    return usages


def test_every_tiered_model_is_priced_in_closed_form_as_genai_prices_prices_it() -> None:
    models = _tiered_models()
    assert len(models) > 50  # the snapshot's tiered models (Anthropic's, Google's, OpenAI's long-context prices)
    rng = random.Random(7)
    compiled = 0
    for provider, model, prices in models:
        rates = compile_tiers(prices)
        if getattr(prices, "input_mtok", None) is None or getattr(prices, "output_mtok", None) is None:
            assert rates is None, model  # not a price a request's usage can be given
            continue
        assert rates is not None, f"{provider}/{model} did not compile"
        compiled += 1
        fast = ModelInfo(id=model, provider=provider, tiered=prices, rates=rates)
        slow = dataclasses.replace(fast, rates=None)  # genai-prices on every call, as before
        for usage in _usages(rates.starts, rng):
            expected = slow.cost(usage)
            assert expected is not None
            assert fast.cost(usage) == pytest.approx(expected, rel=1e-12, abs=1e-15), (model, usage)
    assert compiled > 50


def test_the_default_drafts_of_claude_code_take_the_closed_form() -> None:
    registry = ModelRegistry()
    for model in ("claude-haiku-5-5", "claude-sonnet-4-5", "gpt-5.4"):
        info = registry.info(model)
        assert info is not None and info.tiered is not None and info.rates is not None, model


def test_a_prompt_past_a_tiers_start_pays_its_rate_on_every_token() -> None:
    prices = GenaiPrice(input_mtok=TieredPrices(Decimal("1"), [Tier(1_000, Decimal("2"))]),
                        output_mtok=TieredPrices(Decimal("5"), [Tier(1_000, Decimal("7.5"))]),
                        cache_read_mtok=Decimal("0.1"))
    rates = compile_tiers(prices)
    assert rates is not None
    assert rates.cost(1_000, 100, 0, 0) == pytest.approx((1_000 * 1 + 100 * 5) / 1e6)  # at the start: the base
    assert rates.cost(1_001, 100, 0, 0) == pytest.approx((1_001 * 2 + 100 * 7.5) / 1e6)  # past it: all tokens
    assert rates.cost(1, 0, 0, 1_000) == pytest.approx((1 * 2 + 1_000 * 0.1) / 1e6)  # cache reads count to the size
    # no cache write price: writes pay the input rate of their tier, as genai-prices has it
    assert rates.cost(0, 0, 2_000, 0) == pytest.approx(2_000 * 2 / 1e6)


def test_prices_of_another_form_stay_with_genai_prices() -> None:
    per_request = GenaiPrice(input_mtok=TieredPrices(Decimal("1"), [Tier(1_000, Decimal("2"))]),
                             output_mtok=Decimal("5"), requests_kcount=Decimal("3"))
    assert compile_tiers(per_request) is None  # a price per request: the probes see it, the form has no place for it
    info = ModelInfo(id="m", provider="p", tiered=per_request, rates=compile_tiers(per_request))
    expected = float(per_request.calc_price(GenaiUsage(input_tokens=10, output_tokens=0))["total_price"])
    assert expected > 10 / 1e6 and info.cost(Usage(10, 0)) == pytest.approx(expected)
    assert compile_tiers(GenaiPrice(input_mtok=TieredPrices(Decimal("1"), [Tier(5, Decimal("2"))]))) is None


def test_price_data_of_an_unknown_shape_is_left_to_genai_prices() -> None:
    class Odd:  # a tier whose start is not a number: not this form, and never an error on a request
        base, tiers = Decimal("1"), [SimpleNamespace(start=None, price=Decimal("2"))]

    assert compile_tiers(SimpleNamespace(input_mtok=Odd(), output_mtok=Decimal("5"))) is None
    assert compile_tiers(SimpleNamespace(input_mtok="free", output_mtok=Decimal("5"))) is None
