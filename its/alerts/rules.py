"""Alert rules as pure functions over aggregates: no database, no clock, no MQTT.

Each rule turns (its previous state, one new observation of its target) into (its next state, a
decision). The state is a small frozen value with a JSON form, so the evaluator can persist it next
to the alert changes and a restart resumes exactly; tests drive the rules with plain numbers.

Congestion (per segment, each minute, on the speed smoothed over a rolling window of the newest
minutes - :func:`smoothed_speed` - as a v / free-flow ratio; "bucket" below is that minute):

- a bucket is *bad* below ``raise_below`` (0.5: the "congested" band or worse), *good* at or above
  ``clear_at`` (0.6, a little above the "slow" band's floor: hysteresis, so a segment hovering
  around 0.5 does not flap), *mid* in between, and *no data* when there is no speed;
- raise when ``n`` of the last ``m`` minutes are bad (2 of 3: persistence, one slow minute is
  noise); severity ``major`` when the bucket is jammed (below ``major_below``, 0.25), else ``minor``;
- clear after ``clear_k`` consecutive good minutes (5); a mid minute restarts that count;
- a no-data bucket neither raises nor clears ("no data" is not "OK"): it takes a place in the
  window (old evidence ages out) but leaves the good streak as it was.

Station offline: the station's state is ``offline`` (its MQTT Last Will) or it has sent nothing for
``periods`` (3) of its own reporting periods of data time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from its.metrics import classify_band

CONGESTION = "congestion"
STATION_OFFLINE = "station-offline"
FEED_STALLED = "feed-stalled"
FEED_TARGET = "feed"

BAD, MID, GOOD, NONE = "bad", "mid", "good", "none"
OUTCOMES = (BAD, MID, GOOD, NONE)

Action = Literal["raise", "repeat", "clear", "none"]


# --------------------------------------------------------------------------- congestion


@dataclass(frozen=True)
class CongestionParams:
    """Thresholds of the congestion rule (ratios of speed to free-flow speed)."""

    raise_below: float = 0.5
    clear_at: float = 0.6
    major_below: float = 0.25
    n: int = 2
    m: int = 3
    clear_k: int = 5

    def __post_init__(self) -> None:
        if not 0 < self.major_below <= self.raise_below <= self.clear_at <= 1.5:
            raise ValueError(
                "congestion thresholds need 0 < major_below <= raise_below <= clear_at: got "
                f"{self.major_below}, {self.raise_below}, {self.clear_at}"
            )
        if not 1 <= self.n <= self.m <= 48:
            raise ValueError(f"persistence needs 1 <= n <= m <= 48, got n={self.n}, m={self.m}")
        if not 1 <= self.clear_k <= 48:
            raise ValueError(f"clear_k must be 1..48, got {self.clear_k}")


@dataclass(frozen=True)
class CongestionState:
    """What the rule remembers about one segment: recent outcomes, good streak, alert status."""

    window: tuple[str, ...] = ()
    good_streak: int = 0
    active: bool = False
    severity: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "window": list(self.window),
            "good_streak": self.good_streak,
            "active": self.active,
            "severity": self.severity,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> CongestionState:
        """Rebuild a state; anything unreadable starts afresh rather than stopping the evaluator."""
        if not data:
            return cls()
        try:
            window = tuple(str(o) for o in data.get("window", ()) if o in OUTCOMES)
            return cls(
                window=window,
                good_streak=max(0, int(data.get("good_streak", 0))),
                active=bool(data.get("active", False)),
                severity=data.get("severity"),
            )
        except (TypeError, ValueError):
            return cls()


@dataclass(frozen=True)
class Decision:
    """What the evaluator should do after one bucket, and the evidence for its message."""

    action: Action
    severity: str | None = None
    band: str = "no-data"
    ratio: float | None = None
    speed_kph: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


def bucket_outcome(ratio: float | None, params: CongestionParams) -> str:
    if ratio is None:
        return NONE
    if ratio < params.raise_below:
        return BAD
    if ratio >= params.clear_at:
        return GOOD
    return MID


def congestion_severity(ratio: float, params: CongestionParams) -> str:
    return "major" if ratio < params.major_below else "minor"


def congestion_step(
    state: CongestionState,
    speed_kph: float | None,
    free_flow_kph: float,
    params: CongestionParams = CongestionParams(),  # noqa: B008 - frozen, so a safe default
) -> tuple[CongestionState, Decision]:
    """Advance one segment's congestion rule by one step (a minute, in the evaluator)."""
    ratio = speed_kph / free_flow_kph if speed_kph is not None and free_flow_kph > 0 else None
    band = classify_band(speed_kph, free_flow_kph, "ratio")
    outcome = bucket_outcome(ratio, params)
    window = (*state.window, outcome)[-params.m :]
    evidence = {
        "band": band,
        "ratio": None if ratio is None else round(ratio, 3),
        "speed_kph": None if speed_kph is None else round(speed_kph, 1),
        "free_flow_kph": free_flow_kph,
        "bad_buckets": window.count(BAD),
        "window": params.m,
    }

    def decide(action: Action, severity: str | None = None) -> Decision:
        return Decision(action, severity, band, ratio, speed_kph, evidence)

    if outcome == NONE:
        return CongestionState(window, state.good_streak, state.active, state.severity), decide(
            "none"
        )
    if not state.active:
        if outcome == BAD and window.count(BAD) >= params.n:
            assert ratio is not None
            sev = congestion_severity(ratio, params)
            return CongestionState(window, 0, True, sev), decide("raise", sev)
        return CongestionState(window, 0, False, None), decide("none")
    if outcome == BAD:
        assert ratio is not None
        sev = congestion_severity(ratio, params)
        return CongestionState(window, 0, True, sev), decide("repeat", sev)
    if outcome == MID:
        return CongestionState(window, 0, True, state.severity), decide("none")
    streak = state.good_streak + 1
    if streak >= params.clear_k:
        # A new episode must prove its persistence afresh: forget the old bad buckets.
        return CongestionState((), 0, False, None), decide("clear")
    return CongestionState(window, streak, True, state.severity), decide("none")


