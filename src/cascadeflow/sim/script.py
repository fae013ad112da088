"""The simulator's script: rules that pick an answer or a fault per request.

A script is an ordered list of rules; the first rule whose ``match`` fits the
request wins, and a request no rule fits gets the simulator's default answer.
Rules are written as plain dicts (or YAML / JSON files) with flat keys::

    - match: {model: "claude-haiku-*", prompt_contains: "capital"}
      times: 2                 # only the first 2 matching requests
      text: "Paris."
      status: 429              # fault keys sit next to the answer keys
      retry_after: 2

Answer keys: ``text``, ``words``, ``tool_calls``, ``thinking``, ``stop_reason``,
``usage``, ``logprob``, ``logprobs``. Fault keys (see :class:`Fault`):
``status``, ``retry_after``, ``error_message``, ``error_type``, ``reset``,
``first_byte_delay``, ``latency``, ``chunk_delay``, ``stall_after``,
``stall_seconds``, ``cut_after``, ``error_event_after``, ``malformed_after``,
``body``, ``content_type``, ``redirect``. Match keys (see
:class:`Match`): ``model`` (fnmatch glob), ``prompt_contains``,
``prompt_regex``, ``path``, ``dialect``, ``stream``.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import orjson

__all__ = ["Fault", "Match", "Script", "ScriptRule", "load_script"]

_RESETS = (None, "before_headers", "after_first_event")


@dataclass(slots=True)
class Match:
    """Which requests a rule applies to; every given field must fit (AND)."""

    model: str | None = None
    """fnmatch glob (case-sensitive) on the request's ``model``."""
    prompt_contains: str | None = None
    """Substring of the last user message's text."""
    prompt_regex: str | None = None
    """Regular expression searched in the last user message's text."""
    path: str | None = None
    """Exact request path, e.g. ``/v1/messages``."""
    dialect: str | None = None
    """``anthropic`` or ``openai``."""
    stream: bool | None = None
    """Only streaming (True) or only non-streaming (False) requests."""
    _model_re: Any = field(default=None, init=False, repr=False, compare=False)
    _prompt_re: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.dialect not in (None, "anthropic", "openai"):
            raise ValueError(f"match.dialect must be anthropic or openai, not {self.dialect!r}")
        if self.model is not None:
            self._model_re = re.compile(fnmatch.translate(self.model)).match
        if self.prompt_regex is not None:
            self._prompt_re = re.compile(self.prompt_regex).search

    @property
    def needs_prompt(self) -> bool:
        return self.prompt_contains is not None or self.prompt_regex is not None

    def fits(self, dialect: str, path: str, model: str, stream: bool, prompt: str | None) -> bool:
        if self.dialect is not None and self.dialect != dialect:
            return False
        if self.path is not None and self.path != path:
            return False
        if self.stream is not None and self.stream != stream:
            return False
        if self._model_re is not None and not self._model_re(model):
            return False
        if self.prompt_contains is not None and self.prompt_contains not in (prompt or ""):
            return False
        if self._prompt_re is not None and not self._prompt_re(prompt or ""):
            return False
        return True


@dataclass(slots=True)
class Fault:
    """What goes wrong with the answer; all fields default to "nothing"."""

    status: int | None = None
    """Answer with this HTTP status and an error body in the request's dialect."""
    retry_after: float | None = None
    """Adds a ``retry-after`` header (seconds) to the error answer."""
    error_message: str | None = None
    error_type: str | None = None
    """Overrides the error ``type`` otherwise derived from the status."""
    reset: str | None = None
    """``before_headers`` or ``after_first_event``: abort the TCP connection (a JSON answer: after half its
    body)."""
    first_byte_delay: float = 0.0
    """Seconds to wait before sending the response headers."""
    latency: float = 0.0
    """Seconds to wait before a non-streaming answer (on top of first_byte_delay)."""
    chunk_delay: float = 0.0
    """Seconds between SSE events."""
    stall_after: int | None = None
    """After this many SSE events, stall for ``stall_seconds`` without closing (a JSON answer: after half
    its body, whatever the number)."""
    stall_seconds: float = 3600.0
    cut_after: int | None = None
    """After this many SSE events, end the response cleanly without the terminal events (a JSON answer:
    end cleanly after half its body, whatever the number)."""
    error_event_after: int | None = None
    """After this many SSE events, send an in-stream error event (type from
    ``status``, default 529 / overloaded) and end the response."""
    malformed_after: int | None = None
    """After this many SSE events, send an event whose data is not JSON, then go on."""
    body: str | None = None
    """Answer with exactly this body (status ``status`` or 200), e.g. broken JSON or an HTML page."""
    content_type: str = "application/json"
    """The content type sent with ``body``."""
    redirect: str | None = None
    """Answer 307 with this ``location`` (a gateway must not follow it)."""

    def __post_init__(self) -> None:
        if self.reset not in _RESETS:
            raise ValueError(f"reset must be before_headers or after_first_event, not {self.reset!r}")

    @property
    def active(self) -> bool:
        return (
            self.status is not None
            or self.reset is not None
            or self.first_byte_delay > 0
            or self.latency > 0
            or self.chunk_delay > 0
            or self.stall_after is not None
            or self.cut_after is not None
            or self.error_event_after is not None
            or self.malformed_after is not None
            or self.body is not None
            or self.redirect is not None
        )

    @property
    def shapes_stream(self) -> bool:
        """Whether SSE events must be written one by one."""
        return (
            self.reset == "after_first_event"
            or self.chunk_delay > 0
            or self.stall_after is not None
            or self.cut_after is not None
            or self.error_event_after is not None
            or self.malformed_after is not None
        )


