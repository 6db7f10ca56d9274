"""Formatting shared by the report's renderers: money to the cent, changes, text bars, periods."""

from __future__ import annotations

from datetime import timedelta

from alerting.report import BudgetRow, Report, Spend

NOUN = {"daily": "day", "weekly": "week", "monthly": "month"}
BAR_CELLS = 10


def usd(x: float) -> str:
    """Dollars to the cent, the sign in front: ``$1,234.56``, ``-$3.10``."""
    return f"{'-' if x < 0 and round(x, 2) != 0 else ''}${abs(x):,.2f}"


def pct(change_pct: float | None, cost: float = 0.0) -> str:
    """``+12.3%``; ``new`` when there was nothing before; ``—`` when there is nothing at all."""
    if change_pct is None:
        return "new" if cost else "—"
    return f"{change_pct:+.1f}%"


def text_bar(fraction: float, cells: int = BAR_CELLS) -> str:
    """``████████░░ 80%``: a budget's utilization as text (capped at full, the % is not)."""
    filled = min(max(int(round(fraction * cells)), 0), cells)
    return f"{'█' * filled}{'░' * (cells - filled)} {fraction * 100:.0f}%"


def span(r: Report) -> str:
    """The period in local dates (the end is exclusive, so the last day shown is the day before)."""
    first = r.local_start.date()
    if r.to_date:
        return f"{first.isoformat()} to {r.local_end.strftime('%Y-%m-%d %H:%M')} (so far)"
    last = (r.local_end - timedelta(microseconds=1)).date()
    return first.isoformat() if first == last else f"{first.isoformat()} to {last.isoformat()}"


def title(r: Report) -> str:
    """"Weekly LLM spend: $1,234.56 (+12.3% vs previous week)"."""
    so_far = " so far" if r.to_date else ""
    change = f"{pct(r.change_pct, r.total_cost)} vs previous {NOUN[r.period]}"
    return f"{r.period.capitalize()} LLM spend{so_far}: {usd(r.total_cost)} ({change})"


def who(s: Spend) -> str:
    return s.key if s.name in (s.key, "") else f"{s.name} ({s.key})"


def budget_label(b: BudgetRow) -> str:
    name = b.id if b.name in (b.id, "") else f"{b.name} ({b.id})"
    return f"{name}, {b.type.replace('_', ' ')}, per {b.reset_duration}"
