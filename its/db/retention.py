"""Retention on PostgreSQL and SQLite: a bounded, batched clean-up of old raw readings and dead
letters. The roll-ups are kept for ever, and so is the alerts history.

Raw readings older than ``ITS_RETENTION_RAW_DAYS`` are deleted so that the store stays the size
of a few months of 30-s rows while analysts keep years of 5-minute, hourly and daily sums. What
keeps the answers right (docs/storage.md, Retention):

- The horizon is recorded (:mod:`its.db.horizon`) *before* anything is deleted. From then on the
  service layer answers buckets before it from the roll-ups only, and the roll-up worker will not
  recompute a bucket before it from a partial set of raw rows.
- Only whole (station, 5-minute bucket) groups are deleted, each group inside one transaction,
  and only where the 5-minute roll-up row exists and the key is not logged dirty (checked by the
  ``DELETE`` itself, so a reading committed meanwhile keeps its bucket).
- Deletes are not logged dirty (the triggers fire on insert and update only).
- Batches are small (``ITS_RETENTION_BATCH_ROWS`` rows, one short transaction each), so ingest
  never waits long behind a clean-up.

On TimescaleDB a retention policy drops old chunks of ``readings`` (its/db/timescale.py); this
module then leaves readings alone and cleans only dead letters. Several processes may run the
clean-up; on PostgreSQL one at a time does (an advisory lock), the others skip their round.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, text
from sqlalchemy.engine import Connection, Engine

from its.config import Settings
from its.contract import iso
from its.db import horizon as horizons
from its.db import schema
from its.db.rollup import FIVE_MIN, ROLLUP_START, bucket_floor
from its.db.timebucket import time_bucket
from its.db.timescale import is_hypertable

log = logging.getLogger(__name__)

_LOCK_KEY = "its-retention"


@dataclass
class RetentionStats:
    """What one clean-up did (or, in a dry run, would do)."""

    raw_horizon: datetime | None = None
    dead_letter_horizon: datetime | None = None
    readings_deleted: int = 0
    #: rows before the horizon kept because their bucket is dirty or not rolled up yet
    readings_kept: int = 0
    buckets: int = 0
    dead_letters_deleted: int = 0
    #: why readings were left alone (TimescaleDB policy, another clean-up running), if they were
    readings_note: str | None = None
    dry_run: bool = False

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        if self.readings_note:
            raw = f"readings: {self.readings_note}"
        elif self.raw_horizon is None:
            raw = "raw readings kept for ever (ITS_RETENTION_RAW_DAYS=0)"
        else:
            where = "" if self.dry_run else f" in {self.buckets:,} 5-minute buckets"
            raw = (
                f"{verb} {self.readings_deleted:,} raw readings before "
                f"{iso(self.raw_horizon)}{where}"
                + (f", kept {self.readings_kept:,} not rolled up yet" if self.readings_kept else "")
            )
        if self.dead_letter_horizon is None:
            dead = "dead letters kept for ever (ITS_RETENTION_DEAD_LETTER_DAYS=0)"
        else:
            dead = (
                f"{verb} {self.dead_letters_deleted:,} dead letters before "
                f"{iso(self.dead_letter_horizon)}"
            )
        return f"{raw}; {dead}"


# --------------------------------------------------------------------------- raw readings


def _next_bucket(conn: Connection, after: datetime, before: datetime) -> datetime | None:
    """The 5-minute bucket of the oldest raw reading in [after, before) (a time-index lookup)."""
    r = schema.readings
    first = conn.execute(
        select(func.min(r.c.interval_start)).where(
            r.c.interval_start >= after, r.c.interval_start < before
        )
    ).scalar()
    return None if first is None else bucket_floor(first, FIVE_MIN, None)


def _chunks(counts: list[tuple[str, int]], limit: int) -> Iterator[list[str]]:
    """Stations grouped so that each group holds at most ``limit`` rows (or one station)."""
    group: list[str] = []
    rows = 0
    for station, n in counts:
        if group and rows + n > limit:
            yield group
            group, rows = [], 0
        group.append(station)
        rows += n
    if group:
        yield group


def _delete_bucket(conn: Connection, bucket: datetime, stations: list[str]) -> int:
    """Delete the raw rows of ``stations`` in one 5-minute ``bucket`` where that (station,
    bucket) is rolled up and not logged dirty; the conditions are checked by the statement, so
    a reading committed meanwhile (which logs its key) keeps its bucket's rows."""
    r, five, dirty = schema.readings, schema.rollup_5m, schema.rollup_dirty
    rolled = (
        select(five.c.station_id)
        .where(five.c.station_id == r.c.station_id, five.c.bucket_start == bucket)
        .exists()
    )
    logged = (
        select(dirty.c.id)
        .where(dirty.c.station_id == r.c.station_id, dirty.c.bucket_start == bucket)
        .exists()
    )
    stmt = (
        delete(r)
        .where(r.c.interval_start >= bucket, r.c.interval_start < bucket + FIVE_MIN)
        .where(r.c.station_id.in_(stations), rolled, ~logged)
        .execution_options(preserve_rowcount=True)
    )
    return max(conn.execute(stmt).rowcount, 0)


