"""Detector diagnostics, the two clocks and the feed stall as pure functions: plain numbers in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from its.alerts.health import (
    CLEAR_K,
    DetectorState,
    Diagnosis,
    LaneSample,
    StationSample,
    detector_step,
    diagnose,
    mean_lane_vph,
    neighbour_flow,
    pct_good,
    station_neighbours,
)
from its.alerts.rules import StationView, feed_stalled, offline_reason
from its.network import load_network

T = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)


def healthy(i: int, lanes: int = 3) -> StationSample:
    """A plausible interval: ~1,200 veh/h/lane at 80 km/h, counts varying as real ones do."""
    return StationSample(
        30,
        tuple(LaneSample(9 + (i + n) % 3, 0.08 + 0.01 * (i % 2), 80.0 + n) for n in range(lanes)),
    )


def window(make, n: int = 30) -> list[StationSample]:  # noqa: ANN001
    return [make(i) for i in range(n)]


def kinds(samples: list[StationSample], **kw) -> list[str]:  # noqa: ANN003
    return [d.kind for d in diagnose(samples, **kw)]


def test_a_healthy_station_has_no_diagnosis() -> None:
    assert kinds(window(healthy), expected_intervals=30, network_lane_vph=1200) == []


def test_night_zeros_are_not_a_fault_but_zeros_in_a_busy_network_are() -> None:
    zeros = window(lambda i: StationSample(30, (LaneSample(0, 0.0, None),) * 3))
    assert kinds(zeros, network_lane_vph=40) == []
    assert kinds(zeros, network_lane_vph=1200) == ["no-flow"]


def test_identical_values_for_ten_intervals_are_stuck() -> None:
    frozen = healthy(0)
    samples = window(healthy, 10) + [frozen] * 10
    assert kinds(samples)[0] == "stuck"
    assert "stuck" not in kinds(window(healthy, 10) + [frozen] * 9)


@pytest.mark.parametrize(
    ("lane", "kind"),
    [
        (LaneSample(40, 0.2, 80.0), "chatter"),  # 4,800 veh/h in one lane
        (LaneSample(1, 0.97, 2.0), "locked-on"),
        (LaneSample(0, 0.3, None), "zero-flow-with-occupancy"),
        (LaneSample(12, 0.0, 80.0), "mismatch"),  # 1,440 veh/h over an empty loop
        (LaneSample(5, 0.05, 260.0), "implausible-speed"),
        (LaneSample(None, None, None), "no-values"),
    ],
)
def test_each_diagnosis_needs_most_of_the_window(lane: LaneSample, kind: str) -> None:
    def bad(i: int) -> StationSample:
        good = healthy(i)
        return StationSample(30, (lane, *good.lanes[1:]))

    mostly = [bad(i) if i % 5 != 0 else healthy(i) for i in range(30)]  # 80%
    assert kind in kinds(mostly)
    rarely = [bad(i) if i % 5 == 0 else healthy(i) for i in range(30)]
    assert kind not in kinds(rarely)


def test_controller_flags_and_gaps() -> None:
    flagged = [StationSample(30, healthy(i).lanes, "degraded") for i in range(30)]
    assert kinds(flagged) == ["reported-fault"]
    assert kinds(window(healthy, 10), expected_intervals=30) == ["intermittent"]
    assert kinds(window(healthy, 20), expected_intervals=30) == []
    assert diagnose([]) == []  # no data is the offline rule's business


def test_detector_fault_raises_repeats_and_clears_after_clear_k_clean_minutes() -> None:
    d = [Diagnosis("stuck", "x")]
    s, action = detector_step(DetectorState(), d)
    assert action == "raise" and s.kind == "stuck"
    s, action = detector_step(s, d)
    assert action == "repeat"
    for _ in range(CLEAR_K - 1):
        # the state survives a restart (rule_state) between any two evaluations
        s, action = detector_step(DetectorState.from_json(s.to_json()), [])
        assert action == "none" and s.active
    s, action = detector_step(s, d)  # a fault that comes back restarts the count
    assert action == "repeat" and s.clean == 0
    for _ in range(CLEAR_K - 1):
        s, action = detector_step(s, [])
    s, action = detector_step(DetectorState.from_json(s.to_json()), [])
    assert action == "clear" and not s.active
    assert DetectorState.from_json({"clean": "garbage"}) == DetectorState()
    assert pct_good(1, 4) == 75.0 and pct_good(0, 0) is None


def test_replay_lateness_is_not_silence_but_both_clocks_silent_is() -> None:
    # at 240x a reading 400 ms late is 96 s of data time: three 30-s periods
    view = StationView("S", "online", T, 30, last_received=T)
    late = T + timedelta(seconds=96)
    wall = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    recent = StationView("S", "online", T, 30, last_received=wall - timedelta(milliseconds=400))
    assert offline_reason(recent, late, wall=wall) is None
    assert offline_reason(view, late) == "silent"  # data clock alone (no wall given)
    gone = StationView("S", "online", T, 30, last_received=wall - timedelta(seconds=90))
    assert offline_reason(gone, late, wall=wall) == "silent"
    assert offline_reason(gone, T + timedelta(seconds=60), wall=wall) is None


def test_feed_stalled_after_the_setting_and_never_on_an_empty_database() -> None:
    wall = T + timedelta(seconds=120)
    assert feed_stalled(T, wall, 120) is True
    assert feed_stalled(T, wall - timedelta(seconds=1), 120) is False
    assert feed_stalled(None, wall, 120) is False


ZERO = StationSample(30, (LaneSample(0, 0.0, None),) * 3)


def test_zeros_at_night_are_a_fault_when_the_neighbours_carry_traffic() -> None:
    # 3 lanes x 10 intervals of 30 s: 240 veh/h/lane either side means ~60 vehicles missing
    night = [healthy(i) for i in range(5)] + [ZERO] * 10
    assert kinds(night, network_lane_vph=40, neighbour_lane_vph=240)[0] == "no-flow"
    # a quiet road: 20 veh/h/lane either side is 5 vehicles in 5 min; zeros are normal
    assert kinds(night, network_lane_vph=40, neighbour_lane_vph=20) == []
    # ... until the run is long enough that 20 vehicles should have crossed (20 min)
    long_night = [ZERO] * 40
    assert kinds(long_night, neighbour_lane_vph=20) == ["no-flow"]
    assert kinds(long_night[:39], neighbour_lane_vph=20) == []
    # nine intervals are never enough, however busy the neighbours
    assert kinds([ZERO] * 9, neighbour_lane_vph=2000) == []
    # one vehicle in the newest interval ends the run
    assert kinds([ZERO] * 20 + [healthy(0)], neighbour_lane_vph=2000) == []
    # a standing queue (occupancy, no count) is not a dead loop
    queue = StationSample(30, (LaneSample(0, 0.95, None),) * 3)
    assert "no-flow" not in kinds([queue] * 30, neighbour_lane_vph=2000)


def test_faults_no_traffic_makes_are_named_after_a_five_minute_run() -> None:
    def chatter(i: int) -> StationSample:
        return StationSample(30, (LaneSample(60, 0.1, 80.0),) * 3)  # 7,200 veh/h/lane

    def failed(i: int) -> StationSample:
        return StationSample(30, (LaneSample(None, None, None),) * 3, "fault")

    for bad, kind in ((chatter, "chatter"), (failed, "reported-fault"), (failed, "no-values")):
        onset = window(healthy, 20) + window(bad, 10)  # a third of the window, the newest 5 min
        assert kind in kinds(onset)
        assert kind not in kinds(window(healthy, 21) + window(bad, 9))
        # ten odd intervals that are over are not a fault (the window's share rule decides)
        assert kind not in kinds(window(healthy, 10) + window(bad, 10) + window(healthy, 10))


def test_neighbours_follow_the_direction_of_travel_and_skip_faulty_ones() -> None:
    net = load_network()
    nb = station_neighbours(net)
    assert set(nb) == {st.station_id for st in net.stations}
    seg_of = {st.station_id: st.segment_id for st in net.stations}
    corridor = {s.segment_id: (s.corridor_id, s.direction) for s in net.segments}
    for sid, around in nb.items():
        assert 1 <= len(around) <= 2 and sid not in around
        assert all(corridor[seg_of[n]] == corridor[seg_of[sid]] for n in around)
    first, second, third = (
        st.station_id for st in net.ordered_stations(*corridor[seg_of[next(iter(nb))]])[:3]
    )
    assert nb[first] == (second,) and nb[second] == (first, third)
    flows = {first: 900.0, third: 300.0}
    assert neighbour_flow(nb[second], flows, set()) == 300.0  # the lower one
    assert neighbour_flow(nb[second], flows, {third}) == 900.0  # a faulty one is no reference
    assert neighbour_flow(nb[second], {}, set()) is None
    assert mean_lane_vph([healthy(0)]) == pytest.approx(3600 * 30 / 30 / 3)
    assert mean_lane_vph([StationSample(30, (LaneSample(None, None, None),))]) is None


def test_a_queue_over_every_lane_is_a_jam_but_one_lane_on_is_locked_on() -> None:
    jam = window(lambda i: StationSample(30, (LaneSample(i % 2, 0.95, 3.0),) * 3))
    # the station upstream is in the queue too: a jam, not a fault
    assert "locked-on" not in kinds(jam, neighbour_occupancy=0.6)
    # both neighbours flow freely: every loop "on" for 12 of 15 minutes is the station
    assert "locked-on" in kinds(jam, neighbour_occupancy=0.1)
    assert "locked-on" not in kinds(jam)  # no neighbour to tell: the benefit of the doubt
    one_on = window(lambda i: StationSample(30, (LaneSample(0, 0.97, None), *healthy(i).lanes[1:])))
    assert "locked-on" in kinds(one_on, neighbour_occupancy=0.6)
