"""Conversation state: cache shadows under Anthropic's and OpenAI's rules, the economics, bounded stores."""

from __future__ import annotations

import copy
import gc
import uuid

import orjson
import pytest

from cascadeflow.cascade.economics import Prices, chain_savings, expected_saving, failure_chance
from cascadeflow.sessions import CacheShadow, MemorySessions, PromptShape, RedisSessions, SessionState
from tests.unit.redis_db import REDIS, require_redis

OPUS = "claude-opus-5-5"
MARK = {"type": "ephemeral"}


def body(turns: int, *, ttl: str | None = None) -> dict:
    """A Claude-Code-shaped request after ``turns`` tool round trips; the last block carries the breakpoint."""
    control = {**MARK, "ttl": ttl} if ttl else MARK
    messages: list = [{"role": "user", "content": [{"type": "text", "text": "Fix the failing test " * 50}]}]
    for n in range(turns):
        messages.append({"role": "assistant", "content": [{"type": "tool_use", "id": f"t{n}", "name": "Read", "input": {"n": n}}]})
        messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{n}", "content": "x" * 400}]})
    messages[-1]["content"][-1]["cache_control"] = control
    system = [{"type": "text", "text": "billing"}, {"type": "text", "text": "You are an agent. " * 400, "cache_control": MARK}]
    return {"system": system, "tools": [{"name": "Read", "input_schema": {"type": "object"}}], "messages": messages}


def split(shadow: CacheShadow, request: dict, now: float, model: str = OPUS):
    return shadow.split(PromptShape.of(request, "anthropic"), model, now, 0.25, touch=True)


def test_a_growing_conversation_reads_what_the_last_turn_wrote():
    shadow = CacheShadow()
    first = split(shadow, body(1), 0)
    assert first.read == 0 and first.write == first.total - 0  # everything up to the last breakpoint is written
    second = split(shadow, body(2), 10)
    shape1 = PromptShape.of(body(1), "anthropic")
    assert second.read == shape1.chars and second.write == second.total - shape1.chars
    again = split(shadow, body(2), 20)
    assert (again.read, again.write) == (again.total, 0)


def test_the_lookup_walks_back_at_most_20_blocks():
    shadow = CacheShadow()
    split(shadow, body(1), 0)
    far = split(shadow, body(12), 10)  # 22 blocks later: the conversation entry is out of reach
    system = PromptShape.of(body(12), "anthropic")
    system_end = system.ends[system.breakpoints[0][0]]
    assert far.read == system_end, "only the system prompt's breakpoint is still found"
    assert far.write == far.total - system_end


def test_entries_expire_after_their_ttl_and_hits_refresh_them():
    shadow = CacheShadow()
    split(shadow, body(1), 0)
    assert split(shadow, body(1), 290).read > 0  # a hit at 290 s refreshes the 5-minute entry
    assert split(shadow, body(1), 580).read > 0
    assert split(shadow, body(1), 900).read == 0, "5 minutes without a hit: gone"
    hour = CacheShadow()
    split(hour, body(1, ttl="1h"), 0)
    assert split(hour, body(1, ttl="1h"), 3000).read > 0


def test_below_the_minimum_nothing_is_cached():
    tiny = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": MARK}]}]}
    shadow = CacheShadow()
    assert split(shadow, tiny, 0).write == 0 and split(shadow, tiny, 1).read == 0
    assert split(CacheShadow(), tiny, 0, "claude-haiku-5-5").write == 0


def test_openai_caches_prefixes_automatically_in_128_token_steps():
    messages = [{"role": "system", "content": "s" * 6000}, {"role": "user", "content": "q" * 100}]
    shadow = CacheShadow()
    first = shadow.split(PromptShape.of({"messages": messages}, "openai"), "gpt-5.4", 0, 0.25, touch=True)
    assert (first.read, first.write) == (0, 0)
    longer = {"messages": [*messages, {"role": "assistant", "content": "a"}, {"role": "user", "content": "more"}]}
    second = shadow.split(PromptShape.of(longer, "openai"), "gpt-5.4", 5, 0.25)
    assert second.read > 0 and second.read % 512 == 0, "128 tokens = 512 characters at 4 per token"
    assert second.read <= PromptShape.of({"messages": messages}, "openai").chars


def test_failure_chance_learns_from_the_conversation_and_the_rule():
    assert failure_chance(0, 0, 0, 0) == pytest.approx(0.1)
    assert failure_chance(0, 0, 100, 2) < 0.05  # a rule whose drafts rarely fail
    assert failure_chance(6, 3, 100, 2) > 0.3  # …but this conversation's do


