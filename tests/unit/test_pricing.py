import logging

import pytest

from cascadeflow import ModelRegistry, Usage
from cascadeflow.pricing import ModelPrice


def test_known_models_have_provider_and_price():
    registry = ModelRegistry()
    assert registry.provider_for("claude-sonnet-5-5") == "anthropic"
    assert registry.provider_for("gpt-5.4-mini") == "openai"
    # dated snapshot names resolve to their family
    assert registry.provider_for("claude-3-5-haiku-20241022") == "anthropic"


def test_cost_matches_genai_prices_including_cache_tokens():
    from genai_prices import Usage as GUsage
    from genai_prices import calc_price

    registry = ModelRegistry()
    usage = Usage(input_tokens=1200, output_tokens=340, cache_write_tokens=500, cache_read_tokens=7000)
    expected = calc_price(
        # genai-prices counts cached tokens inside input_tokens
        GUsage(input_tokens=1200 + 500 + 7000, output_tokens=340, cache_write_tokens=500, cache_read_tokens=7000),
        model_ref="claude-opus-5-5",
        provider_id="anthropic",
    ).total_price
    assert registry.cost("claude-opus-5-5", usage) == pytest.approx(float(expected), rel=1e-9)
    # cache reads are cheaper than fresh input: the same tokens uncached cost more
    uncached = Usage(input_tokens=1200 + 500 + 7000, output_tokens=340)
    assert registry.cost("claude-opus-5-5", uncached) > registry.cost("claude-opus-5-5", usage)


def test_unknown_model_is_unknown_with_one_warning(caplog):
    registry = ModelRegistry()
    with caplog.at_level(logging.WARNING, logger="cascadeflow.pricing"):
        assert registry.cost("no-such-model-xyz", Usage(10, 10)) is None
        assert registry.cost("no-such-model-xyz", Usage(10, 10)) is None
    assert len([r for r in caplog.records if "no-such-model-xyz" in r.getMessage()]) == 1
    assert registry.provider_for("no-such-model-xyz") is None


def test_register_custom_model_and_glob():
    registry = ModelRegistry()
    registry.register("my-llama", provider="openai", input_per_mtok=1.0, output_per_mtok=2.0)
    assert registry.cost("my-llama", Usage(1_000_000, 500_000)) == pytest.approx(2.0)
    registry.register("local-*", provider="openai", cost_per_1k_tokens=0.001)
    assert registry.provider_for("local-qwen") == "openai"
    assert registry.cost("local-qwen", Usage(1000, 1000)) == pytest.approx(0.002)


def test_register_overrides_a_known_price_but_keeps_provider():
    registry = ModelRegistry()
    registry.register("gpt-4o", input_per_mtok=0.0, output_per_mtok=0.0)
    assert registry.cost("gpt-4o", Usage(1000, 1000)) == 0.0
    assert registry.provider_for("gpt-4o") == "openai"


def test_model_price_cache_defaults_to_input_price():
    price = ModelPrice(input_per_mtok=3.0, output_per_mtok=15.0)
    assert price.cost(Usage(0, 0, cache_write_tokens=1_000_000, cache_read_tokens=1_000_000)) == pytest.approx(6.0)


def test_tiered_prices_follow_genai_prices():
    """claude-haiku-5-5's input price steps up past 100k prompt tokens; the registry must agree."""
    from genai_prices import Usage as GUsage
    from genai_prices import calc_price

    registry = ModelRegistry()
    for prompt in (50_000, 150_000):
        expected = calc_price(GUsage(input_tokens=prompt, output_tokens=1000), model_ref="claude-haiku-5-5", provider_id="anthropic")
        assert registry.cost("claude-haiku-5-5", Usage(prompt, 1000)) == pytest.approx(float(expected.total_price), rel=1e-9)
    small = registry.cost("claude-haiku-5-5", Usage(50_000, 0)) / 50_000
    large = registry.cost("claude-haiku-5-5", Usage(150_000, 0)) / 150_000
    assert large > small


def test_reasoning_models_by_name_and_overridden_by_models_entries():
    """OpenAI's reasoning models refuse logprobs and sampling settings: known by name, overridable per model."""
    from cascadeflow import ProxyConfig
    from cascadeflow.dialects.openai import fit_for_reasoning

    registry = ModelRegistry()
    assert [registry.is_reasoning(m) for m in ("gpt-5.4-mini", "gpt-5.5", "o3", "o4-mini", "gpt-4o", "claude-haiku-5-5")] \
        == [True, True, True, True, False, False]
    entries = ProxyConfig.from_dict({"models": {"gpt-5-lookalike": {"reasoning": False},
                                                "my-thinker": {"provider": "openai", "reasoning": True}}}).models
    for name, entry in entries.items():
        registry.register(name, **entry.model_dump())
    assert not registry.is_reasoning("gpt-5-lookalike") and registry.is_reasoning("my-thinker")
    body = {"model": "o3", "messages": [], "logprobs": True, "top_logprobs": 5, "temperature": 0.7, "top_p": 1,
            "max_tokens": 64}
    assert fit_for_reasoning(body) == {"model": "o3", "messages": [], "top_p": 1, "max_completion_tokens": 64}
    assert fit_for_reasoning({"max_tokens": 64, "max_completion_tokens": 32})["max_completion_tokens"] == 32
    plain = {"model": "o3", "messages": [], "max_completion_tokens": 9}
    assert fit_for_reasoning(plain) is plain  # nothing to change: no copy
