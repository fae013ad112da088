"""What a conversation's next request repeats, told from its bytes: always the shape computed from scratch."""

from __future__ import annotations

import copy
import json

import orjson

from cascadeflow.sessions import PromptShape
from cascadeflow.sessions.layout import layout_of, repeated
from tests.unit.test_sessions import MARK, body

TOOLS = [
    {
        "name": "Read",
        "description": "Read a file",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
    },
    {
        "name": "Bash",
        "description": "Run",
        "input_schema": {"type": "object", "properties": {"messages": {"type": "array"}}},
    },
    {"name": "Edit", "input_schema": {"type": "object"}},
]


def request(turns: int) -> dict:
    """Claude Code's key order (model, messages, system, tools, …), three tools (one with a "messages" property)."""
    made = body(turns)
    return {
        "model": "claude-opus-5-5",
        "messages": made["messages"],
        "system": made["system"],
        "tools": copy.deepcopy(TOOLS),
        "max_tokens": 32000,
        "stream": True,
    }


def reorder_keys(block: dict) -> dict:
    return dict(reversed(list(block.items())))


#: each edit: a client that changes what it sent before, as the next request of the conversation
EDITS = {
    "grows": lambda r: r,
    "edits an earlier message": lambda r: r["messages"][2]["content"][0].update(
        content="[Old tool result content cleared]"
    ),
    "edits the first message": lambda r: r["messages"][0]["content"][0].update(text="Another task"),
    "removes a tool": lambda r: r["tools"].pop(1),
    "reorders the tools": lambda r: r["tools"].reverse(),
    "reorders an earlier message's keys": lambda r: r["messages"].__setitem__(1, reorder_keys(r["messages"][1])),
    "reorders a block's keys": lambda r: r["messages"][3]["content"].__setitem__(
        0, reorder_keys(r["messages"][3]["content"][0])
    ),
    "changes the system prompt": lambda r: r["system"][1].update(text="Another agent."),
    "switches the model": lambda r: r.update(model="claude-sonnet-5-5"),
    "rewinds": lambda r: r.update(messages=r["messages"][:3]),
    "moves a breakpoint back": lambda r: r["messages"][2]["content"][0].update(cache_control=MARK),
    "sets a top-level breakpoint": lambda r: r.update(cache_control=MARK),
    "sends a float": lambda r: r["messages"][1]["content"][0]["input"].update(n=1.5),
}


def edited(turns: int, edit: str) -> dict:
    made = request(turns)
    EDITS[edit](made)
    return made


def shapes(raws: list[bytes]) -> list[tuple[PromptShape, PromptShape, bool]]:
    """(grown from the bytes, computed from scratch, whether the bytes' fast path was taken) per request."""
    seen, out = None, []
    for raw in raws:
        parsed = orjson.loads(raw)
        before = seen.layout if seen is not None else None
        grown, seen = PromptShape.grown(parsed, "anthropic", "anthropic", seen, raw)
        fast = before is not None and repeated(before, raw, parsed["messages"]) is not None
        out.append((grown, PromptShape.of(parsed, "anthropic"), fast))
    return out


def test_the_bytes_give_the_shape_from_scratch_whatever_the_client_edits():
    """Growth, edited and removed history, tools removed or reordered, keys reordered, another model or
    system prompt: the shape grown from the previous request's bytes is exactly the one hashed whole."""
    for edit in EDITS:
        for turns in (2, 3, 5):
            raws = [
                orjson.dumps(request(turns)),
                orjson.dumps(edited(turns + 1, edit)),
                orjson.dumps(request(turns + 2)),
            ]
            for n, (grown, whole, _) in enumerate(shapes(raws)):
                assert grown == whole, (edit, turns, n)


def test_an_earlier_block_with_its_keys_reordered_is_hashed_again():
    """The same values in another key order are other bytes for the upstream's cache: a comparison of parsed
    values (dicts compare equal in any order) would reuse the old hashes; the bytes do not."""
    first = request(3)
    second = request(4)
    second["messages"][1]["content"][0] = reorder_keys(second["messages"][1]["content"][0])
    (_, _, _), (grown, whole, fast) = shapes([orjson.dumps(first), orjson.dumps(second)])
    assert fast and grown == whole
    assert grown.hashes[:12] != PromptShape.of(request(4), "anthropic").hashes[:12], (
        "the reordered message hashes differently"
    )


