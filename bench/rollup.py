"""Rollups, budgets, /metrics and dashboard queries on 1M and 50M events of history.

For each size it builds a lake of realistic priced events (30 days, 10,000 virtual keys in 200
teams of 20 customers, 12 models; written as lake Parquet files directly, priced by the real
engine), rolls it all up once (timed, but not a target), then times:

- an incremental rollup of 100,000 new events (one new file for today),
- a budget evaluation (every budget's status: 10,000 VK budgets, 200 team, 20 customer),
- a /metrics scrape (the real collector, rendered as Prometheus text),
- the standard dashboard queries (through `spendlake query`'s sandboxed connection),

and prints the times and the 50M/1M ratios. Usage: `python bench/rollup.py [--sizes 1e6 5e7]
[--dir /var/tmp/spendlake-bench-rollup] [--keep]`. The 50M lake needs ~6 GB of disk and
~25 minutes on a 2-core machine to build and roll up.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aggregator import query  # noqa: E402
from aggregator.budgets import BudgetUsage, status_table  # noqa: E402
from aggregator.hierarchy import parse_hierarchy  # noqa: E402
from aggregator.metrics import Exporter  # noqa: E402
from aggregator.rollup import Rollup  # noqa: E402
from ingest.schema import EVENT_SCHEMA, LAKE_SCHEMA  # noqa: E402
from pricing import Catalog, price_table  # noqa: E402

VKS, TEAMS, CUSTOMERS, DAYS = 10_000, 200, 20, 30
MODELS = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("openai", "gpt-4.1"), ("openai", "o4-mini"),
          ("anthropic", "claude-sonnet-4-5"), ("anthropic", "claude-haiku-4-5"), ("anthropic", "claude-opus-4-6"),
          ("gemini", "gemini-2.5-pro"), ("gemini", "gemini-2.5-flash"), ("bedrock", "amazon.nova-pro-v1:0"),
          ("mistral", "mistral-large-latest"), ("deepseek", "deepseek-reasoner")]  # fmt: skip
DASHBOARD = {
    "total cost by team": "SELECT team, sum(cost_usd) FROM daily_cost_by_team GROUP BY 1 ORDER BY 2 DESC",
    "daily cost trend (30 d)": "SELECT day, sum(cost_usd) FROM daily_cost_by_team GROUP BY 1 ORDER BY 1",
    "cost per model": "SELECT provider, model, sum(cost_usd) FROM daily_cost_by_model GROUP BY ALL ORDER BY 3 DESC",
    "top 10 virtual keys": "SELECT virtual_key, sum(cost_usd) AS c FROM rollup_virtual_keys GROUP BY 1 ORDER BY c DESC LIMIT 10",
    "tokens by type": "SELECT token_type, sum(tokens) FROM token_usage_over_time GROUP BY 1",
    "provider comparison": "SELECT * FROM provider_comparison",
    "cost per request by model": "SELECT provider, model, cost_per_request FROM model_efficiency",
    "hourly trend (24 h)": "SELECT * FROM hourly_trend ORDER BY 1 DESC LIMIT 24",
    "budget status": "SELECT * FROM budget_status ORDER BY utilization DESC LIMIT 20",
}


def config() -> dict:
    return {
        "lake": {"timezone": "UTC"},
        "customers": [{"id": f"cust-{c}", "budgets": [{"max_limit": 1e6, "reset_duration": "1M"}]} for c in range(CUSTOMERS)],
        "teams": [{"id": f"team-{t}", "customer_id": f"cust-{t % CUSTOMERS}",
                   "budgets": [{"max_limit": 1e5, "reset_duration": "1M"}]} for t in range(TEAMS)],  # fmt: skip
        # every key has a monthly budget, one in ten a daily one too
        "virtual_keys": [{"id": f"vk-{v}", "team_id": f"team-{v % TEAMS}",
                          "budgets": [{"max_limit": 500.0, "reset_duration": "1M"}]
                          + ([{"max_limit": 50.0, "reset_duration": "1d"}] if v % 10 == 0 else [])}
                         for v in range(VKS)],  # fmt: skip
    }


def make_events(n: int, start: datetime, span_s: float, rng: np.random.Generator, id_base: int) -> pa.Table:
    vk = rng.zipf(1.3, n) % VKS  # a few heavy keys, a long tail
    model = rng.integers(0, len(MODELS), n)
    inp = rng.integers(100, 20_000, n)
    out = rng.integers(10, 2_000, n)
    ts = (start.timestamp() * 1000 + rng.random(n) * span_s * 1000).astype(np.int64)
    cols = {
        "event_id": pa.array([f"ev-{id_base + i:012d}" for i in range(n)]),
        "timestamp": pa.array(ts, pa.timestamp("ms", "UTC")),
        "provider": pa.array([MODELS[m][0] for m in range(len(MODELS))]).take(pa.array(model)),
        "model": pa.array([MODELS[m][1] for m in range(len(MODELS))]).take(pa.array(model)),
        "input_tokens": pa.array(inp), "output_tokens": pa.array(out),
        "cached_input_tokens": pa.array(inp // 3), "cache_write_tokens": pa.array(np.zeros(n, np.int64)),
        "cache_write_1h_tokens": pa.array(np.zeros(n, np.int64)), "reasoning_tokens": pa.array(out // 4),
        "virtual_key": pa.array([f"vk-{v}" for v in range(VKS)]).take(pa.array(vk)),
        "team": pa.array([f"team-{v % TEAMS}" for v in range(VKS)]).take(pa.array(vk)),
        "customer": pa.array([f"cust-{(v % TEAMS) % CUSTOMERS}" for v in range(VKS)]).take(pa.array(vk)),
        "request_type": pa.array(["chat"] * n), "batch": pa.array(np.zeros(n, bool)),
        "status": pa.array(np.where(rng.random(n) < 0.02, "error", "success")),
        "status_code": pa.array(np.where(rng.random(n) < 0.02, 500, 200).astype(np.int32)),
        "latency_ms": pa.array(rng.gamma(2.0, 400.0, n)), "cache_hit": pa.array(np.zeros(n, bool)),
        "input_format": pa.array(["spendlake.v1"] * n),
    }  # fmt: skip
    events = pa.table({f.name: (cols[f.name].cast(f.type) if f.name in cols else pa.nulls(n, f.type))
                       for f in EVENT_SCHEMA})  # fmt: skip
    costs = price_table(events, Catalog.builtin())
    source = {
        "source_topic": pa.array(["llm-usage"] * n), "source_partition": pa.array(np.zeros(n, np.int32)),
        "source_offset": pa.array(np.arange(id_base, id_base + n, dtype=np.int64)),
        "ingested_at": pa.array(ts + 2000, pa.timestamp("ms", "UTC")),
    }  # fmt: skip
    table = pa.Table.from_arrays([*events.columns, *costs.columns, *source.values()], schema=LAKE_SCHEMA)
    return table.sort_by("timestamp")


def write_day(lake: Path, table: pa.Table, day: date, name: str) -> None:
    d = lake / "events" / f"date={day.isoformat()}"
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, d / f"{name}.parquet", compression="zstd")


def build(lake: Path, n: int, today: date) -> None:
    rng = np.random.default_rng(7)
    per_day = n // DAYS
    for k in range(DAYS):
        day = today - timedelta(days=DAYS - k)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        done = 0
        while done < per_day:  # files of at most 2M rows
            m = min(2_000_000, per_day - done)
            write_day(lake, make_events(m, start, 86_400, rng, k * per_day + done), day, f"llm-usage+0+{k:04d}+{done:09d}")
            done += m
        sys.stdout.write(f"\r  built {k + 1}/{DAYS} days")
        sys.stdout.flush()
    sys.stdout.write("\n")


def timed(fn, runs: int = 5) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(root: Path, n: int) -> dict[str, float]:
    lake = root / f"lake-{n}"
    shutil.rmtree(lake, ignore_errors=True)
    today = datetime.now(UTC).date()
    print(f"{n:,} events: building {lake}")
    t0 = time.perf_counter()
    build(lake, n, today)
    print(f"  built in {time.perf_counter() - t0:.0f} s")
    hierarchy, problems = parse_hierarchy(config())
    assert not problems, problems
    out: dict[str, float] = {}
    with Rollup(lake, budget_hook=BudgetUsage(hierarchy)) as r:
        t0 = time.perf_counter()
        first = r.update()
        print(f"  first rollup of {first.events_added:,} events: {time.perf_counter() - t0:.1f} s")
        new = make_events(100_000, datetime.now(UTC) - timedelta(hours=1), 3600, np.random.default_rng(11), 10**10)
        write_day(lake, new, today, "llm-usage+0+new+0")
        t0 = time.perf_counter()
        inc = r.update()
        out["incremental rollup of 100k events"] = time.perf_counter() - t0
        assert inc.events_added == 100_000, inc
        n_budgets = len(hierarchy.budgets)
        out[f"budget evaluation ({n_budgets:,} budgets)"] = timed(lambda: status_table(r.con, hierarchy))
        exporter = Exporter(lambda: r.con.cursor(), hierarchy)
        scraped = exporter.render()
        out["/metrics scrape"] = timed(exporter.render)
        lines = scraped.count(b"\n")
        print(f"  /metrics: {len(scraped):,} bytes, {lines:,} lines")
    con = query.connect(lake)
    for name, sql in DASHBOARD.items():
        out[f"dashboard: {name}"] = timed(lambda sql=sql: query.run(con, sql))
    for name, seconds in out.items():
        print(f"  {name:44} {seconds * 1000:10.1f} ms")
    sys.stdout.flush()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", type=float, default=[1e6, 5e7], help="lake sizes in events (default 1e6 5e7)")
    p.add_argument("--dir", default="/var/tmp/spendlake-bench-rollup", help="where the lakes are built")
    p.add_argument("--keep", action="store_true", help="keep the lakes afterwards")
    args = p.parse_args(argv)
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    results = {int(n): measure(root, int(n)) for n in args.sizes}
    sizes = list(results)
    names = list(results[sizes[0]])
    print(f"\n{'median of 5 (ms)':44}" + "".join(f"{n:>14,}" for n in sizes) + (f"{'ratio':>10}" if len(sizes) > 1 else ""))
    for name in names:
        row = [results[n][name] * 1000 for n in sizes]
        ratio = f"{row[-1] / row[0]:>10.2f}" if len(sizes) > 1 and row[0] > 0 else ""
        print(f"{name:44}" + "".join(f"{v:>14.1f}" for v in row) + ratio)
    if not args.keep:
        for n in sizes:
            shutil.rmtree(root / f"lake-{n}", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
