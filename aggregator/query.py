"""Read-only, sandboxed SQL over a lake (contract 4: ``spendlake query``).

``connect(lake)`` opens an in-memory DuckDB with these views:

- ``events``: every lake event row, raw (a duplicate ``event_id`` appears once per copy);
- ``dead_letters``: the dead letters;
- ``rollup_minute``, ``rollup_hourly``, ``rollup_daily``, ``rollup_labels``, ... over the rollups
  ``spendlake serve`` (or any command that found the state free) published as Parquet;
- ``budget_status``: the budget status the budgets module publishes as ``_rollups/budgets.parquet``;
- every ``sql/*.sql`` view (``request_log``, the deduplicated log, and the views built on it and
  on the rollups), loaded in file-name order.

A view over files that do not exist yet is an empty view with the right columns.

Then the connection is locked down (two layers, both tested):

1. ``run()`` executes exactly one statement, and only a SELECT-like one: SELECT, WITH ... SELECT,
   FROM-first, VALUES, TABLE, DESCRIBE, SUMMARIZE, SHOW (DuckDB classifies all of these as
   SELECT), a PIVOT, and EXPLAIN [ANALYZE] of one of those. Everything else is refused before
   DuckDB sees it: ``QueryRefused("query: only SELECT is allowed (got COPY)")``.
2. DuckDB's own settings, so a statement that slipped past (1) still cannot escape:
   ``allowed_directories`` = the lake's ``events/``, ``dead_letter/`` and ``_rollups/``, then
   ``enable_external_access = false`` (in that order: DuckDB refuses to change
   ``allowed_directories`` once external access is off, and ``allowed_directories`` alone
   restricts nothing), no extension auto-install/auto-load, no community extensions, no Python
   replacement scans, and ``lock_configuration = true`` so no SET/RESET/PRAGMA can undo it.

What DuckDB 2.0.1 does with this (found by experiment; ``tests/test_query.py`` keeps it true):
reading or writing any path outside the three directories fails with a Permission Error
(``read_csv('/etc/passwd')``, ``glob('/etc/*')``, ``COPY ... TO '/tmp/x'``, ``ATTACH``,
``EXPORT DATABASE``, relative paths, ``<lake>/events/../..`` paths, https URLs, the rollup state
in ``_state/``); INSTALL and LOAD fail; SET/RESET fail ("the configuration has been locked").
``EXPLAIN ANALYZE`` *executes* its statement, so (1) checks the statement inside an EXPLAIN too.
What the settings alone would still allow, and only (1) prevents: writing files *inside* the
three directories, existing lake files included (COPY TO, ATTACH of a database file there), and
catalog changes in the in-memory database (CREATE TABLE, INSERT, which touch no file). DuckDB
also adds its own ``temp_directory`` (where it spills big sorts and joins) to the allowed
directories, so it is pointed at a fresh private directory under the system temp directory,
which DuckDB creates only when it spills and removes on close, instead of ``.tmp`` in the current
directory.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import difflib
import io
import json
import math
import os
import re
import tempfile
import unicodedata
import uuid
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from aggregator.rollup import PUBLISH_DIR, published_views
from ingest.schema import DEAD_LETTER_SCHEMA, LAKE_SCHEMA
from pricing.money import cost_text, round_cost

__all__ = ["BUDGET_STATUS_COLUMNS", "FORMATS", "QueryError", "QueryRefused", "check", "connect", "format_rows",
           "relations", "run", "sql_views"]  # fmt: skip

FORMATS = ("table", "csv", "json")

# What the lake's views may read; nothing else is reachable once the connection is locked.
READABLE_DIRS = ("events", "dead_letter", PUBLISH_DIR)

# Columns of <lake>/_rollups/budgets.parquet (aggregator.budgets.STATUS_SCHEMA), for the empty
# budget_status view before anything has been published.
BUDGET_STATUS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("type", "VARCHAR"),
    ("id", "VARCHAR"),
    ("name", "VARCHAR"),
    ("budget_id", "VARCHAR"),
    ("max_limit", "DOUBLE"),
    ("reset_duration", "VARCHAR"),
    ("current_usage", "DOUBLE"),
    ("remaining", "DOUBLE"),
    ("utilization", "DOUBLE"),
    ("period_start", "TIMESTAMPTZ"),
    ("reset_at", "TIMESTAMPTZ"),
    ("burn_rate_usd_per_hour", "DOUBLE"),
    ("projected_exhaustion_at", "TIMESTAMPTZ"),
    ("requests", "BIGINT"),
)

# Settings applied after the views exist, in this order (allowed_directories is inserted before
# enable_external_access; lock_configuration comes last). Each one must succeed: a DuckDB that
# lacks one of them gets no connection rather than a weaker sandbox.
_LOCKDOWN = (
    "SET autoinstall_known_extensions = false",
    "SET autoload_known_extensions = false",
    "SET allow_community_extensions = false",
    "SET python_enable_replacements = false",
)


class QueryRefused(Exception):
    """The statement is not a read-only query, or it reached outside the lake."""


class QueryError(Exception):
    """DuckDB could not run the query (syntax, unknown table or column, bad cast, ...): one line.

    An unknown table or view is answered with spendlake's own names (see ``run``), not with
    DuckDB's guess among its internal catalog (``duckdb_views``, ``pg_constraint``, ...)."""


