"""What the cascade did for one request (:class:`Decision`) and the answer it gives the client (:class:`CascadeReply`).

The decision is a typed value that travels with the request: the gateway reads it for its
request line, the ledger row, and the ``x-cascadeflow-*`` headers it renders
(:meth:`CascadeReply.response_headers`, a pure function of the reply; the engine renders none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..usage import Usage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from ..proxy import ProxyResult, ProxyStream
    from .session import SessionSignal

__all__ = ["Decision", "CascadeReply"]


@dataclass(slots=True)
class Decision:
    """What the cascade did for one request."""

    rule: str
    requested_model: str
    served_model: str = ""
    draft_model: str | None = None
    accepted: bool = False
    confidence: float | None = None
    reason: str = ""
    cost: float | None = 0.0
    baseline_cost: float | None = None
    draft_ms: float = 0.0
    stages: list[dict] = field(default_factory=list)
    #: each check's score on the last draft judged (``name=score,…``)
    checks: str = ""
    #: tokens of every call the request made
    usage: Usage = field(default_factory=Usage)
    #: time spent waiting on upstream calls (the rest of the request's time is the gateway's)
    upstream_ms: float = 0.0
    #: per model called: what its view of the conversation left out (``dropped=N,rendered=M``)
    thinking_views: dict[str, str] = field(default_factory=dict)
    #: what drafting this turn was expected to save, priced with the conversation's caches (USD)
    expected_saving: float | None = None
    #: main, subagent, background, codex or other (:mod:`.kinds`)
    kind: str = ""
    #: (model, usage) of every upstream call, in order
    calls: list[tuple[str, Usage]] = field(default_factory=list)
    #: what this request says about the conversation's last drafted turn, when it went badly
    session_signal: SessionSignal | None = None
    #: the pre-generation router's P(draft good) for this request (None: the rule has no router)
    route_confidence: float | None = None
    #: (model, why) of each draft stage passed over while another stage drafted (``capability:image``, …)
    skipped_stages: list[tuple[str, str]] = field(default_factory=list)

    def add_call(self, call: ProxyResult | ProxyStream) -> None:
        """Count one upstream call's usage and cost (unknown cost makes the total unknown)."""
        self.calls.append((call.model, call.usage))
        self.usage = self.usage + call.usage
        self.cost = None if call.cost is None or self.cost is None else self.cost + call.cost
        self.upstream_ms += call.latency_ms

    def add_cut(self, model: str, usage: Usage, cost: float | None) -> None:
        """Count a call cut off before its answer came (the client left): priced on an estimate."""
        self.calls.append((model, usage))
        self.usage = self.usage + usage
        self.cost = None if cost is None or self.cost is None else self.cost + cost

    def stages_tried(self) -> list[tuple[str, bool]]:
        """(model, failed) of each draft stage tried, in order: the record's ``stages_tried``."""
        return [(stage["model"], not stage["accepted"]) for stage in self.stages]

    def skipped_stages_text(self) -> str:
        """The stages passed over, ``model=why,…`` (empty when none was): the record's ``skipped_stages``."""
        return ",".join(f"{model}={why}" for model, why in self.skipped_stages)

    def detail(self) -> str | None:
        """The ledger row's ``detail``: the checks' scores, then the stages passed over (``skipped model=why,…``)."""
        parts = [self.checks] if self.checks else []
        if self.skipped_stages:
            parts.append(f"skipped {self.skipped_stages_text()}")
        return "; ".join(parts) or None

    def headers(self, *, with_cost: bool) -> dict[str, str]:
        headers = {
            "x-cascadeflow-rule": self.rule,
            "x-cascadeflow-served-model": self.served_model,
            "x-cascadeflow-draft-accepted": "true" if self.accepted else "false",
            "x-cascadeflow-decision": self.reason,
        }
        if self.draft_model:
            headers["x-cascadeflow-draft-model"] = self.draft_model
        if self.confidence is not None:
            headers["x-cascadeflow-confidence"] = repr(float(self.confidence))  # exact: calibration fits on it
        if self.checks:
            headers["x-cascadeflow-checks"] = self.checks
        if self.skipped_stages:
            headers["x-cascadeflow-skipped-stages"] = self.skipped_stages_text()
        if self.served_model in self.thinking_views:
            headers["x-cascadeflow-thinking"] = self.thinking_views[self.served_model]
        if self.expected_saving is not None:
            headers["x-cascadeflow-expected-saving-usd"] = f"{self.expected_saving:.8f}"
        if self.kind:
            headers["x-cascadeflow-request-kind"] = self.kind
        if self.route_confidence is not None:
            headers["x-cascadeflow-router-confidence"] = repr(float(self.route_confidence))
        if with_cost and self.cost is not None:
            headers["x-cascadeflow-cost-usd"] = f"{self.cost:.8f}"
        if with_cost and self.baseline_cost is not None:
            headers["x-cascadeflow-baseline-cost-usd"] = f"{self.baseline_cost:.8f}"
        return headers


@dataclass(slots=True)
class CascadeReply:
    """The answer for the client: a body (non-streaming) or chunks (streaming).

    ``headers`` are the answering upstream's; the gateway sends :meth:`response_headers`, which
    adds the decision's ``x-cascadeflow-*`` ones.
    """

    status: int
    headers: dict[str, str]
    decision: Decision
    body: bytes = b""
    chunks: AsyncIterator[bytes] | None = None
    #: the decision's cost is final before the answer goes out (False for a verifier's stream, priced as it ends)
    priced: bool = True
    #: what the cascade does once the answer is out (the conversation's record, deferred off the request's path):
    #: the gateway calls it after the last byte; uncalled, it runs before the conversation's next request
    after: Callable[[], None] | None = None

    def response_headers(self) -> dict[str, str]:
        """The headers for the client: the upstream's, then the decision's (its cost when :attr:`priced`)."""
        return {**self.headers, **self.decision.headers(with_cost=self.priced)}

