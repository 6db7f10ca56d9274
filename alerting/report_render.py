"""A report, rendered: Markdown, CSV, a self-contained HTML page (``alerting.report_html``) and the
channel-neutral ``Alert`` that Slack and e-mail deliver.

Money is shown to the cent; the CSV keeps six decimals so that reading it back gives the report's
numbers (and sums agree with the raw rows to well under a cent).
"""

from __future__ import annotations

import csv
import io
from alerting.records import Alert
from alerting.report import Report, Spend
from alerting.report_format import NOUN, budget_label, pct, span, text_bar, title, usd, who
from alerting.report_html import to_html

CSV_COLUMNS = ("section", "key", "name", "cost_usd", "previous_cost_usd", "change_pct", "requests", "limit_usd")


# --- Markdown ----------------------------------------------------------------------------------


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# numeric columns, right-aligned
NUMERIC = {"Spend", "Previous", "Change", "Requests", "Usage", "Limit", "Input tokens", "Output tokens"}


def _table(header: tuple[str, ...], rows: list[tuple[object, ...]]) -> list[str]:
    """A Markdown table and a blank line; "_none_" for no rows."""
    if not rows:
        return ["_none_", ""]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if h in NUMERIC else "---" for h in header) + "|"]
    return out + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows] + [""]


def _spend_rows(rows: tuple[Spend, ...]) -> list[tuple[object, ...]]:
    return [(s.name, s.key, usd(s.cost), usd(s.previous), pct(s.change_pct, s.cost), f"{s.requests:,}") for s in rows]


def to_markdown(r: Report) -> str:
    """The report as GitHub-flavoured Markdown (headings, tables, text budget bars)."""
    noun = NOUN[r.period]
    money = ("Spend", "Previous", "Change", "Requests")
    out = [
        f"# {r.period.capitalize()} LLM spend report: {span(r)}",
        "",
        f"**Total: {usd(r.total_cost)}** ({pct(r.change_pct, r.total_cost)} vs previous {noun}: "
        f"{usd(r.previous_cost)}) · {r.requests:,} requests · {r.unpriced_requests:,} unpriced",
        "",
        f"Timezone {r.timezone}. Compared to {r.previous_start.astimezone(r.local_start.tzinfo):%Y-%m-%d %H:%M} to "
        f"{r.previous_end.astimezone(r.local_start.tzinfo):%Y-%m-%d %H:%M}. "
        f"Generated {r.generated_at:%Y-%m-%d %H:%M} UTC.",
        "",
        "## Spend over time",
        "",
        *_table(("Hour" if r.series_unit == "hour" else "Day", "Spend", "Requests"),
                [(p.label, usd(p.cost), f"{p.requests:,}") for p in r.series]),  # fmt: skip
        "## By customer",
        "",
        *_table(("Customer", "ID", *money), _spend_rows(r.customers)),
        "## By team",
        "",
        *_table(("Team", "ID", *money), _spend_rows(r.teams)),
        "## Top virtual keys",
        "",
        *_table(("Key", "ID", *money, "Team"),
                [(*row[:6], s.team or "") for row, s in zip(_spend_rows(r.top_keys), r.top_keys)]),  # fmt: skip
        "## Top models",
        "",
        *_table(("Provider", "Model", "Spend", "Requests", "Input tokens", "Output tokens"),
                [(m.provider, m.model, usd(m.cost), f"{m.requests:,}", f"{m.input_tokens:,}", f"{m.output_tokens:,}")
                 for m in r.top_models]),  # fmt: skip
        "## Budgets",
        "",
        *_table(("Budget", "Utilization", "Usage", "Limit", "Resets"),
                [(budget_label(b), f"`{text_bar(b.utilization)}`", usd(b.usage), usd(b.limit),
                  f"{b.reset_at.astimezone(r.local_start.tzinfo):%Y-%m-%d %H:%M}") for b in r.budgets]),  # fmt: skip
        "## Unpriced usage",
        "",
        *_table(("Provider", "Model", "Requests"), [(u.provider, u.model, f"{u.requests:,}") for u in r.unpriced]),
    ]
    return "\n".join(out).rstrip("\n") + "\n"


# --- CSV ---------------------------------------------------------------------------------------


def _money(x: float | None) -> str:
    """Six decimals. Rounded to nine first: sums of prices with seven or more decimals often sit
    exactly on a half at the sixth, and float noise in the 16th digit must not pick the side."""
    return "" if x is None else f"{round(x, 9):.6f}"


