"""Render evaluation results: a self-contained HTML page with inline SVG charts, a terminal table, Markdown.

Inputs are the plain dicts of metrics.py: summaries[name] = summarize(...), curves[name] = compute_curves(...),
operating_points[name] = fit_threshold(...) / fit_combined(...) (or any dict with cost and quality).
Numbers are rounded here and only here. The page loads nothing (no scripts, fonts or styles from
elsewhere), so it can be archived or mailed as one file.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Mapping, Sequence

__all__ = ["render_html", "render_markdown", "render_table", "svg_chart"]

_NA = "n/a"
_COLORS = {"cascade": "#1f6fb4", "random": "#8a8a8a", "oracle": "#2a9d3a", "point": "#d62728"}
_BASELINES = (("always_draft", "always draft"), ("always_strong", "always strong"), ("random", "random"), ("oracle", "oracle"))
_DEFINITIONS = (
    "Quality retained = cascade quality / always-strong quality; saving = 1 − cascade cost / always-strong cost; "
    "false accept = share of accepted drafts scoring below the strong answer; APGR = area under the curve of the "
    "performance gap recovered over escalation rate (random escalation: 0.5); AUROC of confidence for a correct "
    "draft (score ≥ 0.5). Random and oracle escalate as many requests as the cascade did."
)
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0}th,td{padding:.25em .7em;border-bottom:1px solid #e4e4e4;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f4f6f8;font-weight:600}
.charts{display:flex;flex-wrap:wrap;gap:1.5em}.note{color:#555;font-size:.92em}svg text{font-family:inherit}
"""


def pct(value: float | None, digits: int = 1) -> str:
    """A share as a percentage, or n/a."""
    return _NA if value is None else f"{100.0 * value:.{digits}f}%"


def saving_pct(value: float | None) -> str:
    """A saving, or "unknown" when a price is missing (a saving on costs taken as $0 would be invented)."""
    return "unknown" if value is None else pct(value)


def num(value: float | None, digits: int = 3) -> str:
    """A figure to ``digits`` decimals, or n/a."""
    return _NA if value is None else f"{value:.{digits}f}"


def _usd(value: float | None) -> str:
    return _NA if value is None else f"${value:.4g}"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _ci(summary: Mapping) -> str:
    ci = summary.get("quality_retained_ci")
    return _NA if not ci else f"{pct(ci[0])}–{pct(ci[1])}"


#: (header, cell) of the headline columns, shared by every rendering
_HEADLINE: tuple[tuple[str, Callable[[Mapping], str]], ...] = (
    ("n", lambda s: str(s["n"])),
    ("quality retained", lambda s: pct(s["quality_retained"])),
    ("95% CI", _ci),
    ("saving", lambda s: saving_pct(s["saving"])),
    ("escalated", lambda s: pct(s["escalation_rate"])),
    ("false accept", lambda s: pct(s["false_accept_rate"])),
    ("APGR", lambda s: num(s["apgr"])),
    ("AUROC", lambda s: num(s["auroc"])),
)
_TERMINAL_BASELINES = tuple((f"{label} q.ret", lambda s, k=key: pct(s["baselines"][k]["quality_retained"]))
                            for key, label in _BASELINES if key != "always_strong")  # fmt: skip


