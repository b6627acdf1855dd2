"""Detector health diagnostics as pure functions: no database, no clock, no MQTT.

After the PeMS and IRIS diagnostics: a loop detector that reports *something* may still be lying,
and a lying detector raises false congestion (or hides real congestion). Each rule looks at one
station's recent intervals (a window of data time, 15 minutes by default) and names what is wrong:

- ``stuck``        the same non-zero values, lane by lane, for ``stuck_intervals`` intervals in a
                   row (a frozen controller repeating its last message);
- ``reported-fault`` the controller itself flags most intervals ``degraded`` or ``fault``;
- ``no-values``    most intervals arrive with a lane's values null (a failed loop);
- ``zero-flow-with-occupancy`` no vehicles counted while the loop is occupied;
- ``chatter``      lane flow above what a lane can carry (a loop counting noise);
- ``locked-on``    occupancy near 1 in 80% of the window (a loop stuck "on"), on one lane while
                   another is clear, or on every lane while the neighbours flow (a standing
                   queue covers every lane and spills back upstream: a jam, not a fault);
- ``mismatch``     flow and occupancy disagree (many vehicles but an empty loop: an implied
                   speed far beyond any car's);
- ``implausible-speed`` measured speeds no road vehicle drives, or crawling speeds at full flow;
- ``no-flow``      counts and occupancy zero for ``zero_min_intervals`` in a row while the
                   stations either side carry enough traffic that ~20 vehicles should have
                   crossed (a dead loop that still sends zeros, at night too); without
                   neighbours' data, zeros all window while the network is busy;
- ``intermittent`` fewer than ``min_pct_observed`` of the expected intervals arrived.

Persistence lives in the window itself (a diagnosis needs a share of the window, or a run of
intervals), so one odd interval is never a fault. Faults no traffic produces (controller flags,
null lanes, chatter) also hold after a run of ``run_intervals`` (5 min), so the evaluator, which
diagnoses every minute, names them within minutes of onset. :func:`detector_step` is the alert's
state machine: raise on a diagnosis, clear after ``clear_k`` consecutive clean evaluations.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from its.network import Network

DETECTOR_FAULT = "detector-fault"

# Worst (most certain, most misleading) first: the alert names the first that holds.
KINDS = (
    "stuck",
    "reported-fault",
    "no-values",
    "locked-on",
    "chatter",
    "zero-flow-with-occupancy",
    "mismatch",
    "implausible-speed",
    "no-flow",
    "intermittent",
)


@dataclass(frozen=True)
class LaneSample:
    """One lane in one interval, as stored (None where the detector sent null)."""

    count: int | None
    occupancy: float | None
    speed_kph: float | None


@dataclass(frozen=True)
class StationSample:
    """One interval of one station: its lanes and the controller's status."""

    period_s: int
    lanes: tuple[LaneSample, ...]
    status: str = "ok"


@dataclass(frozen=True)
class HealthParams:
    """Thresholds of the diagnostics (per lane flows in veh/h)."""

    window_s: int = 900
    stuck_intervals: int = 10
    share: float = 0.5  # a diagnosis must hold in this share of the observed intervals
    max_lane_vph: float = 3000.0  # above lane capacity (~2,200) with margin: chatter
    locked_on_occupancy: float = 0.9
    locked_on_share: float = 0.8  # a standing queue also covers a loop, but not for 12 of 15 min
    locked_on_other_occ: float = 0.5  # ... and every lane: one lane on, another below this
    locked_on_neighbour_occ: float = 0.3  # a station-wide "on" with the neighbours below this
    zero_flow_occupancy: float = 0.1
    mismatch_min_vph: float = 600.0
    mismatch_max_implied_kph: float = 250.0
    vehicle_length_m: float = 6.7
    max_speed_kph: float = 200.0
    crawl_kph: float = 5.0
    crawl_min_vph: float = 1200.0
    no_flow_network_vph: float = 300.0
    min_pct_observed: float = 50.0
    # Faults no traffic can produce (controller flags, null lanes, chatter) are also diagnosed
    # when they hold in each of the last ``run_intervals`` intervals: 5 min, not half of 15.
    run_intervals: int = 10
    # ``no-flow``: a run of all-zero intervals (counts and occupancy) this long at least ...
    zero_min_intervals: int = 10
    # ... over which the neighbours' lane flow says at least this many vehicles should have
    # crossed the station (Poisson: P(0 | 20) = 2e-9, so a quiet night is not a fault).
    zero_expected_vehicles: float = 20.0


