"""Request kinds, recognised on requests Claude Code really sent (../shared/fixtures) and on made-up ones."""

from __future__ import annotations

import json

from cascadeflow.cascade.kinds import request_kind
from tests.shared_data import CLAUDE_CODE_FIXTURES, require


def recorded(name: str) -> list[tuple[dict, dict]]:
    path = require(CLAUDE_CODE_FIXTURES / name)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [({k.lower(): v for k, v in r["headers"]}, r["body"]) for r in rows
            if r["path"] == "/v1/messages" and isinstance(r.get("body"), dict)]


def test_claude_codes_main_loop_and_its_sub_agent_are_told_apart():
    kinds = [request_kind(headers, body) for headers, body in recorded("subagent.requests.jsonl")]
    assert set(kinds) == {"main", "subagent"}
    assert kinds.count("subagent") == 2, "the sub-agent's two turns (5 tools, no Agent tool)"
    for name in ("question_and_write.requests.jsonl", "thinking_block.requests.jsonl", "interactive_write.requests.jsonl"):
        assert {request_kind(h, b) for h, b in recorded(name)} == {"main"}


def test_background_codex_and_other():
    session = {"x-claude-code-session-id": "s"}
    assert request_kind(session, {"max_tokens": 512, "messages": []}) == "background"  # a title, no tools
    assert request_kind(session, {"max_tokens": 1024, "tools": [{"name": "Agent"}], "messages": []}) == "background"
    assert request_kind({"originator": "codex_cli_rs"}, {"tools": [{"type": "function", "name": "exec_command"}]}) == "codex"
    assert request_kind({}, {"tools": [{"name": "Agent"}], "max_tokens": 4096}) == "other", "no session: an SDK call"
    assert request_kind({}, {"messages": []}) == "other"
