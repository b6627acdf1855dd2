"""Scenarios: incidents and broken sensors laid over the normal traffic model.

A :class:`Scenario` is plain data (frozen dataclasses, absolute UTC times), so the model stays a
pure function of (seed, scenario, t) and a backfill and a live run with the same scenario agree.
The CLI writes events relative to the run start (``SEG@+10m/45m``); :func:`parse_incident` and
:func:`parse_fault` turn those into absolute events once the start is known.

Fault kinds, and what a real detector of that kind looks like on the wire:

- ``silent``  publishes nothing; live, its MQTT connection dies so its Last Will marks it offline
- ``stuck``   repeats the readings of the interval the fault began in, status ``ok`` (the
              controller does not know; diagnostics must notice)
- ``zero``    counts 0 and occupancy 0 even in daytime, speed null, status ``ok``
- ``chatter`` implausible counts (loop chatter, several times real flow plus spikes), status
              ``degraded`` (the detector card flags it)
- ``failed``  every value null, status ``fault`` (the controller reports a failed loop)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from its.errors import ConfigError
from its.network import Network

FaultKind = Literal["silent", "stuck", "zero", "chatter", "failed"]
FAULT_KINDS: tuple[str, ...] = ("silent", "stuck", "zero", "chatter", "failed")
DEFAULT_INCIDENT_SEVERITY = 0.55
INCIDENT_RAMP = timedelta(minutes=3)  # the queue builds over the first minutes
INCIDENT_RECOVERY = timedelta(minutes=10)  # and discharges after the road is cleared


class ScenarioError(ConfigError):
    """An incident or fault specification that cannot be used (bad syntax, unknown id)."""


@dataclass(frozen=True)
class Incident:
    """A capacity loss on ``segment_id`` from ``start`` to ``end`` (lanes blocked).

    ``severity`` in (0, 0.8] is the queue's position on the congested branch of the fundamental
    diagram at the incident: 0.55 puts speeds near 15-20% of free flow (jammed).
    """

    segment_id: str
    start: datetime
    end: datetime
    severity: float = DEFAULT_INCIDENT_SEVERITY

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ScenarioError(f"incident on {self.segment_id}: end must be after start")
        if not 0 < self.severity <= 0.8:
            raise ScenarioError(f"incident on {self.segment_id}: severity must be in (0, 0.8]")

    def level(self, t: datetime) -> float:
        """The incident's queue severity at ``t``: ramps up, holds, then recovers."""
        if t < self.start or t >= self.end + INCIDENT_RECOVERY:
            return 0.0
        if t < self.start + INCIDENT_RAMP:
            return self.severity * ((t - self.start) / INCIDENT_RAMP)
        if t < self.end:
            return self.severity
        return self.severity * (1 - (t - self.end) / INCIDENT_RECOVERY)


@dataclass(frozen=True)
class SensorFault:
    """A broken detector at ``station_id`` from ``start`` until ``end`` (None: until the end)."""

    station_id: str
    kind: FaultKind
    start: datetime
    end: datetime | None = None
    # set when the fault is one station's share of a gateway outage (its whole cabinet failed)
    gateway_id: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ScenarioError(f"fault kind must be one of {', '.join(FAULT_KINDS)}")
        if self.end is not None and self.end <= self.start:
            raise ScenarioError(f"fault on {self.station_id}: end must be after start")

    def active(self, t: datetime) -> bool:
        return self.start <= t and (self.end is None or t < self.end)


