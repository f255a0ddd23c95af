"""Issue 20's defect, reproduced on a real machine and kept: NAB's labelled machine-temperature series
(bench/data/nab, MIT), judged hour by hour as the asset would (`seasonal.backtest`, via
bench/detection_nab.py). Before the redesign 31 % of its normal samples were flagged (14.7 % critical,
about 4 critical events a day outside the failures) and the failures looked no different (38 %).

The figures are exact: they change only when the detector does, and then this test says by how much."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest

from analytics_platform.settings import REPO_ROOT
from analytics_platform.transforms.seasonal import SeasonalOptions


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("detection_nab", REPO_ROOT / "bench" / "detection_nab.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def figures() -> dict:
    return bench().evaluate(SeasonalOptions())


def test_the_ordinary_swing_no_longer_pages(figures: dict) -> None:
    assert figures["samples_judged"] == 22_650
    assert round(figures["normal_flagged_share"], 4) == 0.027  # before: 0.31
    assert round(figures["normal_critical_share"], 4) == 0.0018  # before: 0.147
    # five critical events in 70.8 normal days (before: about 4 a day), 17 of any level
    assert (figures["critical_events_outside"], figures["warning_events_outside"]) == (5, 17)
    assert figures["anomaly_rows"] == 1_923  # before: 9,234


def test_the_failures_stand_out_and_are_seen_before_their_labelled_moment(figures: dict) -> None:
    # a failure window is flagged twelve times as often as normal operation (before: 38 % against 31 %)
    assert round(figures["window_flagged_share"], 4) == 0.3228
    leads = [(w["warning_lead_h"], w["critical_lead_h"]) for w in figures["windows"]]
    # every window is reported hours before NAB's labelled anomaly point; the two failures that took
    # the machine down hard (2013-12-16 and the catastrophic 2014-02-08) are critical before it
    assert leads == [(23.6, None), (1.8, 1.5), (17.4, None), (9.5, 3.1)]