def to_csv(r: Report) -> str:
    """One tidy table (CSV_COLUMNS), one row per thing reported; the ``section`` column says what.

    Sections: total (its name is the period, ISO start/end), customer, team, virtual_key, model,
    time (a bucket of the spend-over-time series, key = its ISO start), budget (cost = usage,
    limit_usd = the limit) and unpriced (requests only). Empty cells: not applicable."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    interval = f"{r.local_start.isoformat()}/{r.local_end.isoformat()}"
    w.writerow(("total", "total", interval, _money(r.total_cost), _money(r.previous_cost), _pct(r.change_pct),
                r.requests, ""))  # fmt: skip
    for section, rows in (("customer", r.customers), ("team", r.teams), ("virtual_key", r.top_keys)):
        for s in rows:
            w.writerow((section, s.key, s.name, _money(s.cost), _money(s.previous), _pct(s.change_pct), s.requests, ""))
    for m in r.top_models:
        w.writerow(("model", f"{m.provider}/{m.model}", m.model, _money(m.cost), "", "", m.requests, ""))
    for p in r.series:
        w.writerow(("time", p.start.astimezone(r.local_start.tzinfo).isoformat(), p.label, _money(p.cost), "", "",
                    p.requests, ""))  # fmt: skip
    for b in r.budgets:
        w.writerow(("budget", b.budget_id, b.name, _money(b.usage), "", "", "", _money(b.limit)))
    for u in r.unpriced:
        w.writerow(("unpriced", f"{u.provider}/{u.model}", u.model, "", "", "", u.requests, ""))
    return buf.getvalue()


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x:.4f}"


# --- the message (Slack, e-mail) ---------------------------------------------------------------


def _top_line(label: str, rows: tuple[Spend, ...], n: int = 3) -> str | None:
    if not rows:
        return None
    items = [f"{who(s)} {usd(s.cost)} ({pct(s.change_pct, s.cost)})" for s in rows[:n] if s.cost or s.previous]
    return f"Top {label}: " + "; ".join(items) if items else None


def alert_lines(r: Report) -> tuple[str, ...]:
    """The compact body: period, totals, the top few of each kind, budgets as text bars, unpriced."""
    lines = [f"{span(r)} ({r.timezone}); previous {NOUN[r.period]} {usd(r.previous_cost)}",
             f"{r.requests:,} requests, {r.unpriced_requests:,} unpriced"]  # fmt: skip
    for label, rows in (("customers", r.customers), ("teams", r.teams), ("keys", r.top_keys)):
        line = _top_line(label, rows)
        if line:
            lines.append(line)
    if r.top_models:
        lines.append("Top models: " + "; ".join(f"{m.provider}/{m.model} {usd(m.cost)}" for m in r.top_models[:3]))
    if r.budgets:
        lines.append("Budgets:")
        for b in sorted(r.budgets, key=lambda b: -b.utilization)[:5]:
            lines.append(f"  {text_bar(b.utilization)}  {budget_label(b)}: {usd(b.usage)} / {usd(b.limit)}")
        if len(r.budgets) > 5:
            lines.append(f"  … and {len(r.budgets) - 5} more")
    if r.unpriced:
        items = "; ".join(f"{u.provider}/{u.model} ({u.requests:,})" for u in r.unpriced[:3])
        more = f" and {len(r.unpriced) - 3} more models" if len(r.unpriced) > 3 else ""
        lines.append(f"Unpriced requests: {items}{more}")
    return tuple(lines)


def alert_fields(r: Report) -> tuple[tuple[str, str], ...]:
    """At most ten label/value pairs (Slack allows ten fields in a section block)."""
    fields = [("Total", usd(r.total_cost)), (f"Previous {NOUN[r.period]}", usd(r.previous_cost)),
              ("Change", f"{usd(r.change)} ({pct(r.change_pct, r.total_cost)})"), ("Requests", f"{r.requests:,}"),
              ("Unpriced requests", f"{r.unpriced_requests:,}"), ("Period", span(r))]  # fmt: skip
    for label, rows in (("Top customer", r.customers), ("Top team", r.teams), ("Top key", r.top_keys)):
        if rows and rows[0].cost:
            fields.append((label, f"{who(rows[0])}: {usd(rows[0].cost)}"))
    if r.top_models:
        m = r.top_models[0]
        fields.append(("Top model", f"{m.provider}/{m.model}: {usd(m.cost)}"))
    return tuple(fields[:10])


def to_alert(r: Report) -> Alert:
    """The report as an ``Alert`` (kind ``report``): the outbox keys it once per period start, so a
    restarted scheduler does not send the same week twice; a period-to-date report is keyed by its
    end too."""
    key = f"report:{r.period}:{r.local_start.date().isoformat()}"
    if r.to_date:
        key += f":to:{r.end.isoformat()}"
    facts = {
        "period": r.period, "timezone": r.timezone, "to_date": r.to_date,
        "start": r.start.isoformat(), "end": r.end.isoformat(),
        "previous_start": r.previous_start.isoformat(), "previous_end": r.previous_end.isoformat(),
        "total_usd": round(r.total_cost, 6), "previous_usd": round(r.previous_cost, 6),
        "change_usd": round(r.change, 6), "change_pct": None if r.change_pct is None else round(r.change_pct, 4),
        "requests": r.requests, "unpriced_requests": r.unpriced_requests,
    }  # fmt: skip
    return Alert(key=key, kind="report", severity="info", title=title(r), created_at=r.generated_at,
                 lines=alert_lines(r), fields=alert_fields(r), facts=facts, html=to_html(r))  # fmt: skip


__all__ = ["CSV_COLUMNS", "alert_fields", "alert_lines", "text_bar", "title", "to_alert", "to_csv", "to_html",
           "to_markdown", "usd"]  # fmt: skip