@dataclass(frozen=True)
class Diagnosis:
    kind: str
    evidence: str


def _lane_vph(lane: LaneSample, period_s: int) -> float | None:
    return None if lane.count is None else lane.count * 3600.0 / period_s


def _share(samples: Sequence[StationSample], test: Any) -> float:  # noqa: ANN401
    """Share of the intervals for which ``test(sample)`` holds."""
    if not samples:
        return 0.0
    return sum(1 for s in samples if test(s)) / len(samples)


def _stuck_run(samples: Sequence[StationSample]) -> int:
    """Longest run of consecutive intervals repeating identical, not all-zero, lane values."""
    best = run = 0
    prev: tuple[LaneSample, ...] | None = None
    for s in samples:
        nonzero = any((ln.count or 0) > 0 or (ln.occupancy or 0) > 0 for ln in s.lanes)
        if nonzero and s.lanes == prev:
            run += 1
        else:
            run = 1 if nonzero else 0
        prev = s.lanes
        best = max(best, run)
    return best


def _trailing_run(samples: Sequence[StationSample], test: Any) -> int:  # noqa: ANN401
    """How many of the newest intervals in a row satisfy ``test``."""
    run = 0
    for s in reversed(samples):
        if not test(s):
            break
        run += 1
    return run


def diagnose(
    samples: Sequence[StationSample],
    *,
    expected_intervals: int | None = None,
    network_lane_vph: float | None = None,
    neighbour_lane_vph: float | None = None,
    neighbour_occupancy: float | None = None,
    params: HealthParams = HealthParams(),  # noqa: B008 - frozen, so a safe default
) -> list[Diagnosis]:
    """Every diagnosis that holds for one station's window, worst first; [] when healthy.

    ``samples`` are the station's intervals in time order; ``expected_intervals`` how many the
    window should hold (for ``intermittent``); ``network_lane_vph`` the network's typical lane
    flow over the same window; ``neighbour_lane_vph`` the lane flow of the station's neighbours
    in the direction of travel (the lower of upstream and downstream), which ``no-flow`` prefers:
    a loop reading zero while the stations either side carry traffic is dead, at night too,
    while zeros on a quiet road are normal; ``neighbour_occupancy`` the higher of the
    neighbours' mean occupancy (``locked-on``: every lane covered with a queue around is a jam). No samples at all is "no data" (the offline rule's
    business), not a detector fault.
    """
    if not samples:
        return []
    found: dict[str, str] = {}
    p = params

    run = _stuck_run(samples)
    if run >= p.stuck_intervals:
        found["stuck"] = f"identical non-zero values for {run} intervals in a row"

    def flagged(s: StationSample) -> bool:
        return s.status != "ok"

    bad_status = _share(samples, flagged)
    if bad_status >= p.share:
        found["reported-fault"] = f"controller flags {bad_status:.0%} of intervals"
    elif (run := _trailing_run(samples, flagged)) >= p.run_intervals:
        found["reported-fault"] = f"controller flags the last {run} intervals"

    def null_lane(s: StationSample) -> bool:
        return any(ln.count is None and ln.occupancy is None for ln in s.lanes)

    null_share = _share(samples, null_lane)
    if null_share >= p.share:
        found["no-values"] = f"a lane's values null in {null_share:.0%} of intervals"
    elif (run := _trailing_run(samples, null_lane)) >= p.run_intervals:
        found["no-values"] = f"a lane's values null in the last {run} intervals"

    # A queue covers every lane of the carriageway and spills back to the station upstream; a
    # loop stuck "on" is one loop. So: one lane near 1 while another is clear, or every lane
    # near 1 while the neighbours either side flow (their occupancy low).
    queue_around = neighbour_occupancy is None or neighbour_occupancy >= p.locked_on_neighbour_occ

    def locked(s: StationSample) -> bool:
        occ = [ln.occupancy for ln in s.lanes if ln.occupancy is not None]
        if not occ or max(occ) < p.locked_on_occupancy:
            return False
        return min(occ) < p.locked_on_other_occ or not queue_around

    if (sh := _share(samples, locked)) >= p.locked_on_share:
        found["locked-on"] = f"occupancy >= {p.locked_on_occupancy:.0%} in {sh:.0%} of intervals"

    def chatter(s: StationSample) -> bool:
        return any((_lane_vph(ln, s.period_s) or 0) > p.max_lane_vph for ln in s.lanes)

    if (sh := _share(samples, chatter)) >= p.share:
        found["chatter"] = (
            f"lane flow above {p.max_lane_vph:.0f} veh/h (more than a lane carries) "
            f"in {sh:.0%} of intervals"
        )
    elif (run := _trailing_run(samples, chatter)) >= p.run_intervals:
        found["chatter"] = (
            f"lane flow above {p.max_lane_vph:.0f} veh/h (more than a lane carries) "
            f"in the last {run} intervals"
        )

    def zero_occ(s: StationSample) -> bool:
        return any(ln.count == 0 and (ln.occupancy or 0) >= p.zero_flow_occupancy for ln in s.lanes)

    if (sh := _share(samples, zero_occ)) >= p.share:
        found["zero-flow-with-occupancy"] = (
            f"no vehicles counted with occupancy >= {p.zero_flow_occupancy:.0%} "
            f"in {sh:.0%} of intervals"
        )

    def mismatch(s: StationSample) -> bool:
        for ln in s.lanes:
            q = _lane_vph(ln, s.period_s)
            if q is None or ln.occupancy is None or q < p.mismatch_min_vph:
                continue
            if ln.occupancy <= 0:
                return True
            implied = q * p.vehicle_length_m / (ln.occupancy * 1000.0)
            if implied > p.mismatch_max_implied_kph:
                return True
        return False

    if (sh := _share(samples, mismatch)) >= p.share:
        found["mismatch"] = (
            f"flow >= {p.mismatch_min_vph:.0f} veh/h/lane with a near-empty loop "
            f"(implied speed > {p.mismatch_max_implied_kph:.0f} km/h) in {sh:.0%} of intervals"
        )

    def bad_speed(s: StationSample) -> bool:
        for ln in s.lanes:
            if ln.speed_kph is None:
                continue
            if ln.speed_kph > p.max_speed_kph:
                return True
            q = _lane_vph(ln, s.period_s) or 0
            if ln.speed_kph < p.crawl_kph and q >= p.crawl_min_vph:
                return True
        return False

    if (sh := _share(samples, bad_speed)) >= p.share:
        found["implausible-speed"] = (
            f"speed above {p.max_speed_kph:.0f} km/h, or below {p.crawl_kph:.0f} km/h at "
            f"full flow, in {sh:.0%} of intervals"
        )

    def zeros(s: StationSample) -> bool:
        return all((ln.count == 0 and (ln.occupancy or 0) == 0) for ln in s.lanes)

    zero_run = _trailing_run(samples, zeros)
    if zero_run >= p.zero_min_intervals:
        last = samples[-1]
        run_h = zero_run * last.period_s / 3600.0
        lanes = len(last.lanes)
        if neighbour_lane_vph is not None:
            expected = neighbour_lane_vph * lanes * run_h
            if expected >= p.zero_expected_vehicles:
                found["no-flow"] = (
                    f"no vehicles for {zero_run} intervals while its neighbours carry "
                    f"{neighbour_lane_vph:.0f} veh/h/lane (~{expected:.0f} vehicles expected)"
                )
        elif (
            network_lane_vph is not None
            and network_lane_vph >= p.no_flow_network_vph
            and zero_run == len(samples)
        ):
            found["no-flow"] = (
                f"no vehicles all window while the network carries "
                f"{network_lane_vph:.0f} veh/h/lane"
            )

    if expected_intervals:
        pct = 100.0 * min(len(samples), expected_intervals) / expected_intervals
        if pct < p.min_pct_observed:
            found["intermittent"] = f"{pct:.0f}% of expected intervals observed"

    return [Diagnosis(k, found[k]) for k in KINDS if k in found]


