"""Which cascade rule, if any, applies to a requested model."""

from __future__ import annotations

from fnmatch import fnmatchcase

from ..config import CascadeRule

__all__ = ["RuleSet"]

_CACHE_LIMIT = 4096


class RuleSet:
    """Rules in config order; the first whose ``request_model`` (name or glob) matches wins."""

    def __init__(self, rules: list[CascadeRule]) -> None:
        self.rules = [r if r.name else r.model_copy(update={"name": r.request_model}) for r in rules]
        self._cache: dict[str, CascadeRule | None] = {}

    def __bool__(self) -> bool:
        return bool(self.rules)

    def match(self, model: str) -> CascadeRule | None:
        try:
            return self._cache[model]
        except KeyError:
            pass
        rule = next((r for r in self.rules if r.request_model == model or fnmatchcase(model, r.request_model)), None)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[model] = rule
        return rule
