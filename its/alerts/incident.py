"""Incident detection on adjacent stations, a pure rule: California #8-style, plus a speed variant.

A lane-blocking incident leaves a signature between the detector station just upstream of it and
the one just downstream (next in the direction of travel, the network's ``seq``): upstream the
queue raises occupancy and drops speed within a minute or two, downstream the road is starved
(occupancy falls, speed stays high). Recurrent congestion at a bottleneck looks the same in
space, so what tells them apart is time: an incident starts *suddenly*.

Per pair and per evaluation minute ``t`` (1-min occupancies, fractions 0..1; Payne and Tignor's
California algorithms, occupancy comparisons):

- ``OCCDF  = OCC_up(t) - OCC_down(t)``                        spatial difference
- ``OCCRDF = OCCDF / OCC_up(t)``                              relative spatial difference
- ``DOCCTD = (OCC_down(t-L) - OCC_down(t)) / OCC_down(t-L)``  downstream fell over ``L`` min
- ``UOCCTD = (OCC_up(t) - OCC_up(t-L)) / OCC_up(t)``          upstream rose over ``L`` min
- ``DOCC   = OCC_down(t)``                                    downstream not itself queued

States (as in #8, with the compression-wave check):

1. **incident-free -> tentative** when OCCDF >= ``occdf`` and OCCRDF >= ``occrdf`` and DOCC <
   ``docc_max``, and the change is sudden: DOCCTD >= ``docctd`` (downstream emptied - the
   classic test - while upstream did not improve: a queue discharging is not an incident), or
   UOCCTD >= ``onset_rise`` (upstream jumped; a modest incident barely starves a busy road
   downstream) with, where speed is measured, the upstream speed down by ``speed_drop`` too
   (1-min occupancies are noisy; a standing queue's speed is steady). A recurrent jam builds
   over many minutes, so its spatial test holds without a sudden change.
2. **tentative -> incident** (raise) when the spatial test (OCCDF, OCCRDF, DOCC) still holds for
   ``persistence`` more minutes; otherwise back to incident-free. When the occupancy and the
   speed variant both see the sudden change in the same minute, they confirm each other and the
   incident is raised at once.
3. **incident -> incident-free** (clear) after ``clear_k`` consecutive minutes without it.
4. **compression wave**: downstream occupancy jumping up (DOCC >= ``cw_min_occ`` and it rose by
   ``cw_rise`` relative over ``L`` min) is a stop-and-go wave travelling upstream, which will make
   the pair look like an incident as it passes: no tentative state is entered at this pair for
   ``cw_suppress_min`` minutes.

Speed variant (both stations measure speed): tentative when the upstream speed is below
``speed_below`` x its free flow, at least ``speed_diff_kph`` slower than downstream, dropped by
``speed_drop`` (relative) over ``L`` min, while downstream keeps ``speed_down_min`` x its free
flow; its persistence test is the first two conditions. Either variant's evidence counts.

Thresholds differ per road class (expressways carry more, arterials stop at signals):
:data:`INCIDENT_PRESETS`, overridable per class (``ITS_ALERT_INCIDENT``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

INCIDENT = "incident"

Action = Literal["raise", "repeat", "clear", "none"]


@dataclass(frozen=True)
class IncidentParams:
    """Thresholds of the incident rule for one road class (occupancies are fractions)."""

    occdf: float = 0.12
    occrdf: float = 0.45
    docctd: float = 0.5
    onset_rise: float = 0.4
    docc_max: float = 0.25
    lag_min: int = 2
    persistence: int = 1
    clear_k: int = 3
    cw_rise: float = 0.5
    cw_min_occ: float = 0.2
    cw_suppress_min: int = 5
    speed_below: float = 0.5
    speed_diff_kph: float = 20.0
    speed_drop: float = 0.35
    speed_down_min: float = 0.6
    max_gap_km: float = 5.0

    def __post_init__(self) -> None:
        for name in ("occdf", "occrdf", "docctd", "onset_rise", "docc_max", "cw_min_occ"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"incident {name} must be in (0, 1], got {getattr(self, name)}")
        for name in ("speed_below", "speed_drop", "speed_down_min", "cw_rise"):
            if not 0 < getattr(self, name) <= 2:
                raise ValueError(f"incident {name} must be in (0, 2], got {getattr(self, name)}")
        for name in ("lag_min", "persistence", "clear_k", "cw_suppress_min"):
            if not 0 <= getattr(self, name) <= 60:
                raise ValueError(f"incident {name} must be 0..60 minutes")
        if self.lag_min < 1 or self.clear_k < 1:
            raise ValueError("incident lag_min and clear_k must be at least 1")
        if not 0 < self.speed_diff_kph <= 200 or not 0 < self.max_gap_km <= 50:
            raise ValueError("incident speed_diff_kph must be in (0, 200], max_gap_km in (0, 50]")


#: Defaults per road class. Expressways: higher occupancy differences before an alarm (their
#: loops read higher occupancies in dense free flow) and a larger speed difference; collectors:
#: slower roads, smaller speed differences.
INCIDENT_PRESETS: dict[str, IncidentParams] = {
    "expressway": IncidentParams(occdf=0.15, occrdf=0.5, docc_max=0.25, speed_diff_kph=30.0),
    "arterial": IncidentParams(),
    "collector": IncidentParams(occdf=0.12, occrdf=0.45, speed_diff_kph=15.0),
}


def incident_params(
    overrides: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, IncidentParams]:
    """The presets with ``overrides`` ({road_class: {threshold: value}}) applied; ValueError
    names an unknown class or threshold."""
    out = dict(INCIDENT_PRESETS)
    known = {f.name for f in fields(IncidentParams)}
    for road_class, values in (overrides or {}).items():
        if road_class not in out:
            raise ValueError(
                f"incident thresholds: unknown road class {road_class!r} "
                f"(known: {', '.join(sorted(out))})"
            )
        unknown = set(values) - known
        if unknown:
            raise ValueError(
                f"incident thresholds for {road_class}: unknown {', '.join(sorted(unknown))} "
                f"(known: {', '.join(sorted(known))})"
            )
        out[road_class] = replace(out[road_class], **dict(values))
    return out


@dataclass(frozen=True)
class PairObservation:
    """One minute of an adjacent station pair: now and ``lag_min`` minutes earlier.

    Occupancies are fractions, speeds km/h; None is "no data" (a single loop has no speed)."""

    occ_up: float | None
    occ_down: float | None
    occ_up_before: float | None = None
    occ_down_before: float | None = None
    speed_up: float | None = None
    speed_down: float | None = None
    speed_up_before: float | None = None
    speed_down_before: float | None = None
    free_flow_up: float = 60.0
    free_flow_down: float = 60.0


@dataclass(frozen=True)
class IncidentState:
    """The pair's state: ``free``, ``tentative`` or ``incident``; counters in minutes."""

    status: str = "free"
    confirm: int = 0  # minutes the spatial test has held since the tentative minute
    quiet: int = 0  # consecutive minutes without evidence while an incident is active
    suppress: int = 0  # minutes of compression-wave suppression left
    variant: str | None = None  # "occupancy" | "speed": what made it tentative

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> IncidentState:
        """Rebuild a state; anything unreadable starts afresh rather than stopping the evaluator."""
        if not data:
            return cls()
        try:
            status = str(data.get("status", "free"))
            return cls(
                status=status if status in ("free", "tentative", "incident") else "free",
                confirm=max(0, int(data.get("confirm", 0))),
                quiet=max(0, int(data.get("quiet", 0))),
                suppress=max(0, int(data.get("suppress", 0))),
                variant=data.get("variant"),
            )
        except (TypeError, ValueError):
            return cls()


