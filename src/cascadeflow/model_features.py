"""Which request features each Claude model accepts: effort levels, context editing, thinking types.

A cascade drafts on a cheaper model than the one asked for; a draft request carrying a
parameter that model refuses fails (400) and is paid for in vain. The gateway fits what
only tunes the answer and skips drafting for the rest (``cascade/capabilities.py``); the
simulator refuses what the real API refuses (``testing/model_limits.py``). Both read this
table, by model-name prefix (longest wins). A model the table does not name is not gated:
where Anthropic's documentation is silent nothing is guessed.

Sources (Anthropic's documentation, as stored in the project's search corpus):

- effort (``output_config.effort``): the Effort page's supported models
  (platform.claude.com/docs/*/build-with-claude/effort.md, ``featureMetadata.supportedModels``:
  Fable/Mythos 5.x and Preview, Opus 5.5/5/4.8/4.7/4.6/4.5, Sonnet 5.5/5/4.6, Haiku 5.5), and
  the models overview's "Default effort: Not supported" for Claude Haiku 4.5. Levels: ``max``
  from Opus 4.6 / Sonnet 4.6 ("requests using max on other models return an error", the
  Effort page's earlier version), ``xhigh`` from Opus 4.7; Opus 4.5 takes low/medium/high.
  For the 5.x models the page lists support but the excerpts seen carry no per-level table:
  all five levels are taken from third-party reports (LangChain's effort labels for "Opus
  4.7+ and Sonnet 5"; a Haiku 5.5 effort sweep at every level) — marked below. The real
  API's refusal reads "This model does not support the effort parameter." (seen in
  anthropics/claude-code#30010, #30760).
- context editing (``context_management``, beta ``context-management-2025-06-27``): the
  Context editing page's supported models — every Claude 4 and 5 model listed; no Claude 3.
- thinking types: the Troubleshooting thinking page's table "Thinking support, defaults,
  and rejected configurations by model": Opus 4.5, Haiku 4.5, Sonnet 4.5 and Opus 4.1
  refuse ``adaptive`` (400 "adaptive thinking is not supported on this model", seen in
  docker/docker-agent#3362). Other thinking rules live in ``testing/thinking_rules.py``.

Not gated, because the documentation seen does not say: the per-message ``output_config``
of Claude Code's role-``system`` message on models that do support effort, and the effort
levels of models not named here.

``anthropic-beta`` header values are not in this table either: the documentation names no
beta a current model refuses. The models pages give every 5.x model a native 1M-token
window "with no beta header" (platform.claude.com/docs/en/models/haiku-5-5/overview,
.../opus-5/migration-guide), so ``context-1m-2025-08-07`` (a Sonnet 4 / 4.5 beta) asks
nothing of them; the old extended-thinking page's "interleaved-thinking-2025-05-14 on any
model other than Opus 4.1, Opus 4 or Sonnet 4 fails" predates the 4.5 models, to which
Claude Code sends it every request. The gateway learns refused betas from the draft's own
400s instead (``cascade/beta_refusals.py``), and drafts keep the caller's betas unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["EFFORT_LEVELS", "FeatureGap", "context_editing", "effort_levels", "feature_gaps", "refused_thinking"]

EFFORT_LEVELS = ("low", "medium", "high", "xhigh", "max")
_ALL, _NONE = frozenset(EFFORT_LEVELS), frozenset[str]()
_UP_TO_HIGH, _UP_TO_MAX = frozenset({"low", "medium", "high"}), frozenset({"low", "medium", "high", "max"})

#: effort levels accepted, by model-name prefix (longest wins); an empty set: the parameter is refused
_EFFORT: tuple[tuple[str, frozenset[str]], ...] = (
    ("claude-3", _NONE),
    ("claude-opus-4", _NONE),  # Opus 4 and 4.1: not in the supported list
    ("claude-sonnet-4", _NONE),  # Sonnet 4 and 4.5
    ("claude-haiku-4", _NONE),  # Haiku 4.5: "Default effort: Not supported"
    ("claude-opus-4-5", _UP_TO_HIGH),
    ("claude-opus-4-6", _UP_TO_MAX),
    ("claude-sonnet-4-6", _UP_TO_MAX),
    ("claude-opus-4-7", _ALL),
    ("claude-opus-4-8", _ALL),
    ("claude-opus-5", _ALL),  # 5.x levels: third-party reports, see the module doc
    ("claude-sonnet-5", _ALL),
    ("claude-haiku-5", _ALL),
    ("claude-fable-5", _ALL),
    ("claude-mythos-5", _ALL),
    ("claude-mythos-preview", _ALL),
)

#: whether ``context_management`` (context editing) is accepted, by model-name prefix
_CONTEXT_EDITING: tuple[tuple[str, bool], ...] = (
    ("claude-3", False),
    ("claude-opus-4", True),
    ("claude-sonnet-4", True),
    ("claude-haiku-4", True),
    ("claude-opus-5", True),
    ("claude-sonnet-5", True),
    ("claude-haiku-5", True),
    ("claude-fable-5", True),
    ("claude-mythos-", True),
)

#: ``thinking.type`` values refused with a 400, by model-name prefix (only the adaptive refusals here)
_REFUSED_THINKING: tuple[tuple[str, frozenset[str]], ...] = (
    ("claude-opus-4-5", frozenset({"adaptive"})),
    ("claude-haiku-4-5", frozenset({"adaptive"})),
    ("claude-sonnet-4-5", frozenset({"adaptive"})),
    ("claude-opus-4-1", frozenset({"adaptive"})),
)


def _lookup(table: tuple[tuple[str, Any], ...], model: str) -> Any:
    best = None
    for prefix, value in table:
        if model.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, value)
    return best[1] if best is not None else None


def effort_levels(model: str) -> frozenset[str] | None:
    """The ``output_config.effort`` levels ``model`` accepts (empty: none), None where unknown."""
    return _lookup(_EFFORT, model)


def context_editing(model: str) -> bool | None:
    """Whether ``model`` accepts ``context_management``, None where unknown."""
    return _lookup(_CONTEXT_EDITING, model)


def refused_thinking(model: str) -> frozenset[str]:
    """The ``thinking.type`` values ``model`` refuses (as far as this table knows)."""
    return _lookup(_REFUSED_THINKING, model) or _NONE


@dataclass(frozen=True, slots=True)
class FeatureGap:
    """Something a request asks that a model refuses."""

    feature: str
    #: the real API's words for the refusal where known (see the module doc), the simulator's otherwise
    message: str
    #: the draft can be fitted by leaving it out (the parameter only tunes the answer)
    fits: bool


def _effort(config: object) -> object:
    return config.get("effort") if isinstance(config, dict) else None


def feature_gaps(body: dict[str, Any], model: str) -> list[FeatureGap]:
    """What a Messages request ``body`` asks that ``model`` refuses, in the order the checks run.

    Top-level ``output_config.effort`` fits (left out, the model answers at its default effort —
    "Without a value, the model's default level applies"); the same setting inside a message
    (Claude Code's role-``system`` entry) does not, nor does ``context_management`` (leaving it out
    changes what the model reads) or a refused thinking type.
    """
    gaps: list[FeatureGap] = []
    levels = effort_levels(model)
    if levels is not None and levels != _ALL:
        effort = _effort(body.get("output_config"))
        if effort is not None and effort not in levels:
            gaps.append(FeatureGap("effort", _effort_message(effort, levels), True))
        if _message_effort(body, levels):
            gaps.append(FeatureGap("message_effort", _effort_message("per-message", levels), False))
    if body.get("context_management") is not None and context_editing(model) is False:
        gaps.append(FeatureGap("context_management", "context_management: This model does not support context editing.",
                               False))
    thinking = body.get("thinking")
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if isinstance(kind, str) and kind in refused_thinking(model):
        gaps.append(FeatureGap("thinking", f"{kind} thinking is not supported on this model", False))
    return gaps


def _message_effort(body: dict[str, Any], levels: frozenset[str]) -> bool:
    for message in body.get("messages") or ():
        if isinstance(message, dict):
            effort = _effort(message.get("output_config"))
            if effort is not None and effort not in levels:
                return True
    return False


def _effort_message(effort: object, levels: frozenset[str]) -> str:
    if not levels:
        return "This model does not support the effort parameter."
    allowed = ", ".join(level for level in EFFORT_LEVELS if level in levels)
    return f'output_config.effort: "{effort}" is not supported by this model; supported values: {allowed}'
