"""Idempotent writes report what they inserted and keep dead letters whole."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.engine import Engine

from its.db import schema
from its.db.writes import DeadLetter, insert_dead_letters, insert_readings, upsert_station_status

T = datetime(2026, 11, 22, 1, 5, tzinfo=UTC)


def _row(lane: int, count: int) -> dict:
    return {
        "station_id": "JKT-SDR-N-001",
        "lane": lane,
        "interval_start": T,
        "period_s": 30,
        "count": count,
        "occupancy": 0.1,
        "speed_kph": None,
        "status": "ok",
        "received_at": T,
    }


def test_insert_counts_new_rows_only(engine: Engine) -> None:
    with engine.begin() as conn:
        assert insert_readings(conn, [_row(1, 5), _row(2, 6), _row(1, 99)]) == 2
        assert insert_readings(conn, [_row(1, 7), _row(3, 8)]) == 1
    with engine.connect() as conn:
        rows = conn.execute(select(schema.readings.c.lane, schema.readings.c["count"])).all()
        speeds = conn.execute(select(schema.readings.c.speed_kph)).scalars().all()
    assert sorted(rows) == [(1, 5), (2, 6), (3, 8)]  # the first of a duplicate wins
    assert speeds == [None, None, None]


def test_dead_letters_keep_binary_payloads(engine: Engine) -> None:
    raw = b"\xff\x00garbage"
    with engine.begin() as conn:
        insert_dead_letters(
            conn,
            [DeadLetter("t/1", b'{"a": 1}', "bad", T), DeadLetter("t/2", raw, "not utf-8", T)],
        )
    with engine.connect() as conn:
        got = conn.execute(
            select(
                schema.dead_letters.c.topic,
                schema.dead_letters.c.payload,
                schema.dead_letters.c.payload_encoding,
            ).order_by(schema.dead_letters.c.id)
        ).all()
    assert got[0] == ("t/1", '{"a": 1}', "utf-8")
    assert got[1][2] == "base64" and base64.b64decode(got[1][1]) == raw


def test_station_status_latest_wins(engine: Engine) -> None:
    with engine.begin() as conn:
        upsert_station_status(conn, "JKT-SDR-N-001", "online", T, T)
        upsert_station_status(conn, "JKT-SDR-N-001", "offline", None, T)
    with engine.connect() as conn:
        row = conn.execute(select(schema.station_status)).one()
    assert (row.state, row.state_at) == ("offline", None)
