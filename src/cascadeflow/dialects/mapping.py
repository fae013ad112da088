"""The small tables both translation directions share: stop reasons, usage, error types."""

from __future__ import annotations

from ..usage import Usage

__all__ = [
    "ANTHROPIC_TO_OPENAI_STOP",
    "OPENAI_TO_ANTHROPIC_STOP",
    "anthropic_usage_dict",
    "openai_usage_dict",
]

ANTHROPIC_TO_OPENAI_STOP: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
    "model_context_window_exceeded": "length",
}

OPENAI_TO_ANTHROPIC_STOP: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def anthropic_usage_dict(usage: Usage) -> dict:
    """A Messages API ``usage`` object (input tokens exclude cached ones)."""
    out: dict = {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
    }
    if usage.web_searches:
        out["server_tool_use"] = {"web_search_requests": usage.web_searches}
    return out


def openai_usage_dict(usage: Usage) -> dict:
    """A Chat Completions ``usage`` object (prompt tokens include cached ones)."""
    prompt = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
    out: dict = {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
    }
    if usage.cache_write_tokens:  # not an OpenAI field; kept so the cache-write price survives a round trip
        out["cache_creation_input_tokens"] = usage.cache_write_tokens
    return out
