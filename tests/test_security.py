"""Safe defaults: loopback listeners, TLS for remote schedulers, no path escapes, no leaked secrets."""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import logging
import os
import socketserver
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import dask
import pandas as pd
import psutil
import pyarrow as pa
import pytest
import sqlalchemy as sa

import dbatch
from dbatch import ByCount, Files, ParquetSink, Pipeline, SqlSink, SqlSource
from dbatch.cluster import _local_client, is_loopback_address
from dbatch.cluster.remote import check_security
from dbatch.errors import InsecureConnectionError, LedgerError, PathEscapeError
from dbatch.ledger import batches, locks, runs
from dbatch.sinks.base import safe_join
from dbatch.spec import load_job
from dbatch.testing import EventLog

# -- every listener on 127.0.0.1 ------------------------------------------------------------


def _listeners(pid: int) -> set[tuple[str, int]]:
    conns = psutil.Process(pid).net_connections(kind="inet")
    return {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}


def test_local_cluster_listens_on_loopback_only(tmp_path):
    before = _listeners(os.getpid())
    # What dbatch.connect() starts when there is no client (here the test session has one).
    client = _local_client(2, 1)
    try:
        cluster = client.cluster
        mine = _listeners(os.getpid()) - before  # scheduler, dashboard, nannies: in this process
        workers = {pid: _listeners(pid) for pid in client.run(os.getpid).values()}
        ports = {port for _, port in mine}
        assert urlparse(client.scheduler.address).port in ports
        assert urlparse(client.dashboard_link).port in ports  # the dashboard is there too
        for nanny in cluster.workers.values():
            assert urlparse(nanny.address).port in ports
        assert len(workers) == 2 and all(workers.values())
        everything = mine | set().union(*workers.values())
        assert everything, "found no listening sockets"
        for ip, port in everything:
            assert ip == "127.0.0.1", f"listening on {ip}:{port}"
        # The dashboard answers on the loopback address.
        import requests

        assert requests.get(client.dashboard_link, timeout=10).status_code == 200
    finally:
        client.close()
        cluster.close()


# -- TLS for schedulers that are not on this machine ------------------------------------


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("tcp://127.0.0.1:8786", True),
        ("127.0.0.5:8786", True),
        ("localhost:8786", True),
        ("tcp://[::1]:8786", True),
        ("tcp://0.0.0.0:8786", False),
        ("tcp://192.0.2.10:8786", False),
        ("tcp://scheduler.example.org:8786", False),
    ],
)
def test_is_loopback_address(address, loopback):
    assert is_loopback_address(address) is loopback


def test_a_remote_scheduler_without_tls_is_refused(tmp_path):
    # Refused before any connection is attempted (192.0.2.0/24 is reserved for documentation).
    with pytest.raises(InsecureConnectionError, match="tls://"):
        dbatch.connect("tcp://192.0.2.10:8786")
    scheduler_file = tmp_path / "scheduler.json"
    scheduler_file.write_text('{"address": "tcp://192.0.2.10:8786"}')
    with pytest.raises(InsecureConnectionError):
        dbatch.connect(str(scheduler_file))
    check_security("tls://192.0.2.10:8786", None, insecure=False)  # TLS: allowed


def test_insecure_flag_allows_it_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="dbatch"):
        check_security("tcp://192.0.2.10:8786", None, insecure=True)
    assert "without TLS" in caplog.text and "192.0.2.10" in caplog.text
    caplog.clear()
    with dask.config.set({"dbatch.cluster.allow-insecure": True}), caplog.at_level(logging.WARNING):
        check_security("tcp://192.0.2.10:8786", None, insecure=False)
    assert "without TLS" in caplog.text


