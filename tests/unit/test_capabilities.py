"""Whether a draft can serve a request at all: server tools only some upstreams run."""

from __future__ import annotations

from cascadeflow.cascade.capabilities import capability_gap
from cascadeflow.pricing import ModelRegistry

REGISTRY = ModelRegistry()


def gap(body: dict, dialect: str, draft_provider: str, verifier_provider: str) -> str | None:
    return capability_gap(body, b"{}", dialect, "claude-haiku-5-5", draft_provider, verifier_provider, REGISTRY)


def test_a_web_search_runs_on_claude_too_but_other_hosted_tools_only_on_openai():
    search = {"model": "gpt-5.4", "input": "hi", "tools": [{"type": "web_search"}]}
    assert gap(search, "responses", "anthropic", "openai") is None  # Claude runs its own search
    files = {**search, "tools": [{"type": "web_search"}, {"type": "file_search"}]}
    assert gap(files, "responses", "anthropic", "openai") == "capability:server_tools"
    chat = {"model": "gpt-5.4", "messages": [], "web_search_options": {}}
    assert gap(chat, "openai", "anthropic", "openai") is None
    server = {"model": "claude-opus-5-5", "messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}
    assert gap(server, "anthropic", "openai", "anthropic") == "capability:server_tools"
