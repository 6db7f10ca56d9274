"""Costs are printed at 12 significant digits (pricing.money), not with float noise (issue 15).

The stored lake keeps full float64; `spendlake price` and `spendlake query` (table, CSV, JSON)
print the rounded figure. Each test first checks that its input really carries noise, so it
fails if the rounding goes.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import event, raw_rows, spendlake
from pricing.money import cost_text, round_cost
from spendlake.price_cmd import MONEY_KEYS

COST_PARTS = ("cost_usd", "cost_input_usd", "cost_cached_input_usd", "cost_cache_write_usd", "cost_output_usd",
              "cost_reasoning_usd")  # fmt: skip
# gpt-4o, 500 in (125 cached), 50 out: cost_usd is stored as 0.0015937500000000001
NOISY = event(0, cost_usd=0.1 + 0.2)  # and the emitter's own figure is 0.30000000000000004
NUMBER = rb'-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?'


def noisy(value: float) -> bool:
    """True when the float's shortest text has more than 12 significant digits."""
    return round_cost(value) != value


def significant_digits(text: str) -> int:
    """Of a JSON number's text (trailing zeros of an integer part count as not significant)."""
    return len(text.lower().split("e")[0].lstrip("-").replace(".", "").strip("0"))


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("precision")
    src = root / "e.jsonl"
    src.write_bytes(orjson.dumps(NOISY) + b"\n")
    lake = root / "lake"
    spendlake("ingest", "--source", str(src), "--lake", str(lake), "--catalog", "builtin", "--quiet", check=True)
    return lake


@pytest.fixture(scope="module")
def stored(lake: Path) -> dict[str, Any]:
    """The lake row, read with pyarrow: the full float64 ingest stored."""
    (row,) = raw_rows(lake)
    assert row["cost_source"] == "catalog"
    assert repr(row["cost_usd"]) == "0.0015937500000000001" and noisy(row["cost_usd"])  # the noise is real
    assert noisy(row["reported_cost_usd"]) and noisy(row["cost_input_usd"])
    return row


def test_price_writes_every_cost_at_12_significant_digits(stored: dict[str, Any]) -> None:
    r = spendlake("price", "--catalog", "builtin", input=orjson.dumps(NOISY) + b"\n", check=True)
    line = r.stdout.strip()
    got = json.loads(line)
    assert set(MONEY_KEYS) == {*COST_PARTS, "reported_cost_usd"} <= set(got)
    for key in MONEY_KEYS:
        assert got[key] == round_cost(stored[key]), key  # the same cost as stored, rounded
        m = re.search(rb'"' + key.encode() + rb'":(' + NUMBER + rb")", line)
        assert m is not None, key
        assert significant_digits(m.group(1).decode()) <= 12, (key, m.group(1))
    assert got["cost_usd"] == 0.00159375 and b'"cost_usd":0.00159375,' in line
    assert got["reported_cost_usd"] == 0.3 and got["cost_input_usd"] == 0.0009375


def test_query_prints_floats_at_12_significant_digits(lake: Path, stored: dict[str, Any]) -> None:
    sql = "SELECT cost_usd, cost_input_usd, reported_cost_usd, cost_usd::VARCHAR AS stored FROM request_log"
    want = [cost_text(stored[k]) for k in ("cost_usd", "cost_input_usd", "reported_cost_usd")]
    assert want == ["0.00159375", "0.0009375", "0.3"]

    r = spendlake("query", "--lake", str(lake), "--format", "csv", sql, check=True)
    header, row = list(csv.reader(io.StringIO(r.stdout.decode(), newline="")))
    assert header == ["cost_usd", "cost_input_usd", "reported_cost_usd", "stored"]
    assert row[:3] == want
    assert float(row[3]) == stored["cost_usd"]  # the lake is unchanged; a VARCHAR cast shows all of it

    r = spendlake("query", "--lake", str(lake), "--format", "json", sql, check=True)
    assert b'"cost_usd": 0.00159375,' in r.stdout and b'"reported_cost_usd": 0.3,' in r.stdout
    (obj,) = json.loads(r.stdout)
    assert [obj["cost_usd"], obj["cost_input_usd"], obj["reported_cost_usd"]] == [float(w) for w in want]

    r = spendlake("query", "--lake", str(lake), sql, check=True)  # table
    cells = r.stdout.decode().splitlines()[2].split()
    assert cells[:3] == want
