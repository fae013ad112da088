"""Cascade rules: draft stages, checks, scorer, router, shadow mode and draft policies."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import _Strict

__all__ = [
    "DEFAULT_CASCADES",
    "CascadeRule",
    "CascadeStage",
    "CascadeModel",
    "DraftPolicies",
    "SelfVerify",
    "SampleAgreement",
    "ShadowMode",
    "Combiner",
    "ScorerFile",
    "RouterFile",
]

#: The cascades used when no config file is given, and written by ``proxy init``:
#: (requested model glob, draft model). The verifier is the requested model.
DEFAULT_CASCADES: tuple[tuple[str, str], ...] = (
    ("claude-opus-*", "claude-haiku-5-5"),  # not Sonnet: see docs/cascade.md, "Conversations and prompt caching"
    ("claude-sonnet-*", "claude-haiku-5-5"),
    ("gpt-5.5", "gpt-5.4-mini"),
    ("gpt-5.4", "gpt-5.4-mini"),
    ("gpt-4o", "gpt-4o-mini"),
)


class CascadeStage(_Strict):
    """One draft model tried in turn; its answer is kept when confidence ≥ its threshold."""

    model: str
    quality_threshold: float | None = Field(default=None, ge=0.0, le=1.0, description="default: the rule's")


class DraftPolicies(_Strict):
    """When not to draft at all (the draft would be paid for in vain)."""

    #: skip when the request forces a tool (tool_choice any/tool/required/function)
    skip_forced_tool_choice: bool = False
    #: skip when the prompt's estimated tokens exceed this share of the draft's context window
    max_context_fraction: float = Field(default=0.9, gt=0.0, le=1.0)
    #: skip after this many consecutive escalations in one conversation (0 = never)
    sticky_escalations: int = Field(default=2, ge=0)
    #: …for this long after the last escalation, then try drafting again
    sticky_seconds: float = Field(default=1800.0, gt=0)
    #: in a conversation, draft only when the expected saving — priced with each model's prompt cache
    #: as it is, and the conversation's draft failures — is positive (docs/cascade.md)
    cache_economics: bool = True
    #: the request kinds this rule drafts (main, subagent, background, codex, other; docs/claude-code.md);
    #: requests of other kinds go straight to the verifier. Default: every kind
    draft_kinds: list[Literal["main", "subagent", "background", "codex", "other"]] | None = None


class SelfVerify(_Strict):
    """Ask a model whether the draft is right and use P(yes) as one more check score."""

    model: str | None = Field(default=None, description="default: the draft model itself")


class SampleAgreement(_Strict):
    """Sample the draft model again and score how far the samples agree with the draft.

    ``exact``: the share of samples reaching the draft's final answer (check ``agreement``); ``semantic``: the
    mean cosine similarity of the samples' WordLlama embeddings to the draft's (check ``semantic_agreement``, for
    free-form answers; needs the semantic extra); ``auto``: exact where the draft states a short final answer,
    semantic for the rest.
    """

    samples: int = Field(default=5, ge=2, le=20)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    mode: Literal["exact", "semantic", "auto"] = "exact"


class ShadowMode(_Strict):
    """Quality measured on live traffic: for a share of judged drafts, the verifier's answer too, labelled.

    An accepted draft's pair costs one verifier call, made after the client has its answer; an
    escalated draft's costs nothing (the verifier served). Pairs are kept in the ledger's
    ``shadow_pairs`` table, answers included, for ``cascadeflow calibrate --from-ledger``.
    """

    share: float = Field(default=0.1, gt=0.0, le=1.0, description="share of judged drafts to pair")
    #: the most the extra verifier (and judge) calls may cost per UTC day, per gateway process
    max_daily_usd: float = Field(default=1.0, ge=0.0)
    #: a model that labels pairs whose answers have no comparable final answer (none: such pairs stay unlabelled)
    judge_model: str | None = None


class Combiner(_Strict):
    """A fitted logistic model over check scores (written by ``cascadeflow calibrate``)."""

    weights: dict[str, float]
    bias: float = 0.0
    means: dict[str, float] = Field(default_factory=dict)
    scales: dict[str, float] = Field(default_factory=dict)


class ScorerFile(_Strict):
    """The learned scorer's model file (written by ``cascadeflow calibrate`` beside the config)."""

    #: relative paths are read from the config file's folder
    path: str
    #: the file's SHA-256: a file changed since calibration is refused at start
    sha256: str | None = None


