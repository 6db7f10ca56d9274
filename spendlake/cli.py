"""The `spendlake` command (contract 4). Exit codes: 0 success, 2 bad usage or config, 1 failure."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from ingest.clients import KafkaFailure
from ingest.errors import PipelineFailure, SpendlakeError
from ingest.objectstore import parse_lake
from spendlake import settings as settings_mod
from spendlake.progress import Progress, summary

log = logging.getLogger("spendlake")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> Parser:
    p = Parser(prog="spendlake", description="LLM cost analytics: Kafka usage events → priced Parquet lake → budgets, metrics, alerts.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="verb", required=True, parser_class=Parser, metavar="COMMAND")

    ing = sub.add_parser("ingest", help="consume Kafka (or read JSONL files) into the lake, exactly once",
                         description="Consume the usage topic in a consumer group, or read JSONL files/stdin with --source, "
                         "and land priced events in the Parquet lake exactly once. Bad records become dead letters.")
    ing.add_argument("--config", help="spendlake.toml (flags override it)")
    ing.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="Kafka brokers, comma-separated")
    ing.add_argument("--topic", help="topic to consume (default llm-usage)")
    ing.add_argument("--group", help="consumer group id (default spendlake)")
    ing.add_argument("--lake", help="lake directory (default ./lake)")
    ing.add_argument("--source", action="append", metavar="PATH|-",
                     help="read JSONL files (path, directory, glob, .gz) or - for stdin instead of Kafka; repeatable")
    ing.add_argument("--exit-when-idle", type=float, metavar="SECONDS",
                     help="stop once caught up for this many seconds: every assigned partition read to its end, "
                     "as the broker says (a broker outage is not idleness); with --source, no new line")
    ing.add_argument("--catalog", help="price catalog: 'auto' (default: the lake's imported catalog over the built-in one), "
                     "'builtin', or a LiteLLM-format JSON file")
    ing.add_argument("--batch-records", type=int, help="cut a batch at this many records (default 50000)")
    ing.add_argument("--batch-bytes", type=int, help="cut a batch at this many bytes (default 32 MiB)")
    ing.add_argument("--batch-age", type=float, metavar="SECONDS", help="cut a batch at this age (default 1)")
    ing.add_argument("--dead-letter-topic", help="also produce dead letters to this Kafka topic")
    ing.add_argument("--kafka-client", choices=("auto", "kafka-python", "confluent"),
                     help="Kafka client library ([kafka] client; default auto: confluent-kafka when installed, "
                     "pip install 'spendlake[fast]')")
    ing.add_argument("--quiet", action="store_true", help="no progress lines")

    pr = sub.add_parser("price", help="price JSONL events from stdin to stdout",
                        description="Read usage events as JSONL on stdin; write each back with cost_usd, cost_source, "
                        "the cost parts and price_id. Bad lines are reported on stderr (exit code 1 at the end).")
    pr.add_argument("--catalog", help="'builtin' (default), 'auto' (with --lake: the lake's imported catalog) "
                    "or a LiteLLM-format JSON price file")
    pr.add_argument("--config", help="spendlake.toml: [pricing] catalog, policy and overrides")
    pr.add_argument("--lake", help="lake whose imported catalog 'auto' means")
    pr.add_argument("--policy", choices=settings_mod.POLICIES,
                    help="which cost wins when the event carries its own cost_usd (default catalog_first)")

    pg = sub.add_parser("pricing", help="manage the price catalog: import a LiteLLM file, list unpriced models",
                        description="Import a LiteLLM-format price list into the lake's local catalog, or list the "
                        "models that have usage but no price.")
    pgs = pg.add_subparsers(dest="pricing_verb", required=True, parser_class=Parser, metavar="ACTION")
    imp = pgs.add_parser("import", help="load a LiteLLM model_prices_and_context_window.json (file or URL)",
                         description="Validate a LiteLLM-format price file (every bad entry is listed; the good ones "
                         "load) and make it the lake's local catalog, used by ingest and serve with catalog = 'auto'.")
    imp.add_argument("source", metavar="FILE|URL")
    imp.add_argument("--lake", help="lake directory (default: [lake] path, ./lake)")
    imp.add_argument("--config", help="spendlake.toml")
    unp = pgs.add_parser("unpriced", help="models with usage but no price",
                         description="List provider/model pairs whose events have no catalog price "
                         "(cost NULL, or the emitter's reported cost), with counts and when they were last seen.")
    unp.add_argument("--lake", help="lake directory (default: [lake] path, ./lake)")
    unp.add_argument("--config", help="spendlake.toml")
    unp.add_argument("--since", type=_date, metavar="YYYY-MM-DD", help="only events on or after this day (UTC)")
    unp.add_argument("--format", choices=("table", "json"), default="table")

    rp = sub.add_parser("reprice", help="recompute stored events' costs after a catalog or override change",
                        description="Re-price the lake's events of the given days with the current catalog and "
                        "overrides. Each file is replaced atomically; files whose costs do not change are left "
                        "alone, so running it twice changes nothing the second time.")
    rp.add_argument("--lake", help="lake directory (default: [lake] path, ./lake)")
    rp.add_argument("--since", type=_date, required=True, metavar="YYYY-MM-DD", help="first event day (UTC)")
    rp.add_argument("--until", type=_date, metavar="YYYY-MM-DD", help="last event day, inclusive (default: no end)")
    rp.add_argument("--config", help="spendlake.toml: [pricing] catalog, policy and overrides")
    rp.add_argument("--catalog", help="'auto' (default), 'builtin' or a LiteLLM-format JSON file")
    rp.add_argument("--quiet", action="store_true", help="no progress bar")

    sv = sub.add_parser("serve", help="the long-running service: consume, roll up, evaluate budgets, serve /metrics",
                        description="Consume the usage topic into the lake, roll up after each flush (and every "
                        "[alerts] evaluation_interval), keep budget usage, and serve Prometheus metrics on [metrics] "
                        "listen. With an [intake] section it also takes usage over HTTP: OTLP/HTTP traces on POST "
                        "/v1/traces and events on POST /v1/events, produced to Kafka before the 200. Without a "
                        "[kafka] section (or --bootstrap-servers) it runs embedded: no broker, the intake spools to "
                        "local disk and serve lands the spool. SIGTERM/SIGINT flush, commit and exit cleanly.")
    sv.add_argument("--config", help="spendlake.toml (flags override it)")
    sv.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="Kafka brokers, comma-separated")
    sv.add_argument("--topic", help="topic to consume (default llm-usage)")
    sv.add_argument("--group", help="consumer group id (default spendlake)")
    sv.add_argument("--lake", help="lake directory (default ./lake)")
    sv.add_argument("--listen", metavar="HOST:PORT", help="/metrics address (default 127.0.0.1:9464; port 0 = any free port)")
    sv.add_argument("--catalog", help="price catalog: 'auto' (default), 'builtin' or a LiteLLM-format JSON file")
    sv.add_argument("--exit-when-idle", type=float, metavar="SECONDS",
                    help="stop once caught up with every partition (or the spool) for this many seconds")
    sv.add_argument("--kafka-client", choices=("auto", "kafka-python", "confluent"),
                    help="Kafka client library ([kafka] client; default auto: confluent-kafka when installed)")
    sv.add_argument("--intake-listen", metavar="HOST:PORT",
                    help="serve the HTTP intake (OTLP /v1/traces, /v1/events) here (default: [intake] listen when "
                    "the config has an [intake] section, else off)")

    rt = sub.add_parser("retention", help="drop the raw events and dead letters of whole days before a cutoff",
                        description="Delete the lake's raw files of every UTC day before --before (events by event "
                        "day, dead letters by the day they failed), manifests first, so no reader follows a name "
                        "whose file is gone; on a local lake or an s3:// one. Rollups, /metrics, budgets and "
                        "reports keep those days; the raw rows (request_log, reprice) are gone for good.")
    rt.add_argument("--before", type=_date, required=True, metavar="YYYY-MM-DD", help="keep this day and later")
    rt.add_argument("--lake", help="lake directory or s3:// URL (default: [lake] path, ./lake)")
    rt.add_argument("--config", help="spendlake.toml ([lake] path, endpoint_url)")
    rt.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing")

    ru = sub.add_parser("rollup", help="bring the DuckDB rollups and published Parquet rollups up to date, once",
                        description="Roll up the lake files not rolled up yet (serve does this continuously) and "
                        "publish the rollups under <lake>/_rollups/. With --config, budget usage too.")
    ru.add_argument("--lake", help="lake directory (default: [lake] path, ./lake)")
    ru.add_argument("--config", help="spendlake.toml (budgets)")

    bu = sub.add_parser("budgets", help="each budget's usage, limit, period and reset time, as bars or JSON",
                        description="Every budget of the config (customers, teams, virtual keys): usage in the "
                        "current period including descendants, limit, %, period start, reset time, burn rate and "
                        "projected exhaustion. Works while serve runs (it reads what serve publishes).")
    bu.add_argument("--config", help="spendlake.toml with [[customers]], [[teams]], [[virtual_keys]]")
    bu.add_argument("--lake", help="lake directory (default: [lake] path, ./lake)")
    bu.add_argument("--at", metavar="TIME", help="evaluate at this RFC 3339 time instead of now")
    bu.add_argument("--format", choices=("table", "json"), default="table")

    qu = sub.add_parser("query", help="read-only SQL over the lake, the rollups and the sql/ views",
                        description="Run one read-only SELECT over the lake (view `events`, deduplicated `request_log`), "
                        "the rollups and the sql/ views. Writes, file access outside the lake, extensions and ATTACH "
                        "are refused. Works while serve runs.")
    qu.add_argument("sql", metavar="SQL")
    qu.add_argument("--lake", help="lake directory (default: [lake] path, ./lake)")
    qu.add_argument("--config", help="spendlake.toml")
    qu.add_argument("--format", choices=("table", "csv", "json"), default="table")

    al = sub.add_parser("alerts", help="alert history and delivery state; send a test message",
                        description="Without an action: the alerts fired and each delivery's state (delivered, "
                        "pending with its next attempt, failed with the reason). Works while serve runs (it reads "
                        "what serve publishes). `alerts test --channel NAME` sends a test message now.")
    al.add_argument("--config", help="spendlake.toml ([[channels]])")
    al.add_argument("--lake", help="lake directory (default: [lake] path, ./lake)")
    al.add_argument("--format", choices=("table", "json"), default="table")
    al.add_argument("--limit", type=int, default=50, help="newest N alerts (default 50)")
    als = al.add_subparsers(dest="alerts_verb", parser_class=Parser, metavar="ACTION")
    alt = als.add_parser("test", help="send a test message to one channel now",
                         description="Send a test alert to one configured channel, directly (not via the outbox), "
                         "and say what the receiver answered.")
    alt.add_argument("--channel", required=True, help="the [[channels]] name")
    alt.add_argument("--config", default=argparse.SUPPRESS, help="spendlake.toml ([[channels]])")

    rep = sub.add_parser("report", help="a spend report (daily, weekly, monthly) as Markdown, CSV or HTML",
                         description="Spend per customer and team with the change against the previous period, top "
                         "virtual keys and models, budget bars and unpriced usage. Works while serve runs.")
    from spendlake import report_cmd

    report_cmd.add_arguments(rep)

    demo = sub.add_parser("demo", help="a month of traffic through Kafka into a lake, then an agent running away live, and the alerts",
                          description="Start a local Kafka broker, land 30 days of synthetic LLM usage exactly once in a "
                          "Parquet lake, start `spendlake serve` with budgets that fit it and a local Slack stand-in, then let "
                          "one agent run away live: the alerts are printed as they arrive. Ends with the budget bars, an HTML "
                          "report and the next commands.")
    demo.add_argument("--events", type=int, default=50_000, help="how many usage events (default 50000)")
    demo.add_argument("--lake", default="./demo-lake", help="lake directory (default ./demo-lake)")
    demo.add_argument("--no-kafka", action="store_true", help="no broker: the history through the file source, then serve embedded with the live "
                      "burst sent over its HTTP intake")
    demo.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="use this running broker instead of starting one")
    demo.add_argument("--keep-broker", action="store_true", help="leave the demo broker running afterwards")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="spendlake: %(message)s",
        stream=sys.stderr,
    )
    # The client libraries' own chatter (every reconnect attempt, kafka-python's "blocking the event
    # loop" warnings) stays out of the user's way; what matters is reported by spendlake in one line
    # (an unreachable broker, refused credentials, a failed commit). -v shows it all.
    logging.getLogger("kafka").setLevel(logging.INFO if args.verbose else logging.CRITICAL)
    logging.getLogger("spendlake.rdkafka").setLevel(logging.DEBUG if args.verbose else logging.CRITICAL)
    logging.getLogger("botocore").setLevel(logging.DEBUG if args.verbose else logging.WARNING)  # "Found credentials in ..."
    logging.getLogger("boto3").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING if not args.verbose else logging.INFO)
    try:
        mirror = _mirror_remote_lake(args)
        if mirror is None and _reads_lake(args):
            cfg = settings_mod.load(args.config).with_overrides({("lake", "path"): args.lake})
            require_lake(cfg.get("lake", "path"), _lake_origin(args, cfg))
        started = time.time()
        code = _run_verb(args)
        if mirror is not None:
            _push_remote_lake(args, mirror, started)
        return code
    except settings_mod.ConfigError as exc:
        sys.stderr.write(f"spendlake: {exc}\n")
        return EXIT_USAGE
    except KafkaFailure as exc:  # refused credentials, an untrusted certificate: no retry helps
        sys.stderr.write(f"spendlake: {exc}\n")
        return EXIT_USAGE
    except SpendlakeError as exc:
        sys.stderr.write(f"spendlake: {exc}\n")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE


def _mirror_remote_lake(args: argparse.Namespace) -> Any:
    """For a command other than ingest, serve and demo on an `s3://` lake: pull its local mirror
    and point the command at it (spendlake/lakes.py). None for a local lake."""
    if args.verb in ("ingest", "serve", "demo", "retention") or not hasattr(args, "lake"):
        return None
    if args.verb == "price" and args.lake is None and args.config is None:
        return None
    if args.verb == "alerts" and args.alerts_verb == "test":
        return None
    from spendlake import lakes

    cfg = settings_mod.load(args.config).with_overrides({("lake", "path"): args.lake})
    if lakes.store_of(cfg) is None:
        return None
    mirror = lakes.pull(cfg, require=_reads_lake(args))
    args.lake = str(mirror.root)
    return mirror


def _push_remote_lake(args: argparse.Namespace, mirror: Any, started: float) -> None:
    """What a command wrote into the mirror goes back to the store: published rollups, an
    imported catalog, a reprice's replaced files (recorded in _changes/ for other mirrors)."""
    from spendlake import lakes

    if args.verb == "reprice":
        mirror.record_replaced(lakes.newest_reprice_journal(mirror.root, started))
    if args.verb in ("reprice", "rollup", "pricing"):  # readers (query, budgets, report) publish nothing
        mirror.push()


