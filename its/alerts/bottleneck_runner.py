"""Runs the bottleneck rule (:mod:`its.alerts.bottleneck`) over every corridor direction at the end
of each 5-minute interval, inside the evaluator's transaction: the ``bottleneck`` alert per head
station and its episode row (:mod:`its.alerts.bottleneck_store`) change together.

State per head station in ``rule_state`` (``rule = 'bottleneck'``); a station with no qualifying
interval in its window keeps no row, so a city of quiet stations costs nothing to store.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from its.alerts import bottleneck_store, store
from its.alerts import state as rule_state
from its.alerts.bottleneck import (
    BOTTLENECK,
    BottleneckParams,
    BottleneckState,
    StationFigures,
    bottleneck_message,
    bottleneck_step,
    interval_candidates,
)
from its.alerts.topology import chains
from its.network import Network
from its.service.traffic import Interval


class BottleneckRunner:
    """One evaluator step's bottleneck work: load states, one call per 5-min interval, save."""

    def __init__(self, network: Network, params: BottleneckParams) -> None:
        self.params = params
        self.chains = chains(network)
        self.heads = {p.station_id: p for chain in self.chains for p in chain[:-1]}
        self.states: dict[str, BottleneckState] = {}
        self._stored: dict[str, dict[str, Any]] = {}
        self._active: set[str] = set()

    def load(self, conn: Connection, active: Mapping[tuple[str, str], Any]) -> None:
        self._stored = rule_state.load(conn, BOTTLENECK)
        self._active = {target for rule, target in active if rule == BOTTLENECK}
        self.states = {}
        for sid in self.heads:
            s = BottleneckState.from_json(self._stored.get(sid))
            if s.active and sid not in self._active:
                s = BottleneckState(window=s.window)
            self.states[sid] = s

    def interval(
        self,
        conn: Connection,
        interval_start: datetime,
        interval_end: datetime,
        figures: Mapping[tuple[str, datetime], Interval],
        excluded: set[str],
        changes: list[store.Change],
    ) -> None:
        """Evaluate the 5-min interval starting at ``interval_start`` on every corridor."""
        for chain in self.chains:
            values = {}
            for p in chain:
                i = figures.get((p.station_id, interval_start))
                if i is not None and p.station_id not in excluded:
                    values[p.station_id] = StationFigures(i.speed_kph, i.flow_vph)
            found = interval_candidates(chain, values, self.params)
            for head in chain[:-1]:
                sid = head.station_id
                state, decision = bottleneck_step(
                    self.states[sid], found.get(sid), interval_start, self.params
                )
                if not state.active and not any(ok for _s, ok, _d in state.window):
                    state = BottleneckState()  # nothing to remember
                self.states[sid] = state
                d = decision.details
                if decision.action in ("raise", "repeat"):
                    change = store.raise_or_repeat(
                        conn,
                        BOTTLENECK,
                        sid,
                        "minor",
                        bottleneck_message(sid, d),
                        {**d, "segment_id": head.segment_id},
                        interval_end,
                        target_kind="station",
                    )
                    changes.append(change)
                    if decision.action == "raise":
                        bottleneck_store.open_episode(
                            conn, head, d["downstream_station"], d, interval_end, change.alert.id
                        )
                        self._active.add(sid)
                    else:
                        bottleneck_store.update_episode(conn, sid, d)
                elif decision.action == "clear":
                    bottleneck_store.update_episode(conn, sid, d, ended=True)
                    change = store.clear(conn, BOTTLENECK, sid, interval_end, d)
                    self._active.discard(sid)
                    if change is not None:
                        changes.append(change)

    def save(self, conn: Connection, at: datetime) -> None:
        for sid, s in self.states.items():
            if s == BottleneckState():
                if sid in self._stored:
                    rule_state.forget(conn, BOTTLENECK, sid)
            elif s.to_json() != self._stored.get(sid):
                rule_state.save(conn, BOTTLENECK, sid, s.to_json(), at)