def render_table(summaries: Mapping[str, Mapping]) -> str:
    """A fixed-width table for the terminal: a header, a rule, then one row per dataset (in the given order)."""
    cells = (*_HEADLINE, *_TERMINAL_BASELINES)
    headers = ["dataset", *(header for header, _ in cells)]
    rows = [[name] + [cell(s) for _, cell in cells] for name, s in summaries.items()]
    widths = [max(len(header), *(len(r[i]) for r in rows)) if rows else len(header) for i, header in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def render_markdown(summaries: Mapping[str, Mapping], notes: str | Sequence[str] | None = None) -> str:
    """Markdown for a generated benchmarks file: notes, the headline table, and the baselines table."""
    paragraphs = [notes] if isinstance(notes, str) else list(notes or [])
    headline = ["| dataset | " + " | ".join(h for h, _ in _HEADLINE) + " |", "|---" + "|---:" * len(_HEADLINE) + "|"]
    headline += [f"| {_md(name)} | " + " | ".join(cell(s) for _, cell in _HEADLINE) + " |" for name, s in summaries.items()]
    base = ["| dataset | cascade | " + " | ".join(label for _, label in _BASELINES) + " |", "|---" + "|---:" * (len(_BASELINES) + 1) + "|"]
    for name, s in summaries.items():
        cells = [s, *(s["baselines"][key] for key, _ in _BASELINES)]
        base.append(f"| {_md(name)} | " + " | ".join(f"{pct(c['quality_retained'])} / {saving_pct(c['saving'])}" for c in cells) + " |")
    legend = "Quality retained / saving against always-strong; random and oracle escalate as many requests as the cascade did."
    return "\n\n".join([*paragraphs, "\n".join(headline), legend, "\n".join(base)]) + "\n"


def _ticks(lo: float, hi: float, count: int = 5) -> tuple[float, float, list[float]]:
    """A range widened to round steps (1, 2, 2.5, 5 × 10^k) and the ticks inside it."""
    if not hi > lo:
        lo, hi = lo - (abs(lo) * 0.05 or 0.5), hi + (abs(hi) * 0.05 or 0.5)
    raw = (hi - lo) / count
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    lo, hi = math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step
    return lo, hi, [lo + i * step for i in range(round((hi - lo) / step) + 1)]


def _tick_label(value: float) -> str:
    return f"{round(value, 10):g}"


def _thin(points: Sequence[tuple[float, float]], limit: int = 400) -> list[tuple[float, float]]:
    """At most about `limit` points, first and last kept, so pooled curves stay small in the page."""
    if len(points) <= limit:
        return list(points)
    step = (len(points) - 1) / (limit - 1)
    return [points[round(i * step)] for i in range(limit)]


def svg_chart(series: Sequence[Mapping], *, title: str, x_label: str, y_label: str, markers: Sequence[Mapping] = (),
              width: int = 460, height: int = 320) -> str:  # fmt: skip
    """An inline SVG line chart.

    series: {"label", "points": [(x, y)], "color", "dash": bool, "dots": bool}; markers: {"x", "y", "label", "color"}.
    """
    left, right, top, bottom = 58, 14, 30, 70
    xs = [x for s in series for x, _ in s["points"]] + [m["x"] for m in markers]
    ys = [y for s in series for _, y in s["points"]] + [m["y"] for m in markers]
    x0, x1, x_ticks = _ticks(min(xs, default=0.0), max(xs, default=1.0))
    y0, y1, y_ticks = _ticks(min(ys, default=0.0), max(ys, default=1.0))
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return round(left + (x - x0) / (x1 - x0) * plot_w, 1)

    def py(y: float) -> float:
        return round(top + (1.0 - (y - y0) / (y1 - y0)) * plot_h, 1)

    esc = html.escape
    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'role="img" aria-label="{esc(title)}">'), f"<title>{esc(title)}</title>",
           f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13" font-weight="600">{esc(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fbfbfc" stroke="#999"/>']  # fmt: skip
    for t in x_ticks:
        out.append(f'<line x1="{px(t)}" y1="{top}" x2="{px(t)}" y2="{top + plot_h}" stroke="#e6e6e6"/>'
                   f'<text x="{px(t)}" y="{top + plot_h + 14}" text-anchor="middle" font-size="10">{_tick_label(t)}</text>')  # fmt: skip
    for t in y_ticks:
        out.append(f'<line x1="{left}" y1="{py(t)}" x2="{left + plot_w}" y2="{py(t)}" stroke="#e6e6e6"/>'
                   f'<text x="{left - 5}" y="{py(t) + 3}" text-anchor="end" font-size="10">{_tick_label(t)}</text>')  # fmt: skip
    out.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h + 32}" text-anchor="middle" font-size="11">{esc(x_label)}</text>')
    out.append(f'<text x="14" y="{top + plot_h / 2}" text-anchor="middle" font-size="11" '
               f'transform="rotate(-90 14 {top + plot_h / 2})">{esc(y_label)}</text>')  # fmt: skip
    legend_x = left
    for s in series:
        points = _thin(s["points"])
        dash = ' stroke-dasharray="6 4"' if s.get("dash") else ""
        coords = " ".join(f"{px(x)},{py(y)}" for x, y in points)
        out.append(f'<polyline fill="none" stroke="{s["color"]}" stroke-width="2"{dash} points="{coords}"/>')
        if s.get("dots"):
            out += [f'<circle cx="{px(x)}" cy="{py(y)}" r="2" fill="{s["color"]}"/>' for x, y in points]
        out.append(f'<line x1="{legend_x}" y1="{height - 14}" x2="{legend_x + 18}" y2="{height - 14}" stroke="{s["color"]}" '
                   f'stroke-width="2"{dash}/><text x="{legend_x + 22}" y="{height - 10}" font-size="11">{esc(s["label"])}</text>')  # fmt: skip
        legend_x += 30 + 7 * len(s["label"])
    for m in markers:
        color, x, y = m.get("color", _COLORS["point"]), px(m["x"]), py(m["y"])
        flip = x > left + 0.6 * plot_w  # label on the left near the right edge, so it stays inside the chart
        text = f'x="{x - 8 if flip else x + 8}" y="{y - 8}" font-size="10" text-anchor="{"end" if flip else "start"}"'
        out.append(f'<circle cx="{x}" cy="{y}" r="5" fill="{color}" stroke="#fff" stroke-width="1.5"/>'  # white halo, then the label
                   f'<text {text} fill="#fff" stroke="#fff" stroke-width="3">{esc(m["label"])}</text>'
                   f'<text {text} fill="{color}">{esc(m["label"])}</text>')  # fmt: skip
    out.append("</svg>")
    return "\n".join(out)


