"""ModelRegistry: which provider serves a model, and what its tokens cost.

Prices come from the ``genai-prices`` package (current models, cache read/write
prices, tiered prices), with local overrides from :meth:`ModelRegistry.register`.
Resolved prices are cached per model so pricing a request is a few float
multiplications; tiered prices defer to genai-prices' own calculation. A model
nobody knows is priced as ``None`` (unknown) with one warning, never an error.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from fnmatch import fnmatchcase

from genai_prices import Usage as GenaiUsage
from genai_prices import data_snapshot

from .tiered_prices import TieredRates, compile_tiers
from .usage import Usage

__all__ = ["ModelPrice", "ModelInfo", "ModelRegistry"]

log = logging.getLogger("cascadeflow.pricing")

_PROVIDER_DIALECT = {"anthropic": "anthropic", "openai": "openai"}
_REFRESH_SECONDS = 3600.0
#: resolved model names kept (least recently used first out): a client may send any name
_CACHE_SIZE = 512
#: OpenAI's embedding models (USD per million input tokens), which genai-prices does not list
_EMBEDDING_PRICES = {"text-embedding-3-small": 0.02, "text-embedding-3-large": 0.13, "text-embedding-ada-002": 0.10}
#: Anthropic bills a 1-hour cache write at 2× the input price; genai-prices lists the 5-minute (1.25×) one
_WRITE_1H_PER_INPUT = 2.0
#: Anthropic's web search server tool: USD per search, on top of the tokens its results add
#: ("$10 per 1,000 searches", Anthropic's pricing page); only Anthropic usage reports searches
WEB_SEARCH_USD = 10 / 1000


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per million tokens. Cache prices default to the input price when unknown."""

    input_per_mtok: float
    output_per_mtok: float
    cache_read_per_mtok: float | None = None
    cache_write_per_mtok: float | None = None

    @classmethod
    def per_1k(cls, input: float, output: float | None = None) -> ModelPrice:
        """The seed's ``cost_per_1k_tokens``: one price for both sides, or input and output."""
        return cls(input * 1000, (input if output is None else output) * 1000)

    def cost(self, usage: Usage) -> float:
        read = self.input_per_mtok if self.cache_read_per_mtok is None else self.cache_read_per_mtok
        write = self.input_per_mtok if self.cache_write_per_mtok is None else self.cache_write_per_mtok
        hour_premium = max(0.0, _WRITE_1H_PER_INPUT * self.input_per_mtok - write)
        return (
            usage.input_tokens * self.input_per_mtok
            + usage.output_tokens * self.output_per_mtok
            + usage.cache_read_tokens * read
            + usage.cache_write_tokens * write
            + usage.cache_write_1h_tokens * hour_premium
        ) / 1_000_000 + usage.web_searches * WEB_SEARCH_USD


