"""The simulator's model list: ids as the real APIs name them, with the fields both listings need."""

from __future__ import annotations

from typing import Any

from ..pricing import ModelRegistry

__all__ = ["DEFAULT_MODELS", "normalize_model"]

DEFAULT_MODELS = [
    "claude-opus-5-5",
    "claude-sonnet-5-5",
    "claude-haiku-5-5",
    "gpt-5.4",
    "gpt-5.4-mini",
    "gpt-4o",
    "gpt-4o-mini",
]

_MODEL_CREATED = 1735689600  # 2025-01-01T00:00:00Z


def _display_name(model_id: str) -> str:
    parts = model_id.split("-")
    out: list[str] = []
    for part in parts:
        if part.isdigit() and out and out[-1][-1:].isdigit():
            out[-1] += "." + part
        else:
            out.append(part.upper() if part == "gpt" else part.capitalize())
    return " ".join(out)


def normalize_model(model: str | dict[str, Any]) -> dict[str, Any]:
    """A model id (or a partial dict) as the full record ``GET /v1/models`` answers from."""
    if isinstance(model, str):
        model = {"id": model}
    mid = model["id"]
    known = ModelRegistry().info(mid)  # the limits the Models API lists, as the registry knows them
    return {
        "id": mid,
        "display_name": model.get("display_name") or _display_name(mid),
        "created_at": model.get("created_at") or "2025-01-01T00:00:00Z",
        "created": model.get("created") or _MODEL_CREATED,
        "owned_by": model.get("owned_by") or ("anthropic" if mid.startswith("claude") else "openai"),
        "max_input_tokens": model.get("max_input_tokens") or (known.context_window if known else None),
        "max_tokens": model.get("max_tokens") or (known.max_output_tokens if known else None),
    }
