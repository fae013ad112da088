"""The ledger's summary for people: ``cascadeflow stats`` prints, as tables, what the dashboard shows.

The figures come from :func:`cascadeflow.store.queries.overview` (the dashboard's own
query), so the terminal and the browser always agree. The first table keeps the
historical layout (one row per ``--by`` group, then ``total``) for scripts that read it.
"""

from __future__ import annotations

import re
import time
from datetime import datetime

from sqlalchemy.engine import make_url

__all__ = ["parse_since", "render_summary", "render_overview", "safe_url"]

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


def safe_url(url: str) -> str:
    """The database URL without its password (it is printed)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy knows: print only its scheme
        return url.split("://", 1)[0] + "://…"


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


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _when(ts: float, step: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M" if step < 86400 else "%Y-%m-%d")


def _table(title: str, columns: list[tuple[str, int]], rows: list[list[str]]) -> list[str]:
    """A title row naming the first column, right-aligned figures, a rule under the header."""
    widths = [max(width, len(name), *(len(r[i]) for r in rows)) if rows else max(width, len(name))
              for i, (name, width) in enumerate(columns)]
    widths[0] = max(widths[0], len(title))
    head = [title.ljust(widths[0])] + [name.rjust(w) for (name, _), w in zip(columns[1:], widths[1:], strict=True)]
    lines = ["  ".join(head).rstrip(), "-" * len("  ".join(head))]
    for row in rows:
        lines.append("  ".join([row[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)]).rstrip())
    return lines


def render_overview(data: dict, summary: dict, by: str | None, where: str, recent: int = 10) -> str:
    """Every table of the dashboard: the ``--by`` table with totals, saving over time, rules, spend, latency, decisions."""
    window = data["range"]
    span = f"since {_when(window['since'], 0)}" if window["since"] is not None else "all time"
    lines = [render_summary(summary, by, f"{where} · {span}")]
    totals = data["totals"]
    lines += ["", f"saving ${totals['saving']:.6f} of ${totals['baseline_cost']:.6f} baseline ({_pct(totals['saving_pct'])}); "
                  f"{totals['accepted']} of {totals['drafted']} drafts accepted ({_pct(totals['accepted_pct'])}; "
                  f"{totals['escalated']} escalated, {totals['skipped']} of {totals['cascaded']} cascaded requests "
                  f"skipped drafting), {totals['pass_through']} passed through", ""]

    step = window["bucket"]
    series = [[_when(b["t"], step), str(b["requests"]), f"{b['cost']:.6f}", f"{b['baseline_cost']:.6f}",
               f"{b['baseline_cost'] - b['cost']:.6f}"] for b in data["series"]]
    lines += _table(f"saving over time (per {_duration(step)})",
                    [("", 16), ("requests", 9), ("cost $", 11), ("baseline $", 11), ("saving $", 11)], series)

    rules = []
    for rule in data["rules"]:
        rules.append([rule["rule"], str(rule["requests"]), f"{rule['accepted']} ({_pct(rule['accepted_pct'])})",
                      f"{rule['escalated']} ({_pct(rule['escalated_pct'])})", str(rule["skipped"]), str(rule["errors"]),
                      f"{rule['cost']:.6f}", _pct(rule["saving_pct"])])
        rules += [[f"  escalated: {reason}", str(n), "", "", "", "", "", ""] for reason, n in rule["escalations"].items()]
        rules += [[f"  skipped: {reason}", str(n), "", "", "", "", "", ""] for reason, n in rule["skips"].items()]
        rules += [[f"  stage passed over: {model} ({why})", str(n), "", "", "", "", "", ""]
                  for model, reasons in rule.get("skipped_stages", {}).items() for why, n in reasons.items()]
    lines += ["", *_table("cascade rules", [("", 28), ("requests", 9), ("accepted", 14), ("escalated", 14), ("skipped", 8),
                                            ("errors", 7), ("cost $", 11), ("saving", 7)], rules or [["(none)", *[""] * 7]])]

    for name, label in (("key", "spend by key"), ("user", "spend by user"), ("team", "spend by team"),
                        ("model", "spend by requested model")):
        rows = [[g["name"] if g["name"] is not None else "(none)", str(g["requests"]), f"{g['cost']:.6f}",
                 f"{g['saving']:.6f}", _pct(g["saving_pct"])] for g in data["spend"][name]]
        lines += ["", *_table(label, [("", 28), ("requests", 9), ("cost $", 11), ("saving $", 11), ("saving", 7)], rows)]

    shadow = [[rule, str(q["pairs"]), str(q["labelled"]), str(q["accepted_wrong"]),
               "-" if q["quality_retained"] is None else f"{q['quality_retained']:.3f}",
               "-" if q["quality_retained_ci"] is None else "{:.3f}–{:.3f}".format(*q["quality_retained_ci"]),
               f"{q['shadow_cost']:.6f}"] for rule, q in data.get("shadow", {}).items()]
    if shadow:
        lines += ["", *_table("quality measured on live traffic (shadow mode; 95% interval)",
                              [("rule", 28), ("pairs", 7), ("labelled", 9), ("wrong", 7), ("quality", 8),
                               ("interval", 13), ("shadow $", 11)], shadow)]

    latency = [[label, *(_ms(data["latency"][metric][q]) for q in ("p50", "p90", "p99")), str(data["latency"][metric]["count"])]
               for metric, label in (("latency", "end to end"), ("ttfb", "first byte"))]
    lines += ["", *_table("latency (ms)", [("", 20), ("p50", 9), ("p90", 9), ("p99", 9), ("requests", 9)], latency)]

    decisions = []
    for row in data["recent"][:recent]:
        decision = row["decision"] or ("pass-through" if row["plan"] == "pass_through" else "")
        if row["status"] >= 400:
            decision = f"{decision} (status {row['status']})".strip()
        decisions.append([datetime.fromtimestamp(row["ts"]).strftime("%Y-%m-%d %H:%M:%S"), row["requested_model"],
                          row["rule"] or "-", decision,
                          "-" if row["confidence"] is None else f"{row['confidence']:.3f}", row["served_model"] or "-",
                          "-" if row["cost"] is None else f"{row['cost']:.6f}"])
    if decisions:
        widths = [max(len(r[i]) for r in decisions) for i in range(6)]
        head = ["recent decisions", "model", "rule", "decision", "confidence", "served by", "cost $"]
        widths = [max(w, len(h)) for w, h in zip([*widths, 11], head, strict=True)]
        fmt = lambda r: "  ".join(v.rjust(w) if i in (4, 6) else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True)))  # noqa: E731
        lines += ["", fmt(head).rstrip(), "-" * len(fmt(head)), *(fmt(r).rstrip() for r in decisions)]
    return "\n".join(lines)


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"
