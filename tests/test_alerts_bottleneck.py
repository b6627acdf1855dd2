"""The PeMS bottleneck rule as pure functions: qualifying pairs, extent, delay, 5 of 7 episodes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from its.alerts.bottleneck import (
    BottleneckParams,
    BottleneckState,
    StationFigures,
    bottleneck_message,
    bottleneck_step,
    interval_candidates,
)
from its.alerts.topology import StationPoint, adjacent_pairs, chains
from its.network import Network

T0 = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)


def point(sid: str, km: float) -> StationPoint:
    return StationPoint(sid, "SEG", "C", "N", "expressway", 80.0, True, km)


# A, B, C queued behind the bottleneck between C and D; E further on
CHAIN = [point("A", 0.0), point("B", 1.0), point("C", 2.5), point("D", 3.0), point("E", 9.0)]


def figs(**speeds: float) -> dict[str, StationFigures]:
    return {sid: StationFigures(v, 3000.0) for sid, v in speeds.items()}


def test_a_slow_station_with_a_fast_one_downstream_is_a_bottleneck_with_its_queue() -> None:
    found = interval_candidates(CHAIN, figs(A=70, B=40, C=20, D=70, E=75))
    assert list(found) == ["C"]
    c = found["C"]
    assert (c.downstream, c.extent, c.extent_km) == ("D", ("C", "B"), 1.5)
    # delay against 60 km/h for 5 min: C stands for 0.5 km at 20 km/h, B for 1.5 km at 40
    expected = 3000 * (0.5 / 20 - 0.5 / 60) / 12 + 3000 * (1.5 / 40 - 1.5 / 60) / 12
    assert c.delay_veh_h == pytest.approx(expected)


def test_no_bottleneck_when_the_difference_is_small_far_or_unknown() -> None:
    assert interval_candidates(CHAIN, figs(A=70, B=70, C=40, D=70, E=75)) == {}  # 30 < 32
    assert interval_candidates(CHAIN, figs(A=70, B=70, C=70, D=20, E=75)) == {}  # 6 km apart
    assert interval_candidates(CHAIN, figs(A=70, B=70, C=20, E=75)) == {}  # D silent
    assert interval_candidates(CHAIN, figs(A=70, B=70, C=65, D=99, E=99)) == {}  # C not < 64


def test_extent_stops_at_a_station_without_data() -> None:
    found = interval_candidates(CHAIN, figs(A=30, C=20, D=70))
    assert found["C"].extent == ("C",) and found["C"].extent_km == 0.0


def run(qualifies: list[bool]) -> list[tuple[str, dict]]:
    state = BottleneckState()
    cand = interval_candidates(CHAIN, figs(A=70, B=40, C=20, D=70, E=75))["C"]
    out = []
    for k, ok in enumerate(qualifies):
        state, d = bottleneck_step(state, cand if ok else None, T0 + timedelta(minutes=5 * k))
        state = BottleneckState.from_json(state.to_json())  # as persisted between steps
        out.append((d.action, d.details))
    return out


def test_active_when_five_of_seven_intervals_qualify() -> None:
    steps = run([True, False, True, True, True, True, True, False, False, False, True])
    actions = [a for a, _ in steps]
    # 5 qualifying of the first 6 -> raised at the 6th interval; ended when fewer than 5 of 7
    assert actions == [
        "none",
        "none",
        "none",
        "none",
        "none",
        "raise",
        "repeat",
        "none",
        "none",
        "clear",
        "none",
    ]
    raised = steps[5][1]
    assert raised["started_at"] == T0.isoformat()  # the first qualifying interval
    assert raised["intervals"] == 5 and raised["extent"] == ["C", "B"]
    cleared = steps[9][1]
    assert cleared["ended_at"] == (T0 + timedelta(minutes=35)).isoformat()  # end of the 7th
    assert cleared["intervals"] == 6
    one = raised["delay_veh_h"] / 5
    assert cleared["delay_veh_h"] == pytest.approx(6 * one, rel=1e-3)
    assert "queue 1.5 km" in bottleneck_message("C", raised)


def test_four_of_seven_is_not_a_bottleneck() -> None:
    assert {a for a, _ in run([True, True, False, True, False, True, False, False])} == {"none"}


def test_params_are_checked() -> None:
    with pytest.raises(ValueError):
        BottleneckParams(n=8, m=7)
    with pytest.raises(ValueError):
        BottleneckParams(diff_kph=0)


def test_sample_network_chains_follow_seq_and_distance(network: Network) -> None:
    all_chains = chains(network)
    assert sum(len(c) for c in all_chains) == len(network.stations)
    for chain in all_chains:
        seqs = [network.segment(p.segment_id).seq for p in chain]
        assert seqs == sorted(seqs)
        kms = [p.km for p in chain]
        assert kms == sorted(kms) and len({(p.corridor_id, p.direction) for p in chain}) == 1
    pairs = list(adjacent_pairs(network))
    assert ("JKT-SDR-N-002", "JKT-SDR-N-003") in {(u.station_id, d.station_id) for u, d in pairs}
    assert all(d.km > u.km for u, d in pairs)
