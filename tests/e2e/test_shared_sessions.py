"""A conversation whose turns reach different gateway processes is one conversation (Redis).

Two `cascadeflow proxy start` processes share Redis. Turn 1 goes through process A: Haiku's draft,
with its thinking, is accepted. Turn 2 goes through process B, with a failing tool result: B must
know from Redis that the last turn was drafted (so it goes straight to Opus) and that Haiku wrote
the thinking block (so Opus gets that turn as text — had B taken the block for Opus's own, the
strict simulator would refuse the request).
"""

from __future__ import annotations

import os
import uuid

import anthropic
import pytest
import yaml

from tests import needs
from tests.conftest import launch_gateway_processes, sim_routes

REDIS = os.environ.get("CASCADEFLOW_TEST_REDIS", "redis://127.0.0.1:6379/7")
OPUS, HAIKU = "claude-opus-5-5", "claude-haiku-5-5"
BASH = {"name": "Bash", "description": "Run a command", "input_schema": {
    "type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}


@pytest.fixture()
def pair(sim, fresh_sim, tmp_path):
    import redis

    try:
        redis.Redis.from_url(REDIS, socket_timeout=2).flushdb()
    except redis.RedisError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(needs.redis(REDIS, "CASCADEFLOW_TEST_REDIS", exc))
    rule = {"request_model": OPUS, "draft_model": HAIKU, "policies": {"cache_economics": False, "sticky_escalations": 0}}
    text = yaml.safe_dump({"routes": sim_routes(sim), "redis_url": REDIS, "cascade_rules": [rule]})
    processes = launch_gateway_processes(tmp_path, text, [None, None])
    yield [url for _, url in processes]
    for process, _ in processes:
        process.terminate()
        process.wait(timeout=10)
    redis.Redis.from_url(REDIS).flushdb()


def test_a_conversation_spans_gateway_processes(pair, sim):
    sim.set_script([{"match": {"model": HAIKU, "prompt_contains": "Run the tests"}, "thinking": "run them",
                     "tool_calls": [{"name": "Bash", "input": {"command": "pytest -q"}}]},
                    {"match": {"model": OPUS}, "text": "Two tests fail; let me look."}])
    session = {"X-Claude-Code-Session-Id": str(uuid.uuid4())}
    a, b = (anthropic.Anthropic(base_url=url, api_key="k", max_retries=0) for url in pair)
    messages = [{"role": "user", "content": "Run the tests"}]
    kwargs = {"model": OPUS, "max_tokens": 2048, "tools": [BASH], "thinking": {"type": "adaptive"}, "extra_headers": session}
    first = a.messages.with_raw_response.create(messages=messages, **kwargs)
    assert first.headers["x-cascadeflow-decision"] == "accepted"
    message = first.parse()
    assert [block.type for block in message.content] == ["thinking", "tool_use"]
    messages += [{"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in message.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": message.content[1].id,
                                               "content": "2 failed, 5 passed", "is_error": True}]}]
    second = b.messages.with_raw_response.create(messages=messages, **kwargs)
    assert second.headers["x-cascadeflow-decision"] == "skipped:session_signal:tool_error"
    assert second.headers["x-cascadeflow-thinking"] == "dropped=1,rendered=1"
    assert second.parse().content[-1].text == "Two tests fail; let me look."
    opus = [r for r in sim.requests if r["body"]["model"] == OPUS]
    assert len(opus) == 1 and opus[0]["body"]["messages"][1]["content"][0]["text"].startswith("[tool call toolu_")