@dataclass(slots=True)
class ModelInfo:
    """What the registry knows of one model."""

    id: str
    provider: str | None
    name: str | None = None
    context_window: int | None = None
    #: the most output tokens one answer may have (used to clamp translated requests)
    max_output_tokens: int | None = None
    price: ModelPrice | None = None
    #: genai-prices' own price object when the price is tiered (not a flat ModelPrice)
    tiered: object | None = None
    #: which media the model reads besides text ("image", "document"); None: unknown (treated as none)
    media: frozenset[str] | None = None
    #: an OpenAI reasoning model (GPT-5 family, o-series): refuses ``logprobs``, ``top_logprobs``, ``max_tokens``
    #: (takes ``max_completion_tokens``) and sampling settings other than the default; None: unknown (by name)
    reasoning: bool | None = None
    resolved_at: float = field(default_factory=time.monotonic)
    #: ``tiered`` in closed form where it fits one (:func:`.compile_tiers`; else genai-prices prices each call);
    #: the last field, so the others keep their places
    rates: TieredRates | None = None

    def cost(self, usage: Usage) -> float | None:
        if self.price is not None:
            return self.price.cost(usage)
        if self.rates is not None:  # tiered, in closed form (the same figures as genai-prices', ~100× faster)
            rates = self.rates
            total = rates.cost(usage.input_tokens, usage.output_tokens, usage.cache_write_tokens,
                               usage.cache_read_tokens)
            if usage.cache_write_1h_tokens:  # the 1-hour writes' premium over the 5-minute rate, at this size's tier
                per_input, _, per_write, _ = rates.rates_at(
                    usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens)
                total += usage.cache_write_1h_tokens * max(0.0, _WRITE_1H_PER_INPUT * per_input - per_write)
            return total + usage.web_searches * WEB_SEARCH_USD
        if self.tiered is not None:
            total = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
            genai = GenaiUsage(
                input_tokens=total,
                output_tokens=usage.output_tokens,
                cache_read_tokens=usage.cache_read_tokens,
                cache_write_tokens=usage.cache_write_tokens,
            )
            total_price = float(self.tiered.calc_price(genai)["total_price"])  # type: ignore[attr-defined]
            if usage.cache_write_1h_tokens:  # the 1-hour writes' premium over the 5-minute rate, at this size's tier
                unit = GenaiUsage(input_tokens=total, cache_write_tokens=0)
                per_input = float(self.tiered.calc_price(unit)["total_price"]) / total if total else 0.0  # type: ignore[attr-defined]
                five = GenaiUsage(input_tokens=total, cache_write_tokens=total)
                per_write = float(self.tiered.calc_price(five)["total_price"]) / total if total else 0.0  # type: ignore[attr-defined]
                total_price += usage.cache_write_1h_tokens * max(0.0, _WRITE_1H_PER_INPUT * per_input - per_write)
            return total_price + usage.web_searches * WEB_SEARCH_USD
        return None


