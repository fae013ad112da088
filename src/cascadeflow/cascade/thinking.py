"""Each model's view of a conversation whose thinking blocks several models wrote.

Anthropic's rules (simulated in :mod:`cascadeflow.sim.thinking_rules`): a thinking
block must come back byte-identical, a model reads only its own blocks and a fixed
set of others' (:data:`READS`), a block is bound to everything before it, and with
thinking on, a conversation that ends in tool results needs the final assistant turn
to start with a thinking block. A cascade switches models turn by turn, so before each
Anthropic upstream call the engine builds the *target model's view*:

- blocks the target can read stay exactly as they are;
- blocks it cannot read are left out (it would drop them anyway);
- with thinking on, an assistant turn that calls tools but (then) starts without
  thinking is rendered as text — its ``tool_use`` blocks and the matching
  ``tool_result`` blocks of the next message become text blocks that say the same —
  so the tool loop is valid for the target while thinking stays on (Claude Opus 5.5
  cannot turn it off).

The view depends only on each turn and the target, never on where the turn sits, so
the prefix each model saw when it wrote a block is the prefix it sees again next turn
(the blocks stay valid, and the model's prompt cache stays warm). The cost: the target
does not see the other model's reasoning, and reads that turn's tool calls as text;
the engine counts the turns it rendered (``x-cascadeflow-thinking``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from ..sessions import ThinkingOrigins

__all__ = [
    "READS", "ThinkingThreads", "ThinkingView", "ThreadView", "readable", "signatures_in", "strip_thinking",
    "thinking_on", "view_for",
]

_THINKING = ("thinking", "redacted_thinking")

#: which other models' thinking blocks a model reads (its own always), from Anthropic's
#: preserved-thinking documentation; matched by model-id prefix, so dated ids count too
READS: dict[str, tuple[str, ...]] = {"claude-fable-5-1": ("claude-opus-5", "claude-opus-5-5")}


def _family(model: str) -> str:
    """A dated id's undated name (``claude-opus-5-5-20260922`` → ``claude-opus-5-5``)."""
    head, _, tail = model.rpartition("-")
    return head if len(tail) == 8 and tail.isdigit() else model


def readable(target: str, writer: str) -> bool:
    target, writer = _family(target), _family(writer)
    return target == writer or writer in READS.get(target, ())


def thinking_on(body: dict) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def _signature(block: dict) -> str | None:
    value = block.get("data") if block.get("type") == "redacted_thinking" else block.get("signature")
    return value if isinstance(value, str) else None


def _thinking_blocks(messages: object) -> list[dict]:
    """Every thinking block in the conversation's assistant turns."""
    if not isinstance(messages, list):
        return []
    return [
        b
        for m in messages
        if isinstance(m, dict) and m.get("role") == "assistant" and isinstance(m.get("content"), list)
        for b in m["content"]
        if isinstance(b, dict) and b.get("type") in _THINKING
    ]


def signatures_in(messages: object) -> list[str]:
    """The signatures of every thinking block in the conversation's assistant turns."""
    return [sig for b in _thinking_blocks(messages) if (sig := _signature(b))]


def strip_thinking(messages: list) -> list:
    """Messages without thinking blocks, for one-off calls with thinking off (self-verification, samples)."""
    out = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if message.get("role") == "assistant" and isinstance(content, list) and any(
            isinstance(b, dict) and b.get("type") in _THINKING for b in content
        ):
            kept = [b for b in content if not (isinstance(b, dict) and b.get("type") in _THINKING)]
            message = {**message, "content": kept or [{"type": "text", "text": "(no visible answer)"}]}
        out.append(message)
    return out


@dataclass(slots=True)
class ThinkingView:
    messages: list
    #: thinking blocks left out because the target cannot read them
    dropped: int = 0
    #: assistant turns whose tool calls the target reads as text
    rendered: int = 0


def view_for(messages: list, target: str, writer_of: Callable[[str], str], thinking: bool) -> ThinkingView | None:
    """The conversation as ``target`` may receive it; None when it needs no change."""
    out: list = []
    dropped = rendered = 0
    as_text: set[str] = set()  # tool_use ids of the previous assistant turn, rendered as text
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            out.append(message)
            continue
        role = message.get("role")
        if role == "assistant":
            as_text = set()
            kept, has_thinking, calls = content, False, False
            for b in content:  # one look first: most turns hold neither thinking blocks nor (with thinking off) calls
                kind = b.get("type") if isinstance(b, dict) else None
                if kind in _THINKING:
                    has_thinking = True
                elif kind == "tool_use":
                    calls = True
            if has_thinking:
                kept = [b for b in content if not (isinstance(b, dict) and b.get("type") in _THINKING
                                                  and not readable(target, writer_of(_signature(b) or "")))]
            gone = len(content) - len(kept)
            if thinking and calls and not (kept and isinstance(kept[0], dict) and kept[0].get("type") in _THINKING):
                as_text = {str(b.get("id")) for b in kept if isinstance(b, dict) and b.get("type") == "tool_use"}
                kept = [_call_as_text(b) if isinstance(b, dict) and b.get("type") == "tool_use" else b for b in kept]
                rendered += 1
            if gone or as_text:
                dropped += gone
                message = {**message, "content": kept or [{"type": "text", "text": "(no visible answer)"}]}
        elif role == "user" and as_text:
            message = {**message, "content": [out for b in content
                                              for out in (_result_as_text(b) if _answers(b, as_text) else [b])]}
            as_text = set()
        out.append(message)
    return ThinkingView(out, dropped, rendered) if dropped or rendered else None


