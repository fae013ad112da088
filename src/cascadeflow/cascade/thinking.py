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

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from ..sessions.layout import Layout, layout_of, repeated

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


def _blocks_in(message: object) -> list[dict]:
    """The thinking blocks of one message (an assistant turn's)."""
    if isinstance(message, dict) and message.get("role") == "assistant" and isinstance(message.get("content"), list):
        return [b for b in message["content"] if isinstance(b, dict) and b.get("type") in _THINKING]
    return []


def _thinking_blocks(messages: object) -> list[dict]:
    """Every thinking block in the conversation's assistant turns."""
    return [b for m in messages for b in _blocks_in(m)] if isinstance(messages, list) else []


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


_NONE: frozenset[str] = frozenset()


@dataclass(slots=True)
class _Walk:
    """One model's view of a request, message by message: what the conversation's next request reuses."""

    #: each message as the view holds it
    out: list = field(default_factory=list)
    #: after each message: (blocks dropped, turns rendered) so far
    totals: list[tuple[int, int]] = field(default_factory=list)
    #: after each message: the ids of tool calls rendered as text whose results come next
    pending: list[frozenset[str]] = field(default_factory=list)

    def grown(self, kept: int) -> _Walk:
        """A walk holding this one's first ``kept`` messages (a next request repeats them), to extend."""
        return _Walk(self.out[:kept], self.totals[:kept], self.pending[:kept])

    def extend(self, messages: list, target: str, writer_of: Callable[[str], str], thinking: bool) -> _Walk:
        """Walk ``messages`` from the first this walk does not hold yet."""
        out, totals, pending = self.out, self.totals, self.pending
        first = len(out)
        dropped, rendered = totals[-1] if first else (0, 0)
        as_text = pending[-1] if first else _NONE
        for message in messages[first:]:
            message, as_text, gone, turned = _step(message, as_text, target, writer_of, thinking)
            dropped += gone
            rendered += turned
            out.append(message)
            totals.append((dropped, rendered))
            pending.append(as_text)
        return self

    def view(self) -> ThinkingView | None:
        dropped, rendered = self.totals[-1] if self.totals else (0, 0)
        return ThinkingView(self.out, dropped, rendered) if dropped or rendered else None


def view_for(messages: list, target: str, writer_of: Callable[[str], str], thinking: bool) -> ThinkingView | None:
    """The conversation as ``target`` may receive it; None when it needs no change."""
    return _Walk().extend(messages, target, writer_of, thinking).view()


def _step(message: Any, as_text: frozenset[str], target: str, writer_of: Callable[[str], str],
          thinking: bool) -> tuple[Any, frozenset[str], int, int]:
    """One message of ``target``'s view: (the message as the view holds it, the ids of tool calls rendered as text
    whose results may follow, blocks dropped, turns rendered). A turn's view depends on it and the turn before."""
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        return message, as_text, 0, 0
    role = message.get("role")
    if role == "assistant":
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
        gone, rendered, as_text = len(content) - len(kept), 0, _NONE
        if thinking and calls and not (kept and isinstance(kept[0], dict) and kept[0].get("type") in _THINKING):
            as_text = frozenset(str(b.get("id")) for b in kept if isinstance(b, dict) and b.get("type") == "tool_use")
            kept = [_call_as_text(b) if isinstance(b, dict) and b.get("type") == "tool_use" else b for b in kept]
            rendered = 1
        if gone or as_text:
            message = {**message, "content": kept or [{"type": "text", "text": "(no visible answer)"}]}
        return message, as_text, gone, rendered
    if role == "user" and as_text:
        message = {**message, "content": [out for b in content
                                          for out in (_result_as_text(b) if _answers(b, as_text) else [b])]}
        return message, _NONE, 0, 0
    return message, as_text, 0, 0


def _answers(block: object, ids: frozenset[str]) -> bool:
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
    #: the request's messages, where :meth:`ThinkingThreads.view` keeps each model's view of them in ``memo`` for the
    #: conversation's next request, and reuses ``previous`` (the views of the previous request) for the first ``kept``
    messages: list | None = None
    memo: _Memo | None = None
    previous: dict[frozenset[str], _Walk] | None = None
    kept: int = 0
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
            view = self._view(messages, model, reads)
            self._last = (messages, reads, view)
        if view is None:
            views.pop(model, None)
            return body
        views[model] = f"dropped={view.dropped},rendered={view.rendered}"
        return {**body, "messages": view.messages}

    def _view(self, messages: list, model: str, reads: frozenset[str]) -> ThinkingView | None:
        """``model``'s view, walking only what the previous request's view of a model reading the same lacks.

        Reusing it is exact: a message's view depends on the message, the one before and, for each block, whether
        ``model`` reads its writer; the writers of the repeated messages' blocks are among the previous request's,
        where the model it was built for read the same ones (the same ``reads``)."""
        def writer_of(signature: str) -> str:
            return self.writers.get(signature, self.default_writer)

        memo = self.memo
        if memo is None or messages is not self.messages:
            return view_for(messages, model, writer_of, self.thinking)
        prior = self.previous.get(reads) if self.previous else None
        walk = prior.grown(self.kept) if prior is not None else _Walk()
        memo.walks[reads] = walk.extend(messages, model, writer_of, self.thinking)
        return walk.view()