class ModelRegistry:
    """Model → provider and price, from genai-prices plus what you register.

    >>> registry = ModelRegistry()
    >>> registry.provider_for("claude-sonnet-5-5")
    'anthropic'
    >>> registry.register("my-llama", provider="openai", input_per_mtok=0.1, output_per_mtok=0.2)
    """

    def __init__(self, *, use_genai_prices: bool = True) -> None:
        self._use_genai = use_genai_prices
        self._custom: dict[str, ModelInfo] = {}
        self._custom_globs: list[ModelInfo] = []
        self._cache: OrderedDict[str, ModelInfo | None] = OrderedDict()
        self._warned: OrderedDict[str, None] = OrderedDict()  # names warned of as unpriced (bounded alike)

    def register(
        self,
        model: str,
        *,
        provider: str | None = None,
        input_per_mtok: float | None = None,
        output_per_mtok: float | None = None,
        cache_read_per_mtok: float | None = None,
        cache_write_per_mtok: float | None = None,
        cost_per_1k_tokens: float | None = None,
        context_window: int | None = None,
        max_output_tokens: int | None = None,
        media: list[str] | None = None,
        reasoning: bool | None = None,
    ) -> ModelInfo:
        """Add or override a model (a glob such as ``llama-*`` matches a family).

        Give prices per million tokens, or one ``cost_per_1k_tokens`` for both sides.
        """
        price: ModelPrice | None = None
        if cost_per_1k_tokens is not None:
            price = ModelPrice.per_1k(cost_per_1k_tokens)
        elif input_per_mtok is not None or output_per_mtok is not None:
            price = ModelPrice(
                input_per_mtok or 0.0, output_per_mtok or 0.0, cache_read_per_mtok, cache_write_per_mtok
            )
        info = ModelInfo(
            id=model, provider=provider, context_window=context_window, max_output_tokens=max_output_tokens, price=price,
            media=frozenset(media) if media is not None else None, reasoning=reasoning,
        )
        if any(c in model for c in "*?["):
            self._custom_globs.insert(0, info)
        else:
            self._custom[model] = info
        self._cache.clear()
        return info

    def info(self, model: str) -> ModelInfo | None:
        """Everything known of ``model`` (custom entries first), or None."""
        cache = self._cache
        if model in cache:
            info = cache[model]
            if info is None or time.monotonic() - info.resolved_at < _REFRESH_SECONDS:
                cache.move_to_end(model)
                return info
        info = self._resolve(model)
        cache[model] = info
        cache.move_to_end(model)
        if len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)
        return info

    @property
    def cached_models(self) -> int:
        """How many resolved names are held (at most 512)."""
        return len(self._cache)

    def warm(self, models: Iterable[str] = ()) -> None:
        """Load the price data (and resolve ``models``) now, not on the first request that needs them.

        Blocking (file reads, ~0.1–0.5 s): run it before the server accepts, off the event loop.
        """
        if self._use_genai:
            data_snapshot.get_snapshot()
        for model in models:
            self.info(model)

    def is_reasoning(self, model: str) -> bool:
        """Whether ``model`` is a reasoning model that refuses log-probabilities and sampling settings
        (the ``models:`` entry's ``reasoning`` first, else by name: :func:`reasoning_model`)."""
        info = self.info(model)
        if info is not None and info.reasoning is not None:
            return info.reasoning
        return reasoning_model(model)

    def provider_for(self, model: str) -> str | None:
        info = self.info(model)
        return info.provider if info else None

    def dialect_for(self, model: str) -> str | None:
        """``anthropic`` or ``openai`` when the model's maker speaks that dialect natively."""
        return _PROVIDER_DIALECT.get(self.provider_for(model) or "")

    def cost(self, model: str, usage: Usage) -> float | None:
        """USD for ``usage`` on ``model``; None (and one warning) when the price is unknown."""
        info = self.info(model)
        cost = info.cost(usage) if info else None
        if cost is None and model not in self._warned:
            self._warned[model] = None
            if len(self._warned) > _CACHE_SIZE:
                self._warned.popitem(last=False)
            log.warning("no price known for model %r: its cost is recorded as unknown", model)
        return cost

    def _resolve(self, model: str) -> ModelInfo | None:
        custom = self._custom.get(model) or next(
            (g for g in self._custom_globs if fnmatchcase(model, g.id)), None
        )
        if custom is not None and custom.price is not None and custom.provider is not None:
            return custom
        known = self._from_genai(model) if self._use_genai else None
        if known is None and model in _EMBEDDING_PRICES:
            known = ModelInfo(id=model, provider="openai", price=ModelPrice(_EMBEDDING_PRICES[model], 0.0))
        if custom is None:
            return known
        if known is None:
            return custom
        return ModelInfo(
            id=model,
            provider=custom.provider or known.provider,
            name=known.name,
            context_window=custom.context_window or known.context_window,
            max_output_tokens=custom.max_output_tokens or known.max_output_tokens,
            price=custom.price or known.price,
            tiered=None if custom.price else known.tiered,
            rates=None if custom.price else known.rates,
            media=custom.media if custom.media is not None else known.media,
            reasoning=custom.reasoning if custom.reasoning is not None else known.reasoning,
        )

    @staticmethod
    def _from_genai(model: str) -> ModelInfo | None:
        try:
            provider, found = data_snapshot.get_snapshot().find_provider_model(model, None, None, None)
        except LookupError:
            return None
        prices = found.get_prices(datetime.now(UTC))
        flat = [prices.input_mtok, prices.output_mtok, prices.cache_read_mtok, prices.cache_write_mtok]
        info = ModelInfo(
            id=found.id,
            provider=provider.id,
            name=found.name,
            context_window=found.context_window,
            max_output_tokens=_max_output(found.id),
            media=media_inputs(found.id),
            reasoning=reasoning_model(found.id) or None,
        )
        if all(p is None or isinstance(p, (int, float, Decimal)) for p in flat):
            info.price = ModelPrice(*(None if p is None else float(p) for p in flat))  # type: ignore[arg-type]
            if info.price.input_per_mtok is None or info.price.output_per_mtok is None:
                info.price = None
                info.tiered = prices
        else:
            info.tiered = prices
        if info.tiered is not None:
            info.rates = compile_tiers(info.tiered)
        return info


