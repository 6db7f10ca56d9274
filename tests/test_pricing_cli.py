"""`spendlake pricing import|unpriced`, `price --config` and catalog specs, end to end."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from conftest import event, lake_rows, litellm_catalog_path, spendlake

GOOD = {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}


def price_file(tmp_path: Path, name: str, data: dict) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


class Files(http.server.BaseHTTPRequestHandler):
    """Serves the bytes in `body`, or a status in `status`, like a static file host."""

    body: bytes = b""
    status: int = 200
    paths: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        self.paths.append(self.path)
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_files() -> Iterator[tuple[str, type[Files]]]:
    handler = type("H", (Files,), {"paths": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_import_lists_every_bad_entry_and_loads_the_good_ones(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    path = price_file(tmp_path, "prices.json", {
        "acme-large": {**GOOD, "litellm_provider": "acme"},
        "acme-bad-1": {**GOOD, "litellm_provider": "acme", "input_cost_per_token": "cheap"},
        "acme-bad-2": {**GOOD, "litellm_provider": "acme", "output_cost_per_token": -1},
    })  # fmt: skip
    r = spendlake("pricing", "import", str(path), "--lake", str(lake))
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr.decode()
    assert "imported 1 price entries" in out
    assert "acme-bad-1: input_cost_per_token: got 'cheap'" in out
    assert "acme-bad-2: output_cost_per_token: got -1" in out
    assert (lake / "_catalog" / "litellm.json").read_bytes() == path.read_bytes()
    record = json.loads((lake / "_catalog" / "import.json").read_text())
    assert record["entries"] == 1 and len(record["problems"]) == 2

    # ingest with the default catalog ('auto') now prices acme from the import and the rest
    # from the built-in catalog
    src = tmp_path / "events.jsonl"
    src.write_bytes(
        orjson.dumps(event(1, provider="acme", model="acme-large", input_tokens=1000, output_tokens=100,
                           cached_input_tokens=0)) + b"\n"
        + orjson.dumps(event(2, provider="openai", model="gpt-4o")) + b"\n"
    )  # fmt: skip
    spendlake("ingest", "--source", str(src), "--lake", str(lake), "--quiet", check=True)
    rows = dict(lake_rows(lake, "select model, price_id from ev"))
    assert rows == {"acme-large": "litellm:acme-large", "gpt-4o": "builtin:openai/gpt-4o@2024-10-02"}


def test_import_of_a_useless_file_leaves_the_catalog_alone(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    spendlake("pricing", "import", str(price_file(tmp_path, "a.json", {"m": GOOD})), "--lake", str(lake), check=True)
    before = (lake / "_catalog" / "litellm.json").read_bytes()
    bad = price_file(tmp_path, "b.json", {"m": {**GOOD, "input_cost_per_token": None, "output_cost_per_token": "x"}})
    r = spendlake("pricing", "import", str(bad), "--lake", str(lake))
    assert r.returncode == 1
    assert "no usable price entries" in r.stderr.decode()
    assert (lake / "_catalog" / "litellm.json").read_bytes() == before
    r = spendlake("pricing", "import", str(tmp_path / "missing.json"), "--lake", str(lake))
    assert r.returncode == 1 and "cannot read" in r.stderr.decode()


def test_import_from_a_url_reports_changes_and_hides_the_token(
    tmp_path: Path, http_files: tuple[str, type[Files]]
) -> None:
    base, handler = http_files
    lake = tmp_path / "lake"
    handler.body = json.dumps({"m1": GOOD, "m2": GOOD}).encode()
    url = f"{base}/prices.json?token=s3cr3t"
    r = spendlake("pricing", "import", url, "--lake", str(lake), check=True)
    assert "2 new" in r.stdout.decode() and "s3cr3t" not in r.stdout.decode()
    assert handler.paths == ["/prices.json?token=s3cr3t"]
    handler.body = json.dumps({"m1": {**GOOD, "output_cost_per_token": 3e-6}, "m3": GOOD}).encode()
    out = spendlake("pricing", "import", url, "--lake", str(lake), check=True).stdout.decode()
    assert "1 new, 1 with new prices, 1 gone" in out and "spendlake reprice" in out
    assert "s3cr3t" not in (lake / "_catalog" / "import.json").read_text()
    handler.status, handler.body = 404, b"not here"
    r = spendlake("pricing", "import", url, "--lake", str(lake))
    assert r.returncode == 1 and "HTTP 404" in r.stderr.decode() and "s3cr3t" not in r.stderr.decode()


def test_unpriced_lists_models_without_a_price(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    src = tmp_path / "events.jsonl"
    lines = [event(i, provider="acme", model="mystery-1", input_tokens=100, output_tokens=10, cached_input_tokens=0)
             for i in range(3)]  # fmt: skip
    lines.append(event(3, provider="acme", model="mystery-2", cost_usd=0.5))
    lines.append(event(4))
    lines.append(event(0, provider="acme", model="mystery-1", input_tokens=100, output_tokens=10,
                       cached_input_tokens=0))  # a duplicate event_id counts once  # fmt: skip
    src.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    spendlake("ingest", "--source", str(src), "--lake", str(lake), "--quiet", check=True)
    got = json.loads(spendlake("pricing", "unpriced", "--lake", str(lake), "--format", "json", check=True).stdout)
    assert [(r["model"], r["events"], r["with_reported_cost"], r["input_tokens"]) for r in got] == [
        ("mystery-1", 3, 0, 300),
        ("mystery-2", 1, 1, event(3)["input_tokens"]),
    ]
    table = spendlake("pricing", "unpriced", "--lake", str(lake), check=True).stdout.decode()
    assert "mystery-1" in table and "4 events of 2 models" in table
    none = spendlake("pricing", "unpriced", "--lake", str(lake), "--since", "2100-01-01", check=True)
    assert none.stdout.decode() == "no events without a catalog price, since 2100-01-01 (UTC)\n"


def test_unpriced_says_what_it_counted(tmp_path: Path) -> None:
    """The table's title and summary name the count (events without a catalog price) and its scope."""
    lake = tmp_path / "lake"
    src = tmp_path / "events.jsonl"
    day = 86_400_000  # event(i) is on 2025-11-28; these two a day apart
    lines = [event(i, provider="acme", model="mystery-1", cached_input_tokens=0, timestamp=1764331200000 + i * day)
             for i in range(2)]  # fmt: skip
    src.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    spendlake("ingest", "--source", str(src), "--lake", str(lake), "--quiet", check=True)

    lines_out = spendlake("pricing", "unpriced", "--lake", str(lake), check=True).stdout.decode().splitlines()
    assert lines_out[0] == "Events without a catalog price, all time; a resent event_id counts once:"
    assert lines_out[1].split() == ["provider", "model", "events", "with_reported_cost", "input_tokens",
                                    "output_tokens", "first_seen", "last_seen"]  # fmt: skip
    assert lines_out[2].split()[:3] == ["acme", "mystery-1", "2"]
    assert lines_out[2].split()[-2:] == ["2025-11-28T12:00:00Z", "2025-11-29T12:00:00Z"]
    assert lines_out[3].startswith("2 events of 1 model without a catalog price, all time; their cost is NULL")

    out = spendlake("pricing", "unpriced", "--lake", str(lake), "--since", "2025-11-29", check=True).stdout.decode()
    lines_out = out.splitlines()
    assert lines_out[0] == "Events without a catalog price, since 2025-11-29 (UTC); a resent event_id counts once:"
    assert lines_out[2].split()[:3] == ["acme", "mystery-1", "1"]
    assert lines_out[3].startswith("1 event of 1 model without a catalog price, since 2025-11-29 (UTC); their cost")
    assert "all time" not in out

    # JSON keeps its shape: the bare list of rows
    got = json.loads(spendlake("pricing", "unpriced", "--lake", str(lake), "--since", "2025-11-29", "--format", "json",
                               check=True).stdout)  # fmt: skip
    assert [(r["model"], r["events"], r["first_seen"]) for r in got] == [("mystery-1", 1, "2025-11-29T12:00:00Z")]


