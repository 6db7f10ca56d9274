"""Does `spendlake serve` keep up with ingest at full speed? How far behind the lake do its rollups fall?

A real `spendlake serve` runs embedded (no [kafka]: it lands only its own, here empty, intake
spool) on a fresh lake, with a budget hierarchy (customers, teams and --budget-keys virtual keys
with budgets, so the budget hook and alert rules run as in production; --no-budgets for none).
Beside it, --writers
`spendlake ingest --source CHUNK.jsonl ...` processes land pre-generated canonical events (contract
1) into the SAME lake as fast as they can for --seconds; serve's rollups take in what other writers
land (they list the lake's date folders, where a batch's files appear once its manifest is
committed). Then the writers are stopped (SIGINT; what a stopped writer committed is rolled forward
with `Lake.recover()`, as its next start would) and the bench waits for the rollups to count
every event the lake holds.

The events: --keys virtual keys (a few carry most traffic) in 60 teams of 10 customers, the
builtin-catalog models of bench/ingest.py, stamped across the run's own minutes (live traffic:
today's date). --dup-share of the lines are retries: the very same event (same event_id, same
bytes) as one a few thousand to 200k lines earlier in the same writer's stream, so in another batch
and file, often another update: the rollups must count each event once.

Every --every seconds it prints: events the lake holds (distinct events of the batches whose
manifest is committed, counted from the manifests and the bench's own record of which line is
which event), events the rollups have counted (serve's `_rollups/status.json`, which the rollup
writes after every update: no query against serve), the difference, how long ago the lake held
what the rollups hold now (lag in seconds), and the rates. At the end: events/s landed, the
largest lag, how long after the writers stopped the rollups caught up (target: within 5 s), CPU of
serve, the writers and the whole machine, and a check that the published rollups equal the raw
lake (`spendlake query`: count and cost of distinct event_ids vs rollup_daily, to the cent; exit 1
if not, or if the rollups do not catch up within --catch-up-timeout).

    python bench/pace.py                        # 60 s, one writer
    python bench/pace.py --writers 2            # two: on 2 cores they leave serve ~2/3 of a core
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.ingest import MODELS  # noqa: E402
from bench.intake import TICK, cpu_ticks, machine_busy  # noqa: E402

TEAMS, CUSTOMERS = 60, 10
CHUNK = 250_000  # lines per input file (each file is one stream of `spendlake ingest --source`)
TARGET_CATCH_UP_S = 5.0


# --- the input -------------------------------------------------------------------------------


@dataclass
class Chunk:
    path: Path
    stream: str  # file-<digest>: what `spendlake ingest --source` names the file's stream
    writer: int
    events: np.ndarray  # the writer's event number of each line (a retry repeats an earlier one)
    distinct: int  # events the writer's whole input has


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def generate(out: Path, writer: int, n: int, keys: int, dup_share: float, start_ms: int, span_ms: int,
             tag: str) -> list[Chunk]:  # fmt: skip
    """One writer's input: n lines in files of CHUNK lines."""
    rng = np.random.default_rng(1000 + writer)
    # line k carries event idx[k]: new events in order, and retries of an event 1k..200k lines back
    retry = rng.random(n) < dup_share
    retry[:1000] = False
    new = np.cumsum(~retry) - 1
    idx = np.where(retry, 0, new)
    back = rng.integers(1000, 200_000, n)
    for k in np.flatnonzero(retry):  # a retry of a retry is the same event again
        idx[k] = idx[max(0, k - int(back[k]))]
    m = int(new[-1]) + 1  # distinct events
    w = np.array([x[2] for x in MODELS], dtype=float)
    model = rng.choice(len(MODELS), m, p=w / w.sum()).tolist()
    labels = [f'"provider":"{p}","model":"{name}"' for p, name, *_ in MODELS]
    reasons = [x[3] for x in MODELS]
    vk = (keys * rng.random(m) ** 3).astype(np.int64).tolist()  # a few keys carry most traffic
    ts = (start_ms + np.sort(rng.integers(0, span_ms, m))).tolist()
    inp = np.clip(rng.lognormal(7.3, 1.1, m), 5, 200_000).astype(np.int64).tolist()
    outp = np.clip(rng.lognormal(5.6, 1.0, m), 1, 32_000).astype(np.int64)
    cached = np.where(rng.random(m) < 0.35, (np.asarray(inp) * rng.random(m) * 0.9).astype(np.int64), 0).tolist()
    latency = (150 + outp * rng.uniform(8, 25, m)).round(1).tolist()
    err = (rng.random(m) < 0.02).tolist()
    outp = outp.tolist()

    def line(i: int) -> str:
        v = vk[i]
        team = v % TEAMS
        extra = f',"cached_input_tokens":{cached[i]}' if cached[i] else ""
        if reasons[model[i]]:
            extra += f',"reasoning_tokens":{outp[i] // 2}'
        if err[i]:
            extra += ',"status":"error","status_code":500'
        return (f'{{"event_id":"{tag}-{writer}-{i}","timestamp":{ts[i]},{labels[model[i]]},"input_tokens":{inp[i]},'
                f'"output_tokens":{outp[i]},"virtual_key":"vk-{v:05d}","team":"team-{team:02d}",'
                f'"customer":"customer-{team % CUSTOMERS}","latency_ms":{latency[i]}{extra}}}\n')  # fmt: skip

    chunks = []
    for c, lo in enumerate(range(0, n, CHUNK)):
        part = idx[lo : lo + CHUNK]
        path = out / f"writer{writer}-{c:03d}.jsonl"
        path.write_text("".join([line(i) for i in part.tolist()]))
        chunks.append(Chunk(path, f"file-{_digest(path)}", writer, part, m))
    return chunks


