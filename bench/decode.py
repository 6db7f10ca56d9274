"""How fast the batch decoder (ingest/fastdecode.py) decodes realistic canonical events, clean and
with a share of bad records mixed in at random positions.

Generates --events realistic events (bench/ingest.py's generator), then inserts round(events x
--bad-share) bad records, the kinds in turn. `--corpus kafka`: the 11 kinds of tests/test_kafka.py's
BAD_RECORDS (not UTF-8, not JSON, a JSON array, negative / string / huge tokens, no timestamp,
seconds not milliseconds, cache > input, no provider, over 1 MiB); of those only the string tokens
reach Arrow and make it refuse a chunk. `--corpus all` (default) adds three more that Arrow
refuses (float tokens, a timestamp string without an offset, a string status code). Decodes both
streams in --batch records per call (ingest's default batch cut) with one BatchDecoder, GC off as
in `spendlake ingest`, and prints events/s (good rows out per second) by wall clock and by this
process's CPU time (steadier on a shared machine), their ratio, and whether the dead letters are
exactly the bad records. --end-to-end also writes both streams as JSONL under /var/tmp (records
over 1 MiB left out) and times `spendlake ingest --source FILE --lake DIR` on each (wall time,
process start included); files and lakes are removed after. --decoder PATH decodes with another
copy of fastdecode.py (e.g. the previous version) in the micro-benchmark.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import orjson  # noqa: E402

MiB = 1024 * 1024


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


Event = dict[str, Any]


def _set(k: str, v: object) -> Callable[[Event], Event]:
    return lambda e: {**e, k: v}


def _drop(k: str) -> Callable[[Event], Event]:
    return lambda e: {x: y for x, y in e.items() if x != k}


OVERSIZED = b'{"event_id": "b8", "timestamp": 1764331200000, "provider": "openai", "pad": "' + b"x" * MiB + b'"}'
# How a record goes bad: (kind, raw bytes or a function of the good event it replaces)
KAFKA_KINDS: list[tuple[str, bytes | Callable[[Event], Event]]] = [
    ("not UTF-8", b"\xff\xfe not utf-8"),
    ("not JSON", b"{not json"),
    ("JSON array", b"[1, 2, 3]"),
    ("negative tokens", _set("input_tokens", -5)),
    ("tokens as string", _set("input_tokens", "12")),
    ("huge tokens", _set("output_tokens", 10**12)),
    ("no timestamp", _drop("timestamp")),
    ("seconds not ms", lambda e: {**e, "timestamp": e["timestamp"] // 1000}),
    ("cache > input", lambda e: {**e, "cached_input_tokens": e["input_tokens"] + 1}),
    ("no provider", _drop("provider")),
    ("over 1 MiB", OVERSIZED),
]
MORE_REFUSED: list[tuple[str, bytes | Callable[[Event], Event]]] = [
    ("tokens as float", lambda e: {**e, "output_tokens": float(e["output_tokens"])}),
    ("no offset", _set("timestamp", "2025-11-28T10:00:00")),
    ("status_code string", _set("status_code", "200")),
]
CORPORA = {"kafka": KAFKA_KINDS, "all": KAFKA_KINDS + MORE_REFUSED}


def generate(n: int, bad_share: float, corpus: str, seed: int = 7) -> tuple[list[bytes], list[bytes], int]:
    """(clean values, the same with bad records inserted, how many bad)."""
    work = Path(tempfile.mkdtemp(prefix="spendlake-bench-decode-", dir="/var/tmp"))
    try:
        _load("bench_ingest", ROOT / "bench" / "ingest.py").write_events(n, work / "events.tsv")
        with (work / "events.tsv").open("rb") as fh:
            clean = [line.rstrip(b"\n").split(b"\t", 1)[1] for line in fh]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rng = np.random.default_rng(seed)
    n_bad = round(n * bad_share)
    kinds = CORPORA[corpus]
    at = np.sort(rng.integers(0, n + 1, n_bad)).tolist()
    mixed: list[bytes] = []
    prev = 0
    for j, pos in enumerate(at):
        m = kinds[j % len(kinds)][1]
        mixed += clean[prev:pos]
        mixed.append(m if isinstance(m, bytes) else orjson.dumps(m(orjson.loads(clean[min(pos, n - 1)]))))
        prev = pos
    mixed += clean[prev:]
    return clean, mixed, n_bad


def load_decoder(path: str | None) -> Any:
    if path is None:
        from ingest.fastdecode import BatchDecoder

        return BatchDecoder
    return _load("fastdecode_under_test", Path(path)).BatchDecoder


def decode_all(cls: Any, values: list[bytes], batch: int) -> tuple[float, float, int, int]:
    """(seconds, CPU seconds, rows, dead letters) for decoding `values` in batches, GC off as in
    ingest. CPU seconds are this process's: steadier than wall time on a shared machine."""
    dec = cls()
    rows = dead = 0
    gc.collect()
    gc.disable()
    try:
        t, c = time.perf_counter(), time.process_time()
        for s in range(0, len(values), batch):
            table, _, bad = dec.decode(values[s : s + batch])
            rows += table.num_rows
            dead += len(bad)
        return time.perf_counter() - t, time.process_time() - c, rows, dead
    finally:
        gc.enable()


