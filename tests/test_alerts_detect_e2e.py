"""Incidents and bottlenecks end to end on every backend: readings in, the real evaluator on the
data clock, alerts, rule state and bottleneck episodes out, and the analysts' route over them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import Engine

from its.alerts import state as rule_state
from its.alerts import store
from its.alerts.config import AlertSettings
from its.alerts.evaluator import Evaluator
from its.api.app import create_app
from its.config import Settings
from its.contract import LaneReading, Observation
from its.db import schema
from its.db.writes import insert_readings, reading_rows
from its.network import Network

T0 = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)  # 08:00 in Jakarta
SEG = "SDR-N-01"  # stations JKT-SDR-N-001, -002 (dual loops); free flow 60 km/h
OTHER = "SDR-N-02"  # the next segment downstream: JKT-SDR-N-003, -004


def feed(
    engine: Engine,
    network: Network,
    segment_id: str,
    start: datetime,
    minutes: float,
    ratio: float,
    occupancy: float,
    stuck: bool = False,
) -> None:
    """``minutes`` of 30-s readings for every station of a segment at ``ratio`` x free flow
    (``stuck``: identical values every interval, as a frozen detector repeats them)."""
    speed = ratio * network.segment(segment_id).free_flow_kph
    rows = []
    for st in network.stations_of(segment_id):
        for i in range(int(minutes * 2)):
            obs = Observation(
                v=1,
                station_id=st.station_id,
                interval_start=start + timedelta(seconds=30 * i),
                period_s=30,
                lanes=[
                    LaneReading(
                        lane=n,
                        count=10 if stuck else 9 + i % 3,
                        occupancy=occupancy,
                        speed_kph=speed,
                    )
                    for n in range(1, st.lanes + 1)
                ],
            )
            rows.extend(reading_rows(obs, received_at=datetime.now(UTC)))
    with engine.begin() as conn:
        insert_readings(conn, rows)


_open: list[Evaluator] = []


def evaluator(engine: Engine, network: Network) -> Evaluator:
    ev = Evaluator(engine, network, alert_settings=AlertSettings(_env_file=None))
    _open.append(ev)
    return ev


@pytest.fixture(autouse=True)
def _step_down() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


def rule_events(result, rule: str) -> list[tuple[str, str]]:  # noqa: ANN001
    return [(c.event, c.alert.target_id) for c in result.changes if c.alert.rule == rule]


def test_a_lane_blocking_incident_is_raised_in_minutes_and_cleared(
    engine: Engine, network: Network
) -> None:
    feed(engine, network, SEG, T0, 10, ratio=0.9, occupancy=0.12)
    feed(engine, network, OTHER, T0, 10, ratio=0.9, occupancy=0.12)
    ev = evaluator(engine, network)
    assert rule_events(ev.step(), "incident") == []
    # 01:10: the queue of a blocked lane fills SEG's loops; the road below is starved
    feed(engine, network, SEG, T0 + timedelta(minutes=10), 4, ratio=0.3, occupancy=0.38)
    feed(engine, network, OTHER, T0 + timedelta(minutes=10), 4, ratio=0.95, occupancy=0.1)
    result = ev.step()
    assert rule_events(result, "incident") == [("raised", SEG)]
    (a,) = [c.alert for c in result.events("raised") if c.alert.rule == "incident"]
    # both variants saw it in the first minute (01:10): raised at that minute's end
    assert a.raised_at == T0 + timedelta(minutes=11)
    assert (a.target_kind, a.severity) == ("segment", "major")
    assert a.details["upstream_station"] == "JKT-SDR-N-002"
    assert a.details["downstream_station"] == "JKT-SDR-N-003"
    assert a.details["occdf"] == pytest.approx(0.28)
    assert a.details["variant"] == "occupancy+speed"
    assert "between JKT-SDR-N-002 and JKT-SDR-N-003" in a.message
    # congestion on the segment too, two minutes after its speed fell
    assert ("raised", SEG) in rule_events(result, "congestion")
    with engine.connect() as conn:
        assert rule_state.load(conn, "incident")["JKT-SDR-N-002"]["status"] == "incident"

    # a restarted evaluator resumes: the incident lasts, then the lane reopens
    ev.close()
    ev2 = evaluator(engine, network)
    feed(engine, network, SEG, T0 + timedelta(minutes=14), 6, ratio=0.3, occupancy=0.38)
    feed(engine, network, OTHER, T0 + timedelta(minutes=14), 6, ratio=0.95, occupancy=0.1)
    assert rule_events(ev2.step(), "incident") == [("repeated", SEG)]  # at 01:15 only
    feed(engine, network, SEG, T0 + timedelta(minutes=20), 10, ratio=0.9, occupancy=0.12)
    feed(engine, network, OTHER, T0 + timedelta(minutes=20), 10, ratio=0.9, occupancy=0.12)
    result = ev2.step()
    assert rule_events(result, "incident") == [("repeated", SEG), ("cleared", SEG)]
    cleared = [c.alert for c in result.events("cleared") if c.alert.rule == "incident"][0]
    assert cleared.id == a.id and cleared.cleared_at == T0 + timedelta(minutes=23)
    with engine.connect() as conn:
        assert "JKT-SDR-N-002" not in rule_state.load(conn, "incident")  # at rest: no row


def test_a_faulty_station_raises_no_incident(engine: Engine, network: Network) -> None:
    """Root cause before noise: the pair's downstream station is diagnosed stuck (its values
    frozen), so the picture of an incident against it is no data for the incident rule."""
    feed(engine, network, SEG, T0, 10, ratio=0.9, occupancy=0.12)
    feed(engine, network, OTHER, T0, 20, ratio=0.95, occupancy=0.1, stuck=True)
    feed(engine, network, SEG, T0 + timedelta(minutes=10), 10, ratio=0.3, occupancy=0.38)
    result = evaluator(engine, network).step()
    assert rule_events(result, "incident") == []
    faults = rule_events(result, "detector-fault")
    assert ("raised", "JKT-SDR-N-003") in faults
    assert ("raised", SEG) in rule_events(result, "congestion")  # SEG's own data is sound


def test_a_bottleneck_episode_alert_and_api(
    engine: Engine,
    network: Network,
    settings: Settings,
    api_auth_headers: dict[str, str],
) -> None:
    # SEG queued at 18 km/h, OTHER past the bottleneck at 54: head JKT-SDR-N-002
    feed(engine, network, SEG, T0, 40, ratio=0.3, occupancy=0.3)
    feed(engine, network, OTHER, T0, 40, ratio=0.9, occupancy=0.1)
    ev = evaluator(engine, network)
    result = ev.step()
    assert rule_events(result, "bottleneck")[0] == ("raised", "JKT-SDR-N-002")
    assert rule_events(result, "incident") == []  # a standing queue is not an incident
    a = next(c.alert for c in result.events("raised") if c.alert.rule == "bottleneck")
    assert a.raised_at == T0 + timedelta(minutes=25)  # 5 of 7: the fifth interval's end
    assert a.details["downstream_station"] == "JKT-SDR-N-003"
    assert a.details["extent"] == ["JKT-SDR-N-002", "JKT-SDR-N-001"]
    assert a.details["delay_veh_h"] > 0
    with engine.connect() as conn:
        (ep,) = conn.execute(select(schema.bottlenecks)).all()
    assert (ep.head_station_id, ep.started_at, ep.ended_at) == ("JKT-SDR-N-002", T0, None)
    assert ep.alert_id == a.id and ep.intervals == 7  # 01:00 .. 01:30 by the step's end

    feed(engine, network, SEG, T0 + timedelta(minutes=40), 20, ratio=0.9, occupancy=0.1)
    feed(engine, network, OTHER, T0 + timedelta(minutes=40), 20, ratio=0.9, occupancy=0.1)
    result = ev.step()
    assert ("cleared", "JKT-SDR-N-002") in rule_events(result, "bottleneck")
    with engine.connect() as conn:
        (ep,) = conn.execute(select(schema.bottlenecks)).all()
        assert store.active_alerts(conn, "bottleneck") == {}
    assert ep.ended_at == T0 + timedelta(minutes=40) and ep.intervals == 8
    # delay: both stations of the queue, 8 intervals of 5 min, against 60 km/h
    assert ep.delay_veh_h == pytest.approx(a.details["delay_veh_h"] / 5 * 8, rel=1e-3)

    client = TestClient(create_app(settings, engine=engine, network=network))
    r = client.get(
        "/api/v1/bottlenecks",
        params={"start": "2026-11-21T00:00:00Z", "end": "2026-11-23T00:00:00Z"},
        headers=api_auth_headers,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    (e,) = body["episodes"]
    assert e["head_station_id"] == "JKT-SDR-N-002" and e["active"] is False
    assert e["started_at"] == "2026-11-22T01:00:00Z" and e["ended_at"] == "2026-11-22T01:40:00Z"
    assert e["duration_min"] == 40.0 and e["segment_id"] == SEG and e["corridor_id"] == "SDR"
    (day,) = body["daily"]
    assert day["day"] == "2026-11-22" and day["episodes"] == 1 and day["active_min"] == 40.0
    assert day["delay_veh_h"] == pytest.approx(e["delay_veh_h"], abs=0.01)
    assert body["timezone"] == "Asia/Jakarta"
    # filters and refusals
    get = lambda **p: client.get("/api/v1/bottlenecks", params=p, headers=api_auth_headers)  # noqa: E731
    assert get(corridor="GTS", start="2026-11-21T00:00:00Z").json()["episodes"] == []
    assert get(state="active", start="2026-11-21T00:00:00Z").json()["episodes"] == []
    assert get(corridor="NOPE").status_code == 404
    assert get(station="NOPE").status_code == 404
    assert get(start="2026-11-22T00:00:00Z", end="2026-11-21T00:00:00Z").status_code == 400
    assert get(start="2020-01-01T00:00:00Z", end="2026-01-01T00:00:00Z").status_code == 400
    assert get(start="0001-01-01T00:00:00+07:00").status_code == 400
    assert get(limit=0).status_code == 422
    assert get(station="x\x00").status_code == 422
    assert client.get("/api/v1/bottlenecks").status_code == 401
