"""dbatch export: a crontab line that runs, systemd units systemd accepts, a CronJob the
Kubernetes client's models accept, and an Airflow DAG whose task fails when the run does."""

from __future__ import annotations

import ast
import json
import shlex
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from test_cli import write_job

from dbatch.cli import main
from dbatch.errors import JobSpecError
from dbatch.export import ExportTarget, cron_to_calendar, export, interval_cron
from dbatch.triggers import Arrival, Interval

#: This interpreter running this dbatch, as the exported command.
DBATCH = f"{shlex.quote(sys.executable)} -m dbatch.cli"


def scheduled_job(root: Path, schedule: str, n_files: int = 2) -> Path:
    job = write_job(root, n_files=n_files)
    job.write_text(job.read_text() + f"schedule: {schedule}\n")
    return job


def exported(root: Path, job: Path, to: str, *options: str) -> dict[str, str]:
    out = root / "exported"
    result = CliRunner().invoke(
        main, ["export", str(job), "--to", to, "-o", str(out), "--command", DBATCH, *options]
    )
    assert result.exit_code == 0, result.output
    return {p.name: p.read_text() for p in sorted(out.iterdir())}


# -- cron ------------------------------------------------------------------------------------


def test_the_crontab_line_runs_the_job_at_the_jobs_times(tmp_path):
    job = scheduled_job(tmp_path, '{cron: "15 3 * * *", tz: Europe/Berlin}')
    (text,) = exported(tmp_path, job, "cron").values()
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines[0] == "CRON_TZ=Europe/Berlin"
    fields = lines[1].split(" ", 5)
    assert " ".join(fields[:5]) == "15 3 * * *"
    # What cron would run, run by a shell here: the job runs and its summary lands in the log.
    done = subprocess.run(["sh", "-c", fields[5]], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "cli-test.cron.log").read_text().splitlines()[-1])
    assert summary["status"] == "succeeded" and summary["batches_committed"] == 2


def test_an_interval_becomes_cron_only_where_cron_says_the_same(tmp_path):
    assert interval_cron(60) == "* * * * *" and interval_cron(20 * 60) == "*/20 * * * *"
    assert interval_cron(3600) == "0 * * * *" and interval_cron(8 * 3600) == "0 */8 * * *"
    assert interval_cron(7 * 86400) == "0 0 * * 0"
    assert interval_cron(45 * 60) is None and interval_cron(90) is None
    target = ExportTarget("j", tmp_path / "j.yaml")
    with pytest.raises(JobSpecError, match="export --to systemd or airflow"):
        export("k8s-cronjob", Interval("45min"), target)
    with pytest.raises(JobSpecError, match="needs the watch loop"):
        export("cron", Arrival(count=3), target)
    with pytest.raises(JobSpecError, match="no schedule"):
        export("airflow", None, target)


def test_a_job_without_schedule_takes_one_from_the_command_line(tmp_path):
    job = write_job(tmp_path)
    refused = CliRunner().invoke(main, ["export", str(job), "--to", "cron"])
    assert refused.exit_code == 2 and "no schedule" in refused.output
    (text,) = exported(
        tmp_path, job, "cron", "--schedule", "0 4 * * 0", "--cluster", "hpc"
    ).values()
    assert "\n0 4 * * 0 cd " in text and "--json --cluster hpc >>" in text


# -- systemd ---------------------------------------------------------------------------------


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed: the units cannot be checked by systemd")
    return found


