"""A drain report as the drain service stores it per batch and the drain sensor reads it back:
JSON round trip, merging batches, and the rate over the reported span (hand-computed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from analytics_platform.data_quality.raw_profile import PartitionQuality
from analytics_platform.defs.ingest.sensors import service_report
from analytics_platform.ingest.drain import TRACES_PER_HOUR, DrainReport
from analytics_platform.ingest.store import OffsetReset

H3 = datetime(2025, 8, 20, 3, tzinfo=UTC)
H4 = datetime(2025, 8, 20, 4, tzinfo=UTC)


def batch(messages: int, rows: int, rejects: int, hour: datetime, offset: int, elapsed: float) -> DrainReport:
    report = DrainReport(
        domain="sensor",
        messages=messages,
        rows=rows,
        rejects=rejects,
        batches=1,
        max_ingest_lag_s=elapsed * 2,
        elapsed_s=elapsed,
        positions={("t.sensors", 0): offset},
    )
    report.partitions[hour] = PartitionQuality(rows=rows, rejects=rejects, min_time=hour, max_time=hour)
    return report


def test_a_report_survives_json_exactly() -> None:
    report = batch(4, 3, 1, H3, 4, 0.25)
    report.offset_resets.append(OffsetReset("t.sensors", 0, "topic_id_changed", "new broker", 10, 0, 0, "a", "b"))
    back = DrainReport.from_json(json.loads(json.dumps(report.to_json())))
    assert back == report


def test_merging_batches_adds_counts_keeps_the_newest_positions_and_the_worst_lag() -> None:
    total = batch(4, 3, 1, H3, 4, 0.25)
    total.merge(batch(2, 2, 0, H3, 6, 0.5))
    total.merge(batch(1, 1, 0, H4, 7, 0.1))
    assert (total.messages, total.rows, total.rejects, total.batches) == (7, 6, 1, 3)
    assert total.positions == {("t.sensors", 0): 7}
    assert total.max_ingest_lag_s == 1.0
    assert {h: (q.rows, q.rejects) for h, q in total.partitions.items()} == {H3: (5, 1), H4: (1, 0)}


def test_the_sensor_rate_is_over_the_span_of_the_reported_batches() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        (1, t0, batch(100, 100, 0, H3, 100, 0.5).to_json()),
        (2, t0 + timedelta(seconds=1.5), batch(300, 300, 0, H3, 400, 0.2).to_json()),
    ]
    report = service_report(rows)
    assert report is not None
    # 400 messages from the first batch's start (0.5 s before its commit) to the last commit: 2 s
    assert (report.messages, report.elapsed_s, report.rate) == (400, 2.0, 200.0)
    assert service_report([]) is None


def test_batch_traces_survive_json_and_merge_per_hour_newest_kept() -> None:
    """With tracing on each batch names its span per hour; a pass keeps the newest TRACES_PER_HOUR of
    each hour (what the hour's asset spans link to), each once."""
    first = batch(1, 1, 0, H3, 1, 0.1)
    first.traces = {H3: [f"00-{1:032x}-{1:016x}-01"]}
    assert DrainReport.from_json(json.loads(json.dumps(first.to_json()))) == first
    total = DrainReport(domain="sensor")
    for i in range(1, TRACES_PER_HOUR + 3):
        step = batch(1, 1, 0, H3, i, 0.1)
        step.traces = {H3: [f"00-{i:032x}-{i:016x}-01"]}
        total.merge(step)
    again = batch(1, 1, 0, H3, 50, 0.1)
    again.traces = {H3: [f"00-{TRACES_PER_HOUR + 2:032x}-{TRACES_PER_HOUR + 2:016x}-01"]}
    total.merge(again)  # one already kept is not kept twice
    late = batch(1, 1, 0, H4, 99, 0.1)
    late.traces = {H4: [f"00-{99:032x}-{99:016x}-01"]}
    total.merge(late)
    assert total.traces == {
        H3: [f"00-{i:032x}-{i:016x}-01" for i in range(3, TRACES_PER_HOUR + 3)],
        H4: [f"00-{99:032x}-{99:016x}-01"],
    }
    assert DrainReport.from_json({"domain": "sensor"}).traces == {}  # a report stored before tracing