def config(lake: Path, keys: int, budget_keys: int, interval: str, budgets: bool = True) -> str:
    out = [f'[lake]\npath = "{lake}"\n', '[metrics]\nlisten = "127.0.0.1:0"\n',
           f'[alerts]\nevaluation_interval = "{interval}"\n']  # fmt: skip
    if not budgets:
        return "\n".join(out)
    for c in range(CUSTOMERS):
        out.append(f'[[customers]]\nid = "customer-{c}"\nbudgets = [{{ max_limit = 1e9, reset_duration = "1M" }}]\n')
    for t in range(TEAMS):
        out.append(f'[[teams]]\nid = "team-{t:02d}"\ncustomer_id = "customer-{t % CUSTOMERS}"\n'
                   f'budgets = [{{ max_limit = 1e8, reset_duration = "1M" }}]\n')  # fmt: skip
    for v in range(min(budget_keys, keys)):
        out.append(f'[[virtual_keys]]\nid = "vk-{v:05d}"\nteam_id = "team-{v % TEAMS:02d}"\n'
                   f'budgets = [{{ max_limit = 1e7, reset_duration = "1M" }}, {{ max_limit = 1e6, reset_duration = "1d" }}]\n')  # fmt: skip
    return "\n".join(out)


# --- watching the lake and the rollups -------------------------------------------------------


@dataclass
class Watch:
    lake: Path
    chunks: dict[str, Chunk]  # by stream
    seen_manifests: set[str] = field(default_factory=set)
    landed: dict[int, np.ndarray] = field(default_factory=dict)  # writer -> which of its events the lake holds
    events: int = 0  # distinct events the lake holds
    rows: int = 0  # rows the lake holds (retries included)
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, lake events, rolled up)
    published: list[int] = field(default_factory=list)  # events of the published copies, per sample

    def lake_events(self) -> int:
        root = self.lake / "_manifests"
        for m in root.glob("*/*/*.json") if root.exists() else []:
            key = str(m)
            if key in self.seen_manifests:
                continue
            self.seen_manifests.add(key)
            doc = json.loads(m.read_bytes())
            self.rows += doc["rows"]
            chunk = self.chunks.get(doc["stream"])
            if chunk is None:
                continue
            held = self.landed.setdefault(chunk.writer, np.zeros(chunk.distinct, bool))
            ids = chunk.events[doc["first"] - 1 : doc["last"]]  # lines first..last (1-based) of that file
            fresh = np.unique(ids[~held[ids]])
            held[fresh] = True
            self.events += len(fresh)
        return self.events

    def rolled(self) -> tuple[int, int]:
        """(events the rollup state has counted, events of its last publication)"""
        try:
            doc = json.loads((self.lake / "_rollups" / "status.json").read_bytes())
            return int(doc.get("events", 0)), int(doc.get("published_events", 0))
        except (OSError, ValueError):
            return 0, 0

    def sample(self, t: float) -> tuple[int, int, int]:
        rolled, published = self.rolled()  # first: the lake holds at least that much by the time it is read
        lake = self.lake_events()
        self.samples.append((t, lake, rolled))
        self.published.append(published)
        return lake, rolled, published

    def lag_s(self, i: int) -> float:
        """How long before sample i the lake held no more than what the rollups hold at i."""
        t, _, rolled = self.samples[i]
        for s_t, s_lake, _ in reversed(self.samples[: i + 1]):
            if s_lake <= rolled:
                return t - s_t
        return t - self.samples[0][0]