def _run_verb(args: argparse.Namespace) -> int:
    """The verb's command (errors are reported by main, in one line)."""
    if args.verb == "ingest":
        return cmd_ingest(args)
    if args.verb == "price":
        from spendlake.price_cmd import run as run_price

        cfg = settings_mod.load(args.config).with_overrides(
            {("pricing", "catalog"): args.catalog or ("builtin" if args.lake is None and args.config is None else None),
             ("pricing", "policy"): args.policy, ("lake", "path"): args.lake}  # fmt: skip
        )
        catalog, policy, overrides = _pricing(cfg)
        return run_price(catalog, policy, overrides, sys.stdin.buffer, sys.stdout.buffer)
    if args.verb == "pricing":
        from spendlake import pricing_cmd

        cfg = settings_mod.load(args.config).with_overrides({("lake", "path"): args.lake})
        if args.pricing_verb == "import":
            return pricing_cmd.cmd_import(args.source, cfg.get("lake", "path"))
        return pricing_cmd.cmd_unpriced(cfg.get("lake", "path"), args.since, args.format)
    if args.verb == "reprice":
        return cmd_reprice(args)
    if args.verb == "serve":
        return cmd_serve(args)
    if args.verb == "rollup":
        return cmd_rollup(args)
    if args.verb == "retention":
        return cmd_retention(args)
    if args.verb == "budgets":
        from spendlake.budgets_cmd import run as run_budgets

        cfg = settings_mod.load(args.config).with_overrides({("lake", "path"): args.lake})
        return run_budgets(cfg, args.at, args.format, sys.stdout)
    if args.verb == "query":
        return cmd_query(args)
    if args.verb == "alerts":
        from spendlake import alerts_cmd

        return alerts_cmd.run(args)
    if args.verb == "report":
        from spendlake import report_cmd

        return report_cmd.run(args)
    if args.verb == "demo":
        from spendlake.demo import run as run_demo

        return run_demo(args.events, args.lake, args.no_kafka, args.bootstrap_servers, args.keep_broker)
    raise AssertionError(f"unhandled verb {args.verb}")