def _deferral_chart(name: str, curve: Mapping, summary: Mapping | None) -> str:
    """Accepts compute_curves() output, or {"deferral": [cascade points], "oracle": [oracle points], ...}."""
    deferral = curve["deferral"]
    cascade = deferral["cascade"] if isinstance(deferral, Mapping) else deferral
    oracle = deferral.get("oracle") if isinstance(deferral, Mapping) else curve.get("oracle")
    # random escalation's expected curve is the straight line from always-draft (k = 0) to always-strong (k = n)
    series: list[dict[str, object]] = [
        {"label": "cascade (by confidence)", "points": [(p["escalation_rate"], p["quality"]) for p in cascade], "color": _COLORS["cascade"]},
        {"label": "random", "points": [(0.0, cascade[0]["quality"]), (1.0, cascade[-1]["quality"])], "color": _COLORS["random"], "dash": True},
    ]  # fmt: skip
    if oracle:
        series.append({"label": "oracle", "points": [(p["escalation_rate"], p["quality"]) for p in oracle], "color": _COLORS["oracle"]})
    markers = [{"x": summary["escalation_rate"], "y": summary["quality"], "label": "as run"}] if summary else []
    return svg_chart(series, title=f"{name}: deferral curve", x_label="escalation rate", y_label="quality", markers=markers)


def _operating(op: Mapping | None) -> Mapping | None:
    """The deployed point of a fit_threshold/fit_combined result (its in_sample figures), or the dict itself."""
    if not op:
        return None
    point = op.get("in_sample", op)
    return point if "cost" in point and "quality" in point else None


