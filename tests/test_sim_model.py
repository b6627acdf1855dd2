"""The traffic model as a pure function: determinism, physics, peaks, incidents and faults."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from its.contract import Observation, parse_observation, serialise_observation
from its.network import Network
from sim.model import TrafficModel, align, intervals
from sim.pacing import SimClock, default_start
from sim.scenario import (
    Incident,
    Scenario,
    ScenarioError,
    SensorFault,
    demo_scenario,
    parse_duration,
    parse_fault,
    parse_incident,
)

JKT = ZoneInfo("Asia/Jakarta")
MONDAY = datetime(2026, 11, 23, tzinfo=JKT)  # a weekday
SATURDAY = datetime(2026, 11, 28, tzinfo=JKT)


def local(day: datetime, hour: int, minute: int = 0) -> datetime:
    return day.replace(hour=hour, minute=minute).astimezone(UTC)


def window(model: TrafficModel, start: datetime, minutes: int) -> list[Observation]:
    end = start + timedelta(minutes=minutes)
    return [o for t in intervals(start, end, model.period_s) for o in model.observations(t)]


def mean_speed(model: TrafficModel, obs: list[Observation]) -> float:
    speeds = [s for o in obs if (s := model.station_speed(o)) is not None]
    return sum(speeds) / len(speeds)


def congested_segments(model: TrafficModel, obs: list[Observation]) -> set[str]:
    """Segments whose mean station speed is below half of free flow."""
    net = model.network
    by_seg: dict[str, list[float]] = {}
    for o in obs:
        v = model.station_speed(o)
        if v is not None:
            seg = next(s.segment_id for s in net.stations if s.station_id == o.station_id)
            by_seg.setdefault(seg, []).append(v)
    return {
        seg
        for seg, vs in by_seg.items()
        if sum(vs) / len(vs) < 0.5 * net.segment(seg).free_flow_kph
    }


@pytest.fixture(scope="module")
def model(network: Network) -> TrafficModel:
    return TrafficModel(network, seed=3)


def test_same_seed_same_observations_other_seed_differs(network: Network) -> None:
    times = [local(MONDAY, 8, 0), local(MONDAY, 3, 30), local(SATURDAY, 18, 0)]
    a, b, c = (TrafficModel(network, seed=s) for s in (11, 11, 12))
    for t in times:
        first = [serialise_observation(o) for o in a.observations(t)]
        assert first == [serialise_observation(o) for o in b.observations(t)]
        assert first != [serialise_observation(o) for o in c.observations(t)]
    # order of evaluation does not matter: the model has no hidden state
    late = TrafficModel(network, seed=11)
    late.observations(times[2])
    assert [serialise_observation(o) for o in late.observations(times[0])] == [
        serialise_observation(o) for o in a.observations(times[0])
    ]


def test_every_observation_passes_the_contract(network: Network) -> None:
    start = local(MONDAY, 7, 50)
    scen = Scenario(
        incidents=(Incident("SDR-N-02", start, start + timedelta(minutes=30)),),
        faults=tuple(
            SensorFault(sid, kind, start)  # type: ignore[arg-type]
            for sid, kind in [
                ("JKT-GTS-E-001", "stuck"),
                ("JKT-GTS-E-002", "zero"),
                ("JKT-GTS-E-003", "chatter"),
                ("JKT-GTS-E-004", "failed"),
            ]
        ),
    )
    model = TrafficModel(network, seed=5, scenario=scen)
    checked = 0
    for t in [*intervals(start, start + timedelta(minutes=10)), local(MONDAY, 2, 0)]:
        for o in model.observations(t):
            parsed = parse_observation(serialise_observation(o), now=t + timedelta(seconds=30))
            assert parsed == Observation.model_validate(o.model_dump())
            checked += 1
    assert checked >= 96 * 20


def test_counts_occupancy_and_speed_agree(model: TrafficModel, network: Network) -> None:
    g = {s.station_id: s.vehicle_length_m for s in network.stations}
    lanes_checked = 0
    for start in (local(MONDAY, 3, 0), local(MONDAY, 8, 0), local(MONDAY, 13, 0)):
        for o in window(model, start, 5):
            for r in o.lanes:
                assert isinstance(r.count, int) and r.count >= 0
                assert r.occupancy is not None and 0.0 <= r.occupancy <= 1.0
                if r.speed_kph is None:
                    continue
                assert r.count > 0 and r.speed_kph > 0  # a speed needs vehicles; never 0
                q = r.count * 3600 / o.period_s
                expected = min(1.0, q * g[o.station_id] / (r.speed_kph * 1000))
                assert r.occupancy == pytest.approx(expected, abs=1e-3, rel=0.01), (o, r)
                lanes_checked += 1
    assert lanes_checked > 1000


def test_weekday_peaks_congest_some_segments_and_nights_none(model: TrafficModel) -> None:
    night = window(model, local(MONDAY, 3, 0), 10)
    peak = window(model, local(MONDAY, 8, 0), 10)
    evening = window(model, local(MONDAY, 18, 30), 10)
    assert mean_speed(model, peak) < 0.85 * mean_speed(model, night)
    assert mean_speed(model, evening) < 0.9 * mean_speed(model, night)
    assert congested_segments(model, night) == set()
    am = congested_segments(model, peak)
    assert 2 <= len(am) < len(model.network.segments) // 2, am
    assert "SDR-N-04" in am  # the Sudirman lane drop, inbound in the morning
    assert any(s.startswith("TOL-") for s in am)  # and the inner toll road
    # midday is busy but flows; the weekend morning is lighter than a weekday's
    assert congested_segments(model, window(model, local(MONDAY, 12, 0), 10)) == set()
    weekend = window(model, local(SATURDAY, 8, 0), 10)
    assert sum(r.count for o in weekend for r in o.lanes) < sum(
        r.count for o in peak for r in o.lanes
    )
    assert congested_segments(model, weekend) == set()


def test_state_evolves_smoothly(model: TrafficModel, network: Network) -> None:
    """Consecutive intervals never jump: seeded smooth noise, not white noise."""
    prev = None
    biggest = 0.0
    for t in intervals(local(MONDAY, 6, 0), local(MONDAY, 10, 0)):
        states = model.segment_states(t)
        ratios = {s: st.speed_kph / network.segment(s).free_flow_kph for s, st in states.items()}
        if prev is not None:
            biggest = max(biggest, *(abs(ratios[s] - prev[s]) for s in ratios))
        prev = ratios
    assert 0 < biggest < 0.1


def test_single_loop_stations_never_report_speed(model: TrafficModel, network: Network) -> None:
    single = {s.station_id for s in network.stations if s.detector == "single-loop"}
    assert single
    obs = [o for o in window(model, local(MONDAY, 8, 0), 5) if o.station_id in single]
    assert obs and all(r.speed_kph is None for o in obs for r in o.lanes)
    assert sum(r.count for o in obs for r in o.lanes) > 0  # they count and measure occupancy
    assert any(r.occupancy for o in obs for r in o.lanes)


def test_demo_incident_jams_its_segment_and_queues_upstream(network: Network) -> None:
    start = local(MONDAY, 2, 0)  # at night, so the jam is the incident's and nothing else
    scen = demo_scenario(network, start)
    inc = scen.incidents[0]
    assert inc.start == start + timedelta(minutes=5)
    assert inc.end == start + timedelta(minutes=65)
    model = TrafficModel(network, seed=1, scenario=scen)
    seg = network.segment(inc.segment_id)
    stations = {s.station_id for s in network.stations_of(seg.segment_id)}
    chain = sorted(
        (
            s
            for s in network.segments
            if s.corridor_id == seg.corridor_id and s.direction == seg.direction
        ),
        key=lambda s: s.seq,
    )
    upstream = chain[chain.index(seg) - 1]

    def seg_speed(t: datetime, seg_id: str) -> float:
        st = {s.station_id for s in network.stations_of(seg_id)}
        speeds = [
            v for o in model.observations(t) if o.station_id in st and (v := model.station_speed(o))
        ]
        return sum(speeds) / len(speeds)

    assert seg_speed(inc.start - timedelta(minutes=1), seg.segment_id) > 0.75 * seg.free_flow_kph
    jammed = list(intervals(inc.start + timedelta(minutes=3), inc.end))
    for t in jammed:
        for o in model.observations(t):
            if o.station_id in stations:
                v = model.station_speed(o)
                assert v is not None and v < 0.25 * seg.free_flow_kph, (t, o)
                assert sum(r.occupancy for r in o.lanes) / len(o.lanes) > 0.3
    # the queue reaches the segment upstream within minutes, and the road recovers after
    assert seg_speed(inc.start + timedelta(minutes=15), upstream.segment_id) < (
        0.5 * upstream.free_flow_kph
    )
    assert seg_speed(inc.end + timedelta(minutes=30), seg.segment_id) > 0.75 * seg.free_flow_kph


def test_faults(network: Network) -> None:
    t0 = local(MONDAY, 10, 0)
    scen = Scenario(
        faults=(
            SensorFault("JKT-SDR-N-001", "stuck", t0),
            SensorFault("JKT-SDR-N-002", "silent", t0, t0 + timedelta(minutes=5)),
            SensorFault("JKT-SDR-N-003", "zero", t0),
            SensorFault("JKT-SDR-N-004", "chatter", t0),
            SensorFault("JKT-SDR-N-005", "failed", t0),
        )
    )
    model = TrafficModel(network, seed=2, scenario=scen)
    healthy = TrafficModel(network, seed=2)
    st = {s.station_id: s for s in network.stations}
    ticks = list(intervals(t0, t0 + timedelta(minutes=10)))
    stuck = [model.observation(st["JKT-SDR-N-001"], t) for t in ticks]
    assert all(o is not None and o.lanes == stuck[0].lanes for o in stuck)
    assert stuck[0].lanes == healthy.observation(st["JKT-SDR-N-001"], t0).lanes
    assert [o.interval_start for o in stuck] == ticks  # stamped right, values frozen
    before = healthy.observation(st["JKT-SDR-N-001"], t0 - timedelta(seconds=30))
    assert model.observation(st["JKT-SDR-N-001"], t0 - timedelta(seconds=30)) == before
    for t in ticks:
        silent = t < t0 + timedelta(minutes=5)
        ids = {o.station_id for o in model.observations(t)}
        assert ("JKT-SDR-N-002" not in ids) == silent
        assert (model.observation(st["JKT-SDR-N-002"], t) is None) == silent
        zero = model.observation(st["JKT-SDR-N-003"], t)
        assert all(r.count == 0 and r.occupancy == 0 and r.speed_kph is None for r in zero.lanes)
        chatter = model.observation(st["JKT-SDR-N-004"], t)
        assert chatter.status == "degraded"
        assert min(r.count for r in chatter.lanes) * 3600 / 30 >= 5000  # implausible flow
        failed = model.observation(st["JKT-SDR-N-005"], t)
        assert failed.status == "fault"
        assert all(r.count is None and r.occupancy is None for r in failed.lanes)


def test_misaligned_interval_is_refused(model: TrafficModel) -> None:
    with pytest.raises(ValueError, match="not an interval start"):
        model.observations(local(MONDAY, 8, 0) + timedelta(seconds=7))


def test_scenario_syntax(network: Network) -> None:
    start = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
    inc = parse_incident("SDR-N-02@+10m/45m", start, network)
    assert (inc.segment_id, inc.start, inc.end) == (
        "SDR-N-02",
        start + timedelta(minutes=10),
        start + timedelta(minutes=55),
    )
    inc = parse_incident("TOL-E-02@2026-11-23T02:00:00+00:00/1h30m", start, network)
    assert inc.end - inc.start == timedelta(minutes=90)
    f = parse_fault("JKT-SDR-N-003:silent@+5m/30m", start, network)
    assert (f.kind, f.start, f.end) == (
        "silent",
        start + timedelta(minutes=5),
        start + timedelta(minutes=35),
    )
    assert parse_fault("JKT-SDR-N-003:stuck", start, network).end is None
    assert parse_duration("90s") == timedelta(seconds=90)
    for bad, msg in [
        ("SDR-N-02", "expected SEGMENT_ID@"),
        ("SDR-N-02@+10m", "expected SEGMENT_ID@"),
        ("SDR-N-02@+10x/45m", "bad duration"),
        ("SDR-N-02@soon/45m", "bad start"),
        ("NOPE@+1m/5m", "unknown segment"),
        ("SDR-N-02@2026-11-23T02:00:00/5m", "time zone"),
    ]:
        with pytest.raises(ScenarioError, match=msg):
            parse_incident(bad, start, network)
    for bad, msg in [
        ("JKT-SDR-N-003", "expected STATION_ID:KIND"),
        ("JKT-SDR-N-003:melted@+1m", "kind must be one of"),
        ("JKT-NOPE:silent", "unknown station"),
        ("JKT-SDR-N-003:silent@", "nothing after"),
    ]:
        with pytest.raises(ScenarioError, match=msg):
            parse_fault(bad, start, network)


def test_sim_clock_never_runs_ahead_of_the_wall_clock() -> None:
    wall_now = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
    mono = [0.0]
    clock = SimClock(
        wall_now - timedelta(hours=1), 600, wall=lambda: wall_now, monotonic=lambda: mono[0]
    )
    assert clock.now() == wall_now - timedelta(hours=1)
    mono[0] = 3.0  # 30 simulated minutes later
    assert clock.now() == wall_now - timedelta(minutes=30)
    assert clock.seconds_until(wall_now - timedelta(minutes=29)) == pytest.approx(0.1)
    assert not clock.caught_up
    mono[0] = 60.0  # would be 9 h ahead: clamped
    assert clock.now() == wall_now and clock.caught_up
    assert clock.seconds_until(wall_now + timedelta(seconds=30)) == pytest.approx(30)
    # without a start: now at real time, 6 h of history when faster
    assert default_start(1, 30, now=wall_now + timedelta(seconds=7)) == wall_now
    assert default_start(60, 30, now=wall_now) == wall_now - timedelta(hours=6)
    assert align(wall_now + timedelta(seconds=59), 30) == wall_now + timedelta(seconds=30)