def test_drafting_pays_only_when_the_expectation_says_so():
    def prices(draft=0.0025, draft_warm=0.0025, warm=0.0106, growth=0.0061):
        return Prices(draft, draft_warm, warm, growth)

    # both caches warm, the draft cheap: drafting pays unless it fails often
    assert expected_saving(prices(), 0.05, 10) > 0
    assert expected_saving(prices(), 0.6, 10) < 0
    # a draft half the verifier's price, on a cached conversation, saves for good only the verifier's reads and
    # output, which its own turn costs more than: it never drafts, however rarely it fails (the verifier's writes
    # it would put off are paid at once by any later escalation)
    half = prices(draft=0.0052, draft_warm=0.0052)
    assert expected_saving(half, 0.0, 50) < 0
    # …while on a conversation that is not cached (nothing written), the same draft pays
    assert expected_saving(prices(draft=0.0052, draft_warm=0.0052, growth=0.0), 0.1, 10) > 0
    # a cold draft cache must be paid for by the turns the draft then saves
    assert expected_saving(prices(draft=0.023), 0.25, 5) < 0 < expected_saving(prices(draft=0.023), 0.02, 30)


def test_one_stage_chain_is_the_single_draft_formula_exactly():
    for prices, p_fail, turns in ((Prices(0.0025, 0.0025, 0.0106, 0.0061), 0.05, 10),
                                  (Prices(0.023, 0.0025, 0.0106, 0.0061), 0.25, 5),
                                  (Prices(0.0052, 0.0052, 0.0106, 0.0061), 0.0, 50)):
        saving = expected_saving(prices, p_fail, turns)
        assert chain_savings([(prices, p_fail)], turns) == [(saving, saving)]
        # a stage behind one that does not pay is priced against the verifier alone, as if it were the only one
        worse = Prices(0.02, 0.02, 0.0106, 0.0061)
        assert chain_savings([(prices, p_fail), (worse, 0.5)], turns)[0] == (saving, saving)


def test_a_chain_is_priced_backwards_each_stage_on_its_own_failure_rate():
    haiku = Prices(0.0025, 0.0025, 0.0106, 0.0061)
    cheap = Prices(0.0006, 0.0006, 0.0106, 0.0061)
    alone = expected_saving(haiku, 0.05, 10)
    # a cheap first stage that rarely fails pays in front of Haiku: it saves over Haiku's chain, and the chain it
    # heads saves more than Haiku alone
    (saving, chain), (haiku_saving, haiku_chain) = chain_savings([(cheap, 0.1), (haiku, 0.05)], 10)
    assert (haiku_saving, haiku_chain) == (alone, alone)
    assert saving > 0 and chain == pytest.approx(alone + saving) and chain > alone
    # the same stage failing almost every turn costs its own turn and Haiku's on top: it is passed over, however
    # often Haiku then rescues the turn (its own rate, not the chain's, is what counts)
    assert chain_savings([(cheap, 0.9), (haiku, 0.05)], 10)[0][0] < 0  # type: ignore[index]
    # behind a first stage, Haiku is priced on its cache as it is now: cold, it makes the first stage's failures
    # dearer (the cold write each time it is reached), so the first stage must fail less to pay
    cold = Prices(0.02, 0.0025, 0.0106, 0.0061)
    warm_front = chain_savings([(cheap, 0.3), (haiku, 0.05)], 10)[0]
    cold_front = chain_savings([(cheap, 0.3), (cold, 0.05)], 10)[0]
    assert warm_front is not None and cold_front is not None and cold_front[0] < warm_front[0]
    # a stage that cannot be priced adds nothing to the chain
    assert chain_savings([(cheap, 0.1), None, (haiku, 0.05)], 10) == [
        *chain_savings([(cheap, 0.1), (haiku, 0.05)], 10)[:1], None, (alone, alone)]


def test_each_stage_record_survives_a_round_trip_and_older_states_read():
    state = SessionState(drafts=2, failures=0.5, stages={"cheap-coder": [2.0, 1.9], "claude-haiku-5-5": [1.0, 0.0]})
    assert SessionState.from_json(state.to_json()).stages == state.stages
    older = b'{"d": 3, "f": 1, "n": 4}'  # written by a gateway that kept no per-stage record
    assert (SessionState.from_json(older).drafts, SessionState.from_json(older).stages) == (3, {})
    damaged = b'{"st": {"a": [1, 2, 3], "b": "x", "c": [1, 0]}}'
    assert SessionState.from_json(damaged).stages == {"c": [1.0, 0.0]}


