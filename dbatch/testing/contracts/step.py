"""The step contract: the row balance, honest tokens, safe to ship, SQL steps fuse exactly."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from ...arrow import as_arrow, count_rows
from ...context import BatchContext
from ...core import Batch, digest
from ...protocols import SqlStep
from .checks import assert_same_frames, same_data, shipped

__all__ = ["StepContract", "order_table"]


def order_table(rows: int = 40) -> Any:
    """Order-like rows (id, account, amount, day) with one null amount: the default step input.

    Examples
    --------
    >>> order_table(10).num_rows
    10
    """
    import datetime as dt

    import pyarrow as pa

    return pa.table(
        {
            "id": [f"r{i}" for i in range(rows)],
            "account": [f"A{i % 5}" for i in range(rows)],
            "amount": [None if i == 7 else float((i * 7) % 50) + 0.5 for i in range(rows)],
            "day": [dt.date(2026, 1, 1 + i % 28) for i in range(rows)],
        }
    )


def _context(step: Any) -> BatchContext:
    """A batch context holding the step's shared objects, as a worker's would."""
    shared = {obj.token: obj.obj for obj in step.shared_objects()}
    return BatchContext(batch=Batch("b-contract", (), "contract"), run_id="contract", shared=shared)


def _counts(ctx: BatchContext) -> tuple[int, int]:
    return ctx.rows_filtered, ctx.rows_quarantined


def _sorted_frame(data: Any) -> Any:
    frame = as_arrow(data).to_pandas()
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


class StepContract:
    """The tests every step passes. Subclass it in a test module and override a few fixtures.

    Fixtures to override:

    ``step``
        The step under test. Required.
    ``changed_step``
        The same step with one parameter changed. Required.
    ``step_input``
        The batch data the step is applied to. Default: ``order_table()``, a
        pyarrow Table of orders (id, account, amount, day) with one null amount.
    ``dim``
        The dimension whose points are a Dataset's rows (None: the first one, or a
        table's rows).
    ``neighbours``
        SQL steps that a SQL step is compiled together with (before and after it).
        Default: a ``Derive`` of a new column and a ``Filter`` on ``amount``.

    What is checked: ``apply`` keeps the row balance (rows out plus the rows it
    counted as filtered or quarantined are the rows in); ``token()`` is stable,
    survives pickling and changes when a parameter does; the step pickles and
    the copy gives the same result; ``shared_objects()`` are ``SharedObject``\\ s
    with stable tokens; a SQL step gives the same rows, counts and quarantine
    alone as compiled with each neighbour through ``dbatch.compile.SqlChain``.

    Examples
    --------
    >>> class TestFilter(StepContract):  # doctest: +SKIP
    ...     @pytest.fixture
    ...     def step(self):
    ...         return Filter("amount > 10")
    ...     @pytest.fixture
    ...     def changed_step(self):
    ...         return Filter("amount > 20")
    """

    # -- fixtures an implementation overrides -------------------------------------------

    @pytest.fixture
    def step(self) -> Any:
        raise NotImplementedError("return the step under test")

    @pytest.fixture
    def changed_step(self) -> Any:
        raise NotImplementedError("return the step under test with one parameter changed")

    @pytest.fixture
    def step_input(self) -> Any:
        return order_table()

    @pytest.fixture
    def dim(self) -> str | None:
        return None

    @pytest.fixture
    def neighbours(self) -> Sequence[Any]:
        from ...steps import Derive, Filter

        return (Derive({"contract_neighbour": "1"}), Filter("amount IS NULL OR amount < 40"))

    # -- the contract ------------------------------------------------------------------

    def test_apply_keeps_the_row_balance(self, step, step_input, dim):
        ctx = _context(step)
        rows_in = count_rows(step_input, dim)
        out = step.apply(step_input, ctx)
        rows_out = count_rows(out, dim)
        assert rows_out + ctx.rows_filtered + ctx.rows_quarantined == rows_in, (
            f"{rows_in} rows in, {rows_out} out, {ctx.rows_filtered} filtered, "
            f"{ctx.rows_quarantined} quarantined"
        )

    def test_token_is_stable_and_follows_parameters(self, step, changed_step):
        token = digest(step.token())
        assert digest(step.token()) == token, "two calls gave two tokens"
        assert digest(shipped(step).token()) == token, "the token changed on the way to a worker"
        assert digest(changed_step.token()) != token, "another parameter, the same token"

    def test_pickles_and_the_copy_gives_the_same_result(self, step, step_input):
        ctx, clone_ctx = _context(step), _context(step)
        want = step.apply(step_input, ctx)
        got = shipped(step).apply(step_input, clone_ctx)
        same_data(got, want)
        assert _counts(clone_ctx) == _counts(ctx)
        assert clone_ctx.quarantined_rows().equals(ctx.quarantined_rows())

    def test_shared_objects_have_stable_tokens(self, step):
        from ...steps import SharedObject

        shared = step.shared_objects()
        assert all(isinstance(obj, SharedObject) for obj in shared), shared
        tokens = [obj.token for obj in shared]
        assert all(isinstance(t, str) and t for t in tokens), tokens
        assert len(set(tokens)) == len(tokens), f"two shared objects share a token: {tokens}"
        assert [obj.token for obj in step.shared_objects()] == tokens
        assert [obj.token for obj in shipped(step).shared_objects()] == tokens

    def test_sql_step_fused_with_neighbours_gives_the_same_result(
        self, step, step_input, neighbours
    ):
        if not isinstance(step, SqlStep):
            pytest.skip(
                f"{type(step).__name__} is not a SQL step: it is never compiled with others"
            )
        from ...compile import SqlChain

        for neighbour in neighbours:
            for steps in ((step, neighbour), (neighbour, step)):
                alone = _context(step)
                data = step_input
                for s in steps:
                    data = s.apply(data, alone)
                fused = _context(step)
                out = SqlChain(steps).apply(step_input, fused)
                where = " -> ".join(repr(s) for s in steps)
                assert_same_frames(_sorted_frame(out), _sorted_frame(data))
                assert _counts(fused) == _counts(alone), f"{where}: other counts when fused"
                assert_same_frames(
                    _sorted_frame(fused.quarantined_rows()), _sorted_frame(alone.quarantined_rows())
                )
