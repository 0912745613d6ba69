"""The step contract of dbatch.testing, run against every registered step and a user's own."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import xarray as xr
from sklearn.linear_model import LinearRegression

from dbatch import (
    Anomaly,
    ConvertUnits,
    Derive,
    Enrich,
    Filter,
    Map,
    Predict,
    Resample,
    Sql,
    XarrayMap,
)
from dbatch.arrow import as_arrow
from dbatch.registry import STEPS, register
from dbatch.spec import pipeline_from_dict
from dbatch.steps import Step
from dbatch.testing import GriddedInput, StepContract

# -- SQL steps ---------------------------------------------------------------------------------


class TestFilterStepContract(StepContract):
    @pytest.fixture
    def step(self):
        return Filter("amount > 10")

    @pytest.fixture
    def changed_step(self):
        return Filter("amount > 20")


class TestDeriveStepContract(StepContract):
    @pytest.fixture
    def step(self):
        return Derive({"amount_x2": "amount * 2", "amount": "amount + 1"})

    @pytest.fixture
    def changed_step(self):
        return Derive({"amount_x2": "amount * 3", "amount": "amount + 1"})


LOOKUP = pd.DataFrame({"account": ["A0", "A1", "A2", "A3"], "region": ["N", "S", "E", "W"]})


class TestEnrichStepContract(StepContract):
    """Account A4 has no lookup row: its rows are quarantined."""

    @pytest.fixture
    def step(self):
        return Enrich(LOOKUP, on="account", unmatched="quarantine")

    @pytest.fixture
    def changed_step(self):
        return Enrich(LOOKUP, on="account", unmatched="filter")

    def test_the_unmatched_rows_are_quarantined(self, step, step_input):
        from dbatch.context import BatchContext
        from dbatch.core import Batch

        ctx = BatchContext(batch=Batch("b", (), "f"))
        step.apply(step_input, ctx)
        assert ctx.rows_quarantined == 8  # so the contract's balance counts quarantined rows


class TestSqlStepContract(StepContract):
    @pytest.fixture
    def step(self):
        return Sql("SELECT account, sum(amount) AS total FROM batch GROUP BY account ORDER BY 1")

    @pytest.fixture
    def changed_step(self):
        return Sql("SELECT account, max(amount) AS total FROM batch GROUP BY account ORDER BY 1")


# -- Python steps -------------------------------------------------------------------------------


def drop_missing_amounts(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame.amount.notna()]


def keep_large_amounts(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame.amount > 25]


class TestMapStepContract(StepContract):
    @pytest.fixture
    def step(self):
        return Map(drop_missing_amounts)

    @pytest.fixture
    def changed_step(self):
        return Map(keep_large_amounts)


def amount_model() -> LinearRegression:
    frame = pd.DataFrame({"amount": [1.0, 2.0, 3.0, 4.0]})
    return LinearRegression().fit(frame, [2.0, 4.0, 6.0, 8.0])


class TestPredictStepContract(StepContract):
    """A scikit-learn model, sent once per worker; the row with no amount is quarantined."""

    @pytest.fixture(scope="class")
    def model(self):
        return amount_model()

    @pytest.fixture
    def step(self, model):
        return Predict(model, features=["amount"], output="score")

    @pytest.fixture
    def changed_step(self, model):
        return Predict(model, features=["amount"], output="expected")


# -- steps on xarray Datasets -------------------------------------------------------------------


class DatasetInput:
    """Two days of hourly sensor data on a grid: rows are points along time."""

    @pytest.fixture
    def step_input(self):
        days = GriddedInput()
        return xr.concat([days.dataset(0), days.dataset(1)], dim="time", data_vars="minimal")

    @pytest.fixture
    def dim(self):
        return "time"


def first_eighteen_hours(ds: xr.Dataset) -> xr.Dataset:
    return ds.isel(time=slice(0, 18))


def warm_hours(ds: xr.Dataset) -> xr.Dataset:
    return ds.where(ds.temperature.mean(["lat", "lon"]) > 300, drop=True)


class TestXarrayMapStepContract(DatasetInput, StepContract):
    @pytest.fixture
    def step(self):
        return XarrayMap(first_eighteen_hours)

    @pytest.fixture
    def changed_step(self):
        return XarrayMap(warm_hours)


class TestResampleStepContract(DatasetInput, StepContract):
    @pytest.fixture
    def step(self):
        return Resample("1D", how=["mean", "max"])

    @pytest.fixture
    def changed_step(self):
        return Resample("1D", how=["mean", "min"])


class TestAnomalyStepContract(DatasetInput, StepContract):
    """The climatology is a Dataset, sent once per worker."""

    @pytest.fixture
    def step(self, step_input):
        return Anomaly(step_input.groupby("time.hour").mean(), by="hour")

    @pytest.fixture
    def changed_step(self, step_input):
        return Anomaly(step_input.groupby("time.hour").mean() + 1.0, by="hour")


class TestConvertUnitsStepContract(DatasetInput, StepContract):
    @pytest.fixture
    def step(self):
        return ConvertUnits({"temperature": "degC"})

    @pytest.fixture
    def changed_step(self):
        return ConvertUnits({"temperature": "degF"})


# -- a user's own step, known to job files by the name it was registered under -----------------


@dataclass(frozen=True)
class CapAmounts(Step):
    """Caps amounts at ``limit``; a row without an amount is quarantined: a user's own step."""

    limit: float = 30.0

    def apply(self, data: Any, ctx: Any) -> pa.Table:
        table = as_arrow(data)
        missing = pc.is_null(table["amount"])
        bad = table.filter(missing)
        raw = [json.dumps(row, default=str) for row in bad.to_pylist()]
        ctx.quarantine_rows("cap_amounts", "missing_amount", "the row has no amount", raw)
        good = table.filter(pc.invert(missing))
        capped = pc.min_element_wise(good["amount"], pa.scalar(self.limit))
        return good.set_column(good.schema.get_field_index("amount"), "amount", capped)

    def token(self) -> list[Any]:
        return ["cap_amounts", self.limit]


@pytest.fixture
def example_step_registered():
    register("step", "example_cap", f"{__name__}:CapAmounts")
    yield "example_cap"
    del STEPS["example_cap"]


def step_from_job(name: str, options: dict[str, Any]) -> Any:
    job = {
        "source": {"type": "files", "path": "in/*.csv"},
        "steps": [{name: options}],
        "sink": {"type": "parquet", "path": "out"},
    }
    [step] = pipeline_from_dict(job).steps
    return step


class TestRegisteredExampleStepContract(StepContract):
    @pytest.fixture
    def step(self, example_step_registered):
        return step_from_job(example_step_registered, {"limit": 30.0})

    @pytest.fixture
    def changed_step(self, example_step_registered):
        return step_from_job(example_step_registered, {"limit": 20.0})

    def test_the_job_file_name_builds_the_users_class(self, step):
        assert step == CapAmounts(30.0)
