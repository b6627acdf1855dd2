"""The alert rules as pure functions: persistence, hysteresis, no data, offline, suppression."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from its.alerts.config import AlertSettings
from its.alerts.rules import (
    CongestionParams,
    CongestionState,
    StationView,
    congestion_message,
    congestion_step,
    fully_offline_segments,
    offline_reason,
    smoothed_speed,
)

FF = 80.0  # free-flow speed of the test segment
# The rule's logic with a 3-of-4 window and 2 to clear (the pre-1-minute defaults): the evaluator
# runs it each minute with 2 of 3 and 5 to clear (AlertSettings), tested below and end to end.
P = CongestionParams(n=3, m=4, clear_k=2)


def run(ratios: list[float | None], params: CongestionParams | None = None) -> list[str]:
    """Feed buckets (speed / free-flow ratios; None = no data), return each bucket's action."""
    state = CongestionState()
    actions = []
    for r in ratios:
        state, decision = congestion_step(state, None if r is None else r * FF, FF, params or P)
        actions.append(decision.action)
        state = CongestionState.from_json(state.to_json())  # as persisted between steps
    return actions


def test_two_congested_buckets_do_not_raise() -> None:
    assert run([0.9, 0.4, 0.4, 0.9, 0.9]) == ["none"] * 5


def test_three_of_four_congested_buckets_raise() -> None:
    assert run([0.4, 0.9, 0.4, 0.4]) == ["none", "none", "none", "raise"]
    assert run([0.4, 0.4, 0.4]) == ["none", "none", "raise"]


def test_bad_buckets_outside_the_window_do_not_count() -> None:
    # bad, good, good, bad, bad: only 2 of the last 4 are bad
    assert run([0.4, 0.9, 0.9, 0.4, 0.4]) == ["none"] * 5


def test_repeat_while_congested_and_severity_follows_the_band() -> None:
    state = CongestionState()
    decisions = []
    for r in (0.4, 0.4, 0.4, 0.2):
        state, d = congestion_step(state, r * FF, FF, P)
        decisions.append(d)
    assert [d.action for d in decisions] == ["none", "none", "raise", "repeat"]
    assert decisions[2].severity == "minor" and decisions[2].band == "congested"
    assert decisions[3].severity == "major" and decisions[3].band == "jammed"
    assert "32 km/h" in congestion_message("Jl. Sudirman", decisions[2])


def test_a_raise_in_jam_is_major() -> None:
    state = CongestionState()
    for r in (0.2, 0.2, 0.2):
        state, d = congestion_step(state, r * FF, FF, P)
    assert d.action == "raise" and d.severity == "major"


def test_hysteresis_a_bucket_at_055_does_not_clear() -> None:
    # raised, then 0.55 (above the raise threshold, below the clear one) for a long time
    assert run([0.4, 0.4, 0.4, 0.55, 0.55, 0.55, 0.55]) == ["none", "none", "raise"] + ["none"] * 4


def test_clear_needs_two_consecutive_good_buckets() -> None:
    actions = run([0.4, 0.4, 0.4, 0.7, 0.55, 0.7, 0.7])
    assert actions == ["none", "none", "raise", "none", "none", "none", "clear"]


def test_no_data_neither_raises_nor_clears() -> None:
    # no data while clear: nothing; no data while active: stays active, even for long
    assert run([None] * 6) == ["none"] * 6
    assert run([0.4, 0.4, 0.4] + [None] * 10) == ["none", "none", "raise"] + ["none"] * 10
    # no data does not count as good: a gap then one good bucket is not two goods
    assert run([0.4, 0.4, 0.4, None, None, 0.9])[-1] == "none"
    # nor does a gap reset the evidence: good, gap, good are two consecutive goods with data
    assert run([0.4, 0.4, 0.4, 0.9, None, 0.9])[-1] == "clear"


def test_no_data_buckets_age_old_evidence_out() -> None:
    # two bad buckets, a long gap, then one bad: not 3 of the last 4
    assert run([0.4, 0.4, None, None, 0.4]) == ["none"] * 5
    # but a short gap inside the window still counts 3 of 4
    assert run([0.4, None, 0.4, 0.4]) == ["none", "none", "none", "raise"]


def test_after_clear_a_new_episode_needs_fresh_persistence() -> None:
    actions = run([0.4, 0.4, 0.4, 0.9, 0.9, 0.4, 0.4, 0.4])
    assert actions == ["none", "none", "raise", "none", "clear", "none", "none", "raise"]


def test_thresholds_are_configurable() -> None:
    strict = CongestionParams(raise_below=0.7, clear_at=0.8, n=2, m=3, clear_k=1)
    assert run([0.65, 0.65, 0.85], strict) == ["none", "raise", "clear"]
    with pytest.raises(ValueError, match="raise_below <= clear_at"):
        CongestionParams(raise_below=0.6, clear_at=0.5)
    with pytest.raises(ValueError, match="n <= m"):
        CongestionParams(n=5, m=4)
    env = AlertSettings(_env_file=None, congestion_raise_below=0.4, congestion_clear_at=0.7)
    assert env.congestion().raise_below == 0.4 and env.congestion().clear_at == 0.7


def test_state_round_trips_as_json_and_survives_garbage() -> None:
    state = CongestionState(("bad", "none", "good"), 1, True, "minor")
    assert CongestionState.from_json(state.to_json()) == state
    assert CongestionState.from_json({"window": "x", "good_streak": "no"}) == CongestionState()
    assert CongestionState.from_json(None) == CongestionState()


NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def test_station_offline_by_last_will_or_silence() -> None:
    fresh = NOW - timedelta(seconds=30)
    assert offline_reason(StationView("S1", "offline", fresh, 30), NOW) == "last-will"
    assert offline_reason(StationView("S1", "online", fresh, 30), NOW) is None
    assert offline_reason(StationView("S1", None, NOW - timedelta(seconds=89), 30), NOW) is None
    assert offline_reason(StationView("S1", None, NOW - timedelta(seconds=90), 30), NOW) == "silent"
    # the station's own period counts: 60 s period -> silent after 180 s
    assert offline_reason(StationView("S1", None, NOW - timedelta(seconds=120), 60), NOW) is None
    # never heard from: no data, not offline
    assert offline_reason(StationView("S1"), NOW) is None


def test_fully_offline_segments_only() -> None:
    by_segment = {"A": ["a1", "a2"], "B": ["b1"], "C": []}
    assert fully_offline_segments(by_segment, {"a1", "b1"}) == {"B"}
    assert fully_offline_segments(by_segment, {"a1", "a2"}) == {"A"}


def test_minute_defaults_raise_on_two_of_three_and_clear_after_five_good() -> None:
    minutes = CongestionParams()
    assert (minutes.n, minutes.m, minutes.clear_k) == (2, 3, 5)
    assert run([0.9, 0.4, 0.9, 0.9, 0.4], minutes) == ["none"] * 5  # never 2 of the last 3
    acts = run([0.9, 0.4, 0.4, 0.9, 0.9, 0.9, 0.9, 0.9], minutes)
    assert acts == ["none", "none", "raise", "none", "none", "none", "none", "clear"]


def test_smoothed_speed_is_the_flow_weighted_harmonic_mean() -> None:
    # 1000 veh/h at 60 and 1000 at 20: the harmonic mean 30, not the arithmetic 40
    assert smoothed_speed([(1000.0, 60.0), (1000.0, 20.0)]) == pytest.approx(30.0)
    assert smoothed_speed([(None, 60.0), (None, None)]) == pytest.approx(60.0)
    assert smoothed_speed([(500.0, None)]) is None
