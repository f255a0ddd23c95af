"""The scope of a detection run (results.anomalies.Scope): what it names, the SQL and the frame
filter that keep a scoped run inside one tenant's factory or machine and some methods."""

from __future__ import annotations

import polars as pl
import pytest

from analytics_platform.defs.anomalies.assets import DetectionScope
from analytics_platform.results.anomalies import Scope
from analytics_platform.transforms.anomalies import METHODS


def test_no_scope_is_everything() -> None:
    everything = Scope()
    assert everything.whole and everything.label == "every series, every method"
    assert everything.machines("a") == ("true", []) and everything.rows("a") == ("true", [])
    assert all(everything.wants(m) for m in METHODS)
    # every method named is no narrowing either: one spelling for one scope
    assert Scope(methods=tuple(reversed(METHODS))) == everything
    assert Scope("t1", "f1", methods=METHODS).methods is None


def test_a_machine_and_some_methods() -> None:
    scope = Scope("t1", "f1", "m1", ("range", "deviation", "range"))
    assert not scope.whole
    assert scope.methods == ("deviation", "range")  # in METHODS' order, once each
    assert scope.machines() == ("tenant_id = %s AND factory_id = %s AND machine_id = %s", ["t1", "f1", "m1"])
    assert scope.rows("a") == (
        "a.tenant_id = %s AND a.factory_id = %s AND a.machine_id = %s AND a.method = ANY(%s)",
        ["t1", "f1", "m1", ["deviation", "range"]],
    )
    assert scope.wants("range") and not scope.wants("baseline")
    assert scope.label == "t1/f1/m1: deviation, range"
    assert Scope("t1", "f1").machines("d") == ("d.tenant_id = %s AND d.factory_id = %s", ["t1", "f1"])
    assert Scope("t1", "f1").label == "t1/f1: every method"


def test_keep_filters_a_frame_by_machine_and_method() -> None:
    frame = pl.DataFrame(
        {
            "tenant_id": ["t1", "t2", "t1", "t1", "t1"],
            "factory_id": ["f1", "f1", "f1", "f2", "f1"],
            "machine_id": ["m1", "m1", "m2", "m1", "m1"],
            "method": ["deviation", "deviation", "deviation", "deviation", "spec"],
        }
    )
    assert Scope("t1", "f1", "m1", ("deviation",)).keep(frame).rows() == [("t1", "f1", "m1", "deviation")]
    assert Scope("t1", "f1").keep(frame)["machine_id"].to_list() == ["m1", "m2", "m1"]
    assert Scope().keep(frame).equals(frame)
    # a frame without methods (baseline deviations) is filtered by machine alone
    assert Scope("t2", "f1", "m1", ("baseline",)).keep(frame.drop("method")).height == 1


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        (dict(factory_id="f1"), "a scope names a tenant, then a factory, then a machine: none may be skipped"),
        (dict(tenant_id="t1", machine_id="m1"), "a scope names a tenant, then a factory, then a machine"),
        (dict(methods=()), "a scope's methods are absent (every method) or at least one"),
        (dict(methods=("deviation", "tea_leaves")), "unknown methods tea_leaves; known: deviation, shift"),
    ],
)
def test_a_scope_that_does_not_hold_is_refused(scope: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Scope(**scope)


def test_the_assets_run_config_is_the_scope() -> None:
    """No run config (the schedule, a backfill, a materialisation from the UI) is everything; an API
    request's config names its scope."""
    assert DetectionScope().scope() == Scope()
    config = DetectionScope(tenant_id="t1", factory_id="f1", methods=["range", "baseline"])
    assert config.scope() == Scope("t1", "f1", None, ("baseline", "range"))
    with pytest.raises(ValueError, match="unknown methods tea_leaves"):
        DetectionScope(tenant_id="t1", factory_id="f1", methods=["tea_leaves"]).scope()
