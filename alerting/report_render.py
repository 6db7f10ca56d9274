"""A report, rendered: Markdown, CSV, a self-contained HTML page (``alerting.report_html``) and the
channel-neutral ``Alert`` that Slack and e-mail deliver.

Money is shown to the cent; the CSV prints each cost in full at the one precision a person reads a
cost at (``pricing.money``: 12 significant digits, so reading it back gives the report's numbers and
no float noise such as ``0.30000000000000004`` shows). A change is a percentage only where the report
gives one (``alerting.report.change_pct``); elsewhere the previous amount is shown. Budget bars are
drawn for the budgets that matter (``report_format.bar_budgets``) and one line counts the rest.
"""

from __future__ import annotations

import csv
import io

from alerting.records import Alert
from alerting.report import Report, Spend
from alerting.report_format import (NOUN, UNPRICED_MEANING, bar_budgets, budget_label, change_text, model_cost,
                                    rest_line, span, text_bar, title, unpriced_text, usd, versus, who)  # fmt: skip
from alerting.report_html import to_html
from pricing.money import cost_text

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


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def _spend_rows(rows: tuple[Spend, ...]) -> list[tuple[object, ...]]:
    return [(s.name, s.key, usd(s.cost), usd(s.previous), change_text(s.change_pct, s.cost, s.previous),
             f"{s.requests:,}") for s in rows]  # fmt: skip


def to_markdown(r: Report) -> str:
    """The report as GitHub-flavoured Markdown (headings, tables, text budget bars)."""
    money = ("Spend", "Previous", "Change", "Requests")
    shown, rest = bar_budgets(r.budgets)
    more = rest_line(rest, bool(shown))
    out = [
        f"# {r.period.capitalize()} LLM spend report: {span(r)}",
        "",
        f"**Total: {usd(r.total_cost)}** ({versus(r)}) · {r.requests:,} requests",
        "",
        _sentence(unpriced_text(r.unpriced_requests)),
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
                [(m.provider, m.model, model_cost(m), f"{m.requests:,}", f"{m.input_tokens:,}", f"{m.output_tokens:,}")
                 for m in r.top_models]),  # fmt: skip
        "## Budgets",
        "",
        *(_table(("Budget", "Utilization", "Usage", "Limit", "Resets"),
                 [(budget_label(b), f"`{text_bar(b.utilization)}`", usd(b.usage), usd(b.limit),
                   f"{b.reset_at.astimezone(r.local_start.tzinfo):%Y-%m-%d %H:%M}") for b in shown])
          if shown or not more else []),  # fmt: skip
        *([more, ""] if more else []),
        "## Unpriced usage",
        "",
        *(["Requests in this period of models with no known price: their cost is NULL (not $0) and not in "
           "the totals above.", ""] if r.unpriced else []),
        *_table(("Provider", "Model", "Requests"), [(u.provider, u.model, f"{u.requests:,}") for u in r.unpriced]),
    ]
    return "\n".join(out).rstrip("\n") + "\n"


# --- CSV ---------------------------------------------------------------------------------------


def _money(x: float | None) -> str:
    """A cost in full, at ``pricing.money``'s 12 significant digits (``0.0045``, not
    ``0.0045000000000000005``; ``2.5e-06``, not ``0.000003``)."""
    return cost_text(x)


