"""The simulator's prompt caches behave like Anthropic's and OpenAI's, driven by the official SDKs over HTTP.

The Claude-Code-shaped session mirrors what the recordings in
``../shared/fixtures/claude-code/`` show: 12 tools without markers, 3 system blocks (a
billing line, then two blocks with ``cache_control``), and a breakpoint on the last block
of the last message that moves forward every turn — 3 breakpoints in all.
"""

from __future__ import annotations

import anthropic
import httpx
import openai
import orjson
import pytest

from cascadeflow.sim import SimulatedProvider, estimate_input_tokens

OPUS, SONNET = "claude-opus-5-5", "claude-sonnet-5-5"
EPHEMERAL = {"type": "ephemeral"}
TOOL_NAMES = ["Agent", "Bash", "Edit", "ListAgents", "Read", "ReportFindings", "ScheduleWakeup", "Skill",
              "ToolSearch", "Workflow", "DeferredToolPlaceholder", "Write"]


@pytest.fixture(scope="module")
def provider():
    with SimulatedProvider() as sim:
        yield sim


@pytest.fixture()
def sim(provider):
    provider.clear()
    provider.set_script(None)
    return provider


def ant(sim) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.url, api_key="x", max_retries=0)


def oai(sim) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.url + "/v1", api_key="x", max_retries=0)


def tools() -> list[dict]:
    return [{"name": name, "description": f"{name}: " + "Runs the step and reports what happened. " * (20 + 3 * i),
             "input_schema": {"type": "object", "properties": {"arg": {"type": "string"}}, "required": ["arg"]}}
            for i, name in enumerate(TOOL_NAMES)]


def system(ttl: str | None = None) -> list[dict]:
    mark = {**EPHEMERAL, "ttl": ttl} if ttl else EPHEMERAL
    return [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.330; cc_entrypoint=sdk-cli;"},
            {"type": "text", "text": "You are a Claude agent, built on Anthropic's Claude Agent SDK.", "cache_control": mark},
            {"type": "text", "text": "Follow the repository's conventions. " * 180, "cache_control": mark}]