def _answers(block: object, ids: set[str]) -> bool:
    return isinstance(block, dict) and block.get("type") == "tool_result" and str(block.get("tool_use_id")) in ids


def _marked(text: str, block: dict) -> dict:
    out = {"type": "text", "text": text}
    if "cache_control" in block:  # a cache breakpoint stays where the client put it
        out["cache_control"] = block["cache_control"]
    return out


def _call_as_text(block: dict) -> dict:
    arguments = orjson.dumps(block.get("input", {})).decode()
    return _marked(f"[tool call {block.get('id')}: {block.get('name')} {arguments}]", block)


def _result_as_text(block: dict) -> list[dict]:
    """A tool result as a text block, followed by its images and documents as they were."""
    content, media = block.get("content"), []
    if isinstance(content, list):
        media = [b for b in content if isinstance(b, dict) and b.get("type") in ("image", "document")]
        content = "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text")
    error = " (error)" if block.get("is_error") else ""
    return [_marked(f"[result of tool call {block.get('tool_use_id')}{error}: {content or ''}]", block), *media]


@dataclass(slots=True)
class ThreadView:
    """One request's conversation and who wrote its thinking blocks: each model gets its own view."""

    writers: dict[str, str]
    #: the writer of blocks the gateway did not hand out from a draft: the model the client asked for
    default_writer: str
    thinking: bool
    #: the writers of the conversation's thinking blocks (None: not known, so any writer may be)
    written_by: frozenset[str] | None = None
    #: the last view built: (messages, which writers its target reads, the view). A model's view depends
    #: only on which of the blocks' writers it reads, so a draft and a verifier that read the same ones
    #: (any two, when the conversation holds no thinking block) share one
    _last: tuple[list, frozenset[str], ThinkingView | None] | None = field(default=None, repr=False, compare=False)

    def body_for(self, body: dict, model: str, views: dict[str, str]) -> dict:
        """``body`` as ``model`` may receive it; ``views`` notes per model what its view left out."""
        messages = body.get("messages")
        if not isinstance(messages, list):
            return body
        writers = self.written_by if self.written_by is not None else {*self.writers.values(), self.default_writer}
        reads = frozenset(w for w in writers if readable(model, w))
        last = self._last
        if last is not None and last[0] is messages and last[1] == reads:
            view = last[2]
        else:
            view = view_for(messages, model, lambda sig: self.writers.get(sig, self.default_writer), self.thinking)
            self._last = (messages, reads, view)
        if view is None:
            views.pop(model, None)
            return body
        views[model] = f"dropped={view.dropped},rendered={view.rendered}"
        return {**body, "messages": view.messages}


class ThinkingThreads:
    """The engine's side of thinking across models: who wrote which block, and each request's view."""

    def __init__(self, origins: ThinkingOrigins) -> None:
        self.origins = origins

    async def view(self, body: dict, dialect: str, default_writer: str) -> ThreadView | None:
        """Who wrote the conversation's thinking blocks (None when nothing needs a per-model view)."""
        if dialect != "anthropic" or not isinstance(body.get("messages"), list):
            return None
        thinking = thinking_on(body)
        blocks = _thinking_blocks(body["messages"])
        if not blocks and not thinking:
            return None
        signatures = [sig for b in blocks if (sig := _signature(b))]
        writers = await self.origins.lookup(signatures) if signatures else {}
        written_by = frozenset(writers.get(_signature(b) or "", default_writer) for b in blocks)
        return ThreadView(writers, default_writer, thinking, written_by)

    async def hand_out(self, message: object, model: str, dialect: str) -> None:
        """Remember which model wrote the thinking blocks an accepted draft gives the client."""
        if dialect == "anthropic" and isinstance(message, dict):
            signatures = signatures_in([{"role": "assistant", "content": message.get("content")}])
            if signatures:
                await self.origins.record(signatures, model)

    async def aclose(self) -> None:
        await self.origins.aclose()