def to_csv(r: Report) -> str:
    """One tidy table (CSV_COLUMNS), one row per thing reported; the ``section`` column says what.

    Sections: total (its name is the period, ISO start/end), customer, team, virtual_key, model,
    time (a bucket of the spend-over-time series, key = its ISO start), budget (cost = usage,
    limit_usd = the limit) and unpriced (requests only, in the period). Empty cells: not applicable.

    ``change_pct`` is empty wherever the report gives no percentage: nothing before, a previous
    amount under ``MIN_PREVIOUS_USD``, or a previous window the lake does not wholly hold;
    ``previous_cost_usd`` is always filled, so a reader can still compare. Every budget has a row
    (no bars here, so none is left out)."""
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
        cost = "" if m.unpriced == m.requests else _money(m.cost)  # unknown, not 0
        w.writerow(("model", f"{m.provider}/{m.model}", m.model, cost, "", "", m.requests, ""))
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
    items = [f"{who(s)} {usd(s.cost)} ({change_text(s.change_pct, s.cost, s.previous)})"
             for s in rows[:n] if s.cost or s.previous]  # fmt: skip
    return f"Top {label}: " + "; ".join(items) if items else None


def alert_lines(r: Report) -> tuple[str, ...]:
    """The compact body: period, totals, the top few of each kind, budgets as text bars (the five
    fullest of those that get a bar), unpriced."""
    lines = [f"{span(r)} ({r.timezone}); {versus(r)}", f"{r.requests:,} requests; {unpriced_text(r.unpriced_requests)}"]
    for label, rows in (("customers", r.customers), ("teams", r.teams), ("keys", r.top_keys)):
        line = _top_line(label, rows)
        if line:
            lines.append(line)
    if r.top_models:
        lines.append("Top models: " + "; ".join(f"{m.provider}/{m.model} {model_cost(m)}" for m in r.top_models[:3]))
    if r.budgets:
        shown, rest = bar_budgets(r.budgets)
        lines.append("Budgets:")
        for b in sorted(shown, key=lambda b: -b.utilization)[:5]:
            lines.append(f"  {text_bar(b.utilization)}  {budget_label(b)}: {usd(b.usage)} / {usd(b.limit)}")
        if len(shown) > 5:
            lines.append(f"  … and {len(shown) - 5} more customer, team or key budgets below these")
        more = rest_line(rest, bool(shown))
        if more:
            lines.append(f"  {more}")
    if r.unpriced:
        items = "; ".join(f"{u.provider}/{u.model} ({u.requests:,})" for u in r.unpriced[:3])
        more = f" and {len(r.unpriced) - 3} more models" if len(r.unpriced) > 3 else ""
        lines.append(f"Unpriced requests in this period, by model: {items}{more}")
    return tuple(lines)


def alert_fields(r: Report) -> tuple[tuple[str, str], ...]:
    """At most ten label/value pairs (Slack allows ten fields in a section block)."""
    fields = [("Total", usd(r.total_cost)), (f"Previous {NOUN[r.period]}", usd(r.previous_cost)),
              ("Change", f"{usd(r.change)} ({change_text(r.change_pct, r.total_cost, r.previous_cost)})"),
              ("Requests", f"{r.requests:,}"),
              ("Unpriced requests in this period", f"{r.unpriced_requests:,} ({UNPRICED_MEANING})"),
              ("Period", span(r))]  # fmt: skip
    for label, rows in (("Top customer", r.customers), ("Top team", r.teams), ("Top key", r.top_keys)):
        if rows and rows[0].cost:
            fields.append((label, f"{who(rows[0])}: {usd(rows[0].cost)}"))
    if r.top_models:
        m = r.top_models[0]
        fields.append(("Top model", f"{m.provider}/{m.model}: {model_cost(m)}"))
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
        "previous_complete": r.previous_complete, "as_of": r.as_of.isoformat(),
        "history_start": None if r.history_start is None else r.history_start.isoformat(),
        "requests": r.requests, "unpriced_requests": r.unpriced_requests,
    }  # fmt: skip
    return Alert(key=key, kind="report", severity="info", title=title(r), created_at=r.generated_at,
                 lines=alert_lines(r), fields=alert_fields(r), facts=facts, html=to_html(r))  # fmt: skip


__all__ = ["CSV_COLUMNS", "alert_fields", "alert_lines", "text_bar", "title", "to_alert", "to_csv", "to_html",
           "to_markdown", "usd"]  # fmt: skip