def test_price_uses_the_config_overrides_and_policy(tmp_path: Path) -> None:
    cfg = tmp_path / "spendlake.toml"
    cfg.write_text(
        '[pricing]\ncatalog = "builtin"\npolicy = "reported_first"\n'
        '[[pricing.overrides]]\nscope = "team"\nid = "team-1"\ndiscount = 0.5\n'
    )
    lines = [event(1, team="team-1", provider="openai", model="gpt-4o", input_tokens=1000, output_tokens=0, cached_input_tokens=0),
             event(2, team="team-2", provider="openai", model="gpt-4o", cost_usd=1.25)]  # fmt: skip
    r = spendlake("price", "--config", str(cfg), input=b"".join(orjson.dumps(x) + b"\n" for x in lines), check=True)
    one, two = (json.loads(x) for x in r.stdout.splitlines())
    assert one["cost_source"] == "override" and one["cost_usd"] == pytest.approx(1000 * 2.5e-6 / 2)
    assert two["cost_source"] == "reported" and two["cost_usd"] == 1.25
    bad = tmp_path / "bad.toml"
    bad.write_text('[pricing]\ncatalog = "/no/such/file.json"\n')
    r = spendlake("price", "--config", str(bad), input=b"")
    assert r.returncode == 2 and "[pricing] catalog '/no/such/file.json'" in r.stderr.decode()


