"""Where the raw readings end: the horizon the retention clean-up has recorded.

Before the horizon, raw rows may have been deleted (the roll-ups are kept), so three readers must
know it: the roll-up worker must not recompute a bucket from what is left of its raw rows, the
service layer must answer buckets before it from the roll-ups only, and the clean-up itself. It is
a row of ``retention_state``, written before any raw row is deleted, and it only ever moves on.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from its.db import schema
from its.db.engine import BUCKET_ORIGIN

READINGS = "readings"
FIVE_MIN = timedelta(minutes=5)


def raw_horizon(now: datetime, days: int) -> datetime | None:
    """The start of the 5-minute bucket ``days`` before ``now``: raw readings before it are due
    for deletion (None: ``days`` is 0, keep them for ever). Aligned like the roll-ups' buckets,
    so the clean-up removes whole buckets."""
    if days <= 0:
        return None
    origin = BUCKET_ORIGIN.replace(tzinfo=now.tzinfo)
    cut = now - timedelta(days=days)
    return origin + (cut - origin) // FIVE_MIN * FIVE_MIN


def recorded_horizon(conn: Connection, name: str = READINGS) -> datetime | None:
    """The horizon recorded by the clean-up (None: it never deleted anything)."""
    t = schema.retention_state
    return conn.execute(select(t.c.horizon).where(t.c.name == name)).scalar()


def advance_horizon(
    conn: Connection, horizon: datetime, now: datetime, name: str = READINGS
) -> datetime:
    """Record ``horizon`` unless a later one is recorded already; returns the one in force.
    The caller commits this before deleting anything."""
    t = schema.retention_state
    current = conn.execute(select(t.c.horizon).where(t.c.name == name).with_for_update()).scalar()
    if current is None:
        conn.execute(t.insert().values(name=name, horizon=horizon, updated_at=now))
        return horizon
    if horizon > current:
        conn.execute(update(t).where(t.c.name == name).values(horizon=horizon, updated_at=now))
        return horizon
    return current
