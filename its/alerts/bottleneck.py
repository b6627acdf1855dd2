"""Active bottlenecks after the PeMS method (Chen, Skabardonis and Varaiya, 2004), pure functions.

A *bottleneck* sits between a station ``i`` and the next station downstream ``i+1``: traffic
queues behind it and is released past it. In one 5-minute interval the pair qualifies when

- station ``i`` is below ``below_kph`` (64 km/h: 40 mph),
- station ``i+1`` is at least ``diff_kph`` (32 km/h: 20 mph) faster, and
- the two are less than ``max_gap_km`` (5 km: 3 miles) apart.

It is **active** while ``n`` of the last ``m`` consecutive intervals qualify (5 of 7): one slow
interval is noise. Its **extent** is the farthest contiguous station upstream of ``i`` still below
``below_kph`` (the queue), and the **delay** it causes, in vehicle-hours, is the handbook's
(section 5) ``q x max(0, L/v - L/Vt)`` against ``delay_kph`` (60 km/h) over the stations of the
extent, each standing for the road from it to the next station downstream, for the interval's
length. The episode starts at the first qualifying interval of the window that activated it and
ends at the end of its last qualifying interval, once fewer than ``n`` of ``m`` qualify.
A station without data in an interval (silent, suppressed as faulty) does not qualify.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from its.alerts.topology import StationPoint

BOTTLENECK = "bottleneck"
INTERVAL_S = 300

Action = Literal["raise", "repeat", "clear", "none"]


@dataclass(frozen=True)
class BottleneckParams:
    below_kph: float = 64.0
    diff_kph: float = 32.0
    max_gap_km: float = 5.0
    n: int = 5
    m: int = 7
    delay_kph: float = 60.0

    def __post_init__(self) -> None:
        if not 1 <= self.n <= self.m <= 48:
            raise ValueError(
                f"bottleneck persistence needs 1 <= n <= m <= 48, got {self.n}/{self.m}"
            )
        if min(self.below_kph, self.diff_kph, self.max_gap_km, self.delay_kph) <= 0:
            raise ValueError("bottleneck speeds and distances must be positive")


@dataclass(frozen=True)
class StationFigures:
    """One station over one 5-min interval (None: no data)."""

    speed_kph: float | None
    flow_vph: float | None


@dataclass(frozen=True)
class Candidate:
    """A qualifying pair in one interval, with its queue and the delay it caused then."""

    head: str
    downstream: str
    head_speed_kph: float
    downstream_speed_kph: float
    extent: tuple[str, ...]  # queued stations, head first, going upstream
    extent_km: float
    delay_veh_h: float


def interval_candidates(
    chain: Sequence[StationPoint],
    figures: Mapping[str, StationFigures],
    params: BottleneckParams = BottleneckParams(),  # noqa: B008 - frozen, so a safe default
    interval_s: int = INTERVAL_S,
) -> dict[str, Candidate]:
    """Every qualifying head station of one corridor direction in one interval."""
    out: dict[str, Candidate] = {}
    hours = interval_s / 3600.0

    def speed(i: int) -> float | None:
        f = figures.get(chain[i].station_id)
        return None if f is None else f.speed_kph

    for i in range(len(chain) - 1):
        head, down = chain[i], chain[i + 1]
        v, vd = speed(i), speed(i + 1)
        if v is None or vd is None or down.km - head.km >= params.max_gap_km:
            continue
        if not (v < params.below_kph and vd - v >= params.diff_kph):
            continue
        extent = [i]
        j = i - 1
        while j >= 0:
            vj = speed(j)
            if vj is None or vj >= params.below_kph:
                break
            extent.append(j)
            j -= 1
        delay = 0.0
        for k in extent:
            f = figures[chain[k].station_id]
            length = chain[k + 1].km - chain[k].km
            if f.flow_vph and f.speed_kph and length > 0:
                delay += (
                    f.flow_vph * max(0.0, length / f.speed_kph - length / params.delay_kph) * hours
                )
        out[head.station_id] = Candidate(
            head=head.station_id,
            downstream=down.station_id,
            head_speed_kph=v,
            downstream_speed_kph=vd,
            extent=tuple(chain[k].station_id for k in extent),
            extent_km=round(head.km - chain[extent[-1]].km, 3),
            delay_veh_h=delay,
        )
    return out


@dataclass(frozen=True)
class BottleneckState:
    """One head station's memory: the last ``m`` intervals (start, qualified, delay) and the
    episode's running totals while active."""

    window: tuple[tuple[str, bool, float], ...] = ()
    active: bool = False
    started_at: str | None = None
    last_at: str | None = None  # end of the last qualifying interval
    intervals: int = 0
    delay_veh_h: float = 0.0
    max_extent_km: float = 0.0
    farthest: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "window": [list(w) for w in self.window],
            "active": self.active,
            "started_at": self.started_at,
            "last_at": self.last_at,
            "intervals": self.intervals,
            "delay_veh_h": self.delay_veh_h,
            "max_extent_km": self.max_extent_km,
            "farthest": self.farthest,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> BottleneckState:
        if not data:
            return cls()
        try:
            return cls(
                window=tuple((str(a), bool(b), float(c)) for a, b, c in data.get("window", [])),
                active=bool(data.get("active", False)),
                started_at=data.get("started_at"),
                last_at=data.get("last_at"),
                intervals=int(data.get("intervals", 0)),
                delay_veh_h=float(data.get("delay_veh_h", 0.0)),
                max_extent_km=float(data.get("max_extent_km", 0.0)),
                farthest=data.get("farthest"),
            )
        except (TypeError, ValueError):
            return cls()


