"""OpenAI's hosted web search on a Claude model: Anthropic's web search server tool, and back.

Codex sends ``{"type": "web_search"}`` with every request. An Anthropic upstream runs a
search of its own (the ``web_search_20250305`` server tool: ``allowed_domains``,
``user_location``), so on the way to a Claude model the hosted tool becomes that one
instead of being dropped. The answer's ``server_tool_use`` + ``web_search_tool_result``
blocks come back as Responses ``web_search_call`` items (``action: search`` with the
query and the result URLs as ``sources``), and the ``web_search_result_location``
citations of the text after them as ``url_citation`` annotations, JSON and stream alike.
A chat-only upstream runs nothing: there the tool stays dropped and named.

Not carried: ``search_context_size`` and ``external_web_access`` (no counterpart), and
the search's own price (Anthropic bills it per search; ``usage.server_tool_use``).
"""

from __future__ import annotations

from typing import Any

import orjson

from .responses_events import ResponseEmitter
from .sse import SSEDecoder, json_object
from .translate_responses import ChainedStream

__all__ = [
    "ANTHROPIC_WEB_SEARCH",
    "HOSTED_WEB_SEARCH",
    "SearchResults",
    "SearchingStream",
    "anthropic_web_search_tool",
    "search_tools_of",
]

#: the version of Anthropic's tool asked for: generally available, on every current Claude model
ANTHROPIC_WEB_SEARCH = "web_search_20250305"
#: OpenAI's hosted web search tools (Responses API)
HOSTED_WEB_SEARCH = frozenset({"web_search", "web_search_2025_08_26", "web_search_preview",
                               "web_search_preview_2025_03_11"})
_LOCATION_KEYS = ("city", "region", "country", "timezone")


def anthropic_web_search_tool(tool: dict | None = None) -> dict:
    """Anthropic's web search server tool for an OpenAI web search tool (Responses' tool, or Chat
    Completions' ``web_search_options``): allowed domains and the user's approximate location carried."""
    tool = tool if isinstance(tool, dict) else {}
    out: dict[str, Any] = {"type": ANTHROPIC_WEB_SEARCH, "name": "web_search"}
    filters = tool.get("filters")
    domains = filters.get("allowed_domains") if isinstance(filters, dict) else None
    domains = [d for d in domains if isinstance(d, str) and d] if isinstance(domains, list) else []
    if domains:
        out["allowed_domains"] = domains
    location = tool.get("user_location")
    if isinstance(location, dict):
        nested = location.get("approximate")  # Chat Completions nests the fields one level down
        inner: dict = nested if isinstance(nested, dict) else location
        fields = {k: inner[k] for k in _LOCATION_KEYS if isinstance(inner.get(k), str) and inner[k]}
        if fields:
            out["user_location"] = {"type": "approximate", **fields}
    return out


def search_tools_of(tools: Any) -> list[dict]:
    """The hosted web search tools of a Responses request's ``tools`` (at most one is used)."""
    return [t for t in tools if isinstance(t, dict) and t.get("type") in HOSTED_WEB_SEARCH] if isinstance(
        tools, list) else []


def _sources(content: Any) -> list[dict]:
    results = content if isinstance(content, list) else []
    return [{"type": "url", "url": r["url"]} for r in results if isinstance(r, dict) and isinstance(r.get("url"), str)]


def _annotation(citation: Any, start: int, end: int) -> dict | None:
    if not isinstance(citation, dict) or citation.get("type") != "web_search_result_location":
        return None
    if not isinstance(citation.get("url"), str):
        return None
    title = citation.get("title") if isinstance(citation.get("title"), str) else citation["url"]
    return {"type": "url_citation", "start_index": start, "end_index": end, "url": citation["url"], "title": title}


