"""A pre-generation router: from the request alone, predict that the draft will fail, and skip it.

A cascade pays for every draft, also the ones it escalates. Where the prompt already says the draft will
fail (a kind of question the cheap model gets wrong), sending the request straight to the verifier saves
the draft's cost and its latency; routing and cascading together is what "cascade routing" (ICML 2025)
shows to be the better strategy. The router reads only the request: text features of the prompt (its
length, digits, code, arithmetic, answer options, questions, turns) and, optionally, a WordLlama
embedding of it. ``cascadeflow calibrate`` fits a logistic model of "the draft will be good" on labelled
records and writes it as JSON beside the config; the rule names the file, its SHA-256 and the threshold
below which requests are routed, and the gateway loads it once at start (a missing, altered or foreign
file is a start-up error). A routed request's decision is ``skipped:router``.

Cost: the text features are a few regex passes over the prompt's last 3,000 characters (tens of µs); the
embedding costs milliseconds for long prompts, so the engine computes it in a worker thread, never on the
event loop (``benchmarks/scorer_latency.py`` measures both).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..errors import ConfigError
from .scorer import prompt_text

__all__ = ["ROUTER_FEATURES", "ROUTER_FORMAT", "EMBEDDING", "Router", "router_features", "request_prompt",
           "load_router", "save_router"]

ROUTER_FORMAT = "cascadeflow-router/1"
#: the only embedding a router file may name: WordLlama's 256-dimension weights shipped in its wheel
EMBEDDING = "wordllama-l2_supercat-256"
_TAIL = 3000  # the question sits at the end; few-shot examples come before it

_WORD = re.compile(r"[A-Za-z0-9']+")
_OPTIONS = re.compile(r"(?m)^\s*\(?[A-Ea-e][).:]\s")
_ARITHMETIC = re.compile(r"\d[ \t]?[-+*/×÷^=][ \t]?\d")
_CODE_WORDS = ("```", "def ", "function", "python", "code", "program")
_MATH_WORDS = ("how many", "how much", "total", "calculate")
#: matched on the lower-cased text (an IGNORECASE pattern costs several times as much)
_WHY = re.compile(r"\b(?:why|explain|describe|discuss|compare|write|essay|story)\b")
_NUMBER = re.compile(r"\d+")
_NEGATION = re.compile(r"\b(?:not|never|no|none|except|false)\b")

#: the features, in order; a model file trained on another list is refused at start
ROUTER_FEATURES: tuple[str, ...] = (
    "prompt_chars", "tail_words", "tail_lines", "digits", "numbers", "code", "math", "options", "questions",
    "open_ended", "negations", "unique_words", "upper_share", "non_ascii", "turns", "system",
)  # fmt: skip


def _share(count: int, total: int) -> float:
    return count / total if total else 0.0


def request_prompt(body: Mapping[str, Any]) -> tuple[str, int]:
    """The request's text and number of messages in any dialect (Responses ``instructions``/``input`` too)."""
    if "messages" not in body and ("input" in body or "instructions" in body):
        given = body.get("input")
        messages = [{"role": "user", "content": given}] if isinstance(given, str) else given
        messages = [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
        body = {"system": body.get("instructions") or "", "messages": messages}
    return prompt_text(body)


def router_features(prompt: str, turns: int = 1, has_system: bool = False) -> list[float]:
    """The :data:`ROUTER_FEATURES` of one prompt (plain floats, no state)."""
    tail = prompt[-_TAIL:]
    low = tail.lower()
    words = _WORD.findall(low)
    return [
        math.log1p(len(prompt)),
        math.log1p(len(words)),
        math.log1p(tail.count("\n")),
        _share(sum(map(str.isdigit, tail)), len(tail)),
        math.log1p(len(_NUMBER.findall(tail))),
        float(any(w in low for w in _CODE_WORDS)),
        float(_ARITHMETIC.search(tail) is not None or any(w in low for w in _MATH_WORDS)),
        float(len(_OPTIONS.findall(tail)) >= 2),
        math.log1p(tail.count("?")),
        float(_WHY.search(low) is not None),
        math.log1p(len(_NEGATION.findall(low))),
        _share(len(set(words)), len(words)) if words else 1.0,
        _share(sum(map(str.isupper, tail)), len(tail)),
        _share(len(tail) - len(tail.encode("ascii", "ignore")), len(tail)),
        math.log1p(turns),
        float(has_system),
    ]


@dataclass(frozen=True, slots=True)
class Router:
    """A fitted logistic model of P(draft good) over :data:`ROUTER_FEATURES` (and an embedding, when named).

    ``weights``/``mean``/``scale`` cover the text features then the embedding's dimensions, standardised with
    the training mean and scale. ``embedder`` is the loaded embedding model (None without one).
    """

    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    trained: Mapping[str, Any]
    embedding: str | None = None
    embedder: Any = field(default=None, compare=False, repr=False)

    @property
    def slow(self) -> bool:
        """Whether scoring a request takes milliseconds (an embedding): the engine then runs it in a thread."""
        return self.embedding is not None

    def features(self, body: Mapping[str, Any]) -> list[float]:
        prompt, turns = request_prompt(body)
        values = router_features(prompt, turns, bool(body.get("system") or body.get("instructions")))
        if self.embedding is not None:
            values += embed_prompts(self.embedder, [prompt])[0]
        return values

    def probability(self, features: Sequence[float]) -> float:
        z = self.bias + math.fsum(w * (x - m) / s for w, x, m, s in zip(self.weights, features, self.mean, self.scale))
        z = max(min(z, 50.0), -50.0)
        return 1.0 / (1.0 + math.exp(-z))

    def score(self, body: Mapping[str, Any]) -> float:
        """P(the draft will be good) for this request, from the request alone."""
        return self.probability(self.features(body))

    def to_json(self) -> bytes:
        return orjson.dumps({
            "format": ROUTER_FORMAT, "features": list(ROUTER_FEATURES), "embedding": self.embedding,
            "weights": list(self.weights), "bias": self.bias, "mean": list(self.mean), "scale": list(self.scale),
            "trained": dict(self.trained),
        }, option=orjson.OPT_INDENT_2)  # fmt: skip


def embed_prompts(embedder: Any, prompts: Sequence[str]) -> list[list[float]]:
    """Unit-length embeddings of the prompts' last characters (the question), as plain floats."""
    vectors = embedder.embed([p[-_TAIL:] or " " for p in prompts], norm=True)
    return [[float(x) for x in row] for row in vectors]


def embedding_dimensions() -> int:
    return 256


def save_router(router: Router, path: Path) -> str:
    """Write the model file; its SHA-256 (which the rule records, so a changed file is caught at start)."""
    data = router.to_json()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def load_router(path: str | Path, sha256: str | None, embedder: Any = None) -> Router:
    """Read a router file, refusing one that is missing, altered since calibration, or built on other features;
    when it names an embedding, use ``embedder`` (the gateway's, shared) or load WordLlama (from the installed
    wheel, no download)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"router model file {path} cannot be read ({exc.strerror or exc}); run cascadeflow calibrate") from None
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        raise ConfigError(f"router model file {path} does not match the config (sha256 {digest[:12]}…, the rule "
                          f"expects {sha256[:12]}…); run cascadeflow calibrate again")
    try:
        doc = orjson.loads(data)
        if doc.get("format") != ROUTER_FORMAT or tuple(doc.get("features", ())) != ROUTER_FEATURES:
            raise ValueError("it was written for other features (another cascadeflow version)")
        embedding = doc.get("embedding")
        if embedding not in (None, EMBEDDING):
            raise ValueError(f"it names an unknown embedding {embedding!r}")
        size = len(ROUTER_FEATURES) + (embedding_dimensions() if embedding else 0)
        router = Router(tuple(map(float, doc["weights"])), float(doc["bias"]), tuple(map(float, doc["mean"])),
                        tuple(float(s) or 1.0 for s in doc["scale"]), doc.get("trained") or {}, embedding)
        if not len(router.weights) == len(router.mean) == len(router.scale) == size:
            raise ValueError("its weights do not match its features")
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"router model file {path} is not a usable cascadeflow router: {exc}") from None
    if embedding is not None:
        if embedder is None:
            from ..embeddings import load_embedder

            embedder = load_embedder(f"router model file {path} uses the WordLlama embedding, which")
        router = Router(router.weights, router.bias, router.mean, router.scale, router.trained, embedding, embedder)
    return router
