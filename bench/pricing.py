"""How many events per second `pricing.price_table` prices (best of several runs).

Builds N mixed events as one Arrow table (EVENT_SCHEMA columns pricing reads): known models from
several providers, dated snapshots, unknown models with and without a reported cost, batch and
gateway-cache traffic, a few long-context requests, 200 teams. With --overrides, 20 team discounts
and 2 explicit negotiated prices apply too. Prints one line per run and the best figure.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.schema import EVENT_SCHEMA, TOKEN_COLUMNS  # noqa: E402
from pricing import Catalog, load_catalog, parse_overrides, price_table  # noqa: E402

MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-2024-08-06"),
    ("openai", "gpt-4o-mini"),
    ("openai", "o4-mini"),
    ("anthropic", "claude-sonnet-4-5-20250929"),
    ("anthropic", "claude-haiku-4-5"),
    ("gemini", "gemini-2.5-pro"),
    ("vertex", "gemini-2.5-flash"),
    ("bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
    ("azure", "gpt-4.1"),
    ("mistral", "mistral-large-latest"),
    ("deepseek", "deepseek-reasoner"),
    ("xai", "grok-4.3"),
    ("openai", "in-house-finetune-7"),  # unknown
    ("acme", "mystery-model"),  # unknown provider
]


def make_events(n: int, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    which = rng.integers(0, len(MODELS), n)
    inp = rng.integers(0, 20_000, n)
    inp[rng.random(n) < 0.01] = 250_000  # long context
    cached = (inp * rng.random(n) * 0.5).astype(np.int64)
    write = ((inp - cached) * rng.random(n) * 0.2).astype(np.int64)
    out = rng.integers(0, 4_000, n)
    tokens = {
        "input_tokens": inp,
        "cached_input_tokens": cached,
        "cache_write_tokens": write,
        "cache_write_1h_tokens": write // 3,
        "output_tokens": out,
        "reasoning_tokens": out // 4,
    }
    assert set(tokens) == set(TOKEN_COLUMNS)
    reported = rng.random(n) * 0.01
    start = np.datetime64("2024-01-01T00:00:00", "ms").astype(np.int64)
    columns = {
        "provider": pa.array([MODELS[i][0] for i in range(len(MODELS))]).take(pa.array(which)),
        "model": pa.array([MODELS[i][1] for i in range(len(MODELS))]).take(pa.array(which)),
        "timestamp": pa.array(start + rng.integers(0, 700 * 86_400_000, n), pa.int64()),
        **{k: pa.array(v, pa.int64()) for k, v in tokens.items()},
        "batch": pa.array(rng.random(n) < 0.1),
        "cache_hit": pa.array(rng.random(n) < 0.05),
        "reported_cost_usd": pa.array(reported, mask=rng.random(n) < 0.5),
        "request_type": pa.array(["chat"] * len(MODELS)).take(pa.array(which)),
        "team": pa.array([f"team-{i}" for i in range(200)]).take(pa.array(rng.integers(0, 200, n))),
    }
    schema = pa.schema([EVENT_SCHEMA.field(name) for name in columns])
    return pa.Table.from_arrays(
        [columns[f.name].cast(f.type) for f in schema], schema=schema
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events per run")
    parser.add_argument("--runs", type=int, default=3, help="timed runs; the best is reported")
    parser.add_argument("--catalog", default="builtin", help='"builtin" or a LiteLLM JSON path')
    parser.add_argument("--overrides", action="store_true", help="also apply 22 team overrides")
    args = parser.parse_args(argv)
    overrides, problems = parse_overrides(
        [{"scope": "team", "id": f"team-{i}", "discount": 0.1} for i in range(20)]
        + [{"scope": "team", "id": f"team-{i}", "provider": "openai", "model": "gpt-4o",
            "input_usd_per_mtok": 2.0, "output_usd_per_mtok": 8.0} for i in (20, 21)]
        if args.overrides else []
    )  # fmt: skip
    assert not problems, problems

    events = make_events(args.events)
    catalog: Catalog = load_catalog(args.catalog)
    best = float("inf")
    for run in range(1, args.runs + 1):
        t0 = time.perf_counter()
        costs = price_table(events, catalog, overrides=overrides)
        elapsed = time.perf_counter() - t0
        best = min(best, elapsed)
        print(f"run {run}: {args.events:,} events in {elapsed * 1000:.1f} ms")
    sources = costs.column("cost_source").value_counts().to_pylist()
    print("cost_source:", {s["values"]: s["counts"] for s in sources})
    print(f"best: {args.events / best:,.0f} events/s ({args.catalog} catalog"
          f"{', 22 overrides' if overrides else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
