"""Great Expectations 1.x over Polars frames, turned into check outcomes.

Suites are declared as plain data (`Expect`: which asset check, which GX expectation, its
arguments), so building one costs nothing and `great_expectations` (about 2 s to import) is only
imported when a frame is actually validated. Validation runs in one ephemeral context per process
(a pandas datasource with a whole-dataframe batch definition), created on first use: creating one
costs ~25 ms, validating a suite ~20 ms plus the rows. Progress bars and analytics are off: one
bar per validation would flood the run logs.

A validation result becomes one `CheckOutcome` per asset check, passed when every expectation of
that check passed, with the failing values as small JSON metadata: counts, GX's
`partial_unexpected_list` and the offending rows' keys (`unexpected_index_column_names`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache
from typing import Any

import polars as pl

from analytics_platform.data_quality.raw_profile import CheckOutcome

# failing expectations, offending rows and unexpected values kept per check: metadata stays small
MAX_ITEMS = 5


@dataclass(frozen=True)
class Expect:
    """One GX expectation (class name of `great_expectations.expectations` + its arguments) that
    belongs to the asset check `check`."""

    check: str
    kind: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExpectationResult:
    check: str
    kind: str
    kwargs: Mapping[str, Any]
    success: bool
    result: Mapping[str, Any]
    error: str | None = None


_lock = threading.Lock()
_context_lock = threading.Lock()


def warm_up() -> threading.Thread:
    """Import GX and build the process's context in a background thread, now.

    Why: an asset that validates its rows after seconds of Polars and database work (a day of
    window aggregates) otherwise pays the import (~2.5 s of CPU) at the end, on the critical path.
    Started while the asset waits for PostgreSQL (its write: one server core busy, the client
    idle), the import runs on the other core; `validate` waits for it if it is not done."""
    thread = threading.Thread(target=_batch_definition, name="gx-warm-up", daemon=True)
    thread.start()
    return thread


def _batch_definition() -> Any:
    """The process's ephemeral context, pandas datasource and whole-dataframe batch definition,
    created once whichever thread asks first (`warm_up` or `validate`)."""
    with _context_lock:
        return _new_batch_definition()


@cache
def _new_batch_definition() -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        ),
    )
    asset = context.data_sources.add_pandas("frames").add_dataframe_asset("frame")
    return asset.add_batch_definition_whole_dataframe("whole_frame")


def validate(
    frame: pl.DataFrame, expects: Sequence[Expect], index_columns: Sequence[str] = (), *, name: str = "contract"
) -> list[ExpectationResult]:
    """Validate `frame` against `expects` in one GX suite; results in `expects`' order.

    `index_columns` identify an offending row in the metadata (the natural key, say); they must
    be columns of `frame`.
    """
    if not expects:
        return []
    import great_expectations as gx
    import great_expectations.expectations as gxe

    built = []
    for number, expect in enumerate(expects):
        cls = getattr(gxe, expect.kind)
        built.append(cls(**expect.kwargs, meta={"check": expect.check, "number": number}))
    result_format = {
        "result_format": "SUMMARY",
        "partial_unexpected_count": MAX_ITEMS,
        "unexpected_index_column_names": [c for c in index_columns if c in frame.columns],
    }
    with _lock:
        suite = gx.ExpectationSuite(name=name, expectations=built)
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame.to_pandas()})
        validation = batch.validate(suite, result_format=result_format)
    by_number: dict[int, ExpectationResult] = {}
    for item in validation.results:
        number = item.expectation_config.meta["number"]
        expect = expects[number]
        info = item.exception_info or {}
        error = info.get("exception_message") if info.get("raised_exception") else None
        by_number[number] = ExpectationResult(
            expect.check, expect.kind, expect.kwargs, bool(item.success), dict(item.result or {}), error
        )
    return [by_number[n] for n in range(len(expects))]


def outcomes(checks: Mapping[str, str], results: Iterable[ExpectationResult]) -> list[CheckOutcome]:
    """One outcome per entry of `checks` (name -> what it verifies), in that order.

    A check passes when all its expectations passed; one without any expectation (nothing to
    judge, e.g. no coarse bucket inside the window to reconcile) passes with `expectations: 0`.
    """
    grouped: dict[str, list[ExpectationResult]] = {name: [] for name in checks}
    for result in results:
        if result.check not in grouped:
            raise KeyError(f"expectation {result.kind} belongs to undeclared check {result.check!r}")
        grouped[result.check].append(result)
    return [_outcome(name, description, grouped[name]) for name, description in checks.items()]


def _outcome(name: str, description: str, results: list[ExpectationResult]) -> CheckOutcome:
    failed = [r for r in results if not r.success]
    counts = [r.result.get("element_count") for r in results if r.result.get("element_count") is not None]
    metadata: dict[str, Any] = {
        "expectations": len(results),
        "rows": max(counts) if counts else None,
        "unexpected": sum(_unexpected(r) for r in failed),
    }
    if failed:
        metadata["failures"] = [_failure(r) for r in failed[:MAX_ITEMS]]
    return CheckOutcome(name, not failed, description, jsonable(metadata))


def _unexpected(result: ExpectationResult) -> int:
    """Offending rows, or for a set expectation (the schema's columns) the members missing."""
    if "partial_missing_list" in result.result:
        return int(result.result.get("missing_count") or 0)
    return int(result.result.get("unexpected_count") or 0)


def _failure(result: ExpectationResult) -> dict[str, Any]:
    """What failed, small: the expectation, its columns, counts, unexpected values, offending rows."""
    summary: dict[str, Any] = {"expectation": result.kind}
    for key in ("column", "column_A", "column_B", "column_list", "min_value", "max_value", "or_equal"):
        if key in result.kwargs:
            summary[key] = result.kwargs[key]
    if result.error:
        summary["error"] = result.error
    found = result.result
    for key in ("unexpected_count", "unexpected_percent", "missing_count", "observed_value", "details"):
        if found.get(key) is not None:
            summary[key] = found[key]
    if found.get("partial_unexpected_list"):
        summary["partial_unexpected_list"] = list(found["partial_unexpected_list"])[:MAX_ITEMS]
    if found.get("partial_unexpected_index_list"):
        summary["offending"] = list(found["partial_unexpected_index_list"])[:MAX_ITEMS]
    if found.get("partial_missing_list"):
        summary["missing"] = list(found["partial_missing_list"])[:MAX_ITEMS]
    return summary


def jsonable(value: Any) -> Any:
    """`value` with numpy / pandas scalars, timestamps, tuples and NaN / NaT / NA made plain JSON."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, bool | str):
        return value
    if _missing(value):
        return None
    if isinstance(value, datetime | date) or callable(getattr(value, "isoformat", None)):
        return value.isoformat()
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int):
        return int(value)
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return jsonable(item())
    return str(value)


def _missing(value: Any) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    import pandas as pd  # already loaded by the validation that produced `value`

    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def merge_windows(parts: Sequence[tuple[str, Sequence[CheckOutcome]]]) -> list[CheckOutcome]:
    """Outcomes of the same checks judged window by window (the hours of a range run, so a day's
    backfill never holds a day of readings at once) as one outcome per check: passed when every
    window passed, with the windows' row and unexpected counts added up and the metadata of the
    first failing windows under `failing_windows`. One window's outcomes are returned as they are.
    """
    if len(parts) == 1:
        return list(parts[0][1])
    merged: list[CheckOutcome] = []
    names = [o.name for o in parts[0][1]] if parts else []
    for name in names:
        found = [(label, o) for label, outcomes in parts for o in outcomes if o.name == name]
        failing = [(label, o) for label, o in found if not o.passed]
        metadata: dict[str, Any] = {
            "windows": len(found),
            "rows": sum(int(o.metadata.get("rows") or 0) for _, o in found),
            "unexpected": sum(int(o.metadata.get("unexpected") or 0) for _, o in found),
        }
        if failing:
            metadata["failing_windows"] = {label: o.metadata for label, o in failing[:MAX_ITEMS]}
        merged.append(CheckOutcome(name, not failing, found[0][1].description, metadata))
    return merged
