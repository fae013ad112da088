"""The bridging breakpoint's choice of block (cascade/bridge.py), on prompts built here."""

from __future__ import annotations

import copy

from cascadeflow.cascade.bridge import add_bridge, find_bridge
from cascadeflow.sessions.cache import CacheShadow, PromptShape

MARK = {"type": "ephemeral"}
MODEL = "claude-opus-5-5"
DRAFT = "claude-haiku-5-5"


def conversation(turns: int, *, first: object = None, tool_ttl: str | None = None) -> dict:
    """A Claude-Code-like prompt: 2 tools, a marked system block, a first message, 2 blocks per turn,
    the breakpoint on the newest block."""
    tools = [{"name": f"T{i}", "description": "d" * 400, "input_schema": {"type": "object"}} for i in range(2)]
    if tool_ttl:
        tools[-1]["cache_control"] = {"type": "ephemeral", "ttl": tool_ttl}
    messages: list = [{"role": "user", "content": first if first is not None else [{"type": "text", "text": "go " * 2000}]}]
    for n in range(turns):
        messages.append({"role": "assistant", "content": [{"type": "tool_use", "id": f"t{n}", "name": "T0", "input": {}}]})
        messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{n}", "content": "r" * 900}]})
    last = messages[-1]["content"]
    if isinstance(last, list):
        last[-1] = {**last[-1], "cache_control": MARK}
    return {"model": MODEL, "tools": tools, "system": [{"type": "text", "text": "s" * 3000, "cache_control": MARK}],
            "messages": messages}


def served(body: dict, now: float = 0.0, model: str = MODEL) -> CacheShadow:
    """The shadow of a model that served ``body``."""
    shadow = CacheShadow()
    shadow.split(PromptShape.of(body, "anthropic"), model, now, 0.25, touch=True)
    return shadow


def test_a_prefix_within_the_lookback_needs_no_bridge():
    shadow = served(conversation(2))
    assert find_bridge(PromptShape.of(conversation(10), "anthropic"), shadow, 1.0) is None  # 16 blocks on: reached


def test_a_run_of_parallel_tool_calls_is_one_position_for_the_bridge_too():
    """30 blocks of parallel calls are 2 lookback positions (a run of tool_use blocks is one, a run of
    tool_result blocks another): the newest breakpoint reaches the prefix, no bridge. 11 single calls (22
    positions) do not reach it; then the bridge goes on the block that ends it."""
    earlier = conversation(2)
    shadow = served(earlier)
    end = PromptShape.of(earlier, "anthropic").breakpoints[-1][0]
    later = conversation(2)
    later["messages"][-1]["content"][-1].pop("cache_control")
    calls = [{"type": "tool_use", "id": f"p{k}", "name": "T0", "input": {"k": k}} for k in range(15)]
    results = [{"type": "tool_result", "tool_use_id": f"p{k}", "content": "r" * 90} for k in range(15)]
    results[-1]["cache_control"] = MARK
    later["messages"] += [{"role": "assistant", "content": calls}, {"role": "user", "content": results}]
    shape = PromptShape.of(later, "anthropic")
    assert shape.blocks - end - 1 == 30 and shape.positions[-1] - shape.positions[end] == 2
    assert find_bridge(shape, shadow, 1.0) is None
    assert shadow.split(shape, MODEL, 1.0, 0.25).read == shape.ends[end]
    far = PromptShape.of(conversation(13), "anthropic")
    assert far.positions[-1] - far.positions[end] == 22 and find_bridge(far, shadow, 1.0) == end


def test_a_prefix_beyond_the_lookback_is_bridged_at_its_last_block():
    earlier, later = conversation(2), conversation(13)
    shadow = served(earlier)
    shape = PromptShape.of(later, "anthropic")
    end = find_bridge(shape, shadow, 1.0)
    assert end == PromptShape.of(earlier, "anthropic").breakpoints[-1][0] == 2 + 1 + 4
    snapshot = copy.deepcopy(later)
    body, bridged = add_bridge(later, later, shape, end)
    assert later == snapshot, "the caller's body is never changed"
    assert body["messages"][4]["content"][0]["cache_control"] == MARK
    assert bridged.breakpoints == tuple(sorted((*shape.breakpoints, (end, 300.0))))
    split = shadow.split(bridged, MODEL, 1.0, 0.25)
    assert split.read == shape.ends[end], "the bridged shape reads the live prefix"
    assert shadow.split(shape, MODEL, 1.0, 0.25).read < split.read
    assert find_bridge(shape, shadow, 400.0) is None, "an expired prefix is not bridged"