async def test_memory_sessions_are_bounded_and_any_id_is_fine():
    store = MemorySessions(max_sessions=100)
    for n in range(1_000):
        await store.put(f"s:{uuid.uuid4()}" if n % 2 else "\x00" * 5000 + str(n), SessionState(drafts=n))
    assert len(store) == 100
    assert (await store.get("never seen")).drafts == 0


async def test_memory_sessions_keep_the_least_recently_used_as_json_and_read_them_back_exactly():
    """Past ``live`` conversations the older states are kept as bytes (nothing for the collector to scan); a
    conversation that comes back reads the state it left, equal in every field, and is live again."""
    store = MemorySessions(max_sessions=20, live=3)
    states = {}
    for n in range(10):
        state = SessionState(drafts=n + 0.1, failures=n / 3, per_char=0.27, output=401.5, pending_model="h",
                             pending_calls=[f"toolu_{n}"], requested=OPUS, turns=n, last_chars=1000 + n,
                             pending_request=f"req-{n}", stages={"h": [n * 0.95, 0.5]})
        split(state.shadow(OPUS), body(n + 1), 100 + n)
        split(state.shadow("claude-haiku-5-5"), body(n + 1), 100 + n)
        states[f"s{n}"] = state
        await store.put(f"s{n}", state)
    assert len(store) == 10
    alive = sum(isinstance(o, SessionState) for o in gc.get_objects())
    kept = {key: state.to_json() for key, state in states.items()}
    states.clear()
    gc.collect()
    assert sum(isinstance(o, SessionState) for o in gc.get_objects()) == alive - 7, "only the 3 newest stay objects"
    for n in (0, 9, 4, 0):  # the oldest (stored), the newest (live), one in between; the first again (live now)
        back = await store.get(f"s{n}")
        assert back.to_json() == kept[f"s{n}"]
        assert back.shadows[OPUS].entries and back.stages == {"h": [n * 0.95, 0.5]}
    assert await store.get("s0") is await store.get("s0"), "live again: every request of it gets the same state"
    for n in range(10, 30):  # past max_sessions: the least recently used go first, stored or live
        await store.put(f"s{n}", SessionState(drafts=n))
    assert len(store) == 20
    assert (await store.get("s9")).drafts == 0 and (await store.get("s29")).drafts == 29


async def test_redis_sessions_are_shared_and_survive_a_round_trip():
    await require_redis()
    one, other = RedisSessions(REDIS, ttl_seconds=60), RedisSessions(REDIS, ttl_seconds=60)
    state = SessionState(drafts=3, failures=1, per_char=0.26, pending_calls=["toolu_1"])
    split(state.shadow(OPUS), body(2), 100)
    conversation = f"s:{uuid.uuid4()}"
    try:
        await one.put(conversation, state)
        back = await other.get(conversation)
        assert (back.drafts, back.failures, back.pending_calls) == (3, 1, ["toolu_1"])
        assert back.shadows[OPUS].entries == state.shadows[OPUS].entries
    finally:
        await one.aclose()
        await other.aclose()
    down = RedisSessions("redis://127.0.0.1:1/0", timeout=0.2)
    assert (await down.get(conversation)).drafts == 0, "Redis down: a fresh state, no error"
    await down.put(conversation, state)
    await down.aclose()


