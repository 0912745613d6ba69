"""Alerts: webhooks received by a real HTTP server on 127.0.0.1, commands, and runs never broken."""

from __future__ import annotations

import json
import logging
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dbatch import ByCount, Files, JobSpecError, ParquetSink, Pipeline
from dbatch.monitor.alerts import Alert
from dbatch.spec import load_job
from dbatch.testing import RaiseOn


class Hook(ThreadingHTTPServer):
    """A webhook receiver: keeps every request and answers with ``status``."""

    status = 200

    def __init__(self):
        self.received: list[dict] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/dbatch"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - the http.server hook name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append(
            {
                "path": self.path,
                "type": self.headers["Content-Type"],
                "body": json.loads(body),
                "auth": self.headers.get("Authorization"),
            }
        )
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture
def hook():
    server = Hook()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def pipeline(tmp_path: Path, files: int = 3, schema=None) -> Pipeline:
    (tmp_path / "in").mkdir(exist_ok=True)
    for f in range(files):
        rows = ["id,amount"] + [f"{f}-{i},{i}" for i in range(4)]
        (tmp_path / "in" / f"part-{f}.csv").write_text("\n".join(rows) + "\n")
    return Pipeline(
        Files(str(tmp_path / "in" / "*.csv"), schema=schema),
        ParquetSink(str(tmp_path / "out")),
        batching=ByCount(1),
        name="alerting",
        workdir=str(tmp_path / "work"),
    )


def test_webhook_gets_one_post_for_a_failed_run(tmp_path, client, hook):
    p = pipeline(tmp_path)
    bad = p.plan()[1].id
    alert = Alert(on=["failed"], webhook=hook.url)
    result = p.run(client=client, fault=RaiseOn((bad,)), listeners=[alert])
    assert result.status == "failed"
    [post] = hook.received
    assert post["path"] == "/hooks/dbatch" and post["type"] == "application/json"
    body = post["body"]
    assert body["run_id"] == result.run_id and body["job"] == "alerting"
    assert body["status"] == "failed" and body["on"] == ["failed"]
    assert body["counts"]["batches_failed"] == 1 and body["counts"]["batches_committed"] == 2
    assert body["message"] == result.message and "dbatch resume" in body["message"]
    assert body["errors"][0]["batch_id"] == bad
    assert "injected failure" in body["errors"][0]["error_message"]
    assert body["dashboard"] == client.dashboard_link and body["dashboard"].startswith("http")

    # Fixed: the next run succeeds, and an alert on [failed] stays quiet.
    fixed = p.run(client=client, listeners=[alert])
    assert fixed.status == "succeeded" and fixed.committed == 1
    assert len(hook.received) == 1


def test_alert_on_quarantine_is_sent_once_not_for_old_news(tmp_path, client, hook):
    p = pipeline(tmp_path, schema={"id": "string", "amount": "int64"})
    with open(tmp_path / "in" / "part-0.csv", "a") as f:
        f.write("0-bad,not-a-number\n")
    alert = Alert(on=["quarantined"], webhook=hook.url)
    first = p.run(client=client, listeners=[alert])
    assert first.rows_quarantined == 1
    [post] = hook.received
    assert post["body"]["on"] == ["quarantined"]
    assert post["body"]["new_quarantine"] == {"batches": 0, "rows": 1, "files": 0}
    again = p.run(client=client, listeners=[alert])
    assert again.status == "nothing_to_do" and again.rows_quarantined == 1  # still counted
    assert len(hook.received) == 1  # but not news, so no second alert


def test_a_webhook_answering_500_never_breaks_the_run(tmp_path, client, hook, caplog):
    hook.status = 500
    secret_url = hook.url.replace("http://", "http://ops:hunter2@") + "?token=s3cr3t-t0ken"
    alert = Alert(on=["finished"], webhook=secret_url, retries=2, backoff=0.01)
    with caplog.at_level(logging.WARNING, logger="dbatch"):
        result = pipeline(tmp_path).run(client=client, listeners=[alert])
    assert result.status == "succeeded"
    assert len(hook.received) == 3  # one try and two retries
    assert hook.received[0]["auth"] is not None  # the credentials were used...
    warning = "\n".join(r.getMessage() for r in caplog.records)
    assert "not delivered" in warning and "HTTP 500" in warning and "3 attempt(s)" in warning
    for secret in ("hunter2", "s3cr3t-t0ken", "ops:", "/hooks/dbatch"):  # ...and never logged
        assert secret not in warning and secret not in repr(alert)