# Every lake has these after its first write (ingest, serve, pricing import create them); a command
# that only reads needs one of them and never creates a lake (contract 4).
LAKE_ENTRIES = ("events", "_manifests", "dead_letter", "_state", "_rollups", "_alerts", "_spool", "_catalog")


def _reads_lake(args: argparse.Namespace) -> bool:
    if args.verb == "pricing":
        return bool(args.pricing_verb == "unpriced")
    if args.verb == "alerts":
        return args.alerts_verb != "test"
    if args.verb == "price":  # reads a lake only to find its imported catalog
        return args.lake is not None
    return args.verb in ("query", "budgets", "report", "rollup", "reprice", "retention")


def _lake_origin(args: argparse.Namespace, cfg: settings_mod.Settings) -> str:
    """Who named the lake path: the flag, the environment, the config file, or the default."""
    if getattr(args, "lake", None) is not None:
        return "--lake"
    if "SPENDLAKE_LAKE_PATH" in os.environ:
        return "SPENDLAKE_LAKE_PATH"
    if isinstance(cfg.raw.get("lake"), dict) and "path" in cfg.raw["lake"]:
        return f"[lake] path in {cfg.source}"
    return ""


def require_lake(path: str, origin: str) -> None:
    """A usage error (exit 2), in one line naming the path and where it came from, unless ``path``
    holds a lake. Creates nothing."""
    try:
        if not isinstance(parse_lake(path), str):
            return  # an object-store lake is checked where it is opened (spendlake/lakes.py pull, retention)
    except ValueError as exc:  # a scheme spendlake does not write (gs://, az://, ...)
        raise settings_mod.ConfigError([str(exc)], "command line") from None
    root = Path(path)
    if origin:
        where = f"{origin}: {path}"
        hint = ""
    else:
        where = f"no lake at {path} (the default, {root.resolve()})"
        hint = "; choose one with --lake PATH, or --config FILE whose [lake] path names it"
    if not root.exists():
        problem = f"{where} does not exist" if origin else where
    elif not root.is_dir():
        problem = f"{where} is a file, not a lake directory"
    elif not any((root / entry).exists() for entry in LAKE_ENTRIES):
        problem = (f"{where} is not a spendlake lake (no events/ or _manifests/ in it)" if origin
                   else f"{where}: the directory holds no lake")  # fmt: skip
        hint = hint or "; `spendlake ingest` or `spendlake serve` create one"
    else:
        return
    raise settings_mod.ConfigError([problem + hint], "command line")


