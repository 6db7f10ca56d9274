"""`spendlake report`: one spend report on demand, as Markdown, CSV or a self-contained HTML page.

It reads the published rollups, so it works while `spendlake serve` runs (and brings them up to
date itself when nobody holds the state). Without ``--out`` the report goes to stdout; with it the
file is replaced atomically (a reader never sees half a report) and one line says where it went.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from pathlib import Path

from alerting.config import REPORT_PERIODS
from spendlake import settings as settings_mod

FORMATS = ("md", "csv", "html")


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"got {text!r}, expected a whole number >= 1")
    return n


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--period", choices=REPORT_PERIODS, default="weekly",
                   help="daily (yesterday), weekly (last Monday-Sunday) or monthly (last calendar month), in the "
                   "[lake] timezone; default weekly")  # fmt: skip
    p.add_argument("--format", choices=FORMATS, default="md", help="md (default), csv or html")
    p.add_argument("--out", metavar="FILE", help="write the report here (atomically) instead of stdout")
    p.add_argument("--config", help="spendlake.toml (the [lake] timezone and the budget hierarchy)")
    p.add_argument("--lake", metavar="DIR", help="lake directory (default: the config's, else ./lake)")
    p.add_argument("--at", metavar="RFC3339", help="report as of this time (default now), e.g. 2026-11-30T09:00:00Z")
    p.add_argument("--to-date", action="store_true",
                   help="the current period so far (as of --at, default now) instead of the last complete "
                   "one")  # fmt: skip
    p.add_argument("--top", type=_positive, default=10, metavar="N",
                   help="how many virtual keys and models to list (default 10)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    # imported here: the parser is built for every verb, and these pull in DuckDB and pyarrow
    from alerting.report import build_report
    from alerting.report_render import to_csv, to_html, to_markdown
    from spendlake.budgets_cmd import _at

    cfg = settings_mod.load(args.config).with_overrides({("lake", "path"): args.lake})
    at = _at(args.at) if args.at is not None else None
    lake = Path(cfg.get("lake", "path"))
    if not (lake / "events").is_dir():
        raise settings_mod.ConfigError([f"--lake: {lake} is not a spendlake lake (no events/ folder)"], "command line")
    report = build_report(lake, cfg, args.period, at=at, to_date=args.to_date, top=args.top)
    text = {"md": to_markdown, "csv": to_csv, "html": to_html}[args.format](report)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    write_atomically(Path(args.out), text)
    sys.stdout.write(f"spendlake: wrote the {args.period} report ({args.format}) to {args.out}\n")
    return 0


def write_atomically(path: Path, text: str) -> None:
    """Temp file in the same folder, fsync, rename: the file is the old one or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"  # created like any file (umask), not 0600
    try:
        with open(tmp, "x", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
