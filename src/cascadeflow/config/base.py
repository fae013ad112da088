"""The base of every config section: a pydantic model that refuses unknown keys (a typo is an error)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
