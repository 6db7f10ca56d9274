"""Formatting shared by the report's renderers: money to the cent, changes, text bars, periods, and
which budgets get a bar."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from aggregator.periods import period_words
from alerting.report import MIN_PREVIOUS_USD, BudgetRow, ModelSpend, Report, Spend

NOUN = {"daily": "day", "weekly": "week", "monthly": "month"}
BAR_CELLS = 10
# A virtual key's budget gets a bar from this utilization on; customers' and teams' budgets always do.
# Below it the keys are one "… and 55 more" line: a demo's sixty keys at 0-1% hide the few that matter.
KEY_BAR_FROM = 0.5
UNPRICED_MEANING = "no price known: cost NULL, not $0"


def usd(x: float) -> str:
    """Dollars to the cent, the sign in front: ``$1,234.56``, ``-$3.10``."""
    return f"{'-' if x < 0 and round(x, 2) != 0 else ''}${abs(x):,.2f}"


def model_cost(m: ModelSpend) -> str:
    """A model's spend to the cent; "unpriced" when none of its requests had a price (its cost is
    unknown, not $0)."""
    return "unpriced" if m.unpriced == m.requests else usd(m.cost)


def change_text(change_pct: float | None, cost: float, previous: float) -> str:
    """One row's change: ``+12.3%`` when the report gave a percentage; otherwise ``new`` (nothing
    before), ``from $0.85`` (a previous amount too small, or too partly in the lake, for a %), or
    ``—`` (nothing either time)."""
    if change_pct is not None:
        return f"{change_pct:+.1f}%"
    if previous == 0:
        return "new" if cost else "—"
    return f"from {usd(previous)}" if round(previous, 2) else "from under $0.01"


def versus_parts(r: Report, short: bool = False) -> tuple[str, str]:
    """The total against the previous period: (the change as ``change_text`` gives it, what it is
    against, or why there is no %). ``short`` (a title) leaves out the amounts and dates."""
    prev = f"previous {NOUN[r.period]}"
    head = change_text(r.change_pct, r.total_cost, r.previous_cost)
    if r.change_pct is not None:
        return head, f"vs {prev}" + ("" if short else f": {usd(r.previous_cost)}")
    if r.history_start is not None:
        full = "" if r.history_start >= r.previous_end else "full "
        since = "" if short else f", its history starts {local(r, r.history_start):%Y-%m-%d %H:%M}"
        return head, f"no {full}{prev} in the lake{since}"
    if r.previous_cost == 0:
        return head, f"nothing spent the {prev}" + (" either" if head == "—" else "")
    return head, f"the {prev} was under {usd(MIN_PREVIOUS_USD)}, too little for a %"


def versus(r: Report, short: bool = False) -> str:
    """``versus_parts`` as one phrase: "+12.3% vs previous week: $100.00", "from $0.85: no full
    previous month in the lake, its history starts 2026-11-04 10:00", "new: nothing spent the
    previous week"."""
    head, why = versus_parts(r, short)
    if head == "—":
        return why
    return f"{head} {why}" if r.change_pct is not None else f"{head}: {why}"


def unpriced_text(n: int) -> str:
    """An unpriced count with its scope and meaning, so nobody reads it as free or as all-time."""
    if n == 0:
        return "every request in this period was priced"
    return f"{n:,} unpriced request{'' if n == 1 else 's'} in this period ({UNPRICED_MEANING})"


def text_bar(fraction: float, cells: int = BAR_CELLS) -> str:
    """``████████░░ 80%``: a budget's utilization as text (capped at full, the % is not)."""
    filled = min(max(int(round(fraction * cells)), 0), cells)
    return f"{'█' * filled}{'░' * (cells - filled)} {fraction * 100:.0f}%"


def bar_budgets(budgets: tuple[BudgetRow, ...]) -> tuple[list[BudgetRow], list[BudgetRow]]:
    """(the budgets that get a bar, the rest): every customer and team budget, and virtual-key
    budgets at ``KEY_BAR_FROM`` or over; the rest are virtual-key budgets under it."""
    shown = [b for b in budgets if b.type != "virtual_key" or b.utilization >= KEY_BAR_FROM]
    return shown, [b for b in budgets if b.type == "virtual_key" and b.utilization < KEY_BAR_FROM]


def rest_line(rest: list[BudgetRow], any_shown: bool) -> str | None:
    """The one line that stands for the virtual-key budgets without a bar (None when there are none)."""
    if not rest:
        return None
    n, top = len(rest), max(b.utilization for b in rest) * 100
    what = f"virtual key budget{'' if n == 1 else 's'}"
    if any_shown:
        return f"… and {n:,} more {what} under {KEY_BAR_FROM:.0%} (highest {top:.0f}%)"
    return f"{n:,} {what}, all under {KEY_BAR_FROM:.0%} (highest {top:.0f}%)"


def local(r: Report, t: datetime) -> datetime:
    return t.astimezone(ZoneInfo(r.timezone))


def span(r: Report) -> str:
    """The period in local dates (the end is exclusive, so the last day shown is the day before); a
    to-date report ends at its as-of time, not at the end of the hour its rollups run to."""
    first = r.local_start.date()
    if r.to_date:
        return f"{first.isoformat()} to {local(r, r.as_of):%Y-%m-%d %H:%M} (so far)"
    last = (r.local_end - timedelta(microseconds=1)).date()
    return first.isoformat() if first == last else f"{first.isoformat()} to {last.isoformat()}"


def title(r: Report) -> str:
    """"Weekly LLM spend: $1,234.56 (+12.3% vs previous week)"."""
    so_far = " so far" if r.to_date else ""
    return f"{r.period.capitalize()} LLM spend{so_far}: {usd(r.total_cost)} ({versus(r, short=True)})"


def who(s: Spend) -> str:
    return s.key if s.name in (s.key, "") else f"{s.name} ({s.key})"


def budget_label(b: BudgetRow) -> str:
    name = b.id if b.name in (b.id, "") else f"{b.name} ({b.id})"
    return f"{name}, {b.type.replace('_', ' ')}, per {period_words(b.reset_duration)}"
