"""The source contract of dbatch.testing, run against every registered source and a user's own."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa
import pytest
import sqlalchemy as sa

from dbatch import Files, HttpSource, SqlSource
from dbatch.batching import ByCount
from dbatch.core import Unit
from dbatch.registry import SOURCES, register
from dbatch.spec import pipeline_from_dict
from dbatch.testing import GriddedInput, SourceContract, TableInput
from dbatch.testing.contracts import assert_same_frames

# -- files ------------------------------------------------------------------------------------


class TestCsvFilesSourceContract(SourceContract):
    @pytest.fixture
    def source_input(self):
        return TableInput("csv", bad_rows=2)

    @pytest.fixture
    def secret_source(self):
        source = Files(
            "s3://AKIAEXAMPLE:files-s3cr3t@bucket/landing/*.csv",
            storage_options={"key": "AKIAEXAMPLE", "secret": "files-s3cr3t"},
        )
        return source, ("files-s3cr3t",)


class TestParquetFilesSourceContract(SourceContract):
    @pytest.fixture
    def source_input(self):
        return TableInput("parquet")


class TestJsonLinesFilesSourceContract(SourceContract):
    @pytest.fixture
    def source_input(self):
        return TableInput("jsonl", bad_rows=1)


# -- a SQLite table, split into key ranges -----------------------------------------------------


def write_orders(url: str, ids: range, bad: tuple[int, ...] = ()) -> None:
    """Rows ``id, account, amount``; the ids in ``bad`` get an amount SQLite keeps as text."""
    eng = sa.create_engine(url)
    meta = sa.MetaData()
    sa.Table(
        "orders",
        meta,
        sa.Column("id", sa.BigInteger),
        sa.Column("account", sa.String(8)),
        sa.Column("amount", sa.Float),
    )
    meta.create_all(eng)
    rows = [
        {"id": i, "account": f"A{i % 5}", "amount": "oops" if i in bad else i * 1.5} for i in ids
    ]
    with eng.begin() as con:  # plain SQL: SQLite keeps a text amount as it is
        con.execute(sa.text("INSERT INTO orders VALUES (:id, :account, :amount)"), rows)
    eng.dispose()


class TestSqliteSourceContract(SourceContract):
    """95 orders in ranges of 25 ids; the last range is partial, so new rows there are seen."""

    @pytest.fixture
    def source(self, tmp_path):
        url = f"sqlite:///{tmp_path / 'shop.db'}"
        write_orders(url, range(95), bad=(3, 60))
        return SqlSource(url, table="orders", key="id", chunk=25)

    @pytest.fixture
    def change_unit(self, source):
        def change(units: list[Unit]) -> str:
            write_orders(source.url, range(95, 97))  # new rows in the last, partial range
            return units[-1].key

        return change

    @pytest.fixture
    def expected_rows(self):
        return 95

    @pytest.fixture
    def expected_quarantined(self):
        return 2

    @pytest.fixture
    def secret_source(self):
        url = "postgresql+psycopg://etl:pg-s3cr3t@db.example.com:5432/shop"
        return SqlSource(url, table="orders", key="id", watermark_url=url), ("pg-s3cr3t",)


# -- a paginated JSON API on 127.0.0.1 ---------------------------------------------------------

TOKEN = "http-s3cr3t-token"
API_KEY = "http-s3cr3t-key"


class PagedApi:
    """Records at ``/items?page=&per_page=`` with ``meta.total``; needs the bearer token and key."""

    def __init__(self, n: int):
        self.records: list[dict[str, Any]] = [
            {"id": i, "name": f"item-{i}", "amount": "oops" if i in (4, 41) else i * 1.5}
            for i in range(n)
        ]
        self.lock = threading.Lock()

    def answer(self, query: dict[str, str], auth: str | None) -> tuple[int, Any]:
        if auth != f"Bearer {TOKEN}" or query.get("api_key") != API_KEY:
            return 401, {"error": "unauthorized"}
        size, page = int(query.get("per_page", 10)), int(query.get("page", 1))
        with self.lock:
            chunk = self.records[(page - 1) * size : page * size]
            return 200, {"data": chunk, "meta": {"total": len(self.records)}}


def serve(api: PagedApi) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            query = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
            status, body = api.answer(query, self.headers.get("Authorization"))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):  # keep the test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class TestHttpSourceContract(SourceContract):
    """95 records, 10 a page, 3 pages a unit: four units, the last one partial."""

    @pytest.fixture
    def api(self):
        api = PagedApi(95)
        server = serve(api)
        api.base = f"http://127.0.0.1:{server.server_address[1]}"
        yield api
        server.shutdown()
        server.server_close()

    @pytest.fixture
    def source(self, api, monkeypatch):
        monkeypatch.setenv("CONTRACT_API_TOKEN", TOKEN)
        return HttpSource(
            f"{api.base}/items",
            records="data",
            total="meta.total",
            page_size=10,
            pages_per_unit=3,
            params={"api_key": API_KEY},
            headers={"Authorization": "Bearer ${CONTRACT_API_TOKEN}"},
            schema={"id": "int64", "name": "string", "amount": "float64"},
        )

    @pytest.fixture
    def change_unit(self, api):
        def change(units: list[Unit]) -> str:
            with api.lock:
                api.records.append({"id": 95, "name": "item-95", "amount": 1.0})
            return units[-1].key

        return change

    @pytest.fixture
    def expected_rows(self):
        return 95

    @pytest.fixture
    def expected_quarantined(self):
        return 2

    @pytest.fixture
    def secret_source(self, source):
        return source, (TOKEN, API_KEY)


# -- gridded data -------------------------------------------------------------------------------


class TestNetCDFSourceContract(SourceContract):
    @pytest.fixture
    def source_input(self):
        return GriddedInput("netcdf")


class TestZarrSourceContract(SourceContract):
    @pytest.fixture
    def source_input(self):
        return GriddedInput("zarr")


# -- a user's own source, known to job files by the name it was registered under --------------


@dataclass(frozen=True)
class LinesSource:
    """Text files of ``name=value`` lines, one unit per file: a source as a user would write one.

    A line whose value is not a number is quarantined with its line number.
    """

    path: str

    def describe(self) -> str:
        return f"lines {self.path}"

    def token(self) -> list[Any]:
        return ["example-lines"]

    def list_units(self) -> list[Unit]:
        units = []
        for p in sorted(Path(self.path).glob("*.txt")):
            st = p.stat()
            identity = (("size", st.st_size), ("mtime_ns", st.st_mtime_ns))
            units.append(Unit(key=str(p), size=st.st_size, identity=identity))
        return units

    def load(self, batch, ctx) -> pa.Table:
        names, values = [], []
        for unit in batch.units:
            lines = Path(unit.key).read_text().splitlines()
            ctx.read_rows(len(lines))
            for number, line in enumerate(lines, start=1):
                name, _, value = line.partition("=")
                try:
                    values.append(float(value))
                except ValueError:
                    ctx.quarantine_rows(unit.key, "value", "not a number", [line], [number])
                    continue
                names.append(name)
        return pa.table({"name": pa.array(names, pa.string()), "value": pa.array(values)})


@dataclass(frozen=True)
class LinesInput:
    """The input of the example source: ``rows`` lines a file, the last one bad."""

    source_type: str
    rows: int = 12
    bad_rows: int = 1

    def name(self, index: int) -> str:
        return f"values-{index:03d}.txt"

    def write(self, folder: Path, index: int, version: int = 0) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        lines = [f"v{index}-{i}={i * (index + 1) + version}" for i in range(self.rows - 1)]
        (folder / self.name(index)).write_text("\n".join([*lines, "broken=n/a"]) + "\n")

    def change(self, folder: Path, index: int) -> None:
        path = folder / self.name(index)
        before = path.stat().st_mtime_ns
        self.write(folder, index, version=1000)
        os.utime(path, ns=(before, before + 10**10))

    def is_unit(self, key: str, index: int) -> bool:
        return Path(key).name == self.name(index)

    def source(self, folder: Path) -> Any:
        job = {
            "source": {"type": self.source_type, "path": str(folder)},
            "sink": {"type": "parquet", "path": str(folder.parent / "out")},
        }
        return pipeline_from_dict(job).source

    def assert_same(self, got: Any, want: Any) -> None:
        assert_same_frames(got.to_pandas(), want.to_pandas())


@pytest.fixture
def example_source_registered():
    register("source", "example_lines", f"{__name__}:LinesSource")
    yield "example_lines"
    del SOURCES["example_lines"]


class TestRegisteredExampleSourceContract(SourceContract):
    @pytest.fixture
    def source_input(self, example_source_registered):
        return LinesInput(example_source_registered)

    def test_the_job_file_name_builds_the_users_class(self, source):
        assert isinstance(source, LinesSource)


# -- history from files, then a Redis stream ---------------------------------------------------

HYBRID_SCHEMA = {"id": "int64", "ts": "timestamp", "amount": "float64"}


class TestHybridSourceContract(SourceContract):
    """Four CSV files (days 1 to 4) and a Redis stream (days 3 to 6), handed over at day 4.

    The rows each side leaves to the other are read and counted as filtered; one
    file row without a time and one message that is no JSON are quarantined.
    Stream sources on their own are covered by tests/test_streams.py against the
    brokers: their units are offset ranges that do not change, where this contract
    changes a unit's content.
    """

    @pytest.fixture
    def stream(self, redis_url):
        from streams_brokers import RedisBroker

        broker = RedisBroker(redis_url)
        yield broker
        broker.close()

    @pytest.fixture
    def source(self, tmp_path, stream):
        from dbatch.sources.hybrid import Hybrid
        from dbatch.sources.streams.redis import RedisStream

        landing = tmp_path / "landing"
        landing.mkdir()
        for day in range(1, 5):
            self.write_day(landing, day)
        rows = [
            json.dumps({"id": 100 * day + i, "ts": f"2026-11-0{day}T0{i}:00:00", "amount": i})
            for day in range(3, 7)
            for i in range(5)
        ]
        stream.publish(
            [r.encode() for r in rows[:7]] + [b"{not json"] + [r.encode() for r in rows[7:]]
        )
        return Hybrid(
            Files(str(landing / "*.csv"), schema=HYBRID_SCHEMA),
            RedisStream(url=stream.url, stream=stream.name, schema=HYBRID_SCHEMA, chunk=4),
            time_column="ts",
            handover="2026-11-04T00:00:00",
        )

    @staticmethod
    def write_day(landing: Path, day: int, extra: int = 0) -> None:
        lines = [f"{100 * day + i},2026-11-0{day}T0{i}:00:00,{i}.5" for i in range(5 + extra)]
        no_time = f"{100 * day + 9},,1.0"
        (landing / f"day-{day}.csv").write_text("\n".join(["id,ts,amount", *lines, no_time]) + "\n")

    @pytest.fixture
    def change_unit(self, tmp_path):
        def change(units: list[Unit]) -> str:
            path = tmp_path / "landing" / "day-2.csv"
            before = path.stat().st_mtime_ns
            self.write_day(path.parent, 2, extra=2)
            os.utime(path, ns=(before, before + 10**10))
            return str(path)

        return change

    @pytest.fixture
    def batching(self):
        return ByCount(3)  # the second batch holds a file and the stream's range

    @pytest.fixture
    def expected_rows(self):
        return 4 * 6 + 4 * 5 + 1  # the files' rows, the stream's messages (one no JSON)

    @pytest.fixture
    def expected_quarantined(self):
        return 4 + 1  # a row without a time in each file, the message that is no JSON

    @pytest.fixture
    def secret_source(self, tmp_path):
        from dbatch.sources.hybrid import Hybrid
        from dbatch.sources.streams.redis import RedisStream

        source = Hybrid(
            Files("s3://AKIAEXAMPLE:hybrid-s3cr3t@bucket/landing/*.csv"),
            RedisStream(url="redis://:redis-s3cr3t@cache.example.com:6379/0", stream="orders"),
            time_column="ts",
            handover="2026-11-04",
        )
        return source, ("hybrid-s3cr3t", "redis-s3cr3t")