def clean_readings(
    engine: Engine,
    horizon: datetime,
    *,
    batch_rows: int = 5000,
    stats: RetentionStats | None = None,
    progress: Callable[[datetime], None] | None = None,
    stop: threading.Event | None = None,
) -> RetentionStats:
    """Delete rolled-up raw readings before ``horizon``, bucket by bucket from the oldest, in
    transactions of at most ``batch_rows`` rows (or one station's bucket); ``progress`` is
    called with each bucket done. The horizon is recorded first."""
    stats = stats or RetentionStats(raw_horizon=horizon)
    with engine.begin() as conn:
        horizons.advance_horizon(conn, horizon, datetime.now(UTC))
    r = schema.readings
    cursor = ROLLUP_START  # rows before 1970 are never rolled up, so never deleted either
    while stop is None or not stop.is_set():
        with engine.connect() as conn:
            bucket = _next_bucket(conn, cursor, horizon)
            if bucket is None:
                break
            counts = [
                (station, int(n))
                for station, n in conn.execute(
                    select(r.c.station_id, func.count())
                    .where(r.c.interval_start >= bucket, r.c.interval_start < bucket + FIVE_MIN)
                    .group_by(r.c.station_id)
                    .order_by(r.c.station_id)
                )
            ]
        deleted = 0
        for stations in _chunks(counts, batch_rows):
            with engine.begin() as conn:
                deleted += _delete_bucket(conn, bucket, stations)
        stats.readings_deleted += deleted
        stats.readings_kept += sum(n for _s, n in counts) - deleted
        stats.buckets += 1
        if progress is not None:
            progress(bucket)
        cursor = bucket + FIVE_MIN
    return stats


def count_readings(conn: Connection, horizon: datetime) -> tuple[int, int]:
    """(deletable, kept) raw rows before ``horizon``: what a clean-up would do now (dry run)."""
    r, five, dirty = schema.readings, schema.rollup_5m, schema.rollup_dirty
    bucket = time_bucket(FIVE_MIN, r.c.interval_start)
    rolled = (
        select(five.c.station_id)
        .where(five.c.station_id == r.c.station_id, five.c.bucket_start == bucket)
        .exists()
    )
    logged = (
        select(dirty.c.id)
        .where(dirty.c.station_id == r.c.station_id, dirty.c.bucket_start == bucket)
        .exists()
    )
    old = (r.c.interval_start >= ROLLUP_START) & (r.c.interval_start < horizon)
    total = conn.execute(select(func.count()).select_from(r).where(old)).scalar_one()
    deletable = conn.execute(
        select(func.count()).select_from(r).where(old, rolled, ~logged)
    ).scalar_one()
    return int(deletable), int(total) - int(deletable)


# --------------------------------------------------------------------------- dead letters