def test_a_grown_shape_is_the_shape_of_the_whole_request_whatever_changed():
    """The next request of a conversation is hashed from what the previous one left (only its new messages);
    every kind of change from one request to the next gives exactly the shape computed from scratch."""
    import copy

    def edits(request: dict, n: int) -> dict:
        request = copy.deepcopy(request)
        if n % 5 == 3:  # an edited history (a compaction, a cleared tool result)
            request["messages"][2]["content"][0]["content"] = "[Old tool result content cleared]"
        if n % 7 == 2:  # another system prompt
            request["system"][0]["text"] += " v2"
        if n % 4 == 1:  # a top-level breakpoint instead of block ones
            for message in request["messages"]:
                for block in message["content"]:
                    block.pop("cache_control", None)
            request["cache_control"] = MARK
        if n % 3 == 0:  # a top-level breakpoint alongside the block ones
            request["cache_control"] = MARK
        if n % 8 == 4:  # a breakpoint inside a tool result's content
            request["messages"][-1]["content"][0]["content"] = [{"type": "text", "text": "y", "cache_control": MARK}]
        if n % 6 == 5:  # fewer messages than before (a rewound conversation)
            request["messages"] = request["messages"][:3]
        return request

    for dialect, rules in (("anthropic", "anthropic"), ("anthropic", "openai"), ("openai", "openai")):
        seen = None
        for n in range(1, 16):
            request = edits(body(n), n)
            grown, seen = PromptShape.grown(request, dialect, rules, seen)
            assert grown == PromptShape.of(request, dialect, rules), (dialect, rules, n)
    seen = None  # runs of parallel tool calls: positions carried from the blocks kept
    for n in range(2, 9):
        request = parallel(n, 1 + n % 4)
        if n % 3 == 0:  # a run that goes on in the next message (two user messages in a row)
            request["messages"].append({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "late", "content": "z", "cache_control": MARK}]})
        grown, seen = PromptShape.grown(request, "anthropic", None, seen)
        assert grown == PromptShape.of(request, "anthropic", None) and list(grown.positions) == _positions(request), n
    # the message whose breakpoint moved off it is hashed again, not reused with its old mark
    first, seen = PromptShape.grown(body(2), "anthropic", None, None)
    second, _ = PromptShape.grown(body(3), "anthropic", None, seen)
    assert first.breakpoints[-1] not in second.breakpoints and second.breakpoints[-1][0] == second.blocks - 1


def test_the_shape_counts_breakpoints_as_the_api_does():
    """A top-level ``cache_control`` adds a breakpoint at the last block alongside the block marks (none where
    that block has one); a mark inside a tool result's content makes the tool result a breakpoint; a mark is
    not prompt, so neither changes a block's size or prefix. (The simulator's billing of the same requests is
    compared with the shadow's split in test_sim_cache.py.)"""
    request = body(3)
    plain = PromptShape.of(request, "anthropic")
    system_mark, last = plain.breakpoints[0], (plain.blocks - 1, 300.0)
    assert plain.breakpoints == (system_mark, last)
    request["messages"][-1]["content"][-1].pop("cache_control")
    unmarked = PromptShape.of(request, "anthropic")
    assert unmarked.breakpoints == (system_mark,)
    top = PromptShape.of({**request, "cache_control": {**MARK, "ttl": "1h"}}, "anthropic")
    assert top.breakpoints == (system_mark, (plain.blocks - 1, 3600.0)), "the top-level mark is not ignored"
    both = PromptShape.of({**body(3), "cache_control": MARK}, "anthropic")
    assert both.breakpoints == plain.breakpoints, "a no-op on a last block that has a mark"
    inner = copy.deepcopy(request)
    inner["messages"][4]["content"][0]["content"] = [{"type": "text", "text": "x" * 400, "cache_control": MARK}]
    nested = PromptShape.of(inner, "anthropic")
    assert nested.breakpoints == (system_mark, (plain.blocks - 3, 300.0))
    inner["messages"][4]["content"][0]["content"][0].pop("cache_control")
    same = PromptShape.of(inner, "anthropic")
    assert (same.hashes, same.ends) == (nested.hashes, nested.ends) and same.breakpoints == (system_mark,)
    assert top.hashes == unmarked.hashes == plain.hashes
    thinking = copy.deepcopy(request)  # automatic caching walks back over thinking and empty text blocks
    thinking["messages"].append({"role": "assistant", "content": [
        {"type": "text", "text": "Next"}, {"type": "thinking", "thinking": "t", "signature": "s"},
        {"type": "text", "text": ""}]})
    walked = PromptShape.of({**thinking, "cache_control": MARK}, "anthropic")
    assert walked.breakpoints == (system_mark, (walked.blocks - 3, 300.0))


def test_the_prompts_kept_for_the_next_turn_are_bounded():
    """A client that sends a new conversation id on every request: the previous prompts kept stay bounded."""
    import asyncio

    from cascadeflow import ModelRegistry
    from cascadeflow.cascade.session import _SEEN_PROMPTS, SessionBook
    from cascadeflow.config import CascadeRule

    async def run() -> int:
        book = SessionBook(MemorySessions(), ModelRegistry(use_genai_prices=False))
        rule = CascadeRule(request_model=OPUS, draft_model="claude-haiku-5-5")
        for n in range(_SEEN_PROMPTS + 40):
            turn = await book.begin(rule, body(1), "anthropic", f"conversation-{n}", OPUS, lambda model: "anthropic")
            assert turn is not None
            turn.shape(OPUS)
        await book.aclose()
        return len(book._seen)

    assert asyncio.run(run()) == _SEEN_PROMPTS