def turn(i: int) -> list[dict]:
    """One tool round trip: the assistant's text and tool_use, then the tool_result (3 blocks)."""
    return [{"role": "assistant", "content": [{"type": "text", "text": f"Step {i}: running the tests."},
                                              {"type": "tool_use", "id": f"toolu_{i:04d}", "name": "Bash",
                                               "input": {"arg": f"pytest -q tests/test_{i}.py"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_{i:04d}",
                                          "content": f"test_{i} output line\n" * 60}]}]


def conversation(turns: int, first: str = "Fix the failing test in the repository.") -> list[dict]:
    messages = [{"role": "user", "content": [{"type": "text", "text": first}]}]
    for i in range(turns):
        messages += turn(i)
    return messages


def moving_breakpoint(messages: list[dict], ttl: str | None = None) -> list[dict]:
    """A copy with ``cache_control`` on the last block of the last message, as Claude Code sets it."""
    out = orjson.loads(orjson.dumps(messages))
    out[-1]["content"][-1]["cache_control"] = {**EPHEMERAL, "ttl": ttl} if ttl else EPHEMERAL
    return out


def send(sim, messages, *, model=OPUS, sys=None, stream=True, **kw):
    body = dict(model=model, max_tokens=2048, system=system() if sys is None else sys, tools=tools(),
                messages=moving_breakpoint(messages), **kw)
    client = ant(sim)
    if stream:
        with client.messages.stream(**body) as s:
            return s.get_final_message().usage
    return client.messages.create(**body).usage


def _size(block) -> int:
    return len(orjson.dumps({k: v for k, v in block.items() if k != "cache_control"} if isinstance(block, dict) else block))


def tokens_through(*groups: list) -> int:
    """The simulator's prefix size: compact JSON of each block (marker left out) with the JSON around it
    (a comma; a message's role and brackets on its first block), chars // 4."""
    return sum(item if isinstance(item, int) else _size(item) + 1 for blocks in groups for item in blocks) // 4


def message_blocks(messages: list[dict]) -> list[int]:
    """Each message block's size with its framing, as the simulator counts it."""
    sizes = []
    for message in messages:
        content = message["content"]
        frame = len(orjson.dumps({k: v for k, v in message.items() if k != "content"})) + len('"content":') + 1
        for i, block in enumerate(content if isinstance(content, list) else [content]):
            sizes.append(_size(block) + (frame + (2 if isinstance(content, list) else 0) if i == 0 else 1))
    return sizes


def prompt_tokens(usage) -> int:
    return usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens


# ---------------------------------------------------------------- Anthropic


def test_claude_code_session_reads_grow_turn_by_turn(sim):
    """Each turn reads what the previous one cached up to its breakpoint and writes only the new turn."""
    usages, previous_total = [], 0
    for n in range(8):
        messages = conversation(n)
        usage = send(sim, messages)
        cached_through = tokens_through(tools(), system(), message_blocks(messages))
        assert usage.cache_read_input_tokens == previous_total, n
        assert usage.cache_read_input_tokens + usage.cache_creation_input_tokens == cached_through
        assert usage.cache_creation.ephemeral_5m_input_tokens == usage.cache_creation_input_tokens
        assert usage.cache_creation.ephemeral_1h_input_tokens == 0
        full = estimate_input_tokens({"tools": tools(), "system": system(), "messages": moving_breakpoint(messages)})
        assert prompt_tokens(usage) == full and usage.input_tokens < 200
        usages.append(usage)
        previous_total = cached_through
    reads = [u.cache_read_input_tokens for u in usages]
    assert reads[0] == 0 and all(b > a for a, b in zip(reads, reads[1:]))
    assert all(u.cache_creation_input_tokens < 600 for u in usages[1:])  # one turn's worth, not the prefix
    # the upstream's bill for each request is on its record, to compare a gateway's ledger with
    billed = [r["usage"] for r in sim.requests if r["path"] == "/v1/messages"]
    assert billed == [{"input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
                       "cache_creation_input_tokens": u.cache_creation_input_tokens,
                       "cache_read_input_tokens": u.cache_read_input_tokens} for u in usages]


def test_lookback_reaches_20_blocks_and_no_further(sim):
    """6 turns (18 new blocks) after a cached one still read it; 7 turns (21 blocks) miss it
    and read only the system prefix, which its own breakpoint keeps cached."""
    send(sim, conversation(1))
    near = send(sim, conversation(7))
    assert near.cache_read_input_tokens == tokens_through(tools(), system(), message_blocks(conversation(1)))
    sim.clear()
    send(sim, conversation(1))
    far = send(sim, conversation(8))
    assert far.cache_read_input_tokens == tokens_through(tools(), system())
    assert far.cache_creation_input_tokens == tokens_through(tools(), system(), message_blocks(conversation(8))) - \
        far.cache_read_input_tokens


def parallel_turn(i: int, calls: int, *, split_runs: bool = False) -> list[dict]:
    """One round trip of ``calls`` parallel tool calls: the tool_use blocks in a row, then their tool_result
    blocks (``split_runs``: a text block before each, so that no two are consecutive)."""
    uses, results = [{"type": "text", "text": f"Step {i}: running them all."}], []
    for k in range(calls):
        if split_runs:
            uses.append({"type": "text", "text": f"call {k}"})
            results.append({"type": "text", "text": f"result {k}"})
        uses.append({"type": "tool_use", "id": f"toolu_{i:04d}_{k}", "name": "Bash", "input": {"arg": f"cat f{k}"}})
        results.append({"type": "tool_result", "tool_use_id": f"toolu_{i:04d}_{k}", "content": f"file {k}\n" * 20})
    return [{"role": "assistant", "content": uses}, {"role": "user", "content": results}]


def test_a_run_of_parallel_tool_calls_is_one_lookback_position(sim):
    """The Claude API's rule: "a run of consecutive tool_use blocks counts as one position, and so does a run
    of consecutive tool_result blocks". A turn of 12 parallel calls adds 25 blocks but 3 positions: the next
    request still reads the previous one's entry. With a text block before each call and each result (49
    positions) it lies out of reach, and only the system prefix is read."""
    send(sim, conversation(1))
    near = send(sim, conversation(1) + parallel_turn(1, 12))
    assert near.cache_read_input_tokens == tokens_through(tools(), system(), message_blocks(conversation(1)))
    sim.clear()
    send(sim, conversation(1))
    far = send(sim, conversation(1) + parallel_turn(1, 12, split_runs=True))
    assert far.cache_read_input_tokens == tokens_through(tools(), system())


def test_pause_past_the_ttl_misses_and_rewrites(sim):
    messages = conversation(3)
    written = send(sim, messages).cache_creation_input_tokens
    for _ in range(3):  # each hit refreshes the 5 minutes: 3 × 290 s apart, still cached
        sim.advance_clock(290)
        assert send(sim, messages).cache_read_input_tokens == written
    reply = httpx.post(sim.url + "/_sim/clock", json={"advance": 301})  # the same, over HTTP
    assert reply.status_code == 200 and reply.json()["ok"] is True
    after = send(sim, messages)
    assert (after.cache_read_input_tokens, after.cache_creation_input_tokens) == (0, written)
    assert httpx.post(sim.url + "/_sim/clock", json={"advance": -5}).status_code == 400
    assert httpx.post(sim.url + "/_sim/clock", content=b"soon").status_code == 400


def test_a_hit_refreshes_the_entry_it_read(sim):
    """The next turn reads turn 3's entry through the lookback; that read keeps it alive, so a
    client that goes back to turn 3 (a rewind, a retry) 580 s after it was written still hits."""
    written = send(sim, conversation(3)).cache_creation_input_tokens
    sim.advance_clock(290)
    assert send(sim, conversation(4)).cache_read_input_tokens == written
    sim.advance_clock(290)
    assert send(sim, conversation(3)).cache_read_input_tokens == written


def test_one_hour_ttl_outlives_the_five_minute_one(sim):
    """1h breakpoints on the system prompt, 5m on the conversation: after 10 minutes only the
    system prefix is still cached; the writes are reported per TTL."""
    messages = conversation(2)
    first = send(sim, messages, sys=system("1h"))
    sys_tokens = tokens_through(tools(), system())
    assert first.cache_creation.ephemeral_1h_input_tokens == sys_tokens
    assert first.cache_creation.ephemeral_5m_input_tokens == first.cache_creation_input_tokens - sys_tokens
    sim.advance_clock(600)
    later = send(sim, messages, sys=system("1h"))
    assert later.cache_read_input_tokens == sys_tokens
    assert (later.cache_creation.ephemeral_1h_input_tokens, later.cache_creation.ephemeral_5m_input_tokens) == (
        0, first.cache_creation.ephemeral_5m_input_tokens)
    sim.advance_clock(3601)
    assert send(sim, messages, sys=system("1h")).cache_read_input_tokens == 0


def test_caches_are_per_model(sim):
    messages = conversation(4)
    on_opus = send(sim, messages, model=OPUS)
    on_sonnet = send(sim, messages, model=SONNET)
    assert on_sonnet.cache_read_input_tokens == 0
    assert on_sonnet.cache_creation_input_tokens == on_opus.cache_creation_input_tokens > 0
    back = send(sim, messages + turn(4), model=OPUS)
    assert back.cache_read_input_tokens == on_opus.cache_creation_input_tokens


def test_breakpoint_rules_are_enforced_as_the_api_does(sim):
    client = ant(sim)
    marked = [{"type": "text", "text": f"part {i}", "cache_control": EPHEMERAL} for i in range(5)]
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model=OPUS, max_tokens=10, messages=[{"role": "user", "content": marked}])
    assert err.value.body["error"] == {"type": "invalid_request_error",
                                       "message": "A maximum of 4 blocks with cache_control may be provided. Found 5."}
    with pytest.raises(anthropic.BadRequestError, match="Found 5"):  # a top-level marker takes a slot too
        client.messages.create(model=OPUS, max_tokens=10, messages=[{"role": "user", "content": marked[:4]}],
                               extra_body={"cache_control": EPHEMERAL})
    late_1h = moving_breakpoint(conversation(1), ttl="1h")
    with pytest.raises(anthropic.BadRequestError, match=r"messages\.2\.content\.0\.cache_control\.ttl: a ttl='1h' "
                                                        r"cache_control block must not come after a ttl='5m'"):
        client.messages.create(model=OPUS, max_tokens=10, system=system(), messages=late_1h)
    with pytest.raises(anthropic.BadRequestError, match="ttl"):
        client.messages.create(model=OPUS, max_tokens=10, system=system("2h"), messages=conversation(0))
    odd = [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral", "ttl": ["1h"]}}]
    with pytest.raises(anthropic.BadRequestError, match=r"messages\.0\.content\.0\.cache_control\.ttl"):
        client.messages.create(model=OPUS, max_tokens=10, messages=[{"role": "user", "content": odd}])
    assert [r["usage"] for r in sim.requests] == [None] * 5  # refused requests bill nothing


def test_below_the_minimum_nothing_is_cached(sim):
    """512 tokens for the 5.5 models, 4,096 for Haiku 4.5: a shorter prefix is neither written nor read."""
    client = ant(sim)

    def ask(model: str, words: int):
        block = {"type": "text", "text": "word " * words, "cache_control": EPHEMERAL}
        return client.messages.create(model=model, max_tokens=10, messages=[{"role": "user", "content": [block]}]).usage

    for _ in range(2):
        short = ask(SONNET, 380)  # 1,925 chars + 30 of message framing -> 488 tokens
        assert (short.cache_creation_input_tokens, short.cache_read_input_tokens) == (0, 0)
    assert ask(SONNET, 420).cache_creation_input_tokens == 538  # 2,125 + 30 chars: over 512
    assert ask(SONNET, 420).cache_read_input_tokens == 538
    for _ in range(2):  # 538 tokens is far under Haiku 4.5's 4,096
        haiku = ask("claude-haiku-4-5", 420)
        assert (haiku.cache_creation_input_tokens, haiku.cache_read_input_tokens) == (0, 0)
    # a breakpoint under the minimum caches nothing even when a later one does
    sys_small = [{"type": "text", "text": "Short rules.", "cache_control": EPHEMERAL}]
    client.messages.create(model=OPUS, max_tokens=10, system=sys_small, messages=moving_breakpoint(conversation(0)))
    other = client.messages.create(model=OPUS, max_tokens=10, system=sys_small,
                                   messages=moving_breakpoint(conversation(0, first="Another question.")))
    assert other.usage.cache_read_input_tokens == 0


def nested_mark(messages: list[dict]) -> list[dict]:
    """A copy whose tool results are lists of text blocks, the newest one's last text block marked (the block
    itself is not): the API caches whole top-level blocks, so the mark makes that tool_result a breakpoint."""
    out = orjson.loads(orjson.dumps(messages))
    for message in out:
        for block in message["content"]:
            if block.get("type") == "tool_result":
                block["content"] = [{"type": "text", "text": block["content"]}]
    last = out[-1]["content"][-1]
    assert last["type"] == "tool_result"
    last["content"][-1]["cache_control"] = EPHEMERAL
    return out


def unmarked(messages: list[dict]) -> list[dict]:
    return orjson.loads(orjson.dumps(messages))


@pytest.mark.parametrize("case", ["top-level with block marks", "mark inside a tool_result", "both"])
def test_the_gateways_cache_shadow_splits_a_prompt_as_the_simulator_bills_it(sim, case):
    """The gateway's shadow of a model's cache (sessions.cache) sees the breakpoints the simulator (and the API)
    counts: a top-level ``cache_control`` alongside the system prompt's marks, and a mark inside a tool_result's
    content. Turn by turn its read and write, at the simulator's 4 characters a token, are the billed ones, and
    each turn reads everything the one before wrote (a moved mark changes no prefix)."""
    from cascadeflow.sessions import CacheShadow, PromptShape

    shadow, previous = CacheShadow(), None
    for step, turns in enumerate((1, 2, 3, 5, 9)):
        messages = conversation(turns)
        body = dict(model=OPUS, max_tokens=2048, system=system(), tools=tools(),
                    messages=unmarked(messages) if case == "top-level with block marks" else nested_mark(messages))
        if case != "mark inside a tool_result":
            body["cache_control"] = EPHEMERAL
        usage = ant(sim).messages.create(**body).usage
        shape = PromptShape.of(body, "anthropic")
        split = shadow.split(shape, OPUS, float(step), 0.25, touch=True)
        assert usage.cache_read_input_tokens == split.read // 4, (case, turns)
        assert usage.cache_creation_input_tokens == (split.read + split.write) // 4 - split.read // 4, (case, turns)
        assert shape.breakpoints[-1][0] == shape.blocks - 1 and usage.input_tokens < 50  # cached through the end
        if previous is not None:
            assert usage.cache_read_input_tokens == previous.cache_read_input_tokens + \
                previous.cache_creation_input_tokens, (case, turns)
        previous = usage


def test_automatic_caching_walks_back_over_blocks_that_cannot_carry_a_mark():
    """A top-level ``cache_control`` on a prompt ending in thinking and empty text blocks marks the last block
    that can carry one, in the simulator's cache as in the gateway's shadow of it."""
    from cascadeflow.sessions import CacheShadow, PromptShape
    from cascadeflow.sim.prompt_cache import PromptCache, SimClock

    messages = conversation(3) + [{"role": "assistant", "content": [
        {"type": "text", "text": "Next step."}, {"type": "thinking", "thinking": "think " * 300, "signature": "s"},
        {"type": "text", "text": ""}]}]
    body = {"model": OPUS, "system": system(), "tools": tools(), "messages": messages, "cache_control": EPHEMERAL}
    cache, shadow = PromptCache(SimClock()), CacheShadow()
    for _ in range(2):
        usage = cache.anthropic(body)
        shape = PromptShape.of(body, "anthropic")
        split = shadow.split(shape, OPUS, 0.0, 0.25, touch=True)
        assert (usage.read, usage.write) == (split.read // 4, (split.read + split.write) // 4 - split.read // 4)
    assert usage.read == shape.ends[-3] // 4 < shape.chars // 4 - 300, "cached through 'Next step.', not the thinking"


def test_a_top_level_ttl_other_than_the_last_blocks_is_refused(sim):
    """Automatic caching where the last block already has a mark: the same ttl is a no-op (it still takes one of
    the 4 slots), another ttl is a 400, as Anthropic documents."""
    client = ant(sim)
    messages = moving_breakpoint(conversation(1))
    with pytest.raises(anthropic.BadRequestError, match=r"top-level cache_control \(ttl='1h'\) must have the same"):
        client.messages.create(model=OPUS, max_tokens=10, messages=messages,
                               extra_body={"cache_control": {**EPHEMERAL, "ttl": "1h"}})
    alone = send(sim, conversation(1))
    same = send(sim, conversation(1), extra_body={"cache_control": EPHEMERAL})  # same ttl: a no-op
    assert (same.cache_read_input_tokens, same.cache_creation_input_tokens) == (alone.cache_creation_input_tokens, 0)
    assert alone.cache_creation_input_tokens > 0


# ---------------------------------------------------------------- OpenAI


def chat(n_messages: int, filler: int = 40) -> list[dict]:
    out = [{"role": "system", "content": "You are a careful assistant. " * filler}]
    for i in range(n_messages):
        out.append({"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} " + "detail " * 30})
    return out


def test_openai_caches_from_1024_tokens_in_128_token_steps(sim):
    client = oai(sim)
    small = chat(4, filler=100)  # about 940 tokens: never cached
    assert estimate_input_tokens({"messages": small}) < 1024
    for _ in range(2):
        assert client.chat.completions.create(model="gpt-4o", messages=small).usage.prompt_tokens_details.cached_tokens == 0
    previous: list[dict] | None = None
    cached_seen = []
    for n in range(4, 16, 2):  # a growing conversation: each request repeats the last one's prompt and adds two
        messages = chat(n, filler=140)
        usage = client.chat.completions.create(model="gpt-4o", messages=messages).usage
        cached = usage.prompt_tokens_details.cached_tokens
        if previous is None:
            assert cached == 0
        else:  # the shared prefix is the previous messages' JSON without its closing "]"
            shared = len(orjson.dumps(previous)) - 1
            assert cached == shared // 512 * 128 and cached % 128 == 0 and cached >= 1024
        assert usage.prompt_tokens == estimate_input_tokens({"messages": messages})
        cached_seen.append(cached)
        previous = messages
    assert cached_seen == sorted(cached_seen) and cached_seen[-1] > cached_seen[1]
    billed = [r["usage"] for r in sim.requests][-1]
    assert billed["cache_read_input_tokens"] == cached_seen[-1] and billed["cache_creation_input_tokens"] == 0
    assert billed["input_tokens"] == usage.prompt_tokens - cached_seen[-1]


def test_openai_cache_is_per_model_and_prompt_cache_key_and_expires(sim):
    client = oai(sim)
    messages = chat(6, filler=200)

    def cached(model="gpt-4o", **kw) -> int:
        return client.chat.completions.create(model=model, messages=messages, **kw).usage.prompt_tokens_details.cached_tokens

    assert cached() == 0
    full = cached()
    assert full >= 1024
    assert cached(model="gpt-4o-mini") == 0
    assert cached(prompt_cache_key="session-a") == 0
    assert cached(prompt_cache_key="session-a") == full
    assert cached(prompt_cache_key="session-b") == 0
    sim.advance_clock(590)  # within the 10 minutes of inactivity, and the hit refreshes it
    assert cached() == full
    sim.advance_clock(590)
    assert cached() == full
    sim.advance_clock(601)
    assert cached() == 0
    # the Responses API shares the rules (its input read as a chat), with its own prompt_cache_key
    resp = [{"role": "developer", "content": "You are a careful assistant. " * 200}, {"role": "user", "content": "hi"}]
    first = client.responses.create(model="gpt-5.4", input=resp, prompt_cache_key="codex-1")
    again = client.responses.create(model="gpt-5.4", input=resp, prompt_cache_key="codex-1")
    other = client.responses.create(model="gpt-5.4", input=resp, prompt_cache_key="codex-2")
    assert first.usage.input_tokens_details.cached_tokens == other.usage.input_tokens_details.cached_tokens == 0
    assert again.usage.input_tokens_details.cached_tokens == first.usage.input_tokens // 128 * 128
    assert sim.requests[-2]["usage"]["cache_read_input_tokens"] == again.usage.input_tokens_details.cached_tokens


def test_every_billed_answer_is_on_its_record(sim):
    """Embeddings bill their input; count_tokens and refusals bill nothing (usage None)."""
    got = oai(sim).embeddings.create(model="text-embedding-3-small", input=["alpha beta gamma", "delta"])
    ant(sim).messages.count_tokens(model=OPUS, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError):
        oai(sim).chat.completions.create(model="gpt-4o", messages="not a list")  # type: ignore[arg-type]
    embed, count, refused = sim.requests
    assert embed["usage"] == {"input_tokens": got.usage.prompt_tokens, "output_tokens": 0,
                              "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    assert got.usage.prompt_tokens > 0 and count["usage"] is None and refused["usage"] is None
