"""HttpSource against a real HTTP server on 127.0.0.1 that paginates, throttles and fails on purpose."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest

from dbatch import ByCount, ParquetSink, Pipeline
from dbatch.context import BatchContext
from dbatch.errors import BadInputError, JobSpecError, SourceError, TransientError, is_transient
from dbatch.redact import redact as redact_text
from dbatch.sources.http import HttpSource
from dbatch.spec import load_job

TOKEN = "s3cret-token-value"
ECHO = "<echo the request headers>"


class FakeApi:
    """Serves ``n`` records at /items (page), /offset, /cursor and /count; needs the bearer token.

    ``script[(path, page)]`` holds answers to give (in order) before the normal one:
    ``(status, headers, body)`` tuples, or ``"sleep:<s>"``.
    """

    def __init__(self, n: int = 95):
        self.records = [{"id": i, "name": f"item-{i}", "amount": i * 1.5} for i in range(n)]
        self.script: dict[tuple[str, str], list] = {}
        self.always: dict[tuple[str, str], tuple] = {}
        self.hits: Counter = Counter()
        self.times: list[float] = []
        self.unauthorized = 0
        self.lock = threading.Lock()

    def answer(self, path: str, query: dict[str, str], auth: str | None):
        page_key = query.get("page") or query.get("offset") or query.get("cursor") or ""
        key = (path, page_key)
        with self.lock:
            self.hits[key] += 1
            self.times.append(time.monotonic())
            if auth != f"Bearer {TOKEN}":
                self.unauthorized += 1
                return 401, {}, {"error": "unauthorized"}
            if key in self.always:
                return self.always[key]
            queued = self.script.get(key)
            if queued:
                return queued.pop(0)
        n = len(self.records)
        if path == "/count":
            return 200, {}, {"count": n}
        if path == "/items":
            size, page = int(query.get("per_page", 10)), int(query["page"])
            chunk = self.records[(page - 1) * size : page * size]
            return 200, {}, {"data": chunk, "meta": {"total": n, "page": page}}
        if path == "/offset":
            off, lim = int(query["offset"]), int(query.get("limit", 10))
            return 200, {}, {"results": self.records[off : off + lim]}
        if path == "/cursor":
            start = int(query.get("cursor", "0"))
            chunk = self.records[start : start + 20]
            nxt = str(start + 20) if start + 20 < n else None
            return 200, {}, {"items": chunk, "next": nxt}
        return 404, {}, {"error": "not found"}


def serve(api: FakeApi):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            result = api.answer(parts.path, query, self.headers.get("Authorization"))
            if isinstance(result, str) and result.startswith("sleep:"):
                time.sleep(float(result.split(":")[1]))
                result = api.answer(parts.path, query, self.headers.get("Authorization"))
            status, headers, body = result
            if body == ECHO:  # the request's headers, as some servers show them on an error page
                body = "".join(f"{k}: {v}\n" for k, v in self.headers.items()).encode()
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            headers = {"Content-Type": "application/json", **headers}
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):  # keep the test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def api():
    fake = FakeApi()
    server, thread = serve(fake)
    fake.base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def token_env(monkeypatch):
    monkeypatch.setenv("TEST_API_TOKEN", TOKEN)


AUTH = {"Authorization": "Bearer ${TEST_API_TOKEN}"}


def items(api, **kw) -> HttpSource:
    opts = dict(
        records="data",
        total="meta.total",
        page_size=10,
        pages_per_unit=3,
        headers=AUTH,
        retries=2,
    )
    opts.update(kw)
    return HttpSource(api.base + "/items", **opts)


def load_all(src: HttpSource, mode: str = "quarantine"):
    from dbatch.batching import make_batches

    batches = make_batches(src.list_units(), ByCount(1))
    out, ctxs = [], []
    for b in batches:
        ctx = BatchContext(batch=b, mode=mode)
        out.append(src.load(b, ctx))
        ctxs.append(ctx)
    return batches, out, ctxs


def test_page_pagination_plans_page_ranges_and_reads_every_record_once(api, token_env):
    src = items(api)
    units = src.list_units()
    # 95 records, 10 per page -> 10 pages -> units of 3 pages: 3 + 3 + 3 + 1.
    assert [u.key for u in units] == ["pages:1-3", "pages:4-6", "pages:7-9", "pages:10-12"]
    assert dict(units[-1].identity)["records"] == 5
    batches, tables, ctxs = load_all(src)
    ids = [i for t in tables for i in t.column("id").to_pylist()]
    assert ids == list(range(95))
    assert sum(c.rows_in for c in ctxs) == 95
    assert api.unauthorized == 0


def test_offset_pagination_with_a_count_endpoint(api, token_env):
    src = HttpSource(
        api.base + "/offset",
        pagination="offset",
        records="results",
        size_param="limit",
        page_size=20,
        pages_per_unit=2,
        count_url=api.base + "/count",
        headers=AUTH,
    )
    units = src.list_units()
    assert [u.key for u in units] == ["offsets:0-39", "offsets:40-79", "offsets:80-119"]
    _, tables, _ = load_all(src)
    assert [i for t in tables for i in t.column("id").to_pylist()] == list(range(95))


@pytest.mark.parametrize("n", [0, 7, 10, 40, 95])
def test_probing_finds_the_last_page_without_a_count(api, token_env, n):
    api.records = api.records[:n]
    src = items(api, total=None, pages_per_unit=2)
    units = src.list_units()
    assert sum(dict(u.identity)["records"] for u in units) == n
    assert sum(api.hits.values()) <= 2 * max(1, (n // 10 + 1).bit_length()) + 2
    if n:
        _, tables, _ = load_all(src)
        assert sum(t.num_rows for t in tables) == n


def test_cursor_api_is_one_unit_walked_in_order(api, token_env):
    src = HttpSource(
        api.base + "/cursor", pagination="cursor", records="items", size_param=None, headers=AUTH
    )
    units = src.list_units()
    assert [u.key for u in units] == ["cursor:all"]
    _, tables, _ = load_all(src)
    assert tables[0].column("id").to_pylist() == list(range(95))
    # The unit's identity follows the first page: new data there means a new fingerprint.
    before = units[0].identity
    api.records.insert(0, {"id": -1, "name": "new", "amount": 0.0})
    assert src.list_units()[0].identity != before


def test_429_waits_for_retry_after_then_succeeds(api, token_env):
    api.script[("/items", "2")] = [(429, {"Retry-After": "1"}, {"error": "slow down"})]
    src = items(api, pages_per_unit=10)
    started = time.monotonic()
    _, tables, _ = load_all(src)
    assert sum(t.num_rows for t in tables) == 95
    assert api.hits[("/items", "2")] == 2
    assert time.monotonic() - started >= 1.0


def test_5xx_exhausting_local_retries_raises_transient_with_redacted_url(api, token_env):
    api.always[("/items", "5")] = (503, {"Retry-After": "0"}, {"error": "down"})
    src = items(api, params={"api_key": "do-not-show"}, retries=2)
    from dbatch.batching import make_batches

    batch = make_batches(src.list_units(), ByCount(1))[1]  # pages 4-6
    with pytest.raises(TransientError) as info:
        src.load(batch, BatchContext(batch=batch))
    err = info.value
    assert is_transient(err) and err.retry_after == 0
    assert api.hits[("/items", "5")] == 3  # first try + 2 retries
    text = str(err)
    assert "/items" in text and "503" in text and "api_key=***" in text
    assert "do-not-show" not in text and TOKEN not in text


def test_retry_after_longer_than_max_wait_goes_back_to_the_runner(api, token_env):
    api.always[("/items", "1")] = (429, {"Retry-After": "120"}, {})
    src = items(api, total=None, max_wait=5)
    started = time.monotonic()
    with pytest.raises(TransientError) as info:
        src.list_units()
    assert info.value.retry_after == 120  # the runner waits (capped by retry.backoff-max)
    # Given back at once (not after 120 s); the margin is for a loaded machine.
    assert time.monotonic() - started < 30 and api.hits[("/items", "1")] == 1


def test_timeouts_are_retried_then_transient(api, token_env):
    api.always[("/items", "1")] = "sleep:0.6"
    src = items(api, total=None, timeout=0.2, retries=1)
    with pytest.raises(TransientError, match="no answer within 0.2 s"):
        src.list_units()


def test_wrong_credentials_are_a_clear_permanent_error(api, monkeypatch):
    monkeypatch.setenv("TEST_API_TOKEN", "wrong-value")
    src = items(api)
    with pytest.raises(SourceError) as info:
        src.list_units()
    text = str(info.value)
    assert "401" in text and "TEST_API_TOKEN" in text and "wrong-value" not in text
    assert not is_transient(info.value)


def test_missing_environment_variable_is_named_at_build_time(monkeypatch):
    monkeypatch.delenv("TEST_API_TOKEN", raising=False)
    with pytest.raises(JobSpecError, match="TEST_API_TOKEN is not set"):
        HttpSource("http://127.0.0.1:9/items", headers=AUTH)


def test_garbage_page_is_quarantined_and_the_rest_is_read(api, token_env):
    api.always[("/items", "5")] = (200, {}, b"<html>502 Bad Gateway</html>")
    src = items(api)
    batches, tables, ctxs = load_all(src)
    assert sum(t.num_rows for t in tables) == 85
    [bad] = [f for c in ctxs for f in c.files]
    assert bad.kind == "bad_response" and "page=5" in bad.key
    assert "not JSON" in bad.message and "Bad Gateway" in bad.message
    with pytest.raises(BadInputError, match="page=5"):
        load_all(src, mode="fail_fast")


def test_answer_without_the_records_list_is_named(api, token_env):
    batches, tables, ctxs = load_all(items(api, records="rows"))
    assert sum(t.num_rows for t in tables) == 0
    files = [f for c in ctxs for f in c.files]
    assert len(files) == 10  # every page set aside, each with its URL and the reason
    assert all("no list of records at 'rows'" in f.message for f in files)


def test_schema_casts_and_quarantines_bad_records(api, token_env):
    api.records[3] = {"id": "three", "name": "x", "amount": 1.0}
    api.records[4] = "not an object"
    src = items(api, schema={"id": "int64", "name": "string", "amount": "float64"})
    _, tables, ctxs = load_all(src)
    assert sum(t.num_rows for t in tables) == 93
    assert tables[0].schema.field("id").type == "int64"
    bad = ctxs[0].quarantined_rows().to_pylist()
    assert sorted(r["kind"] for r in bad) == ["json", "type"]
    assert sum(c.rows_in for c in ctxs) == 95


def test_rate_limit_spaces_requests(api, token_env):
    src = items(api, rate_limit=10, pages_per_unit=10)
    load_all(src)
    gaps = [b - a for a, b in zip(api.times, api.times[1:], strict=False)]
    assert len(api.times) >= 11
    assert min(gaps) >= 0.08  # 10 per second, with a little clock slack


def test_secrets_never_reach_repr_plan_or_token(api, token_env):
    src = items(api, params={"token": "param-secret"})
    shown = " ".join([repr(src), src.describe(), json.dumps(src.token())])
    assert TOKEN not in shown and "param-secret" not in shown
    assert redact_text("http://u:pw@h/x?token=abc&page=2") == "http://***@h/x?token=***&page=2"


def test_run_commits_unaffected_batches_when_one_page_keeps_failing(
    api, token_env, tmp_path, client
):
    api.always[("/items", "8")] = (500, {}, {"error": "boom"})
    api.always[("/items", "2")] = (200, {}, b"{garbage")
    pipeline = Pipeline(
        items(api, retries=1),
        ParquetSink(str(tmp_path / "out")),
        batching=ByCount(1),
        name="api",
        workdir=str(tmp_path / "work"),
    )
    result = pipeline.run(client=client)
    assert result.status == "failed"
    assert result.committed == 3 and result.failed == 1
    assert result.files_quarantined == 1  # the garbage page; its batch still committed
    ledger = (tmp_path / "work" / "ledger.sqlite").read_bytes()
    assert TOKEN.encode() not in ledger
    [failed] = [b for b in result.batches if b["state"] == "failed"]
    assert "/items" in failed["error_message"] and TOKEN not in failed["error_message"]
    # Once the API recovers, only the failed batch runs and the output is complete.
    api.always.clear()
    again = pipeline.run(client=client)
    assert again.status == "succeeded" and again.committed == 1 and again.skipped == 3
    frame = pd.read_parquet(tmp_path / "out")
    assert sorted(frame["id"]) == [i for i in range(95) if not 10 <= i < 20]
    # Replaying the batch with the quarantined page completes the output.
    replayed = pipeline.run(client=client, replay=True)
    assert replayed.committed == 1, replayed
    assert sorted(pd.read_parquet(tmp_path / "out")["id"]) == list(range(95))


def test_job_file_reads_the_token_from_the_environment(api, token_env, tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(
        f"""
