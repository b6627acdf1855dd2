"""TimescaleDB continuous aggregates: the station roll-ups where TimescaleDB runs.

On TimescaleDB the per-station sums of :mod:`its.db.rollup` live in three hierarchical continuous
aggregates instead of the plain ``rollup_5m`` / ``rollup_1h`` / ``rollup_1d`` tables:

- ``readings_5m`` over ``readings``: ``time_bucket('5 minutes', interval_start)``, the same
  columns and the same expressions as :func:`its.db.rollup.raw_sums_columns` (the SQL is compiled
  from it, so the formulas stay in one place). TimescaleDB 2.7 and later store the finalised
  aggregate, which allows ``count(DISTINCT interval_start)``: the intervals of a station are
  counted exactly, also when some of its lanes miss an interval.
- ``readings_1h`` over ``readings_5m`` and ``readings_1d`` over ``readings_1h``:
  ``time_bucket(width, bucket_start, '<network zone>')``, sums of sums and maxima of maxima
  (:func:`its.db.rollup.sums_of_sums_columns`), so hours and days are local ones.

All three have ``timescaledb.materialized_only = false`` (real-time aggregation: whoever queries
a view sees the newest buckets from the raw rows too), refresh policies, and compression on the
older materialised chunks. The segment and corridor tables (``rollup_segment_5m`` /
``rollup_corridor_5m``) stay plain tables, recomputed from ``readings_5m``.

Exactness with late data is kept the way it is on plain PostgreSQL: the row trigger still logs
each written (station, 5-minute) key in ``rollup_dirty``; the service layer reads the raw rows
from the oldest logged bucket on; :func:`catch_up` refreshes the logged ranges with
``refresh_continuous_aggregate`` (5 min, then 1 h, then 1 day: a hierarchical aggregate reads
its parent's materialisation) and only then deletes the keys it saw. TimescaleDB's own
invalidation log marks the same buckets, so the refresh recomputes exactly those.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    MetaData,
    SmallInteger,
    String,
    Table,
    literal_column,
    select,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import InternalError

from its.db import rollup, schema
from its.db.engine import Backend, detect_backend
from its.db.types import UTCDateTime

log = logging.getLogger(__name__)

#: not in schema.metadata: alembic manages tables, these are views TimescaleDB manages
metadata = MetaData()


def _view(name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("station_id", String(64), primary_key=True),
        Column("bucket_start", UTCDateTime(), primary_key=True),
        Column("flow_sum", Float),
        Column("intervals", BigInteger),
        Column("lane_rows", BigInteger),
        Column("occ_sum", Float),
        Column("occ_n", BigInteger),
        Column("q_speed", Float),
        Column("qv_measured", Float),
        Column("occ_est", Float),
        Column("period_s", SmallInteger),
        Column("last_start", UTCDateTime()),
    )


readings_5m = _view("readings_5m")
readings_1h = _view("readings_1h")
readings_1d = _view("readings_1d")

LEVEL_5M = rollup.Level(readings_5m, rollup.FIVE_MIN, False)
LEVEL_1H = rollup.Level(readings_1h, timedelta(hours=1), True)
LEVEL_1D = rollup.Level(readings_1d, timedelta(days=1), True)
LEVELS = (LEVEL_5M, LEVEL_1H, LEVEL_1D)
VIEWS = tuple(level.table.name for level in LEVELS)


@dataclass(frozen=True)
class Policy:
    """One aggregate's refresh policy and compression threshold."""

    start_offset: timedelta
    end_offset: timedelta
    schedule: timedelta
    compress_after: timedelta | None


#: The refresh policies cover recent late data even where no ``its`` worker runs; late data
#: older than ``start_offset`` is refreshed by :func:`catch_up` (``its db rollup`` and the
#: worker) from the dirty-key log. Compression starts well after the refresh window.
POLICIES = {
    "readings_5m": Policy(
        timedelta(days=3), timedelta(minutes=5), timedelta(minutes=5), timedelta(days=30)
    ),
    "readings_1h": Policy(
        timedelta(days=3), timedelta(hours=1), timedelta(minutes=30), timedelta(days=90)
    ),
    "readings_1d": Policy(timedelta(days=7), timedelta(days=1), timedelta(hours=1), None),
}
#: a refresh policy's window stays inside the raw retention by this margin, so a policy never
#: refreshes a region whose raw chunks are being dropped (that would empty its buckets)
RETENTION_MARGIN = timedelta(days=1)
ZONE_COMMENT = "its roll-up; buckets in zone "


# --------------------------------------------------------------------------- detection


