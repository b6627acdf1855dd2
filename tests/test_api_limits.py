"""Issue 6's 5xx answers, one regression test each, on SQLite and PostgreSQL; the bounds on every
parameter class (ids, texts, times); the request body limit of the web process; and a property
test over the edges of those classes (any integer id, any text, any date of the calendar with any
offset) that would have caught each of them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.engine import Engine

from its.alerts import store
from its.api.app import create_app
from its.api.params import MAX_ALERT_ID, MAX_IDS, MAX_TIME, MIN_TIME
from its.cli import build_web_app
from its.config import Settings
from its.db import schema
from its.network import Network

#: a bounded budget for each property: they run on both backends
FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def client(
    engine: Engine, network: Network, settings: Settings, api_auth_headers: dict[str, str]
) -> Iterator[TestClient]:
    # raise_server_exceptions=False: a bug must show as the 500 a client would see
    with TestClient(
        create_app(settings, engine=engine, network=network),
        raise_server_exceptions=False,
        headers=api_auth_headers,
    ) as c:
        yield c


@pytest.fixture
def alert_id(engine: Engine) -> int:
    with engine.begin() as conn:
        change = store.raise_or_repeat(
            conn, "congestion", "SDR-N-01", "minor", "slow", {}, datetime.now(UTC)
        )
    return change.alert.id


def _detail(response) -> str:  # noqa: ANN001 - an httpx response
    return str(response.json()["detail"])


# --------------------------------------------------------------------------- ids


@pytest.mark.parametrize("alert", [str(2**31), str(2**63), "9" * 40, "0", "-1", str(-(2**63) - 1)])
def test_alert_ids_outside_the_integer_column_are_422_not_500(
    client: TestClient, alert: str
) -> None:
    for response in (
        client.get(f"/api/v1/alerts/{alert}"),
        client.post(f"/api/v1/alerts/{alert}/ack", json={"comment": "on it"}),
    ):
        assert response.status_code == 422, response.text
        assert "alert_id" in response.text


def test_largest_alert_id_is_a_404(client: TestClient) -> None:
    response = client.get(f"/api/v1/alerts/{MAX_ALERT_ID}")
    assert response.status_code == 404
    assert str(MAX_ALERT_ID) in _detail(response)


def test_station_ids_with_control_characters_or_too_long_are_422(client: TestClient) -> None:
    nul = client.get("/api/v1/stations/JKT%00SDR/series")
    assert nul.status_code == 422
    assert "U+0000" in nul.text
    long = client.get(f"/api/v1/stations/{'A' * 129}/series")
    assert long.status_code == 422
    assert "station_id" in long.text


def test_aggregate_ids_are_bounded_in_number_length_and_characters(client: TestClient) -> None:
    many = client.get("/api/v1/aggregates", params={"id": [f"S{i}" for i in range(MAX_IDS + 1)]})
    assert many.status_code == 422
    assert str(MAX_IDS) in many.text
    nul = client.get("/api/v1/aggregates", params={"id": "SDR\x00"})
    assert nul.status_code == 422
    assert "control characters" in nul.text


# --------------------------------------------------------------------------- texts


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"comment": "on\x00it"}, "comment"),
        ({"comment": "esc\x1b"}, "comment"),
        ({"comment": "del\x7f"}, "comment"),
        ({"comment": "bell\x07"}, "comment"),
        ({"comment": "half\ud800"}, "comment"),
        ({"comment": "c" * 2001}, "comment"),
        ({"operator": "rina"}, "operator"),  # who acknowledges is the caller, never a typed name
    ],
)
def test_ack_texts_with_control_characters_or_too_long_are_422(
    client: TestClient, engine: Engine, alert_id: int, body: dict, field: str
) -> None:
    response = client.post(  # json.dumps writes a lone surrogate as the escape \ud800
        f"/api/v1/alerts/{alert_id}/ack",
        content=json.dumps(body),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert field in response.text
    with engine.connect() as conn:
        acked = conn.scalar(select(schema.alerts.c.acked_at).where(schema.alerts.c.id == alert_id))
    assert acked is None  # nothing was written


def test_ack_comment_keeps_line_breaks_and_tabs(
    client: TestClient, engine: Engine, alert_id: int
) -> None:
    comment = "police on site\n\tlane 2 closed\r\nback at 10:00"
    response = client.post(f"/api/v1/alerts/{alert_id}/ack", json={"comment": comment})
    assert response.status_code == 200, response.text
    with engine.connect() as conn:
        stored = conn.scalar(
            select(schema.alerts.c.ack_comment).where(schema.alerts.c.id == alert_id)
        )
    assert stored == comment


def test_ack_body_that_is_not_utf8_json_is_a_4xx(client: TestClient, alert_id: int) -> None:
    response = client.post(
        f"/api/v1/alerts/{alert_id}/ack",
        content=b'{"comment": "\xff\xfe"}',
        headers={"content-type": "application/json"},
    )
    assert 400 <= response.status_code < 500, response.text


# --------------------------------------------------------------------------- times

EDGE_TIMES = [
    "0001-01-01T00:00:00+07:00",
    "0001-01-01T00:00:00",
    "0001-01-01T00:00:00-23:59",
    "9999-12-31T23:59:59-05:00",
    "9999-12-31T23:59:59.999999",
    "9999-12-31T23:59:59+14:00",
    "1969-12-31T23:59:59Z",
    "2200-01-01T00:00:00Z",
]


@pytest.mark.parametrize("when", EDGE_TIMES)
@pytest.mark.parametrize("name", ["start", "end"])
def test_calendar_edge_times_are_400_naming_the_accepted_range(
    client: TestClient, network: Network, when: str, name: str
) -> None:
    station = network.stations[0].station_id
    for path in ("/api/v1/aggregates", f"/api/v1/stations/{station}/series"):
        response = client.get(path, params={name: when})
        assert response.status_code == 400, (path, response.text)
        assert name in _detail(response)
        assert "1970-01-01" in _detail(response) and "2200-01-01" in _detail(response)


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"start": "1970-01-01T00:00:00Z", "end": "1970-01-01T02:00:00Z"}, 200),
        ({"end": "1970-01-01T00:30:00Z"}, 200),  # the default start may precede the range
        ({"start": "2199-12-31T22:00:00Z", "end": "2199-12-31T23:59:59.999999Z"}, 200),
        ({"start": "2199-12-31T22:00:00-05:00"}, 400),  # 2200-01-01T03:00Z: outside
        ({"start": "2026-11-22T00:00:00+14:00", "end": "2026-11-22T00:00:00-12:00"}, 200),
    ],
)
def test_times_inside_the_range_are_answered_at_its_edges(
    client: TestClient, params: dict, status: int
) -> None:
    for bucket in ("5m", "1d"):
        response = client.get(
            "/api/v1/aggregates", params={**params, "bucket": bucket, "level": "corridor"}
        )
        assert response.status_code == status, response.text


@pytest.mark.parametrize("when", ["0", "1700000000", "1.5", "2026-11-22", "tomorrow"])
def test_times_must_be_iso_date_times(client: TestClient, when: str) -> None:
    response = client.get("/api/v1/aggregates", params={"start": when})
    assert response.status_code == 422
    assert "ISO 8601" in response.text


# --------------------------------------------------------------------------- properties


def test_any_alert_id_and_ack_text_is_answered_without_5xx(
    client: TestClient, alert_id: int
) -> None:
    @FUZZ
    @given(
        ident=st.integers(min_value=-(2**70), max_value=2**70) | st.sampled_from([alert_id]),
        comment=st.none() | st.text(max_size=2100),
    )
    def check(ident: int, comment: str | None) -> None:
        got = client.get(f"/api/v1/alerts/{ident}")
        assert got.status_code in (200, 404, 422), got.text
        acked = client.post(f"/api/v1/alerts/{ident}/ack", json={"comment": comment})
        assert acked.status_code in (200, 404, 409, 422), acked.text

    check()


_ZONES = st.sampled_from([None, UTC]) | st.integers(-1439, 1439).map(
    lambda m: timezone(timedelta(minutes=m))
)
_ANY_TIME = st.builds(
    lambda ts, tz: ts.replace(tzinfo=tz),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    _ZONES,
) | st.sampled_from([datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999)]).flatmap(
    lambda ts: _ZONES.map(lambda tz: ts.replace(tzinfo=tz))
)


def test_any_time_of_the_calendar_is_answered_without_5xx(
    client: TestClient, network: Network
) -> None:
    station = network.stations[0].station_id

    @FUZZ
    @given(
        start=st.none() | _ANY_TIME,
        end=st.none() | _ANY_TIME,
        bucket=st.sampled_from(["5m", "15m", "1h", "1d"]),
        station_level=st.booleans(),
    )
    def check(
        start: datetime | None, end: datetime | None, bucket: str, station_level: bool
    ) -> None:
        params = {"bucket": bucket}
        for name, ts in (("start", start), ("end", end)):
            if ts is not None:
                params[name] = ts.isoformat()
        if station_level:
            response = client.get(f"/api/v1/stations/{station}/series", params=params)
        else:
            response = client.get("/api/v1/aggregates", params={**params, "level": "corridor"})
        assert response.status_code in (200, 400), response.text
        if response.status_code == 200:
            body = response.json()
            first = datetime.fromisoformat(body["start"])
            assert MIN_TIME - timedelta(hours=2) <= first < MAX_TIME

    check()


# --------------------------------------------------------------------------- body limit


@pytest.fixture
def web(
    sqlite_engine: Engine, network: Network, settings: Settings, api_auth_headers: dict[str, str]
) -> Iterator[TestClient]:
    """The web process's app (API and dashboard) with a 4 KiB body limit."""
    small = settings.model_copy(update={"http_max_body_bytes": 4096})
    app = build_web_app(small, engine=sqlite_engine, network=network)
    with TestClient(app, headers=api_auth_headers) as c:
        yield c