def cmd_ingest(args: argparse.Namespace) -> int:
    from ingest.pipeline import Pipeline
    cfg = settings_mod.load(args.config).with_overrides(
        {
            ("kafka", "bootstrap_servers"): args.bootstrap_servers,
            ("kafka", "topic"): args.topic,
            ("kafka", "group_id"): args.group,
            ("kafka", "dead_letter_topic"): args.dead_letter_topic,
            ("kafka", "client"): args.kafka_client,
            ("lake", "path"): args.lake,
            ("pricing", "catalog"): args.catalog,
            ("ingest", "batch_max_records"): args.batch_records,
            ("ingest", "batch_max_bytes"): args.batch_bytes,
            ("ingest", "batch_max_age"): args.batch_age,
        }
    )
    problems = settings_mod.check(cfg.values)
    if problems:
        raise settings_mod.ConfigError(problems, "command line")
    if args.source:  # every source must exist before the lake is opened (and so created)
        from ingest.source import SourceNotFound, expand

        try:
            for spec in args.source:
                expand(spec)
        except SourceNotFound as exc:
            raise settings_mod.ConfigError([str(exc)], "command line") from None
    catalog, policy, overrides = _pricing(cfg)
    limits = _limits(cfg)
    from spendlake import lakes

    lake = lakes.open_writer(cfg)
    # Buffers hold ~10^5 live tuples; CPython's generational GC would rescan them thousands of
    # times per batch (half the decode cost, measured). Nothing on this path makes cycles that
    # matter, so collection runs once per flush instead (Pipeline.flush).
    gc.disable()
    # What exists now (modules, the catalog) lives as long as the process: out of the collector's
    # sight, so the collection after each flush scans only what the batches made (7% of a
    # flush's time was spent rescanning it, measured with cProfile).
    gc.freeze()
    progress = None if args.quiet else Progress()
    dlq = _dead_letter_producer(cfg) if cfg.get("kafka", "dead_letter_topic") else None
    enrich = cfg.hierarchy.fill if cfg.hierarchy is not None and cfg.hierarchy.virtual_keys else None
    pipeline = Pipeline(lake, catalog, limits=limits, pricing_policy=policy, overrides=overrides, on_dead_letter=dlq,
                        enrich=enrich, otlp_names=cfg.intake_names())  # fmt: skip

    if args.source:
        from ingest.source import ingest_files

        new = ingest_files(args.source, pipeline, progress=progress, clock=time.monotonic)
        summary(pipeline, f"{new:,} new lines read")
        return EXIT_OK

    from ingest.consumer import KafkaIngestor

    from ingest.clients import Unreachable

    ks = _kafka_settings(cfg)
    try:
        consumer = ks.consumer(long_running=args.exit_when_idle is None)
    except Unreachable as exc:
        sys.stderr.write(f"spendlake: cannot reach Kafka at {ks.bootstrap_servers}: {exc}\n")
        return EXIT_FAILURE
    log.info("consuming %s as group %s with %s%s", ks.topic, ks.group_id, consumer.name, _static(consumer))
    ingestor = KafkaIngestor(consumer, ks.topic, pipeline, exit_when_idle_s=args.exit_when_idle, progress=progress)
    ingestor.install_signal_handlers()
    assigned = ingestor.run()
    summary(pipeline, f"topic {ks.topic}, group {ks.group_id}")
    if not assigned and not ingestor.stop.is_set():
        sys.stderr.write(f"spendlake: the group {ks.group_id} never assigned a partition of {ks.topic} to this consumer\n")
        return EXIT_FAILURE
    return EXIT_OK