class SearchResults:
    """The searches of a whole Anthropic message and the citations of its text, for a JSON answer."""

    __slots__ = ("annotations", "calls")

    def __init__(self, message: Any) -> None:
        self.calls: list[tuple[str, list[dict], bool]] = []  # (query, sources, failed)
        self.annotations: list[dict] = []  # offsets into the message's texts joined
        queries: dict[str, str] = {}
        offset = 0
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else ():
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "server_tool_use" and block.get("name") == "web_search":
                given = block.get("input")
                query = given.get("query") if isinstance(given, dict) else None
                queries[str(block.get("id"))] = query if isinstance(query, str) else ""
            elif kind == "web_search_tool_result":
                result = block.get("content")
                failed = isinstance(result, dict)  # a web_search_tool_result_error
                self.calls.append((queries.get(str(block.get("tool_use_id")), ""), _sources(result), failed))
            elif kind == "text" and isinstance(block.get("text"), str):
                end = offset + len(block["text"])
                for citation in block.get("citations") or ():
                    annotation = _annotation(citation, offset, end)
                    if annotation is not None:
                        self.annotations.append(annotation)
                offset = end

    def emit_calls(self, emitter: ResponseEmitter) -> None:
        for query, sources, failed in self.calls:
            emitter.web_search(query, sources, failed=failed)


class SearchingStream(ChainedStream):
    """Anthropic → chat → Responses, event by event, with the searches and citations the chat step
    cannot carry added to the Responses side as they pass (used only when a search was offered)."""

    __slots__ = ("_cited", "_decoder", "_open", "_queries", "_start")

    def __init__(self, first: Any, second: Any) -> None:
        super().__init__(first, second)
        self._decoder = SSEDecoder()
        self._queries: dict[int, tuple[str, list[str]]] = {}  # block index -> (tool use id, query JSON pieces)
        self._open: dict[str, str] = {}  # tool use id -> query
        self._cited: dict[int, list[dict]] = {}  # text block index -> its citations
        self._start: dict[int, int] = {}  # text block index -> its start in the open message's text

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        emitter: ResponseEmitter = self.second.emitter
        for event in self._decoder.feed(chunk):
            data = json_object(event.data) if event.well_formed else {}
            kind = data.get("type")
            index = data["index"] if isinstance(data.get("index"), int) else -1
            if kind == "content_block_start" and isinstance(data.get("content_block"), dict):
                self._block_start(index, data["content_block"], emitter)
            elif kind == "content_block_delta" and isinstance(data.get("delta"), dict):
                self._block_delta(index, data["delta"])
            middle = self.first.feed(event.raw)
            if middle:
                out.append(self.second.feed(middle))
            if kind == "content_block_stop":
                self._block_stop(index, emitter)
            out.append(emitter.take())
        return b"".join(out)

    def finish(self) -> bytes:
        tail = self._decoder.pending  # a cut event: the first step must see it to know the stream was cut
        middle = self.first.feed(tail) if tail else b""
        return (self.second.feed(middle) if middle else b"") + super().finish()

    def _block_start(self, index: int, block: dict, emitter: ResponseEmitter) -> None:
        kind = block.get("type")
        if kind == "server_tool_use" and block.get("name") == "web_search":
            self._queries[index] = (str(block.get("id")), [])
        elif kind == "web_search_tool_result":
            result = block.get("content")
            query = self._open.pop(str(block.get("tool_use_id")), "")
            emitter.web_search(query, _sources(result), failed=isinstance(result, dict))
        elif kind == "text":
            self._start[index] = emitter.text_length()
            if block.get("citations"):
                self._cited[index] = list(block["citations"])

    def _block_delta(self, index: int, delta: dict) -> None:
        if delta.get("type") == "input_json_delta" and index in self._queries:
            piece = delta.get("partial_json")
            if isinstance(piece, str):
                self._queries[index][1].append(piece)
        elif delta.get("type") == "citations_delta" and index in self._start:
            citation = delta.get("citation")
            if isinstance(citation, dict):
                self._cited.setdefault(index, []).append(citation)

    def _block_stop(self, index: int, emitter: ResponseEmitter) -> None:
        if index in self._queries:
            tool_id, pieces = self._queries.pop(index)
            try:
                value = orjson.loads("".join(pieces) or "{}")
            except orjson.JSONDecodeError:
                value = {}
            query = value.get("query") if isinstance(value, dict) else None
            self._open[tool_id] = query if isinstance(query, str) else ""
        start = self._start.pop(index, None)
        for citation in self._cited.pop(index, ()):
            annotation = _annotation(citation, start or 0, emitter.text_length())
            if annotation is not None:
                emitter.annotate(annotation)
