"""Anthropic's round-trip rules for thinking blocks and tool results, as the simulator enforces them.

The real Messages API refuses a conversation that breaks these rules, so a gateway that
passes its tests against the simulator must keep them too:

- **Signatures are real.** A ``thinking`` block's ``signature`` (a ``redacted_thinking``
  block's ``data``) must be one the API issued, for exactly this thinking text:
  ``Invalid `signature` in `thinking` block`` otherwise. The simulator's signatures carry
  the model that wrote the block, the digest of the block's prefix and of its text, under
  a keyed MAC that a gateway cannot forge.
- **A model reads only some models' blocks** (preserved thinking): each model reads its
  own and a fixed set of others' (:data:`READS`); a block the target model cannot read is
  dropped from the request without an error.
- **A block is bound to its prefix**: the top-level ``system``, ``tools`` and the messages
  before it, as they were when the block was written (``cache_control`` markers and the
  string/list spelling of text content do not count). A changed prefix invalidates that
  block and every later one: a 400 ("bound to a different conversation"), or with
  ``thinking.block_binding.prefix_mismatch_behavior: "drop"`` the blocks are dropped.
- **A tool loop keeps its thinking**: with thinking enabled (``enabled`` or ``adaptive``),
  when the conversation ends in tool results the final assistant message must start with
  a thinking block (after the drops above): ``Expected `thinking` or `redacted_thinking`,
  but found `tool_use` …``.
- **Tool results pair with tool uses**: every ``tool_result`` answers a ``tool_use`` of the
  previous assistant message, and every ``tool_use`` is answered in the next message.
- **Claude Opus 5.5 always thinks adaptively**: ``thinking.type`` ``disabled`` or
  ``enabled`` (a fixed budget) is refused.

Simplification: thinking is active only when the request asks for it (the 5.5 models'
adaptive default when ``thinking`` is omitted is not simulated).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["READS", "ThinkingCheck", "check_request", "sign"]

_THINKING = ("thinking", "redacted_thinking")
_MAGIC = b"\x12sim2"
_KEY = b"cascadeflow-simulated-provider"  # the simulator's own; what matters is that a gateway never signs
_TAG, _DIGEST, _MAC = 8, 16, 16
_SIGNATURE_BYTES = len(_MAGIC) + _TAG + _DIGEST + _DIGEST + _MAC

#: which other models' thinking blocks a model reads (its own always); from Anthropic's
#: preserved-thinking documentation — Claude Fable 5.1 reads Claude Opus 5 and 5.5
READS: dict[str, frozenset[str]] = {"claude-fable-5-1": frozenset({"claude-opus-5", "claude-opus-5-5"})}

_ALWAYS_ADAPTIVE = ("claude-opus-5-5",)

_EXPECTED_THINKING = (
    "messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{found}`. When `thinking` is "
    "enabled, a final `assistant` message must start with a thinking block (preceeding the lastmost set of `tool_use` "
    "and `tool_result` blocks). We recommend you include thinking blocks from previous turns. To avoid this requirement, "
    "disable `thinking`. Please consult our documentation at "
    "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
)


def _tag(model: str) -> bytes:
    return hashlib.blake2b(model.encode(), digest_size=_TAG).digest()


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=_DIGEST).digest()


def sign(thinking: str, model: str, prefix: bytes) -> str:
    """A signature for ``thinking`` written by ``model`` after the prefix digest ``prefix``."""
    payload = _MAGIC + _tag(model) + prefix + _digest(thinking)
    return base64.b64encode(payload + hmac.digest(_KEY, payload, "blake2b")[:_MAC]).decode()


@dataclass(frozen=True, slots=True)
class _Signed:
    model_tag: bytes
    prefix: bytes
    content: bytes


def _verify(signature: object) -> _Signed | None:
    if not isinstance(signature, str):
        return None
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != _SIGNATURE_BYTES or not raw.startswith(_MAGIC):
        return None
    payload, mac = raw[:-_MAC], raw[-_MAC:]
    if not hmac.compare_digest(mac, hmac.digest(_KEY, payload, "blake2b")[:_MAC]):
        return None
    at = len(_MAGIC)
    return _Signed(payload[at:at + _TAG], payload[at + _TAG:at + _TAG + _DIGEST], payload[at + _TAG + _DIGEST:])


def _canonical(value: Any) -> Any:
    """The value as the prefix check sees it: no ``cache_control``, text content always as blocks."""
    if isinstance(value, dict):
        out = {k: _canonical(v) for k, v in value.items() if k != "cache_control"}
        if isinstance(out.get("content"), str) and "role" in out:
            out["content"] = [{"type": "text", "text": out["content"]}]
        return out
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def _feed(hasher: Any, value: Any) -> None:
    if isinstance(value, str):
        value = [{"type": "text", "text": value}]
    hasher.update(orjson.dumps(_canonical(value), option=orjson.OPT_SORT_KEYS))
    hasher.update(b"\x1e")


@dataclass(slots=True)
class ThinkingCheck:
    """The outcome for one request: an error to answer with, or the prefix digest to sign answers with."""

    error: str | None = None
    prefix: bytes = b""
    dropped: int = 0


def thinking_active(body: dict[str, Any]) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def _refused_setting(body: dict[str, Any]) -> str | None:
    thinking, model = body.get("thinking"), body.get("model") or ""
    if isinstance(thinking, dict) and thinking.get("type") in ("disabled", "enabled") and model.startswith(_ALWAYS_ADAPTIVE):
        kind = thinking["type"]
        return (f'"thinking.type.{kind}" is not supported for this model. Use "thinking.type.adaptive" and '
                '"output_config.effort" to control thinking behavior.')
    return None


def _readable(model: str, tag: bytes) -> bool:
    return tag == _tag(model) or any(tag == _tag(other) for other in READS.get(model, ()))


def check_request(body: dict[str, Any]) -> ThinkingCheck:
    """Apply the rules in the module docstring to one Messages request body."""
    refused = _refused_setting(body)
    if refused is not None:
        return ThinkingCheck(refused)
    messages = body.get("messages") or []
    model = body.get("model") or ""
    settings = given if isinstance(given := body.get("thinking"), dict) else {}
    binding = bound if isinstance(bound := settings.get("block_binding"), dict) else {}
    drop_mismatch = binding.get("prefix_mismatch_behavior") == "drop"
    hasher = hashlib.blake2b(digest_size=_DIGEST)
    _feed(hasher, body.get("system") or [])
    _feed(hasher, body.get("tools") or [])
    dropped: set[tuple[int, int]] = set()
    mismatched = False
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if message.get("role") == "assistant" and isinstance(content, list):
            prefix = hasher.copy().digest()
            for j, block in enumerate(content):
                if not isinstance(block, dict) or block.get("type") not in _THINKING:
                    continue
                redacted = block["type"] == "redacted_thinking"
                signed = _verify(block.get("data") if redacted else block.get("signature"))
                if signed is None or (not redacted and signed.content != _digest(str(block.get("thinking", "")))):
                    return ThinkingCheck(f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block")
                if not _readable(model, signed.model_tag):
                    dropped.add((i, j))
                    continue
                if mismatched or signed.prefix != prefix:
                    if not drop_mismatch:
                        return ThinkingCheck(
                            f"messages.{i}.content.{j}: The block is bound to a different conversation: the system "
                            "prompt, tools or earlier messages differ from those it was written after. Send earlier "
                            "turns back exactly as they were, or set thinking.block_binding.prefix_mismatch_behavior "
                            'to "drop".')
                    mismatched = True
                    dropped.add((i, j))
        _feed(hasher, message)
    error = _tool_pairing(messages) or (_final_turn(messages, dropped) if thinking_active(body) else None)
    return ThinkingCheck(error, hasher.digest(), len(dropped))


def _blocks(message: Any) -> list:
    content = message.get("content") if isinstance(message, dict) else None
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _tool_pairing(messages: list) -> str | None:
    """Every tool_result answers the previous assistant message's tool_use, and every tool_use is answered."""
    turns = [(i, m) for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") in ("user", "assistant")]
    for n, (i, message) in enumerate(turns):
        previous = turns[n - 1][1] if n else None
        if message.get("role") == "user":
            asked = {b.get("id") for b in _blocks(previous) if b.get("type") == "tool_use"} if previous else set()
            if previous is not None and previous.get("role") != "assistant":
                asked = set()
            for j, block in enumerate(_blocks(message)):
                if block.get("type") == "tool_result" and block.get("tool_use_id") not in asked:
                    return (f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                            f"{block.get('tool_use_id')}. Each `tool_result` block must have a corresponding "
                            "`tool_use` block in the previous message.")
        elif n + 1 < len(turns):
            calls = [b.get("id") for b in _blocks(message) if b.get("type") == "tool_use"]
            follower = turns[n + 1][1]
            answered = {b.get("tool_use_id") for b in _blocks(follower) if b.get("type") == "tool_result"}
            missing = [a for a in calls if a not in answered]
            if missing:
                return (f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                        f"{', '.join(map(str, missing))}. Each `tool_use` block must have a corresponding "
                        "`tool_result` block in the next message.")
    return None


def _final_turn(messages: list, dropped: set[tuple[int, int]]) -> str | None:
    """With thinking on, a conversation ending in tool results needs thinking at the start of the last assistant turn."""
    if not messages or not any(b.get("type") == "tool_result" for b in _blocks(messages[-1])):
        return None
    for i in range(len(messages) - 2, -1, -1):
        message = messages[i]
        if isinstance(message, dict) and message.get("role") == "assistant":
            kept = [b for j, b in enumerate(message.get("content") or []) if (i, j) not in dropped] \
                if isinstance(message.get("content"), list) else []
            first = kept[0].get("type") if kept and isinstance(kept[0], dict) else "text"
            return None if first in _THINKING else _EXPECTED_THINKING.format(i=i, found=first)
    return None