def _limits(cfg: settings_mod.Settings) -> Any:
    from ingest.pipeline import BatchLimits

    return BatchLimits(
        cfg.get("ingest", "batch_max_records"), cfg.get("ingest", "batch_max_bytes"), cfg.get("ingest", "batch_max_age")
    )


def _kafka_settings(cfg: settings_mod.Settings) -> Any:
    from ingest.clients import KafkaSettings, resolve_client

    return KafkaSettings(
        bootstrap_servers=cfg.get("kafka", "bootstrap_servers"),
        topic=cfg.get("kafka", "topic"),
        group_id=cfg.get("kafka", "group_id"),
        security=cfg.kafka_security(),
        client=resolve_client(cfg.get("kafka", "client")),
        group_instance_id=cfg.get("kafka", "group_instance_id"),
    )


def _static(consumer: Any) -> str:
    iid = getattr(consumer, "instance_id", None)
    return f", static member {iid}" if iid else ""


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}, expected a day like 2026-11-01") from None


def _pricing(cfg: settings_mod.Settings) -> tuple[Any, str, tuple[Any, ...]]:
    """(catalog, policy, overrides) from the settings; a catalog that cannot load is a config error."""
    from spendlake.pricing_cmd import resolve_catalog

    spec = cfg.get("pricing", "catalog")
    try:
        from spendlake import lakes

        if spec == "auto" and lakes.store_of(cfg) is not None:
            catalog = lakes.imported_catalog(cfg)
        else:
            catalog = resolve_catalog(spec, cfg.get("lake", "path"))
    except (OSError, ValueError) as exc:
        raise settings_mod.ConfigError([f"[pricing] catalog {spec!r}: {exc}"]) from None
    return catalog, cfg.get("pricing", "policy"), cfg.overrides