def timescaledb(conn: Connection) -> bool:
    """Whether this connection's engine runs on TimescaleDB (detected once per engine)."""
    return conn.dialect.name == "postgresql" and detect_backend(conn.engine) == Backend.TIMESCALEDB


def in_use(conn: Connection) -> bool:
    """Whether the station roll-ups are continuous aggregates here (remembered per engine:
    :func:`create` and :func:`drop` update it)."""
    if not timescaledb(conn):
        return False
    known = getattr(conn.dialect, "its_caggs", None)
    if known is None:
        known = _exist(conn)
        conn.dialect.its_caggs = known  # type: ignore[attr-defined]
    return bool(known)


def _exist(conn: Connection) -> bool:
    n = conn.execute(
        text(
            "SELECT count(*) FROM timescaledb_information.continuous_aggregates "
            "WHERE view_schema = current_schema() AND view_name = ANY(:names)"
        ),
        {"names": list(VIEWS)},
    ).scalar_one()
    return n == len(VIEWS)


def zone(conn: Connection) -> str | None:
    """The zone the hourly and daily aggregates bucket in (kept in the view's comment)."""
    comment = conn.execute(
        text("SELECT obj_description(to_regclass(:v), 'pg_class')"), {"v": "readings_1h"}
    ).scalar()
    if not comment or not comment.startswith(ZONE_COMMENT):
        return None
    return comment.removeprefix(ZONE_COMMENT)


def levels(conn: Connection) -> tuple[rollup.Level, ...]:
    """The stored station levels the service layer reads on this backend."""
    return LEVELS if in_use(conn) else rollup.LEVELS


# --------------------------------------------------------------------------- DDL


def _sql(stmt: object) -> str:
    """A SQLAlchemy select as literal SQL text (a view's definition has no parameters)."""
    compiled = stmt.compile(  # type: ignore[attr-defined]
        dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
    )
    return str(compiled)


def _definition_5m() -> str:
    r = schema.readings
    bucket = literal_column("time_bucket(INTERVAL '5 minutes', readings.interval_start)")
    return _sql(select(*rollup.raw_sums_columns(bucket)).group_by(r.c.station_id, bucket))


def _definition_coarse(source: Table, width: str, tz: str) -> str:
    quoted = tz.replace("'", "''")
    bucket = literal_column(
        f"time_bucket(INTERVAL '{width}', {source.name}.bucket_start, '{quoted}')"
    )
    columns = rollup.sums_of_sums_columns(source, bucket)
    # sum(bigint) is numeric in PostgreSQL: keep counts integers, as in the plain tables
    counts = {"intervals", "lane_rows", "occ_n"}
    columns = [
        c if c.name not in counts else c.element.cast(BigInteger).label(c.name) for c in columns
    ]
    return _sql(select(*columns).group_by(source.c.station_id, bucket))


def create(conn: Connection, tz: str, *, retention_raw_days: int = 0) -> None:
    """Create the three aggregates (empty: ``WITH NO DATA``; :func:`catch_up` or the policies
    fill them), their refresh and compression policies. Runs inside a transaction."""
    definitions = {
        "readings_5m": _definition_5m(),
        "readings_1h": _definition_coarse(readings_5m, "1 hour", tz),
        "readings_1d": _definition_coarse(readings_1h, "1 day", tz),
    }
    for name, definition in definitions.items():
        conn.exec_driver_sql(
            f"CREATE MATERIALIZED VIEW {name} WITH (timescaledb.continuous, "
            f"timescaledb.materialized_only = false) AS {definition} WITH NO DATA"
        )
        comment = (ZONE_COMMENT + tz).replace("'", "''")  # DDL takes no parameters
        conn.exec_driver_sql(f"COMMENT ON VIEW {name} IS '{comment}'")
        _add_refresh_policy(conn, name, retention_raw_days)
        policy = POLICIES[name]
        if policy.compress_after is not None:
            conn.exec_driver_sql(
                f"ALTER MATERIALIZED VIEW {name} SET (timescaledb.compress = true, "
                "timescaledb.compress_segmentby = 'station_id', "
                "timescaledb.compress_orderby = 'bucket_start')"
            )
            conn.execute(
                text("SELECT add_compression_policy(CAST(:v AS regclass), compress_after => :a)"),
                {"v": name, "a": policy.compress_after},
            )
    conn.dialect.its_caggs = True  # type: ignore[attr-defined]


def _start_offset(name: str, retention_raw_days: int) -> timedelta:
    """A refresh policy's start offset: its default, kept inside the raw retention."""
    policy = POLICIES[name]
    start = policy.start_offset
    if retention_raw_days:
        start = min(start, timedelta(days=retention_raw_days) - RETENTION_MARGIN)
    return max(start, policy.end_offset + 2 * _width(name))


