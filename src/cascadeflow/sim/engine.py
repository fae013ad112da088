"""Dialect-neutral answer planning for the simulator: text, tools, tokens, caching.

Everything here is deterministic, so tests can predict what the simulator sends.

Default answer
    ``f"[{model}] "`` followed by 6 to 15 words picked from a fixed word list by
    a BLAKE2b hash of ``model + "\\0" + last user text``; the last word ends with
    ".". Same request → same answer; different models → different answers.
    In JSON mode (OpenAI ``response_format: json_object``; for Anthropic, which has
    none, a system prompt saying "respond with a (single) JSON object") the answer is
    ``{"answer": <that text>}``.

Token estimate (see :func:`estimate_input_tokens`)
    ``input_total = max(1, chars // 4)`` where ``chars`` is the length of the
    compact JSON (orjson) of ``messages``, plus that of ``system`` if present
    (Anthropic), plus that of ``tools`` if present. This is what
    ``count_tokens`` returns.
    ``output = words(text) + words(thinking) + sum(len(json(tool input)) // 4)``
    where ``words(s) = len(s.split())`` and tool input JSON is compact orjson.

Prompt caching (see :mod:`.prompt_cache`)
    The simulator works out a :class:`~.prompt_cache.CacheSplit` (tokens read from
    and written to the model's cache) before planning; ``cache_read`` and
    ``cache_creation`` come from it and ``input_tokens = input_total - cache_read -
    cache_creation``. Anthropic reports the three (and the 5-minute / 1-hour split of
    the writes); OpenAI reports ``prompt_tokens = input_total`` and
    ``prompt_tokens_details.cached_tokens = cache_read``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..dialects.mapping import OPENAI_TO_ANTHROPIC_STOP
from .prompt_cache import CacheSplit
from .script import ScriptRule
from .server_tools import plan_search

__all__ = [
    "Answer",
    "Usage",
    "default_text",
    "estimate_input_tokens",
    "last_user_text",
    "plan_answer",
    "split_tokens",
]

_dumps = orjson.dumps

WORDS = (
    "alpha bravo cobalt delta ember falcon garnet harbor indigo jasper kestrel lumen "
    "meadow nimbus orchid prairie quartz raven sierra timber umber velvet willow xenon "
    "yonder zephyr amber birch cedar dune echo fjord glacier heron island juniper kelp "
    "lagoon maple nectar opal pebble quill ridge saffron tundra upland valley wren "
    "yarrow zinnia acorn basalt canyon drift estuary fern grove hazel iris jade knoll lotus mesa"
).split()
assert len(WORDS) == 64

THINKING_WORDS = "consider the question carefully then weigh each option before answering".split()

_TOKEN_RE = re.compile(r"\s*\S+")



def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def split_tokens(text: str) -> list[str]:
    """Word-level tokens, each with its leading whitespace; they join back to ``text``."""
    tokens = _TOKEN_RE.findall(text)
    if tokens:
        tail = len(text) - sum(map(len, tokens))
        if tail:
            tokens[-1] += text[-tail:]
    elif text:
        tokens = [text]
    return tokens


def _count_words(text: str | None) -> int:
    return len(text.split()) if text else 0


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") in ("text", "input_text")]
        if not parts:  # e.g. only tool results: use their text
            for b in content:
                if isinstance(b, dict) and b.get("type") == "tool_result":
                    parts.append(_text_of(b.get("content")))
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def last_user_text(body: dict[str, Any]) -> str:
    """The latest input text: the last ``user`` message (its text blocks joined by
    newlines, or its ``tool_result`` contents when it has no text), or, when an
    OpenAI conversation ends with ``tool`` messages, their contents."""
    messages = body.get("messages")
    if isinstance(messages, list):
        tool_texts: list[str] = []
        for msg in reversed(messages):
            if not isinstance(msg, dict):
                continue
            role = msg.get("role")
            if role in ("tool", "function"):
                tool_texts.append(_text_of(msg.get("content")))
                continue
            if tool_texts:
                break
            if role == "user":
                return _text_of(msg.get("content"))
        if tool_texts:
            return "\n".join(reversed(tool_texts))
    return ""


def _hash(*parts: str) -> bytes:
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=16).digest()


def default_text(model: str, prompt: str, words: int | None = None) -> str:
    """The deterministic default answer; ``words`` fixes the total word count."""
    h = _hash(model, prompt)
    n = 6 + h[0] % 10 if words is None else words - 1
    if words is not None and words <= 0:
        return ""
    picked = [WORDS[(h[1 + i % 15] + 7 * i) % 64] for i in range(max(0, n))]
    if not picked:
        return f"[{model}]"
    return f"[{model}] " + " ".join(picked) + "."


def default_thinking(model: str, prompt: str) -> str:
    h = _hash("thinking", model, prompt)
    return " ".join(THINKING_WORDS) + " " + " ".join(WORDS[b % 64] for b in h[:4]) + "."


def signature_for(thinking: str) -> str:
    return base64.b64encode(b"\x12sim" + hashlib.blake2b(thinking.encode(), digest_size=44).digest()).decode()


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """``max(1, chars // 4)`` over compact JSON of messages (+ system) (+ tools)."""
    chars = len(_dumps(body.get("messages") or []))
    system = body.get("system")
    if system is not None:
        chars += len(_dumps(system))
    tools = body.get("tools")
    if tools:
        chars += len(_dumps(tools))
    return max(1, chars // 4)


@dataclass(slots=True)
class Usage:
    """Dialect-neutral usage: ``input`` excludes cached tokens; ``cache_creation``
    includes the 1-hour writes ``cache_creation_1h``."""

    input: int
    output: int
    cache_creation: int = 0
    cache_read: int = 0
    cache_creation_1h: int = 0

    @property
    def prompt_total(self) -> int:
        return self.input + self.cache_creation + self.cache_read


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    input: Any
    arguments: str  # compact JSON of input


@dataclass(slots=True)
class Answer:
    model: str
    text: str
    thinking: str | None = None
    signature: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    stop_reason: str = "end_turn"  # Anthropic vocabulary
    stop_sequence: str | None = None
    usage: Usage = field(default_factory=lambda: Usage(1, 0))
    logprob: float | None = None
    logprobs: list[float] | None = None
    #: Anthropic server tool blocks before the text (a web search and its results), and the text's citations
    server_blocks: list[dict[str, Any]] = field(default_factory=list)
    citations: list[dict[str, Any]] = field(default_factory=list)


def schema_value(schema: Any, name: str = "value", depth: int = 0) -> Any:
    """A type-appropriate example value for a JSON schema (required properties only)."""
    if not isinstance(schema, dict) or depth > 8:
        return f"{name}_value"
    if "const" in schema:
        return schema["const"]
    if "default" in schema:
        return schema["default"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return schema_value(options[0], name, depth + 1)
    typ = schema.get("type")
    if isinstance(typ, list):
        typ = next((t for t in typ if t != "null"), typ[0] if typ else None)
    if typ == "object" or (typ is None and "properties" in schema):
        props = schema.get("properties") or {}
        required = schema.get("required") or []
        return {k: schema_value(props.get(k), k, depth + 1) for k in required}
    if typ == "array":
        n = schema.get("minItems") or 0
        return [schema_value(schema.get("items"), name, depth + 1) for _ in range(n)]
    if typ == "integer":
        return schema.get("minimum", 1) if isinstance(schema.get("minimum"), int) else 1
    if typ == "number":
        return float(schema.get("minimum", 1.0))
    if typ == "boolean":
        return True
    if typ == "null":
        return None
    return f"{name}_value"


def _forced_tool(body: dict[str, Any], dialect: str) -> tuple[str, Any] | None:
    """(name, schema) of the tool the request forces, if any."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not tools or not choice:
        return None
    want: str | None = None
    if dialect == "anthropic":
        if not isinstance(choice, dict) or choice.get("type") not in ("any", "tool"):
            return None
        if choice.get("type") == "tool":
            want = choice.get("name")
        for tool in tools:
            if isinstance(tool, dict) and (want is None or tool.get("name") == want):
                return tool.get("name", "tool"), tool.get("input_schema")
    else:
        if choice == "required":
            pass
        elif isinstance(choice, dict) and choice.get("type") == "function":
            want = (choice.get("function") or {}).get("name")
        else:
            return None
        for tool in tools:
            fn = tool.get("function") if isinstance(tool, dict) else None
            if isinstance(fn, dict) and (want is None or fn.get("name") == want):
                return fn.get("name", "tool"), fn.get("parameters")
    return (want, None) if want else None


def _structured_schema(body: dict[str, Any], dialect: str) -> dict[str, Any] | None:
    """The JSON schema the answer must follow (Anthropic ``output_config.format``, OpenAI ``response_format``)."""
    if dialect == "anthropic":
        config = body.get("output_config")
        fmt = config.get("format") if isinstance(config, dict) else body.get("output_format")
        schema = fmt.get("schema") if isinstance(fmt, dict) and fmt.get("type") == "json_schema" else None
    else:
        fmt = body.get("response_format")
        spec = fmt.get("json_schema") if isinstance(fmt, dict) and fmt.get("type") == "json_schema" else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
    return schema if isinstance(schema, dict) else None


_ASKS_JSON_OBJECT = re.compile(r"\brespond with (?:a single |one |a |an )?JSON object\b", re.IGNORECASE)


def _json_mode(body: dict[str, Any], dialect: str) -> bool:
    """Whether the answer must be a JSON object: OpenAI's ``response_format: json_object``, or (Anthropic
    has no JSON mode) a system prompt that asks for a JSON object, which a model follows."""
    if dialect != "anthropic":
        fmt = body.get("response_format")
        return isinstance(fmt, dict) and fmt.get("type") == "json_object"
    return bool(_ASKS_JSON_OBJECT.search(_text_of(body.get("system"))))


def _stop_sequences(body: dict[str, Any], dialect: str) -> list[str]:
    seqs = body.get("stop_sequences") if dialect == "anthropic" else body.get("stop")
    if not seqs:
        return []
    if isinstance(seqs, str):
        return [seqs]
    return [s for s in seqs if isinstance(s, str) and s]


def _max_tokens(body: dict[str, Any], dialect: str) -> int | None:
    value = body.get("max_tokens")
    if dialect == "openai" and body.get("max_completion_tokens") is not None:
        value = body.get("max_completion_tokens")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def plan_answer(
    body: dict[str, Any],
    dialect: str,
    rule: ScriptRule | None,
    prompt: str | None,
    cache: CacheSplit | None,
) -> Answer:
    """Decide the full answer (text, thinking, tool calls, stop reason, usage)."""
    model = body.get("model")
    model = model if isinstance(model, str) else ""
    if prompt is None:
        prompt = last_user_text(body)
    tool_id_prefix = "toolu_" if dialect == "anthropic" else "call_"

    # thinking (Anthropic only)
    thinking: str | None = None
    if dialect == "anthropic":
        if rule is not None and rule.thinking is not None and rule.thinking is not False:
            thinking = default_thinking(model, prompt) if rule.thinking is True else str(rule.thinking)
        else:
            cfg = body.get("thinking")
            if isinstance(cfg, dict) and cfg.get("type") in ("enabled", "adaptive"):
                thinking = default_thinking(model, prompt)

    # tool calls and text
    calls: list[tuple[str, Any]] = []
    if rule is not None and rule.tool_calls is not None:
        calls = [(c["name"], c.get("input") or {}) for c in rule.tool_calls]
    elif rule is None or (rule.text is None and rule.words is None):
        forced = _forced_tool(body, dialect)
        if forced is not None:
            calls = [(forced[0], schema_value(forced[1] or {"type": "object"}, forced[0]))]
    structured = _structured_schema(body, dialect)
    if rule is not None and rule.text is not None:
        text = rule.text
    elif calls:
        text = ""
    elif structured is not None and (rule is None or rule.words is None):
        text = _dumps(schema_value(structured)).decode()
    elif _json_mode(body, dialect) and (rule is None or rule.words is None):
        text = _dumps({"answer": default_text(model, prompt)}).decode()
    else:
        text = default_text(model, prompt, rule.words if rule is not None else None)

    searched = plan_search(body, prompt) if dialect == "anthropic" and not calls and (
        rule is None or rule.tool_calls is None) else None

    stop_reason = "tool_use" if calls else "end_turn"
    stop_sequence: str | None = None
    seqs = _stop_sequences(body, dialect)
    if seqs and text:
        cut = min(((text.find(s), s) for s in seqs if s in text), default=None)
        if cut is not None:
            text = text[: cut[0]]
            stop_reason, stop_sequence, calls = "stop_sequence", cut[1], []

    limit = _max_tokens(body, dialect)
    if limit is not None:
        think_words = _count_words(thinking)
        if thinking is not None and think_words > limit:
            thinking = " ".join(thinking.split()[: max(0, limit)])
            think_words = _count_words(thinking)
        budget = max(0, limit - think_words)
        tokens = split_tokens(text)
        if len(tokens) > budget:
            text = "".join(tokens[:budget]).rstrip() if budget else ""
            stop_reason, stop_sequence, calls = "max_tokens", None, []

    tool_calls = [ToolCall(new_id(tool_id_prefix), name, inp, _dumps(inp).decode()) for name, inp in calls]

    if rule is not None and rule.stop_reason is not None:
        forced_stop = OPENAI_TO_ANTHROPIC_STOP.get(rule.stop_reason, rule.stop_reason)
        stop_reason = forced_stop

    output = _count_words(text) + _count_words(thinking) + sum(len(c.arguments) // 4 for c in tool_calls)
    total_in = estimate_input_tokens(body)
    split = cache or CacheSplit()
    usage = Usage(max(0, total_in - split.write - split.read), output, split.write, split.read, split.write_1h)
    if rule is not None and rule.usage:
        _override_usage(usage, rule.usage)

    if searched is not None and text:
        output += sum(len(_dumps(b).decode()) // 4 for b in searched[0] if b["type"] == "server_tool_use")
    return Answer(
        server_blocks=searched[0] if searched is not None and text else [],
        citations=[searched[1]] if searched is not None and text else [],
        model=model,
        text=text,
        thinking=thinking,
        signature=signature_for(thinking) if thinking is not None else None,
        tool_calls=tool_calls,
        stop_reason=stop_reason,
        stop_sequence=stop_sequence,
        usage=usage,
        logprob=rule.logprob if rule is not None else None,
        logprobs=rule.logprobs if rule is not None else None,
    )


def _override_usage(usage: Usage, spec: dict[str, int]) -> None:
    if "cache_read_input_tokens" in spec:
        usage.cache_read = int(spec["cache_read_input_tokens"])
    if "cached_tokens" in spec:
        usage.cache_read = int(spec["cached_tokens"])
    if "cache_creation_input_tokens" in spec:
        usage.cache_creation = int(spec["cache_creation_input_tokens"])
        usage.cache_creation_1h = min(usage.cache_creation, int(spec.get("ephemeral_1h_input_tokens", 0)))
    if "input_tokens" in spec:
        usage.input = int(spec["input_tokens"])
    if "prompt_tokens" in spec:
        usage.input = max(0, int(spec["prompt_tokens"]) - usage.cache_read - usage.cache_creation)
    if "output_tokens" in spec:
        usage.output = int(spec["output_tokens"])
    if "completion_tokens" in spec:
        usage.output = int(spec["completion_tokens"])
