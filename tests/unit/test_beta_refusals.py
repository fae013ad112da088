"""Reading an upstream's beta refusal, and the bounded memory of what each draft model refused."""

from __future__ import annotations

import orjson

from cascadeflow.cascade.beta_refusals import BetaRefusals, refused_betas, requested_betas
from cascadeflow.errors import ProxyTransportError, ProxyUpstreamError

SENT = ["claude-code-20250219", "context-1m-2025-08-07", "advisor-tool-2026-03-01"]
LIVE = ("Unexpected value(s) `context-1m-2025-08-07`, `advisor-tool-2026-03-01` for the `anthropic-beta` header. "
        "Please consult our documentation at docs.claude.com or try again without the header.")


def refusal(message: str, status: int = 400) -> ProxyUpstreamError:
    body = {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    return ProxyUpstreamError("upstream 'anthropic' answered 400", status=status, payload=orjson.dumps(body))


def test_both_known_shapes_are_read():
    assert refused_betas(refusal(LIVE), SENT) == ["context-1m-2025-08-07", "advisor-tool-2026-03-01"]
    documented = refusal("Unsupported beta header: context-1m-2025-08-07")  # the Beta headers page's example
    assert refused_betas(documented, SENT) == ["context-1m-2025-08-07"]


def test_only_what_the_draft_carried_is_learned():
    assert refused_betas(refusal(LIVE), ["claude-code-20250219", "advisor-tool-2026-03-01"]) == ["advisor-tool-2026-03-01"]
    assert refused_betas(refusal(LIVE), []) == []


def test_other_errors_teach_nothing():
    assert refused_betas(refusal("max_tokens: 128000 > 64000, which is the maximum"), SENT) == []
    assert refused_betas(refusal(LIVE, status=429), SENT) == []
    assert refused_betas(ProxyTransportError("timed out"), SENT) == []
    garbled = ProxyUpstreamError("x", status=400, payload=b"<html>" + LIVE.encode())  # not JSON: the text is read
    assert refused_betas(garbled, SENT) == ["context-1m-2025-08-07", "advisor-tool-2026-03-01"]


def test_requested_betas():
    assert requested_betas({"anthropic-beta": " a-1 , ,b-2,"}) == ["a-1", "b-2"]
    assert requested_betas({}) == []


def test_the_memory_is_per_model_bounded_and_forgets():
    now = [0.0]
    memory = BetaRefusals(max_entries=2, ttl=60, clock=lambda: now[0])
    headers = {"anthropic-beta": ",".join(SENT)}
    assert memory.refused("claude-haiku-5-5", headers) is None
    assert memory.learn("claude-haiku-5-5", headers, refusal(LIVE)) == ["context-1m-2025-08-07", "advisor-tool-2026-03-01"]
    assert memory.refused("claude-haiku-5-5", headers) == "context-1m-2025-08-07"
    assert memory.refused("claude-sonnet-5-5", headers) is None, "another model is not judged by Haiku's refusal"
    assert memory.refused("claude-haiku-5-5", {"anthropic-beta": "claude-code-20250219"}) is None
    memory.learn("claude-sonnet-5-5", headers, refusal("Unsupported beta header: claude-code-20250219"))
    assert len(memory) == 2, "the oldest pair made room"
    assert memory.refused("claude-haiku-5-5", {"anthropic-beta": "context-1m-2025-08-07"}) is None
    assert memory.refused("claude-haiku-5-5", headers) == "advisor-tool-2026-03-01"
    now[0] = 61.0
    assert memory.refused("claude-haiku-5-5", headers) is None, "after ttl the draft finds out again"
    assert len(memory) == 1
