"""The 400s the real APIs give a body whose ``tools`` or ``system`` has the wrong type.

Checked before the simulator's other checks, which read those fields (a wrong type there once crashed
the simulator into a 500 that a gateway then relayed).
"""

from __future__ import annotations

__all__ = ["shape_problem"]

_JSON_TYPES = {dict: "an object", str: "a string", int: "an integer", float: "a number", bool: "a boolean"}


def shape_problem(dialect: str, body: dict) -> str | None:
    """The 400 message for ``tools`` that is not a list of objects, or an Anthropic ``system`` that is neither
    a string nor a list of blocks; None when both are well-formed or absent."""
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            if dialect == "anthropic":
                return "tools: Input should be a valid list"
            return f"Invalid type for 'tools': expected an array, but got {_JSON_TYPES.get(type(tools), 'a value')} instead."
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict):
                return (f"tools.{i}: Input should be a valid dictionary or object to extract fields from"
                        if dialect == "anthropic" else f"Invalid type for 'tools[{i}]': expected an object.")
    system = body.get("system")
    if dialect == "anthropic" and system is not None:
        if not isinstance(system, (str, list)):
            return "system: Input should be a valid string"
        if isinstance(system, list) and not all(isinstance(block, dict) for block in system):
            return "system: Input should be a valid list of text blocks"
    return None
