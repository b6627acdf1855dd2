"""% good detectors and station fault history through the API, on SQLite and PostgreSQL: the
judgement is the evaluator's (real readings in, real alerts), read back over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete
from sqlalchemy.engine import Engine

from its.alerts import store
from its.alerts.config import AlertSettings
from its.alerts.evaluator import Evaluator
from its.api.app import create_app
from its.config import Settings
from its.contract import LaneReading, Observation
from its.db import schema
from its.db.writes import insert_readings, reading_rows
from its.network import Network
from tests.test_alerts_evaluator import T0, feed

STUCK = "JKT-SDR-N-001"
GATEWAY = "GW-GTS-E-1"  # stations JKT-GTS-E-001 .. 004 of GTS-E-01 and GTS-E-02


@pytest.fixture
def client(
    engine: Engine, network: Network, settings: Settings, api_auth_headers: dict[str, str]
) -> TestClient:
    return TestClient(
        create_app(settings, engine=engine, network=network), headers=api_auth_headers
    )


@pytest.fixture
def evaluated(engine: Engine, network: Network) -> Iterator[None]:
    """20 min of free-flowing data on every segment, except one stuck loop and one gateway whose
    four stations stopped after 5 min (received long ago): then one evaluator step."""
    gateway_segments = {st.segment_id for st in network.stations if st.gateway_id == GATEWAY}
    long_ago = datetime.now(UTC) - timedelta(minutes=30)
    for seg in network.segments:
        if seg.segment_id in gateway_segments:
            feed(engine, network, seg.segment_id, T0, 5, ratio=0.9, received_at=long_ago)
        else:
            feed(engine, network, seg.segment_id, T0, 20, ratio=0.9)
    rows = []
    for i in range(40):  # the stuck loop: the same values every interval
        obs = Observation(
            v=1,
            station_id=STUCK,
            interval_start=T0 + timedelta(seconds=30 * i),
            period_s=30,
            lanes=[LaneReading(lane=n, count=10, occupancy=0.1, speed_kph=50) for n in range(1, 5)],
        )
        rows.extend(reading_rows(obs, received_at=datetime.now(UTC)))
    with engine.begin() as conn:
        # replaces the varying readings feed() wrote for it (same key: delete them first)
        conn.execute(delete(schema.readings).where(schema.readings.c.station_id == STUCK))
        insert_readings(conn, rows)
    ev = Evaluator(engine, network, alert_settings=AlertSettings(_env_file=None))
    try:
        ev.step()
        yield
    finally:
        ev.close()


def test_no_data_is_not_zero_percent_good(client: TestClient, network: Network) -> None:
    doc = client.get("/api/v1/health/detectors").json()
    assert doc["data_time"] is None
    assert doc["network"] == {
        "stations": 96, "good": 0, "faulty": 0, "offline": 0, "no_data": 96, "pct_good": None,
    }  # fmt: skip
    assert len(doc["stations"]) == 96 and {s["status"] for s in doc["stations"]} == {"no-data"}


@pytest.mark.usefixtures("evaluated")
def test_pct_good_detectors_network_and_per_corridor(client: TestClient) -> None:
    r = client.get("/api/v1/health/detectors")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["network"] == {
        "stations": 96, "good": 91, "faulty": 1, "offline": 4, "no_data": 0, "pct_good": 94.8,
    }  # fmt: skip
    corridors = {c["corridor_id"]: c for c in doc["corridors"]}
    assert corridors["SDR"]["faulty"] == 1 and corridors["SDR"]["offline"] == 0
    assert corridors["GTS"]["offline"] == 4 and corridors["GTS"]["faulty"] == 0
    assert corridors["TOL"]["pct_good"] == 100.0
    assert sum(c["stations"] for c in doc["corridors"]) == 96
    bad = {s["station_id"]: s for s in doc["stations"]}
    assert bad[STUCK]["status"] == "faulty" and bad[STUCK]["diagnosis"] == "stuck"
    assert sorted(s for s in bad if s != STUCK) == [f"JKT-GTS-E-00{i}" for i in range(1, 5)]
    gw_alert = {bad[f"JKT-GTS-E-00{i}"]["alert_id"] for i in range(1, 5)}
    assert len(gw_alert) == 1 and None not in gw_alert  # one gateway alert covers the four
    assert bad["JKT-GTS-E-001"]["gateway_id"] == GATEWAY


@pytest.mark.usefixtures("evaluated")
def test_station_fault_history_from_the_alerts(client: TestClient) -> None:
    (fault,) = client.get(f"/api/v1/stations/{STUCK}/faults").json()
    assert (fault["rule"], fault["kind"], fault["diagnoses"]) == (
        "detector-fault",
        "stuck",
        ["stuck"],
    )
    assert fault["active"] is True and fault["duration_s"] is None
    (gw,) = client.get("/api/v1/stations/JKT-GTS-E-003/faults").json()
    assert (gw["rule"], gw["target_id"], gw["kind"]) == ("gateway-offline", GATEWAY, "gateway")
    assert client.get("/api/v1/stations/JKT-TOL-E-001/faults").json() == []


def test_fault_history_window_and_diagnosis_changes(client: TestClient, engine: Engine) -> None:
    t = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)
    with engine.begin() as conn:
        for minutes, kind in ((0, "stuck"), (5, "chatter")):
            store.raise_or_repeat(
                conn, "detector-fault", STUCK, "major", kind, {"diagnosis": kind},
                t + timedelta(minutes=minutes), target_kind="station",
            )  # fmt: skip
        store.clear(conn, "detector-fault", STUCK, t + timedelta(minutes=30))
        store.raise_or_repeat(
            conn, "station-offline", STUCK, "major", "silent", {"reason": "silent"},
            t + timedelta(hours=2), target_kind="station",
        )  # fmt: skip
    url = f"/api/v1/stations/{STUCK}/faults"
    both = client.get(url).json()
    assert [f["kind"] for f in both] == ["silent", "chatter"]  # newest first
    assert both[1]["diagnoses"] == ["stuck", "chatter"] and both[1]["duration_s"] == 1800
    assert [
        f["kind"] for f in client.get(url, params={"start": "2026-11-22T02:00:00Z"}).json()
    ] == ["silent"]
    assert [f["kind"] for f in client.get(url, params={"end": "2026-11-22T02:00:00Z"}).json()] == [
        "chatter"
    ]
    assert len(client.get(url, params={"limit": 1}).json()) == 1


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v1/stations/NOPE/faults", 404),
        (f"/api/v1/stations/{STUCK}/faults?start=2026-11-22T02:00Z&end=2026-11-22T01:00Z", 400),
        (f"/api/v1/stations/{STUCK}/faults?start=0001-01-01T00:00:00%2B07:00", 400),
        (f"/api/v1/stations/{STUCK}/faults?end=yesterday", 422),
        (f"/api/v1/stations/{STUCK}/faults?limit=0", 422),
        (f"/api/v1/stations/{STUCK}/faults?limit=1001", 422),
    ],
)
def test_bad_fault_queries_are_4xx(client: TestClient, path: str, status: int) -> None:
    r = client.get(path)
    assert r.status_code == status, r.text
    assert r.json()["detail"]
