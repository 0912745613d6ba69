"""Batchers: each unit in exactly one batch, stable ids, fingerprints that follow inputs and definition."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from dbatch import (
    ByCount,
    BySize,
    ByThreshold,
    ByWindow,
    CsvSink,
    Files,
    Filter,
    JobSpecError,
    ParquetSink,
    Pipeline,
    Unit,
)
from dbatch.batching import make_batches

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

EPOCH = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
TWO_YEARS = 2 * 366 * 86_400


@st.composite
def unit_lists(draw, min_size: int = 0, max_size: int = 60) -> list[Unit]:
    """Sorted units with unique keys, sizes (some zero) and times over two years."""
    n = draw(st.integers(min_size, max_size))
    sizes = draw(st.lists(st.integers(0, 5_000), min_size=n, max_size=n))
    offsets = draw(st.lists(st.integers(0, TWO_YEARS), min_size=n, max_size=n))
    return [
        Unit(key=f"u{i:04d}", size=s, time=EPOCH + o, identity=(("size", s),))
        for i, (s, o) in enumerate(zip(sizes, offsets, strict=True))
    ]


def keys(batches) -> list[list[str]]:
    return [[u.key for u in b.units] for b in batches]


def assert_exactly_once(units: list[Unit], batches) -> None:
    flat = [u.key for b in batches for u in b.units]
    assert sorted(flat) == sorted(u.key for u in units)
    assert len(flat) == len(set(flat))
    assert all(b.units for b in batches)  # no empty batch


def window_of(unit: Unit, freq: str) -> datetime:
    t = datetime.fromtimestamp(unit.time, tz=UTC)
    if freq == "MS":
        return datetime(t.year, t.month, 1, tzinfo=UTC)
    if freq == "1D":
        return datetime(t.year, t.month, t.day, tzinfo=UTC)
    if freq == "6h":
        return datetime(t.year, t.month, t.day, t.hour - t.hour % 6, tzinfo=UTC)
    raise AssertionError(freq)


FAST = settings(max_examples=60, deadline=None, database=None)


@FAST
@given(unit_lists(), st.integers(1, 20_000))
def test_by_size_each_unit_once_in_order_and_greedy(units, target):
    batches = make_batches(units, BySize(target))
    assert_exactly_once(units, batches)
    assert [k for b in keys(batches) for k in b] == [u.key for u in units]  # order kept
    for i, b in enumerate(batches):
        assert b.size <= target or len(b.units) == 1  # only a unit larger than target overflows
        if i + 1 < len(batches):  # closed only because the next unit did not fit
            assert b.size + batches[i + 1].units[0].size > target


@FAST
@given(unit_lists(), st.integers(1, 12))
def test_by_count_each_unit_once(units, count):
    batches = make_batches(units, ByCount(count))
    assert_exactly_once(units, batches)
    assert [k for b in keys(batches) for k in b] == [u.key for u in units]
    assert all(len(b.units) == count for b in batches[:-1])
    assert not batches or 1 <= len(batches[-1].units) <= count
    assert len(batches) == -(-len(units) // count)


@FAST
@given(unit_lists(), st.sampled_from(["1D", "6h", "MS"]))
def test_by_window_each_unit_once_one_window_per_batch(units, freq):
    batches = make_batches(units, ByWindow(freq))
    assert_exactly_once(units, batches)
    windows = []
    for b in batches:
        starts = {window_of(u, freq) for u in b.units}
        assert len(starts) == 1, (freq, starts)
        windows.append(starts.pop())
    assert windows == sorted(set(windows))  # one batch per window, in time order


@FAST
@given(unit_lists(), st.integers(1, 10))
def test_by_threshold_count_takes_full_batches_and_leaves_the_tail(units, count):
    batches = make_batches(units, ByThreshold(count=count))
    taken = len(units) - len(units) % count
    assert [k for b in keys(batches) for k in b] == [u.key for u in units[:taken]]
    assert all(len(b.units) == count for b in batches)


@FAST
@given(unit_lists(), st.integers(1, 20_000))
def test_by_threshold_bytes_leaves_only_an_unfilled_tail(units, threshold):
    batches = make_batches(units, ByThreshold(bytes=threshold))
    flat = [k for b in keys(batches) for k in b]
    assert flat == [u.key for u in units[: len(flat)]]  # a prefix, each unit at most once
    left = units[len(flat) :]
    assert sum(u.size for u in left) < threshold or not left
    if left:  # what waits is exactly what BySize would have made the last batch
        assert [u.key for u in left] == keys(make_batches(units, BySize(threshold)))[-1]


@FAST
@given(unit_lists(min_size=1), st.integers(1, 6), st.text(max_size=8), st.text(max_size=8))
def test_ids_depend_on_unit_keys_and_fingerprints_on_the_salt(units, count, salt_a, salt_b):
    a = make_batches(units, ByCount(count), salt=salt_a)
    again = make_batches(list(units), ByCount(count), salt=salt_a)
    b = make_batches(units, ByCount(count), salt=salt_b)
    assert [(x.id, x.fingerprint) for x in a] == [(x.id, x.fingerprint) for x in again]
    assert [x.id for x in a] == [x.id for x in b]
    assert len({x.id for x in a}) == len(a)
    if salt_a != salt_b:
        assert all(x.fingerprint != y.fingerprint for x, y in zip(a, b, strict=True))


def test_fingerprint_follows_the_identity_of_a_unit_only_in_its_batch():
    units = [Unit(f"f{i}", 10, identity=(("mtime", 1.0),)) for i in range(6)]
    before = make_batches(units, ByCount(2), salt="p")
    changed = list(units)
    changed[3] = Unit("f3", 10, identity=(("mtime", 2.0),))
    after = make_batches(changed, ByCount(2), salt="p")
    assert [b.id for b in before] == [b.id for b in after]
    same = [x.fingerprint == y.fingerprint for x, y in zip(before, after, strict=True)]
    assert same == [True, False, True]


def test_window_batching_needs_unit_times():
    with pytest.raises(JobSpecError, match="time_pattern"):
        make_batches([Unit("a", 1, time=None)], ByWindow("1D"))
    with pytest.raises(JobSpecError, match="batching.window"):
        ByWindow("every other tuesday")


def test_batcher_arguments_are_checked():
    with pytest.raises(JobSpecError, match="positive"):
        ByCount(0)
    with pytest.raises(JobSpecError, match="positive size"):
        BySize(0)
    with pytest.raises(JobSpecError, match="count, bytes or both"):
        ByThreshold()
    with pytest.raises(JobSpecError, match="batching.threshold.count"):
        ByThreshold(count=0)  # would divide by zero when grouping
    with pytest.raises(JobSpecError, match="batching.threshold.bytes"):
        ByThreshold(bytes=0)
    assert BySize("1KiB").target_bytes == 1024


# -- with a real source and pipeline ------------------------------------------------------------


def write_daily_files(root, days: int = 40, start: datetime = datetime(2026, 1, 20)) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for d in range(days):
        day = (start + timedelta(days=d)).date().isoformat()
        (root / f"sales-{day}.csv").write_text(f"day,amount\n{day},{d}\n")


def pipeline(tmp_path, **kw) -> Pipeline:
    options = {
        "source": Files(str(tmp_path / "in" / "*.csv"), time_pattern=r"(\d{4}-\d{2}-\d{2})"),
        "sink": ParquetSink(str(tmp_path / "out")),
        "batching": ByWindow("MS"),
        "steps": [Filter("amount >= 0")],
        "name": "windows",
    }
    options.update(kw)
    return Pipeline(**options)


def test_calendar_month_windows_from_dates_in_file_names(tmp_path):
    write_daily_files(tmp_path / "in")  # 2026-01-20 .. 2026-02-28
    plan = pipeline(tmp_path).plan()
    months = [{u.key.split("sales-")[1][:7] for u in b.units} for b in plan]
    assert months == [{"2026-01"}, {"2026-02"}]
    assert [len(b.units) for b in plan] == [12, 28]


def test_windows_do_not_depend_on_the_machine_time_zone(tmp_path, monkeypatch):
    write_daily_files(tmp_path / "in", days=3, start=datetime(2026, 1, 30))  # to 2026-02-01
    expected = keys(pipeline(tmp_path).plan())
    assert [len(k) for k in expected] == [2, 1]
    try:
        for tz in ("Asia/Tokyo", "America/Los_Angeles", "UTC"):
            monkeypatch.setenv("TZ", tz)
            time.tzset()
            assert keys(pipeline(tmp_path).plan()) == expected, tz
    finally:
        monkeypatch.undo()
        time.tzset()


def test_plan_ids_stable_and_fingerprints_follow_the_pipeline_definition(tmp_path):
    write_daily_files(tmp_path / "in")
    base = pipeline(tmp_path).plan()
    again = pipeline(tmp_path).plan()
    assert [(b.id, b.fingerprint) for b in base] == [(b.id, b.fingerprint) for b in again]
    for changed in (
        pipeline(tmp_path, steps=[Filter("amount > 0")]),  # a step changed
        pipeline(tmp_path, steps=[]),  # a step removed
        pipeline(tmp_path, sink=CsvSink(str(tmp_path / "out"))),  # another output format
        pipeline(tmp_path, bad_input="fail_fast"),
    ):
        plan = changed.plan()
        assert [b.id for b in plan] == [b.id for b in base]
        assert all(x.fingerprint != y.fingerprint for x, y in zip(plan, base, strict=True)), changed
    # Only where the output goes: the same definition, the same fingerprints.
    moved = pipeline(tmp_path, sink=ParquetSink(str(tmp_path / "elsewhere"))).plan()
    assert [b.fingerprint for b in moved] == [b.fingerprint for b in base]