name: api_job
source:
  type: http
  url: {api.base}/items
  records: data
  total: meta.total
  page_size: 10
  pages_per_unit: 5
  headers:
    Authorization: "Bearer ${{TEST_API_TOKEN}}"
  rate_limit: 50
sink:
  type: parquet
  path: out
"""
    )
    pipeline = load_job(job).pipeline
    plan = pipeline.plan()
    assert len(plan) == 1  # two units of 5 pages, grouped by the default size batching
    assert TOKEN not in repr(pipeline) and TOKEN not in repr(plan)
    frame = pipeline.preview(rows=None)
    assert len(frame) == 95


def test_a_token_echoed_by_the_server_is_hidden_from_everything_dbatch_writes(
    api, token_env, tmp_path, client, caplog
):
    import logging

    import pyarrow.parquet as pq

    from dbatch import Alert, Derive

    api.always[("/items", "2")] = (200, {"Content-Type": "text/plain"}, ECHO)  # quarantined
    api.records[41] = {"id": f"Bearer {TOKEN}", "name": "x", "amount": 1.0}  # a bad record
    api.records[42] = {"id": 42, "name": f"Bearer {TOKEN}", "amount": 1.0}
    schema = {"id": "int64", "name": "string", "amount": "float64"}
    pipeline = Pipeline(
        items(api, retries=0, schema=schema),
        ParquetSink(str(tmp_path / "out")),
        batching=ByCount(1),
        name="echo",
        workdir=str(tmp_path / "work"),
        max_bad_fraction=1.0,
    )
    alerted = tmp_path / "alert.json"
    alert = Alert(on=["failed"], command=f"cat > {alerted}", shell=True)
    # A step whose error quotes the value: the batch fails, its message names the row.
    failing = pipeline.replace(
        name="echo-fails",
        sink=ParquetSink(str(tmp_path / "out-fails")),  # one output path, one job
        steps=[Derive({"n": "CASE WHEN name LIKE 'Bearer%' THEN CAST(name AS INTEGER) END"})],
    )
    with caplog.at_level(logging.INFO, logger="dbatch"):
        result = pipeline.run(client=client)
        failed_run = failing.run(client=client, listeners=[alert])
    assert result.ok and result.files_quarantined == 1 and result.rows_quarantined == 1, result
    quarantine = tmp_path / "work" / "echo" / "quarantine.parquet"
    rows = pq.read_table(quarantine).to_pylist()
    page = next(r for r in rows if r["kind"] == "bad_response")
    assert "Authorization: Bearer ***" in page["reason"]  # the echo is kept, the token is not
    record = next(r for r in rows if r["kind"] == "type")
    assert "Bearer ***" in record["raw"] and "Bearer ***" in record["reason"]
    assert failed_run.failed == 1, failed_run
    [failed] = [b for b in failed_run.batches if b["state"] == "failed"]
    assert "Bearer ***" in failed["error_message"]
    written = [quarantine, tmp_path / "work" / "ledger.sqlite", alerted]
    written += sorted((tmp_path / "work").rglob("_result.json"))
    written += sorted((tmp_path / "work").rglob("_quarantine.parquet"))
    assert len(written) > 5
    for f in written:
        assert TOKEN.encode() not in f.read_bytes(), f
    assert "Bearer ***" in alerted.read_text()
    assert TOKEN not in caplog.text and TOKEN not in str(failed_run)
