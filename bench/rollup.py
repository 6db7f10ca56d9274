"""Rollups, budgets, /metrics and dashboard queries on 1M and 50M events of history.

For each size it builds a lake of realistic priced events (30 days, 10,000 virtual keys in 200
teams of 20 customers, 12 models; written as lake Parquet files directly, priced by the real
engine), rolls it all up once (timed, but not a target), then times:

- an incremental rollup of 100,000 new events (one new file for today, spread over the last
  hour), ``--incremental-runs`` times in a row (a new file each time; the median), split into
  the update (read, dedup, append) and the publish (compact, write Parquet),
- a budget evaluation (every budget's status: 10,000 VK budgets, 200 team, 20 customer),
- a /metrics scrape (the real collector, rendered as Prometheus text),
- the dashboard queries and one query per sql/ view (``SELECT * FROM view``), through `spendlake
  query`'s sandboxed connection, each the median of 5 (of fewer when they take SLOW_S in all).
  Target: every dashboard query within 100 ms at 50M events.

``request_log`` and ``top_expensive_requests`` read every raw row and deduplicate them with a
window (the earliest ingested copy of each event_id): seconds at 1M, about a minute at 50M. They
are an analyst's views, not a dashboard's, and are timed with what an analyst asks of them.
``reported_vs_catalog`` and ``unpriced_usage`` read the same rows, but this lake has no reported
costs and no unpriced models, so DuckDB proves their filters false from the Parquet statistics
and reads nothing: their figures here are not what they cost on a lake that has such rows.

Usage: `python bench/rollup.py [--sizes 1e6 5e7] [--dir /var/tmp/spendlake-bench-rollup] [--keep
| --reuse] [--incremental-runs 3]`. The 50M lake needs ~6 GB of disk and ~10-25 minutes on a
2-core machine to build and roll up. ``--reuse`` keeps each lake, with a copy of its state and
published rollups right after the first rollup (~4 GB more at 50M), and a run on the same UTC day
starts from that copy (the incremental files removed) instead of building and rolling up again;
a copy made by code with other rollup tables is not used (the events are, rolled up again).

``--s3`` (a SeaweedFS of the bench's own on 127.0.0.1:17333) or ``--s3-lake s3://BUCKET/PREFIX``
(a store from the AWS environment) also measures the incremental rollup from a lake on S3: the
history is committed to the store as an S3 lake (each file a batch: its object, then its
manifest), a serve-like reader pulls a mirror of it (ingest/mirror.py) and starts from the local
lake's first rollup (the mirror's files are the same paths and bytes, given the same mtimes), and
each incremental run commits the new file to the store too (timed apart: the writer's side), then
times ``mirror.pull(published=False)`` + ``Rollup.update`` on the mirror against the local update.
Target: at most 1.5x.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import time
import zlib
from contextlib import nullcontext
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aggregator import query  # noqa: E402
from aggregator.budgets import BudgetUsage, status_table  # noqa: E402
from aggregator.hierarchy import Hierarchy, parse_hierarchy  # noqa: E402
from aggregator.metrics import Exporter  # noqa: E402
from aggregator.rollup import NAMES, PUBLISH_DIR, STATE_DIR, STATE_FILE, Rollup  # noqa: E402
from bench import s3 as bench_s3  # noqa: E402
from ingest.schema import EVENT_SCHEMA, LAKE_SCHEMA  # noqa: E402
from pricing import Catalog, price_table  # noqa: E402

VKS, TEAMS, CUSTOMERS, DAYS = 10_000, 200, 20, 30
MODELS = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("openai", "gpt-4.1"), ("openai", "o4-mini"),
          ("anthropic", "claude-sonnet-4-5"), ("anthropic", "claude-haiku-4-5"), ("anthropic", "claude-opus-4-6"),
          ("gemini", "gemini-2.5-pro"), ("gemini", "gemini-2.5-flash"), ("bedrock", "amazon.nova-pro-v1:0"),
          ("mistral", "mistral-large-latest"), ("deepseek", "deepseek-reasoner")]  # fmt: skip
# What a dashboard asks (the first nine are the figures the README has kept since issue 4).
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
    "hourly trend, last 24 h (WHERE)": "SELECT * FROM hourly_trend WHERE hour >= now() - INTERVAL 24 HOUR",
    "hourly cost by provider (7 d)": "SELECT bucket, provider, sum(cost_usd) FROM rollup_models_hourly "
                                     "WHERE bucket >= now() - INTERVAL 7 DAY GROUP BY ALL ORDER BY ALL",
    "spend per minute (last hour)": "SELECT bucket, sum(cost_usd) FROM rollup_minute "
                                    "WHERE bucket >= now() - INTERVAL 1 HOUR GROUP BY 1 ORDER BY 1",
    "virtual keys today": "SELECT * FROM rollup_virtual_keys WHERE day = current_date ORDER BY cost_usd DESC LIMIT 50",
}  # fmt: skip
# The views over raw event rows (every copy read, deduplicated by a window): analysts' views, not
# dashboard panels; timed with what an analyst would ask of them (see the docstring).
RAW_VIEW_QUERIES = {
    "request_log": "SELECT * FROM request_log WHERE virtual_key = 'vk-7' ORDER BY time DESC LIMIT 50",
    "top_expensive_requests": "SELECT * FROM top_expensive_requests LIMIT 20",
}
SLOW_S = 20.0  # a query slower than this in total is not repeated five times
S3_UPDATE = "S3: incremental update (pull + update)"  # with --s3; target <= 1.5x the local update
LOCAL_UPDATE = "  of which update (read, dedup, append)"


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
    """Median of ``runs`` calls (fewer once they have taken SLOW_S in all)."""
    times: list[float] = []
    while len(times) < runs and sum(times) < SLOW_S:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def view_queries() -> dict[str, str]:
    """One query per sql/ view, in load order: the whole view, or RAW_VIEW_QUERIES' question."""
    out = {}
    for _, text in query.sql_views():
        name = re.search(r"CREATE OR REPLACE VIEW (\w+)", text).group(1)  # type: ignore[union-attr]
        out[f"view: {name}"] = RAW_VIEW_QUERIES.get(name, f"SELECT * FROM {name}")
    return out


