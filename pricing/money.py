"""How money is shown to a person: one precision everywhere (price output, query text and CSV,
reports, budgets).

Costs are computed and stored as float64 (contract 2); a sum of a few float prices carries binary
noise such as ``0.0045000000000000005``. Wherever a person reads a cost, it is rounded to
``COST_DIGITS`` = 12 significant digits: the noise (relative ~1e-16) is gone, and the shown value
stays within 5e-12 relative of the stored one, far inside the 1e-9 the totals are held to.
Dollar amounts meant to be read at a glance (tables of spend, budget bars) keep their cents
formatting; this is the rule for every place that prints a cost in full.
"""

from __future__ import annotations

COST_DIGITS = 12


def round_cost(value: float | None) -> float | None:
    """``value`` at 12 significant digits (None, NaN and infinities unchanged)."""
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return value
    return float(f"{value:.{COST_DIGITS}g}")


def cost_text(value: float | None) -> str:
    """The shortest text of ``round_cost(value)`` (``0.0045``, ``12.5``, ``1e-07``); '' for None."""
    rounded = round_cost(value)
    return "" if rounded is None else repr(rounded)
