"""Report sink: one self-contained HTML report per run, rendered by headless Chromium, published atomically."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from dbatch import Aggregate, ByCount, Files, Pipeline, ReportSink
from dbatch.demo import JOB_YAML, write_landing_area
from dbatch.errors import JobSpecError
from dbatch.spec import load_job, pipeline_from_dict, safe_load

# Walks every shadow root: Bokeh 3 renders each plot inside one.
FIND_CANVASES = """
const boxes = [], canvases = [];
function walk(root) {
  for (const el of root.querySelectorAll('*')) {
    if (el.classList.contains('bk-Canvas')) boxes.push(el);
    if (el.tagName === 'CANVAS' && el.width > 0 && el.height > 0) canvases.push(el);
    if (el.shadowRoot) walk(el.shadowRoot);
  }
}
walk(document);
return [boxes.length, canvases.length];
"""

EXTERNAL_RESOURCES = """
const urls = [];
for (const el of document.querySelectorAll('script[src], link[href], img[src], iframe[src]')) {
  urls.push(el.getAttribute('src') || el.getAttribute('href'));
}
for (const entry of performance.getEntriesByType('resource')) urls.push(entry.name);
return urls;
"""

SOURCES_DATA = """
const out = {};
for (const m of Bokeh.documents[0].all_models) {
  if (m.data !== undefined && m.name) {
    const data = {};
    for (const [k, v] of Object.entries(m.data)) data[k] = Array.from(v);
    out[m.name] = data;
  }
}
return out;
"""

# What each plot looks like to BokehJS: where its legend is, how its axes format numbers.
PLOTS = """
const out = {};
for (const m of Bokeh.documents[0].all_models) {
  if (m.type !== "Figure" && m.type !== "Plot") continue;
  const axes = m.left.concat(m.below).filter(a => a.formatter !== undefined);
  out[m.name] = {
    right: m.right.map(r => r.type),
    center: m.center.map(c => c.type),
    formats: axes.map(a => [a.formatter.type, a.formatter.doFormat([2500000, 1234.5], {loc: 0})]),
    x_factors: m.x_range.factors === undefined ? null : Array.from(m.x_range.factors),
    x_label: m.below.length ? m.below[0].axis_label : null,
  };
}
return out;
"""


def open_report(driver, report: Path, min_plots: int) -> dict:
    """Load ``report`` from disk, wait until Bokeh has drawn it; return its chart data."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get_log("browser")  # drop what earlier pages logged
    driver.set_window_size(1200, 1400)
    driver.get(report.resolve().as_uri())
    WebDriverWait(driver, 20, poll_frequency=0.1).until(
        lambda d: (
            d.execute_script(
                "return window.Bokeh !== undefined && Bokeh.documents.length > 0 "
                "&& Bokeh.documents[0].is_idle"
            )
            and d.execute_script(FIND_CANVASES)[0] >= min_plots
        )
    )
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == [], severe
    boxes, canvases = driver.execute_script(FIND_CANVASES)
    assert boxes >= min_plots and canvases >= min_plots
    external = [u for u in driver.execute_script(EXTERNAL_RESOURCES) if u.startswith("http")]
    assert external == [], f"the report needs the network: {external}"
    return driver.execute_script(SOURCES_DATA)


