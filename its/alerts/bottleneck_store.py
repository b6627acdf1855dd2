"""Bottleneck episodes in the ``bottlenecks`` table: written by the evaluator, read by the API.

Why a table of its own rather than the ``bottleneck`` alerts: an analyst asks "where are the
recurrent bottlenecks, how long did they last, how much delay did they cause, per day" - a range
query over episodes with their start, end, extent and delay as columns. The alert rows carry
these only inside JSON details (whose querying differs per backend), are acknowledged and
re-raised on operators' terms, and their raise time is the detection, not the PeMS start. The
episode row links its alert (``alert_id``). Functions never commit: the caller's transaction
(the evaluator's step) does, with the rule state and the alert change.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.engine import Connection

from its.alerts.topology import StationPoint
from its.contract import iso
from its.db import schema


@dataclass(frozen=True)
class Episode:
    id: int
    head_station_id: str
    downstream_station_id: str
    segment_id: str
    corridor_id: str
    direction: str
    started_at: datetime
    detected_at: datetime
    last_seen: datetime
    ended_at: datetime | None
    intervals: int
    delay_veh_h: float
    max_extent_km: float
    farthest_station_id: str | None
    alert_id: int | None

    @property
    def active(self) -> bool:
        return self.ended_at is None

    def to_dict(self) -> dict[str, Any]:
        end = self.ended_at or self.last_seen
        return {
            "id": self.id,
            "head_station_id": self.head_station_id,
            "downstream_station_id": self.downstream_station_id,
            "segment_id": self.segment_id,
            "corridor_id": self.corridor_id,
            "direction": self.direction,
            "active": self.active,
            "started_at": iso(self.started_at),
            "detected_at": iso(self.detected_at),
            "last_seen": iso(self.last_seen),
            "ended_at": iso(self.ended_at) if self.ended_at else None,
            "duration_min": round((end - self.started_at).total_seconds() / 60, 1),
            "intervals": self.intervals,
            "delay_veh_h": round(self.delay_veh_h, 2),
            "max_extent_km": round(self.max_extent_km, 3),
            "farthest_station_id": self.farthest_station_id,
            "alert_id": self.alert_id,
        }


def _values(details: dict[str, Any]) -> dict[str, Any]:
    return {
        "last_seen": datetime.fromisoformat(details["last_at"]),
        "intervals": int(details["intervals"]),
        "delay_veh_h": float(details["delay_veh_h"]),
        "max_extent_km": float(details["max_extent_km"]),
        "farthest_station_id": details.get("farthest_station"),
    }


def open_episode(
    conn: Connection,
    head: StationPoint,
    downstream_station_id: str,
    details: dict[str, Any],
    detected_at: datetime,
    alert_id: int | None,
) -> None:
    """A bottleneck became active: its episode row (``ended_at`` null)."""
    conn.execute(
        insert(schema.bottlenecks).values(
            head_station_id=head.station_id,
            downstream_station_id=downstream_station_id,
            segment_id=head.segment_id,
            corridor_id=head.corridor_id,
            direction=head.direction,
            started_at=datetime.fromisoformat(details["started_at"]),
            detected_at=detected_at,
            alert_id=alert_id,
            **_values(details),
        )
    )


def update_episode(
    conn: Connection, head_station_id: str, details: dict[str, Any], *, ended: bool = False
) -> None:
    """Carry the running totals (and the end, once over) to the head's open episode."""
    t = schema.bottlenecks
    values = _values(details)
    if ended:
        values["ended_at"] = values["last_seen"]
    conn.execute(
        update(t)
        .where(t.c.head_station_id == head_station_id, t.c.ended_at.is_(None))
        .values(**values)
    )


def _episode(row: Any) -> Episode:
    return Episode(**{k: getattr(row, k) for k in Episode.__dataclass_fields__})


def list_episodes(
    conn: Connection,
    start: datetime,
    end: datetime,
    *,
    corridor_id: str | None = None,
    station_id: str | None = None,
    active_only: bool = False,
    limit: int = 1000,
) -> list[Episode]:
    """Episodes that overlap [start, end), oldest first."""
    t = schema.bottlenecks
    q = select(t).where(
        t.c.started_at < end,
        or_(t.c.ended_at.is_(None), and_(t.c.ended_at > start)),
    )
    if corridor_id is not None:
        q = q.where(t.c.corridor_id == corridor_id)
    if station_id is not None:
        q = q.where(t.c.head_station_id == station_id)
    if active_only:
        q = q.where(t.c.ended_at.is_(None))
    q = q.order_by(t.c.started_at, t.c.id).limit(limit)
    return [_episode(r) for r in conn.execute(q)]


def daily(episodes: list[Episode], tz: ZoneInfo) -> list[dict[str, Any]]:
    """Per local day (the day the episode started, in the network's zone) and head station:
    episodes, minutes active, delay and the longest queue, worst delay first within a day."""
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for e in episodes:
        day = e.started_at.astimezone(tz).date().isoformat()
        row = acc.setdefault(
            (day, e.head_station_id),
            {
                "day": day,
                "head_station_id": e.head_station_id,
                "segment_id": e.segment_id,
                "corridor_id": e.corridor_id,
                "direction": e.direction,
                "episodes": 0,
                "active_min": 0.0,
                "delay_veh_h": 0.0,
                "max_extent_km": 0.0,
            },
        )
        row["episodes"] += 1
        row["active_min"] += ((e.ended_at or e.last_seen) - e.started_at).total_seconds() / 60
        row["delay_veh_h"] += e.delay_veh_h
        row["max_extent_km"] = max(row["max_extent_km"], e.max_extent_km)
    by_day: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in acc.values():
        row["active_min"] = round(row["active_min"], 1)
        row["delay_veh_h"] = round(row["delay_veh_h"], 2)
        row["max_extent_km"] = round(row["max_extent_km"], 3)
        by_day[row["day"]].append(row)
    return [
        row
        for day in sorted(by_day)
        for row in sorted(by_day[day], key=lambda r: (-r["delay_veh_h"], r["head_station_id"]))
    ]
