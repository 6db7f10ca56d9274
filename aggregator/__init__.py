"""aggregator — the lake's numbers: rollups, budgets and the read-only views over them (DuckDB).

It reads the Parquet lake that ``ingest`` writes and never writes events itself. Layering:
``aggregator`` may use ``ingest`` and ``pricing``; ``alerting`` and the ``spendlake`` commands use
it, never the other way round (tests/test_imports.py).

- ``rollup``: incremental rollups of the lake in DuckDB (each ``event_id`` counted once), owned by
  one process at a time, and published as Parquet under ``<lake>/_rollups/`` so that readers work
  while ``spendlake serve`` holds the state;
- ``periods``: budget periods: ``reset_duration`` parsing, calendar-aligned or rolling windows in
  the configured timezone;
- ``hierarchy``: the budget hierarchy of the config (customers → teams → virtual keys, their
  budgets) and the attribution it fills in on events;
- ``budgets``: budget usage kept beside the rollups (a virtual key's spend counts toward its team
  and customer), and each budget's status: usage, limit, period start, reset time, burn rate and
  projected exhaustion;
- ``query``: the read-only SQL sandbox over the lake, the rollups and the ``sql/`` views behind
  ``spendlake query``;
- ``metrics``: the Prometheus exporter, /metrics rendered from the rollups at scrape time.
"""