def stop_all(procs: list[subprocess.Popen[bytes]], sig: int, timeout: float) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(sig)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def query(lake: Path, sql: str) -> list[dict[str, object]]:
    r = subprocess.run([sys.executable, "-m", "spendlake", "query", "--lake", str(lake), "--format", "json", sql],
                       capture_output=True, cwd=ROOT, timeout=600)  # fmt: skip
    if r.returncode:
        sys.exit(f"bench: FAILED: spendlake query: {r.stderr.decode()[-2000:]}")
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="how long the writers ingest (default 60)")
    ap.add_argument("--writers", type=int, default=1,
                    help="`spendlake ingest --source` processes (default 1: the issue's one ingest process)")
    ap.add_argument("--events-per-writer", type=float, default=0,
                    help="lines generated per writer (default: 150,000 per second of --seconds; a writer that "
                         "runs out stops early, and the bench says so)")  # fmt: skip
    ap.add_argument("--keys", type=int, default=10_000, help="virtual keys in the traffic (default 10000)")
    ap.add_argument("--budget-keys", type=int, default=1_000,
                    help="of those, keys with a monthly and a daily budget (default 1000; teams and customers "
                         "always have one)")  # fmt: skip
    ap.add_argument("--no-budgets", action="store_true", help="no budgets at all (no budget usage kept)")
    ap.add_argument("--dup-share", type=float, default=0.01, help="share of lines that are retries (default 0.01)")
    ap.add_argument("--interval", default="5s", help="serve's [alerts] evaluation_interval (default 5s)")
    ap.add_argument("--every", type=float, default=5.0, help="seconds between progress lines (default 5)")
    ap.add_argument("--catch-up-timeout", type=float, default=300.0,
                    help="give up waiting for the rollups this long after the writers stop (default 300)")
    ap.add_argument("--dir", default="/var/tmp/spendlake-bench-pace", help="lake and inputs (removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep --dir afterwards")
    args = ap.parse_args()

    root = Path(args.dir)
    shutil.rmtree(root, ignore_errors=True)
    inputs, lake = root / "inputs", root / "lake"
    inputs.mkdir(parents=True)
    per_writer = int(args.events_per_writer or 150_000 * args.seconds)
    tag = os.urandom(4).hex()
    t0 = time.perf_counter()
    start_ms = int(time.time() * 1000) + 20_000  # roughly when the writers start; spread over the run
    with ProcessPoolExecutor(max_workers=min(args.writers, os.cpu_count() or 1)) as pool:
        futures = [pool.submit(generate, inputs, w, per_writer, args.keys, args.dup_share, start_ms,
                               int(args.seconds * 1000), tag) for w in range(args.writers)]  # fmt: skip
        per = [f.result() for f in futures]
    chunks = {c.stream: c for cs in per for c in cs}
    total_lines = sum(len(c.events) for c in chunks.values())
    print(f"generated {total_lines:,} lines ({args.writers} writers x {per_writer:,}, {args.dup_share:.1%} retries) "
          f"in {time.perf_counter() - t0:.0f} s")  # fmt: skip

    cfg = root / "spendlake.toml"
    cfg.write_text(config(lake, args.keys, args.budget_keys, args.interval, not args.no_budgets))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    serve_log = (root / "serve.log").open("wb")
    serve = subprocess.Popen([sys.executable, "-m", "spendlake", "-v", "serve", "--config", str(cfg)],
                             stdout=serve_log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)  # fmt: skip
    deadline = time.monotonic() + 60
    while b"serving /metrics" not in (root / "serve.log").read_bytes():
        if serve.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"bench: FAILED: serve did not start:\n{(root / 'serve.log').read_text()[-3000:]}")
        time.sleep(0.1)
    print(f"serve is up (pid {serve.pid}, embedded, no Kafka; log {root / 'serve.log'}); "
          f"{args.writers} writer(s) for {args.seconds:.0f} s")  # fmt: skip

    watch = Watch(lake, chunks)
    busy0 = machine_busy()
    serve_cpu0 = cpu_ticks(serve.pid)
    logs = [(root / f"writer{w}.log").open("wb") for w in range(args.writers)]
    t_start = time.monotonic()
    writers = [
        subprocess.Popen([sys.executable, "-m", "spendlake", "ingest", "--lake", str(lake), "--catalog", "builtin",
                          "--quiet", *(a for c in per[w] for a in ("--source", str(c.path)))],
                         stdout=logs[w], stderr=subprocess.STDOUT, cwd=ROOT, env=env)  # fmt: skip
        for w in range(args.writers)
    ]
    writer_cpu = {p.pid: 0 for p in writers}
    print(f"{'t (s)':>6} {'lake events':>13} {'rolled up':>13} {'behind':>11} {'behind (s)':>10} "
          f"{'landed/s':>10} {'rolled/s':>10} {'published':>13}")  # fmt: skip
    last_print = (0.0, 0, 0)
    ran_out: list[tuple[int, float]] = []

    def tick(now: float) -> None:
        nonlocal last_print
        for p in writers:
            writer_cpu[p.pid] = max(writer_cpu[p.pid], cpu_ticks(p.pid))  # read while it runs
        lake_n, rolled, published = watch.sample(now)
        if now - last_print[0] >= args.every:
            dt = now - last_print[0]
            print(f"{now:6.1f} {lake_n:13,} {rolled:13,} {lake_n - rolled:11,} {watch.lag_s(len(watch.samples) - 1):10.1f} "
                  f"{(lake_n - last_print[1]) / dt:10,.0f} {(rolled - last_print[2]) / dt:10,.0f} {published:13,}",
                  flush=True)  # fmt: skip
            last_print = (now, lake_n, rolled)

    while (now := time.monotonic() - t_start) < args.seconds:
        tick(now)
        for w, p in enumerate(writers):
            if p.poll() is not None and all(x != w for x, _ in ran_out):
                ran_out.append((w, now))
        if len(ran_out) == len(writers):
            break
        time.sleep(0.25)
    stop_all(writers, signal.SIGINT, 30)
    from ingest.lake import Lake

    rolled_forward = Lake(lake).recover()  # what a writer stopped mid-commit had committed
    t_stop = time.monotonic() - t_start
    for f in logs:
        f.close()
    final = watch.lake_events()
    ingest_s = t_stop
    print(f"writers stopped at {t_stop:.1f} s" + (f" ({rolled_forward} files rolled forward)" if rolled_forward else "")
          + "".join(f"; writer {w} ran out of input at {t:.1f} s" for w, t in ran_out) + f"; the lake holds {final:,} events "
          f"({watch.rows:,} rows with the retries), {final / ingest_s:,.0f} events/s")  # fmt: skip
    caught_at = None
    while (now := time.monotonic() - t_start) < t_stop + args.catch_up_timeout:
        tick(now)
        if watch.samples[-1][2] >= final and caught_at is None:
            caught_at = now
        if caught_at is not None and (watch.published[-1] >= final or now - caught_at > 30):
            break
        if serve.poll() is not None:
            break
        time.sleep(0.1)
    serve_cpu = cpu_ticks(serve.pid) - serve_cpu0
    busy1 = machine_busy()
    lags = [watch.lag_s(i) for i in range(len(watch.samples))]
    published_at = next((t for (t, _, _), p in zip(watch.samples, watch.published) if p >= final), None)
    behind = [lake_n - rolled for _, lake_n, rolled in watch.samples]
    elapsed = (caught_at or time.monotonic() - t_start)
    machine = 100 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * (os.cpu_count() or 1)
    print(f"\nlake: {final:,} events in {ingest_s:.1f} s = {final / ingest_s:,.0f} events/s landed by {args.writers} "
          f"writer(s) ({watch.rows - final:,} retry rows besides)")  # fmt: skip
    print(f"rollups: max behind {max(behind):,} events, max lag {max(lags):.1f} s; "
          + (f"caught up {caught_at - t_stop:.1f} s after the writers stopped (target ≤ {TARGET_CATCH_UP_S:.0f} s)"
             if caught_at is not None else f"NOT caught up {args.catch_up_timeout:.0f} s after the writers stopped"))  # fmt: skip
    if published_at is not None:
        print(f"published copies (what `spendlake query` reads): all of it {published_at - t_stop:.1f} s after the "
              "writers stopped")  # fmt: skip
    print(f"CPU (% of one core over {elapsed:.0f} s): serve {100 * serve_cpu / TICK / elapsed:.0f}%, writers "
          f"{100 * sum(writer_cpu.values()) / TICK / ingest_s:.0f}% (while they ran), machine {machine:.0f}% of "
          f"{100 * (os.cpu_count() or 1)}%; load average now {os.getloadavg()[0]:.1f}")  # fmt: skip
    stop_all([serve], signal.SIGTERM, 120)
    serve_log.close()
    rows = query(lake, "SELECT (SELECT sum(requests) FROM rollup_daily) AS rolled, "
                       "(SELECT round(sum(cost_usd), 2) FROM rollup_daily) AS rolled_cost, "
                       "(SELECT count(DISTINCT event_id) FROM request_log) AS raw, "
                       "(SELECT round(sum(cost_usd), 2) FROM request_log) AS raw_cost")  # fmt: skip
    r = rows[0]
    ok = caught_at is not None and r["rolled"] == r["raw"] == final and r["rolled_cost"] == r["raw_cost"]
    print(f"check (spendlake query after serve stopped): rollup_daily {r['rolled']:,} events ${r['rolled_cost']:,}, "
          f"raw lake {r['raw']:,} distinct events ${r['raw_cost']:,}: {'equal' if ok else 'NOT EQUAL'}")  # fmt: skip
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
