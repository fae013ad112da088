"""When drafting would be paid for in vain, and the conversation memory that tells.

Policies are checked before any draft is sent; each that fires is counted under its
name in ``/stats`` (``skipped_by_policy``); a stage passed over while another drafts, by stage
model and reason (``skipped_stages``).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict

from ..config import CascadeRule
from ..pricing import ModelRegistry

__all__ = ["skip_reason", "context_gap", "conversation_key", "StickyEscalations", "estimate_prompt_tokens"]

_STICKY_LIMIT = 10_000


#: what one image or document page counts in an estimate: Anthropic bills an image at about
#: width × height / 750 tokens, at most ~1,600 (larger ones are scaled down); OpenAI's high-detail tiles are fewer
_MEDIA_TOKENS = 1_600


def estimate_prompt_tokens(raw_body: bytes, body: dict | None = None, limit: int | None = None) -> int:
    """An upper-side estimate of the prompt's tokens: about 4 bytes of JSON per token.

    Embedded media (base64 images and documents, data URLs) are counted as what a model bills for
    them, not their bytes — a 1 MB screenshot is ~1,600 tokens, not 250,000. That walk is made only
    when the byte count alone would exceed ``limit``.
    """
    estimate = len(raw_body) // 4
    if body is None or (limit is not None and estimate <= limit):
        return estimate
    media_bytes, media_count = _embedded_media(body, [0, 0])
    return (len(raw_body) - media_bytes) // 4 + media_count * _MEDIA_TOKENS


def _embedded_media(value: object, totals: list[int]) -> list[int]:
    """[bytes, count] of the base64 payloads in ``value`` (Anthropic ``source.data``, data URLs, ``file_data``)."""
    if isinstance(value, dict):
        for key, child in value.items():
            if isinstance(child, str):
                if len(child) > 1_000 and (key in ("data", "file_data") or child.startswith("data:")):
                    totals[0] += len(child)
                    totals[1] += 1
            elif isinstance(child, (dict, list)):
                _embedded_media(child, totals)
    elif isinstance(value, list):
        for child in value:
            if isinstance(child, (dict, list)):
                _embedded_media(child, totals)
    return totals


def forces_tool(body: dict, dialect: str) -> bool:
    choice = body.get("tool_choice")
    if dialect == "anthropic":
        return isinstance(choice, dict) and choice.get("type") in ("any", "tool")
    return choice == "required" or (isinstance(choice, dict) and choice.get("type") == "function")


def conversation_key(headers: dict[str, str], body: dict) -> str | None:
    """A stable id for the conversation, when the client sends one.

    Claude Code sends ``X-Claude-Code-Session-Id`` and a ``metadata.user_id`` holding
    its session; Codex a ``prompt_cache_key`` (its thread) and a ``session-id`` header;
    OpenAI clients may send ``user``. Without any, there is no memory.
    """
    session = headers.get("x-claude-code-session-id")
    if session:
        return "s:" + session
    thread = body.get("prompt_cache_key") or headers.get("session-id")
    if isinstance(thread, str) and thread:
        return "t:" + hashlib.blake2b(thread.encode(), digest_size=12).hexdigest()
    metadata = body.get("metadata")
    user = metadata.get("user_id") if isinstance(metadata, dict) else body.get("user")
    if isinstance(user, str) and user:
        return "u:" + hashlib.blake2b(user.encode(), digest_size=12).hexdigest()
    return None


class StickyEscalations:
    """Counts consecutive escalations per conversation (bounded, oldest forgotten first)."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def should_skip(self, key: str | None, rule: CascadeRule) -> bool:
        policy = rule.policies
        if key is None or policy.sticky_escalations == 0:
            return False
        entry = self._entries.get(key)
        if entry is None:
            return False
        count, last = entry
        return count >= policy.sticky_escalations and time.monotonic() - last < policy.sticky_seconds

    def record(self, key: str | None, escalated: bool) -> None:
        if key is None:
            return
        if not escalated:
            self._entries.pop(key, None)
            return
        count = self._entries.get(key, (0, 0.0))[0] + 1
        self._entries[key] = (count, time.monotonic())
        self._entries.move_to_end(key)
        while len(self._entries) > _STICKY_LIMIT:
            self._entries.popitem(last=False)


def skip_reason(
    rule: CascadeRule,
    body: dict,
    dialect: str,
    sticky: StickyEscalations,
    conversation: str | None,
) -> str | None:
    """The policy that says not to draft this request on any stage, or None to draft it.

    What depends on a stage's model (its context window: :func:`context_gap`) is judged per stage by the engine.
    """
    if rule.never_draft:  # calibrated: no threshold keeps the quality target, so drafting would only cost
        return "never_draft"
    if rule.policies.skip_forced_tool_choice and forces_tool(body, dialect):
        return "forced_tool_choice"
    if sticky.should_skip(conversation, rule):
        return "sticky_escalation"
    return None


def context_gap(
    rule: CascadeRule, body: dict, raw_body: bytes, draft_model: str, registry: ModelRegistry
) -> str | None:
    """``context_too_long`` when the prompt exceeds ``max_context_fraction`` of ``draft_model``'s window, else None."""
    info = registry.info(draft_model)
    if info is not None and info.context_window:
        limit = int(rule.policies.max_context_fraction * info.context_window)
        if estimate_prompt_tokens(raw_body, body, limit) > limit:
            return "context_too_long"
    return None
