"""Whether the draft model can serve this request at all.

A draft that cannot read the request's images, or whose upstream cannot run the server
tools it asks for, or that refuses a feature the request uses (context editing, a
thinking type, a per-message effort: :mod:`cascadeflow.model_features`), fails every time
and is paid for in vain; such requests go straight to the verifier
(``skipped:capability:<what>``, counted per reason in ``/stats``). Parameters the draft
would refuse but that only tune the answer are fitted instead: the draft's output limit
(see ``CascadeEngine._draft_cap``) and a top-level ``output_config.effort`` the draft
lacks (:func:`fit_features`). An over-long prompt is the ``max_context_fraction`` policy.
``anthropic-beta`` values the draft lacks are learned from its refusals, not tabled
(:mod:`.beta_refusals`, ``skipped:capability:beta``). A rule's draft stages are each gated on
their own model (``CascadeEngine._open_stages``): a stage that cannot serve the request is passed
over, and the request skips drafting only when no stage can.
"""

from __future__ import annotations

from ..model_features import feature_gaps
from ..pricing import ModelRegistry

__all__ = ["capability_gap", "fit_features", "media_in"]

_MEDIA_TYPES = {"image": "image", "image_url": "image", "input_image": "image",
                "document": "document", "file": "document", "input_file": "document"}
_MEDIA_KINDS = frozenset(_MEDIA_TYPES.values())
#: tools the provider itself runs (Anthropic's server tools, OpenAI's hosted ones)
_SERVER_TOOL_PREFIXES = ("web_search", "web_fetch", "code_execution", "file_search", "computer_use_preview",
                         "image_generation", "mcp")


def media_in(value: object, found: set[str] | None = None) -> set[str]:
    """The media kinds anywhere in a request's messages (inside tool results too).

    Every dict under ``value`` is looked at (a block's ``type`` says what it is; where media may
    nest differs per dialect and block kind), iteratively: a long conversation is hundreds of
    blocks, and the walk stops once every kind is found.
    """
    found = set() if found is None else found
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        node = pop()
        if isinstance(node, dict):
            kind = node.get("type")
            if isinstance(kind, str) and kind in _MEDIA_TYPES:
                found.add(_MEDIA_TYPES[kind])
                if len(found) == len(_MEDIA_KINDS):
                    break
            extend(node.values())
        elif isinstance(node, list):
            extend(node)
    return found


def _server_tools(body: dict) -> list[str]:
    out = []
    for tool in body.get("tools") or ():
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str) and kind.startswith(_SERVER_TOOL_PREFIXES):
            out.append(kind)
    if body.get("web_search_options") is not None:
        out.append("web_search")
    return out


def capability_gap(body: dict, raw_body: bytes, dialect: str, draft: str, draft_provider: str | None,
                   verifier_provider: str | None, registry: ModelRegistry) -> str | None:
    """``capability:<what>`` when ``draft`` (on a ``draft_provider`` route) cannot serve the request, else None.

    Server tools count only where the verifier's upstream runs them and the draft's does not (when both
    routes translate the request, neither runs them). ``raw_body`` is not read: a search of the request's
    bytes for media costs more than the walk of the parsed messages (``benchmarks/cascade_hotspots.py``).
    """
    info = registry.info(draft)
    readable = info.media if info is not None and info.media is not None else frozenset()
    if not readable >= _MEDIA_KINDS:  # a draft that reads every kind needs no look for media
        wanted = media_in(body.get("messages") if "messages" in body else body.get("input"))
        missing = sorted(wanted - readable)
        if missing:
            return f"capability:{missing[0]}"
    if tools := _server_tools(body):
        native = "anthropic" if dialect == "anthropic" else "openai"
        runs = {native}
        if native == "openai" and all(kind.startswith("web_search") for kind in tools):
            runs.add("anthropic")  # an OpenAI web search becomes Anthropic's own (dialects.web_search)
        if verifier_provider in runs and draft_provider not in runs:
            return "capability:server_tools"
    if dialect == "anthropic" and draft_provider == "anthropic":  # a translated draft leaves these out anyway
        for gap in feature_gaps(body, draft):
            if not gap.fits:
                return f"capability:{gap.feature}"
    return None


def fit_features(draft: dict, model: str) -> dict:
    """A Messages request for ``model`` without the tuning parameters it would refuse (``output_config.effort``:
    the model then answers at its default effort). ``draft`` is left as it is; a changed copy is returned."""
    if not any(gap.fits for gap in feature_gaps(draft, model)):
        return draft
    config = {k: v for k, v in draft["output_config"].items() if k != "effort"}
    fitted = {**draft, "output_config": config}
    if not config:
        del fitted["output_config"]
    return fitted