def test_price_with_the_litellm_catalog_prefers_the_prefixed_duplicate() -> None:
    path = litellm_catalog_path()
    line = orjson.dumps(event(1, provider="deepseek", model="deepseek-chat", input_tokens=1000,
                              output_tokens=100, cached_input_tokens=0))  # fmt: skip
    r = spendlake("price", "--catalog", str(path), input=line + b"\n", check=True)
    got = json.loads(r.stdout)
    raw = json.loads(path.read_text())["deepseek/deepseek-chat"]
    assert got["price_id"] == "litellm:deepseek/deepseek-chat"
    assert got["cost_usd"] == pytest.approx(1000 * raw["input_cost_per_token"] + 100 * raw["output_cost_per_token"])


def test_reprice_applies_a_new_override_to_past_days_once(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    src = tmp_path / "events.jsonl"
    day = 86_400_000
    lines = [event(i, provider="openai", model="gpt-4o", team="team-1" if i % 2 else "team-2",
                   timestamp=1764331200000 + (i % 3) * day) for i in range(60)]  # fmt: skip
    src.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    spendlake("ingest", "--source", str(src), "--lake", str(lake), "--catalog", "builtin", "--quiet", check=True)
    before = dict(lake_rows(lake, "select team, sum(cost_usd) from ev group by team"))
    days = [d for (d,) in lake_rows(lake, "select distinct date::varchar from ev order by 1")]
    assert len(days) == 3

    cfg = tmp_path / "spendlake.toml"
    cfg.write_text(f'[lake]\npath = "{lake}"\n[pricing]\ncatalog = "builtin"\n'
                   '[[pricing.overrides]]\nscope = "team"\nid = "team-1"\ndiscount = 0.25\n')  # fmt: skip
    r = spendlake("reprice", "--config", str(cfg), "--since", days[1], check=True)
    err = r.stderr.decode()
    assert "repricing [" in err and "2 rewritten" in err, err
    by_day = lake_rows(lake, "select date::varchar, team, sum(cost_usd), min(cost_source), max(cost_source) "
                             "from ev group by all order by 1, 2")  # fmt: skip
    for d, team, cost, lo, hi in by_day:
        discounted = team == "team-1" and d >= days[1]
        assert (lo, hi) == (("override", "override") if discounted else ("catalog", "catalog")), (d, team)
    after = dict(lake_rows(lake, "select team, sum(cost_usd) from ev group by team"))
    assert after["team-2"] == pytest.approx(before["team-2"])
    assert after["team-1"] < before["team-1"]

    again = spendlake("reprice", "--config", str(cfg), "--since", days[1], "--quiet", check=True).stderr.decode()
    assert "0 rewritten, 2 unchanged, 0 events changed" in again, again
    assert dict(lake_rows(lake, "select team, sum(cost_usd) from ev group by team")) == pytest.approx(after)
    first = spendlake("reprice", "--config", str(cfg), "--since", days[0], "--quiet", check=True).stderr.decode()
    assert "1 rewritten, 2 unchanged" in first, first

    r = spendlake("reprice", "--lake", str(tmp_path / "nowhere"), "--since", "2026-01-01")
    assert r.returncode == 2 and "nowhere" in r.stderr.decode()  # a lake that does not exist: bad usage
    r = spendlake("reprice", "--lake", str(lake), "--since", "2026-02-01", "--until", "2026-01-01")
    assert r.returncode == 2 and "--until" in r.stderr.decode()
    r = spendlake("reprice", "--lake", str(lake), "--since", "yesterday")
    assert r.returncode == 2 and "expected a day like" in r.stderr.decode()