def cmd_reprice(args: argparse.Namespace) -> int:
    from pricing import price_table
    from spendlake.pricing_cmd import cmd_reprice as run

    cfg = settings_mod.load(args.config).with_overrides({("lake", "path"): args.lake, ("pricing", "catalog"): args.catalog})
    if args.until is not None and args.until < args.since:
        raise settings_mod.ConfigError([f"--until: got {args.until}, expected a day on or after --since {args.since}"])
    catalog, policy, overrides = _pricing(cfg)

    def price(events: Any) -> Any:
        return price_table(events, catalog, policy=policy, overrides=overrides)

    return run(cfg.get("lake", "path"), args.since, args.until, price, args.quiet)


def cmd_retention(args: argparse.Namespace) -> int:
    from ingest import retention
    from spendlake import lakes

    cfg = settings_mod.load(args.config).with_overrides({("lake", "path"): args.lake})
    store = lakes.store_of(cfg)
    if store is None:
        stats = retention.prune_local(lakes.local_path(cfg), args.before, args.dry_run)
        where = lakes.local_path(cfg)
    else:
        from spendlake.pricing_cmd import ProgressBar

        lakes.require_remote(store)
        bar = ProgressBar("reading manifests", unit="manifests")
        stats = retention.prune_s3(store, args.before, args.dry_run, progress=bar)
        bar.done()
        where = store.where.url
    days = sorted(stats.days)
    span = f"{days[0]} to {days[-1]}" if len(days) > 1 else (days[0] if days else "none")
    verb = "would delete" if args.dry_run else "deleted"
    sys.stderr.write(f"spendlake: {verb} {stats.files:,} files of {len(days)} days ({span}) before {args.before} "
                     f"from {where}, {stats.manifests:,} manifests rewritten\n")  # fmt: skip
    return EXIT_OK