def test_no_bridge_without_a_free_breakpoint_or_under_openai_rules():
    shadow = served(conversation(2))
    later = conversation(13)
    later["tools"][0]["cache_control"] = MARK
    later["tools"][1]["cache_control"] = MARK
    later["messages"][25]["content"][0]["cache_control"] = MARK  # out of the prefix's reach too: 4 in all
    assert find_bridge(PromptShape.of(later, "anthropic"), shadow, 1.0) is None
    assert find_bridge(PromptShape.of(conversation(13), "anthropic", "openai"), shadow, 1.0) is None
    with_inner = conversation(13)
    with_inner["tools"][0]["cache_control"] = MARK
    with_inner["messages"][24]["content"][0]["content"] = [{"type": "text", "text": "x", "cache_control": MARK}]
    shape = PromptShape.of(with_inner, "anthropic")
    assert len(shape.breakpoints) == 4 and shape.breakpoints[2][0] == shape.blocks - 3, \
        "the shape sees the tool result's inner mark, as the API does: 4 breakpoints"
    assert find_bridge(shape, shadow, 1.0) is None
    end = PromptShape.of(conversation(2), "anthropic").breakpoints[-1][0]
    assert add_bridge(with_inner, with_inner, shape, end) is None, "the API counts the tool result's inner mark: 4"
    two_inner = conversation(13)  # 2 marks in one tool result: one breakpoint to the shape, 2 to the API's count
    two_inner["messages"][24]["content"][0]["content"] = [{"type": "text", "text": "x", "cache_control": MARK},
                                                          {"type": "text", "text": "y", "cache_control": MARK}]
    shape = PromptShape.of(two_inner, "anthropic")
    end = find_bridge(shape, shadow, 1.0)
    assert end is not None and len(shape.breakpoints) == 3
    assert add_bridge(two_inner, two_inner, shape, end) is None, "the body's own count decides: 4"


def test_a_string_message_is_not_converted_the_next_block_within_reach_is_marked():
    earlier = conversation(0, first="go " * 2000)
    earlier["cache_control"] = MARK  # automatic caching: the string, the last block, is the breakpoint
    del earlier["system"][0]["cache_control"]
    shadow = served(earlier)
    later = conversation(13, first="go " * 2000)
    shape = PromptShape.of(later, "anthropic")
    end = find_bridge(shape, shadow, 1.0)
    body, bridged = add_bridge(later, later, shape, end)
    assert body["messages"][0]["content"] == later["messages"][0]["content"], "the string stays a string"
    assert body["messages"][1]["content"][0]["cache_control"] == MARK
    assert shadow.split(bridged, MODEL, 1.0, 0.25).read == shape.ends[end]


