"""A report as one self-contained HTML page: inline CSS, charts as inline SVG drawn here in Python.

Nothing is fetched: a Content-Security-Policy (``default-src 'none'``) forbids every request, so a
page that tried one would log a console error instead of leaking who opened it. The only script is
a few lines, allowed by its hash, that count the charts the browser actually laid out (an SVG with
a size and at least one drawn mark) into ``<body data-charts>`` — the check the browser test reads.
Mail clients drop scripts; the charts do not need it.

Charts: spend over time (bars, with $ axis and time labels), spend by model and by team (horizontal
bars), budgets (bars coloured by utilization: green below 80%, amber below 90%, red from 90%; only
the budgets that matter, ``report_format.bar_budgets``, and one line for the rest).
"""

from __future__ import annotations

import base64
import hashlib
import math
from html import escape

from alerting.report import BudgetRow, Report, Spend
from alerting.report_format import (UNPRICED_MEANING, bar_budgets, budget_label, change_text, model_cost, rest_line,
                                    span, title, usd, versus_parts, who)  # fmt: skip

GREEN, AMBER, RED = "#2e7d32", "#f59e0b", "#c62828"
BAR, MUTED = "#4f6bed", "#6b7280"
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#111827;background:#f9fafb;margin:0}
main{max-width:960px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.sub{color:#6b7280;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:12px 16px;min-width:150px}
.card b{display:block;font-size:20px}.card span{color:#6b7280;font-size:12px}
section{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:8px 16px 16px;margin-top:16px}
svg.chart{max-width:100%;height:auto;display:block}
svg text{font:11px system-ui,sans-serif;fill:#374151}
table{border-collapse:collapse;width:100%}th,td{padding:4px 8px;border-bottom:1px solid #e5e7eb;text-align:left}
th{font-weight:600;color:#374151}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.up{color:#b91c1c}.down{color:#15803d}footer{color:#9ca3af;font-size:12px;margin-top:16px}
"""
# Counts the charts the browser laid out: a size, and at least one mark (bar) with a size.
SCRIPT = (
    'document.body.dataset.charts=String(Array.prototype.filter.call(document.querySelectorAll("svg.chart"),'
    "function(s){var r=s.getBoundingClientRect();return r.width>0&&r.height>0&&Array.prototype.some.call("
    's.querySelectorAll(".mark"),function(m){var b=m.getBBox();return b.width>0&&b.height>0})}).length);'
)


def utilization_colour(fraction: float) -> str:
    return GREEN if fraction < 0.8 else AMBER if fraction < 0.9 else RED


def nice_max(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 × 10^k at or above ``value`` (an axis that ends on a round number)."""
    if value <= 0:
        return 1.0
    k = 10 ** math.floor(math.log10(value))
    return next(m * k for m in (1, 2, 2.5, 5, 10) if m * k >= value * (1 - 1e-12))


def _axis_usd(x: float, step: float) -> str:
    """A tick label with as many decimals as the tick step needs: $0, $250, $0.25, $0.0025."""
    decimals = 0 if step >= 1 else max(2, math.ceil(-math.log10(step)) + 1)
    return f"${x:,.{decimals}f}"


def _svg(width: int, height: int, label: str, body: list[str]) -> str:
    return (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">{"".join(body)}</svg>')  # fmt: skip


def _label(x: float, y: float, short: str, full: str) -> str:
    """A bar's label, right-aligned before it; the full text as a tooltip when it was cut."""
    return f'<text x="{x}" y="{y}" text-anchor="end">{escape(short)}<title>{escape(full)}</title></text>'


def time_chart(r: Report) -> str:
    """Vertical bars, one per hour or local day, with a $ axis of five ticks."""
    w, h, left, bottom, top = 900, 260, 64, 34, 12
    plot_w, plot_h = w - left - 12, h - top - bottom
    n = max(len(r.series), 1)
    top_value = nice_max(max((p.cost for p in r.series), default=0.0))
    body: list[str] = []
    for i in range(5):
        v = top_value * i / 4
        y = top + plot_h - plot_h * i / 4
        body.append(f'<line x1="{left}" x2="{w - 12}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        tick = escape(_axis_usd(v, top_value / 4))
        body.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>')
    step = plot_w / n
    every = max(1, math.ceil(n / 12))  # at most a dozen labels on the time axis
    for i, p in enumerate(r.series):
        x = left + i * step
        bar_h = plot_h * p.cost / top_value
        if p.cost > 0:
            bar_h = max(bar_h, 1.0)  # a cent still shows
            body.append(f'<rect class="mark" x="{x + step * 0.12:.1f}" y="{top + plot_h - bar_h:.1f}" '
                        f'width="{step * 0.76:.1f}" height="{bar_h:.1f}" fill="{BAR}"><title>{escape(p.label)}: '
                        f'{escape(usd(p.cost))}, {p.requests:,} requests</title></rect>')  # fmt: skip
        if i % every == 0:
            body.append(f'<text x="{x + step / 2:.1f}" y="{h - bottom + 16}" text-anchor="middle">'
                        f"{escape(p.label)}</text>")
    body.append(f'<line x1="{left}" x2="{w - 12}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="{MUTED}"/>')
    unit = "hour" if r.series_unit == "hour" else "day"
    return _svg(w, h, f"Spend per {unit}", body)


def bar_chart(items: list[tuple[str, float, str, str]], label: str) -> str:
    """Horizontal bars: (label, value, colour, text after the bar); scaled to the largest value."""
    w, row, left, right = 900, 26, 260, 170
    h = max(len(items), 1) * row + 8
    scale = max((v for _, v, _, _ in items), default=0.0) or 1.0
    body: list[str] = []
    for i, (name, value, colour, note) in enumerate(items):
        y = 4 + i * row
        bar_w = (w - left - right) * min(value / scale, 1.0)
        short = name if len(name) <= 40 else name[:39] + "…"
        body.append(_label(left - 8, y + 17, short, name))
        if value > 0:
            body.append(f'<rect class="mark" x="{left}" y="{y + 4}" width="{max(bar_w, 1.0):.1f}" height="{row - 8}" '
                        f'fill="{colour}" rx="2"><title>{escape(name)}: {escape(note)}</title></rect>')  # fmt: skip
        body.append(f'<text x="{left + bar_w + 6:.1f}" y="{y + 17}">{escape(note)}</text>')
    return _svg(w, h, label, body)


def budget_chart(budgets: list[BudgetRow]) -> str:
    """One bar per budget on a 0–100% track; past 100% the bar is full and the note says how far."""
    w, row, left, right = 900, 28, 300, 220
    h = len(budgets) * row + 8
    track = w - left - right
    body: list[str] = []
    for i, b in enumerate(budgets):
        y = 4 + i * row
        label = budget_label(b)
        short = label if len(label) <= 46 else label[:45] + "…"
        note = f"{b.utilization * 100:.0f}%  {usd(b.usage)} / {usd(b.limit)}"
        body.append(_label(left - 8, y + 18, short, label))
        body.append(f'<rect x="{left}" y="{y + 5}" width="{track}" height="{row - 10}" fill="#e5e7eb" rx="3"/>')
        if b.usage > 0:
            bar_w = max(track * min(b.utilization, 1.0), 1.0)
            colour = utilization_colour(b.utilization)
            body.append(f'<rect class="mark" x="{left}" y="{y + 5}" width="{bar_w:.1f}" height="{row - 10}" '
                        f'fill="{colour}" rx="3"><title>{escape(label)}: {escape(note)}</title></rect>')  # fmt: skip
        body.append(f'<text x="{left + track + 8}" y="{y + 18}">{escape(note)}</text>')
    for frac in (0.8, 0.9):  # the alert thresholds, as guides
        x = left + track * frac
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{h}" stroke="{MUTED}" stroke-dasharray="2,3"/>')
    return _svg(w, h, "Budget utilization", body)


def _change_cell(s: Spend) -> str:
    cls = "up" if s.change > 0 else "down" if s.change < 0 else ""
    return f'<td class="n {cls}">{escape(change_text(s.change_pct, s.cost, s.previous))}</td>'


def _team_cell(s: Spend) -> str:
    return f"<td>{escape(s.team or '')}</td>"


def _spend_table(rows: tuple[Spend, ...], kind: str, with_team: bool = False) -> str:
    if not rows:
        return "<p>none</p>"
    head = (f"<tr><th>{kind}</th>{'<th>Team</th>' if with_team else ''}<th class=n>Spend</th><th class=n>Previous</th>"
            "<th class=n>Change</th><th class=n>Requests</th></tr>")  # fmt: skip
    body = "".join(
        f"<tr><td>{escape(who(s))}</td>{_team_cell(s) if with_team else ''}"
        f"<td class=n>{usd(s.cost)}</td><td class=n>{usd(s.previous)}</td>{_change_cell(s)}"
        f"<td class=n>{s.requests:,}</td></tr>"
        for s in rows
    )
    return f"<table>{head}{body}</table>"


def _models_table(r: Report) -> str:
    if not r.top_models:
        return "<p>none</p>"
    head = ("<tr><th>Provider</th><th>Model</th><th class=n>Spend</th><th class=n>Requests</th>"
            "<th class=n>Input tokens</th><th class=n>Output tokens</th></tr>")  # fmt: skip
    body = "".join(
        f"<tr><td>{escape(m.provider)}</td><td>{escape(m.model)}</td><td class=n>{model_cost(m)}</td>"
        f"<td class=n>{m.requests:,}</td><td class=n>{m.input_tokens:,}</td><td class=n>{m.output_tokens:,}</td></tr>"
        for m in r.top_models
    )
    return f"<table>{head}{body}</table>"


def _unpriced_table(r: Report) -> str:
    if not r.unpriced:
        return "<p>Every request was priced.</p>"
    rows = "".join(f"<tr><td>{escape(u.provider)}</td><td>{escape(u.model)}</td><td class=n>{u.requests:,}</td></tr>"
                   for u in r.unpriced)  # fmt: skip
    return ("<p>Requests in this period of models with no known price: their cost is NULL (not $0) and not in the "
            "totals above.</p>"
            f"<table><tr><th>Provider</th><th>Model</th><th class=n>Requests</th></tr>{rows}</table>")  # fmt: skip


def _cards(r: Report) -> str:
    cards = [(usd(r.total_cost), "total spend"), versus_parts(r), (f"{r.requests:,}", "requests"),
             (f"{r.unpriced_requests:,}", f"unpriced requests in this period ({UNPRICED_MEANING})")]
    return '<div class="cards">' + "".join(f'<div class="card"><b>{escape(v)}</b><span>{escape(t)}</span></div>'
                                           for v, t in cards) + "</div>"  # fmt: skip


def charts(r: Report) -> list[tuple[str, str]]:
    """(heading, inline SVG or a note) for each chart section, in page order."""
    models = [(name, cost, BAR, usd(cost)) for name, cost in r.by_model]
    teams = [(who(s), s.cost, BAR, f"{usd(s.cost)} ({change_text(s.change_pct, s.cost, s.previous)})")
             for s in r.teams if s.cost > 0]  # fmt: skip
    return [
        (f"Spend per {'hour' if r.series_unit == 'hour' else 'day'}", time_chart(r)),
        ("Spend by model", bar_chart(models, "Spend by model") if models else "<p>No priced spend.</p>"),
        ("Spend by team", bar_chart(teams, "Spend by team") if teams else "<p>No priced spend.</p>"),
        ("Budgets", _budgets(r)),
    ]


def _budgets(r: Report) -> str:
    """The budget bars that matter and one line for the rest."""
    if not r.budgets:
        return "<p>No budgets configured.</p>"
    shown, rest = bar_budgets(r.budgets)
    more = rest_line(rest, bool(shown))
    return (budget_chart(shown) if shown else "") + (f"<p>{escape(more)}</p>" if more else "")


def to_html(r: Report) -> str:
    """One self-contained page (no request leaves it): title, summary cards, charts, tables."""
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    csp = f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-{digest}'"
    sections = "".join(f"<section><h2>{escape(h)}</h2>{body}</section>" for h, body in charts(r))
    tables = [("Customers", _spend_table(r.customers, "Customer")), ("Teams", _spend_table(r.teams, "Team")),
              ("Top virtual keys", _spend_table(r.top_keys, "Key", with_team=True)), ("Top models", _models_table(r)),
              ("Unpriced usage", _unpriced_table(r))]  # fmt: skip
    sections += "".join(f"<section><h2>{escape(h)}</h2>{body}</section>" for h, body in tables)
    tz = r.local_start.tzinfo
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{escape(csp)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title(r))}</title><style>{CSS}</style></head><body><main>"
        f"<h1>{escape(r.period.capitalize())} LLM spend: {escape(span(r))}</h1>"
        f'<p class="sub">{escape(r.timezone)} · compared to {r.previous_start.astimezone(tz):%Y-%m-%d %H:%M} – '
        f"{r.previous_end.astimezone(tz):%Y-%m-%d %H:%M}</p>"
        f"{_cards(r)}{sections}"
        f"<footer>Generated by spendlake at {r.generated_at:%Y-%m-%d %H:%M} UTC. Each request is counted once.</footer>"
        f"</main><script>{SCRIPT}</script></body></html>\n"
    )


__all__ = ["bar_chart", "budget_chart", "charts", "nice_max", "time_chart", "to_html", "utilization_colour"]
