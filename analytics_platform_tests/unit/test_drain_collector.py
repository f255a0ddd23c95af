"""The drain pauses Python's cyclic garbage collector while librdkafka hands over a batch (its
message objects would otherwise be promoted to the oldest generation and set off whole-heap
collections); the pause must end with the call and never turn on a collector the process turned off."""

from __future__ import annotations

import gc

import pytest

from analytics_platform.ingest.drain import _collector_paused


def test_the_collector_is_off_during_the_call_and_on_again_after() -> None:
    assert gc.isenabled()
    with _collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_the_collector_comes_back_when_the_call_raises() -> None:
    with pytest.raises(RuntimeError), _collector_paused():
        raise RuntimeError("broker gone")
    assert gc.isenabled()


def test_a_collector_the_process_turned_off_stays_off() -> None:
    gc.disable()
    try:
        with _collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
