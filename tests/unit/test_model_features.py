"""The per-model feature table: the longest name prefix wins, and a model it does not name is never gated."""

from __future__ import annotations

from cascadeflow.model_features import (
    context_editing,
    effort_levels,
    feature_gaps,
    refused_thinking,
)

CLAUDE_CODE = {"output_config": {"effort": "medium"}, "context_management": {"edits": []}, "thinking": {"type": "adaptive"},
               "messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": "x", "output_config": {"effort": "medium"}}]}


def test_the_longest_prefix_wins():
    assert effort_levels("claude-opus-4-1-20250805") == frozenset()  # Opus 4.1: no effort
    assert effort_levels("claude-opus-4-5-20251101") == {"low", "medium", "high"}
    assert effort_levels("claude-opus-4-6") == {"low", "medium", "high", "max"}
    assert "xhigh" in effort_levels("claude-opus-4-7")
    assert refused_thinking("claude-haiku-4-5-20251001") == {"adaptive"} and not refused_thinking("claude-haiku-5-5")
    assert context_editing("claude-3-7-sonnet-latest") is False and context_editing("claude-haiku-4-5") is True


def test_a_model_the_table_does_not_name_is_not_gated():
    for model in ("gpt-5.4", "local-coder", "claude-future-9"):
        assert effort_levels(model) is None and context_editing(model) is None
        assert feature_gaps(CLAUDE_CODE, model) == []


def test_what_only_tunes_fits_and_the_rest_does_not():
    gaps = {gap.feature: gap.fits for gap in feature_gaps(CLAUDE_CODE, "claude-haiku-4-5")}
    assert gaps == {"effort": True, "message_effort": False, "thinking": False}
    assert feature_gaps(CLAUDE_CODE, "claude-haiku-5-5") == []
    assert [g.feature for g in feature_gaps({**CLAUDE_CODE, "output_config": {"effort": "xhigh"}}, "claude-sonnet-4-6")] \
        == ["effort"]