@dataclass(frozen=True)
class Scenario:
    """The events of one run; empty means normal traffic only."""

    incidents: tuple[Incident, ...] = ()
    faults: tuple[SensorFault, ...] = ()
    _by_station: dict[str, tuple[SensorFault, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        grouped: dict[str, list[SensorFault]] = {}
        for f in self.faults:
            grouped.setdefault(f.station_id, []).append(f)
        self._by_station.update({k: tuple(v) for k, v in grouped.items()})

    def __add__(self, other: Scenario) -> Scenario:
        return Scenario(self.incidents + other.incidents, self.faults + other.faults)

    def fault_at(self, station_id: str, t: datetime) -> SensorFault | None:
        """The fault active at ``station_id`` at ``t`` (the first listed wins)."""
        for f in self._by_station.get(station_id, ()):
            if f.active(t):
                return f
        return None

    def silent_at(self, station_id: str, t: datetime) -> bool:
        f = self.fault_at(station_id, t)
        return f is not None and f.kind == "silent"

    def incident_level(self, segment_id: str, t: datetime) -> float:
        return max((i.level(t) for i in self.incidents if i.segment_id == segment_id), default=0.0)

    def check(self, network: Network) -> Scenario:
        """Raise :class:`ScenarioError` for a segment or station the network does not have."""
        segments = {s.segment_id for s in network.segments}
        stations = {s.station_id for s in network.stations}
        for i in self.incidents:
            if i.segment_id not in segments:
                raise ScenarioError(f"unknown segment {i.segment_id!r} in incident")
        for f in self.faults:
            if f.station_id not in stations:
                raise ScenarioError(f"unknown station {f.station_id!r} in fault")
        return self


def gateway_outage(
    network: Network, gateway_id: str, start: datetime, end: datetime | None = None
) -> tuple[SensorFault, ...]:
    """A failed roadside gateway: every station behind it (``gateway_id`` in the network) goes
    ``silent`` from ``start`` to ``end`` (live, each one's Last Will fires), which the alerts
    evaluator must report as one ``gateway-offline`` alert, not one per station."""
    stations = network.gateways().get(gateway_id)
    if not stations:
        raise ScenarioError(f"unknown gateway {gateway_id!r} (no station names it as gateway_id)")
    return tuple(SensorFault(sid, "silent", start, end, gateway_id) for sid in stations)


# --------------------------------------------------------------------------- demo


def demo_segment(network: Network) -> str:
    """The busy segment the demo blocks: the highest-capacity segment that has both an upstream
    and a downstream neighbour, so the queue spreading upstream and the starved road downstream
    are both visible (on the Jakarta sample: Sudirman northbound, inbound to the centre)."""
    candidates = []
    for seg in network.segments:
        same = [
            s.seq
            for s in network.segments
            if s.corridor_id == seg.corridor_id and s.direction == seg.direction
        ]
        if min(same) < seg.seq < max(same) and network.stations_of(seg.segment_id):
            candidates.append((-seg.lanes * seg.capacity_vph_lane, seg.segment_id))
    if not candidates:
        candidates = [(0.0, s.segment_id) for s in network.segments]
    return min(candidates)[1]


def demo_scenario(network: Network, start: datetime) -> Scenario:
    """The ``--demo`` events, relative to the simulated start so a demo sees them in minutes:

    - an incident on :func:`demo_segment` from start+5 min for 60 min (jammed, < 25% free flow)
    - a silent station (connection dropped, Last Will) from start+10 min for 30 min
    - a stuck station from start+3 min until the end of the run
    both stations on other corridors than the incident, so their alerts do not mix.
    """
    seg_id = demo_segment(network)
    corridor = network.segment(seg_id).corridor_id
    others = sorted(
        (
            st
            for st in network.stations
            if network.segment(st.segment_id).corridor_id != corridor and st.detector == "dual-loop"
        ),
        key=lambda st: st.station_id,
    )
    if len(others) < 2:
        others = sorted(network.stations, key=lambda st: st.station_id)
    silent = others[0].station_id
    stuck = others[len(others) // 2].station_id
    return Scenario(
        incidents=(Incident(seg_id, start + timedelta(minutes=5), start + timedelta(minutes=65)),),
        faults=(
            SensorFault(
                silent, "silent", start + timedelta(minutes=10), start + timedelta(minutes=40)
            ),
            SensorFault(stuck, "stuck", start + timedelta(minutes=3)),
        ),
    )


# --------------------------------------------------------------------------- CLI syntax

_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(text: str) -> timedelta:
    """``45m``, ``1h30m``, ``90s``, ``2h`` -> timedelta (at least one unit, positive)."""
    m = _DURATION_RE.match(text.strip())
    if not text.strip() or m is None or not any(m.groups()):
        raise ScenarioError(f"bad duration {text!r}: use e.g. 45m, 1h30m, 90s")
    h, mnt, s = (float(g) if g else 0.0 for g in m.groups())
    return timedelta(hours=h, minutes=mnt, seconds=s)


def _parse_when(text: str, start: datetime) -> datetime:
    """``+10m`` (relative to the run start) or an ISO 8601 time with a zone."""
    text = text.strip()
    if text.startswith("+"):
        return start + parse_duration(text[1:])
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ScenarioError(
            f"bad start {text!r}: use +DURATION (e.g. +10m) or an ISO time with a zone"
        ) from None
    if when.tzinfo is None:
        raise ScenarioError(f"start {text!r} needs a time zone (e.g. ...Z)")
    return when


def parse_incident(spec: str, start: datetime, network: Network | None = None) -> Incident:
    """``SEGMENT_ID@+10m/45m`` (or ``SEGMENT_ID@2026-11-23T01:00Z/45m``): an incident from start
    +10 min lasting 45 min, at the default severity."""
    seg, at, rest = spec.partition("@")
    when, slash, length = rest.rpartition("/") if "/" in rest else (rest, "", "")
    if not seg or not at or not when or not slash or not length:
        raise ScenarioError(
            f"bad incident {spec!r}: expected SEGMENT_ID@+START/DURATION, e.g. SDR-N-02@+10m/45m"
        )
    begin = _parse_when(when, start)
    incident = Incident(seg.strip(), begin, begin + parse_duration(length))
    if network is not None:
        Scenario(incidents=(incident,)).check(network)
    return incident


def parse_fault(spec: str, start: datetime, network: Network | None = None) -> SensorFault:
    """``STATION_ID:KIND@+5m`` or ``STATION_ID:KIND@+5m/30m`` (KIND: silent, stuck, zero,
    chatter, failed). Without ``@`` the fault starts at the run start and lasts to the end."""
    station, colon, rest = spec.partition(":")
    kind, at, timing = rest.partition("@")
    if not station or not colon or not kind:
        raise ScenarioError(
            f"bad fault {spec!r}: expected STATION_ID:KIND[@+START[/DURATION]], "
            "e.g. JKT-SDR-N-003:silent@+5m"
        )
    kind = kind.strip()
    if kind not in FAULT_KINDS:
        raise ScenarioError(f"bad fault {spec!r}: kind must be one of {', '.join(FAULT_KINDS)}")
    begin, end = start, None
    if at:
        when, slash, length = timing.partition("/")
        if not when:
            raise ScenarioError(f"bad fault {spec!r}: nothing after '@'")
        begin = _parse_when(when, start)
        if slash:
            end = begin + parse_duration(length)
    fault = SensorFault(station.strip(), kind, begin, end)  # type: ignore[arg-type]
    if network is not None:
        Scenario(faults=(fault,)).check(network)
    return fault
