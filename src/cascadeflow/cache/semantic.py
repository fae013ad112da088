"""The semantic layer of the response cache: a prompt that means the same as a cached one gets its answer.

Only for single-shot, tool-free requests (one user message of text, beside a system
prompt) from clients that are not agents: an agent's turn depends on a conversation
and tools, and a near miss there is a wrong action. Everything but the prompt's text —
endpoint, tenant, model, system prompt, every parameter — must match exactly (it forms
the *bucket*); within a bucket the prompt's embedding is compared by cosine similarity.

Guards make a near-duplicate whose answer differs a miss however close its embedding is:
the prompts' numbers must be the same, so must their negations, and the same words may
not be swapped across a word of direction ("5 km to miles" / "5 miles to km"). Averaged
word embeddings barely move when a number changes or a "not" appears, and not at all
when words swap places (measured in ``benchmarks/semantic_cache.py``).

The embedding model is WordLlama's (:mod:`cascadeflow.embeddings`: shipped inside the
``wordllama`` wheel, nothing is downloaded). Install with the ``semantic`` extra. The index lives in this process's memory.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from ..cascade.kinds import request_kind
from ..embeddings import SEMANTIC_EXTRA, Embedder, load_embedder, load_wordllama
from ..errors import ConfigError
from .key import ANSWER_HEADERS, IGNORED_FIELDS

if TYPE_CHECKING:
    from ..config import SemanticCacheConfig

__all__ = ["SemanticIndex", "SemanticProbe", "Embedder", "load_wordllama", "load_embedder", "semantic_index", "prompt_of",
           "guard_of", "SEMANTIC_EXTRA"]

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"\w+")
_DIRECTION = frozenset({"to", "from", "into", "than", "vs", "versus", "before", "after", "over", "under"})
_NEGATION = re.compile(r"\b(?:not|no|never|none|nothing|neither|nor|without|except|cannot)\b|n't\b", re.IGNORECASE)


def semantic_index(config: SemanticCacheConfig) -> SemanticIndex:
    """The index with WordLlama loaded; a :class:`ConfigError` naming the extra when it is not installed."""
    try:
        embedder = load_wordllama()
    except ImportError as exc:
        raise ConfigError(f"a rule sets semantic_cache, which needs the semantic extra: {SEMANTIC_EXTRA} "
                          f"({exc.name or exc} is missing)") from None
    return SemanticIndex(embedder, threshold=config.threshold, agents=config.agents, max_entries=config.max_entries)


def guard_of(text: str) -> tuple:
    """What must match exactly besides the meaning: the numbers, and how many negations."""
    return tuple(_NUMBER.findall(text)), len(_NEGATION.findall(text))


def _text(content: Any, kinds: tuple[str, ...]) -> str | None:
    """A message's text, if it is only text."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    parts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") not in kinds or not isinstance(part.get("text"), str):
            return None
        parts.append(part["text"])
    return "\n".join(parts)