def smoothed_speed(minutes: Iterable[tuple[float | None, float | None]]) -> float | None:
    """The flow-weighted harmonic mean speed over a rolling window of (flow, speed) minutes
    (GUIDE section 5: sum(q) / sum(q / v)); minutes without a speed are left out, a minute
    without a flow weighs as one. None when no minute has a speed."""
    q_sum = q_over_v = 0.0
    for flow, speed in minutes:
        if speed is None or speed <= 0:
            continue
        q = flow if flow else 1.0
        q_sum += q
        q_over_v += q / speed
    return q_sum / q_over_v if q_over_v > 0 else None


def congestion_message(segment_name: str, decision: Decision) -> str:
    if decision.speed_kph is None or decision.ratio is None:
        return f"Congestion on {segment_name}"
    return (
        f"{decision.band.capitalize()} traffic on {segment_name}: "
        f"{decision.speed_kph:.0f} km/h, {decision.ratio:.0%} of free flow"
    )


# --------------------------------------------------------------------------- station offline


@dataclass(frozen=True)
class StationView:
    """What the evaluator knows about one station at data time ``now``."""

    station_id: str
    state: str | None = None  # online | offline from station_status, None if never reported
    last_seen: datetime | None = None  # end of its newest interval (data time)
    period_s: int | None = None  # reporting period of its newest reading
    last_received: datetime | None = None  # wall time the server last heard from it (any message)


def offline_reason(
    view: StationView,
    now: datetime | None,
    *,
    periods: int = 3,
    default_period_s: int = 30,
    wall: datetime | None = None,
) -> str | None:
    """``"last-will"``, ``"silent"`` or None (online, or no data to judge by).

    A station never heard from is "no data", not offline: the network file may list stations
    that are not installed yet, and an empty database must not raise ninety alerts.

    Silent needs both clocks to agree: ``periods`` of its data time missing *and*, when ``wall``
    is given, nothing received from it (data or state message) for as many periods of wall
    time. At a 240x replay a reading a few hundred ms late is several periods of data time but
    a fraction of one period of wall time, so it is not an outage.
    """
    if view.state == "offline":
        return "last-will"
    if view.last_seen is None or now is None:
        return None
    period = timedelta(seconds=periods * (view.period_s or default_period_s))
    if now - view.last_seen < period:
        return None
    if wall is not None and view.last_received is not None and wall - view.last_received < period:
        return None
    return "silent"


def feed_stalled(last_received: datetime | None, wall: datetime, stall_s: float) -> bool:
    """True when the platform has heard nothing at all for ``stall_s`` seconds of wall time.

    A database that never received anything is "no data" (a fresh install), not a stalled feed.
    """
    return last_received is not None and (wall - last_received).total_seconds() >= stall_s


def feed_stalled_message(last_received: datetime, wall: datetime, suppressed: int) -> str:
    minutes = (wall - last_received).total_seconds() / 60
    text = f"No data received from any station for {minutes:.1f} min: the feed has stalled"
    if suppressed:
        text += f" ({suppressed} station-offline alarms suppressed)"
    return text


def offline_message(station_id: str, reason: str, last_seen: datetime | None) -> str:
    if reason == "last-will":
        return f"Station {station_id} is offline (connection lost)"
    when = last_seen.strftime("%Y-%m-%d %H:%M:%S UTC") if last_seen else "ever"
    return f"Station {station_id} sent no data since {when}"


def fully_offline_segments(
    stations_by_segment: Mapping[str, Iterable[str]], offline: set[str]
) -> set[str]:
    """Segments every one of whose stations is offline: their congestion alerts are suppressed
    (no data is not congestion, and not "OK" either)."""
    out = set()
    for seg, members in stations_by_segment.items():
        ids = list(members)
        if ids and all(sid in offline for sid in ids):
            out.add(seg)
    return out
