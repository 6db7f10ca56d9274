"""/metrics render time at 10,000 budgeted virtual keys (issue 13, item 3a: target p95 ≤ 100 ms).

Builds (or reuses, with `--keep`) a real lake and state: the events of bench/rollup.py (30 days,
10,000 virtual keys in 200 teams of 20 customers, 12 models, priced by the real engine), plus
100,000 events in the last hour so the minute rollups (burn rates) are live, rolled up with the
real hierarchy (every key has a monthly budget, one in ten a daily one too: 11,220 budgets). Then
it renders /metrics with the real exporter `--runs` times (after one warm-up render) and prints
p50 / p95 / max, the series and bytes of one scrape, and checks that prometheus-client's parser
reads every family of it. The state does not change between renders, so what the exporter keeps
between scrapes (label sets, budget families whose values did not change) is reused; `--cold`
forgets it before each render. `--profile` prints a cProfile of the renders instead of timing
them.

Usage: `python bench/metrics.py [--events 1e6] [--runs 20] [--dir /var/tmp/spendlake-bench-metrics]
[--keep] [--details] [--cold] [--profile]`. Building the 1M-event lake takes ~1 minute on 2 cores; with
`--keep` the next run reuses it (rebuild with `--rebuild`).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rollup as bench_rollup  # noqa: E402  (bench/rollup.py: the same lake and hierarchy)

from aggregator.budgets import BudgetUsage  # noqa: E402
from aggregator.hierarchy import parse_hierarchy  # noqa: E402
from aggregator.metrics import Exporter, Health  # noqa: E402
from aggregator.rollup import Rollup  # noqa: E402


def build(lake: Path, n: int) -> None:
    today = datetime.now(UTC).date()
    t0 = time.perf_counter()
    bench_rollup.build(lake, n, today)
    recent = bench_rollup.make_events(100_000, datetime.now(UTC) - timedelta(hours=1), 3600,
                                      np.random.default_rng(11), 10**10)  # fmt: skip
    bench_rollup.write_day(lake, recent, today, "llm-usage+0+recent+0")
    (lake / ".built").write_text(f"{n}\n")
    print(f"  built {lake} in {time.perf_counter() - t0:.0f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=float, default=1e6, help="events of history (default 1e6)")
    p.add_argument("--runs", type=int, default=20, help="timed renders (default 20)")
    p.add_argument("--dir", default="/var/tmp/spendlake-bench-metrics", help="where the lake is built")
    p.add_argument("--keep", action="store_true", help="keep the lake (and reuse a kept one)")
    p.add_argument("--rebuild", action="store_true", help="build the lake even when a kept one exists")
    p.add_argument("--details", action="store_true", help="[metrics] budget_details = true (3 more gauges a budget)")
    p.add_argument("--profile", action="store_true", help="print a cProfile of the renders")
    p.add_argument("--cold", action="store_true",
                   help="forget what the exporter keeps between scrapes before each render (as if every "
                        "label set and budget value had changed)")
    p.add_argument("--save", metavar="FILE", help="write one rendered scrape to FILE")
    args = p.parse_args(argv)
    n = int(args.events)
    lake = Path(args.dir) / f"lake-{n}"
    if args.rebuild or not (args.keep and (lake / ".built").exists()):
        shutil.rmtree(lake, ignore_errors=True)
        print(f"{n:,} events: building {lake}")
        build(lake, n)
    hierarchy, problems = parse_hierarchy(bench_rollup.config())
    assert not problems, problems
    try:
        with Rollup(lake, budget_hook=BudgetUsage(hierarchy)) as r:
            t0 = time.perf_counter()
            r.update()
            print(f"  rollup: {time.perf_counter() - t0:.1f} s (a kept state only catches up)")
            now = time.time()
            health = Health(last_flush_at=now, lag={("llm-usage", 0): 12, ("llm-usage", 1): 0}, rollup_at=now)
            exporter = Exporter(lambda: r.con.cursor(), hierarchy, health, top_virtual_keys=20,
                                budget_details=args.details)  # fmt: skip
            t0 = time.perf_counter()
            first = exporter.render()
            print(f"  first render (cold caches): {(time.perf_counter() - t0) * 1000:.1f} ms")
            if args.save:
                Path(args.save).write_bytes(first)
            series = sum(1 for line in first.split(b"\n") if line and not line.startswith(b"#"))
            families = first.count(b"\n# TYPE ")
            print(f"  one scrape: {series:,} series in {families} families, {len(first):,} bytes")
            try:
                from prometheus_client.parser import text_string_to_metric_families

                parsed = list(text_string_to_metric_families(first.decode()))
                samples = sum(len(f.samples) for f in parsed)
                assert samples == series, (samples, series)
                print(f"  prometheus-client's parser reads it: {len(parsed)} families, {samples:,} samples")
            except ImportError:
                pass
            if args.profile:
                prof = cProfile.Profile()
                prof.enable()
                for _ in range(args.runs):
                    exporter.render()
                prof.disable()
                pstats.Stats(prof).sort_stats("cumulative").print_stats(35)
                return 0
            times = []
            for _ in range(args.runs):
                if args.cold:
                    exporter._memo.clear()
                t0 = time.perf_counter()
                exporter.render()
                times.append((time.perf_counter() - t0) * 1000)
            times.sort()
            p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
            print(f"  render over {args.runs} runs: p50 {statistics.median(times):.1f} ms, p95 {p95:.1f} ms, "
                  f"min {times[0]:.1f} ms, max {times[-1]:.1f} ms")  # fmt: skip
    finally:
        if not args.keep:
            shutil.rmtree(lake, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