def test_systemd_accepts_the_service_and_timer(tmp_path):
    analyze = _systemd_analyze()
    job = scheduled_job(tmp_path, '{cron: "*/10 6-18 * * 1-5"}')
    units = exported(tmp_path, job, "systemd")
    assert sorted(units) == ["dbatch-cli-test.service", "dbatch-cli-test.timer"]
    assert (
        "OnCalendar=Mon..Fri *-*-* 06..18:00,10,20,30,40,50:00 UTC"
        in units["dbatch-cli-test.timer"]
    )
    service = units["dbatch-cli-test.service"]
    assert "Type=oneshot" in service and f"ExecStart={sys.executable} -m dbatch.cli run " in service
    folder = tmp_path / "exported"
    checked = subprocess.run(
        [analyze, "verify", *(str(folder / u) for u in units)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert "dbatch-cli-test" not in checked.stderr  # no complaint about our units at all


@pytest.mark.parametrize(
    "expression",
    ["30 2 * * 1-5", "*/15 * * * *", "0 6 1,15 * *", "0 6 1 * 0", "5 4 * 2-4,11 6", "@daily"],
)
def test_systemd_calendars_fire_when_cron_does(expression):
    """systemd's own calendar arithmetic against croniter's, from the same moment."""
    from croniter import croniter

    analyze = _systemd_analyze()
    base = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)
    expected = []
    it = croniter(expression, base)
    for _ in range(8):
        expected.append(it.get_next(datetime).strftime("%Y-%m-%d %H:%M:%S"))
    fires = set()
    for calendar in cron_to_calendar(expression, "UTC"):
        shown = subprocess.run(
            [
                analyze,
                "calendar",
                "--iterations=8",
                f"--base-time=@{int(base.timestamp())}",
                calendar,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env={"TZ": "UTC", "PATH": "/usr/bin:/bin"},
        )
        assert shown.returncode == 0, shown.stderr
        for line in shown.stdout.splitlines():
            if "elapse:" in line or "Iter." in line:
                day, clock = line.split()[-3:-1]
                fires.add(f"{day} {clock}")
    assert sorted(fires)[:8] == expected


def test_an_arrival_schedule_is_a_watch_service(tmp_path):
    analyze = _systemd_analyze()
    job = scheduled_job(tmp_path, "{arrival: {count: 5, poll: 1min}}")
    units = exported(tmp_path, job, "systemd")
    assert list(units) == ["dbatch-cli-test.service"]
    assert " -m dbatch.cli watch " in units["dbatch-cli-test.service"]
    checked = subprocess.run(
        [analyze, "verify", str(tmp_path / "exported" / "dbatch-cli-test.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr


# -- Kubernetes ------------------------------------------------------------------------------


def test_the_cronjob_is_a_valid_kubernetes_object(tmp_path):
    client = pytest.importorskip("kubernetes.client")
    job = scheduled_job(tmp_path, '{cron: "0 1 * * *", tz: America/New_York}')
    result = CliRunner().invoke(
        main,
        [
            "export",
            str(job),
            "--to",
            "k8s-cronjob",
            "--image",
            "registry.example.org/etl:1.4",
            "--cpu",
            "4",
            "--memory",
            "8Gi",
            "--claim",
            "etl-work",
            "--cluster",
            "k8s",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = yaml.safe_load(result.output)
    cronjob = client.ApiClient().deserialize(json.dumps(manifest), "V1CronJob", None)
    assert isinstance(cronjob, client.V1CronJob)
    assert (cronjob.api_version, cronjob.kind) == ("batch/v1", "CronJob")
    assert cronjob.metadata.name == "dbatch-cli-test"
    spec = cronjob.spec
    assert (spec.schedule, spec.time_zone, spec.concurrency_policy) == (
        "0 1 * * *",
        "America/New_York",
        "Forbid",
    )
    assert spec.job_template.spec.backoff_limit == 0
    pod = spec.job_template.spec.template.spec
    assert pod.restart_policy == "Never"
    (container,) = pod.containers
    assert container.image == "registry.example.org/etl:1.4"
    assert container.command == ["dbatch", "run", "/job/job.yaml", "--json", "--cluster", "k8s"]
    assert container.working_dir == "/job"
    assert container.resources.requests == {"cpu": "4", "memory": "8Gi"}
    assert container.resources.limits == {"memory": "8Gi"}
    (volume,) = pod.volumes
    assert volume.persistent_volume_claim.claim_name == "etl-work"
    assert container.volume_mounts[0].mount_path == "/var/lib/dbatch"
    assert {e.name: e.value for e in container.env} == {"DASK_DBATCH__WORKDIR": "/var/lib/dbatch"}
    # The models refuse what Kubernetes would: a container without a name.
    del manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["name"]
    with pytest.raises(ValueError, match="name"):
        client.ApiClient().deserialize(json.dumps(manifest), "V1CronJob", None)


# -- Airflow ---------------------------------------------------------------------------------


def _dag_call(tree: ast.Module, name: str) -> dict[str, object]:
    calls = [
        n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == name
    ]
    assert len(calls) == 1, name
    return {k.arg: k.value for k in calls[0].keywords}


def test_the_airflow_dag_runs_dbatch_and_fails_with_it(tmp_path):
    job = scheduled_job(tmp_path, "{every: 6h}")
    (text,) = exported(tmp_path, job, "airflow").values()
    tree = ast.parse(text)
    dag = _dag_call(tree, "DAG")
    assert ast.literal_eval(dag["dag_id"]) == "dbatch_cli_test"
    assert ast.unparse(dag["schedule"]) == "datetime.timedelta(seconds=21600)"
    assert (
        ast.literal_eval(dag["max_active_runs"]) == 1 and ast.literal_eval(dag["catchup"]) is False
    )
    task = _dag_call(tree, "BashOperator")
    command = ast.literal_eval(task["bash_command"])
    assert command.endswith(f"run {job} --json")
    # BashOperator fails its task on a non-zero exit: a run that cannot start exits 2.
    (tmp_path / "in").rename(tmp_path / "moved")
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "in/*.csv" in done.stderr
    (tmp_path / "moved").rename(tmp_path / "in")
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0 and json.loads(done.stdout)["status"] == "succeeded"


def test_airflow_loads_the_dag_when_it_is_installed(tmp_path):
    pytest.importorskip(
        "airflow", reason="Airflow is not in the test extra (it brings its own web stack)"
    )
    try:  # Airflow 3
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 2
        from airflow.models.dagbag import DagBag

    job = scheduled_job(tmp_path, '{cron: "0 2 * * *"}')
    exported(tmp_path, job, "airflow")
    bag = DagBag(str(tmp_path / "exported"))
    assert not bag.import_errors, bag.import_errors
    assert bag.dags["dbatch_cli_test"].schedule == "0 2 * * *"
