"""Traffic formulas (handbook section 5) with hand-computed values."""

from __future__ import annotations

import pytest

from its import metrics as m


def test_flow_and_single_loop_speed() -> None:
    assert m.flow_vph(12, 30) == 1440
    assert m.flow_vph(None, 30) is None
    # 1440 veh/h, 6.7 m effective length, occupancy 0.2 -> 48.24 km/h
    assert m.single_loop_speed(1440, 0.2) == pytest.approx(48.24)
    assert m.single_loop_speed(1440, 0) is None


def test_harmonic_speed_is_flow_weighted() -> None:
    # lane 1: 1200 veh/h at 60, lane 2: 600 veh/h at 20 -> 1800 / (20 + 30) = 36
    assert m.harmonic_speed([1200, 600], [60, 20]) == pytest.approx(36)
    assert m.harmonic_speed([1200, 600], [60, None]) == pytest.approx(60)
    assert m.harmonic_speed([None], [None]) is None


def test_reliability_and_delay() -> None:
    assert m.density(1800, 36) == 50
    assert m.tti(30, 60) == 2
    assert m.travel_time_s(1.0, 60) == 60
    assert m.vkt(1000, 0.5) == 500
    assert m.vht(1000, 0.5, 25) == 20
    assert m.delay_vh(1000, 1.0, 20, 40) == pytest.approx(1000 * (1 / 20 - 1 / 40))
    assert m.delay_vh(1000, 1.0, 50, 40) == 0
    assert m.buffer_index(150, 100) == 0.5
    assert m.planning_time_index(150, 75) == 2
    assert m.percent_observed(9, 10) == 90
    assert m.percent_observed(12, 10) == 100


@pytest.mark.parametrize(
    ("speed", "preset", "band"),
    [
        (50, "ratio", "free"),
        (40, "ratio", "slow"),
        (20, "ratio", "congested"),
        (10, "ratio", "jammed"),
        (None, "ratio", "no-data"),
        (30, "seoul-arterial", "free"),
        (20, "seoul-arterial", "slow"),
        (10, "seoul-arterial", "congested"),
        (40, "seoul-expressway", "slow"),
        (55, "pems", "congested"),
        (57, "pems", "free"),
    ],
)
def test_bands(speed: float | None, preset: str, band: str) -> None:
    assert m.classify_band(speed, 60, preset) == band


def test_unknown_preset() -> None:
    with pytest.raises(ValueError, match="unknown band preset"):
        m.classify_band(10, 60, "nope")