def end_to_end(clean: list[bytes], mixed: list[bytes]) -> None:
    work = Path(tempfile.mkdtemp(prefix="spendlake-bench-decode-", dir="/var/tmp"))
    try:
        print(f"\n{'spendlake ingest --source':<28}{'lines':>10}{'seconds':>9}{'events/s':>11}")
        for name, values in (("clean", clean), ("bad", [v for v in mixed if len(v) <= MiB])):
            src = work / f"{name}.jsonl"
            src.write_bytes(b"\n".join(values) + b"\n")
            t = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "spendlake", "ingest", "--source", str(src),
                                "--lake", str(work / f"lake-{name}"), "--quiet"],
                               cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True)  # fmt: skip
            s = time.perf_counter() - t
            if r.returncode != 0:
                sys.exit(f"spendlake ingest exited {r.returncode}: {r.stderr.decode()[-2000:]}")
            src.unlink()
            shutil.rmtree(work / f"lake-{name}", ignore_errors=True)
            print(f"  {name:<26}{len(values):>10,}{s:>9.2f}{len(clean) / s:>11,.0f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000, help="good events (default 1,000,000)")
    p.add_argument("--bad-share", type=float, default=0.01, help="bad records per good one (default 0.01)")
    p.add_argument("--corpus", choices=sorted(CORPORA), default="all", help="kinds of bad records (default all)")
    p.add_argument("--batch", type=int, default=50_000, help="records per decode call (default 50,000)")
    p.add_argument("--runs", type=int, default=3, help="runs of each stream; the median is printed (default 3)")
    p.add_argument("--decoder", metavar="PATH", help="a fastdecode.py to time instead of ingest/fastdecode.py")
    p.add_argument("--end-to-end", action="store_true", help="also time `spendlake ingest --source` on both")
    args = p.parse_args()

    t = time.perf_counter()
    clean, mixed, n_bad = generate(args.events, args.bad_share, args.corpus)
    print(f"generated {len(clean):,} good events (+{n_bad:,} bad: {len(CORPORA[args.corpus])} kinds in turn, "
          f"--corpus {args.corpus}) in {time.perf_counter() - t:.1f} s; load {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs")
    cls = load_decoder(args.decoder)
    print(f"decoder: {args.decoder or ROOT / 'ingest/fastdecode.py'}, batches of {args.batch:,}, median of {args.runs}")
    print(f"{'stream':<16}{'records':>10}{'seconds':>9}{'events/s':>11}{'CPU s':>8}{'events/CPU s':>14}"
          f"  dead letters")
    rates = []
    for name, values in (("clean", clean), (f"{args.bad_share:.1%} bad", mixed)):
        runs = [decode_all(cls, values, args.batch) for _ in range(args.runs)]
        s, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        _, _, rows, dead = runs[0]
        rates.append((rows / s, rows / cpu))
        note = "" if dead == len(values) - len(clean) and rows == len(clean) else "  UNEXPECTED rows/dead letters"
        print(f"  {name:<14}{len(values):>10,}{s:>9.2f}{rows / s:>11,.0f}{cpu:>8.2f}{rows / cpu:>14,.0f}  {dead:,}"
              f"{note}   (runs {', '.join(f'{r[0]:.2f}' for r in runs)} s)")
    (clean_wall, clean_cpu), (bad_wall, bad_cpu) = rates
    print(f"bad / clean events/s: {bad_wall / clean_wall:.2f} (per CPU second {bad_cpu / clean_cpu:.2f}); "
          f"load now {os.getloadavg()[0]:.2f}")
    if args.end_to_end:
        end_to_end(clean, mixed)
        print(f"load now {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
