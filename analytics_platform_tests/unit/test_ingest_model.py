"""The ingest model itself, against hand-computed cases: the property tests
(integration/test_ingest_model.py) are only as good as the model they compare the stack with."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from fractions import Fraction

import pytest

from analytics_platform_tests.support.ingest_model import (
    ACCEPT,
    ANY_REASON,
    BAD_TIMES,
    REJECT,
    WILDCARD,
    Accepted,
    Catalogue,
    Message,
    Rejected,
    Rules,
    _sqrt,
    agg_close,
    aggregates,
    bucket_start,
    expect,
    judge,
    parse_time,
    percentile_cont,
)

NOW_MS = int(datetime(2025, 8, 20, 12, 0, tzinfo=UTC).timestamp() * 1000)
RULES = Rules(Catalogue(frozenset({"temp", "humidity"}), frozenset({("t2", "power_kw")}), {WILDCARD: REJECT}))
T0 = int(datetime(2025, 8, 20, 11, 0, tzinfo=UTC).timestamp()) * 1_000_000  # 11:00 in microseconds


def reading(**changes: object) -> dict:
    body: dict = {
        "time": "2025-08-20T11:00:00Z",
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "m1",
        "sensor_id": "s1",
        "metric": "temp",
        "value": 23.5,
    }
    for name, value in changes.items():
        if value is ...:
            del body[name]
        else:
            body[name] = value
    return body


def verdict(body: object, rules: Rules = RULES, ts_ms: int = NOW_MS) -> Accepted | Rejected:
    return judge(json.dumps(body).encode(), ts_ms, rules)


def reasons(body: object, rules: Rules = RULES) -> frozenset[str]:
    result = verdict(body, rules)
    assert isinstance(result, Rejected), result
    return result.reasons


# ----- the contract -------------------------------------------------------------------------------


def test_a_v1_reading_is_one_row() -> None:
    result = verdict(reading(value=42, unit="degC", event_id="e1", payload={"source": "edge-1"}))
    assert isinstance(result, Accepted)
    (row,) = result.readings
    assert (row.time_us, row.value, row.unit, row.payload, row.event_id, row.schema_version, row.uncatalogued) == (
        T0,
        42.0,
        "degC",
        {"source": "edge-1"},
        "e1",
        1,
        False,
    )
    assert isinstance(row.value, float)
    assert row.identity == (T0, "t1", "f1", "m1", "s1", "temp", "e1")


def test_a_v2_message_fans_out_to_one_row_per_metric_sharing_its_event_id() -> None:
    body = reading(schema_version=2, metrics={"temp": 1.5, "humidity": 40}, units={"temp": "degC"}, event_id="x")
    del body["metric"], body["value"]
    result = verdict(body)
    assert isinstance(result, Accepted)
    assert [(r.metric, r.value, r.unit, r.event_id, r.schema_version) for r in result.readings] == [
        ("temp", 1.5, "degC", "x", 2),
        ("humidity", 40.0, None, "x", 2),
    ]


def test_one_uncatalogued_metric_rejects_a_whole_v2_message() -> None:
    body = reading(schema_version=2, metrics={"temp": 1.5, "Temp": 2.0})
    del body["metric"], body["value"]
    assert reasons(body) == {"unknown_metric"}


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (b"\xff{}", {"not_utf8"}),
        (b'{"time": "\xc3\x28"}', {"not_utf8"}),
        (b"", {"not_json"}),
        (b"{'value': 1}", {"not_json"}),
        (b'{"value": 1', {"not_json"}),
        (b'{"value": NaN}', {"non_finite", "not_json", "missing_field"}),  # NaN and six fields missing
        (b"[NaN]", {"non_finite", "not_json", "not_object"}),
        (b"[1, 2]", {"not_object"}),
        (b"null", {"not_object"}),
        (b"42", {"not_object"}),
        (None, ANY_REASON),
    ],
)
def test_messages_that_are_not_json_objects(value: bytes | None, want: set[str]) -> None:
    result = judge(value, NOW_MS, RULES)
    assert isinstance(result, Rejected) and result.reasons == want


@pytest.mark.parametrize(
    ("changes", "want"),
    [
        ({"sensor_id": ...}, {"missing_field"}),
        ({"value": ...}, {"missing_field"}),
        ({"time": ...}, {"missing_field"}),
        ({"tenant_id": None}, {"missing_field", "wrong_type"}),
        ({"value": "23.5"}, {"wrong_type"}),
        ({"value": True}, {"wrong_type"}),
        ({"tenant_id": 5}, {"wrong_type"}),
        ({"time": 1755687600}, {"wrong_type"}),
        ({"unit": 5}, {"wrong_type"}),
        ({"event_id": 7}, {"wrong_type"}),
        ({"machine_id": ""}, {"invalid_value"}),
        ({"event_id": ""}, {"invalid_value"}),
        ({"metric": "x" * 201}, {"invalid_value"}),
        ({"unit": "u" * 201}, {"invalid_value"}),
        ({"payload": [1]}, {"invalid_value", "wrong_type"}),
        ({"machine_id": "a\x00b"}, ANY_REASON),
        ({"payload": {"k": ["a\x00"]}}, ANY_REASON),
        ({"metric": "Temp"}, {"unknown_metric"}),
        ({"schema_version": 3}, {"unsupported_schema_version"}),
        ({"schema_version": 3, "tenant_id": ...}, ANY_REASON),
        ({"schema_version": 2}, {"missing_field"}),  # a v2 message needs `metrics`
        ({"schema_version": "2"}, {"wrong_type"}),
        ({"time": "2023-12-31T23:59:59.999999Z"}, {"time_before_partitions"}),
        ({"time": "0000-01-01T00:00:00Z"}, {"bad_time", "time_before_partitions"}),
        # several defects: any of theirs
        ({"machine_id": "", "value": "x", "time": "soon"}, {"invalid_value", "wrong_type", "bad_time"}),
    ],
)
def test_reasons(changes: dict, want: set[str]) -> None:
    assert reasons(reading(**changes)) == want


def test_overflowing_numbers_are_not_finite() -> None:
    result = judge(json.dumps(reading(value="X")).replace('"X"', "1e999").encode(), NOW_MS, RULES)
    assert isinstance(result, Rejected) and result.reasons == {"non_finite"}


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_literals_are_one_defect_among_the_others(literal: str) -> None:
    text = json.dumps(reading(value="X")).replace('"X"', literal)
    assert judge(text.encode(), NOW_MS, RULES).reasons == {"non_finite", "not_json"}  # type: ignore[union-attr]
    other = json.dumps(reading(value="X", machine_id="")).replace('"X"', literal)
    assert judge(other.encode(), NOW_MS, RULES).reasons == {"non_finite", "not_json", "invalid_value"}  # type: ignore[union-attr]
    versioned = json.dumps(reading(value="X", schema_version=3)).replace('"X"', literal)
    assert judge(versioned.encode(), NOW_MS, RULES).reasons == ANY_REASON  # type: ignore[union-attr]


def test_an_empty_v2_metrics_is_rejected_for_some_reason() -> None:
    body = reading(schema_version=2, metrics={})
    del body["metric"], body["value"]
    assert reasons(body) == ANY_REASON


@pytest.mark.parametrize("text", BAD_TIMES)
def test_bad_times(text: str) -> None:
    assert parse_time(text) == (None, {"bad_time"})
    assert reasons(reading(time=text)) == {"bad_time"}


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("2025-08-20T11:00:00Z", T0),
        ("2025-08-20T11:00:00+00:00", T0),
        ("2025-08-20T11:00:00.000000000Z", T0),
        ("2025-08-20T11:00:00.0000004Z", T0),  # below a microsecond: truncated
        ("2025-08-20T11:00:00.9999999Z", T0 + 999_999),
        ("2025-08-20T11:00:00.5Z", T0 + 500_000),
        ("2024-01-01T00:00:00Z", 1_704_067_200_000_000),
        ("2024-02-29T00:00:00Z", 1_709_164_800_000_000),
    ],
)
def test_good_times(text: str, micros: int) -> None:
    assert parse_time(text) == (micros, None)


def test_the_future_limit_is_600_s_after_the_kafka_timestamp_inclusive() -> None:
    at_limit = reading(time="2025-08-20T12:10:00Z")
    assert isinstance(verdict(at_limit, ts_ms=NOW_MS), Accepted)
    assert reasons(reading(time="2025-08-20T12:10:00.000001Z")) == {"future_time"}
    assert isinstance(verdict(reading(time="2025-08-20T12:10:00.001Z"), ts_ms=NOW_MS + 1), Accepted)
    assert verdict(at_limit, ts_ms=NOW_MS - 1) == Rejected(
        frozenset({"future_time"}), "time more than 600s after the Kafka timestamp"
    )


def test_the_catalogue_and_policies_per_tenant() -> None:
    catalogue = Catalogue(
        frozenset({"temp"}), frozenset({("t2", "power_kw")}), {WILDCARD: REJECT, "t3": ACCEPT, "t4": REJECT}
    )
    rules = Rules(catalogue)
    assert reasons(reading(metric="power_kw"), rules) == {"unknown_metric"}  # t1: not its entry, reject
    own = verdict(reading(tenant_id="t2", metric="power_kw"), rules)
    assert isinstance(own, Accepted) and not own.readings[0].uncatalogued
    accepted = verdict(reading(tenant_id="t3", metric="anything"), rules)
    assert isinstance(accepted, Accepted) and accepted.readings[0].uncatalogued
    default_accept = Rules(Catalogue(frozenset({"temp"}), frozenset(), {WILDCARD: ACCEPT, "t4": REJECT}))
    assert verdict(reading(metric="x"), default_accept).readings[0].uncatalogued  # type: ignore[union-attr]
    assert reasons(reading(tenant_id="t4", metric="x"), default_accept) == {"unknown_metric"}
    # no '*' policy row at all: reject
    assert reasons(reading(metric="x"), Rules(Catalogue(frozenset({"temp"}), frozenset(), {}))) == {"unknown_metric"}


# ----- identity and the winning copy ------------------------------------------------------------


def message(body: dict, partition: int = 0, offset: int = 0, ts_ms: int = NOW_MS, **kw: object) -> Message:
    return Message("topic", partition, offset, ts_ms, json.dumps(body).encode(), **kw)  # type: ignore[arg-type]


def test_the_lowest_coordinate_wins_whatever_the_order() -> None:
    a = message(reading(value=1.0), partition=1, offset=0)
    b = message(reading(value=2.0), partition=0, offset=5)
    c = message(reading(value=3.0), partition=0, offset=7)
    for order in ([a, b, c], [c, b, a], [b, a, c]):
        (row,) = expect(order, RULES).rows.values()
        assert (row.reading.value, row.kafka_partition, row.kafka_offset) == (2.0, 0, 5)


def test_one_coordinate_in_two_logs_the_older_log_wins() -> None:
    """Landed first wins a tie, whatever the Kafka timestamps say (the new log's producer clock runs
    30 min behind here)."""
    old_log = message(reading(value=1.0), offset=3, ts_ms=NOW_MS, log=0)
    new_log = message(reading(value=2.0), offset=3, ts_ms=NOW_MS - 1_800_000, log=1)
    for order in ([old_log, new_log], [new_log, old_log]):
        (row,) = expect(order, RULES).rows.values()
        assert row.reading.value == 1.0


def test_identity_is_the_senders_scope_time_and_event_id() -> None:
    same_time = [
        reading(event_id="e1"),
        reading(event_id="e1", machine_id="m2"),  # another machine numbering alike
        reading(event_id="e2"),
        reading(),  # no event id: the natural key
        reading(time="2025-08-20T11:00:00.0000004Z", event_id="e1", value=9.0),  # the same instant, a copy
        reading(time="2025-08-20T11:00:00+00:00"),  # the same instant, no id: a copy
    ]
    expected = expect([message(b, offset=i) for i, b in enumerate(same_time)], RULES)
    stored = [(r.reading.machine_id, r.reading.event_id or "", r.reading.value) for r in expected.rows.values()]
    assert sorted(stored) == [
        ("m1", "", 23.5),
        ("m1", "e1", 23.5),
        ("m1", "e2", 23.5),
        ("m2", "e1", 23.5),
    ]


def test_rejects_per_kafka_message_lost_messages_nowhere_one_message_read_twice_once() -> None:
    bad = reading(value="x")
    expected = expect(
        [
            message(bad, offset=0),
            message(bad, offset=1),  # a re-send: another Kafka message, kept again
            message(bad, offset=1),  # the same message (same coordinate and timestamp), read twice
            message(reading(), offset=2, drained=False),  # on a log replaced before a drain read it
        ],
        RULES,
    )
    assert sorted(expected.rejects) == [("topic", 0, 0, NOW_MS), ("topic", 0, 1, NOW_MS)]
    assert expected.rows == {}
    assert len(expected.lost) == 1
    assert expected.landed == {("topic", 0, 0, NOW_MS), ("topic", 0, 1, NOW_MS)}
    with pytest.raises(ValueError, match="two different messages"):
        expect([message(reading(), offset=4), message(reading(value=1.0), offset=4)], RULES)


# ----- window aggregates --------------------------------------------------------------------------


def rows_at(points: list[tuple[str, float]]) -> list:
    return list(
        expect(
            [message(reading(time=t, value=v, event_id=f"e{i}"), offset=i) for i, (t, v) in enumerate(points)], RULES
        ).rows.values()
    )


def test_aggregates_of_hand_computed_buckets() -> None:
    rows = rows_at(
        [
            ("2025-08-20T11:00:00Z", 10.0),
            ("2025-08-20T11:00:30Z", 20.0),
            ("2025-08-20T11:00:59.999Z", 30.0),
            ("2025-08-20T11:01:00Z", 40.0),
            ("2025-08-20T11:59:59Z", 50.0),
        ]
    )
    found = aggregates(rows)
    series = ("t1", "f1", "m1", "s1", "temp")
    first = found[(60, T0, *series)]
    assert (first.count, first.sum, first.avg, first.min, first.max, first.first, first.last) == (
        3,
        60.0,
        20.0,
        10.0,
        30.0,
        10.0,
        30.0,
    )
    assert first.stddev == 10.0 and first.p50 == 20.0 and first.p95 == pytest.approx(29.0)
    assert found[(60, T0 + 60_000_000, *series)].stddev is None  # one reading: NULL, not 0 or NaN
    hour = found[(3600, T0, *series)]
    assert (hour.count, hour.sum, hour.avg, hour.first, hour.last) == (5, 150.0, 30.0, 10.0, 50.0)
    assert hour.stddev == pytest.approx(math.sqrt(250.0), rel=1e-15)
    assert hour.p95 == pytest.approx(48.0)
    assert sorted(k[:2] for k in found if k[0] == 300) == [(300, T0), (300, T0 + 3300 * 1_000_000)]
    assert len(found) == 3 + 2 + 1


def test_first_and_last_at_one_instant_take_the_smaller_and_the_larger() -> None:
    rows = rows_at([("2025-08-20T11:00:10Z", 5.0), ("2025-08-20T11:00:10Z", -1.0), ("2025-08-20T11:00:20Z", 3.0)])
    bucket = aggregates(rows, [60])[(60, T0, "t1", "f1", "m1", "s1", "temp")]
    assert (bucket.first, bucket.last, bucket.count) == (-1.0, 3.0, 3)
    tied = aggregates(rows[:2], [60])[(60, T0, "t1", "f1", "m1", "s1", "temp")]
    assert (tied.first, tied.last) == (-1.0, 5.0)


def test_percentile_cont_and_buckets_are_postgresqls() -> None:
    ordered = [Fraction(v) for v in (1, 2, 3, 4)]
    assert percentile_cont(ordered, Fraction(95, 100)) == Fraction(385, 100)
    assert percentile_cont(ordered, Fraction(1, 2)) == Fraction(5, 2)
    assert percentile_cont([Fraction(7)], Fraction(95, 100)) == 7
    assert bucket_start(T0 + 299_999_999, 300) == T0 and bucket_start(T0 + 300_000_000, 300) == T0 + 300_000_000


def test_square_roots_are_correctly_rounded() -> None:
    for value in (Fraction(2), Fraction(1, 3), Fraction(10**12 + 1, 7), Fraction(1, 10**20)):
        assert _sqrt(value) == pytest.approx(math.sqrt(value), rel=1e-15)
    assert _sqrt(Fraction(0)) == 0.0 and _sqrt(Fraction(9, 4)) == 1.5


def test_aggregates_compare_exactly_on_the_grid_and_with_a_tolerance_elsewhere() -> None:
    assert agg_close("sum", 0.75, 0.75, exact=True)
    assert not agg_close("sum", 0.75, 0.75 + 1e-15, exact=True)
    assert agg_close("avg", 1.0, 1.0 + 1e-13, exact=True)
    assert not agg_close("avg", 1.0, 1.0 + 1e-11, exact=True)
    assert agg_close("sum", 0.3, 0.30000000000000004, exact=False)
    assert not agg_close("max", 0.3, 0.30000000000000004, exact=False)  # picked, never computed: exact
    assert agg_close("stddev", None, None, exact=True) and not agg_close("stddev", None, 0.0, exact=True)