def cmd_rollup(args: argparse.Namespace) -> int:
    from aggregator.budgets import BudgetUsage
    from aggregator.rollup import Rollup, StateLocked

    cfg = settings_mod.load(args.config).with_overrides({("lake", "path"): args.lake})
    hook = BudgetUsage(cfg.hierarchy) if cfg.hierarchy is not None else None
    try:
        with Rollup(cfg.get("lake", "path"), budget_hook=hook,
                    minute_retention_days=cfg.get("aggregator", "minute_retention_days")) as r:  # fmt: skip
            s = r.update()
    except StateLocked as exc:
        sys.stderr.write(f"spendlake: {exc}; it keeps the rollups up to date itself\n")
        return EXIT_FAILURE
    sys.stderr.write(
        f"spendlake: rolled up {s.events_added:,} new events from {s.files_new:,} new files "
        f"({s.duplicates:,} duplicates, {s.days_recomputed} dates recomputed) in {s.seconds:.2f} s; "
        f"published {len(s.days_published)} dates\n"
    )
    return EXIT_OK


def cmd_query(args: argparse.Namespace) -> int:
    import duckdb

    from aggregator import query
    from aggregator.rollup import update_if_free

    cfg = settings_mod.load(args.config).with_overrides({("lake", "path"): args.lake})
    lake = cfg.get("lake", "path")
    update_if_free(lake, minute_retention_days=cfg.get("aggregator", "minute_retention_days"))
    try:
        con = query.connect(lake)
    except duckdb.Error as exc:
        sys.stderr.write(f"spendlake: query: cannot open the lake {lake}: {' '.join(str(exc).split())}\n")
        return EXIT_FAILURE
    try:
        columns, rows = query.run(con, args.sql)
    except query.QueryRefused as exc:
        sys.stderr.write(f"spendlake: {exc}\n")
        return EXIT_USAGE
    except query.QueryError as exc:
        sys.stderr.write(f"spendlake: query: {exc}\n")
        return EXIT_USAGE
    sys.stdout.write(query.format_rows(columns, rows, args.format))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from ingest.consumer import KafkaIngestor
    from ingest.pipeline import Pipeline
    from ingest.spool import Spool
    from ingest.spool_source import SpoolIngestor
    from spendlake.serve import Service, start_intake

    cfg = settings_mod.load(args.config).with_overrides(
        {
            ("kafka", "bootstrap_servers"): args.bootstrap_servers,
            ("kafka", "topic"): args.topic,
            ("kafka", "group_id"): args.group,
            ("kafka", "client"): args.kafka_client,
            ("lake", "path"): args.lake,
            ("pricing", "catalog"): args.catalog,
            ("metrics", "listen"): args.listen,
            ("intake", "listen"): args.intake_listen,
        }
    )
    problems = settings_mod.check(cfg.values)
    host, _, port = cfg.get("metrics", "listen").rpartition(":")
    if not host or not port.isdigit():
        problems.append(f"[metrics] listen: got {cfg.get('metrics', 'listen')!r}, expected HOST:PORT")
    intake_on = cfg.intake_configured  # --intake-listen only moves it: who may send is the config's
    if args.intake_listen is not None and not intake_on:
        problems.append("--intake-listen needs an [intake] section in the config saying who may send "
                        "(tokens_env, tokens_file or allow_unauthenticated = true)")  # fmt: skip
    if problems:
        raise settings_mod.ConfigError(problems, "command line")
    kafka_mode = cfg.kafka_configured or args.bootstrap_servers is not None
    catalog, policy, overrides = _pricing(cfg)
    hierarchy = cfg.hierarchy
    assert hierarchy is not None
    from spendlake import lakes

    store = lakes.store_of(cfg)
    mirror = None
    if store is None:
        lake_path = lakes.local_path(cfg)
    else:  # readers (rollups, alerts, /metrics) work on the local mirror; batches are committed to the store
        mirror = lakes.pull(cfg, require=False)
        lake_path = str(mirror.root)
    from alerting.config import check_secrets
    from alerting.engine import AlertEngine

    secrets = check_secrets(cfg.alerting)
    tokens = None
    if intake_on:  # its token variable or file is a secret like a channel's: checked with them
        from ingest.intake import Tokens

        try:
            tokens = Tokens.load(cfg.get("intake", "tokens_env"), cfg.get("intake", "tokens_file"),
                                 cfg.get("intake", "allow_unauthenticated"))  # fmt: skip
        except ValueError as exc:
            secrets.append(str(exc))
    if secrets:
        raise settings_mod.ConfigError(secrets, cfg.source)
    engine = AlertEngine(lake_path, hierarchy, cfg.alerting, report=_report_builder(cfg))
    service = Service(lake_path, hierarchy, (host, int(port)), interval_s=cfg.evaluation_interval_s,
                      top_virtual_keys=cfg.get("metrics", "top_virtual_keys"),
                      budget_details=cfg.get("metrics", "budget_details"), alerts=engine,
                      minute_retention_days=cfg.get("aggregator", "minute_retention_days"),
                      mirror=mirror)  # fmt: skip
    limits = _limits(cfg)
    writer = lakes.open_writer(cfg, local_copy=None if mirror is None else mirror.root)
    pipeline = Pipeline(writer, catalog, limits=limits, pricing_policy=policy, overrides=overrides,
                        enrich=hierarchy.fill, on_written=service.after_flush,
                        otlp_names=cfg.intake_names())  # fmt: skip
    ks = _kafka_settings(cfg)
    spool = None
    ingestor: Any
    if kafka_mode:
        from ingest.clients import Unreachable

        try:
            consumer = ks.consumer(long_running=args.exit_when_idle is None)
        except Unreachable as exc:
            sys.stderr.write(f"spendlake: cannot reach Kafka at {ks.bootstrap_servers}: {exc}\n")
            return EXIT_FAILURE
        ingestor = KafkaIngestor(consumer, ks.topic, pipeline, exit_when_idle_s=args.exit_when_idle)
        ingestor.progress = service.lag_probe(consumer)
        source = f"consuming {ks.topic} as {ks.group_id} with {consumer.name}{_static(consumer)}"
    else:
        spool_dir = cfg.get("intake", "spool_dir") or str(Path(lake_path) / "_spool")
        try:
            spool = Spool(spool_dir)
        except (OSError, PipelineFailure) as exc:
            sys.stderr.write(f"spendlake: cannot open the spool {spool_dir}: {exc}\n")
            return EXIT_FAILURE
        ingestor = SpoolIngestor(spool, pipeline, exit_when_idle_s=args.exit_when_idle)
        source = f"no [kafka]: landing the intake spool {spool_dir}"
    service.start()
    intake = None
    try:
        if tokens is not None:
            intake = start_intake(cfg, tokens, service.health, spool, ks if kafka_mode else None)
    except (ValueError, OSError) as exc:
        service.stop()
        sys.stderr.write(f"spendlake: cannot start the intake: {exc}\n")
        return EXIT_USAGE if isinstance(exc, ValueError) else EXIT_FAILURE
    sys.stderr.write(f"spendlake: serving /metrics on http://{host}:{service.metrics_port}/metrics; {source}\n")
    if intake is not None:
        ih, ip = intake.server_address[:2]
        sys.stderr.write(f"spendlake: intake on http://{ih}:{ip} (POST /v1/traces, POST /v1/events)\n")
        if intake.grpc is not None:
            gh = cfg.get("intake", "grpc_listen").rpartition(":")[0]
            sys.stderr.write(f"spendlake: OTLP/gRPC intake on {gh}:{intake.grpc.spendlake_port}\n")
    ingestor.install_signal_handlers()
    try:
        ingestor.run()
    finally:
        if intake is not None:
            intake.close()
        service.stop()
        if spool is not None:
            spool.close()
    summary(pipeline, f"topic {ks.topic}, group {ks.group_id}" if kafka_mode else "the intake spool")
    return EXIT_OK


def _report_builder(cfg: settings_mod.Settings) -> Any:
    """serve's scheduled report: the last complete period, from what serve publishes."""

    def build(schedule: Any, now: Any) -> Any:
        from alerting.report import build_report
        from alerting.report_render import to_alert

        return to_alert(build_report(Path(cfg.get("lake", "path")), cfg, schedule.period, at=now, refresh=False))

    return build


def _dead_letter_producer(cfg: settings_mod.Settings) -> Any:
    """Dead letters also go to `[kafka] dead_letter_topic`, each with its reason and position in
    headers, acknowledged before the batch's offsets are committed (it runs inside the write)."""
    producer = _kafka_settings(cfg).producer(client_id="spendlake-dead-letters", timeout_s=30.0)
    topic = cfg.get("kafka", "dead_letter_topic")

    def send(dead: Any) -> None:
        records = []
        for row in dead.to_pylist():
            where = f"{row['source_topic']}/{row['source_partition']}/{row['source_offset']}"
            records.append((row["key"], row["raw"], [("error", row["error"].encode()), ("source", where.encode())]))
        producer.send_batch(topic, records, 30.0)

    return send


if __name__ == "__main__":
    raise SystemExit(main())