def test_the_bridge_is_1h_before_a_1h_breakpoint_and_a_request_breaking_the_ttl_order_is_left_alone():
    shadow = served(conversation(2))
    later = conversation(13)
    later["messages"][-1]["content"][-1]["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    later["system"][0]["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    shape = PromptShape.of(later, "anthropic")
    body, bridged = add_bridge(later, later, shape, find_bridge(shape, shadow, 1.0))
    assert body["messages"][4]["content"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    broken = conversation(13)  # 5m system block, then a 1h mark: the API refuses it as it is
    broken["messages"][-1]["content"][-1]["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    shape = PromptShape.of(broken, "anthropic")
    assert add_bridge(broken, broken, shape, find_bridge(shape, shadow, 1.0)) is None


def test_a_block_the_target_sees_differently_is_not_marked():
    shadow = served(conversation(2))
    later = conversation(13)
    shape = PromptShape.of(later, "anthropic")
    end = find_bridge(shape, shadow, 1.0)
    view = copy.deepcopy(later)
    view["messages"][4]["content"] = [{"type": "text", "text": "rendered"}]
    view["messages"][5]["content"] = [{"type": "text", "text": "rendered"}]
    for message in view["messages"][6:]:
        message["content"] = [{"type": "text", "text": "rendered"}]
    assert add_bridge(view, later, shape, end) is None


def test_a_turn_prices_sends_and_records_the_bridged_prompt():
    from cascadeflow.cascade.session import SessionBook, Turn
    from cascadeflow.pricing import ModelRegistry
    from cascadeflow.sessions.state import MemorySessions, SessionState

    book = SessionBook(MemorySessions(), ModelRegistry(use_genai_prices=False))
    state = SessionState(shadows={MODEL: served(conversation(2))}, per_char=0.25)
    later = conversation(13)
    turn = Turn(book, "k", state, later, "anthropic", MODEL, lambda model: "anthropic", 1.0)
    plain = turn.shape(MODEL)
    assert len(turn.reach(MODEL).breakpoints) == len(plain.breakpoints) + 1, "priced as the upstream will read it"
    assert state.shadows[MODEL].split(turn.reach(MODEL), MODEL, 1.0, 0.25).read == plain.ends[7]
    sent = turn.bridge(MODEL, later)
    assert sent is not later and "cache_control" not in later["messages"][4]["content"][0]
    assert turn.sent_shape(MODEL) == turn.reach(MODEL)
    assert turn.bridge("claude-haiku-5-5", later) is later, "a model with no live prefix: the body itself"


def test_the_record_counts_the_split_the_economics_priced_as_the_upstream_read_it():
    """The record reuses the draft's split from the economics instead of walking the lookup again: the shadow
    it leaves is the one walking the lookup on the prompt as sent leaves — bridged, not bridged, and priced with
    a bridge that was not sent (then the split priced is not what the upstream read, and is not reused)."""
    from cascadeflow import Usage
    from cascadeflow.cascade.session import SessionBook, Turn
    from cascadeflow.pricing import ModelRegistry
    from cascadeflow.sessions.state import MemorySessions, SessionState

    verifier, usage = "claude-opus-5-5", Usage(40, 20, 1200, 20_000)
    book = SessionBook(MemorySessions(), ModelRegistry())  # priced: the economics run
    for turns, send_bridge in ((3, True), (13, True), (13, False)):
        state = SessionState(shadows={DRAFT: served(conversation(2), model=DRAFT)}, per_char=0.25)
        expected = CacheShadow(dict(state.shadows[DRAFT].entries))
        turn = Turn(book, f"k{turns}{send_bridge}", state, conversation(turns), "anthropic", verifier,
                    lambda model: "anthropic", 1.0)
        assert turn.economics([(DRAFT, 10, 1)], verifier)[0] is not None
        if send_bridge:
            turn.bridge(DRAFT, conversation(turns))
        bridged = len(turn.sent_shape(DRAFT).breakpoints) > len(turn.shape(DRAFT).breakpoints)
        assert bridged == (turns == 13 and send_bridge)
        expected.split(turn.sent_shape(DRAFT), DRAFT, 1.0, turn.per_char, touch=True)
        turn.end([(DRAFT, usage)], drafted=True, accepted=True, served=usage, tool_ids=[])
        book.settle(turn)
        assert state.shadows[DRAFT].entries == expected.entries


def test_the_decision_prices_a_tiered_draft_at_the_tier_of_the_conversations_size():
    """claude-haiku-5-5's rates rise past a prompt size (genai-prices' tiers; every token then pays the tier's
    rate): the economics price the draft at the tier the conversation is in, not at the base, and a flat
    price the same at any size."""
    from cascadeflow import Usage
    from cascadeflow.cascade.session import SessionBook, Turn
    from cascadeflow.pricing import ModelRegistry
    from cascadeflow.sessions.state import MemorySessions, SessionState

    registry = ModelRegistry()
    tiers = registry.info(DRAFT).rates  # type: ignore[union-attr]
    assert tiers is not None and tiers.starts, "claude-haiku-5-5's price is tiered in genai-prices' data"
    above = tiers.starts[0] + 50_000
    book = SessionBook(MemorySessions(), registry)
    base, upper = book.rates(DRAFT, 1_000), book.rates(DRAFT, above)
    assert base is not None and upper is not None and upper[0] > base[0]
    assert upper[0] == registry.cost(DRAFT, Usage(above, 0)) / above  # type: ignore[operator]
    assert base[0] == registry.cost(DRAFT, Usage(1_000, 0)) / 1_000  # type: ignore[operator]
    assert book.rates(MODEL, 1_000) == book.rates(MODEL, above)  # a flat price

    flat = ModelRegistry()  # the draft at its base rates whatever the size: what the decision assumed before
    plain, out, write, read = base
    flat.register(DRAFT, provider="anthropic", input_per_mtok=plain * 1e6, output_per_mtok=out * 1e6,
                  cache_read_per_mtok=read * 1e6, cache_write_per_mtok=write * 1e6)

    def saving(registry: ModelRegistry, chars: int) -> float:
        body = conversation(2, first=[{"type": "text", "text": "g" * chars}])
        turn = Turn(SessionBook(MemorySessions(), registry), "k", SessionState(per_char=0.25), body, "anthropic",
                    MODEL, lambda model: "anthropic", 1.0)
        found = turn.economics([(DRAFT, 10, 1)], MODEL)[0]
        assert found is not None
        return found[1]

    small = 8_000  # ~3k tokens at 0.25 a character: the base tier
    assert saving(registry, small) == saving(flat, small)
    large = above * 4  # past the tier's start
    assert saving(registry, large) < saving(flat, large)