def _positions(request: dict) -> list[int]:
    """Each block's lookback position, from the request itself: a block is a position, except that a run of
    consecutive tool_use blocks counts as one, and so does a run of consecutive tool_result blocks."""
    kinds = [None] * len(request.get("tools") or ()) + [None] * len(request.get("system") or ())
    for message in request["messages"]:
        content = message["content"]
        kinds += [block.get("type") if isinstance(block, dict) else None
                  for block in (content if isinstance(content, list) else [content])]
    positions, previous = [], None
    for kind in kinds:
        run = kind if kind in ("tool_use", "tool_result") else None
        positions.append((positions[-1] if positions else -1) + (0 if run is not None and run == previous else 1))
        previous = run
    return positions


def _split_walking_every_window(shadow: CacheShadow, shape: PromptShape, model: str, now: float, per_char: float,
                                positions: list[int]):
    """The lookup as the docs state it, without shortcuts: every breakpoint's whole window of 20 positions
    (its own the first), the longest live hit."""
    from cascadeflow.sessions.cache import CacheSplit, min_cacheable_tokens

    best = -1
    for index, _ in shape.breakpoints:
        for i in range(index, -1, -1):
            if positions[index] - positions[i] >= 20:
                break
            entry = shadow.entries.get(shape.hashes[i])
            if entry is not None and entry[1] > now:
                best = max(best, i)
                break
    read = shape.ends[best] if best >= 0 else 0
    floor = min_cacheable_tokens(model) / per_char
    cacheable = [i for i, _ in shape.breakpoints if shape.ends[i] >= floor]
    last = cacheable[-1] if cacheable else -1
    return CacheSplit(read, max(0, shape.ends[last] - read) if last > best else 0, shape.chars)


def parallel(turns: int, calls: int, *, split_runs: bool = False) -> dict:
    """:func:`body` whose round trips after the first are ``calls`` parallel tool calls: the assistant's
    tool_use blocks in a row, then their tool_result blocks (``split_runs``: a text block before each
    tool_use and each tool_result, so that no two are consecutive)."""
    request = body(turns)
    for n, message in enumerate(request["messages"][3:], start=2):
        kind = "tool_use" if message["role"] == "assistant" else "tool_result"
        blocks = []
        for k in range(calls):
            if split_runs:
                blocks.append({"type": "text", "text": f"call {k}"})
            blocks.append({"type": "tool_use", "id": f"t{n}-{k}", "name": "Read", "input": {"k": k}} if kind == "tool_use"
                          else {"type": "tool_result", "tool_use_id": f"t{n}-{k}", "content": "x" * 40})
        message["content"] = blocks
    request["messages"][-1]["content"][-1]["cache_control"] = MARK
    return request


def test_a_run_of_parallel_tool_calls_is_one_lookback_position():
    """Anthropic's rule: "a run of consecutive tool_use blocks counts as one position, and so does a run of
    consecutive tool_result blocks". A turn of 15 parallel calls adds 30 blocks but 2 positions: the previous
    turn's entry is still read. The same calls with a text block before each (60 positions) are out of reach."""
    earlier = body(1)
    for split_runs, reached in ((False, True), (True, False)):
        shadow = CacheShadow()
        split(shadow, earlier, 0)
        later = parallel(2, 15, split_runs=split_runs)
        shape, before = PromptShape.of(later, "anthropic"), PromptShape.of(earlier, "anthropic")
        assert shape.hashes[before.blocks - 1] == before.hashes[-1], "the earlier prompt is a prefix of the later"
        assert shape.positions[-1] - shape.positions[before.blocks - 1] == (60 if split_runs else 2)
        read = shadow.split(shape, OPUS, 10, 0.25).read
        if reached:
            assert read == before.chars
        else:  # the system prompt's own breakpoint still reads the system prefix
            assert 0 < read < before.chars