def assert_screenshot_has_charts(driver, tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "report.png"
    assert driver.save_screenshot(str(shot))
    image = Image.open(io.BytesIO(shot.read_bytes()))
    assert image.format == "PNG" and image.size[0] > 0 and image.size[1] > 0
    colours = dict((rgb, n) for n, rgb in image.convert("RGB").getcolors(maxcolors=1 << 20))
    assert len(colours) > 50, "the screenshot is (nearly) blank"
    # The bars of committed batches are drawn in Category10 blue: the charts were painted.
    assert colours.get((31, 119, 180), 0) > 1000, "no chart bars on the screenshot"


def reconciliation_pipeline(root: Path, batching: str | None = None) -> Pipeline:
    write_landing_area(root, days=3, rows_per_file=300, bad_share=0.02, seed=7)
    raw = safe_load(JOB_YAML.format(batch_files=2))
    if batching is not None:
        raw["batching"] = safe_load(batching)
    raw["sink"] = safe_load(
        "{type: report, path: out/report, title: Reconciliation, x: day, y: total_usd, by: currency}"
    )
    return pipeline_from_dict(raw, file=str(root / "job.yaml"), base_dir=root)


def test_reconciliation_report_renders_offline_in_chromium(tmp_path, client, chromium_driver):
    pipeline = reconciliation_pipeline(tmp_path)
    result = pipeline.run(client=client)
    assert result.status == "succeeded", result
    assert result.rows_quarantined > 0  # the demo damages rows on purpose
    out = tmp_path / "out" / "report"
    report = out / "report.html"
    assert result.output == str(report)
    assert out.is_symlink() and report.exists() and (out / "_SUCCESS").exists()
    page = report.read_text()
    assert "<title>Reconciliation</title>" in page and result.run_id in page

    charts = open_report(chromium_driver, report, min_plots=3)

    # Totals per day and currency: the chart shows what the published data says.
    data = pd.read_parquet(out / "data")
    assert len(data) == result.output_rows
    want = data.groupby(["currency", "day"])["total_usd"].sum()
    drawn = {
        (series["group"][i], datetime.fromtimestamp(x / 1000, UTC).date()): series["value"][i]
        for name, series in charts.items()
        if name.startswith("data-")
        for i, x in enumerate(series["x"])
    }
    assert len(drawn) == len(want) == 15  # 3 days x 5 currencies
    for (currency, day), total in want.items():
        assert drawn[(currency, pd.Timestamp(day).date())] == pytest.approx(total)

    # Rows quarantined and durations per batch: from the run, in plan order.
    plan_order = [b.id for b in pipeline.plan()]
    by_id = {b["batch_id"]: b for b in result.batches}
    bars = charts["batches-rows_quarantined"]
    assert bars["batch_id"] == plan_order
    assert bars["rows_quarantined"] == [by_id[b]["rows_quarantined"] for b in plan_order]
    assert sum(bars["rows_quarantined"]) == result.rows_quarantined
    durations = charts["batches-duration"]["duration"]
    assert durations == [pytest.approx(by_id[b]["duration"], abs=1e-3) for b in plan_order]
    assert all(d > 0 for d in durations)

    # Quarantined rows by kind: the counts of the work area's quarantine.parquet.
    kept = pd.read_parquet(Path(result.work_area) / "quarantine.parquet")
    kinds = charts["quarantine-kinds"]
    assert (
        dict(zip(kinds["kind"], kinds["count"], strict=True))
        == kept["kind"].value_counts().to_dict()
    )
    assert len(kinds["kind"]) >= 2  # the demo damages rows in several ways

    plots = chromium_driver.execute_script(PLOTS)
    assert {
        "chart-data",
        "chart-quarantine-kinds",
        "chart-rows_quarantined",
        "chart-duration",
    } <= set(plots)
    for name, plot in plots.items():  # numbers with separators and no exponent
        assert "Legend" not in plot["center"], f"{name}: a legend over the data"
        for formatter, shown in plot["formats"]:
            if formatter not in ("CategoricalTickFormatter", "DatetimeTickFormatter"):
                assert formatter == "NumeralTickFormatter", (name, formatter)
                assert shown[0] == "2,500,000" and "e+" not in "".join(shown), (name, shown)
    assert "Legend" in plots["chart-data"]["right"] and "Legend" in plots["chart-duration"]["right"]
    for name in ("chart-rows_quarantined", "chart-duration"):  # each batch by its id, in plan order
        assert plots[name]["x_factors"] == plan_order
        assert plots[name]["x_label"] == "batch"

    assert_screenshot_has_charts(chromium_driver, tmp_path)


def test_batches_of_a_time_window_are_labelled_by_their_window(tmp_path, client, chromium_driver):
    pipeline = reconciliation_pipeline(tmp_path, batching="{window: 1D}")
    result = pipeline.run(client=client)
    assert result.status == "succeeded", result
    report = tmp_path / "out" / "report" / "report.html"
    charts = open_report(chromium_driver, report, min_plots=3)
    days = ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert charts["batches-duration"]["label"] == days
    assert charts["batches-duration"]["batch_id"] == [b.id for b in pipeline.plan()]
    plots = chromium_driver.execute_script(PLOTS)
    assert plots["chart-duration"]["x_factors"] == days
    stats = json.loads((tmp_path / "out" / "report" / "_manifest.json").read_text())["batch_stats"]
    assert [b["window"] for b in stats] == days


def write_csvs(root: Path, n_files: int = 6, rows: int = 40) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for f in range(n_files):
        lines = ["id,account,amount,status"]
        lines += [f"{f}-{i},A{i % 4},{i + f},{'ok' if i % 5 else 'void'}" for i in range(rows)]
        (root / f"part-{f:02d}.csv").write_text("\n".join(lines) + "\n")


def csv_pipeline(tmp_path: Path, sink: ReportSink) -> Pipeline:
    return Pipeline(
        source=Files(
            str(tmp_path / "in" / "*.csv"),
            schema={"id": "string", "account": "string", "amount": "int64", "status": "string"},
        ),
        sink=sink,
        batching=ByCount(2),
        name="accounts",
        workdir=str(tmp_path / "work"),
    )


def test_text_x_draws_bars_and_new_chart_options_render_again_without_recomputing(
    tmp_path, client, chromium_driver
):
    write_csvs(tmp_path / "in")
    out = tmp_path / "out" / "report"
    sink = ReportSink(str(out), x="account", y="amount", by="status", agg="mean")
    first = csv_pipeline(tmp_path, sink).run(client=client)
    assert first.status == "succeeded" and first.committed == 3, first
    first_version = out.resolve()
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["report"]["agg"] == "mean"
    assert [b["rows_in"] for b in manifest["batch_stats"]] == [80, 80, 80]
    data = pd.read_parquet(out / "data")  # the data is published next to the report
    assert len(data) == first.rows_out == 240 and data["id"].is_unique

    # Nothing was quarantined: no empty chart of zeros, one line that says so.
    charts = open_report(chromium_driver, out / "report.html", min_plots=2)
    assert "batches-rows_quarantined" not in charts and "quarantine-kinds" not in charts
    assert "Nothing was quarantined" in (out / "report.html").read_text()
    bars = charts["data-bars"]
    drawn = {tuple(x): v for x, v in zip(bars["x"], bars["value"], strict=True)}
    want = data.groupby(["account", "status"])["amount"].mean()
    assert drawn == {k: pytest.approx(v) for k, v in want.items()}

    # Same batches, same options: nothing to do, the report is not rendered again.
    again = csv_pipeline(tmp_path, sink).run(client=client)
    assert again.status == "nothing_to_do"
    assert json.loads((out / "_manifest.json").read_text())["run_id"] == first.run_id

    # New chart options: no batch is recomputed, the report is rendered and switched.
    stale = out.parent / ".report.render-dead"
    stale.mkdir()  # what a driver killed while rendering leaves behind
    retitled = ReportSink(str(out), title="Per account", x="account", y="amount", agg="max")
    third = csv_pipeline(tmp_path, retitled).run(client=client)
    assert third.status == "nothing_to_do" and third.committed == 0 and third.skipped == 3
    assert out.resolve() != first_version and first_version.exists()  # previous version kept
    assert (out / "_SUCCESS").read_text().strip() == third.run_id
    assert "<title>Per account</title>" in (out / "report.html").read_text()
    assert not stale.exists()
    assert not list(out.parent.glob(".report.render-*"))


def test_a_chart_column_missing_from_the_output_fails_the_batches_and_publishes_nothing(
    tmp_path, client
):
    write_csvs(tmp_path / "in", n_files=2)
    out = tmp_path / "out" / "report"
    result = csv_pipeline(tmp_path, ReportSink(str(out), x="day", y="amount")).run(client=client)
    assert result.status == "failed" and result.failed == 1
    message = result.batches[0]["error_message"]
    assert "key 'sink.x'" in message and "'day' is not in the output" in message
    assert "account" in message  # the columns it does have
    assert not out.exists()


def test_with_an_aggregate_a_wrong_column_stops_the_run_and_the_fix_needs_no_recompute(
    tmp_path, client
):
    write_csvs(tmp_path / "in", n_files=2)
    out = tmp_path / "out" / "report"
    totals = Aggregate(by=["account"], metrics={"total": "sum(amount)"})
    wrong = csv_pipeline(tmp_path, ReportSink(str(out), x="account", y="amount"))
    with pytest.raises(JobSpecError, match=r"key 'sink.y': column 'amount' is not in the output"):
        wrong.replace(aggregate=totals).run(client=client)
    assert not out.exists()
    fixed = csv_pipeline(tmp_path, ReportSink(str(out), x="account", y="total"))
    result = fixed.replace(aggregate=totals).run(client=client)
    assert result.committed == 0 and result.skipped == 1
    data = pd.read_parquet(out / "data")
    assert sorted(data["account"]) == ["A0", "A1", "A2", "A3"]
    assert data["total"].sum() == sum(i + f for f in range(2) for i in range(40))


def test_a_text_y_is_refused_with_the_fix(tmp_path, client):
    write_csvs(tmp_path / "in", n_files=2)
    sink = ReportSink(str(tmp_path / "out"), x="account", y="status")
    result = csv_pipeline(tmp_path, sink).run(client=client)
    assert result.failed == 1
    assert "needs numbers (cast it in a derive step)" in result.batches[0]["error_message"]


def test_options_from_a_job_file(tmp_path):
    (tmp_path / "in").mkdir()
    job = tmp_path / "job.yaml"
    job.write_text(
        "source: {type: files, path: 'in/*.csv'}\n"
        "sink: {type: report, path: out/report, x: day, y: total_usd, by: currency}\n"
    )
    sink = load_job(job).pipeline.sink
    assert isinstance(sink, ReportSink)
    assert (sink.x, sink.y, sink.by, sink.agg) == ("day", "total_usd", "currency", "sum")
    assert sink.location == str(tmp_path / "out" / "report" / "report.html")
    job.write_text(
        "source: {type: files, path: 'in/*.csv'}\nsink: {type: report, path: out, colour: red}\n"
    )
    with pytest.raises(JobSpecError, match=r"unknown key\(s\) \['colour'\]"):
        load_job(job)


@pytest.mark.parametrize(
    ("options", "key", "text"),
    [
        ({"x": "day"}, "sink.y", "needs both x and y"),
        ({"y": "total"}, "sink.x", "needs both x and y"),
        ({"by": "currency"}, "sink.by", "set x and y too"),
        ({"x": "day", "y": "day"}, "sink", "different columns"),
        ({"x": "day", "y": "total", "agg": "median"}, "sink.agg", "use one of"),
        ({"path": "s3://bucket/report"}, "sink.path", "local or mounted path"),
        ({"path": ""}, "sink.path", "needs a path"),
    ],
)
def test_bad_options_name_the_key(options, key, text):
    kwargs = {"path": "out/report", **options}
    with pytest.raises(JobSpecError, match=text) as info:
        ReportSink(**kwargs)
    assert info.value.key == key


def test_chart_options_do_not_change_the_batch_fingerprints():
    plain = ReportSink("out/report")
    charted = ReportSink("out/report", title="T", x="day", y="total", by="currency", agg="max")
    assert plain.token() == charted.token()
