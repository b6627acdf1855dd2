"""Root cause before noise: one gateway alert for stations that fall silent together, and the
root-cause alerts saying which traffic alert they suppressed. Pure functions, then on both
backends through the real evaluator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from its.alerts import store
from its.alerts.config import AlertSettings
from its.alerts.evaluator import Evaluator
from its.alerts.gateways import merge_suppressed, silent_gateways
from its.contract import LaneReading, Observation
from its.db.writes import insert_readings, reading_rows
from its.errors import NetworkError
from its.network import Network, network_from_geojson, network_to_geojson
from tests.test_alerts_evaluator import OTHER, SEG, T0, feed

GW = "GW-SDR-N-1"  # the sample network's gateway of SDR-N-01 and SDR-N-02 (stations 001-004)
NEXT = "SDR-N-03"  # behind the next gateway, GW-SDR-N-2
GW_STATIONS = ["JKT-SDR-N-001", "JKT-SDR-N-002", "JKT-SDR-N-003", "JKT-SDR-N-004"]

_open: list[Evaluator] = []


@pytest.fixture(autouse=True)
def _step_down() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


def evaluator(engine: Engine, network: Network) -> Evaluator:
    ev = Evaluator(engine, network, alert_settings=AlertSettings(_env_file=None))
    _open.append(ev)
    return ev


# --------------------------------------------------------------------------- pure functions


def test_a_gateway_is_down_when_every_heard_station_behind_it_is_offline() -> None:
    gateways = {"g1": ["a", "b", "c"], "g2": ["d", "e"], "g3": ["f", "g"]}
    heard = {"a", "b", "d", "e", "f", "g"}  # c never reported: no data, not counted
    down = silent_gateways(gateways, offline={"a", "b", "d", "f"}, heard=heard)
    assert down == {"g1": ["a", "b"]}  # g2: e still reports; g3: g still reports
    # one heard-from station is an individual outage, not a gateway
    assert silent_gateways({"g": ["a", "b"]}, offline={"a"}, heard={"a"}) == {}


def test_suppression_evidence_accumulates_per_traffic_alert() -> None:
    first = merge_suppressed(None, {("congestion", "S1"): (2, "2026-11-22T01:05:00Z")})
    assert first == [
        {
            "rule": "congestion",
            "target_id": "S1",
            "buckets": 2,
            "last_bucket": "2026-11-22T01:05:00Z",
        }
    ]
    later = merge_suppressed(
        [*first, {"bad": "entry"}],
        {("congestion", "S1"): (1, "2026-11-22T01:10:00Z"), ("incident", "S1"): (1, "x")},
    )
    assert [(e["rule"], e["buckets"], e["last_bucket"]) for e in later] == [
        ("congestion", 3, "2026-11-22T01:10:00Z"),
        ("incident", 1, "x"),
    ]


def test_network_format_reads_and_writes_gateway_id(network: Network) -> None:
    assert network.gateways()[GW] == GW_STATIONS
    assert all(st.gateway_id for st in network.stations)  # the sample sets every one
    again = network_from_geojson(network_to_geojson(network))
    assert again.gateways() == network.gateways()
    doc = network_to_geojson(network)
    station = next(f for f in doc["features"] if f["properties"]["kind"] == "station")
    station["properties"]["gateway_id"] = "bad id/with slash"
    with pytest.raises(NetworkError, match="gateway_id"):
        network_from_geojson(doc)
    del station["properties"]["gateway_id"]  # optional: a station without one
    assert network_from_geojson(doc).stations[0].gateway_id is None


# --------------------------------------------------------------------------- end to end


def test_stations_behind_one_gateway_raise_one_gateway_alert(
    engine: Engine, network: Network
) -> None:
    earlier = datetime.now(UTC) - timedelta(minutes=10)  # when the gateway's last data arrived
    feed(engine, network, SEG, T0, 10, ratio=0.9, received_at=earlier)
    feed(engine, network, OTHER, T0, 10, ratio=0.9, received_at=earlier)
    feed(engine, network, NEXT, T0, 20, ratio=0.9)  # the next gateway keeps reporting
    ev = evaluator(engine, network)
    result = ev.step()
    raised = [(c.alert.rule, c.alert.target_id) for c in result.events("raised")]
    assert raised == [("gateway-offline", GW)]  # one alert, not four station-offline
    alert = result.events("raised")[0].alert
    assert alert.target_kind == "gateway"
    assert alert.details["stations"] == GW_STATIONS
    assert alert.details["suppressed_offline"] == GW_STATIONS
    assert alert.details["last_seen"] == "2026-11-22T01:10:00Z"
    assert GW in alert.message and "4 stations" in alert.message
    assert ev.step().events("raised") == []  # still one alert

    # one station reports again: the gateway is up, the other three are individual outages
    feed(engine, network, SEG, T0 + timedelta(minutes=10), 12, ratio=0.9)
    feed(engine, network, NEXT, T0 + timedelta(minutes=20), 2, ratio=0.9)
    with engine.begin() as conn:  # only station 001 of the gateway
        rows = []
        for i in range(24):
            obs = Observation(
                v=1,
                station_id="JKT-SDR-N-001",
                interval_start=T0 + timedelta(minutes=10, seconds=30 * i),
                period_s=30,
                lanes=[
                    LaneReading(lane=n, count=9 + i % 3, occupancy=0.1, speed_kph=54)
                    for n in range(1, 5)
                ],
            )
            rows.extend(reading_rows(obs, received_at=datetime.now(UTC)))
        insert_readings(conn, rows)
    result = ev.step()
    assert [(c.alert.rule, c.alert.target_id) for c in result.events("cleared")] == [
        ("gateway-offline", GW)
    ]
    assert sorted(c.alert.target_id for c in result.events("raised")) == [
        "JKT-SDR-N-003",
        "JKT-SDR-N-004",
    ]


def test_individual_alarms_are_replaced_when_the_rest_of_the_gateway_follows(
    engine: Engine, network: Network
) -> None:
    """Two stations fail first (two alarms); when the gateway's other two follow, the gateway
    alert replaces them: the operator ends with one alert, the cleared ones say why."""
    long_ago = datetime.now(UTC) - timedelta(minutes=20)
    feed(engine, network, OTHER, T0, 5, ratio=0.9, received_at=long_ago)
    feed(engine, network, SEG, T0, 20, ratio=0.9)
    feed(engine, network, NEXT, T0, 20, ratio=0.9)
    ev = evaluator(engine, network)
    assert sorted(c.alert.target_id for c in ev.step().events("raised")) == [
        "JKT-SDR-N-003",
        "JKT-SDR-N-004",
    ]
    # SEG goes silent too; NEXT keeps flowing (data and wall time move on)
    feed(engine, network, NEXT, T0 + timedelta(minutes=20), 10, ratio=0.9)
    with engine.begin() as conn:  # SEG's last receipt long ago on the wall clock as well
        from sqlalchemy import update

        from its.db import schema

        conn.execute(
            update(schema.readings)
            .where(schema.readings.c.station_id.in_(["JKT-SDR-N-001", "JKT-SDR-N-002"]))
            .values(received_at=long_ago)
        )
    result = ev.step()
    assert [(c.alert.rule, c.alert.target_id) for c in result.events("raised")] == [
        ("gateway-offline", GW)
    ]
    cleared = {c.alert.target_id: c for c in result.events("cleared")}
    assert sorted(cleared) == ["JKT-SDR-N-003", "JKT-SDR-N-004"]
    with engine.connect() as conn:
        active = store.active_alerts(conn)
        history = store.alert_history(conn, cleared["JKT-SDR-N-003"].alert.id)
    assert sorted(active) == [("gateway-offline", GW)]
    assert history[-1]["details"] == {"reason": "gateway-offline", "gateway_id": GW}


def test_a_faulty_detector_says_which_congestion_it_suppressed(
    engine: Engine, network: Network
) -> None:
    """A stuck loop reporting a jam on SEG: once diagnosed, its segment's minutes are blanked, the
    detector-fault alert names the congestion it held back and the congestion alert says what
    holds it. Congestion is judged every minute, so the jam is raised before the diagnosis (which
    needs 10 identical intervals, at the end of the first 5-minute bucket): a stuck loop cannot
    be told from a real standing queue in its first minutes."""
    stuck, healthy = network.stations_of(SEG)
    rows = []
    now = datetime.now(UTC)
    for i in range(40):
        t = T0 + timedelta(seconds=30 * i)
        for st, count in ((stuck, 10), (healthy, 9 + i % 3)):
            obs = Observation(
                v=1,
                station_id=st.station_id,
                interval_start=t,
                period_s=30,
                lanes=[
                    LaneReading(lane=n, count=count, occupancy=0.3, speed_kph=15.0)
                    for n in range(1, st.lanes + 1)
                ],
            )
            rows.extend(reading_rows(obs, received_at=now))
    with engine.begin() as conn:
        insert_readings(conn, rows)
    feed(engine, network, OTHER, T0, 20, ratio=0.9)
    result = evaluator(engine, network).step()
    assert [(c.alert.rule, c.alert.target_id) for c in result.events("raised")] == [
        ("congestion", SEG),
        ("detector-fault", stuck.station_id),
    ]
    with engine.connect() as conn:
        active = store.active_alerts(conn)
    fault = active[("detector-fault", stuck.station_id)]
    assert active[("congestion", SEG)].details["suppressed_by"] == [
        f"detector-fault:{stuck.station_id}"
    ]
    (held,) = fault.details["suppressed"]
    assert held["rule"] == "congestion" and held["target_id"] == SEG
    # minutes 01:04 (its end, 01:05, is when the loop is diagnosed) .. 01:18, the last complete
    # one: every minute after the diagnosis is blanked
    assert held["buckets"] == 15
    assert held["last_bucket"] == (T0 + timedelta(minutes=18)).isoformat().replace("+00:00", "Z")


def test_a_simulated_gateway_outage_silences_its_stations_and_is_in_the_truth(
    network: Network, tmp_path: Path
) -> None:

    from sim.model import TrafficModel
    from sim.truth import load_scenario_file, truth_records

    path = tmp_path / "scenario.json"
    path.write_text(json.dumps({"gateways": [{"gateway": GW, "start": "+5m", "duration": "10m"}]}))
    scenario = load_scenario_file(path, T0, network)
    model = TrafficModel(network, seed=3, scenario=scenario)
    during = {o.station_id for o in model.observations(T0 + timedelta(minutes=6))}
    after = {o.station_id for o in model.observations(T0 + timedelta(minutes=16))}
    assert not during & set(GW_STATIONS) and len(during) == len(network.stations) - 4
    assert set(GW_STATIONS) <= after
    truth = list(truth_records(scenario))
    assert [(r["station"], r["kind"], r["gateway"]) for r in truth] == [
        (sid, "silent", GW) for sid in GW_STATIONS
    ]
    path.write_text(json.dumps({"gateways": [{"gateway": "GW-NOPE", "start": "+5m"}]}))
    with pytest.raises(Exception, match="unknown gateway 'GW-NOPE'"):
        load_scenario_file(path, T0, network)


def test_a_dead_feed_raises_no_station_or_gateway_alarm_before_the_stall(
    engine: Engine, network: Network
) -> None:
    """With the defaults a station is offline after 90 s and the feed stalled after 120 s: when
    everything stops, the 90 s mark must not raise an alarm per station or gateway."""
    last = datetime.now(UTC)
    for seg in network.segments[:12]:  # 24 stations behind 6 gateways
        feed(engine, network, seg.segment_id, T0, 10, ratio=0.9, received_at=last)
    wall = [last]
    ev = Evaluator(
        engine, network, alert_settings=AlertSettings(_env_file=None), wall_clock=lambda: wall[0]
    )
    _open.append(ev)
    seen = []
    for s in range(0, 130, 10):
        wall[0] = last + timedelta(seconds=s)
        seen += [(s, c.alert.rule) for c in ev.step().events("raised")]
    assert seen == [(120, "feed-stalled")]
    with engine.connect() as conn:
        stalled = store.active_alerts(conn)[("feed-stalled", "feed")]
    assert len(stalled.details["suppressed_offline"]) == 24
