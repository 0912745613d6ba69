"""The source contract: stable listings, honest fingerprints, counted rows, safe to show and ship."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from ...arrow import count_rows
from ...batching import ByCount, make_batches
from ...context import BatchContext
from ...core import Batch, Unit, digest
from ...protocols import Dimensioned
from .checks import same_data, shipped
from .inputs import ContractInput, TableInput

__all__ = ["SourceContract"]


class SourceContract:
    """The tests every source passes. Subclass it in a test module and override a few fixtures.

    For a source of files, overriding ``source_input`` is enough: the contract
    writes ``n_inputs`` inputs into a folder and reads them with
    ``source_input.source(folder)``. Any other source overrides:

    ``source``
        The source under test, over input already in place. Required.
    ``change_unit``
        A function ``units -> key``: change the content of one of the listed units
        in a way the source promises to notice (a file rewritten, rows added to a
        key range) and return its key.
    ``expected_rows``, ``expected_quarantined``
        How many rows the input holds in all (good and bad; None: not checked), and
        how many of them the source must set aside.
    ``secret_source``
        ``(source, secrets)``: a source built with credentials (a URL with a
        password, a token) and the strings that must never show. Default: the
        source and no secrets.
    ``batching``
        How units form the batches whose loads are checked. Default: two units a batch.

    What is checked: ``list_units`` gives the same units in the same order on a
    second call; unit keys are unique; a batch's fingerprint changes when its
    unit's content changes and not otherwise; loading every batch of a plan
    counts the rows it read (``ctx.rows_in``) and returns as many rows as were
    read minus those quarantined and those a rule of the source leaves out
    (counted with ``ctx.filtered``: a hybrid's rows the other side covers);
    loading a batch twice gives the same data; ``describe()`` and ``repr()``
    show no credentials; the source pickles, and the copy lists and loads what
    the original does.

    Examples
    --------
    >>> class TestJsonLinesFiles(SourceContract):  # doctest: +SKIP
    ...     @pytest.fixture
    ...     def source_input(self):
    ...         return TableInput("jsonl", bad_rows=2)
    """

    #: How many inputs the default fixtures write.
    n_inputs = 4

    # -- fixtures an implementation overrides -------------------------------------------

    @pytest.fixture
    def source_input(self) -> ContractInput:
        return TableInput()

    @pytest.fixture
    def input_folder(self, tmp_path: Path, source_input: ContractInput) -> Path:
        folder = tmp_path / "input"
        for i in range(self.n_inputs):
            source_input.write(folder, i)
        return folder

    @pytest.fixture
    def source(self, source_input: ContractInput, input_folder: Path) -> Any:
        return source_input.source(input_folder)

    @pytest.fixture
    def change_unit(
        self, source_input: ContractInput, input_folder: Path
    ) -> Callable[[Sequence[Unit]], str]:
        def change(units: Sequence[Unit]) -> str:
            index = self.n_inputs // 2
            [key] = [u.key for u in units if source_input.is_unit(u.key, index)]
            source_input.change(input_folder, index)
            return key

        return change

    @pytest.fixture
    def expected_rows(self, source_input: ContractInput) -> int | None:
        return self.n_inputs * source_input.rows

    @pytest.fixture
    def expected_quarantined(self, source_input: ContractInput) -> int:
        return self.n_inputs * source_input.bad_rows

    @pytest.fixture
    def secret_source(self, source: Any) -> tuple[Any, tuple[str, ...]]:
        return source, ()

    @pytest.fixture
    def batching(self) -> Any:
        return ByCount(2)

    # -- building blocks ------------------------------------------------------------------

    @staticmethod
    def fingerprints(source: Any, units: Sequence[Unit]) -> dict[str, str]:
        """``unit key -> fingerprint`` of the one-unit batches a plan of ``units`` makes."""
        salt = digest(source.token())
        batches = make_batches(units, ByCount(1), salt=salt)
        return {b.units[0].key: b.fingerprint for b in batches}

    @staticmethod
    def load(source: Any, batch: Batch) -> tuple[Any, BatchContext]:
        ctx = BatchContext(batch=batch, run_id="contract")
        return source.load(batch, ctx), ctx

    @staticmethod
    def rows_of(source: Any, data: Any) -> int:
        return count_rows(data, source.dim if isinstance(source, Dimensioned) else None)

    # -- the contract ------------------------------------------------------------------

    def test_listing_is_stable(self, source):
        first, second = source.list_units(), source.list_units()
        assert first, "the source lists no units"
        assert [u.key for u in second] == [u.key for u in first], "another listing, or order"
        assert second == first, "a second listing gave units another size, time or identity"

    def test_unit_keys_are_unique(self, source):
        keys = [u.key for u in source.list_units()]
        repeated = sorted(k for k in set(keys) if keys.count(k) > 1)
        assert not repeated, f"units listed more than once: {repeated}"

    def test_fingerprints_change_with_content_and_only_then(self, source, change_unit):
        units = source.list_units()
        before = self.fingerprints(source, units)
        assert self.fingerprints(source, source.list_units()) == before, "nothing changed"
        key = change_unit(units)
        after = self.fingerprints(source, source.list_units())
        assert key in after, f"the changed unit {key!r} is no longer listed"
        assert after[key] != before[key], f"{key!r} changed, its fingerprint did not"
        moved = [k for k in before if k != key and after.get(k) != before[k]]
        assert not moved, f"units that did not change got another fingerprint: {moved}"

    def test_load_counts_every_row(self, source, batching, expected_rows, expected_quarantined):
        plan = make_batches(source.list_units(), batching, salt="contract")
        read = quarantined = 0
        for batch in plan:
            data, ctx = self.load(source, batch)
            rows = self.rows_of(source, data)
            assert ctx.rows_in == rows + ctx.rows_quarantined + ctx.rows_filtered, (
                f"batch {batch.id}: {ctx.rows_in} rows read, {rows} returned, "
                f"{ctx.rows_quarantined} quarantined, {ctx.rows_filtered} left out by rule"
            )
            read += ctx.rows_in
            quarantined += ctx.rows_quarantined
        assert read > 0, "no batch counted a row it read"
        if expected_rows is not None:
            assert read == expected_rows, f"{read} rows read, the input holds {expected_rows}"
        assert quarantined == expected_quarantined, (
            f"{quarantined} rows quarantined, expected {expected_quarantined}"
        )

    def test_loading_a_batch_twice_gives_the_same_data(self, source, batching):
        for batch in make_batches(source.list_units(), batching, salt="contract"):
            first, ctx1 = self.load(source, batch)
            second, ctx2 = self.load(source, batch)
            same_data(second, first)
            assert (ctx2.rows_in, ctx2.rows_quarantined) == (ctx1.rows_in, ctx1.rows_quarantined)
            assert ctx2.quarantined_rows().equals(ctx1.quarantined_rows())

    def test_describe_and_repr_show_no_credentials(self, secret_source):
        src, secrets = secret_source
        shown = src.describe()
        assert isinstance(shown, str) and shown.strip(), "describe() says nothing"
        assert "\n" not in shown, "describe() is more than one line"
        for text in (shown, repr(src)):
            leaked = [s for s in secrets if s in text]
            assert not leaked, f"{text!r} shows {leaked}"

    def test_pickles_and_the_copy_does_the_same(self, source, batching):
        clone = shipped(source)
        assert clone.describe() == source.describe()
        assert digest(clone.token()) == digest(source.token()), "the token changed on the way"
        units = source.list_units()
        assert clone.list_units() == units
        batch = make_batches(units, batching, salt="contract")[0]
        (want, _), (got, _) = self.load(source, batch), self.load(clone, batch)
        same_data(got, want)
