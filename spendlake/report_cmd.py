"""`spendlake report` (being built)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="spendlake.toml")


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("spendlake report is being built")
