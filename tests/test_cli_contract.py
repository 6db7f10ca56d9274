"""Contract 4 on bad paths: a command that only reads never creates a lake, and a path that is not
a lake is bad usage (exit 2) in one line that names it and where it came from.

Each case runs the real command in a scratch directory and compares every path under it before
and after: nothing may appear.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

# Every command that only reads a lake, as (name, args before the lake flag).
READERS = {
    "query": ["query", "SELECT 1"],
    "budgets": ["budgets"],
    "alerts": ["alerts"],
    "report": ["report", "--period", "daily"],
    "rollup": ["rollup"],
    "reprice": ["reprice", "--since", "2026-11-01"],
    "retention": ["retention", "--before", "2026-11-01"],
    "pricing unpriced": ["pricing", "unpriced"],
    "price": ["price", "--catalog", "auto"],
}


def run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "spendlake", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, input="", env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})  # fmt: skip


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize("name", READERS)
@pytest.mark.parametrize("kind", ["missing", "file", "empty directory"])
def test_a_reader_on_a_bad_lake_path_is_bad_usage_and_creates_nothing(tmp_path: Path, name: str, kind: str) -> None:
    target = tmp_path / "no-lake-here"
    if kind == "file":
        target.write_text("not a lake\n")
    elif kind == "empty directory":
        target.mkdir()
    before = tree(tmp_path)
    r = run(tmp_path, *READERS[name], "--lake", str(target))
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    line = one_line(r.stderr)
    assert f"--lake: {target}" in line, line
    assert {"missing": "does not exist", "file": "is a file", "empty directory": "not a spendlake lake"}[kind] in line
    assert tree(tmp_path) == before, f"{name} created {tree(tmp_path) - before}"


@pytest.mark.parametrize("name", [n for n in READERS if n != "price"])  # price reads a lake only with --lake
def test_the_default_lake_missing_says_where_it_looked_and_how_to_choose(tmp_path: Path, name: str) -> None:
    r = run(tmp_path, *READERS[name])
    assert r.returncode == 2, (r.returncode, r.stderr)
    line = one_line(r.stderr)
    assert "no lake at ./lake" in line and str(tmp_path / "lake") in line, line
    assert "--lake" in line and "--config" in line, line
    assert tree(tmp_path) == set()


def test_a_lake_named_by_the_config_or_environment_says_so(tmp_path: Path) -> None:
    cfg = tmp_path / "spendlake.toml"
    cfg.write_text(f'[lake]\npath = "{tmp_path / "elsewhere"}"\n')
    r = run(tmp_path, "query", "SELECT 1", "--config", str(cfg))
    assert r.returncode == 2
    assert f"[lake] path in {cfg}: {tmp_path / 'elsewhere'} does not exist" in one_line(r.stderr)
    r = run(tmp_path, "budgets", env={"SPENDLAKE_LAKE_PATH": str(tmp_path / "env-lake")})
    assert r.returncode == 2
    assert f"SPENDLAKE_LAKE_PATH: {tmp_path / 'env-lake'} does not exist" in one_line(r.stderr)
    assert tree(tmp_path) == {"spendlake.toml"}


def test_ingest_from_a_missing_source_is_bad_usage_and_opens_no_lake(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    r = run(tmp_path, "ingest", "--source", str(tmp_path / "nonexistent.jsonl"), "--lake", str(lake))
    assert r.returncode == 2, r.stderr
    assert f"--source: no file matches '{tmp_path / 'nonexistent.jsonl'}'" in one_line(r.stderr)
    assert not lake.exists()
    # one good source and one missing one: still nothing read, nothing created
    good = tmp_path / "good.jsonl"
    good.write_text('{"event_id":"e1","timestamp":1764331200000,"provider":"openai","model":"gpt-4o",'
                    '"input_tokens":10,"output_tokens":2}\n')  # fmt: skip
    r = run(tmp_path, "ingest", "--source", str(good), "--source", str(tmp_path / "missing-*.jsonl"), "--lake", str(lake))
    assert r.returncode == 2 and "missing-*.jsonl" in one_line(r.stderr)
    assert not lake.exists()


def test_a_missing_config_file_is_bad_usage_for_every_command(tmp_path: Path) -> None:
    for args in (["ingest"], ["serve"], ["query", "SELECT 1"], ["budgets"], ["alerts"], ["report"], ["rollup"],
                 ["price"], ["pricing", "unpriced"], ["reprice", "--since", "2026-11-01"]):  # fmt: skip
        r = run(tmp_path, *args, "--config", str(tmp_path / "nope.toml"))
        assert r.returncode == 2, (args, r.stderr)
        assert f"file not found: {tmp_path / 'nope.toml'}" in one_line(r.stderr), (args, r.stderr)
    assert tree(tmp_path) == set()


def test_readers_work_on_a_real_lake_and_leave_it_a_lake(tmp_path: Path) -> None:
    """The check is not a wall: a lake that ingest made is read by every reader (exit 0)."""
    lake = tmp_path / "lake"
    src = tmp_path / "e.jsonl"
    src.write_text('{"event_id":"e1","timestamp":1764331200000,"provider":"openai","model":"gpt-4o",'
                   '"input_tokens":1000,"output_tokens":200,"virtual_key":"vk-a"}\n')  # fmt: skip
    r = run(tmp_path, "ingest", "--source", str(src), "--lake", str(lake), "--quiet")
    assert r.returncode == 0, r.stderr
    for name, args in READERS.items():
        extra = ["--format", "md"] if name == "report" else []
        r = run(tmp_path, *args, *extra, "--lake", str(lake))
        assert r.returncode == 0, (name, r.stderr)


def test_a_file_url_is_the_local_lake_for_every_command(tmp_path: Path) -> None:
    """`file:///path` names the local lake /path wherever a lake path is taken (a reader used to
    look for a directory literally named `file:`)."""
    lake = tmp_path / "lake"
    src = tmp_path / "e.jsonl"
    src.write_text('{"event_id":"e1","timestamp":1764331200000,"provider":"openai","model":"gpt-4o",'
                   '"input_tokens":1000,"output_tokens":200,"virtual_key":"vk-a"}\n')  # fmt: skip
    r = run(tmp_path, "ingest", "--source", str(src), "--lake", f"file://{lake}", "--quiet")
    assert r.returncode == 0, r.stderr
    assert (lake / "_manifests").is_dir()
    r = run(tmp_path, "query", "SELECT count(*) FROM request_log", "--format", "csv",
            env={"SPENDLAKE_LAKE_PATH": f"file://{lake}"})  # fmt: skip
    assert r.returncode == 0 and r.stdout.split() == ["count_star()", "1"], (r.stdout, r.stderr)
    for name, args in READERS.items():  # retention last: it drops the event's day
        extra = ["--format", "md"] if name == "report" else []
        r = run(tmp_path, *args, *extra, "--lake", f"file://{lake}")
        assert r.returncode == 0, (name, r.stderr)
    assert not (tmp_path / "file:").exists()


@pytest.mark.parametrize("name", [*READERS, "ingest"])
def test_a_store_spendlake_does_not_write_is_one_line_naming_what_it_does(tmp_path: Path, name: str) -> None:
    args = ["ingest", "--source", "-"] if name == "ingest" else READERS[name]
    r = run(tmp_path, *args, "--lake", "gs://bucket/lake")
    assert r.returncode == 2, (r.returncode, r.stderr)
    line = one_line(r.stderr)
    assert "[lake] path: got 'gs://bucket/lake'" in line and "s3://BUCKET/PREFIX" in line, line
    assert tree(tmp_path) == set()