@dataclass(slots=True)
class _Memo:
    """A conversation's previous request as the thinking views saw it (see :meth:`ThinkingThreads.view`)."""

    layout: Layout
    default_writer: str
    thinking: bool
    #: signature → writer, for the request's blocks whose writer is known
    writers: dict[str, str]
    #: after each message: the writers of the thinking blocks so far
    written: list[frozenset[str]]
    #: which writers a model reads → that model's view of the request
    walks: dict[frozenset[str], _Walk]


#: the previous request of this many conversations is kept (per process) with the views built for it, at most this
#: many bytes of requests in all (the views hold the parsed messages: a few times the bytes)
_MEMOS, _MEMO_BYTES = 128, 16 * 1024 * 1024


class ThinkingThreads:
    """The engine's side of thinking across models: who wrote which block, and each request's view.

    A conversation's next request repeats the previous one's messages and adds a few; walking the whole
    history for each model's view costs ~0.4 ms at 200 blocks (Claude Code's tool results rendered as text,
    again and again). Where the request's bytes are compact JSON (Claude Code's are; see
    :mod:`cascadeflow.sessions.layout`), the views of the repeated messages and their writers are taken from
    the previous request's (an LRU over conversations): only the new messages are walked and looked up.
    """

    def __init__(self, origins: ThinkingOrigins) -> None:
        self.origins = origins
        self._memos: OrderedDict[str, _Memo] = OrderedDict()
        self._memo_bytes = 0

    async def view(self, body: dict, dialect: str, default_writer: str, conversation: str | None = None,
                   raw: bytes | None = None) -> ThreadView | None:
        """Who wrote the conversation's thinking blocks (None when nothing needs a per-model view).

        ``conversation`` (a key for the conversation's requests) and ``raw`` (the bytes ``body`` was parsed
        from) let the views reuse the previous request's."""
        messages = body.get("messages")
        if dialect != "anthropic" or not isinstance(messages, list):
            return None
        thinking = thinking_on(body)
        if not thinking and not any(map(_blocks_in, messages)):
            return None
        if conversation is None or raw is None:
            return await self._fresh(messages, default_writer, thinking)
        old = self._take(conversation)
        found = (repeated(old.layout, raw, messages)
                 if old is not None and old.default_writer == default_writer and old.thinking == thinking else None)
        kept, layout = found if found is not None else (0, layout_of(raw, messages))
        if found is None:
            old = None
        if layout is None:  # not compact JSON: nothing to reuse, now or next time
            return await self._fresh(messages, default_writer, thinking)
        added = [_blocks_in(m) for m in messages[kept:]]
        known = old.writers if old is not None else {}
        signatures = [sig for blocks in added for b in blocks if (sig := _signature(b))]
        writers = await self.origins.lookup(signatures) if signatures else {}
        if known:
            writers = {**known, **writers}
        written = old.written[:kept] if old is not None else []
        so_far = written[-1] if written else _NONE
        for blocks in added:
            if blocks:
                so_far = so_far | {writers.get(_signature(b) or "", default_writer) for b in blocks}
            written.append(so_far)
        memo = _Memo(layout, default_writer, thinking, writers, written, {})
        self._keep(conversation, memo)
        return ThreadView(writers, default_writer, thinking, so_far, messages, memo,
                          old.walks if old is not None else None, kept)

    async def _fresh(self, messages: list, default_writer: str, thinking: bool) -> ThreadView:
        blocks = _thinking_blocks(messages)
        signatures = [sig for b in blocks if (sig := _signature(b))]
        writers = await self.origins.lookup(signatures) if signatures else {}
        written_by = frozenset(writers.get(_signature(b) or "", default_writer) for b in blocks)
        return ThreadView(writers, default_writer, thinking, written_by)

    def _take(self, conversation: str) -> _Memo | None:
        memo = self._memos.pop(conversation, None)
        if memo is not None:
            self._memo_bytes -= len(memo.layout.raw)
        return memo

    def _keep(self, conversation: str, memo: _Memo) -> None:
        self._memos[conversation] = memo
        self._memo_bytes += len(memo.layout.raw)
        while self._memos and (len(self._memos) > _MEMOS or self._memo_bytes > _MEMO_BYTES):
            self._memo_bytes -= len(self._memos.popitem(last=False)[1].layout.raw)

    async def hand_out(self, message: object, model: str, dialect: str) -> None:
        """Remember which model wrote the thinking blocks an accepted draft gives the client."""
        if dialect == "anthropic" and isinstance(message, dict):
            signatures = signatures_in([{"role": "assistant", "content": message.get("content")}])
            if signatures:
                await self.origins.record(signatures, model)

    async def aclose(self) -> None:
        await self.origins.aclose()
