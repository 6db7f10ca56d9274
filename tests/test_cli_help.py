"""What the command prints besides results: `--help` everywhere (contract 4), and the ingest
progress line.

Every command and subcommand is found by walking the real parser (a new verb is covered without
touching this file); each one's `--help` must exit 0 and print no "%%". argparse %-formats `help=`
strings but prints a `description=` as written, so a "%%" meant as "%" survives there.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from spendlake.cli import build_parser, main


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The argv prefix of every command and subcommand, the top level included."""
    out = [path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += commands(sub, (*path, name))
    return out


COMMANDS = commands(build_parser())


def test_the_walk_finds_every_verb() -> None:
    assert {" ".join(c) for c in COMMANDS} >= {
        "", "ingest", "price", "pricing", "pricing import", "pricing unpriced", "reprice", "serve", "rollup",
        "retention", "budgets", "query", "alerts", "alerts test", "report", "demo",
    }  # fmt: skip


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda c: " ".join(c) or "spendlake")
def test_help_exits_0_without_doubled_percent(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    out, err = capsys.readouterr()
    assert exit_.value.code == 0, err
    assert out.startswith("usage: spendlake"), out
    assert "%%" not in out, f"spendlake {' '.join(argv)} --help prints '%%':\n{out}"
    assert "%(" not in out, out  # an unexpanded %(default)s or %(prog)s


def test_budgets_help_through_the_real_command() -> None:
    r = subprocess.run([sys.executable, "-m", "spendlake", "budgets", "--help"], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "%%" not in r.stdout
    assert "limit, %, period start" in r.stdout


# --- the ingest progress line: a rate over working time, not over idling ---------------------


class FakePipeline:
    """What Progress reads of a Pipeline: the records buffered and the landed counts."""

    def __init__(self) -> None:
        from ingest.pipeline import Stats

        self.stats = Stats()
        self.held = 0

    def pending(self) -> int:
        return self.held


def ticks(start: int, stop: int) -> list[float]:
    """Sample times every 0.2 s (one Kafka poll), from start/5 to stop/5 seconds, exactly."""
    return [i / 5 for i in range(start, stop + 1)]


def test_progress_rate_counts_working_time_not_idle_polls(capsys: pytest.CaptureFixture[str]) -> None:
    from spendlake.progress import Progress

    p, progress = FakePipeline(), Progress(every_s=5.0, clock=lambda: 0.0)
    for t in ticks(1, 75):  # 15 s of polls that return nothing
        progress(p, t)
    assert progress.working_s == 0
    p.held = 11_133  # the poll ending at 15.2 s brings the records
    for t in ticks(76, 80):  # buffered until the batch is cut by age
        progress(p, t)
    p.held = 0  # 16.2 s: cut and handed to the writer
    for t in ticks(81, 84):  # being written: nothing buffered, nothing landed yet
        progress(p, t)
    p.stats.batches, p.stats.events = 1, 11_133  # seen landed at 17.0 s
    for t in ticks(85, 150):  # idle again until 30 s
        progress(p, t)
    # working: from the call that first saw the records (15.2 s) to the one that saw them land (17.0 s)
    assert progress.working_s == pytest.approx(1.8)
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("spendlake: 11,133 events in 1 batches (6,185/s over 1.8 s of work)"), lines
    assert len(lines) == 6  # one line every 5 s


def test_progress_rate_with_overlapping_batches_counts_time_once() -> None:
    from spendlake.progress import Progress

    p, progress = FakePipeline(), Progress(every_s=5.0, clock=lambda: 0.0)
    progress(p, 1.0)  # idle
    p.held = 500
    progress(p, 1.2)  # records arrived during this poll: work starts here
    p.held = 0
    progress(p, 1.4)  # batch 1 handed to the writer
    p.held = 700
    progress(p, 1.6)  # more records while batch 1 is written
    p.held, p.stats.batches, p.stats.events = 0, 1, 500
    progress(p, 1.8)  # batch 1 landed, batch 2 handed to the writer
    progress(p, 2.0)  # batch 2 still being written
    p.stats.batches, p.stats.events = 2, 1_200
    progress(p, 2.2)  # batch 2 landed
    progress(p, 9.0)  # idle
    assert progress.working_s == pytest.approx(1.0)  # 1.2 s → 2.2 s
    assert progress.rate(p.stats.events) == pytest.approx(1_200)


def test_progress_for_the_file_source_counts_all_time_between_flushes() -> None:
    from spendlake.progress import Progress

    # the file source calls only after each flush: every interval ends with a landing
    p, progress = FakePipeline(), Progress(every_s=5.0, clock=lambda: 100.0)
    p.stats.batches, p.stats.events = 1, 50_000
    progress(p, 102.0)
    p.stats.batches, p.stats.events = 2, 80_000
    progress(p, 103.0)
    assert progress.working_s == pytest.approx(3.0)
    assert progress.rate(p.stats.events) == pytest.approx(80_000 / 3)
