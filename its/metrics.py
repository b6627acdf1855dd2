"""Traffic formulas as pure functions (PeMS conventions, metric units).

Every function takes plain numbers and returns ``None`` where the inputs cannot give an answer:
a missing value is never silently turned into 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from its.network import DEFAULT_VEHICLE_LENGTH_M


def flow_vph(count: int | None, period_s: float) -> float | None:
    """Hourly flow rate q [veh/h] of a lane from its count over ``period_s`` seconds."""
    if count is None or period_s <= 0:
        return None
    return count * 3600.0 / period_s


def single_loop_speed(
    flow: float | None, occupancy: float | None, g_m: float = DEFAULT_VEHICLE_LENGTH_M
) -> float | None:
    """Speed estimate v = q * g / (occ * 1000) [km/h] for a loop that cannot measure speed."""
    if flow is None or occupancy is None or occupancy <= 0:
        return None
    return flow * g_m / (occupancy * 1000.0)


def harmonic_speed(flows: Sequence[float | None], speeds: Sequence[float | None]) -> float | None:
    """Flow-weighted harmonic mean speed sum(q) / sum(q / v) over lanes (or intervals) that
    have both a flow and a positive speed."""
    q_sum = 0.0
    t_sum = 0.0
    for q, v in zip(flows, speeds, strict=True):
        if q is None or v is None or v <= 0 or q <= 0:
            continue
        q_sum += q
        t_sum += q / v
    if t_sum == 0:
        return None
    return q_sum / t_sum


def mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def density(flow: float | None, speed: float | None) -> float | None:
    """Density k = q / v [veh/km/lane]."""
    if flow is None or speed is None or speed <= 0:
        return None
    return flow / speed


def travel_time_s(length_km: float, speed_kph: float | None) -> float | None:
    if speed_kph is None or speed_kph <= 0:
        return None
    return length_km / speed_kph * 3600.0


def tti(speed_kph: float | None, free_flow_kph: float) -> float | None:
    """Travel Time Index: travel time / free-flow travel time = v_free / v."""
    if speed_kph is None or speed_kph <= 0:
        return None
    return free_flow_kph / speed_kph


def vkt(flow: float | None, length_km: float) -> float | None:
    return None if flow is None else flow * length_km


def vht(flow: float | None, length_km: float, speed_kph: float | None) -> float | None:
    if flow is None or speed_kph is None or speed_kph <= 0:
        return None
    return flow * length_km / speed_kph


def delay_vh(
    flow: float | None, length_km: float, speed_kph: float | None, threshold_kph: float
) -> float | None:
    """Delay at threshold speed Vt: q * max(0, L/v - L/Vt) [veh-h per hour of flow]."""
    if flow is None or speed_kph is None or speed_kph <= 0:
        return None
    return flow * max(0.0, length_km / speed_kph - length_km / threshold_kph)


def percent_observed(observed: int, expected: float) -> float:
    """Share of the expected samples that arrived, 0..100."""
    if expected <= 0:
        return 0.0
    return min(100.0, 100.0 * observed / expected)


def buffer_index(tt95: float | None, tt_mean: float | None) -> float | None:
    if tt95 is None or tt_mean is None or tt_mean <= 0:
        return None
    return (tt95 - tt_mean) / tt_mean


def planning_time_index(tt95: float | None, tt_free: float) -> float | None:
    if tt95 is None or tt_free <= 0:
        return None
    return tt95 / tt_free


# --------------------------------------------------------------------------- congestion bands

BANDS = ("free", "slow", "congested", "jammed")
NO_DATA = "no-data"


@dataclass(frozen=True)
class BandPreset:
    """Thresholds for a congestion band; ``ratio`` presets compare v / v_free, absolute ones km/h.

    ``limits`` are the lower bounds of free, slow, congested (anything below is the last band).
    """

    name: str
    relative: bool
    limits: tuple[float, ...]
    bands: tuple[str, ...] = BANDS

    def classify(self, speed_kph: float | None, free_flow_kph: float) -> str:
        if speed_kph is None:
            return NO_DATA
        x = speed_kph / free_flow_kph if self.relative else speed_kph
        for band, lower in zip(self.bands, self.limits, strict=False):
            if x >= lower:
                return band
        return self.bands[len(self.limits)]


BAND_PRESETS: dict[str, BandPreset] = {
    "ratio": BandPreset("ratio", True, (0.75, 0.5, 0.25)),
    "seoul-arterial": BandPreset(
        "seoul-arterial", False, (25.0, 15.0), ("free", "slow", "congested")
    ),
    "seoul-expressway": BandPreset(
        "seoul-expressway", False, (50.0, 30.0), ("free", "slow", "congested")
    ),
    # PeMS: congested below 35 mph (56.3 km/h)
    "pems": BandPreset("pems", False, (35 * 1.609344,), ("free", "congested")),
}


def classify_band(speed_kph: float | None, free_flow_kph: float, preset: str = "ratio") -> str:
    """Congestion band of a speed under a preset; ``no-data`` when there is no speed."""
    try:
        return BAND_PRESETS[preset].classify(speed_kph, free_flow_kph)
    except KeyError:
        raise ValueError(f"unknown band preset {preset!r}; known: {sorted(BAND_PRESETS)}") from None