def _cost_quality_chart(name: str, curve: Mapping, op: Mapping | None, summary: Mapping | None) -> str:
    points = curve["cost_quality"]
    point = _operating(op)
    has_cost = any(p["cost"] > 0 for p in points)
    x_key = "cost" if has_cost else "escalation_rate"  # without cost data, escalations are what a threshold trades
    series = [{"label": "thresholds", "points": [(p[x_key], p["quality"]) for p in points], "color": _COLORS["cascade"], "dots": True}]
    markers = []
    if summary:
        strong = summary["baselines"]["always_strong"]
        markers.append({"x": strong[x_key], "y": strong["quality"], "label": "always strong", "color": _COLORS["random"]})
    if point is not None and point.get(x_key) is not None:
        label = "chosen: accept nothing" if point.get("threshold") is None else f"chosen t={point['threshold']:.3g}"
        markers.append({"x": point[x_key], "y": point["quality"], "label": label})
    x_label = "cost (USD)" if has_cost else "escalation rate (no cost data)"
    return svg_chart(series, title=f"{name}: cost–quality", x_label=x_label, y_label="quality", markers=markers)


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _slug(name: str) -> str:
    return "ds-" + (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "x")


def _operating_note(op: Mapping) -> str:
    point = _operating(op) or {}
    parts = [f"threshold {_NA if point.get('threshold') is None else format(point['threshold'], '.4g')}"]
    if "target" in op:
        parts.append(f"target quality retained {pct(op['target'])}" + ("" if op.get("reached", True) else " (not reached)"))
    parts.append(f"in sample: saving {saving_pct(point.get('saving'))}, quality retained {pct(point.get('quality_retained'))}")
    cv = op.get("cv")
    if cv:
        parts.append(f"cross-validated ({len(cv.get('folds', []))} folds, held-out records only): saving {saving_pct(cv.get('saving'))}, "
                     f"quality retained {pct(cv.get('quality_retained'))}, escalated {pct(cv.get('escalation_rate'))}")  # fmt: skip
    return "Operating point: " + "; ".join(parts) + "."


def render_html(summaries: Mapping[str, Mapping], curves: Mapping[str, Mapping], operating_points: Mapping[str, Mapping],
                title: str) -> str:  # fmt: skip
    """One self-contained page: an overview, then per dataset its tables and (where curves exist) two SVG charts."""
    esc = html.escape
    overview = [[name, *(cell(s) for _, cell in _HEADLINE)] for name, s in summaries.items()]
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">', f"<title>{esc(title)}</title>",
        f"<style>{_CSS}</style>", "</head>", "<body>", f"<h1>{esc(title)}</h1>",
        f'<p class="note">{esc(_DEFINITIONS)}</p>',
        "<h2>Overview</h2>", _html_table(["dataset", *(h for h, _ in _HEADLINE)], overview),
    ]  # fmt: skip
    for name, s in summaries.items():
        parts += [f'<section id="{_slug(name)}">', f"<h2>{esc(name)}</h2>",
                  _html_table([h for h, _ in _HEADLINE], [[cell(s) for _, cell in _HEADLINE]])]  # fmt: skip
        rows = [["cascade", num(s["quality"]), _usd(s["cost"]), saving_pct(s["saving"]), pct(s["quality_retained"]),
                 pct(s["escalation_rate"]), num(s["apgr"])]]  # fmt: skip
        for key, label in _BASELINES:
            b = s["baselines"][key]
            rows.append([label, num(b["quality"]), _usd(b["cost"]), saving_pct(b["saving"]), pct(b["quality_retained"]),
                         pct(b["escalation_rate"]), num(b["apgr"])])  # fmt: skip
        parts.append(_html_table(["policy", "quality", "cost", "saving", "quality retained", "escalated", "APGR"], rows))
        if operating_points.get(name):
            parts.append(f'<p class="note">{esc(_operating_note(operating_points[name]))}</p>')
        if name in curves:
            parts += ['<div class="charts">', _deferral_chart(name, curves[name], s),
                      _cost_quality_chart(name, curves[name], operating_points.get(name), s), "</div>"]  # fmt: skip
        parts.append("</section>")
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"
