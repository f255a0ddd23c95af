"""Pure parts of the API: window planning, epoch-aligned ceilings, the SELECT builder, key shapes,
CSV cells, content negotiation, conditional requests, gzip negotiation and `fields`. No database,
no app."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime

import pytest
from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from starlette.requests import Request

from analytics_platform.api.auth import tenant_scope
from analytics_platform.api.caching import matches, material, request_key, tag_of_material
from analytics_platform.api.db import json_loads
from analytics_platform.api.keys import Principal, digest, key_id_of
from analytics_platform.api.middleware import accepts_gzip, compressible, weak
from analytics_platform.api.params import ceil_to
from analytics_platform.api.query import Select
from analytics_platform.api.respond import _cell, keyset, wants_csv
from analytics_platform.api.response_cache import Entry, KeptAnswer
from analytics_platform.api.routes.agg import COLUMNS, chosen_columns, plan_source

STORED = [60, 300, 3600]


@pytest.mark.parametrize(
    ("window_s", "daily_view", "expected"),
    [
        (60, False, ("stored", 60)),
        (3600, True, ("stored", 3600)),
        (120, False, ("rollup", 60)),
        (900, False, ("rollup", 300)),  # 300 is the coarsest stored divisor of 900
        (7200, True, ("rollup", 3600)),
        (86400, False, ("rollup", 3600)),
        (86400, True, ("continuous_aggregate", 86400)),
        (7 * 86400, True, ("continuous_aggregate", 86400)),
    ],
)
def test_plan_source_reads_stored_windows_and_rolls_up_from_the_coarsest_divisor(
    window_s: int, daily_view: bool, expected: tuple[str, int]
) -> None:
    assert plan_source(window_s, STORED, daily_view) == expected


def test_plan_source_without_the_hourly_window_does_not_use_the_daily_view() -> None:
    assert plan_source(86400, [60, 300], True) == ("rollup", 300)


@pytest.mark.parametrize("window_s", [7, 90, 1000])
def test_plan_source_refuses_a_window_no_stored_window_divides(window_s: int) -> None:
    with pytest.raises(RequestValidationError) as raised:
        plan_source(window_s, STORED, False)
    (error,) = raised.value.errors()
    assert error["loc"] == ("query", "window_s")
    assert error["msg"] == "window_s must be a stored window (60, 300, 3600) or a multiple of one, e.g. 86400"


@pytest.mark.parametrize(
    ("moment", "window_s", "expected"),
    [
        ("2025-08-20T03:00:00+00:00", 3600, "2025-08-20T03:00:00+00:00"),  # on a boundary: itself
        ("2025-08-20T03:00:00.000001+00:00", 3600, "2025-08-20T04:00:00+00:00"),
        ("2025-08-20T03:00:01+00:00", 86400, "2025-08-21T00:00:00+00:00"),
        ("2025-08-20T00:00:00+00:00", 86400, "2025-08-20T00:00:00+00:00"),
        ("1969-12-31T23:59:30+00:00", 60, "1970-01-01T00:00:00+00:00"),
        # 7200 s buckets are aligned to the epoch: 2025-08-20T03:30 -> 04:00
        ("2025-08-20T03:30:00+00:00", 7200, "2025-08-20T04:00:00+00:00"),
    ],
)
def test_ceil_to_is_epoch_aligned(moment: str, window_s: int, expected: str) -> None:
    assert ceil_to(datetime.fromisoformat(moment), window_s) == datetime.fromisoformat(expected)


def test_select_keeps_only_the_filters_given_and_binds_every_value() -> None:
    query, params = (
        Select("a, b", "analytics.t")
        .eq("tenant_id", "t1")
        .eq("machine_id", None)
        .cmp("time", ">=", 5)
        .cmp("severity", ">=", None)
        .cond("factory_id IN ({}, '*')", "f1")
        .after(("time", "id"), [7, 8], descending=True)
        .sql(("time", "id"), 11, descending=True)
    )
    assert query == (
        "SELECT a, b FROM analytics.t WHERE tenant_id = %(p0)s AND time >= %(p1)s AND factory_id IN (%(p2)s, '*') "
        "AND (time, id) < (%(p3)s, %(p4)s) ORDER BY time DESC, id DESC LIMIT %(p5)s"
    )
    assert params == {"p0": "t1", "p1": 5, "p2": "f1", "p3": 7, "p4": 8, "p5": 11}


def test_select_without_filters_selects_everything_in_order() -> None:
    assert Select("x", "t").sql(("x",), 2) == ("SELECT x FROM t WHERE true ORDER BY x LIMIT %(p0)s", {"p0": 2})


def test_key_shape() -> None:
    key = "apk_0123456789ab_" + "A" * 43
    assert key_id_of(key) == "0123456789ab"
    for bad in ("", key[:-1], key + "A", key.replace("apk_", "apx_"), "apk_0123456789AB_" + "A" * 43):
        assert key_id_of(bad) is None
    assert digest(key).hex() == digest(key).hex() and len(digest(key)) == 32
    assert digest(key) != digest(key[:-1] + "B")


TENANT = Principal("k1", "tests", "t1", frozenset({"read"}))
ADMIN = Principal("k2", "ops", None, frozenset({"read"}))


def test_tenant_scope_a_tenant_key_reads_its_own_tenant_only() -> None:
    assert tenant_scope(TENANT, None, required=True) == "t1"
    assert tenant_scope(TENANT, "t1", required=True) == "t1"
    with pytest.raises(HTTPException) as raised:
        tenant_scope(TENANT, "t2", required=False)
    assert raised.value.status_code == 404
    assert raised.value.detail == "tenant 't2' not found"


def test_tenant_scope_an_admin_key_names_the_tenant_where_required() -> None:
    assert tenant_scope(ADMIN, "t2", required=True) == "t2"
    assert tenant_scope(ADMIN, None, required=False) is None
    with pytest.raises(RequestValidationError) as raised:
        tenant_scope(ADMIN, None, required=True)
    assert raised.value.errors()[0]["loc"] == ("query", "tenant_id")


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        (None, ""),
        (True, "true"),
        (False, "false"),
        ("a,b", "a,b"),  # the csv writer quotes it
        (3, "3"),
        (0.1, "0.1"),
        (1e-7, "1e-7"),
        (float("nan"), ""),  # JSON null
        (float("inf"), ""),
        (datetime(2025, 8, 20, 3, 15, 30, 250000, tzinfo=UTC), "2025-08-20T03:15:30.250000Z"),
        (datetime(2025, 8, 20, 3, tzinfo=UTC), "2025-08-20T03:00:00Z"),
        ({"a": [1, "x"]}, '{"a":[1,"x"]}'),
    ],
)
def test_csv_cells_carry_the_json_values(value: object, cell: str) -> None:
    assert _cell(value) == cell


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("line=1", "line=1"),  # only a leading character makes a formula
        (-2.5, "-2.5"),  # numbers are numbers
        (-3, "-3"),
    ],
)
def test_csv_text_a_spreadsheet_would_run_as_a_formula_is_quoted_as_text(value: object, cell: str) -> None:
    """A tenant's own ids, metric names, notes and lab sample ids reach an operator's spreadsheet: a cell
    beginning with = + - @ (or a tab / carriage return) runs there as a formula (CSV injection, OWASP). A
    leading apostrophe makes the spreadsheet show it as the text it is; numbers are left alone."""
    assert _cell(value) == cell


def _request(accept: str | None) -> Request:
    headers = [(b"accept", accept.encode())] if accept is not None else []
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "query_string": b""})


@pytest.mark.parametrize(
    ("accept", "csv"),
    [
        (None, False),
        ("*/*", False),
        ("application/json", False),
        ("text/csv", True),
        ("text/csv, application/json;q=0.5", True),
        ("application/json, text/csv", False),
    ],
)
def test_csv_only_when_asked_for_first(accept: str | None, csv: bool) -> None:
    assert wants_csv(_request(accept)) is csv


def test_keyset_types_a_cursor_and_refuses_one_of_another_shape() -> None:
    from analytics_platform.api.params import encode_cursor

    at = datetime(2025, 8, 20, 3, tzinfo=UTC)
    assert keyset(encode_cursor(at, "s1"), (datetime, str)) == [at, "s1"]
    assert keyset(None, (datetime, str)) is None
    for cursor, kinds in (
        (encode_cursor(at, "s1"), (datetime, int)),
        (encode_cursor("2025-08-20T03:00:00", "s1"), (datetime, str)),  # no zone
        (encode_cursor(True), (int,)),
        (encode_cursor(2**63), (int,)),
    ):
        with pytest.raises(RequestValidationError):
            keyset(cursor, kinds)


def _agg_request(query: bytes = b"", **headers: str) -> Request:
    raw = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "GET", "path": "/v1/agg", "headers": raw, "query_string": query})


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('W/"abc"', True),
        ('"abc"', True),  # weak comparison: W/ or not
        ('"x", W/"abc"', True),
        ("*", True),
        ('W/"abcd"', False),
        ("", False),
    ],
)
def test_if_none_match_compares_weakly(header: str, expected: bool) -> None:
    assert matches(_agg_request(if_none_match=header), 'W/"abc"') is expected


def tag_of(*parts: object) -> str:
    """A tag as the routes make one (caching.known_answer): of the material of what decides the answer."""
    return tag_of_material(material(*parts))


def test_a_tag_stands_for_the_tenant_the_query_and_the_representation() -> None:
    request = _agg_request(b"metric=temp&window_s=3600")
    same_query_reordered = _agg_request(b"window_s=3600&metric=temp")
    assert tag_of(request_key(request, "t1", "json"), [1]) == tag_of(
        request_key(same_query_reordered, "t1", "json"), [1]
    )
    others = {
        tag_of(request_key(request, "t2", "json"), [1]),
        tag_of(request_key(request, "t1", "csv"), [1]),
        tag_of(request_key(_agg_request(b"metric=temp&window_s=60"), "t1", "json"), [1]),
        tag_of(request_key(request, "t1", "json"), [2]),
    }
    assert len(others) == 4 and tag_of(request_key(request, "t1", "json"), [1]) not in others
    assert tag_of(1).startswith('W/"') and tag_of(1).endswith('"')


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.5", True),
        ("*", True),
        ("gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("identity", False),
        ("", False),
    ],
)
def test_gzip_when_accept_encoding_allows_it(header: str, expected: bool) -> None:
    assert accepts_gzip(header) is expected


def test_only_text_not_yet_encoded_is_compressed() -> None:
    assert compressible([(b"content-type", b"application/json")])
    assert compressible([(b"content-type", b"text/csv; charset=utf-8")])
    assert not compressible([(b"content-type", b"image/png")])
    assert not compressible([(b"content-type", b"application/json"), (b"content-encoding", b"br")])


def test_fields_keep_the_answer_order_and_the_key() -> None:
    assert chosen_columns(None) == COLUMNS
    assert chosen_columns("max,avg , min") == ("bucket_start", "sensor_id", "avg", "min", "max", "provisional")
    assert chosen_columns("provisional,bucket_start") == ("bucket_start", "sensor_id", "provisional")
    with pytest.raises(RequestValidationError) as raised:
        chosen_columns("avg,mean")
    (error,) = raised.value.errors()
    assert error["loc"] == ("query", "fields")
    assert error["msg"] == f"unknown field 'mean'; known: {', '.join(COLUMNS)}"


def test_json_columns_read_with_orjson_and_the_standard_library_for_what_it_refuses() -> None:
    text = b'{"reason": "no_data", "seconds": 3600, "share": 0.25, "tags": ["a", 1], "none": null}'
    expected = {"reason": "no_data", "seconds": 3600, "share": 0.25, "tags": ["a", 1], "none": None}
    assert json_loads(text) == json_loads(memoryview(text)) == json_loads(text.decode()) == expected
    assert json_loads(b'{"huge": 1e400}') == {"huge": math.inf}  # beyond a double: as before


def test_a_gzipped_body_keeps_its_tag_but_weak() -> None:
    assert weak(b'"abc"') == b'W/"abc"'
    assert weak(b'W/"abc"') == b'W/"abc"'


def test_a_kept_answer_changed_by_its_caller_is_sent_as_changed_and_the_entry_stays_as_kept() -> None:
    """KeptAnswer (api/response_cache.py): the entry's own messages go out only while nobody changed the answer."""
    entry = Entry(((b"content-type", b"application/json"), (b"content-length", b"2")), b"{}")
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    assert asyncio.run(KeptAnswer(entry).send_kept(send)) is True
    assert sent == [entry.start, entry.message] and sent[0]["headers"] is entry.headers
    changed = KeptAnswer(entry)
    changed.headers["x-extra"] = "1"
    assert asyncio.run(changed.send_kept(send)) is False
    asyncio.run(changed({"type": "http"}, None, send))  # type: ignore[arg-type]
    assert sent[-2]["headers"] == [*entry.headers, (b"x-extra", b"1")]
    assert entry.start["headers"] == ((b"content-type", b"application/json"), (b"content-length", b"2"))