def test_body_over_the_limit_is_413_with_a_json_reason(web: TestClient) -> None:
    response = web.post(
        "/api/v1/alerts/1/ack",
        content=b'{"comment": "' + b"x" * 5000 + b'"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert "4096" in response.json()["detail"]
    assert "ITS_HTTP_MAX_BODY_BYTES" in response.json()["detail"]


def test_chunked_body_over_the_limit_is_413(web: TestClient) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: sent with chunked encoding
        yield b'{"comment": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    response = web.post(
        "/api/v1/alerts/1/ack", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert "more than 4096 bytes" in response.json()["detail"]


def test_body_limit_applies_to_dash_routes_too(web: TestClient) -> None:
    response = web.post(
        "/_dash-update-component",
        content=b"[" + b"0," * 4000 + b"0]",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413


def test_bodies_under_the_limit_still_reach_the_api(web: TestClient, sqlite_engine: Engine) -> None:
    """The dashboard's own callback POSTs under the limit are exercised by a real browser on the
    same app in tests/test_dashboard_browser.py (map, KPI cards, acknowledging). Dispatching a
    Dash callback in-process here made that later browser test's acknowledgement hang in the same
    pytest process (Dash keeps process-wide state; not diagnosed further), so it is not done."""
    with sqlite_engine.begin() as conn:
        alert = store.raise_or_repeat(
            conn, "congestion", "SDR-N-01", "minor", "slow", {}, datetime.now(UTC)
        ).alert
    ack = web.post(f"/api/v1/alerts/{alert.id}/ack", json={"comment": "c" * 2000})
    assert ack.status_code == 200, ack.text
    assert ack.json()["acked_by"] == "key:api-tests"


# --------------------------------------------------------------------------- unexpected errors


def test_an_unexpected_error_is_a_json_500_without_a_traceback(
    network: Network, settings: Settings
) -> None:
    """The one 500 left on purpose: the database cannot be reached (nothing a client sent)."""
    from sqlalchemy import create_engine

    unreachable = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    anonymous = settings.model_copy(update={"auth_anonymous_read": True})  # reach the database
    with TestClient(
        create_app(anonymous, engine=unreachable, network=network), raise_server_exceptions=False
    ) as c:
        response = c.get("/api/v1/stations")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}
    assert "Traceback" not in response.text and "psycopg" not in response.text
