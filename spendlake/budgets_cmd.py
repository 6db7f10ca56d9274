"""`spendlake budgets`: every budget's status, as bars on a terminal or as JSON (contract 4).

The evaluation itself (the state when it is free, what serve publishes while it runs, the raw
lake when serve runs with other budgets) is ``aggregator.evaluate.evaluate``, re-exported here.
As of ``--at T``, usage counts exactly the events stamped before T (``timestamp < T``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from aggregator.budgets import BudgetStatus
from aggregator.evaluate import evaluate
from aggregator.periods import period_words
from spendlake import settings as settings_mod

BAR = 24


def run(cfg: settings_mod.Settings, at_text: str | None, fmt: str, out: TextIO) -> int:
    hierarchy = cfg.hierarchy
    assert hierarchy is not None
    at = _at(at_text)
    lake = Path(cfg.get("lake", "path"))  # that it is a lake, the command line checked (cli.require_lake)
    statuses = evaluate(lake, hierarchy, at, cfg.get("aggregator", "minute_retention_days"))
    if fmt == "json":
        out.write(json.dumps([s.as_json() for s in statuses], indent=2) + "\n")
    else:
        out.write(render(statuses, at))
    return 0


def _at(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise settings_mod.ConfigError([f"--at: got {text!r}, expected an RFC 3339 time such as 2026-11-28T12:00:00Z"]) from None
    if dt.tzinfo is None:
        raise settings_mod.ConfigError([f"--at: got {text!r}, expected a time WITH an offset, e.g. ...Z or +01:00"])
    return dt.astimezone(UTC)


def render(statuses: list[BudgetStatus], at: datetime) -> str:
    """One line per budget: who, a bar of usage / limit, $ used of $ limit, reset, exhaustion."""
    if not statuses:
        return "no budgets in the config ([[customers]], [[teams]], [[virtual_keys]] with budgets = [...])\n"
    indent = {"customer": "", "team": "  ", "virtual_key": "    "}
    who = [f"{indent.get(s.type, '')}{s.type} {s.id}" for s in statuses]
    width = max(len(w) for w in who)
    lines = [f"budgets at {at.isoformat(timespec='seconds').replace('+00:00', 'Z')}"]
    for w, s in zip(who, statuses):
        frac = max(s.utilization, 0.0)
        filled = min(int(round(frac * BAR)), BAR)
        bar = "█" * filled + "░" * (BAR - filled)
        mark = "  EXCEEDED" if frac >= 1 else ("  !" if frac >= 0.8 else "")
        runs_out = f", runs out {s.projected_exhaustion_at}" if s.projected_exhaustion_at and frac < 1 else ""
        lines.append(
            f"{w.ljust(width)}  {bar} {frac * 100:6.1f}%  ${s.current_usage:,.2f} / ${s.max_limit:,.2f} "
            f"per {period_words(s.reset_duration)}, resets {s.reset_at}{runs_out}{mark}"
        )
    return "\n".join(lines) + "\n"


__all__ = ["BudgetStatus", "evaluate", "render", "run"]


