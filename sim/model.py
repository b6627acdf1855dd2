"""The traffic model: one observation per station per interval, a pure function of (seed, t).

No MQTT, no clock, no state between calls: the same seed, network and scenario give the same
observation for the same interval, so a backfill and a live run agree, and tests check
properties directly. See ``docs/simulator.md`` for the equations; in short:

1. demand ratio d = demand / capacity per segment from a time-of-day profile in the network's
   local time zone (night low, weekday peaks ~07:00-09:00 and ~17:00-19:30, weekend lighter),
   times seeded smooth noise (value noise, so intervals follow each other smoothly);
2. the queue severity s in [0, 0.8] of each segment: its own excess demand ``1.3 (d - 1)``, an
   incident's level, or the queue of the segment downstream spilling back (``0.6 s`` of the
   downstream segment 4 min earlier), whichever is largest: congestion spreads upstream;
3. a fundamental diagram per lane: free branch q = d C, v = vf (1 - 0.2 (q/C)^3); congested
   branch q = C (1 - s), k = kc + s (kj - kc), v = q / k, continuous at capacity (v = 0.8 vf);
   a segment carries no more than the one upstream delivers plus side streets (0.12 C), so the
   road below a queue is starved;
4. per lane: count ~ Poisson(q period / 3600), measured speed with a little noise, occupancy =
   q g / (v 1000) from the counted flow and the measured speed; no vehicles -> speed null;
   single-loop detectors report speed null (never 0).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from its.contract import LaneReading, Observation
from its.network import Network, Segment, Station
from sim.scenario import Scenario, SensorFault

DEFAULT_PERIOD_S = 30
JAM_DENSITY = 140.0  # veh/km/lane, about one vehicle every 7 m at standstill
SPEED_AT_CAPACITY = 0.8  # fraction of free-flow speed where flow reaches capacity
MAX_SEVERITY = 0.8
SPILLBACK = 0.6  # share of a downstream queue's severity that reaches the next segment upstream
SPILLBACK_LAG_S = 240
SPILLBACK_FADE = 0.03
SIDE_INFLOW = 0.12  # demand ratio joining a segment from side streets and ramps
BLEND_SEVERITY = 0.15  # a queue takes over the segment's speed gradually up to this severity
EXCESS_GAIN = 1.3  # severity per unit of demand above capacity
_MASK = (1 << 64) - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --------------------------------------------------------------------------- randomness


def stable_key(*parts: object) -> int:
    """A 64-bit key from any parts, stable across processes (unlike ``hash`` of a str)."""
    raw = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big")


def _mix(x: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit hash of a 64-bit integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _unit(key: int, i: int) -> float:
    """A uniform value in [-1, 1) for lattice point ``i`` of the noise ``key``."""
    return _mix(key ^ ((i * 0xD1B54A32D192ED03) & _MASK)) / 2**63 - 1.0


def smooth_noise(key: int, x: float) -> float:
    """Value noise in [-1, 1]: random at integer x, smoothstep between, so it never jumps."""
    i = math.floor(x)
    f = x - i
    s = f * f * (3 - 2 * f)
    return _unit(key, i) * (1 - s) + _unit(key, i + 1) * s


class Rng:
    """A tiny splitmix64 generator seeded per (station, interval): cheap and reproducible."""

    __slots__ = ("state",)

    def __init__(self, key: int) -> None:
        self.state = key & _MASK

    def random(self) -> float:
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK
        return (_mix(self.state) >> 11) / 2**53

    def gauss(self) -> float:
        u1 = max(self.random(), 1e-12)
        return math.sqrt(-2.0 * math.log(u1)) * math.cos(2 * math.pi * self.random())

    def poisson(self, lam: float) -> int:
        if lam <= 0:
            return 0
        if lam > 30:  # normal approximation; exact enough and O(1)
            return max(0, round(lam + math.sqrt(lam) * self.gauss()))
        # inversion: walk the CDF with one uniform draw
        u, k = self.random(), 0
        p = cdf = math.exp(-lam)
        while u > cdf and k < 200:
            k += 1
            p *= lam / k
            cdf += p
        return k


# --------------------------------------------------------------------------- time


def align(t: datetime, period_s: int = DEFAULT_PERIOD_S) -> datetime:
    """``t`` rounded down to an interval start (UTC, multiple of ``period_s`` since the epoch)."""
    if t.tzinfo is None:
        raise ValueError("time must carry a time zone")
    secs = math.floor((t - _EPOCH).total_seconds())
    return _EPOCH + timedelta(seconds=secs - secs % period_s)


def intervals(
    start: datetime, end: datetime, period_s: int = DEFAULT_PERIOD_S
) -> Iterator[datetime]:
    """Aligned interval starts in [start, end)."""
    t = align(start, period_s)
    if t < start:
        t += timedelta(seconds=period_s)
    step = timedelta(seconds=period_s)
    while t < end:
        yield t
        t += step


def _gauss(h: float, centre: float, width: float) -> float:
    return math.exp(-0.5 * ((h - centre) / width) ** 2)


def _logistic(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def day_profile(hour: float, weekend: bool) -> tuple[float, float, float]:
    """(base, morning-peak, evening-peak) shapes at local ``hour``, each about 0..1."""
    plateau = _logistic((hour - 5.6) / 0.45) * _logistic((22.8 - hour) / 0.7)
    if weekend:
        return 0.06 + 0.47 * plateau, 0.3 * _gauss(hour, 10.5, 2.0), 0.45 * _gauss(hour, 18.5, 1.4)
    return 0.06 + 0.52 * plateau, _gauss(hour, 7.9, 0.75), _gauss(hour, 18.3, 0.95)


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class SegmentTraits:
    """Seeded, fixed character of a segment: how busy it is and at which peak."""

    base: float  # scales the all-day demand
    am: float  # morning-peak demand added at the peak (ratio of capacity)
    pm: float  # evening-peak demand
    key: int


@dataclass(frozen=True)
class SegmentState:
    """The traffic state of a segment in one interval (per lane)."""

    severity: float  # 0 = free flow, up to 0.8 = near standstill
    flow_vph: float  # per lane
    speed_kph: float
    density: float  # veh/km/lane

    @property
    def congested(self) -> bool:
        return self.severity > 0


def _directions(network: Network) -> list[list[Segment]]:
    """Segments of each corridor direction in driving order (upstream first)."""
    groups: dict[tuple[str, str], list[Segment]] = {}
    for seg in network.segments:
        groups.setdefault((seg.corridor_id, seg.direction), []).append(seg)
    return [sorted(g, key=lambda s: s.seq) for g in groups.values()]


def _traits(network: Network, seed: int) -> dict[str, SegmentTraits]:
    """Bottlenecks (lane drops) carry a peak above capacity: the first-listed direction of a
    corridor in the morning (inbound), the other in the evening (tidal flow), expressways in both.
    A seeded 6% of the other segments is also overloaded at one peak."""
    first_dir: dict[str, str] = {}
    for seg in network.segments:
        first_dir.setdefault(seg.corridor_id, seg.direction)
    out: dict[str, SegmentTraits] = {}
    for chain in _directions(network):
        for i, seg in enumerate(chain):
            rng = Rng(stable_key(seed, "segment", seg.segment_id))
            base = 0.9 + 0.15 * rng.random()
            am = 0.12 + 0.2 * rng.random()
            pm = 0.12 + 0.2 * rng.random()
            inbound = first_dir[seg.corridor_id] == seg.direction
            lane_drop = i > 0 and seg.lanes < chain[i - 1].lanes
            hot = rng.random()
            if lane_drop or hot < 0.06:
                peak = 0.66 + 0.12 * rng.random()
                if seg.road_class == "expressway":
                    am, pm = (peak, 0.85 * peak) if inbound else (0.85 * peak, peak)
                elif (inbound and lane_drop) or (not lane_drop and hot < 0.03):
                    am = peak
                else:
                    pm = peak
            out[seg.segment_id] = SegmentTraits(
                base, am, pm, stable_key(seed, "noise", seg.segment_id)
            )
    return out


class TrafficModel:
    """Observations of every station of ``network`` for any interval, reproducibly.

    >>> model = TrafficModel(load_network(), seed=1)
    >>> obs = model.observations(align(datetime.now(UTC)))
    """

    def __init__(
        self,
        network: Network,
        *,
        seed: int = 0,
        scenario: Scenario | None = None,
        period_s: int = DEFAULT_PERIOD_S,
    ) -> None:
        if not 1 <= period_s <= 3600:
            raise ValueError("period_s must be 1..3600")
        self.network = network
        self.seed = seed
        self.scenario = (scenario or Scenario()).check(network)
        self.period_s = period_s
        self._tz = network.tz
        self._chains = _directions(network)
        self._downstream: dict[str, Segment | None] = {}
        for chain in self._chains:
            for i, seg in enumerate(chain):
                self._downstream[seg.segment_id] = chain[i + 1] if i + 1 < len(chain) else None
        self._traits = _traits(network, seed)
        self._corridor_key = {
            c.corridor_id: stable_key(seed, "corridor", c.corridor_id) for c in network.corridors
        }
        self._station_key = {
            s.station_id: stable_key(seed, "station", s.station_id) for s in network.stations
        }
        self._segment_of = {s.station_id: network.segment(s.segment_id) for s in network.stations}
        self._own = lru_cache(maxsize=8192)(self._own_severity)
        self._states_cache: tuple[datetime, dict[str, SegmentState]] | None = None

    # ------------------------------------------------------------------ demand and queues

    def demand_ratio(self, segment: Segment, t: datetime) -> float:
        """Demand over capacity of ``segment`` in the interval starting at ``t``."""
        local = t.astimezone(self._tz)
        hour = local.hour + local.minute / 60 + local.second / 3600
        base, am, pm = day_profile(hour, local.weekday() >= 5)
        tr = self._traits[segment.segment_id]
        secs = (t - _EPOCH).total_seconds()
        noise = 0.07 * smooth_noise(self._corridor_key[segment.corridor_id], secs / 1800) + 0.05 * (
            smooth_noise(tr.key, secs / 600)
        )
        return max(0.0, (tr.base * base + tr.am * am + tr.pm * pm) * (1 + noise))

    def _own_severity(self, segment_id: str, t: datetime) -> float:
        seg = self.network.segment(segment_id)
        excess = EXCESS_GAIN * (self.demand_ratio(seg, t) - 1.0)
        return min(MAX_SEVERITY, max(0.0, excess, self.scenario.incident_level(segment_id, t)))

    def severity(self, segment_id: str, t: datetime) -> float:
        """Own congestion or the downstream queue spilling back, whichever is worse."""
        own = self._own(segment_id, t)
        down = self._downstream[segment_id]
        if down is None:
            return own
        back = SPILLBACK * self.severity(down.segment_id, t - timedelta(seconds=SPILLBACK_LAG_S))
        return max(own, back - SPILLBACK_FADE)  # the queue tail fades out, without a step

    def segment_states(self, t: datetime) -> dict[str, SegmentState]:
        """Every segment's state at interval ``t``, upstream to downstream so that a segment
        carries no more than arrives from upstream plus side streets (a queue starves the road
        below it)."""
        if self._states_cache is not None and self._states_cache[0] == t:
            return self._states_cache[1]
        out: dict[str, SegmentState] = {}
        for chain in self._chains:
            inflow: float | None = None  # veh/h leaving the segment upstream, all lanes
            for seg in chain:
                cap = seg.capacity_vph_lane
                vc = SPEED_AT_CAPACITY * seg.free_flow_kph
                sev = self.severity(seg.segment_id, t)
                x = min(self.demand_ratio(seg, t), 0.999)
                if inflow is not None:  # no more than arrives from upstream, plus side streets
                    x = min(x, inflow / (cap * seg.lanes) + SIDE_INFLOW)
                q = x * cap
                v = seg.free_flow_kph * (1 - (1 - SPEED_AT_CAPACITY) * x**3)
                inflow = q * seg.lanes
                if sev > 0:
                    qc = cap * (1 - sev)
                    kc = cap / vc
                    vq = qc / (kc + sev * (JAM_DENSITY - kc))
                    w = min(1.0, sev / BLEND_SEVERITY)  # no jump where a queue tail arrives
                    q, v = w * qc + (1 - w) * q, w * vq + (1 - w) * v
                    inflow = q * seg.lanes
                out[seg.segment_id] = SegmentState(sev, q, v, q / v)
        self._states_cache = (t, out)
        return out

    # ------------------------------------------------------------------ observations

    def _check_t(self, t: datetime) -> None:
        if align(t, self.period_s) != t:
            raise ValueError(f"{t.isoformat()} is not an interval start of period {self.period_s}s")

    def normal_observation(self, station: Station, t: datetime) -> Observation:
        """What a healthy detector at ``station`` reports for interval ``t`` (no faults)."""
        state = self.segment_states(t)[station.segment_id]
        tick = int((t - _EPOCH).total_seconds()) // self.period_s
        rng = Rng(_mix(self._station_key[station.station_id] ^ (tick * 0x9E3779B1)))
        secs = (t - _EPOCH).total_seconds()
        # a slowly varying local offset: the two stations of a segment do not read identically
        local = 1 + 0.04 * smooth_noise(self._station_key[station.station_id], secs / 900)
        g = station.vehicle_length_m
        n = station.lanes
        lanes = []
        for lane in range(1, n + 1):
            pos = (lane - 1) / (n - 1) if n > 1 else 0.5  # 0 = fast lane, 1 = slow lane
            share = 1.12 - 0.24 * pos  # the fast lane carries a little more
            speed_f = 1 + (0.07 - 0.14 * pos) * (1 - state.severity / MAX_SEVERITY)
            q_lane = state.flow_vph * share * local
            v_true = max(2.0, state.speed_kph * speed_f / local**0.5)
            count = rng.poisson(q_lane * self.period_s / 3600)
            v_meas = round(max(1.0, v_true * (1 + 0.03 * rng.gauss())), 1)
            if count == 0:
                # nothing crossed the loop: no speed; the loop is covered only in a standstill
                occ = min(1.0, state.density * g / 1000) if state.severity > 0.5 else 0.0
                speed = None
            else:
                flow = count * 3600 / self.period_s
                dual = station.detector != "single-loop"
                occ = min(1.0, flow * g / ((v_meas if dual else v_true) * 1000))
                speed = v_meas if dual else None
            # built without re-validation: every value is in range by construction, and the
            # tests parse what is published through the contract's own parser
            lanes.append(
                LaneReading.model_construct(
                    lane=lane, count=count, occupancy=round(occ, 4), speed_kph=speed
                )
            )
        return Observation.model_construct(
            v=1,
            station_id=station.station_id,
            interval_start=t,
            period_s=self.period_s,
            lanes=lanes,
            status="ok",
        )

    def observation(self, station: Station, t: datetime) -> Observation | None:
        """What ``station`` publishes for interval ``t``: None while it is silent."""
        self._check_t(t)
        fault = self.scenario.fault_at(station.station_id, t)
        if fault is None:
            return self.normal_observation(station, t)
        return self._faulty(station, t, fault)

    def observations(self, t: datetime) -> list[Observation]:
        """One observation per publishing station for interval ``t`` (silent ones left out)."""
        self._check_t(t)
        out = []
        for st in self.network.stations:
            obs = self.observation(st, t)
            if obs is not None:
                out.append(obs)
        return out

    def _faulty(self, station: Station, t: datetime, fault: SensorFault) -> Observation | None:
        if fault.kind == "silent":
            return None
        if fault.kind == "stuck":
            first = align(fault.start, self.period_s)
            if first < fault.start:
                first += timedelta(seconds=self.period_s)
            frozen = self.normal_observation(station, first)
            return frozen.model_copy(update={"interval_start": t})
        base = self.normal_observation(station, t)
        if fault.kind == "zero":
            lanes = [LaneReading(lane=r.lane, count=0, occupancy=0.0) for r in base.lanes]
            return base.model_copy(update={"lanes": lanes})
        if fault.kind == "failed":
            lanes = [LaneReading(lane=r.lane) for r in base.lanes]
            return base.model_copy(update={"lanes": lanes, "status": "fault"})
        # chatter: the loop counts pulses that are not vehicles
        tick = int((t - _EPOCH).total_seconds()) // self.period_s
        rng = Rng(_mix(self._station_key[station.station_id] ^ tick ^ 0xC4A7))
        per_lane_max = int(5000 * self.period_s / 3600)  # 5000 veh/h/lane: impossible
        lanes = [
            r.model_copy(
                update={
                    "count": min(
                        10_000, (r.count or 0) * 3 + per_lane_max + int(rng.random() * per_lane_max)
                    )
                }
            )
            for r in base.lanes
        ]
        return base.model_copy(update={"lanes": lanes, "status": "degraded"})

    def station_speed(self, obs: Observation) -> float | None:
        """Flow-weighted harmonic mean speed of an observation (GUIDE section 5), for checks."""
        pairs = [(r.count, r.speed_kph) for r in obs.lanes if r.count and r.speed_kph]
        if not pairs:
            return None
        return sum(c for c, _ in pairs) / sum(c / v for c, v in pairs)
