"""Anthropic's web search server tool in the simulator: checked as the API checks it, run on canned results.

Refused with a 400, as the Messages API refuses them: a server tool type (``web_search_*``,
``web_fetch_*``, ``code_execution_*``) of no known version, a web search tool whose
``name`` is not ``web_search``, with a field the tool does not have, with both
``allowed_domains`` and ``blocked_domains``, ``max_uses`` below 1, or a ``user_location``
that is not ``{"type": "approximate", …}``.

Run: when a request offers ``web_search`` and its prompt asks to search or look something
up (the words "search" or "look up"), the model searches once — the query is the prompt's
first 100 characters — and finds two results on ``example.com`` (or the first allowed
domain; ``example.org`` when ``example.com`` is blocked). Its text after the search cites
the first result (a ``web_search_result_location`` citation) and the usage counts one
``web_search_requests``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

__all__ = ["SERVER_TOOL_VERSIONS", "check_server_tools", "plan_search"]

#: the server tool types the simulated API knows
SERVER_TOOL_VERSIONS = frozenset({
    "web_search_20250305", "web_search_20260209", "web_fetch_20250910", "web_fetch_20260209",
    "code_execution_20250522", "code_execution_20250825", "code_execution_20260120",
})
_SERVER_PREFIXES = ("web_search_", "web_fetch_", "code_execution_")
_WEB_SEARCH_FIELDS = frozenset({"type", "name", "allowed_domains", "blocked_domains", "max_uses", "user_location",
                                "cache_control", "allowed_callers", "defer_loading", "strict"})
_LOCATION_FIELDS = frozenset({"type", "city", "region", "country", "timezone"})
_ASKS_TO_SEARCH = re.compile(r"\b(search|look up)\b", re.IGNORECASE)


def check_server_tools(body: dict[str, Any]) -> str | None:
    """What the Messages API would refuse in the request's server tools, or None."""
    tools = body.get("tools")
    for i, tool in enumerate(tools if isinstance(tools, list) else ()):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if not isinstance(kind, str) or not kind.startswith(_SERVER_PREFIXES):
            continue
        if kind not in SERVER_TOOL_VERSIONS:
            return (f"tools.{i}: Input tag '{kind}' found using 'type' does not match any of the expected tags: "
                    + ", ".join(f"'{v}'" for v in sorted(SERVER_TOOL_VERSIONS)))
        if kind.startswith("web_search_"):
            problem = _web_search_problem(tool, f"tools.{i}.{kind}")
            if problem is not None:
                return problem
    return None


def _web_search_problem(tool: dict[str, Any], where: str) -> str | None:
    for key in tool:
        if key not in _WEB_SEARCH_FIELDS:
            return f"{where}.{key}: Extra inputs are not permitted"
    if tool.get("name") != "web_search":
        return f"{where}.name: Input should be 'web_search'"
    if tool.get("allowed_domains") and tool.get("blocked_domains"):
        return f"{where}: Cannot specify both allowed_domains and blocked_domains"
    for key in ("allowed_domains", "blocked_domains"):
        value = tool.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(d, str) for d in value)):
            return f"{where}.{key}: Input should be a valid list of strings"
    uses = tool.get("max_uses")
    if uses is not None and (not isinstance(uses, int) or isinstance(uses, bool) or uses < 1):
        return f"{where}.max_uses: Input should be greater than or equal to 1"
    location = tool.get("user_location")
    if location is not None:
        if not isinstance(location, dict) or location.get("type") != "approximate":
            return f"{where}.user_location.type: Input should be 'approximate'"
        for key, value in location.items():
            if key not in _LOCATION_FIELDS:
                return f"{where}.user_location.{key}: Extra inputs are not permitted"
            if key != "type" and value is not None and not isinstance(value, str):
                return f"{where}.user_location.{key}: Input should be a valid string"
    return None


def _search_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        if isinstance(tool, dict) and str(tool.get("type", "")).startswith("web_search_"):
            return tool
    return None


def plan_search(body: dict[str, Any], prompt: str) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
    """(the server_tool_use and web_search_tool_result blocks, the citation of the first result) when the
    model searches, else None."""
    tool = _search_tool(body)
    if tool is None or not _ASKS_TO_SEARCH.search(prompt):
        return None
    allowed = tool.get("allowed_domains") or []
    blocked = tool.get("blocked_domains") or []
    domain = allowed[0] if allowed else ("example.org" if "example.com" in blocked else "example.com")
    query = " ".join(prompt.split())[:100]
    digest = hashlib.blake2b(query.encode(), digest_size=6).hexdigest()
    tool_id = "srvtoolu_sim" + digest
    results: list[dict[str, Any]] = [
        {"type": "web_search_result", "url": f"https://{domain}/{digest}/{n}", "title": f"Result {n} for {query}",
         "encrypted_content": f"simenc{digest}{n}", "page_age": "April 1, 2026"} for n in (1, 2)]
    blocks: list[dict[str, Any]] = [
        {"type": "server_tool_use", "id": tool_id, "name": "web_search", "input": {"query": query}},
        {"type": "web_search_tool_result", "tool_use_id": tool_id, "content": results}]
    citation: dict[str, Any] = {"type": "web_search_result_location", "url": results[0]["url"],
                                "title": results[0]["title"], "encrypted_index": f"simidx{digest}",
                                "cited_text": f"What {domain} says about it."}
    return blocks, citation
