"""Token usage of one upstream call, in the terms both dialects share."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Usage"]


@dataclass(slots=True)
class Usage:
    """Tokens billed for one call.

    ``input_tokens`` excludes cached tokens (Anthropic's convention); OpenAI's
    ``prompt_tokens`` includes them, so :meth:`from_openai` subtracts the cached part.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    #: of ``cache_write_tokens``, those written for Anthropic's 1-hour TTL (billed at 2× input, not 1.25×)
    cache_write_1h_tokens: int = 0
    #: searches Anthropic's web search server tool ran (``usage.server_tool_use``), billed per search
    web_searches: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_write_tokens + self.cache_read_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_1h_tokens + other.cache_write_1h_tokens,
            self.web_searches + other.web_searches,
        )

    def to_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cache_read_tokens": self.cache_read_tokens,
        }

    @classmethod
    def from_anthropic(cls, usage: dict | None) -> Usage:
        """From an Anthropic ``usage`` object (message or message_start/message_delta)."""
        if not isinstance(usage, dict):
            return cls()
        written = _int(usage.get("cache_creation_input_tokens"))
        split = usage.get("cache_creation")
        hour = _int(split.get("ephemeral_1h_input_tokens")) if isinstance(split, dict) else 0
        server = usage.get("server_tool_use")
        searches = _int(server.get("web_search_requests")) if isinstance(server, dict) else 0
        return cls(
            _int(usage.get("input_tokens")),
            _int(usage.get("output_tokens")),
            written,
            _int(usage.get("cache_read_input_tokens")),
            min(hour, written),
            searches,
        )

    @classmethod
    def from_openai(cls, usage: dict | None) -> Usage:
        """From an OpenAI ``usage`` object; cached prompt tokens are split out."""
        if not isinstance(usage, dict):
            return cls()
        details = usage.get("prompt_tokens_details")
        cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
        prompt = _int(usage.get("prompt_tokens"))
        # Some OpenAI-compatible servers (and Anthropic's compat layer) report cache writes too.
        written = _int(usage.get("cache_creation_input_tokens"))
        return cls(max(prompt - cached - written, 0), _int(usage.get("completion_tokens")), written, cached)

    @classmethod
    def from_responses(cls, usage: dict | None) -> Usage:
        """From a Responses API ``usage`` object; its ``input_tokens`` include the cached ones."""
        if not isinstance(usage, dict):
            return cls()
        details = usage.get("input_tokens_details")
        details = details if isinstance(details, dict) else {}
        cached, written = _int(details.get("cached_tokens")), _int(details.get("cache_write_tokens"))
        total = _int(usage.get("input_tokens"))
        return cls(max(total - cached - written, 0), _int(usage.get("output_tokens")), written, cached)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