def prompt_of(dialect: str, body: dict) -> tuple[str, dict] | None:
    """(the single user prompt, the body without it) for a single-shot, tool-free request; else None."""
    if body.get("tools") or body.get("previous_response_id") or body.get("conversation"):
        return None
    if dialect == "responses":
        given = body.get("input")
        if isinstance(given, str):
            return given, {**body, "input": None}
        messages, field_name = given, "input"
    else:
        messages, field_name = body.get("messages"), "messages"
    if not isinstance(messages, list):
        return None
    users = [i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"]
    others = [m for m in messages if isinstance(m, dict) and m.get("role") in ("system", "developer")]
    if len(users) != 1 or len(others) + 1 != len(messages):
        return None
    text = _text(messages[users[0]].get("content"), ("text", "input_text"))
    if text is None or not text.strip():
        return None
    rest = [m if i != users[0] else {"role": "user"} for i, m in enumerate(messages)]
    return text, {**body, field_name: rest}


@dataclass(slots=True)
class SemanticProbe:
    """One request's place in the index: its bucket, its prompt, and the threshold to reach."""

    bucket: str
    text: str
    threshold: float
    guard: tuple = ()
    vector: Any = field(default=None)

    @property
    def words(self) -> tuple[str, ...]:
        return tuple(_WORD.findall(self.text.lower()))


def _swapped(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """The same words, swapped across a word of direction ("5 km to miles" / "5 miles to km").

    Averaged embeddings cannot tell them apart; a phrase moved as a block ("in two
    sentences, summarise…" / "summarise… in two sentences") keeps its neighbours and passes.
    """
    if a == b or len(a) != len(b) or sorted(a) != sorted(b):
        return False
    return _directions(a) != _directions(b)


def _directions(words: tuple[str, ...]) -> list[tuple[str, str, str]]:
    return [(words[i - 1], word, words[i + 1]) for i, word in enumerate(words[1:-1], 1) if word in _DIRECTION]


class _Bucket:
    """The vectors of one bucket in one matrix (a look-up is one matrix-vector product)."""

    __slots__ = ("matrix", "keys", "guards", "words")

    def __init__(self, np: Any, dim: int) -> None:
        self.matrix = np.empty((8, dim), dtype=np.float32)
        self.keys: list[str] = []
        self.guards: list[tuple] = []
        self.words: list[tuple[str, ...]] = []

    def add(self, np: Any, vector: Any, key: str, probe: SemanticProbe) -> None:
        count = len(self.keys)
        if count == len(self.matrix):
            grown = np.empty((2 * count, self.matrix.shape[1]), dtype=np.float32)
            grown[:count] = self.matrix
            self.matrix = grown
        self.matrix[count] = vector
        self.keys.append(key)
        self.guards.append(probe.guard)
        self.words.append(probe.words)

    def drop_oldest(self, n: int) -> None:
        count = len(self.keys)
        self.matrix[: count - n] = self.matrix[n:count]
        del self.keys[:n], self.guards[:n], self.words[:n]


class SemanticIndex:
    """Prompt embeddings per bucket, each pointing at an exact-cache key; bounded, oldest forgotten first."""

    def __init__(self, embedder: Embedder, *, threshold: float, agents: bool = False, max_entries: int = 10_000,
                 guards: bool = True) -> None:
        """``guards=False`` turns the guards off (only to measure what they are worth)."""
        import numpy as np

        self._np = np
        self.guards = guards
        self.embedder = embedder
        self.threshold, self.agents, self.max_entries = threshold, agents, max_entries
        #: buckets in least-recently-added order
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def probe(self, endpoint: str, tenant: str, dialect: str, headers: dict[str, str], body: dict,
              threshold: float | None = None) -> SemanticProbe | None:
        """The probe of a request the semantic layer may answer (None: not single-shot, tools, an agent…)."""
        if not self.agents and request_kind(headers, body) != "other":
            return None
        found = prompt_of(dialect, body)
        if found is None:
            return None
        text, rest = found
        material = [endpoint, tenant, [headers.get(n) for n in ANSWER_HEADERS],
                    {k: v for k, v in rest.items() if k not in IGNORED_FIELDS}]
        try:
            bucket = hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()
        except (TypeError, orjson.JSONEncodeError):
            return None
        return SemanticProbe(bucket, text, self.threshold if threshold is None else threshold, guard_of(text))

    def _vector(self, probe: SemanticProbe) -> Any:
        if probe.vector is None:
            probe.vector = self.embedder.embed([probe.text], norm=True)[0].astype(self._np.float32, copy=False)
        return probe.vector

    def nearest(self, probe: SemanticProbe, limit: int = 3) -> list[tuple[str, float]]:
        """(key, similarity) of the stored prompts that mean the same, most similar first (at most ``limit``)."""
        bucket = self._buckets.get(probe.bucket)
        if bucket is None or not bucket.keys:
            return []
        scores = bucket.matrix[: len(bucket.keys)] @ self._vector(probe)
        candidates = self._np.flatnonzero(scores >= probe.threshold)
        if not len(candidates):
            return []
        words = probe.words
        ranked = candidates[self._np.argsort(-scores[candidates])]
        return [(bucket.keys[i], float(scores[i])) for i in ranked if not self.guards
                or (bucket.guards[i] == probe.guard and not _swapped(bucket.words[i], words))][:limit]

    def add(self, probe: SemanticProbe, key: str) -> None:
        vector = self._vector(probe)
        bucket = self._buckets.get(probe.bucket)
        if bucket is None:
            bucket = self._buckets[probe.bucket] = _Bucket(self._np, len(vector))
        self._buckets.move_to_end(probe.bucket)
        if key in bucket.keys:
            return
        bucket.add(self._np, vector, key, probe)
        self._size += 1
        if self._size > self.max_entries:  # forget the oldest tenth of the oldest bucket at once (one copy)
            oldest_name = next(iter(self._buckets))
            oldest = self._buckets[oldest_name]
            n = max(1, min(len(oldest.keys), self.max_entries // 10))
            oldest.drop_oldest(n)
            self._size -= n
            if not oldest.keys:
                del self._buckets[oldest_name]
