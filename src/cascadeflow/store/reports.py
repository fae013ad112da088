"""The ledger's summary for people: ``cascadeflow stats`` prints it as a table."""

from __future__ import annotations

import re
import time
from datetime import datetime

__all__ = ["parse_since", "render_summary"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str) -> float:
    """``30m``, ``24h``, ``7d`` before now, or an ISO date/time, as epoch seconds."""
    match = _DURATION.match(text.strip())
    if match:
        return time.time() - float(match.group(1)) * _SECONDS[match.group(2)]
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(f"--since {text!r}: use a duration such as 24h or 7d, or an ISO date") from None


def render_summary(summary: dict, by: str | None, where: str) -> str:
    header = f"{'':<28} {'requests':>9} {'cascaded':>9} {'accepted':>9} {'errors':>7} {'cost $':>11} {'baseline $':>11} {'saving':>8}"
    lines = [f"ledger: {where}", header, "-" * len(header)]
    rows = list((summary.get("by") or {}).items()) if by else []
    for name, figures in [*rows, ("total", summary["total"])]:
        baseline = figures["baseline_cost"]
        saving = f"{100 * figures['saving'] / baseline:.1f}%" if baseline else "n/a"
        lines.append(
            f"{name[:28]:<28} {figures['requests']:>9} {figures['cascaded']:>9} {figures['drafts_accepted']:>9} "
            f"{figures['errors']:>7} {figures['cost']:>11.6f} {baseline:>11.6f} {saving:>8}"
        )
    return "\n".join(lines)
