"""What kind of request this is, from its headers and body shape.

Agent clients send several kinds of request in one session, and they deserve different
treatment: a main-loop turn carries the whole tool set and a long cached conversation;
a sub-agent runs its own smaller loop beside it; background calls (a title, a summary,
compaction, the small-model slot) are short one-offs. Rules may draft only some kinds
(``draft_kinds``); the kind goes in ``x-cascadeflow-request-kind``.

What each looks like on the wire (recorded from Claude Code 2.1.330 and Codex 0.171):

- ``main``: Claude Code's loop — ``X-Claude-Code-Session-Id``, a tool set that includes the
  ``Agent`` tool (12-21 tools), ``max_tokens`` 128000, adaptive thinking;
- ``subagent``: the same session id, a smaller tool set without ``Agent`` (a sub-agent cannot
  start another), its own first message (the task it was given);
- ``background``: the session id with no tools at all (titles, summaries, compaction, quota
  probes), or a ``max_tokens`` of 1,024 or less;
- ``codex``: a Responses request from Codex (``originator: codex_*`` or ``x-codex-*`` headers);
- ``other``: anything else (SDKs, curl, other agents).
"""

from __future__ import annotations

__all__ = ["KINDS", "request_kind"]

KINDS = ("main", "subagent", "background", "codex", "other")
_SPAWNING_TOOLS = frozenset({"Agent", "Task"})


def _tool_names(body: dict) -> list[str]:
    names = []
    for tool in body.get("tools") or ():
        if isinstance(tool, dict):
            name = tool.get("name") or (tool.get("function") or {}).get("name")
            if isinstance(name, str):
                names.append(name)
    return names


def request_kind(headers: dict[str, str], body: dict) -> str:
    """The kind of one request (see the module docstring); ``headers`` have lower-case names."""
    originator = headers.get("originator", "")
    if originator.startswith("codex") or "x-codex-turn-metadata" in headers:
        return "codex"
    if "x-claude-code-session-id" not in headers:
        return "other"
    tools = _tool_names(body)
    limit = body.get("max_tokens")
    if not tools or (isinstance(limit, int) and limit <= 1024):
        return "background"
    return "main" if _SPAWNING_TOOLS.intersection(tools) else "subagent"