def test_the_fast_path_is_taken_where_the_client_only_grows_the_conversation():
    raws = [orjson.dumps(request(n)) for n in range(1, 8)]
    results = shapes(raws)
    assert all(fast for _, _, fast in results[1:]) and all(grown == whole for grown, whole, _ in results)
    old = layout_of(raws[-2], orjson.loads(raws[-2])["messages"])
    new = orjson.loads(raws[-1])["messages"]
    assert old is not None
    kept, _ = repeated(old, raws[-1], new)
    assert kept == len(old.ends) - 1, "all but the message whose breakpoint moved"
    edit = request(7)
    edit["messages"][4]["content"][0]["content"] = "cleared"
    kept, _ = repeated(old, orjson.dumps(edit), edit["messages"])
    assert kept == 4, "an edited history is reused up to its first changed message"


def test_bodies_that_are_not_compact_json_are_compared_as_values():
    """Pretty-printed or spaced JSON (Python's json.dumps) has no layout: the parsed values decide, as before."""
    raws = [json.dumps(request(n)).encode() for n in range(1, 5)]
    assert layout_of(raws[0], orjson.loads(raws[0])["messages"]) is None
    assert all(grown == whole and not fast for grown, whole, fast in shapes(raws))
    mixed = [orjson.dumps(request(1)), json.dumps(request(2), indent=1).encode(), orjson.dumps(request(3))]
    assert all(grown == whole for grown, whole, _ in shapes(mixed))


def test_a_duplicated_messages_key_never_fools_the_bytes():
    """A second top-level "messages" (the parser keeps the last): the shape is still the parsed body's."""
    for where in ("after", "before"):
        raws = []
        for n in (2, 3, 4):
            made = request(n)
            other = orjson.dumps(request(1)["messages"] if n == 3 else made["messages"])
            text = orjson.dumps(made)
            raws.append(
                text[:-1] + b',"messages":' + other + b"}"
                if where == "after"
                else b'{"messages":' + other + b"," + text[1:]
            )
        assert all(grown == whole for grown, whole, _ in shapes(raws)), where


def test_a_body_with_messages_last_or_none():
    """Another key order (messages after the tools) and a body without messages: the same shapes."""
    raws = [orjson.dumps({"tools": TOOLS, "system": "s", "messages": body(n)["messages"]}) for n in (1, 2, 3)]
    results = shapes(raws)
    assert all(grown == whole for grown, whole, _ in results) and results[2][2]
    bare = orjson.dumps({"model": "m", "messages": []})
    assert layout_of(bare, []) is not None and all(grown == whole for grown, whole, _ in shapes([bare, raws[0]]))


def codex_request(turns: int, **changes) -> dict:
    """A Codex thread's request (Responses): instructions, input items growing by calls and their outputs, tools."""
    items: list = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Fix the tests"}]}]
    for n in range(turns):
        items += [{"type": "reasoning", "id": f"rs_{n}", "summary": [], "encrypted_content": f"gAAAA{n}"},
                  {"type": "function_call", "call_id": f"call_{n}", "name": "exec_command",
                   "arguments": json.dumps({"cmd": f"cat f{n}.py"})},
                  {"type": "function_call_output", "call_id": f"call_{n}", "output": f"line {n}\n" * 40}]
    return {"model": "gpt-5.4", "instructions": "You are Codex. " * 50, "input": items,
            "tools": [{"type": "function", "name": "exec_command", "parameters": {"type": "object"}}],
            "store": False, "prompt_cache_key": "thread-1", **changes}


def test_a_responses_thread_is_shaped_from_its_items_and_grown_from_its_bytes():
    """Every input item counts (calls and outputs too), the instructions count as the system prompt, and the next
    request's shape grown from the bytes (the ``"input":[`` array) is the one hashed whole."""
    seen, previous = None, None
    for turns in (1, 2, 4):
        raw = orjson.dumps(codex_request(turns))
        parsed = orjson.loads(raw)
        before = seen.layout if seen is not None else None
        grown, seen = PromptShape.grown(parsed, "responses", "openai", seen, raw)
        assert grown == PromptShape.of(parsed, "responses", "openai")
        assert seen.layout is not None and (before is None or repeated(before, raw, parsed["input"]) is not None)
        # tools, instructions, the user's message block, then three items a turn
        assert grown.blocks == 1 + 1 + 1 + 3 * turns
        assert grown.chars >= len(orjson.dumps(parsed["input"])) + len(parsed["instructions"])
        if previous is not None:  # the earlier request's prefix is this one's
            assert grown.hashes[:previous.blocks] == previous.hashes
        previous = grown
    other = PromptShape.of(codex_request(4, instructions="Another agent."), "responses", "openai")
    assert other.hashes[0] == grown.hashes[0] and other.hashes[1] != grown.hashes[1], "instructions are hashed"
    text = PromptShape.of({"model": "gpt-5.4", "input": "Say hi"}, "responses", "openai")
    assert text.blocks == 1 and text.chars > len("Say hi")
