"""The analysts' API on SQLite and PostgreSQL: answers, validation errors and limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import Engine

from its.api.app import create_app
from its.api.params import MAX_POINTS
from its.config import Settings
from its.db import schema
from its.network import Network
from tests.traffic_helpers import aligned, seed


@pytest.fixture
def client(
    engine: Engine, network: Network, settings: Settings, api_auth_headers: dict[str, str]
) -> TestClient:
    """A client with an operate-scope API key (tests/test_api_auth.py covers the refusals)."""
    app = create_app(settings, engine=engine, network=network)
    return TestClient(app, headers=api_auth_headers)


def _jam_first_segment(engine: Engine, network: Network) -> tuple[datetime, str]:
    jam = network.segments[0]
    t0 = aligned(60, every=15)  # whole 15-minute buckets
    seed(
        engine, network, t0, 30,
        lambda st, t: (0.2 if st.segment_id == jam.segment_id else 0.9)
        * network.segment(st.segment_id).free_flow_kph,
    )  # fmt: skip
    return t0, jam.segment_id


def test_network_is_geojson_with_live_state(
    client: TestClient, engine: Engine, network: Network
) -> None:
    _, jam = _jam_first_segment(engine, network)
    r = client.get("/api/v1/network")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["type"] == "FeatureCollection"
    assert len(doc["features"]) == len(network.segments)
    by_id = {f["id"]: f for f in doc["features"]}
    props = by_id[jam]["properties"]
    assert props["band"] == "jammed"
    assert props["speed_kph"] == pytest.approx(0.2 * network.segment(jam).free_flow_kph, rel=0.01)
    assert props["stale"] is False
    assert set(props) >= {"speed_kph", "flow_vph", "occupancy", "band", "tti", "observed_at"}
    assert by_id[jam]["geometry"]["type"] == "LineString"


def test_network_without_data_is_no_data_not_free(client: TestClient, network: Network) -> None:
    doc = client.get("/api/v1/network").json()
    assert {f["properties"]["band"] for f in doc["features"]} == {"no-data"}
    assert all(f["properties"]["stale"] for f in doc["features"])
    assert doc["data_time"] is None


def test_stations_and_series(client: TestClient, engine: Engine, network: Network) -> None:
    t0, _ = _jam_first_segment(engine, network)
    stations = client.get("/api/v1/stations").json()
    assert len(stations) == len(network.stations)
    assert {s["health"] for s in stations} == {"ok"}
    sid = network.stations[5].station_id
    end = (t0 + timedelta(minutes=30)).isoformat()
    r = client.get(
        f"/api/v1/stations/{sid}/series",
        params={"start": t0.isoformat(), "end": end, "bucket": "15m"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert [p["pct_observed"] for p in body["points"]] == [100.0, 100.0]
    assert body["points"][0]["bucket_start"].startswith(t0.strftime("%Y-%m-%dT%H:%M"))


def test_series_of_unknown_station_is_404(client: TestClient) -> None:
    r = client.get("/api/v1/stations/NOPE/series")
    assert r.status_code == 404
    assert "NOPE" in r.json()["detail"]


def test_aggregates_levels(client: TestClient, engine: Engine, network: Network) -> None:
    t0, jam = _jam_first_segment(engine, network)
    params = {"start": t0.isoformat(), "end": (t0 + timedelta(minutes=30)).isoformat()}
    seg = client.get("/api/v1/aggregates", params={**params, "level": "segment", "bucket": "5m"})
    assert seg.status_code == 200, seg.text
    rows = seg.json()["rows"]
    assert len(rows) == len(network.segments) * 6
    jam_rows = [r for r in rows if r["id"] == jam]
    assert all(r["speed_kph"] < 0.25 * network.segment(jam).free_flow_kph for r in jam_rows)
    cor = client.get(
        "/api/v1/aggregates",
        params={**params, "level": "corridor", "bucket": "1h", "id": ["SDR", "GTS"]},
    ).json()
    assert {r["id"] for r in cor["rows"]} == {"SDR", "GTS"}


@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        ({"level": "lane"}, 422, "level"),
        ({"bucket": "7m"}, 422, "bucket"),
        ({"start": "yesterday"}, 422, "start"),
        ({"start": "2026-11-22T02:00:00Z", "end": "2026-11-22T01:00:00Z"}, 400, "before end"),
        ({"level": "segment", "id": "NOPE"}, 404, "NOPE"),
        (
            {"level": "station", "bucket": "5m", "start": "2026-01-01T00:00:00Z",
             "end": "2026-03-01T00:00:00Z"},
            400,
            f"limit of {MAX_POINTS}",
        ),
    ],
)  # fmt: skip
def test_bad_aggregate_queries_say_what_is_wrong(
    client: TestClient, params: dict, status: int, words: str
) -> None:
    r = client.get("/api/v1/aggregates", params=params)
    assert r.status_code == status, r.text
    assert words in r.text


def test_alerts_list_and_acknowledge(client: TestClient, engine: Engine) -> None:
    from its.alerts import store

    at = datetime.now(UTC) - timedelta(minutes=5)
    with engine.begin() as conn:
        first = store.raise_or_repeat(conn, "congestion", "SDR-N-01", "minor", "slow", {}, at)
        second = store.raise_or_repeat(
            conn, "congestion", "SDR-N-02", "major", "jammed", {}, at + timedelta(minutes=1)
        )
    listed = client.get("/api/v1/alerts").json()
    assert [a["id"] for a in listed] == [second.alert.id, first.alert.id]  # newest first
    r = client.post(f"/api/v1/alerts/{first.alert.id}/ack", json={"comment": "on it"})
    assert r.status_code == 200, r.text
    assert (
        r.json()["acked_by"] == "key:api-tests"
    )  # the caller (a key without owner), not a typed name
    with engine.connect() as conn:
        row = conn.execute(select(schema.alerts).where(schema.alerts.c.id == first.alert.id)).one()
    assert (row.acked_by, row.ack_comment) == ("key:api-tests", "on it")
    assert row.acked_at is not None
    again = client.post(f"/api/v1/alerts/{first.alert.id}/ack", json={})
    assert again.status_code == 409
    assert "key:api-tests" in again.json()["detail"]
    assert client.post("/api/v1/alerts/999999/ack", json={}).status_code == 404
    typed = client.post(f"/api/v1/alerts/{second.alert.id}/ack", json={"operator": "budi"})
    assert typed.status_code == 422  # a typed name is refused, not silently ignored
    assert "operator" in typed.text
    unacked = client.get("/api/v1/alerts", params={"state": "unacknowledged"}).json()
    assert [a["id"] for a in unacked] == [second.alert.id]
    assert client.get("/api/v1/alerts", params={"state": "bogus"}).status_code == 422


def test_healthz_reports_database_and_broker(
    engine: Engine, network: Network, settings: Settings, mosquitto
) -> None:
    ok = TestClient(
        create_app(
            settings.model_copy(update={"mqtt_url": mosquitto.url}), engine=engine, network=network
        )
    ).get("/healthz")  # fmt: skip - /healthz needs no identity (load balancers, compose)
    assert ok.status_code == 200, ok.text
    assert ok.json()["database"] == "ok" and ok.json()["broker"] == "ok"
    down = TestClient(
        create_app(settings.model_copy(update={"mqtt_url": "mqtt://127.0.0.1:1"}), engine=engine,
                   network=network)
    ).get("/healthz")  # fmt: skip
    assert down.status_code == 503
    assert down.json()["broker"] == "unreachable"


def test_openapi_documents_every_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {
        "/api/v1/network",
        "/api/v1/stations",
        "/api/v1/stations/{station_id}/series",
        "/api/v1/aggregates",
        "/api/v1/alerts",
        "/api/v1/alerts/{alert_id}/ack",
        "/healthz",
    } <= set(spec["paths"])
    assert client.get("/docs").status_code == 200
