"""The report's Bokeh figures: one bar chart per batch statistic, and the data chart."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    import pandas as pd
    from bokeh.plotting import figure as Figure

    from .sink import ReportSink

__all__ = ["MAX_GROUPS", "MAX_CATEGORIES", "batch_figure", "data_figure", "kinds_figure"]

MAX_GROUPS = 20  # lines (or bar colours) in the data chart; the largest groups are kept
MAX_CATEGORIES = 100  # bars along a text x axis


def _numbers(axis: Any, fractions: bool = False) -> None:
    """Tick labels with thousands separators: ``2,500,000``, never ``2.500e+6``."""
    from bokeh.models import NumeralTickFormatter

    axis.formatter = NumeralTickFormatter(format="0,0.[00]" if fractions else "0,0")


def _legend_outside(fig: Figure, title: str | None = None) -> None:
    """Move the legend to the right of the plot, where it covers no data."""
    if not fig.legend:
        return
    legend = fig.legend[0]
    fig.center.remove(legend)
    legend.title = title
    legend.location = "top_left"
    fig.add_layout(legend, "right")


def batch_figure(stats: dict[str, list[Any]], field: str, title: str, unit: str) -> Figure:
    """Bars of ``field`` for each batch in plan order, labelled by window or id, by state."""
    from bokeh.models import ColumnDataSource, DataRange1d, FactorRange, HoverTool
    from bokeh.plotting import figure

    source = ColumnDataSource(stats, name=f"batches-{field}")
    fig = figure(
        title=title,
        height=280,
        sizing_mode="stretch_width",
        x_range=FactorRange(factors=list(stats["label"])),
        x_axis_label="batch",
        y_axis_label=unit,
        y_range=DataRange1d(start=0),
        tools="pan,wheel_zoom,box_zoom,reset,save",
        name=f"chart-{field}",
    )
    fig.vbar(x="label", top=field, width=0.8, source=source, color="color", legend_field="state")
    fig.xaxis.major_label_orientation = 0.9 if len(stats["label"]) > 6 else 0.0
    fig.xgrid.grid_line_color = None
    _numbers(fig.yaxis[0], fractions=field == "duration")
    _legend_outside(fig, "state")
    fig.add_tools(
        HoverTool(
            tooltips=[
                ("batch", "@label: @batch_id (#@number)"),
                ("state", "@state, @attempts attempt(s)"),
                (
                    "rows",
                    "@rows_in{0,0} in = @rows_out{0,0} out + @rows_filtered{0,0} filtered "
                    "+ @rows_quarantined{0,0} quarantined",
                ),
                ("files quarantined", "@files_quarantined{0,0}"),
                ("duration", "@duration{0,0.00} s"),
            ]
        )
    )
    return fig


def kinds_figure(kinds: dict[str, int]) -> Figure:
    """Horizontal bars: how many rows (and files) were quarantined, per kind of damage."""
    from bokeh.models import ColumnDataSource, DataRange1d, FactorRange, HoverTool
    from bokeh.palettes import Category10_10
    from bokeh.plotting import figure

    ordered = sorted(kinds.items(), key=lambda kv: (kv[1], kv[0]))  # the largest at the top
    names = [k for k, _ in ordered]
    source = ColumnDataSource(
        {
            "kind": names,
            "count": [n for _, n in ordered],
            "color": [Category10_10[3 + i % 7] for i in range(len(names))],
        },
        name="quarantine-kinds",
    )
    total = sum(kinds.values())
    fig = figure(
        title=f"Rows and files quarantined by kind ({total:,} in all)",
        height=max(160, 60 + 32 * len(names)),
        sizing_mode="stretch_width",
        y_range=FactorRange(factors=names),
        x_range=DataRange1d(start=0),
        x_axis_label="rows and files",
        tools="save",
        name="chart-quarantine-kinds",
    )
    fig.hbar(y="kind", right="count", height=0.7, source=source, color="color")
    fig.ygrid.grid_line_color = None
    _numbers(fig.xaxis[0])
    fig.add_tools(HoverTool(tooltips=[("kind", "@kind"), ("quarantined", "@count{0,0}")]))
    return fig


def data_figure(sink: ReportSink, chart: pa.Table) -> Figure:
    """The data chart: lines over a date, time or number ``x``, bars over any other ``x``."""
    from bokeh.palettes import Category10_10, Category20_20

    frame = chart.to_pandas()
    totals = frame.groupby("group")["value"].apply(lambda v: v.abs().sum())
    groups = sorted(totals.sort_values(ascending=False).index[:MAX_GROUPS].tolist())
    frame = frame[frame["group"].isin(groups)]
    palette = Category10_10 if len(groups) <= 10 else Category20_20
    colors = dict(zip(groups, palette, strict=False))
    label = f"{sink.agg} of {sink.y} per {sink.x}" + (f" and {sink.by}" if sink.by else "")
    if len(totals) > len(groups):
        label += f" (the {len(groups)} largest of {len(totals)} groups)"
    kind = chart.schema.field("x").type
    if pa.types.is_temporal(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind):
        fig = _line_figure(sink, frame, kind, groups, colors, label)
    else:
        fig = _bar_figure(sink, frame, groups, colors, label)
    _numbers(fig.yaxis[0], fractions=bool(frame["value"].abs().max() < 10))
    if fig.legend:
        fig.legend.click_policy = "hide"
    _legend_outside(fig, sink.by)
    return fig


def _line_figure(
    sink: ReportSink,
    frame: pd.DataFrame,
    kind: pa.DataType,
    groups: list[str],
    colors: dict[str, str],
    label: str,
) -> Figure:
    """One line (with its points) per group, over an ``x`` axis of times or numbers."""
    from bokeh.models import ColumnDataSource, HoverTool
    from bokeh.plotting import figure

    temporal = pa.types.is_temporal(kind)
    fig = figure(
        title=label,
        height=360,
        sizing_mode="stretch_width",
        x_axis_type="datetime" if temporal else "linear",
        x_axis_label=sink.x,
        y_axis_label=sink.y,
        name="chart-data",
    )
    xs = _x_values(frame["x"], temporal)
    for group in groups:
        mask = (frame["group"] == group).to_numpy()
        source = ColumnDataSource(
            {
                "x": xs[mask],
                "value": frame["value"].to_numpy()[mask],
                "group": [group] * int(mask.sum()),
            },
            name=f"data-{group}",
            tags=["data"],
        )
        fig.line("x", "value", source=source, color=colors[group], legend_label=group)
        fig.scatter("x", "value", source=source, color=colors[group], size=6)
    dates = pa.types.is_date(kind)
    if dates:
        _day_axis(fig, xs)
    x_tip = ("x", "@x{%F}" if dates else "@x{%F %T}") if temporal else ("x", "@x")
    fig.add_tools(
        HoverTool(
            tooltips=[("group", "@group"), x_tip, (str(sink.y), "@value{0,0.[00]}")],
            formatters={"@x": "datetime"} if temporal else {},
        )
    )
    return fig


def _bar_figure(
    sink: ReportSink, frame: pd.DataFrame, groups: list[str], colors: dict[str, str], label: str
) -> Figure:
    """Bars per value of a text ``x`` (the first ``MAX_CATEGORIES``), split by group."""
    from bokeh.models import ColumnDataSource, FactorRange, HoverTool
    from bokeh.plotting import figure

    labels = frame["x"].astype(str)
    categories = sorted(labels.unique().tolist())
    if len(categories) > MAX_CATEGORIES:
        categories = categories[:MAX_CATEGORIES]
        fig_note = f" (first {MAX_CATEGORIES} values of {sink.x})"
    else:
        fig_note = ""
    keep = labels.isin(categories).to_numpy()
    factors = [
        (x, g) if sink.by else x
        for x, g in zip(labels[keep].tolist(), frame["group"][keep].tolist(), strict=True)
    ]
    order = [(c, g) for c in categories for g in groups] if sink.by else categories
    present = set(factors)
    fig = figure(
        title=label + fig_note,
        height=360,
        sizing_mode="stretch_width",
        x_range=FactorRange(factors=[f for f in order if f in present]),
        x_axis_label=sink.x,
        y_axis_label=sink.y,
        name="chart-data",
    )
    source = ColumnDataSource(
        {
            "x": factors,
            "value": frame["value"].to_numpy()[keep],
            "group": frame["group"][keep].tolist(),
            "color": [colors[g] for g in frame["group"][keep].tolist()],
        },
        name="data-bars",
        tags=["data"],
    )
    fig.vbar(x="x", top="value", width=0.9, source=source, color="color", legend_field="group")
    fig.xaxis.major_label_orientation = 0.8
    fig.add_tools(HoverTool(tooltips=[("x", "@x"), (str(sink.y), "@value{0,0.[00]}")]))
    return fig


def _day_axis(fig: Figure, days: Any) -> None:
    """Label a date axis with dates; with a month or less of days, tick exactly on them."""
    import numpy as np
    from bokeh.models import DatetimeTickFormatter, FixedTicker

    distinct = np.unique(days)
    if len(distinct) <= 31:
        ms = distinct.astype("datetime64[ms]").astype("int64")
        fig.xaxis.ticker = FixedTicker(ticks=[float(v) for v in ms])
    fig.xaxis.formatter = DatetimeTickFormatter(
        hours="%F %H:%M", days="%F", months="%Y-%m", years="%Y", context=None
    )


def _x_values(series: pd.Series, temporal: bool) -> Any:
    import numpy as np
    import pandas as pd

    if not temporal:
        return series.to_numpy(dtype="float64")
    stamps = pd.to_datetime(series)
    if isinstance(stamps.dtype, pd.DatetimeTZDtype):
        stamps = stamps.dt.tz_convert(None)
    return np.asarray(stamps.to_numpy(dtype="datetime64[ns]"))
