"""Idempotent writes: readings keyed by (station, lane, interval_start), dead letters, station state.

A duplicate reading is ignored (``ON CONFLICT DO NOTHING`` / ``INSERT OR IGNORE``); a late or
out-of-order one is accepted. Callers commit; ingest acknowledges MQTT messages only after that.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from its.contract import Observation
from its.db import schema


def reading_rows(obs: Observation, received_at: datetime) -> list[dict[str, Any]]:
    """The ``readings`` rows of one observation, one per lane."""
    return [
        {
            "station_id": obs.station_id,
            "lane": lane.lane,
            "interval_start": obs.interval_start,
            "period_s": obs.period_s,
            "count": lane.count,
            "occupancy": lane.occupancy,
            "speed_kph": lane.speed_kph,
            "status": obs.status,
            "received_at": received_at,
        }
        for lane in obs.lanes
    ]


def _insert_ignore(conn: Connection, table: Any) -> Any:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise NotImplementedError(conn.dialect.name)


def insert_readings(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    """Insert reading rows, ignoring duplicates of the reading key; returns rows inserted."""
    if not rows:
        return 0
    # Duplicates inside one batch would make PostgreSQL's multi-row insert raise; keep the first.
    unique: dict[tuple[str, int, datetime], dict[str, Any]] = {}
    for r in rows:
        unique.setdefault((r["station_id"], r["lane"], r["interval_start"]), r)
    stmt = _insert_ignore(conn, schema.readings).execution_options(preserve_rowcount=True)
    result = conn.execute(stmt, list(unique.values()))
    return max(result.rowcount, 0)


TOPIC_MAX_CHARS = 512  # the column's width
REASON_MAX_CHARS = 2000


def storable_text(text: str, limit: int) -> str:
    """``text`` as any backend stores it: NUL (which PostgreSQL text refuses) and lone
    surrogates escaped, cut to ``limit`` characters. A dead letter that the store refused would
    fail its whole batch, and the batch would be retried for ever."""
    if text.isascii() and "\x00" not in text:  # the usual case: nothing to escape
        return text if len(text) <= limit else text[: limit - 3] + "..."
    clean = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def _utf8_prefix(payload: bytes) -> str | None:
    """The payload as text when it is UTF-8 without NUL, allowing a character cut in two at the
    end (by truncation); None otherwise (it is stored as base64)."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(payload) - 3 or exc.reason != "unexpected end of data":
            return None
        text = payload[: exc.start].decode("utf-8")
    return None if "\x00" in text else text


@dataclass(frozen=True)
class DeadLetter:
    """A message that could not be used, with the reason.

    Build it with :meth:`bounded` so what is kept of the payload has a ceiling;
    :meth:`row` makes every field storable whatever the sender put in it.
    """

    topic: str
    payload: bytes
    reason: str
    received_at: datetime

    @classmethod
    def bounded(
        cls, topic: str, payload: bytes, reason: str, received_at: datetime, max_bytes: int
    ) -> DeadLetter:
        """A dead letter keeping at most ``max_bytes`` of the payload; the reason says when
        the payload was cut, and how long it was."""
        if len(payload) > max_bytes:
            reason = f"{reason} (payload cut to its first {max_bytes:,} of {len(payload):,} bytes)"
            payload = payload[:max_bytes]
        return cls(topic, payload, reason, received_at)

    def row(self) -> dict[str, Any]:
        text = _utf8_prefix(self.payload)
        if text is None:
            text, encoding = base64.b64encode(self.payload).decode("ascii"), "base64"
        else:
            encoding = "utf-8"
        return {
            "topic": storable_text(self.topic, TOPIC_MAX_CHARS),
            "payload": text,
            "payload_encoding": encoding,
            "reason": storable_text(self.reason, REASON_MAX_CHARS),
            "received_at": self.received_at,
        }


def insert_dead_letters(conn: Connection, letters: Iterable[DeadLetter]) -> int:
    rows = [d.row() for d in letters]
    if rows:
        conn.execute(insert(schema.dead_letters), rows)
    return len(rows)


def upsert_station_status(
    conn: Connection, station_id: str, state: str, state_at: datetime | None, updated_at: datetime
) -> None:
    """Record a station's online/offline state (the latest message wins)."""
    values = {
        "station_id": station_id,
        "state": state,
        "state_at": state_at,
        "updated_at": updated_at,
    }
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(schema.station_status).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["station_id"],
        set_={"state": state, "state_at": state_at, "updated_at": updated_at},
    )
    conn.execute(stmt)
