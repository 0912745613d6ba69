"""The report's Bokeh figures: one bar chart per batch statistic, and the data chart."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    import pandas as pd
    from bokeh.plotting import figure as Figure

    from .sink import ReportSink

__all__ = ["MAX_GROUPS", "MAX_CATEGORIES", "batch_figure", "data_figure"]

MAX_GROUPS = 20  # lines (or bar colours) in the data chart; the largest groups are kept
MAX_CATEGORIES = 100  # bars along a text x axis


def batch_figure(stats: dict[str, list[Any]], field: str, title: str, unit: str) -> Figure:
    """Bars of ``field`` for each batch in plan order, coloured by state, with a tooltip."""
    from bokeh.models import AdaptiveTicker, ColumnDataSource, DataRange1d, HoverTool
    from bokeh.plotting import figure

    source = ColumnDataSource(stats, name=f"batches-{field}")
    fig = figure(
        title=title,
        height=260,
        sizing_mode="stretch_width",
        x_axis_label="batch (plan order)",
        y_axis_label=unit,
        y_range=DataRange1d(start=0),
        tools="pan,wheel_zoom,box_zoom,reset,save",
        name=f"chart-{field}",
    )
    fig.vbar(x="number", top=field, width=0.8, source=source, color="color", legend_field="state")
    fig.xaxis.ticker = AdaptiveTicker(min_interval=1, num_minor_ticks=0)  # whole batch numbers
    fig.legend.location = "top_left"
    fig.add_tools(
        HoverTool(
            tooltips=[
                ("batch", "@batch_id (#@number)"),
                ("state", "@state, @attempts attempt(s)"),
                (
                    "rows",
                    "@rows_in in = @rows_out out + @rows_filtered filtered "
                    "+ @rows_quarantined quarantined",
                ),
                ("files quarantined", "@files_quarantined"),
                ("duration", "@duration s"),
            ]
        )
    )
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
    fig.legend.location = "top_left"
    fig.legend.click_policy = "hide"
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