_FAULT_KEYS = frozenset(f.name for f in fields(Fault))
_MATCH_KEYS = frozenset(f.name for f in fields(Match) if not f.name.startswith("_"))


@dataclass(slots=True)
class ScriptRule:
    """One rule: a match, an answer, and optionally a fault.

    ``text`` — exact output text ("" = empty answer; None = the default answer).
    ``words`` — with no ``text``: a default-style answer of exactly this many words.
    ``tool_calls`` — ``[{"name": ..., "input": {...}}, ...]``.
    ``thinking`` — thinking text (Anthropic only); True for the default thinking.
    ``stop_reason`` — forced (``end_turn``/``max_tokens``/``tool_use``/
    ``stop_sequence``/``refusal`` or the OpenAI names ``stop``/``length``/
    ``tool_calls``/``content_filter``), mapped to the request's dialect.
    ``usage`` — overrides estimated counts; keys ``input_tokens``,
    ``output_tokens``, ``cache_read_input_tokens``, ``cache_creation_input_tokens``
    or the OpenAI names ``prompt_tokens`` (total prompt incl. cached),
    ``completion_tokens``, ``cached_tokens``.
    ``logprob`` — logprob of every output token; ``logprobs`` — one per token
    (the last value repeats for further tokens). OpenAI only.
    ``times`` — apply only to the first N matching requests.
    """

    match: Match = field(default_factory=Match)
    times: int | None = None
    text: str | None = None
    words: int | None = None
    tool_calls: list[dict[str, Any]] | None = None
    thinking: str | bool | None = None
    stop_reason: str | None = None
    usage: dict[str, int] | None = None
    logprob: float | None = None
    logprobs: list[float] | None = None
    fault: Fault = field(default_factory=Fault)
    used: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.match, dict):
            unknown = set(self.match) - _MATCH_KEYS
            if unknown:
                raise ValueError(f"unknown match keys: {sorted(unknown)}")
            self.match = Match(**self.match)
        if isinstance(self.fault, dict):
            self.fault = Fault(**self.fault)
        if self.tool_calls is not None:
            for call in self.tool_calls:
                if not isinstance(call, dict) or "name" not in call:
                    raise ValueError(f"tool_calls entries need a name: {call!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScriptRule:
        """Build a rule from its flat dict form (fault keys beside answer keys)."""
        data = dict(data)
        fault = data.pop("fault", None) or {}
        if isinstance(fault, Fault):
            fault = {f.name: getattr(fault, f.name) for f in fields(Fault)}
        fault = dict(fault)
        for key in list(data):
            if key in _FAULT_KEYS:
                fault[key] = data.pop(key)
        allowed = {f.name for f in fields(cls)} - {"fault", "used"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown rule keys: {sorted(unknown)}")
        return cls(fault=Fault(**fault), **data)


class Script:
    """An ordered list of :class:`ScriptRule`; the first fitting rule wins."""

    __slots__ = ("rules", "_needs_prompt")

    def __init__(self, rules: list[ScriptRule | dict[str, Any]] | None = None) -> None:
        self.rules: list[ScriptRule] = [
            r if isinstance(r, ScriptRule) else ScriptRule.from_dict(r) for r in (rules or [])
        ]
        self._needs_prompt = any(r.match.needs_prompt for r in self.rules)

    @classmethod
    def coerce(cls, script: Script | dict[str, Any] | list[Any] | str | Path | None) -> Script:
        """Accept a Script, ``{"rules": [...]}``, a list of rules, a file path, or None."""
        if script is None:
            return cls()
        if isinstance(script, Script):
            return script
        if isinstance(script, (str, Path)):
            return load_script(script)
        if isinstance(script, dict):
            unknown = set(script) - {"rules"}
            if unknown:
                raise ValueError(f"a script dict has only 'rules', not {sorted(unknown)}")
            return cls(script.get("rules") or [])
        if isinstance(script, list):
            return cls(script)
        raise TypeError(f"cannot make a script from {type(script).__name__}")

    @property
    def needs_prompt(self) -> bool:
        return self._needs_prompt

    def reset(self) -> None:
        for rule in self.rules:
            rule.used = 0

    def pick(
        self,
        dialect: str,
        path: str,
        model: str,
        stream: bool,
        prompt: str | None,
        generation: bool = True,
    ) -> ScriptRule | None:
        """The first rule that fits (and still has ``times`` left); counts its use.

        For non-generation endpoints (``generation=False``: count_tokens, models)
        only rules whose ``match.path`` names the path exactly are considered.
        """
        for rule in self.rules:
            if rule.times is not None and rule.used >= rule.times:
                continue
            if not generation and rule.match.path != path:
                continue
            if rule.match.fits(dialect, path, model, stream, prompt):
                rule.used += 1
                return rule
        return None

    def __len__(self) -> int:
        return len(self.rules)

    def __repr__(self) -> str:
        return f"Script({self.rules!r})"


def load_script(path: str | Path) -> Script:
    """Load a script from a YAML (``.yaml``/``.yml``) or JSON file."""
    p = Path(path)
    data = p.read_bytes()
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        parsed = yaml.safe_load(data)
    else:
        parsed = orjson.loads(data)
    return Script.coerce(parsed if parsed is not None else [])
