"""`spendlake alerts`: the alerts fired and the state of each delivery; `alerts test`.

Reads the outbox from the DuckDB state when no process holds it, else from what `serve`
publishes under ``<lake>/_alerts/`` (contract 2: it works while serve runs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import duckdb

from aggregator.rollup import STATE_DIR, STATE_FILE, sql_string
from alerting.engine import PUBLISH_DIR, PUBLISHED
from spendlake import settings as settings_mod

MARK = {"delivered": "✓", "pending": "…", "failed": "✗"}


def run(args: argparse.Namespace) -> int:
    cfg = settings_mod.load(args.config).with_overrides({("lake", "path"): getattr(args, "lake", None)})
    if args.alerts_verb == "test":
        return send_test(cfg, args.channel, sys.stdout)
    lake = Path(cfg.get("lake", "path"))
    alerts, deliveries = load(lake, args.limit)
    if args.format == "json":
        sys.stdout.write(json.dumps(_as_json(alerts, deliveries), indent=2, default=str) + "\n")
    else:
        sys.stdout.write(render(alerts, deliveries))
    return 0


def load(lake: Path, limit: int, attempts: int = 5) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(newest ``limit`` alerts, their deliveries), as dicts.

    serve replaces the published files (rename) whenever the outbox changes, and DuckDB opens a
    Parquet file by path more than once per query (footer at planning, pages at execution): a
    replace in between reads one file's footer with another's pages ("TProtocolException: Invalid
    data", seen in CI under load). Each file is whole, so reading again gets a consistent answer."""
    for attempt in range(attempts):
        try:
            return _load(lake, limit)
        except duckdb.Error:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


def _load(lake: Path, limit: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    state = lake / STATE_DIR / STATE_FILE
    source = None
    if state.exists():
        try:
            con.execute(f"ATTACH {sql_string(state)} AS st (READ_ONLY)")
            con.execute("SELECT 1 FROM st.alerts LIMIT 0")
            source = {name: select.replace(f"FROM {name}", f"FROM st.{name}") for name, select in PUBLISHED.items()}
        except duckdb.Error:  # held by serve, or an older state without an outbox
            source = None
    if source is None:
        pub = lake / PUBLISH_DIR
        if not (pub / "alerts.parquet").exists():
            return [], []
        source = {name: f"SELECT * FROM read_parquet({sql_string(pub / (name + '.parquet'))})" for name in PUBLISHED}
    alerts = _dicts(con, f"SELECT * FROM ({source['alerts']}) ORDER BY created_at DESC, key LIMIT ?", [limit])
    keys = [a["key"] for a in alerts]
    deliveries = _dicts(con, f"SELECT * FROM ({source['deliveries']}) WHERE alert_key IN (SELECT unnest(?::VARCHAR[])) "
                        "ORDER BY id", [keys])  # fmt: skip
    return alerts, deliveries


def _dicts(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cur = con.execute(sql, params)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def _as_json(alerts: list[dict[str, Any]], deliveries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_alert: dict[str, list[dict[str, Any]]] = {}
    for d in deliveries:
        by_alert.setdefault(d["alert_key"], []).append(
            {k: d[k] for k in ("channel", "state", "attempts", "next_attempt_at", "delivered_at", "status", "last_error")}
        )
    return [{**{k: a[k] for k in ("key", "kind", "severity", "title", "created_at", "action", "dedup_key", "note")},
             "deliveries": by_alert.get(a["key"], [])} for a in alerts]  # fmt: skip


def render(alerts: list[dict[str, Any]], deliveries: list[dict[str, Any]]) -> str:
    if not alerts:
        return "No alerts yet.\n"
    by_alert: dict[str, list[dict[str, Any]]] = {}
    for d in deliveries:
        by_alert.setdefault(d["alert_key"], []).append(d)
    now = datetime.now(UTC)
    lines = []
    counts: dict[str, int] = {}
    for a in alerts:
        when = a["created_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"{when}  {a['severity']:<8} {a['kind']:<17} {a['title']}")
        ds = by_alert.get(a["key"], [])
        if a.get("note"):  # a threshold passed in the same batch as a higher one: recorded, not sent
            lines.append(f"    (not sent: {a['note']})")
        elif not ds:
            lines.append("    (recorded; no channel routes it)")
        for d in ds:
            counts[d["state"]] = counts.get(d["state"], 0) + 1
            detail = ""
            if d["state"] == "delivered":
                detail = f"after {d['attempts']} attempt{'s' if d['attempts'] != 1 else ''}"
            elif d["state"] == "pending":
                wait = max((d["next_attempt_at"] - now).total_seconds(), 0) if d["next_attempt_at"] else 0
                detail = f"{d['attempts']} attempts so far, next in {wait:.0f} s" + (
                    f"; last error: {d['last_error']}" if d["last_error"] else "")
            else:
                detail = f"after {d['attempts']} attempts: {d['last_error']}"
            lines.append(f"    {MARK.get(d['state'], '?')} {d['channel']:<16} {d['state']:<9} {detail}")
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no deliveries"
    return "\n".join(lines) + f"\n\n{len(alerts)} alerts; deliveries: {summary}\n"


def send_test(cfg: settings_mod.Settings, name: str, out: TextIO) -> int:
    """Send a test alert to one channel now, not through the outbox; say what happened."""
    from alerting.channels import send
    from alerting.records import Alert, TerminalError, TransientError

    try:
        channel = cfg.alerting.channel(name)
    except KeyError as exc:
        raise settings_mod.ConfigError([f"--channel: {exc.args[0]}"], cfg.source) from None
    now = datetime.now(UTC)
    alert = Alert(key=f"test:{now.isoformat()}", kind="test", severity="info", created_at=now,
                  title=f"spendlake test message for channel {name!r}",
                  lines=("If you can read this, spendlake can reach this channel.",
                         f"Sent {now.isoformat(timespec='seconds')} by `spendlake alerts test`."),
                  fields=(("Channel", name), ("Type", channel.type)),
                  facts={"channel": name, "type": channel.type}, dedup_key=f"spendlake:test:{now.isoformat()}")  # fmt: skip
    try:
        got = send(channel, alert)
    except TransientError as exc:
        extra = f" (the receiver asked to retry after {exc.retry_after:.0f} s)" if exc.retry_after is not None else ""
        sys.stderr.write(f"spendlake: channel {name!r}: not delivered, a temporary failure: {exc.reason}{extra}\n")
        return 1
    except TerminalError as exc:
        sys.stderr.write(f"spendlake: channel {name!r}: not delivered, a permanent failure: {exc.reason}\n")
        return 1
    out.write(f"channel {name!r} ({channel.type}): delivered" + (f" (status {got.status})" if got.status else "") + "\n")
    if channel.type == "pagerduty":
        # a test incident should not stay open
        resolve = Alert(key=alert.key + ":resolve", kind="test", severity="info", created_at=now, action="resolve",
                        title=alert.title, dedup_key=alert.dedup_key)  # fmt: skip
        try:
            send(channel, resolve)
            out.write("  (and resolved the test incident)\n")
        except (TransientError, TerminalError) as exc:
            out.write(f"  (resolving the test incident failed: {exc.reason})\n")
    return 0