def _add_refresh_policy(conn: Connection, name: str, retention_raw_days: int) -> None:
    policy = POLICIES[name]
    conn.execute(
        text(
            "SELECT add_continuous_aggregate_policy(CAST(:v AS regclass), "
            "start_offset => :s, end_offset => :e, schedule_interval => :i)"
        ),
        {
            "v": name,
            "s": _start_offset(name, retention_raw_days),
            "e": policy.end_offset,
            "i": policy.schedule,
        },
    )


def _refresh_policies_fit(conn: Connection, retention_raw_days: int) -> None:
    """Re-add a refresh policy whose start offset no longer fits the raw retention (the
    aggregates and their rows stay)."""
    for name in VIEWS:
        got = conn.execute(
            text(
                "SELECT CAST(j.config->>'start_offset' AS INTERVAL) FROM "
                "timescaledb_information.jobs j JOIN "
                "timescaledb_information.continuous_aggregates c "
                "ON j.hypertable_name IN (c.view_name, c.materialization_hypertable_name) "
                "WHERE c.view_name = :v AND j.proc_name = 'policy_refresh_continuous_aggregate'"
            ),
            {"v": name},
        ).scalar()
        if got != _start_offset(name, retention_raw_days):
            conn.execute(
                text(
                    "SELECT remove_continuous_aggregate_policy(CAST(:v AS regclass), "
                    "if_exists => true)"
                ),
                {"v": name},
            )
            _add_refresh_policy(conn, name, retention_raw_days)


def _width(name: str) -> timedelta:
    return next(level.width for level in LEVELS if level.table.name == name)


def drop(conn: Connection) -> None:
    """Drop the aggregates (their policies go with them), coarsest first.

    Dropping deletes the policies' jobs; a job that TimescaleDB's scheduler runs at that moment
    updates the same catalog rows and the drop fails with "tuple concurrently deleted". Each
    drop is a savepoint, retried a few times."""
    for name in reversed(VIEWS):
        for attempt in range(DROP_ATTEMPTS):
            try:
                with conn.begin_nested():
                    conn.exec_driver_sql(f"DROP MATERIALIZED VIEW IF EXISTS {name}")
                break
            except InternalError:
                if attempt == DROP_ATTEMPTS - 1:
                    raise
                log.info("dropping %s raced a policy job; retrying", name)
                time.sleep(0.2 * (attempt + 1))
    conn.dialect.its_caggs = False  # type: ignore[attr-defined]


DROP_ATTEMPTS = 8


def recreate(conn: Connection) -> None:
    """Drop and create the aggregates again, empty, with the same zone and retention (``its db
    rollup --rebuild``); the caller logs the readings for the worker to refill them."""
    tz = zone(conn)
    if tz is None:
        raise RuntimeError("continuous aggregates without a zone comment: run `its db upgrade`")
    days = retention_days(conn)
    drop(conn)
    create(conn, tz, retention_raw_days=days)


def retention_days(conn: Connection) -> int:
    """The raw retention policy's days on ``readings`` (0: none)."""
    got = conn.execute(
        text(
            "SELECT EXTRACT(EPOCH FROM CAST(config->>'drop_after' AS INTERVAL)) / 86400 "
            "FROM timescaledb_information.jobs "
            "WHERE proc_name = 'policy_retention' AND hypertable_name = 'readings'"
        )
    ).scalar()
    return int(got) if got is not None else 0


def set_retention(conn: Connection, days: int) -> None:
    """``add_retention_policy('readings', <days>)``, replacing any other; 0 keeps raw readings
    forever (no policy). Dropping raw chunks leaves the aggregates as they are."""
    if retention_days(conn) == days:
        return  # unchanged: keep the job (its id and schedule)
    conn.execute(text("SELECT remove_retention_policy('readings', if_exists => true)"))
    if days:
        conn.execute(
            text("SELECT add_retention_policy('readings', drop_after => :d)"),
            {"d": timedelta(days=days)},
        )