# --------------------------------------------------------------------------- the alert's state


Action = Literal["raise", "repeat", "clear", "none"]
CLEAR_K = 10  # clean one-minute evaluations in a row before the alert clears


@dataclass(frozen=True)
class DetectorState:
    """What the detector-fault rule remembers about one station."""

    active: bool = False
    kind: str | None = None
    clean: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"active": self.active, "kind": self.kind, "clean": self.clean}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> DetectorState:
        if not data:
            return cls()
        try:
            return cls(bool(data.get("active")), data.get("kind"), max(0, int(data["clean"])))
        except (KeyError, TypeError, ValueError):
            return cls()


def detector_step(
    state: DetectorState, diagnoses: Sequence[Diagnosis], *, clear_k: int = CLEAR_K
) -> tuple[DetectorState, Action]:
    """Advance one station's detector-fault rule by one evaluation (one minute of data): raise
    on a diagnosis, clear after ``clear_k`` clean evaluations in a row (10 min: a fault that
    comes and goes is one alert, not a flapping series)."""
    if diagnoses:
        kind = diagnoses[0].kind
        return DetectorState(True, kind, 0), ("repeat" if state.active else "raise")
    if not state.active:
        return DetectorState(), "none"
    clean = state.clean + 1
    if clean >= clear_k:
        return DetectorState(), "clear"
    return DetectorState(True, state.kind, clean), "none"