def prepare(root: Path, n: int, today: date, reuse: bool, hierarchy: Hierarchy) -> Path:
    """The lake of ``n`` events, rolled up once (the first rollup timed). With ``reuse``: the
    events an earlier run built on the same UTC day, and its state right after the first rollup
    and what it published, when made by code with the same rollup tables (else rolled up again)."""
    lake = root / f"lake-{n}"
    marker = root / f"lake-{n}.json"
    first = root / f"lake-{n}.first-rollup-{zlib.crc32(' '.join(NAMES).encode()):08x}.duckdb"
    first_published = first.with_suffix(".published")  # what that rollup published, beside it
    state = lake / STATE_DIR / STATE_FILE
    built = reuse and marker.exists() and json.loads(marker.read_text()).get("today") == today.isoformat()
    for f in lake.glob("events/date=*/llm-usage+0+new*.parquet"):
        f.unlink()  # an earlier run's incremental files
    if built and first.exists() and first_published.exists():
        print(f"{n:,} events: reusing {lake} and its first rollup")
        shutil.copyfile(first, state)
        state.with_name(state.name + ".wal").unlink(missing_ok=True)
        shutil.rmtree(lake / PUBLISH_DIR, ignore_errors=True)
        shutil.copytree(first_published, lake / PUBLISH_DIR)
        return lake
    if built:
        print(f"{n:,} events: reusing the events of {lake}, rolling them up again")
        shutil.rmtree(lake / STATE_DIR, ignore_errors=True)
        shutil.rmtree(lake / PUBLISH_DIR, ignore_errors=True)
    else:
        shutil.rmtree(lake, ignore_errors=True)
        marker.unlink(missing_ok=True)
        for old in root.glob(f"lake-{n}.first-rollup-*"):  # copies made from the events built before
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink()
        print(f"{n:,} events: building {lake}")
        t0 = time.perf_counter()
        build(lake, n, today)
        print(f"  built in {time.perf_counter() - t0:.0f} s")
        if reuse:
            marker.write_text(json.dumps({"today": today.isoformat(), "events": n}))
    with Rollup(lake, budget_hook=BudgetUsage(hierarchy)) as r:
        t0 = time.perf_counter()
        stats = r.update()
        print(f"  first rollup of {stats.events_added:,} events: {time.perf_counter() - t0:.1f} s")
    if reuse:
        shutil.copyfile(state, first)
        shutil.rmtree(first_published, ignore_errors=True)
        shutil.copytree(lake / PUBLISH_DIR, first_published)
    return lake


