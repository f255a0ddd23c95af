"""The automation daemon's ticks, driven by a test.

A test that asks what Dagster's declarative automation requests evaluates a selection at successive
times, each tick from the cursor the one before left, as the daemon does; this keeps that chain in one
place so a test reads as the ticks and what each requested.
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg


class Ticks:
    """Successive evaluations of one asset selection's automation conditions, each from the last cursor.

    A time given as text is ISO 8601 in UTC unless it carries its own offset (the tests' hours are UTC).
    """

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance, selection: dg.AssetSelection) -> None:
        self.defs, self.instance, self.selection = defs, instance, selection
        self.last: dg.EvaluateAutomationConditionsResult | None = None

    def __call__(self, when: datetime | str) -> dg.EvaluateAutomationConditionsResult:
        if isinstance(when, str):
            when = datetime.fromisoformat(when)
            when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
        self.last = dg.evaluate_automation_conditions(
            defs=self.defs,
            instance=self.instance,
            asset_selection=self.selection,
            evaluation_time=when,
            cursor=self.last.cursor if self.last is not None else None,
        )
        return self.last
