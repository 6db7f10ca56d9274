"""`spendlake ingest --source`: files, globs, gzip, stdin; idempotent; dead letters; and the CLI."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from conftest import dead_rows, event, events_bytes, lake_rows, litellm_logging_example_path, spendlake


def write_jsonl(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_same_file_twice_adds_nothing(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "a.jsonl", events_bytes(1000))
    lake = tmp_path / "lake"
    spendlake("ingest", "--source", str(src), "--lake", str(lake), check=True)
    first = lake_rows(lake, "select count(*), sum(cost_usd) from ev")
    r = spendlake("ingest", "--source", str(src), "--lake", str(lake), check=True)
    assert b"0 new lines read" in r.stderr
    assert lake_rows(lake, "select count(*), sum(cost_usd) from ev") == first
    assert first[0][0] == 1000
    # the same content under another name, and through stdin, is the same stream too
    copy = tmp_path / "renamed.jsonl"
    copy.write_bytes(src.read_bytes())
    spendlake("ingest", "--source", str(copy), "--lake", str(lake), check=True)
    spendlake("ingest", "--source", "-", "--lake", str(lake), input=src.read_bytes(), check=True)
    assert lake_rows(lake, "select count(*) from ev") == [(1000,)]


def test_gzip_glob_and_stdin(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    with gzip.open(tmp_path / "logs" / "a.jsonl.gz", "wb") as fh:
        fh.write(b"\n".join(events_bytes(300)) + b"\n")
    write_jsonl(tmp_path / "logs" / "b.jsonl", events_bytes(200, start=300))
    lake = tmp_path / "lake"
    spendlake("ingest", "--source", str(tmp_path / "logs" / "*.jsonl*"), "--lake", str(lake), check=True)
    spendlake("ingest", "--source", "-", "--lake", str(lake), input=b"\n".join(events_bytes(50, start=500)), check=True)
    rows = lake_rows(lake, "select source_topic, count(*) from ev group by 1 order by 1")
    assert rows == [("file:a.jsonl.gz", 300), ("file:b.jsonl", 200), ("file:stdin", 50)]
    assert lake_rows(lake, "select count(distinct event_id) from ev") == [(550,)]


def test_interrupted_file_ingest_resumes_where_the_lake_ends(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "a.jsonl", events_bytes(1000))
    lake = tmp_path / "lake"
    # first run lands only the first batch: simulate by ingesting a prefix under the same stream
    from ingest.lake import Lake
    from ingest.pipeline import BatchLimits, Pipeline
    from ingest.source import digest
    from pricing import Catalog

    p = Pipeline(Lake(lake), Catalog.builtin(), limits=BatchLimits(max_records=300))
    stream = f"file-{digest(src)}"
    for i, line in enumerate(src.read_bytes().splitlines()[:300], start=1):
        p.add(stream, "file:a.jsonl", 0, i, None, line)
    p.flush()
    r = spendlake("ingest", "--source", str(src), "--lake", str(lake), check=True)
    assert b"holds lines 1..300" in r.stderr and b"700 new lines read" in r.stderr
    assert lake_rows(lake, "select count(*), count(distinct source_offset), min(source_offset), max(source_offset) from ev") == [
        (1000, 1000, 1, 1000)
    ]


def test_bad_lines_become_dead_letters_and_good_ones_flow(tmp_path: Path) -> None:
    lines = events_bytes(10)
    lines[3] = b'{"event_id": "e3", "timestamp": "2025-11-28T10:00:00", "provider": "openai", "model": "gpt-4o"}'
    lines[7] = orjson.dumps(event(7, input_tokens=-1))
    src = write_jsonl(tmp_path / "a.jsonl", lines)
    lake = tmp_path / "lake"
    r = spendlake("ingest", "--source", str(src), "--lake", str(lake), check=True)
    assert lake_rows(lake, "select count(*) from ev") == [(8,)]
    dead = dead_rows(lake, "select source_topic, source_offset, field, error from dl order by 2")
    assert dead == [
        ("file:a.jsonl", 4, "timestamp",
         "timestamp: got '2025-11-28T10:00:00', expected an RFC 3339 time WITH an offset such as 'Z' or '+02:00'"),
        ("file:a.jsonl", 8, "input_tokens", "input_tokens: got -1, expected an integer from 0 to 100,000,000"),
    ]  # fmt: skip
    assert b"2 dead letters" in r.stderr


def test_unknown_model_is_unpriced_never_zero(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "a.jsonl", [orjson.dumps(event(0, model="no-such-model-9000")),
                                             orjson.dumps(event(1, model="no-such-model-9000", cost_usd=0.5))])  # fmt: skip
    lake = tmp_path / "lake"
    spendlake("ingest", "--source", str(src), "--lake", str(lake), check=True)
    rows = lake_rows(lake, "select cost_usd, cost_source, reported_cost_usd from ev order by event_id")
    assert rows == [(None, "unpriced", None), (0.5, "reported", 0.5)]


def test_litellm_payload_is_ingested_without_prompt_text(tmp_path: Path) -> None:
    doc = orjson.loads(litellm_logging_example_path().read_bytes())
    src = write_jsonl(tmp_path / "litellm.jsonl", [orjson.dumps(doc)])
    lake = tmp_path / "lake"
    spendlake("ingest", "--source", str(src), "--lake", str(lake), check=True)
    rows = lake_rows(lake, "select event_id, provider, model, input_tokens, output_tokens, input_format, cost_source from ev")
    assert rows == [(doc["id"], "openai", "gpt-4o", doc["prompt_tokens"], doc["completion_tokens"], "litellm", "catalog")]
    for f in lake.rglob("*.parquet"):
        assert b"Hello, world!" not in f.read_bytes()


# --- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize("verb", [[], ["ingest"], ["price"]])
def test_every_command_has_help(verb: list[str]) -> None:
    r = spendlake(*verb, "--help", check=True)
    assert b"usage: spendlake" in r.stdout


def test_bad_config_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "spendlake.toml"
    cfg.write_text(
        '[kafka]\nbootstrap_servers = "nohostport"\ntopik = "x"\n'
        '[pricing]\npolicy = "cheapest"\n[ingest]\nbatch_max_records = -3\n'
    )
    r = spendlake("ingest", "--config", str(cfg), "--source", "-", input=b"")
    assert r.returncode == 2
    err = r.stderr.decode()
    assert "4 problems" in err
    for needle in ("bootstrap_servers: got 'nohostport'", "topik: unknown key", "policy: got 'cheapest'",
                   "batch_max_records: got -3"):  # fmt: skip
        assert needle in err


def test_bad_usage_exits_2() -> None:
    r = spendlake("ingest", "--batch-records", "lots")
    assert r.returncode == 2 and b"invalid int value: 'lots'" in r.stderr


def test_price_command_adds_costs_and_reports_bad_lines() -> None:
    lines = [orjson.dumps(event(0, cost_usd=0.01)), b"{broken", orjson.dumps(event(1, model="mystery-model"))]
    r = spendlake("price", input=b"\n".join(lines) + b"\n")
    assert r.returncode == 1
    assert b"line 2: (record): got b'{broken'" in r.stderr
    out = [orjson.loads(x) for x in r.stdout.splitlines()]
    assert len(out) == 2
    first, second = out
    assert first["event_id"] == "evt-000000000" and first["reported_cost_usd"] == 0.01
    assert first["cost_source"] == "catalog" and first["cost_usd"] > 0
    parts = sum(first[k] for k in ("cost_input_usd", "cost_cached_input_usd", "cost_cache_write_usd",
                                   "cost_output_usd", "cost_reasoning_usd"))  # fmt: skip
    assert abs(parts - first["cost_usd"]) < 1e-12
    assert second["cost_usd"] is None and second["cost_source"] == "unpriced"