# --- connection --------------------------------------------------------------------------------


def _lit(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _duckdb_types(schema: pa.Schema) -> list[tuple[str, str]]:
    """(column, DuckDB type) of an Arrow schema, as DuckDB itself maps it."""
    scratch = duckdb.connect()
    try:
        rel = scratch.from_arrow(schema.empty_table())
        return [(name, str(typ)) for name, typ in zip(rel.columns, rel.types)]
    finally:
        scratch.close()


def _empty_view(con: duckdb.DuckDBPyConnection, view: str, columns: Sequence[tuple[str, str]]) -> None:
    select = ", ".join(f"NULL::{typ} AS {_ident(col)}" for col, typ in columns)
    con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT {select} WHERE false")


def _partitioned_view(con: duckdb.DuckDBPyConnection, view: str, folder: Path, schema: pa.Schema) -> None:
    """A view over ``folder/date=*/*.parquet``, or an empty one with the schema's columns (plus
    the hive ``date`` column) while the folder holds no file."""
    if any(folder.glob("date=*/*.parquet")):
        con.execute(
            f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM read_parquet("
            f"{_lit(str(folder / 'date=*' / '*.parquet'))}, hive_partitioning = true, union_by_name = true)"
        )
    else:
        _empty_view(con, view, [*_duckdb_types(schema), ("date", "DATE")])


def _budget_view(con: duckdb.DuckDBPyConnection, root: Path) -> None:
    path = root / PUBLISH_DIR / "budgets.parquet"
    if path.is_file():
        con.execute(f"CREATE OR REPLACE VIEW budget_status AS SELECT * FROM read_parquet({_lit(str(path))})")
    else:
        _empty_view(con, "budget_status", BUDGET_STATUS_COLUMNS)


def sql_views() -> list[tuple[str, str]]:
    """(file name, SQL) of the packaged ``sql/*.sql`` views, in load order (file name)."""
    files = [f for f in resources.files("sql").iterdir() if f.name.endswith(".sql") and f.is_file()]
    return [(f.name, f.read_text(encoding="utf-8")) for f in sorted(files, key=lambda f: f.name)]


def connect(lake: str | os.PathLike[str]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB over ``lake``'s events, dead letters, rollups and sql/ views, locked
    down to reading those (see the module docstring)."""
    root = Path(lake).resolve()  # DuckDB checks path strings: views and allow-list must agree
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        # DuckDB spills big sorts/joins here (created on demand, removed on close); the default
        # would be .tmp in the current directory.
        spill = Path(tempfile.gettempdir()) / f"spendlake-query-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        con.execute(f"SET temp_directory = {_lit(str(spill))}")
        _partitioned_view(con, "events", root / "events", LAKE_SCHEMA)
        _partitioned_view(con, "dead_letters", root / "dead_letter", DEAD_LETTER_SCHEMA)
        published_views(con, root)
        _budget_view(con, root)
        for name, text in sql_views():
            try:
                con.execute(text)
            except duckdb.Error as exc:
                raise RuntimeError(f"sql/{name}: {_one_line(str(exc))}") from exc
        for setting in _LOCKDOWN:
            con.execute(setting)
        allowed = ", ".join(_lit(str(root / d) + "/") for d in READABLE_DIRS)
        con.execute(f"SET allowed_directories = [{allowed}]")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


# --- statements --------------------------------------------------------------------------------

_ALLOWED_TYPES = {duckdb.StatementType.SELECT}
_PIVOT_WORDS = {"PIVOT", "PIVOT_WIDER"}  # a PIVOT without IN (...) is a MULTI statement in DuckDB


def _words(sql: str) -> list[tuple[int, str, bool]]:
    """(position, text, is an operator) of the tokens of ``sql`` that are not comments."""
    toks = duckdb.tokenize(sql)
    out = []
    for i, (pos, kind) in enumerate(toks):
        end = toks[i + 1][0] if i + 1 < len(toks) else len(sql)
        if kind != duckdb.token_type.comment:
            out.append((pos, sql[pos:end].strip(), kind == duckdb.token_type.operator))
    return out


def _label(sql: str, stype: duckdb.StatementType) -> str:
    """What to call a refused statement: its first keyword where that says more than DuckDB's
    statement type (INSTALL is a LOAD, RESET and USE are SETs, CHECKPOINT is a CALL)."""
    words = _words(sql)
    first = words[0][1].upper() if words else ""
    name = stype.name.replace("_", " ")
    if first.isalpha() and first not in ("WITH", "EXPLAIN") and first != name.split()[0]:
        return first
    return name


def _explained(sql: str) -> str | None:
    """The statement inside ``EXPLAIN [ANALYZE] [(options)] <statement>``, or None."""
    words = _words(sql)
    i = 0
    if i >= len(words) or words[i][1].upper() != "EXPLAIN":
        return None
    i += 1
    if i < len(words) and words[i][1].upper() in ("ANALYZE", "ANALYSE"):
        i += 1
    if i < len(words) and words[i][2] and words[i][1].startswith("("):
        depth = 0
        while i < len(words):
            if words[i][2]:
                depth += words[i][1].count("(") - words[i][1].count(")")
            i += 1
            if depth <= 0:
                break
    if i >= len(words):
        return None
    return sql[words[i][0]:]


def check(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise QueryRefused unless ``sql`` is exactly one read-only statement."""
    try:
        statements = [(st.query, st.type) for st in con.extract_statements(sql)]
    except duckdb.Error as exc:
        raise QueryError(_one_line(str(exc))) from None
    except ValueError:
        # a statement type the Python client has no name for (UPDATE EXTENSIONS, ...)
        words = _words(sql)
        raise QueryRefused(f"query: only SELECT is allowed (got {words[0][1].upper() if words else '?'})") from None
    if not statements:
        raise QueryRefused("query: no SQL statement given")
    if len(statements) > 1:
        raise QueryRefused(f"query: one statement at a time (got {len(statements)})")
    _check_one(con, *statements[0])


def _check_one(con: duckdb.DuckDBPyConnection, text: str, stype: duckdb.StatementType) -> None:
    if stype in _ALLOWED_TYPES:
        return
    if stype == duckdb.StatementType.MULTI:
        words = _words(text)
        if words and words[0][1].upper() in _PIVOT_WORDS:
            return
    if stype == duckdb.StatementType.EXPLAIN:
        inner = _explained(text)
        if inner is not None:
            try:
                inner_statements = [(st.query, st.type) for st in con.extract_statements(inner)]
            except (duckdb.Error, ValueError):
                inner_statements = []
            if len(inner_statements) == 1:
                inner_sql, inner_type = inner_statements[0]
                try:
                    _check_one(con, inner_sql, inner_type)
                except QueryRefused:
                    label = _label(inner_sql, inner_type)
                    raise QueryRefused(f"query: only SELECT is allowed (got EXPLAIN of {label})") from None
                return
    raise QueryRefused(f"query: only SELECT is allowed (got {_label(text, stype)})")


def run(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one read-only statement; (column names, rows)."""
    check(con, sql)
    try:
        cur = con.execute(sql)
        columns = [d[0] for d in cur.description] if cur.description else []
        rows = cur.fetchall()
    except duckdb.PermissionException as exc:
        raise QueryRefused(
            f"query: {_one_line(str(exc))} (only the lake's {', '.join(d + '/' for d in READABLE_DIRS)} can be read)"
        ) from None
    except duckdb.CatalogException as exc:
        raise QueryError(_missing_relation(con, _one_line(str(exc)))) from None
    except duckdb.Error as exc:
        raise QueryError(_one_line(str(exc))) from None
    return columns, rows


# DuckDB 2.0.1: 'Catalog Error: Table with name X does not exist! Did you mean "Y"?' (X without its
# schema), or '... Table with name "s.X" does not exist because schema "s" does not exist.'
_MISSING = re.compile(r'^Catalog Error: Table with name (?P<name>.+?) does not exist'
                      r'(?: because schema "[^"]*" does not exist)?[!.]?(?: Did you mean "(?P<hint>[^"]*)"\?)?')
_MARKED = re.compile(r">>(.*?)<<")  # the spot _one_line marked in the "(LINE n: ...)" context
_OWN_SCHEMAS = ("", "main", "memory", "memory.main")
_HINT_CUTOFF = 0.6  # difflib ratio for "did you mean" among spendlake's names
_SYSTEM_HINT_CUTOFF = 0.85  # DuckDB's own guess is kept only when it is nearly what was typed


def relations(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The tables and views of the query connection's own catalog (the lake views, the rollups,
    budget_status and the sql/ views), sorted; none of DuckDB's internal ones."""
    return sorted(
        name
        for (name,) in con.execute(
            "SELECT view_name FROM duckdb_views() WHERE NOT internal AND schema_name = 'main' "
            "UNION SELECT table_name FROM duckdb_tables() WHERE NOT internal AND schema_name = 'main'"
        ).fetchall()
    )


def _missing_relation(con: duckdb.DuckDBPyConnection, message: str) -> str:
    """``message`` (one line) about an unknown table or view, with DuckDB's guess among its own
    catalog replaced by spendlake's names: the closest one, if one is close, and the list. A name
    in another schema (``information_schema.tablez``) keeps DuckDB's message."""
    m = _MISSING.match(message)
    if not m:
        return message
    typed = m.group("name").strip('"')
    rest = message[m.end():].strip()  # DuckDB's "(LINE n: ... >>name<< ...)", if any
    name = typed
    if " because schema " in message:  # "s.X": a schema that does not exist
        schema, _, name = typed.rpartition(".")
    else:  # the message names the table without its schema; the marked spot has what was typed
        marked = _MARKED.search(rest)
        spot = marked.group(1).replace('"', "").lower() if marked else ""
        schema = spot[: -len(typed) - 1] if spot.endswith("." + typed.lower()) else ""
    if schema.lower() not in _OWN_SCHEMAS:
        return message  # information_schema.tablez, pg_catalog.x, a schema that does not exist
    try:
        ours = relations(con)
    except duckdb.Error:
        return message
    close = difflib.get_close_matches(name.lower(), ours, n=1, cutoff=_HINT_CUTOFF)
    hint = m.group("hint")
    if close:
        guess = f' Did you mean "{close[0]}"?'
    elif hint and difflib.SequenceMatcher(None, name.lower(), hint).ratio() >= _SYSTEM_HINT_CUTOFF:
        guess = f' Did you mean "{hint}" (a DuckDB catalog name)?'  # duckdb_view -> duckdb_views
    else:
        guess = ""
    return (f"Catalog Error: table or view {typed} does not exist.{guess}{' ' + rest if rest else ''} "
            f"spendlake's tables and views: {', '.join(ours)}")


_CONTEXT = re.compile(r"\n\s*LINE (\d+): ([^\n]*)\n( *)(\^+)[^\n]*")


def _one_line(message: str) -> str:
    """DuckDB's message on one line. Its "LINE n: <sql>" context and caret become
    "(LINE n: ... >>token<< ...)"."""
    where = ""
    m = _CONTEXT.search(message)
    if m:
        line, snippet, pad, carets = m.group(1), m.group(2), m.group(3), m.group(4)
        start = len(pad) - len(f"LINE {line}: ")
        if 0 <= start <= len(snippet):
            end = start + len(carets)
            snippet = f"{snippet[:start]}>>{snippet[start:end]}<<{snippet[end:]}"
        where = f" (LINE {line}: {' '.join(snippet.split())})"
        message = message[: m.start()] + message[m.end() :]
    return " ".join(message.split()) + where


# --- output ------------------------------------------------------------------------------------


def _rfc3339(value: dt.datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC)
    spec = "seconds" if not value.microsecond else "milliseconds" if value.microsecond % 1000 == 0 else "microseconds"
    text = value.isoformat(timespec=spec)
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _iso_duration(value: dt.timedelta) -> str:
    """ISO 8601 duration: P1DT2H3M4.5S (negative: -P...)."""
    sign = "-" if value < dt.timedelta(0) else ""
    value = abs(value)
    seconds = value.seconds + value.microseconds / 1e6
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    out = f"{sign}P{value.days}D" if value.days else f"{sign}P"
    time = "".join(f"{int(n)}{u}" for n, u in ((h, "H"), (m, "M")) if n)
    if s or not (value.days or time):
        time += f"{s:g}S"
    return out + ("T" + time if time else "")


def _blob(value: bytes) -> str:
    """Bytes as DuckDB prints a BLOB: printable ASCII as is, everything else as \\xNN."""
    return "".join(chr(b) if 32 <= b < 127 and b != 92 else f"\\x{b:02X}" for b in value)


def _json_value(value: Any) -> Any:
    """A JSON-ready value: see format_rows."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return round_cost(value) if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, dt.datetime):
        return _rfc3339(value)
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return _iso_duration(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _blob(bytes(value))
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return str(value)  # UUID and anything else DuckDB may hand back


def _text(value: Any, null: str) -> str:
    """A cell of the table and CSV formats."""
    if value is None:
        return null
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return cost_text(value)  # 12 significant digits, shortest form; nan, inf, -inf as such
    if isinstance(value, (str, int, decimal.Decimal)):
        return str(value)
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(_json_value(value), ensure_ascii=False, separators=(",", ":"))
    converted = _json_value(value)
    return converted if isinstance(converted, str) else str(converted)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool)


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 0 if unicodedata.combining(c) else 1 for c in text)


def _pad(text: str, width: int, right: bool) -> str:
    fill = " " * (width - _width(text))
    return fill + text if right else text + fill


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    if list(columns) == ["explain_key", "explain_value"]:  # EXPLAIN: the plan as DuckDB draws it
        return "".join(f"{value}\n" for _, value in rows)
    cells = [[_text(v, "NULL").replace("\r", "\\r").replace("\n", "\\n").replace("\t", " ") for v in row] for row in rows]
    numeric = [
        any(_is_number(row[i]) for row in rows) and all(row[i] is None or _is_number(row[i]) for row in rows)
        for i in range(len(columns))
    ]
    widths = [max([_width(c), *(_width(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = [
        "  ".join(_pad(c, w, n) for c, w, n in zip(columns, widths, numeric)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(_pad(c, w, n) for c, w, n in zip(r, widths, numeric)).rstrip() for r in cells]
    lines.append(f"({len(rows)} row{'' if len(rows) == 1 else 's'})")
    return "\n".join(lines) + "\n"


def _csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows([_text(v, "") for v in row] for row in rows)
    return buf.getvalue()


def _json(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    keys: list[str] = []
    for c in columns:  # a duplicate column name (SELECT 1 AS a, 2 AS a) must not overwrite
        key, n = c, 1
        while key in keys:
            n += 1
            key = f"{c}_{n}"
        keys.append(key)
    objects = [json.dumps(dict(zip(keys, map(_json_value, row))), ensure_ascii=False, allow_nan=False) for row in rows]
    return "[]\n" if not objects else "[\n" + ",\n".join(objects) + "\n]\n"


def format_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> str:
    """Render a result. Every format ends with a newline.

    Every float (DOUBLE, FLOAT; also inside lists, structs and maps) is shown at 12 significant
    digits, in its shortest form, the same text in all three formats: ``pricing.money.cost_text``
    (``0.1 + 0.2`` is ``0.3``, a cost of ``0.0045000000000000005`` is ``0.0045``, ``12.0`` stays
    ``12.0``, ``1e-07``). That removes float noise and keeps every figure within 5e-12 relative
    of the stored value; the lake keeps full float64, and ``CAST(x AS VARCHAR)`` in the query
    shows all of it. Integers and DECIMALs are never rounded.

    - ``table``: aligned columns, numbers right-aligned, NULL shown as ``NULL``, newlines in
      values shown as ``\\n``, then "(N rows)". An EXPLAIN result is printed as DuckDB draws
      the plan.
    - ``csv``: RFC 4180 (CRLF line ends, quoting as needed) with a header row; NULL is an empty
      field; NaN and infinities ``nan``, ``inf``, ``-inf``; booleans ``true``/``false``; lists,
      structs and maps as JSON text.
    - ``json``: a list of objects, one per line, keys in column order (a repeated name gets
      ``_2``, ``_3``). NULL, NaN and infinities are ``null``; floats are JSON numbers at the 12
      digits above; integers of any size (HUGEINT, UHUGEINT) and DECIMALs are JSON numbers (a
      DECIMAL through a double: exact up to 15 significant digits); timestamps RFC 3339 in UTC
      (``2025-11-28T12:00:00.123Z``; a TIMESTAMP without time zone has no offset), dates
      ``YYYY-MM-DD``, intervals ISO 8601 durations, BLOBs as DuckDB prints them (``\\xNN`` escapes).
    """
    if fmt == "table":
        return _table(columns, rows)
    if fmt == "csv":
        return _csv(columns, rows)
    if fmt == "json":
        return _json(columns, rows)
    raise ValueError(f"format: got {fmt!r}, expected one of {', '.join(FORMATS)}")
