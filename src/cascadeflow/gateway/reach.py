"""Which models a request may reach beyond the one it names, for a key's model allowlist.

A key limited to some models must not get others through the gateway's own choices: a
cascade rule's ``verifier_model`` answers instead of the requested model, and a route's
``fallbacks`` answer when it fails. Drafts are not listed: they are the gateway's way to
pay less, never a way to more expensive models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ErrorKind, ProxyRoutingError, RequestError

if TYPE_CHECKING:
    from ..config import CascadeRule
    from ..proxy.router import ProxyRouter
    from .auth import Identity

__all__ = ["reachable_models", "check_reach"]


def reachable_models(router: ProxyRouter, model: str, dialect: str | None,
                     rule: CascadeRule | None) -> list[tuple[str, str, str | None]]:
    """(model as configured, how it is reached, its name upstream if it routes) beyond ``model`` itself."""
    found: list[tuple[str, str, str | None]] = []
    answering = model
    if rule is not None and rule.verifier_model and rule.verifier_model != model:
        answering = rule.verifier_model
        found.append((answering, f"the verifier of cascade rule {rule.name!r}", _upstream_name(router, answering, dialect)))
    try:
        route = router.resolve(answering, dialect).route
    except ProxyRoutingError:
        return found
    for fallback in route.fallbacks:
        found.append((fallback, f"a fallback of route {route.name!r}", _upstream_name(router, fallback, dialect)))
    return found


def check_reach(identity: Identity, reachable: list[tuple[str, str, str | None]]) -> None:
    """A 403 naming the first model the request may reach that the caller's key may not use."""
    key = identity.key
    if key is None:
        return
    for name, how, upstream in reachable:
        if key.allows(name) or (upstream is not None and key.allows(upstream)):
            continue
        raise RequestError(
            f"API key {key.key_id} may not use model {name!r}, which this request may reach as {how}; "
            "allow that model for the key, or ask for a model without it", kind=ErrorKind.PERMISSION,
        )


def _upstream_name(router: ProxyRouter, model: str, dialect: str | None) -> str | None:
    try:
        return router.resolve(model, dialect).model
    except ProxyRoutingError:
        return None