def test_an_unreachable_webhook_logs_without_secrets(caplog):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    alert = Alert(webhook=f"http://127.0.0.1:{port}/x/abc123?key=zzz999", retries=1, backoff=0.01)
    with caplog.at_level(logging.WARNING, logger="dbatch"):
        assert not alert.send({"run_id": "r1", "job": "j"})
    warning = caplog.records[-1].getMessage()
    assert "ConnectionError" in warning and "2 attempt(s)" in warning
    assert "zzz999" not in warning and "abc123" not in warning
    assert f"http://127.0.0.1:{port}/…" in warning


def test_command_gets_the_json_on_stdin_and_a_failing_one_only_warns(tmp_path, client, caplog):
    out = tmp_path / "alert.json"
    write = "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text(sys.stdin.read())"
    ok = Alert(on=["succeeded"], command=[sys.executable, "-c", write, str(out)])
    failing = Alert(on=["finished"], command=f"{sys.executable} -c 'import sys; sys.exit(3)'")
    missing = Alert(on=["finished"], command="no-such-notifier --now")
    with caplog.at_level(logging.WARNING, logger="dbatch"):
        result = pipeline(tmp_path).run(client=client, listeners=[failing, ok, missing])
    assert result.status == "succeeded"
    body = json.loads(out.read_text())
    assert body["run_id"] == result.run_id and body["counts"]["rows_in"] == 12
    messages = [r.getMessage() for r in caplog.records]
    assert any("exit status 3" in m for m in messages)
    assert any("'no-such-notifier'" in m and "FileNotFoundError" in m for m in messages)


def test_alert_settings_are_checked():
    with pytest.raises(JobSpecError, match="unknown alert condition"):
        Alert(on=["exploded"], webhook="https://hooks.example.org/x")
    with pytest.raises(JobSpecError, match="webhook URL or a command"):
        Alert(on=["failed"])
    with pytest.raises(JobSpecError, match="http:// or https://"):
        Alert(webhook="ftp://example.org/x")
    with pytest.raises(JobSpecError, match="retries"):
        Alert(webhook="https://example.org/x", retries=-1)
    assert Alert(on="failed", webhook="https://h.example.org/a").on == ("failed",)


def test_alerts_in_job_files(tmp_path):
    (tmp_path / "notify.sh").write_text("#!/bin/sh\ncat > /dev/null\n")
    base = (
        "source: {type: files, path: in/*.csv}\n"
        "sink: {type: parquet, path: out}\n"
    )  # fmt: skip
    path = tmp_path / "job.yaml"
    path.write_text(
        base
        + "alerts:\n"
        + "  - {on: [failed, quarantined], webhook: 'https://hooks.example.org/T1/XYZ'}\n"
        + "  - {on: failed, command: './notify.sh --urgent', timeout: 3}\n"
    )
    webhook, command = load_job(path).alerts
    assert webhook.on == ("failed", "quarantined") and webhook.webhook.endswith("/T1/XYZ")
    assert (
        command.command == (str(tmp_path.resolve() / "notify.sh"), "--urgent")
        and command.timeout == 3
    )
    for alerts, key, words in (
        ("[{on: [failed], webhook: 'https://h.example.org', wat: 1}]", "alerts[0]", "unknown key"),
        ("[{on: [sometimes], webhook: 'https://h.example.org'}]", "alerts[0].on", "condition"),
        ("{on: failed}", "alerts", "expected a list"),
        ("[{on: [failed], command: 7}]", "alerts[0].command", "command line"),
    ):
        path.write_text(base + f"alerts: {alerts}\n")
        with pytest.raises(JobSpecError) as info:
            load_job(path)
        assert str(info.value).startswith(f"{path}: key '{key}': "), str(info.value)
        assert words in str(info.value)


def test_a_shell_command_is_an_explicit_choice(tmp_path, client):
    out = tmp_path / "from-shell.json"
    shell_line = f"cat > '{out}'"
    plain = Alert(on=["succeeded"], command=shell_line)  # no shell: '>' is just an argument
    shelled = Alert(on=["succeeded"], command=shell_line, shell=True)
    result = pipeline(tmp_path).run(client=client, listeners=[plain, shelled])
    assert result.status == "succeeded"
    assert json.loads(out.read_text())["run_id"] == result.run_id
    assert not (tmp_path / ">").exists()
    with pytest.raises(JobSpecError, match="shell: true needs the command as one line"):
        Alert(on=["failed"], command=["cat"], shell=True)
    with pytest.raises(JobSpecError, match="true or false"):
        Alert(on=["failed"], command="cat", shell="yes")


def test_a_job_file_alert_with_shell_true(tmp_path):
    from dbatch.monitor.alerts import alerts_from_config

    [alert] = alerts_from_config(
        [{"on": ["failed"], "command": "cat > out.json", "shell": True}],
        file=None,
        base_dir=tmp_path,
    )
    assert alert.shell and alert.command == "cat > out.json"