@dataclass(frozen=True)
class IncidentDecision:
    action: Action
    evidence: dict[str, Any] = field(default_factory=dict)


def _ratio(num: float, den: float | None) -> float | None:
    return num / den if den else None


def measures(obs: PairObservation) -> dict[str, float | None]:
    """The California measures (and the speed variant's) of one observation, None when the
    data to compute one is missing."""
    occdf = occrdf = docctd = uocctd = cw = None
    if obs.occ_up is not None and obs.occ_down is not None:
        occdf = obs.occ_up - obs.occ_down
        occrdf = _ratio(occdf, obs.occ_up)
    if obs.occ_down is not None and obs.occ_down_before:
        docctd = (obs.occ_down_before - obs.occ_down) / obs.occ_down_before
        cw = (obs.occ_down - obs.occ_down_before) / obs.occ_down_before
    if obs.occ_up and obs.occ_up_before is not None:
        uocctd = (obs.occ_up - obs.occ_up_before) / obs.occ_up
    drop = None
    if obs.speed_up is not None and obs.speed_up_before:
        drop = (obs.speed_up_before - obs.speed_up) / obs.speed_up_before
    return {
        "occdf": occdf,
        "occrdf": occrdf,
        "docctd": docctd,
        "uocctd": uocctd,
        "docc": obs.occ_down,
        "downstream_rise": cw,
        "speed_drop": drop,
    }


def _ge(value: float | None, threshold: float) -> bool:
    return value is not None and value >= threshold


def _occupancy_holds(m: Mapping[str, float | None], p: IncidentParams) -> bool:
    """The spatial test: upstream much fuller than a downstream that is not itself queued."""
    return (
        _ge(m["occdf"], p.occdf)
        and _ge(m["occrdf"], p.occrdf)
        and m["docc"] is not None
        and m["docc"] < p.docc_max
    )


def _speed_holds(obs: PairObservation, p: IncidentParams) -> bool:
    if obs.speed_up is None or obs.speed_down is None:
        return False
    return (
        obs.speed_up < p.speed_below * obs.free_flow_up
        and obs.speed_down - obs.speed_up >= p.speed_diff_kph
        and obs.speed_down >= p.speed_down_min * obs.free_flow_down
    )