def test_the_lookup_finds_what_walking_every_window_finds():
    """The split stops walking below the best entry found so far: the same answer as walking every window, for
    conversations with breakpoints far apart and close together, runs of parallel tool calls, entries live and
    expired, any model's floor."""
    import random

    rng = random.Random(7)

    def marked(turns: int) -> dict:  # extra breakpoints anywhere: windows overlap, entries lie at any distance
        request = parallel(turns, rng.choice((1, 1, 3, 9))) if turns > 1 else body(turns)
        for message in request["messages"]:
            if rng.random() < 0.2:
                message["content"][-1]["cache_control"] = MARK
        return request

    for trial in range(400):
        turns = rng.randint(1, 40)
        request = marked(turns)
        shadow, now = CacheShadow(), 0.0
        for _ in range(rng.randint(0, 5)):  # earlier turns wrote entries, some of them expired since
            now += rng.choice((10.0, 100.0, 400.0))
            split(shadow, marked(rng.randint(1, turns)), now)
        for key in list(shadow.entries):
            if rng.random() < 0.2:
                del shadow.entries[key]
        shape = PromptShape.of(request, "anthropic")
        positions = _positions(request)
        assert list(shape.positions) == positions, trial
        for model in (OPUS, "claude-opus-4-6", "claude-haiku-3"):
            per_char = rng.choice((0.05, 0.25, 0.3))
            at = now + rng.choice((0.0, 200.0, 350.0))
            assert shadow.split(shape, model, at, per_char) == _split_walking_every_window(
                shadow, shape, model, at, per_char, positions), trial


def test_the_failure_words_gate_the_failure_pattern_exactly():
    from cascadeflow.cascade.session import _FAILED, _failed

    texts = ["Traceback (most recent call last):\n  File", "Traceback only", "exit code 1", "Exit code: 2", "exit code 0",
             "3 failed, 2 passed", "0 failed", "FAILED tests/x.py", "PASSED", "", "nothing failed here", "xFAILEDx",
             "the build failed", "Process exited with exit code 137", "Process exited with code 3",
             "Process exited with code 0", "exit status 1", "exit status 0", '{"metadata":{"exit_code":1}}',
             '{"metadata":{"exit_code": 0}}', '"exit_code": 12']
    for text in texts:
        assert _failed(text) == (_FAILED.search(text) is not None), text
    assert [_failed(t) for t in texts[-7:]] == [True, False, True, False, True, False, True]


async def test_redis_sessions_decode_only_what_another_process_wrote():
    """A process reuses the state it wrote itself while Redis still holds those bytes; once another process
    has written, it reads theirs; a state is handed to one request only (that request may change it)."""
    await require_redis()
    one, other = RedisSessions(REDIS, ttl_seconds=60), RedisSessions(REDIS, ttl_seconds=60)
    conversation = f"s:{uuid.uuid4()}"
    try:
        mine = SessionState(drafts=1, turns=1)
        await one.put(conversation, mine)
        assert await one.get(conversation) is mine, "its own write, unchanged in Redis: not decoded again"
        again = await one.get(conversation)
        assert again is not mine and again.turns == 1, "the second reader gets its own copy"
        again.turns = 2
        await other.put(conversation, again)
        theirs = await one.get(conversation)
        assert theirs.turns == 2, "another process wrote since: its state, not the one remembered"
        await one.put(conversation, SessionState(turns=3))
        await other.put(conversation, SessionState(turns=4))
        assert (await one.get(conversation)).turns == 4
    finally:
        await one.aclose()
        await other.aclose()


def test_prefix_keys_are_the_crc_of_the_prompt_so_far():
    """A shadow's keys are stored (Redis) and read by other gateway processes, of this version or another: each
    block's key is the CRC-32 and length of the prompt up to it — each tool, system and message block with a
    comma after it, except a message's first block, which counts with the message's role and brackets before it."""
    import struct
    import zlib

    import orjson

    request = body(3)
    request["messages"].insert(1, {"role": "user", "content": "a string message"})
    request["messages"][0]["content"].append({"type": "text", "text": "second block"})
    pieces = [orjson.dumps(t) + b"," for t in request["tools"]]
    pieces += [orjson.dumps({k: v for k, v in b.items() if k != "cache_control"}) + b"," for b in request["system"]]
    for message in request["messages"]:
        content = message["content"]
        blocks = content if isinstance(content, list) else [content]
        frame = b'{"role":' + orjson.dumps(message["role"])
        frame += b',"content":[]}' if isinstance(content, list) else b',"content":}'
        for i, block in enumerate(blocks):
            bare = {k: v for k, v in block.items() if k != "cache_control"} if isinstance(block, dict) else block
            data = orjson.dumps(bare)
            pieces.append(frame + data if i == 0 else data + b",")
    shape = PromptShape.of(request, "anthropic")
    prompt = b""
    for i, piece in enumerate(pieces):
        prompt += piece
        assert shape.ends[i] == len(prompt)
        assert shape.hashes[i] == struct.pack("<IQ", zlib.crc32(prompt), len(prompt)), i
    assert shape.blocks == len(pieces)