class RouterFile(_Strict):
    """The pre-generation router's model file (written by ``cascadeflow calibrate`` beside the config)."""

    #: relative paths are read from the config file's folder
    path: str
    #: the file's SHA-256: a file changed since calibration is refused at start
    sha256: str | None = None
    #: a request whose predicted P(draft good) is below this goes straight to the verifier (no draft paid)
    threshold: float = Field(ge=0.0, le=1.0)


#: where a rule keeps its built draft stages (see ``draft_stages``)
_STAGES = "_draft_stages"


class _CascadeFields(_Strict):
    name: str | None = None
    draft_model: str | None = None
    verifier_model: str | None = Field(default=None, description="defaults to the requested model")
    quality_threshold: float = Field(default=0.7, ge=0.0, le=1.0)
    #: send every request straight to the verifier (``calibrate`` writes it when no threshold meets the target)
    never_draft: bool = False
    checks: list[str] | None = Field(default=None, description="default: structural, tool_use, format, logprobs")
    combine: Literal["min", "mean", "product", "logistic"] = "min"
    #: with ``combine: logistic``: the fitted model (``cascadeflow calibrate`` writes it)
    combiner: Combiner | None = None
    #: a learned scorer over the prompt's and the draft's text (check ``learned``); needs no log-probabilities
    scorer: ScorerFile | None = None
    #: a pre-generation router: requests it predicts the draft fails go straight to the verifier (``skipped:router``)
    router: RouterFile | None = None
    self_verify: SelfVerify | None = None
    sample_agreement: SampleAgreement | None = None
    #: shadow mode: pair a share of judged drafts with the verifier's answer, to measure quality on live traffic
    shadow: ShadowMode | None = None
    stages: list[CascadeStage] | None = None
    #: cap on the draft's max_tokens (a draft model may allow fewer output tokens than the verifier)
    draft_max_tokens: int | None = Field(default=None, ge=1)
    policies: DraftPolicies = Field(default_factory=DraftPolicies)
    #: the ``model`` named in answers: the one the client asked for, or the one that served
    report_model: Literal["requested", "served"] = "requested"
    #: answer repeated requests from the response cache (``cache:`` section; None: its ``default``)
    cache: bool | None = None
    #: cache requests that carry tools too (None: ``cache.tools``)
    cache_tools: bool | None = None
    #: also answer single-shot, tool-free prompts that mean the same (an embedding's cosine ≥ the threshold)
    semantic_cache: bool = False
    #: cosine similarity a cached prompt must reach (None: ``cache.semantic.threshold``)
    semantic_threshold: float | None = Field(default=None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _draft_or_stages(self) -> _CascadeFields:
        if self.combine == "logistic" and self.combiner is None:
            raise ValueError("combine: logistic needs a combiner (run cascadeflow calibrate)")
        if not self.draft_model and not self.stages:
            raise ValueError("a cascade rule needs draft_model or stages")
        if self.draft_model and self.stages:
            raise ValueError("give either draft_model or stages, not both")
        return self

    def draft_stages(self) -> list[CascadeStage]:
        """The drafts in order, each with its threshold filled in (shared stages: read them, do not change them).

        Asked twice per request, so built once per rule (a pydantic object costs microseconds) and kept
        with the fields they were built from: a copy with other fields (``model_copy``) builds its own.
        """
        key = (self.draft_model, self.quality_threshold,
               tuple((s.model, s.quality_threshold) for s in self.stages) if self.stages else None)
        kept = self.__dict__.get(_STAGES)  # not a field: equality, dumps and the schema leave it out
        if kept is None or kept[0] != key:
            stages = self.stages or [CascadeStage(model=self.draft_model or "")]
            kept = (key, tuple(
                CascadeStage(model=s.model, quality_threshold=self.quality_threshold if s.quality_threshold is None else s.quality_threshold)
                for s in stages
            ))
            self.__dict__[_STAGES] = kept
        return list(kept[1])


class CascadeRule(_CascadeFields):
    """Try the draft model (or each stage) first for requests to ``request_model``."""

    request_model: str = Field(description="exact name or glob, e.g. claude-opus-*")


class CascadeModel(_CascadeFields):
    """A virtual model (e.g. ``cascade/claude``): clients ask for it by name; it has no upstream of its own."""

    verifier_model: str  # type: ignore[assignment]