def batch_of(path: Path) -> tuple[str, int, int, int, int]:
    """(stream, partition, first offset, last offset, rows) of a lake file, from its footer."""
    md = pq.ParquetFile(path).metadata
    col = {md.schema.column(i).name: i for i in range(md.num_columns)}
    stats = [md.row_group(g).column(col[name]).statistics for g in range(md.num_row_groups)
             for name in ("source_topic", "source_partition", "source_offset")]  # fmt: skip
    topics, partitions, offsets = stats[0::3], stats[1::3], stats[2::3]
    assert len({s.min for s in topics} | {s.max for s in topics}) == 1, f"{path}: more than one stream"
    assert len({s.min for s in partitions} | {s.max for s in partitions}) == 1, f"{path}: more than one partition"
    return (topics[0].min, partitions[0].min, min(s.min for s in offsets), max(s.max for s in offsets),
            md.num_rows)  # fmt: skip


class S3Reader:
    """A serve-like reader of the same lake on S3: its history committed to the store, a mirror
    pulled up to it and rolled up (the local lake's first rollup, see ``adopt``); ``incremental``
    commits one more file to the store, then pulls and rolls it up as serve does."""

    def __init__(self, s3: bench_s3.BenchS3, lake: Path, mirror_root: Path, hierarchy: Hierarchy) -> None:
        self.url = s3.lake(lake.name)
        self.store = bench_s3.store(self.url)
        files = sorted(lake.glob("events/date=*/*.parquet"))
        t0 = time.perf_counter()
        for f in files:
            self.commit(lake, f.relative_to(lake).as_posix())
        size = sum(f.stat().st_size for f in files)
        print(f"  S3: history committed to {self.url} in {time.perf_counter() - t0:.1f} s "
              f"({len(files)} files, {size / 2**20:,.0f} MiB)")  # fmt: skip
        shutil.rmtree(mirror_root, ignore_errors=True)
        self.mirror, fetched, seconds = bench_s3.pull(self.url, mirror_root)
        print(f"  S3: a mirror pulled in {seconds:.1f} s ({fetched:,} objects) into {mirror_root}")
        self.adopt(lake, files)
        self.rollup = Rollup(mirror_root, budget_hook=BudgetUsage(hierarchy))

    def commit(self, lake: Path, rel: str) -> int:
        stream, partition, first, last, rows = batch_of(lake / rel)
        bench_s3.commit_file(self.store, lake, rel, stream, partition, first, last, rows)
        return rows

    def adopt(self, lake: Path, files: list[Path]) -> None:
        """Start from the local lake's first rollup instead of rolling the mirror up again (the
        same work, already timed): the rollups know a file by (path, size, mtime), and the
        mirror's files are the same paths and bytes, so they get the local files' mtimes."""
        root = self.mirror.root
        for f in files:
            st = f.stat()
            os.utime(root / f.relative_to(lake), ns=(st.st_atime_ns, st.st_mtime_ns))
        (root / STATE_DIR).mkdir(exist_ok=True)
        shutil.copyfile(lake / STATE_DIR / STATE_FILE, root / STATE_DIR / STATE_FILE)
        shutil.rmtree(root / PUBLISH_DIR, ignore_errors=True)
        shutil.copytree(lake / PUBLISH_DIR, root / PUBLISH_DIR)

    def incremental(self, lake: Path, rel: str) -> tuple[float, float, float, float]:
        """Seconds to commit `rel` (a file of the local lake) to the store, to pull it into the
        mirror, to roll it up (update) and to publish."""
        t0 = time.perf_counter()
        rows = self.commit(lake, rel)
        t1 = time.perf_counter()
        fetched = self.mirror.pull(published=False)
        t2 = time.perf_counter()
        inc = self.rollup.update(publish=False)
        t3 = time.perf_counter()
        self.rollup.publish()
        t4 = time.perf_counter()
        assert fetched == 2 and inc.events_added == rows, (fetched, inc)  # its manifest and its file
        return t1 - t0, t2 - t1, t3 - t2, t4 - t3

    def close(self) -> None:
        self.rollup.close()
        shutil.rmtree(self.mirror.root, ignore_errors=True)

    def __enter__(self) -> S3Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def measure(root: Path, n: int, reuse: bool, incremental_runs: int, s3: bench_s3.BenchS3 | None = None) -> dict[str, float]:
    today = datetime.now(UTC).date()
    hierarchy, problems = parse_hierarchy(config())
    assert not problems, problems
    lake = prepare(root, n, today, reuse, hierarchy)
    out: dict[str, float] = {}
    reader = S3Reader(s3, lake, root / f"s3-mirror-{n}", hierarchy) if s3 is not None else None
    with Rollup(lake, budget_hook=BudgetUsage(hierarchy)) as r, reader or nullcontext():
        runs, s3_runs = [], []
        for k in range(incremental_runs):
            new = make_events(100_000, datetime.now(UTC) - timedelta(hours=1), 3600, np.random.default_rng(11 + k),
                              10**10 + k * 10**6)  # fmt: skip
            write_day(lake, new, today, f"llm-usage+0+new+{k}")
            t0 = time.perf_counter()
            inc = r.update(publish=False)
            t1 = time.perf_counter()
            r.publish()
            t2 = time.perf_counter()
            assert inc.events_added == 100_000, inc
            runs.append((t2 - t0, t1 - t0, t2 - t1))
            print(f"  incremental rollup {k + 1}: {t2 - t0:.2f} s (update {t1 - t0:.2f} s, publish {t2 - t1:.2f} s)")
            if reader is not None:  # the same file, committed to S3 and rolled up from there
                commit, pull, update, publish = reader.incremental(lake, f"events/date={today}/llm-usage+0+new+{k}.parquet")
                s3_runs.append((pull + update, pull, publish, commit))
                print(f"    from S3: pull {pull:.2f} s + update {update:.2f} s = {pull + update:.2f} s, "
                      f"{(pull + update) / (t1 - t0):.2f}x the local update (then publish {publish:.2f} s; "
                      f"the commit to S3 before it {commit:.2f} s)")  # fmt: skip
        out["incremental rollup of 100k events"] = statistics.median(x[0] for x in runs)
        out[LOCAL_UPDATE] = statistics.median(x[1] for x in runs)
        out["  of which publish (compact, write Parquet)"] = statistics.median(x[2] for x in runs)
        if s3_runs:
            out[S3_UPDATE] = statistics.median(x[0] for x in s3_runs)
            out["  S3: of which pull (mirror, published=False)"] = statistics.median(x[1] for x in s3_runs)
            out["  S3: then publish (compact, write Parquet)"] = statistics.median(x[2] for x in s3_runs)
            out["  S3: commit of the file before (writer's side)"] = statistics.median(x[3] for x in s3_runs)
        n_budgets = len(hierarchy.budgets)
        out[f"budget evaluation ({n_budgets:,} budgets)"] = timed(lambda: status_table(r.con, hierarchy))
        exporter = Exporter(lambda: r.con.cursor(), hierarchy)
        scraped = exporter.render()
        out["/metrics scrape"] = timed(exporter.render)
        lines = scraped.count(b"\n")
        print(f"  /metrics: {len(scraped):,} bytes, {lines:,} lines")
    con = query.connect(lake)
    for name, sql in {**{f"dashboard: {k}": v for k, v in DASHBOARD.items()}, **view_queries()}.items():
        out[name] = timed(lambda sql=sql: query.run(con, sql))
    con.close()
    for name, seconds in out.items():
        print(f"  {name:48} {seconds * 1000:10.1f} ms")
    sys.stdout.flush()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", type=float, default=[1e6, 5e7], help="lake sizes in events (default 1e6 5e7)")
    p.add_argument("--dir", default="/var/tmp/spendlake-bench-rollup", help="where the lakes are built")
    p.add_argument("--keep", action="store_true", help="keep the lakes afterwards")
    p.add_argument("--reuse", action="store_true",
                   help="keep the lakes and a copy of their first rollup, and start from that copy when it is from today")
    p.add_argument("--incremental-runs", type=int, default=3, help="incremental rollups of 100k events in a row (default 3)")
    p.add_argument("--s3", action="store_true",
                   help="also roll the incremental files up from the lake on S3, a SeaweedFS of our own on 127.0.0.1:17333 "
                        "(data in /var/tmp/spendlake-bench-s3, removed at the end)")  # fmt: skip
    p.add_argument("--s3-lake", metavar="s3://BUCKET/PREFIX",
                   help="as --s3, on this store (endpoint and credentials from the AWS environment); "
                        "a fresh prefix under it, deleted at the end")  # fmt: skip
    args = p.parse_args(argv)
    if args.s3 and args.s3_lake:
        p.error("--s3 starts a store of its own; --s3-lake names one: not both")
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    s3 = None
    try:
        if args.s3 or args.s3_lake:
            s3 = bench_s3.BenchS3.existing(args.s3_lake) if args.s3_lake else bench_s3.BenchS3.own()
            print(s3.how)
        results = {int(n): measure(root, int(n), args.reuse, args.incremental_runs, s3) for n in args.sizes}
    finally:
        if s3 is not None:
            s3.close()
    sizes = list(results)
    names = list(results[sizes[0]])
    print(f"\n{'ms (median)':48}" + "".join(f"{n:>14,}" for n in sizes) + (f"{'ratio':>10}" if len(sizes) > 1 else ""))
    for name in names:
        row = [results[n][name] * 1000 for n in sizes]
        ratio = f"{row[-1] / row[0]:>10.2f}" if len(sizes) > 1 and row[0] > 0 else ""
        print(f"{name:48}" + "".join(f"{v:>14.1f}" for v in row) + ratio)
    raw = {f"view: {v}" for v in RAW_VIEW_QUERIES}
    slow = [f"{name} ({results[sizes[-1]][name] * 1000:.0f} ms)" for name in names
            if name.startswith(("dashboard:", "view:")) and name not in raw and results[sizes[-1]][name] > 0.1]  # fmt: skip
    print(f"\ndashboard queries and rollup views over 100 ms at {sizes[-1]:,} events: {', '.join(slow) or 'none'}")
    for n in sizes if s3 is not None else []:
        s3_ratio = results[n][S3_UPDATE] / results[n][LOCAL_UPDATE]
        print(f"incremental update from S3 (pull + update) / local update at {n:,} events: {s3_ratio:.2f}x "
              f"(target <= 1.5x: {'met' if s3_ratio <= 1.5 else 'MISSED'})")  # fmt: skip
    if not (args.keep or args.reuse):
        for n in sizes:
            shutil.rmtree(root / f"lake-{n}", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