def test_a_sub_agent_is_named_by_its_tools_however_they_are_written():
    """The conversation key names the tools: the names of Anthropic tools and of OpenAI functions, in order;
    anything that is not a tool is left out."""
    from cascadeflow.cascade.session import _tools_digest

    anthropic = {"tools": [{"name": "Read"}, {"name": "Bash"}]}
    openai = {"tools": [{"type": "function", "function": {"name": name}} for name in ("Read", "Bash")]}
    mixed = {"tools": [{"name": "Read"}, "junk", {"function": {"name": "Bash"}}]}
    assert _tools_digest(anthropic) == _tools_digest(openai) == _tools_digest(mixed)
    assert _tools_digest(anthropic) != _tools_digest({"tools": [{"name": "Bash"}, {"name": "Read"}]})
    nothing = _tools_digest({})
    assert nothing == _tools_digest({"tools": []}) == _tools_digest({"tools": "none"}) != _tools_digest(anthropic)


def test_a_turn_recorded_after_its_answer_is_read_in_order_by_the_next_one():
    """The record waits for the answer to go out (in memory); the conversation's next request, arriving before
    the gateway ran it, runs it first and reads the state it leaves: the same figures as recording at once."""
    import asyncio

    from cascadeflow import ModelRegistry, Usage
    from cascadeflow.cascade.session import SessionBook
    from cascadeflow.config import CascadeRule

    rule = CascadeRule(request_model=OPUS, draft_model="claude-haiku-5-5")
    usage = Usage(40, 20, 1200, 20_000)

    async def run(settle: bool) -> list[tuple]:
        book = SessionBook(MemorySessions(), ModelRegistry(use_genai_prices=False), clock=lambda: 100.0)
        seen = []
        for n in range(1, 5):
            request = body(n)
            turn = await book.begin(rule, request, "anthropic", "c", OPUS, lambda model: "anthropic")
            assert turn is not None
            seen.append((turn.state.turns, turn.state.drafts, turn.signal(), turn.baseline(usage, 20)))
            turn.end([("claude-haiku-5-5", usage)], drafted=True, accepted=True, served=usage, tool_ids=[f"t{n}"])
            if settle:
                assert turn.state.turns == n - 1, "not recorded before the answer is out"
                book.settle(turn)
                assert turn.state.turns == n
        await book.aclose()
        return seen

    at_once, left = asyncio.run(run(True)), asyncio.run(run(False))
    assert at_once == left
    assert [s[0] for s in left] == [0, 1, 2, 3] and left[-1][1] > 2


async def test_with_a_shared_store_the_answer_waits_for_the_conversations_state_to_be_written():
    """With Redis the conversation's next request may reach another process as soon as the client has this
    answer: :meth:`SessionBook.stored` (the engine awaits it before answering) returns only once the write is
    done, however slow; with the in-memory store there is nothing to wait for."""
    import asyncio

    from cascadeflow import ModelRegistry, Usage
    from cascadeflow.cascade.session import SessionBook
    from cascadeflow.config import CascadeRule

    class SlowShared:  # a store other processes read (as RedisSessions), slow to write
        def __init__(self) -> None:
            self.written: list[str] = []

        async def get(self, conversation: str) -> SessionState:
            return SessionState()

        async def put(self, conversation: str, state: SessionState) -> None:
            await asyncio.sleep(0.05)
            self.written.append(conversation)

        async def aclose(self) -> None:
            pass

    rule, usage = CascadeRule(request_model=OPUS, draft_model="claude-haiku-5-5"), Usage(40, 20, 1200, 20_000)
    for sessions in (SlowShared(), MemorySessions()):
        book = SessionBook(sessions, ModelRegistry(use_genai_prices=False))  # type: ignore[arg-type]
        assert book.defers == isinstance(sessions, MemorySessions)
        turn = await book.begin(rule, body(1), "anthropic", "c", OPUS, lambda model: "anthropic")
        assert turn is not None
        turn.end([("claude-haiku-5-5", usage)], drafted=True, accepted=True, served=usage, tool_ids=["t1"])
        await book.stored(turn)
        if isinstance(sessions, SlowShared):
            assert sessions.written == [turn.key]
        await book.stored(None)
        await book.aclose()


