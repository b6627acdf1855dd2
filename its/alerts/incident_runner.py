"""Runs the incident rule (:mod:`its.alerts.incident`) over every adjacent station pair, minute by
minute, inside the evaluator's transaction.

The rule's state is kept per pair, keyed by the upstream station (each station has one next
station downstream), in ``rule_state`` (``rule = 'incident'``); the alert is per segment - the
upstream station's, where the queue stands - so an operator sees one incident per stretch of road
however many pairs on it agree. A pair with an offline or faulty station is "no data": it is
neither confirmed nor cleared (root cause before noise).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection

from its.alerts import state as rule_state
from its.alerts import store
from its.alerts.incident import (
    INCIDENT,
    IncidentParams,
    IncidentState,
    PairObservation,
    incident_message,
    incident_step,
)
from its.alerts.topology import StationPoint, adjacent_pairs
from its.contract import iso
from its.network import Network
from its.service.traffic import Interval

MINUTE = timedelta(minutes=1)


class IncidentRunner:
    """One evaluator step's incident work: load states, tick each minute, save states."""

    def __init__(self, network: Network, params: Mapping[str, IncidentParams]) -> None:
        self.network = network
        self.params = params
        widest = max(p.max_gap_km for p in params.values())
        self.pairs = [
            (up, down)
            for up, down in adjacent_pairs(network, widest)
            if down.km - up.km <= self._params(up).max_gap_km
        ]
        self.by_segment: dict[str, list[str]] = defaultdict(list)
        for up, _down in self.pairs:
            self.by_segment[up.segment_id].append(up.station_id)
        self.lookback = timedelta(minutes=max(p.lag_min for p in params.values()))
        self.states: dict[str, IncidentState] = {}
        self._stored: dict[str, dict[str, Any]] = {}
        self._active: set[str] = set()

    def _params(self, up: StationPoint) -> IncidentParams:
        return self.params.get(up.road_class) or self.params["arterial"]

    def load(self, conn: Connection, active: Mapping[tuple[str, str], Any]) -> None:
        self._stored = rule_state.load(conn, INCIDENT)
        self._active = {target for rule, target in active if rule == INCIDENT}
        self.states = {}
        for up, _down in self.pairs:
            s = IncidentState.from_json(self._stored.get(up.station_id))
            if s.status == "incident" and up.segment_id not in self._active:
                s = IncidentState()  # the alerts table is the truth if the two ever disagree
            self.states[up.station_id] = s

    def _observation(
        self,
        up: StationPoint,
        down: StationPoint,
        minute: datetime,
        minutes: Mapping[tuple[str, datetime], Interval],
    ) -> PairObservation | None:
        lag = minute - timedelta(minutes=self._params(up).lag_min)
        u, d = minutes.get((up.station_id, minute)), minutes.get((down.station_id, minute))
        if u is None or d is None:
            return None
        ub, db = minutes.get((up.station_id, lag)), minutes.get((down.station_id, lag))

        def speed(i: Interval | None, p: StationPoint) -> float | None:
            return i.speed_kph if i is not None and p.has_speed else None

        return PairObservation(
            occ_up=u.occupancy,
            occ_down=d.occupancy,
            occ_up_before=None if ub is None else ub.occupancy,
            occ_down_before=None if db is None else db.occupancy,
            speed_up=speed(u, up),
            speed_down=speed(d, down),
            speed_up_before=speed(ub, up),
            speed_down_before=speed(db, down),
            free_flow_up=up.free_flow_kph,
            free_flow_down=down.free_flow_kph,
        )

    def tick(
        self,
        conn: Connection,
        minute: datetime,
        minutes: Mapping[tuple[str, datetime], Interval],
        excluded: set[str],
        at_bucket: bool,
        changes: list[store.Change],
    ) -> None:
        """Evaluate the minute starting at ``minute``; alerts change at its end (data time)."""
        at = minute + MINUTE
        best: dict[str, tuple[StationPoint, StationPoint, str, dict[str, Any]]] = {}
        for up, down in self.pairs:
            obs = None
            if up.station_id not in excluded and down.station_id not in excluded:
                obs = self._observation(up, down, minute, minutes)
            new, decision = incident_step(self.states[up.station_id], obs, self._params(up))
            self.states[up.station_id] = new
            if decision.action in ("raise", "repeat"):
                prev = best.get(up.segment_id)
                occdf = decision.evidence.get("occdf") or 0.0
                if prev is None or occdf > (prev[3].get("occdf") or 0.0):
                    best[up.segment_id] = (up, down, decision.action, decision.evidence)
        for seg_id, members in self.by_segment.items():
            seen = best.get(seg_id)
            if seen is not None and (seg_id not in self._active or at_bucket):
                up, down, _action, evidence = seen
                segment = self.network.segment(seg_id)
                details = {
                    **evidence,
                    "upstream_station": up.station_id,
                    "downstream_station": down.station_id,
                    "downstream_segment": down.segment_id,
                    "gap_km": round(down.km - up.km, 3),
                    "minute_start": iso(minute),
                }
                changes.append(
                    store.raise_or_repeat(
                        conn,
                        INCIDENT,
                        seg_id,
                        "major",
                        incident_message(segment.name, up.station_id, down.station_id, evidence),
                        details,
                        at,
                        target_kind="segment",
                    )
                )
                self._active.add(seg_id)
            elif seg_id in self._active and not any(
                self.states[sid].status == "incident" for sid in members
            ):
                change = store.clear(conn, INCIDENT, seg_id, at, {"reason": "pair tests clear"})
                self._active.discard(seg_id)
                if change is not None:
                    changes.append(change)

    def save(self, conn: Connection, at: datetime) -> None:
        """Persist what changed; a pair back at rest keeps no row."""
        for sid, s in self.states.items():
            data = s.to_json()
            if s == IncidentState():
                if sid in self._stored:
                    rule_state.forget(conn, INCIDENT, sid)
            elif data != self._stored.get(sid):
                rule_state.save(conn, INCIDENT, sid, data, at)