def _ca(name: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca_key, ca_cert, name: str, folder: Path, addresses: tuple[str, ...] = ("127.0.0.1",)
) -> tuple[str, str]:
    """A certificate and key for ``name`` (valid for localhost and ``addresses``), signed by the CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost")]
                + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


@pytest.fixture
def tls_cluster(tmp_path):
    """A scheduler and worker that speak TLS only, with certificates made here."""
    from cryptography.hazmat.primitives import serialization
    from distributed import LocalCluster, Security

    ca_key, ca_cert = _ca("dbatch test CA")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    server_cert, server_key = _leaf(ca_key, ca_cert, "scheduler", tmp_path)
    worker_cert, worker_key = _leaf(ca_key, ca_cert, "worker", tmp_path)
    client_cert, client_key = _leaf(ca_key, ca_cert, "client", tmp_path)
    other_key, other_cert = _ca("another CA")
    rogue_cert, rogue_key = _leaf(other_key, other_cert, "rogue", tmp_path)

    def security(cert: str, key: str) -> Security:
        return Security(
            tls_ca_file=str(ca_file),
            tls_client_cert=cert,
            tls_client_key=key,
            tls_scheduler_cert=server_cert,
            tls_scheduler_key=server_key,
            tls_worker_cert=worker_cert,
            tls_worker_key=worker_key,
            require_encryption=True,
        )

    with (
        dask.config.set({"distributed.comm.timeouts.connect": "3s"}),
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=False,
            protocol="tls://",
            host="127.0.0.1",
            security=security(worker_cert, worker_key),
            dashboard_address=None,
        ) as cluster,
    ):
        yield {
            "address": cluster.scheduler_address,
            "good": security(client_cert, client_key),
            # Trusts the right CA, but presents a certificate signed by another one.
            "rogue": security(rogue_cert, rogue_key),
        }


def test_tls_scheduler_accepts_its_ca_and_rejects_another(tls_cluster, tmp_path):
    address = tls_cluster["address"]
    assert address.startswith("tls://127.0.0.1:")
    client = dbatch.connect(address, security=tls_cluster["good"], show_link=False)
    try:
        (tmp_path / "in").mkdir()
        (tmp_path / "in" / "a.csv").write_text("id,v\na,1\nb,2\n")
        pipeline = Pipeline(
            Files(str(tmp_path / "in" / "*.csv")),
            ParquetSink(str(tmp_path / "out")),
            name="tls",
            workdir=str(tmp_path / "work"),
        )
        assert pipeline.run(client=client).status == "succeeded"  # a whole run over TLS
    finally:
        client.close()
    assert len(pd.read_parquet(tmp_path / "out")) == 2

    class Remember(logging.Handler):
        def __init__(self):
            super().__init__(logging.WARNING)
            self.messages: list[str] = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    seen = Remember()
    comm_log = logging.getLogger("distributed.comm.tcp")
    comm_log.addHandler(seen)
    try:
        with pytest.raises((OSError, TimeoutError)):
            dbatch.connect(address, security=tls_cluster["rogue"], show_link=False)
        # The scheduler logs the refused handshake on its own event-loop thread, which
        # may happen a moment after the client has given up: wait for it.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(
            "certificate verify failed" in m for m in seen.messages
        ):
            time.sleep(0.05)
    finally:
        comm_log.removeHandler(seen)
    # Rejected by the scheduler for its certificate, not for some other reason.
    assert any("certificate verify failed" in m for m in seen.messages), seen.messages
    with pytest.raises((OSError, TimeoutError)):  # no TLS at all
        dbatch.connect(address.replace("tls://", "tcp://"), show_link=False)


# -- output paths built from data stay below the output root ---------------------------


ESCAPES = ["..", "../x", "/abs", "%2e%2e", "%2e%2e%2fx", "..%252f..", "a/b", "a\\..\\b"]


@pytest.mark.parametrize("part", [*ESCAPES, "~", ""])
def test_safe_join_refuses_escaping_parts(part, tmp_path):
    with pytest.raises(PathEscapeError):
        safe_join(tmp_path, part)


@pytest.mark.parametrize("value", ESCAPES)
def test_safe_join_refuses_escaping_partition_values(value, tmp_path):
    with pytest.raises(PathEscapeError):
        safe_join(tmp_path, f"region={value}")


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.mark.parametrize("payload", ["../x", "/abs", "%2e%2e", "..%2f..%2fx", "..", "a/../../x"])
def test_partition_values_cannot_escape_the_output(payload, tmp_path, client):
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    (tmp_path / "in").mkdir()
    # A clean file and one whose partition value is an attack.
    (tmp_path / "in" / "a.csv").write_text("id,region\n1,EU\n2,US\n")
    pq.write_table(
        pa.table({"id": [3, 4], "region": [payload, "EU"]}), tmp_path / "in" / "b.parquet"
    )
    before = _files_under(tmp_path.parent)
    pipeline = Pipeline(
        Files(str(tmp_path / "in" / "*"), schema={"id": "int64", "region": "string"}),
        ParquetSink(str(tmp_path / "out" / "result"), partition_by=("region",)),
        batching=ByCount(1),
        name="traversal",
        workdir=str(tmp_path / "work"),
    )
    result = pipeline.run(client=client)
    assert result.ok and result.committed == 2, result
    new = _files_under(tmp_path.parent) - before
    below = (tmp_path / "work", tmp_path / "out")
    assert all(any(r == p or r in p.parents for r in below) for p in new), sorted(new)
    assert not Path("/abs").exists()
    back = ds.dataset(tmp_path / "out" / "result", partitioning="hive").to_table().to_pylist()
    landed = sorted((r["id"], r["region"]) for r in back)
    if payload == "..":  # no folder can be named so: that row is quarantined, the rest lands
        assert landed == [(1, "EU"), (2, "US"), (4, "EU")]
        bad = result.quarantine()
        assert bad["kind"].tolist() == ["path_escape"] and "'..'" in bad["reason"][0]
    else:  # percent-encoded into one folder of the output, read back as it was
        assert landed == [(1, "EU"), (2, "US"), (3, payload), (4, "EU")]


def test_symlinks_planted_in_the_output_are_refused(tmp_path, client):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.parquet").write_bytes(b"not for publishing")
    sink = ParquetSink(str(tmp_path / "out" / "result"), partition_by=("region",))

    # A worker staging into a folder where a partition folder is a link to elsewhere.
    staging = tmp_path / "staging"
    staging.mkdir()
    os.symlink(outside, staging / "region=EU")
    with pytest.raises(PathEscapeError):
        sink.stage(pa.table({"id": [1], "region": ["EU"]}), staging, name="b-1")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.parquet"]

    # A committed batch whose file was swapped for a link to a file outside.
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id,region\n1,EU\n")
    pipeline = Pipeline(
        Files(str(tmp_path / "in" / "*.csv")),
        sink,
        batching=ByCount(1),
        name="planted",
        workdir=str(tmp_path / "work"),
    )
    assert pipeline.run(client=client).status == "succeeded"
    published = sorted((tmp_path / "out" / "result").rglob("*.parquet"))
    [committed] = list((tmp_path / "work" / "planted" / "batches").rglob("part-*.parquet"))
    committed.unlink()
    os.symlink(outside / "secret.parquet", committed)
    (tmp_path / "in" / "b.csv").write_text("id,region\n2,US\n")  # forces a new publish
    with pytest.raises(PathEscapeError, match="symbolic link"):
        pipeline.run(client=client)
    assert sorted((tmp_path / "out" / "result").rglob("*.parquet")) == published

    # The folder of output versions replaced by a link to elsewhere.
    versions = tmp_path / "out" / ".result.versions"
    os.rename(versions, tmp_path / "versions-moved")
    os.symlink(outside, versions)
    fresh = Pipeline(
        Files(str(tmp_path / "in" / "b.csv")), sink, name="planted2", workdir=str(tmp_path / "w2")
    )
    with pytest.raises(PathEscapeError, match="symbolic link"):
        fresh.run(client=client)
    assert sorted(p.name for p in outside.iterdir()) == ["secret.parquet"]


# -- credentials stay out of errors, logs and the ledger --------------------------------


class _Server(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "20")
        self.end_headers()

    def do_GET(self):  # noqa: N802
        self.send_response(503)  # every read fails, as during an outage
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_url():
    server = socketserver.TCPServer(("127.0.0.1", 0), _Server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


SECRET = "S3cr3t-Pa55"


def _ledger_text(url: str, job: str) -> str:
    engine = sa.create_engine(url)
    with engine.connect() as con:
        rows = [
            con.execute(sa.select(t).where(t.c.job == job)).mappings().all()
            for t in (runs, batches, locks)
        ]
    engine.dispose()
    return repr(rows)


@pytest.mark.postgres
def test_credentials_never_reach_errors_logs_or_the_ledger(
    tmp_path, client, http_url, postgres_url, caplog
):
    import uuid

    job = f"secrets-{uuid.uuid4().hex[:8]}"
    # The local server trusts local connections, so the password is accepted and ignored.
    ledger_url = postgres_url.replace("postgres@", f"postgres:{SECRET}@", 1)
    assert SECRET in ledger_url
    source_url = http_url.replace("http://", f"http://alice:{SECRET}@") + "/data/x.csv"
    source = Files(source_url, format="csv", storage_options={"headers": {"X-Token": SECRET}})
    pipeline = Pipeline(
        source,
        ParquetSink(str(tmp_path / "out")),
        name=job,
        workdir=str(tmp_path / "work"),
        ledger=ledger_url,
    )
    log = EventLog()
    try:
        # dbatch's own log at every level, everything else from INFO up (a library's own
        # debug output, such as fsspec's request log, is that library's business).
        with caplog.at_level(logging.INFO), caplog.at_level(logging.DEBUG, logger="dbatch"):
            shown = [repr(pipeline), repr(source), source.describe(), repr(pipeline.plan())]
            result = pipeline.run(client=client, listeners=[log])
            shown += [repr(result), str(result.to_dict()), repr(result.batches)]
            shown += [repr(e.data) for e in log.events]
            ledger = dbatch.Ledger(ledger_url)
            shown += [repr(ledger), ledger.runs_frame(job).to_string()]
            shown += [ledger.batches_frame(job).to_string()]
            ledger.close()
        assert result.status == "failed"  # the server answers 503 to every read
        failed = log.of("batch_failed")[0]
        assert failed.data["attempt"] == 3  # an HTTP 503 is transient: retried
        assert "503" in failed.data["error_message"]
        shown += [caplog.text, _ledger_text(ledger_url, job)]
        for text in shown:
            assert SECRET not in text

        # A ledger that cannot be reached: the error does not show the password either.
        with pytest.raises(LedgerError) as err:
            dbatch.Ledger(ledger_url.rsplit("/", 1)[0] + "/no_such_database")
        assert SECRET not in str(err.value) and "create the database" in str(err.value)
        with pytest.raises(dbatch.SourceError) as missing:
            Files("http://alice:" + SECRET + "@127.0.0.1:9/x.csv").list_units()
        assert SECRET not in str(missing.value)
    finally:
        engine = sa.create_engine(postgres_url)
        with engine.begin() as con:
            for table in (batches, runs, locks):
                con.execute(table.delete().where(table.c.job == job))
        engine.dispose()


def test_work_area_holds_no_pickles(tmp_path, client):
    """dbatch's own state files are JSON, Parquet and SQLite, never pickle."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id,v\na,1\nb,x\n")
    pipeline = Pipeline(
        Files(str(tmp_path / "in" / "*.csv"), schema={"id": "string", "v": "int64"}),
        ParquetSink(str(tmp_path / "out")),
        name="state",
        workdir=str(tmp_path / "work"),
    )
    assert pipeline.run(client=client).ok
    files = [p for p in (tmp_path / "work").rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {
        ".json",
        ".parquet",
        ".sqlite",
        ".sqlite-wal",
        ".sqlite-shm",
    }
    for p in files:
        head = p.read_bytes()[:2]
        assert not (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")), p


def test_reprs_of_database_sources_sinks_and_jobs_hide_passwords(tmp_path):
    """Printing a pipeline (a notebook cell, a traceback) never shows a database password."""
    url = "postgresql+psycopg://etl:s3cret-pw@db.example.org:5432/shop"
    source = SqlSource(
        url, table="orders", key="id", incremental=True, watermark_table="o", watermark_url=url
    )
    sink = SqlSink(url, table="orders_clean")
    pipeline = Pipeline(source, sink, name="pw")
    for shown in (repr(source), repr(sink), repr(pipeline)):
        assert "s3cret-pw" not in shown, shown
        assert "etl:***@db.example.org" in shown, shown
    job = tmp_path / "job.yaml"
    job.write_text(
        f"source: {{type: files, path: in/*.csv}}\nsink: {{type: sql, url: '{url}', table: t}}\n"
        f"ledger: '{url}'\n"
    )
    assert "s3cret-pw" not in repr(load_job(job))