def detector_message(station_id: str, diagnoses: Sequence[Diagnosis]) -> str:
    first = diagnoses[0]
    more = f" (+{len(diagnoses) - 1} more)" if len(diagnoses) > 1 else ""
    return f"Detector fault at {station_id}: {first.kind}, {first.evidence}{more}"


def pct_good(faulty: int, reporting: int) -> float | None:
    """Network-wide % good detectors among those reporting; None when none report."""
    if reporting <= 0:
        return None
    return round(100.0 * (reporting - faulty) / reporting, 1)


# --------------------------------------------------------------------------- neighbours


def station_neighbours(network: Network) -> dict[str, tuple[str, ...]]:
    """Each station's neighbours in the direction of travel: the stations just upstream and
    just downstream on its corridor direction (by segment ``seq``, then position). The
    ``no-flow`` diagnosis compares a station reading zero with them."""
    out: dict[str, tuple[str, ...]] = {}
    for corridor_id, direction in sorted({(s.corridor_id, s.direction) for s in network.segments}):
        ids = [st.station_id for st in network.ordered_stations(corridor_id, direction)]
        for i, sid in enumerate(ids):
            out[sid] = tuple(ids[j] for j in (i - 1, i + 1) if 0 <= j < len(ids))
    return out


def mean_lane_vph(samples: Iterable[StationSample]) -> float | None:
    """Mean lane flow (veh/h) over the intervals given; None when no lane counted."""
    flows = [
        ln.count * 3600.0 / s.period_s for s in samples for ln in s.lanes if ln.count is not None
    ]
    return statistics.fmean(flows) if flows else None


def neighbour_occupancy(
    neighbours: Sequence[str],
    recent_occ: Mapping[str, float | None],
    exclude: Set[str],
) -> float | None:
    """The higher mean occupancy of a station's neighbours with data (faulty ones left out):
    a queue at either side makes a covered loop plausible."""
    occs = [o for n in neighbours if n not in exclude and (o := recent_occ.get(n)) is not None]
    return max(occs) if occs else None


def mean_occupancy(samples: Iterable[StationSample]) -> float | None:
    """Mean lane occupancy over the intervals given; None when no lane reported one."""
    occ = [ln.occupancy for s in samples for ln in s.lanes if ln.occupancy is not None]
    return statistics.fmean(occ) if occ else None


def neighbour_flow(
    neighbours: Sequence[str],
    recent_vph: Mapping[str, float | None],
    exclude: Set[str],
) -> float | None:
    """The lower lane flow of a station's neighbours with data (faulty ones left out): the
    reference ``no-flow`` needs. The lower one, so that a closure, which empties the road
    downstream while the queue upstream barely moves, is never read as a dead loop."""
    flows = [v for n in neighbours if n not in exclude and (v := recent_vph.get(n)) is not None]
    return min(flows) if flows else None