#: Output limits genai-prices does not carry, by model-name prefix (longest prefix wins).
_MAX_OUTPUT_BY_PREFIX: tuple[tuple[str, int], ...] = (
    ("gpt-4o", 16_384),
    ("gpt-4.1", 32_768),
    ("gpt-4-turbo", 4_096),
    ("gpt-5", 128_000),
    ("o1", 100_000),
    ("o3", 100_000),
    ("o4", 100_000),
    ("claude-opus-4", 32_000),
    ("claude-opus-4-5", 64_000),
    ("claude-sonnet-4", 64_000),
    ("claude-haiku-4", 64_000),
    ("claude-3-5", 8_192),
    ("claude-3-", 4_096),
    ("claude-opus-5", 128_000),
    ("claude-sonnet-5", 128_000),
    ("claude-haiku-5", 64_000),
)


#: media models read besides text, by model-name prefix (longest wins): from the providers' model pages
_MEDIA_BY_PREFIX: tuple[tuple[str, frozenset[str]], ...] = (
    ("claude-3", frozenset({"image"})),
    ("claude-3-5-sonnet", frozenset({"image", "document"})),
    ("claude-3-7", frozenset({"image", "document"})),
    ("claude-opus-4", frozenset({"image", "document"})),
    ("claude-sonnet-4", frozenset({"image", "document"})),
    ("claude-haiku-4", frozenset({"image", "document"})),
    ("claude-opus-5", frozenset({"image", "document"})),
    ("claude-sonnet-5", frozenset({"image", "document"})),
    ("claude-haiku-5", frozenset({"image", "document"})),
    ("gpt-4o", frozenset({"image", "document"})),
    ("gpt-4.1", frozenset({"image", "document"})),
    ("gpt-5", frozenset({"image", "document"})),
    ("o1", frozenset({"image"})),
    ("o3", frozenset({"image", "document"})),
    ("o4", frozenset({"image", "document"})),
)


def media_inputs(model: str) -> frozenset[str] | None:
    """The media ``model`` reads besides text, where known."""
    matches = [(len(p), media) for p, media in _MEDIA_BY_PREFIX if model.startswith(p)]
    return max(matches, key=lambda m: m[0])[1] if matches else None


#: OpenAI's reasoning models, by model-name prefix (longest wins). Per OpenAI's reasoning guide and API
#: reference they refuse ``logprobs``/``top_logprobs``, ``temperature``/``top_p`` other than 1 and
#: ``max_tokens`` (400 ``unsupported_parameter`` / ``unsupported_value``). gpt-5.1+ accept sampling settings
#: only with ``reasoning_effort: none``, which a cascade never sets, so the whole family counts.
_REASONING_BY_PREFIX: tuple[tuple[str, bool], ...] = (
    ("gpt-5", True),
    ("o1", True),
    ("o3", True),
    ("o4", True),
)


def reasoning_model(model: str) -> bool:
    """Whether ``model`` is, by its name, an OpenAI reasoning model (see ``_REASONING_BY_PREFIX``)."""
    matches = [(len(p), flag) for p, flag in _REASONING_BY_PREFIX if model.startswith(p)]
    return max(matches)[1] if matches else False


def max_output_tokens(model: str) -> int | None:
    """The most output tokens ``model`` may be asked for, where known (by model-name prefix)."""
    return _max_output(model)


def _max_output(model: str) -> int | None:
    matches = [(len(p), limit) for p, limit in _MAX_OUTPUT_BY_PREFIX if model.startswith(p)]
    return max(matches)[1] if matches else None