def clean_dead_letters(
    engine: Engine,
    horizon: datetime,
    *,
    batch_rows: int = 5000,
    stop: threading.Event | None = None,
) -> int:
    """Delete dead letters received before ``horizon``, ``batch_rows`` per transaction."""
    d = schema.dead_letters
    total = 0
    while stop is None or not stop.is_set():
        with engine.begin() as conn:
            ids = select(d.c.id).where(d.c.received_at < horizon).limit(batch_rows)
            n = conn.execute(
                delete(d)
                .where(d.c.id.in_(ids.scalar_subquery()))
                .execution_options(preserve_rowcount=True)
            ).rowcount
        total += max(n, 0)
        if n < batch_rows:
            break
    return total


# --------------------------------------------------------------------------- one clean-up


@contextmanager
def _exclusive(engine: Engine) -> Iterator[bool]:
    """On PostgreSQL, hold a session advisory lock for the clean-up (False: another process is
    cleaning up); on SQLite writers are serialised anyway."""
    if engine.dialect.name != "postgresql":
        yield True
        return
    with engine.connect() as conn:
        got = conn.execute(text("SELECT pg_try_advisory_lock(hashtext(:k))"), {"k": _LOCK_KEY})
        locked = bool(got.scalar())
        conn.commit()
        try:
            yield locked
        finally:
            if locked:
                conn.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": _LOCK_KEY})
                conn.commit()


def run_retention(
    engine: Engine,
    settings: Settings,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    progress: Callable[[datetime], None] | None = None,
    stop: threading.Event | None = None,
) -> RetentionStats:
    """One clean-up as the settings ask: raw readings older than ``ITS_RETENTION_RAW_DAYS``
    (where rolled up), dead letters older than ``ITS_RETENTION_DEAD_LETTER_DAYS``.

    Call-compatible on every backend: where ``readings`` is a TimescaleDB hypertable its
    retention policy owns the raw rows, and only dead letters are cleaned here."""
    now = now or datetime.now(UTC)
    stats = RetentionStats(
        raw_horizon=horizons.raw_horizon(now, settings.retention_raw_days),
        dry_run=dry_run,
    )
    if settings.retention_dead_letter_days:
        stats.dead_letter_horizon = now - timedelta(days=settings.retention_dead_letter_days)
    with engine.connect() as conn:
        if stats.raw_horizon is not None and is_hypertable(conn):
            stats.readings_note = "left to the TimescaleDB retention policy"
        if dry_run:
            if stats.raw_horizon is not None and stats.readings_note is None:
                stats.readings_deleted, stats.readings_kept = count_readings(
                    conn, stats.raw_horizon
                )
            if stats.dead_letter_horizon is not None:
                d = schema.dead_letters
                stats.dead_letters_deleted = conn.execute(
                    select(func.count())
                    .select_from(d)
                    .where(d.c.received_at < stats.dead_letter_horizon)
                ).scalar_one()
            return stats
    with _exclusive(engine) as mine:
        if not mine:
            stats.readings_note = "another clean-up is running; skipped"
            return stats
        if stats.raw_horizon is not None and stats.readings_note is None:
            clean_readings(
                engine,
                stats.raw_horizon,
                batch_rows=settings.retention_batch_rows,
                stats=stats,
                progress=progress,
                stop=stop,
            )
        if stats.dead_letter_horizon is not None:
            stats.dead_letters_deleted = clean_dead_letters(
                engine,
                stats.dead_letter_horizon,
                batch_rows=settings.retention_batch_rows,
                stop=stop,
            )
    return stats


def run_worker(
    engine: Engine, settings: Settings, stop: threading.Event, *, interval_s: float
) -> None:
    """Run the clean-up every ``interval_s`` seconds until ``stop`` (inside ``its up`` and
    ``its ingest``); the first round starts after at most a minute, not at start-up."""
    log.info("retention worker started (every %.0f s)", interval_s)
    stop.wait(min(interval_s, 60.0))
    while not stop.is_set():
        try:
            stats = run_retention(engine, settings, stop=stop)
            if stats.readings_deleted or stats.dead_letters_deleted:
                log.info("retention: %s", stats.summary())
        except Exception:  # noqa: BLE001 - a failed round is retried at the next interval
            log.exception("retention round failed; retrying in %.0f s", interval_s)
        stop.wait(interval_s)
    log.info("retention worker stopped")