@dataclass(frozen=True)
class BottleneckDecision:
    action: Action
    details: dict[str, Any] = field(default_factory=dict)


def bottleneck_step(
    state: BottleneckState,
    candidate: Candidate | None,
    interval_start: datetime,
    params: BottleneckParams = BottleneckParams(),  # noqa: B008 - frozen, so a safe default
    interval_s: int = INTERVAL_S,
) -> tuple[BottleneckState, BottleneckDecision]:
    """Advance one head station by one 5-min interval (``candidate`` None: it did not qualify)."""
    end = interval_start + timedelta(seconds=interval_s)
    ok = candidate is not None
    delay = candidate.delay_veh_h if candidate is not None else 0.0
    window = (*state.window, (interval_start.isoformat(), ok, delay))[-params.m :]
    qualifying = [w for w in window if w[1]]
    new = replace(state, window=window)

    def details(s: BottleneckState) -> dict[str, Any]:
        d: dict[str, Any] = {
            "started_at": s.started_at,
            "last_at": s.last_at,
            "intervals": s.intervals,
            "delay_veh_h": round(s.delay_veh_h, 2),
            "max_extent_km": round(s.max_extent_km, 3),
            "farthest_station": s.farthest,
            "qualifying": len(qualifying),
            "window": params.m,
        }
        if candidate is not None:
            d.update(
                downstream_station=candidate.downstream,
                speed_kph=round(candidate.head_speed_kph, 1),
                downstream_speed_kph=round(candidate.downstream_speed_kph, 1),
                extent=list(candidate.extent),
                extent_km=candidate.extent_km,
            )
        return d

    if not state.active:
        if ok and len(qualifying) >= params.n:
            assert candidate is not None
            extent_km = candidate.extent_km
            new = replace(
                new,
                active=True,
                started_at=qualifying[0][0],
                last_at=end.isoformat(),
                intervals=len(qualifying),
                delay_veh_h=sum(w[2] for w in qualifying),
                max_extent_km=extent_km,
                farthest=candidate.extent[-1],
            )
            return new, BottleneckDecision("raise", details(new))
        return new, BottleneckDecision("none")
    if len(qualifying) < params.n:
        done = replace(new, active=False)
        out = details(done)
        return (
            BottleneckState(window=window),
            BottleneckDecision("clear", {**out, "ended_at": state.last_at}),
        )
    if ok:
        assert candidate is not None
        farther = candidate.extent_km > state.max_extent_km
        new = replace(
            new,
            last_at=end.isoformat(),
            intervals=state.intervals + 1,
            delay_veh_h=state.delay_veh_h + delay,
            max_extent_km=max(state.max_extent_km, candidate.extent_km),
            farthest=candidate.extent[-1] if farther else state.farthest,
        )
        return new, BottleneckDecision("repeat", details(new))
    return new, BottleneckDecision("none", details(new))


def bottleneck_message(head: str, d: Mapping[str, Any]) -> str:
    extent = d.get("extent_km", d.get("max_extent_km", 0.0)) or 0.0
    text = f"Active bottleneck downstream of {head}"
    if d.get("downstream_station"):
        text += f" (before {d['downstream_station']})"
    if d.get("speed_kph") is not None:
        text += f": {d['speed_kph']:.0f} km/h vs {d['downstream_speed_kph']:.0f} km/h"
    return text + f", queue {extent:.1f} km, delay {d.get('delay_veh_h', 0):.1f} veh-h"