def test_a_responses_turn_is_its_run_of_calls_with_its_reasoning_and_message():
    """In a Responses thread a model turn is its reasoning, an optional message and its calls; the outputs of the
    turn before end it. A loop is the same calls twice in a row; a user message between two turns ends the search."""
    from cascadeflow.cascade.session import _repeats_previous_calls, _tool_results

    def turn(n: int, cmd: str) -> list[dict]:
        return [{"type": "reasoning", "id": f"rs_{n}", "summary": []},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Looking."}]},
                {"type": "function_call", "call_id": f"c{n}", "name": "exec_command", "arguments": f'{{"cmd":"{cmd}"}}'},
                {"type": "function_call_output", "call_id": f"c{n}", "output": "Exit code: 0\nOutput:\nok"}]

    user = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go on"}]}
    assert _repeats_previous_calls([user, *turn(1, "ls"), *turn(2, "ls")], responses=True)
    assert not _repeats_previous_calls([user, *turn(1, "ls"), *turn(2, "ls -a")], responses=True)
    assert not _repeats_previous_calls([*turn(1, "ls"), user, *turn(2, "ls")], responses=True)
    assert not _repeats_previous_calls([user, *turn(2, "ls")], responses=True)
    items = [user, *turn(1, "ls"), *turn(2, "pytest")]
    items[-1] = {**items[-1], "output": "Exit code: 2\nOutput:\nE   assert 1 == 2"}
    assert _tool_results(items, {"c2"}) == [("Exit code: 2\nOutput:\nE   assert 1 == 2", False)]
    assert _tool_results(items, {"c1"}) == [], "only the outputs after the last calls"
    interleaved = [user, {**turn(3, "a")[2], "call_id": "a"}, {**turn(3, "a")[3], "call_id": "a", "output": "Exit code: 1"},
                   {**turn(3, "b")[2], "call_id": "b"}, {**turn(3, "b")[3], "call_id": "b"}]
    assert [text for text, _ in _tool_results(interleaved, {"a", "b"})] == ["Exit code: 0\nOutput:\nok", "Exit code: 1"]


def test_an_openai_prompt_of_many_blocks_is_read_whole_by_its_next_request():
    """OpenAI caches every prefix a request sends; the shadow keeps the longest (at most MAX_ENTRIES), so a
    conversation whose prompt has more blocks than that still reads all of the previous request next turn."""
    tools = [{"type": "function", "function": {"name": f"tool{i}", "description": "d " * 300}} for i in range(20)]
    messages = [{"role": "system", "content": "s " * 2000}, {"role": "user", "content": "u " * 3000}]
    first = {"model": "gpt-5.4", "tools": tools, "messages": messages}
    second = {**first, "messages": [*messages, {"role": "assistant", "content": "a " * 50},
                                    {"role": "user", "content": "next"}]}
    shadow, now = CacheShadow(), 1000.0
    one = PromptShape.of(first, "openai")
    assert one.blocks > 12
    shadow.split(one, "gpt-5.4", now, 0.25, touch=True)
    two = PromptShape.of(second, "openai")
    split = shadow.split(two, "gpt-5.4", now + 5, 0.25)
    step = 128 / 0.25
    assert split.read == one.chars // step * step, (split, one.chars)


def test_an_openai_chat_assistants_tool_calls_are_part_of_the_prompt():
    """An OpenAI chat agent's assistant turns are often only tool calls (content None): their calls are blocks
    of the prompt, counted in its length and in its prefixes, so a turn that called something else is another
    prefix (its cache is not read)."""
    def chat(path: str) -> dict:
        call = {"id": "c1", "type": "function", "function": {"name": "read", "arguments": f'{{"path":"{path}"}}'}}
        return {"model": "gpt-5.4", "messages": [
            {"role": "user", "content": "u " * 2000}, {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "t " * 1000}]}

    one, other = PromptShape.of(chat("a.py"), "openai"), PromptShape.of(chat("b/c.py"), "openai")
    assert one.blocks == 3 and other.chars - one.chars == len("b/c.py") - len("a.py")
    assert one.hashes[0] == other.hashes[0] and one.hashes[1] != other.hashes[1]
    bare = chat("a.py")
    call = bare["messages"][1].pop("tool_calls")[0]
    assert one.chars - PromptShape.of(bare, "openai").chars >= len(orjson.dumps(call))  # the calls' bytes count
    # with text before them, the calls follow it (the text is its own block), and growing gives the same shape
    spoken = chat("a.py")
    spoken["messages"][1]["content"] = "Reading it."
    grown, seen = PromptShape.grown(chat("a.py"), "openai", None, None)
    assert PromptShape.grown(spoken, "openai", None, seen)[0] == PromptShape.of(spoken, "openai")
    assert PromptShape.of(spoken, "openai").blocks == 4