def setup(engine: Engine, tz: str, *, retention_raw_days: int = 0) -> bool:
    """Make the TimescaleDB roll-ups match the configuration: create the aggregates where
    missing, re-create them when the network's zone changed (their existing history is then
    logged dirty for the worker), and set the raw retention policy. Returns whether this is a
    TimescaleDB database (nothing is done elsewhere)."""
    with engine.begin() as conn:
        if not timescaledb(conn):
            return False
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('its-rollup-caggs'))"))
        from its.db import rollup_sql

        if rollup_sql.uses_row_triggers(conn) and rollup_sql.transition_tables_supported(conn):
            # made by an older TimescaleDB: one log row per reading; a statement trigger logs
            # each key once per statement
            rollup_sql.drop_triggers(conn)
            rollup_sql.create_triggers(conn)
        exists = _exist(conn)
        if exists and zone(conn) == tz:
            _refresh_policies_fit(conn, retention_raw_days)
            set_retention(conn, retention_raw_days)
            conn.dialect.its_caggs = True  # type: ignore[attr-defined]
            return True
        if exists:
            log.warning("re-creating the continuous aggregates for zone %s", tz)
            drop(conn)
        create(conn, tz, retention_raw_days=retention_raw_days)
        set_retention(conn, retention_raw_days)
        if exists or _has_readings(conn):
            conn.execute(schema.rollup_dirty.delete())
            rollup_sql.log_all_readings(conn)
    return True


def _has_readings(conn: Connection) -> bool:
    return conn.execute(select(schema.readings.c.station_id).limit(1)).first() is not None


# --------------------------------------------------------------------------- refresh


def _ranges(
    buckets: Iterable[datetime], width: timedelta, tz: str | None
) -> list[tuple[datetime, datetime]]:
    """Aligned [lo, hi) windows of ``width`` buckets holding ``buckets`` (5-minute starts),
    nearby ones merged so a refresh call covers a run of buckets."""
    out: list[tuple[datetime, datetime]] = []
    for b in sorted(buckets):
        lo = rollup.bucket_floor(b, width, tz)
        hi = rollup.bucket_ceil(b + rollup.FIVE_MIN, width, tz)
        if out and lo - out[-1][1] <= max(width, rollup.CLUSTER_GAP):
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def refresh_range(conn: Connection, view: str, lo: datetime, hi: datetime) -> None:
    """``CALL refresh_continuous_aggregate`` on an autocommit connection."""
    conn.execute(
        text("CALL refresh_continuous_aggregate(CAST(:v AS regclass), :lo, :hi)"),
        {"v": view, "lo": lo, "hi": hi},
    )


def refresh_buckets(engine: Engine, buckets: set[datetime], tz: str) -> None:
    """Refresh the aggregates over the windows holding these 5-minute buckets, finest first."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for level in LEVELS:
            for lo, hi in _ranges(buckets, level.width, tz if level.local else None):
                refresh_range(conn, level.table.name, lo, hi)


ROUND_KEYS = 200_000


def catch_up(
    engine: Engine,
    tz: str,
    *,
    batch: int = rollup.DEFAULT_BATCH,
    progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Refresh every range the dirty-key log names, then delete the keys it refreshed; the
    segment and corridor rows of those buckets are recomputed in the same transaction. Keys are
    read ``batch`` at a time; the hourly and daily aggregates are refreshed once per round of up
    to ``ROUND_KEYS`` keys (a day's aggregate is recomputed whole, so once is cheaper).

    Only keys this round read are deleted: a write that commits during the refresh logs its own
    key and stays for the next round. Returns the keys processed."""
    d = schema.rollup_dirty
    total = 0
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as auto:
        # one catch-up at a time (session lock: the refresh calls run outside a transaction)
        auto.execute(text("SELECT pg_advisory_lock(hashtext('its-rollup-worker'))"))
        try:
            while stop is None or not stop.is_set():
                ids: list[int] = []
                buckets: set[datetime] = set()
                after = -1
                while len(ids) < ROUND_KEYS:
                    rows = auto.execute(
                        select(d.c.id, d.c.bucket_start)
                        .where(d.c.id > after)
                        .order_by(d.c.id)
                        .limit(batch)
                    ).all()
                    if not rows:
                        break
                    after = rows[-1][0]
                    page = {b for _i, b in rows if rollup.ROLLUP_START <= b < rollup.ROLLUP_END}
                    for lo, hi in _ranges(page, rollup.FIVE_MIN, None):
                        refresh_range(auto, "readings_5m", lo, hi)
                    buckets |= page
                    ids += [i for i, _b in rows]
                    if progress is not None:
                        progress(len(rows))
                if not ids:
                    break
                for level in (LEVEL_1H, LEVEL_1D):
                    for lo, hi in _ranges(buckets, level.width, tz):
                        refresh_range(auto, level.table.name, lo, hi)
                with engine.begin() as conn:
                    rollup.refresh_targets(conn, buckets, readings_5m)
                    for i in range(0, len(ids), 50_000):
                        conn.execute(d.delete().where(d.c.id.in_(ids[i : i + 50_000])))
                total += len(ids)
        finally:
            auto.execute(text("SELECT pg_advisory_unlock(hashtext('its-rollup-worker'))"))
    return total