def incident_step(
    state: IncidentState,
    obs: PairObservation | None,
    params: IncidentParams = IncidentParams(),  # noqa: B008 - frozen, so a safe default
) -> tuple[IncidentState, IncidentDecision]:
    """Advance one station pair by one minute. ``obs`` None is no data: nothing changes (an
    active incident is neither confirmed nor cleared by a silent or suppressed detector)."""
    if obs is None:
        return state, IncidentDecision("none")
    m = measures(obs)
    occ_now = _occupancy_holds(m, params)
    speed_now = _speed_holds(obs, params)
    holds = occ_now or speed_now
    evidence: dict[str, Any] = {
        k: None if v is None else round(v, 3) for k, v in m.items() if k != "downstream_rise"
    }
    evidence.update(
        occ_up=obs.occ_up,
        occ_down=obs.occ_down,
        speed_up_kph=None if obs.speed_up is None else round(obs.speed_up, 1),
        speed_down_kph=None if obs.speed_down is None else round(obs.speed_down, 1),
    )

    # Compression wave: downstream occupancy jumping up (a wave moving upstream) suppresses new
    # tentative incidents for a few minutes; an incident already confirmed is not cleared by it.
    suppress = max(0, state.suppress - 1)
    rise = m["downstream_rise"]
    if (
        rise is not None
        and rise >= params.cw_rise
        and obs.occ_down is not None
        and obs.occ_down >= params.cw_min_occ
    ):
        suppress = params.cw_suppress_min
        evidence["compression_wave"] = True

    if state.status == "incident":
        evidence["variant"] = state.variant
        if holds:
            return replace(state, quiet=0, suppress=suppress), IncidentDecision("repeat", evidence)
        quiet = state.quiet + 1
        if quiet >= params.clear_k:
            return IncidentState(suppress=suppress), IncidentDecision("clear", evidence)
        return replace(state, quiet=quiet, suppress=suppress), IncidentDecision("none", evidence)

    if state.status == "tentative":
        if not holds:
            return IncidentState(suppress=suppress), IncidentDecision("none", evidence)
        confirm = state.confirm + 1
        if confirm >= params.persistence:
            evidence["variant"] = state.variant
            new = IncidentState("incident", 0, 0, suppress, state.variant)
            return new, IncidentDecision("raise", evidence)
        return replace(state, confirm=confirm, suppress=suppress), IncidentDecision(
            "none", evidence
        )

    # incident-free: a sudden change with the spatial signature makes it tentative
    if suppress > 0:
        return IncidentState(suppress=suppress), IncidentDecision("none", evidence)
    drop = m["speed_drop"]
    up_worse = _ge(m["uocctd"], params.onset_rise) and (drop is None or drop >= params.speed_drop)
    down_starved = (
        _ge(m["docctd"], params.docctd) and _ge(m["uocctd"], 0.0) and (drop is None or drop >= 0.0)
    )
    sudden_occ = occ_now and (up_worse or down_starved)
    sudden_speed = speed_now and _ge(drop, params.speed_drop)
    if obs.speed_down is not None and obs.speed_down_before:
        # the speed variant needs downstream to have kept its speed (not a wave passing)
        down_drop = (obs.speed_down_before - obs.speed_down) / obs.speed_down_before
        sudden_speed = sudden_speed and down_drop < params.speed_drop
    if not (sudden_occ or sudden_speed):
        return IncidentState(), IncidentDecision("none", evidence)
    variant = (
        "occupancy+speed"
        if sudden_occ and sudden_speed
        else ("occupancy" if sudden_occ else "speed")
    )
    if params.persistence == 0 or (sudden_occ and sudden_speed):
        # Both variants seeing the same sudden change in the same minute confirm each other.
        evidence["variant"] = variant
        return IncidentState("incident", 0, 0, 0, variant), IncidentDecision("raise", evidence)
    return IncidentState("tentative", 0, 0, 0, variant), IncidentDecision("none", evidence)


def incident_message(
    segment_name: str, up_station: str, down_station: str, evidence: Mapping[str, Any]
) -> str:
    """What an operator reads: where, and what the detectors saw."""
    parts = []
    if evidence.get("occ_up") is not None and evidence.get("occ_down") is not None:
        parts.append(
            f"occupancy {evidence['occ_up']:.0%} upstream vs {evidence['occ_down']:.0%} downstream"
        )
    if evidence.get("speed_up_kph") is not None and evidence.get("speed_down_kph") is not None:
        parts.append(f"{evidence['speed_up_kph']:.0f} vs {evidence['speed_down_kph']:.0f} km/h")
    seen = f": {', '.join(parts)}" if parts else ""
    return f"Possible incident on {segment_name} between {up_station} and {down_station}{seen}"
