"""Engines for every backend, and run-time detection of TimescaleDB.

The backend is detected once per engine (``pg_extension``) and remembered on the engine's dialect,
which is per engine, so the ``time_bucket`` construct can compile to TimescaleDB's function on one
engine and to ``date_bin`` on another in the same process.
"""

from __future__ import annotations

import functools
import sqlite3
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from its.errors import StorageError

BUCKET_ORIGIN = datetime(2000, 1, 3)  # a Monday: TimescaleDB's default origin


class Backend(StrEnum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"
    TIMESCALEDB = "timescaledb"


def normalise_url(url: str) -> str:
    """Use psycopg 3 for any PostgreSQL URL, whatever driver the user named."""
    u = make_url(url)
    if u.get_backend_name() == "postgresql" and u.get_driver_name() != "psycopg":
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


@functools.lru_cache(maxsize=8192)
def _sqlite_bucket(width_s: int, ts: str | None, tz: str) -> str | None:
    """SQLite's bucket in a local time zone: buckets start at local wall-clock boundaries
    (so a day is a local day, also across DST), returned as naive UTC text in SQLAlchemy's
    storage form.

    Memoised (it is a pure function): SQLite calls it once per row, and a month of daily figures
    regrouped from hourly roll-ups is 1.4 million rows at 2,000 stations but only 720 distinct
    hour starts; the zone arithmetic per call cost more than the rest of the query."""
    if ts is None:
        return None
    zone = ZoneInfo(tz)
    local = datetime.fromisoformat(ts).replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None)
    n = (local - BUCKET_ORIGIN) // timedelta(seconds=width_s)
    start_local = (BUCKET_ORIGIN + n * timedelta(seconds=width_s)).replace(tzinfo=zone)
    return start_local.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _on_sqlite_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
    dbapi_conn.create_function("its_bucket", 3, _sqlite_bucket, deterministic=True)


#: Execution option: fetch this statement's rows in PostgreSQL's binary format. Parsing text
#: floats and timestamps is most of the cost of fetching thousands of roll-up rows (14,400 rows of
#: 11 columns: 36 ms of CPU as text, 15 ms binary); the values are the same. Only for statements
#: whose result types psycopg loads itself (numbers, text, timestamps), not JSON or enums that
#: SQLAlchemy post-processes.
BINARY_RESULTS = "its_binary_results"


def _binary_results(
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> None:
    if context is not None and context.execution_options.get(BINARY_RESULTS):
        from psycopg import pq

        cursor.format = pq.Format.BINARY


def make_engine(url: str, **kwargs: object) -> Engine:
    """An engine for ``url`` with the settings each backend needs, backend detected."""
    url = normalise_url(url)
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )
        event.listen(engine, "connect", _on_sqlite_connect)
    elif u.get_backend_name() == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "before_cursor_execute", _binary_results)
    else:
        raise StorageError(
            f"unsupported database {u.get_backend_name()!r}: use SQLite or PostgreSQL"
        )
    detect_backend(engine)
    return engine


def detect_backend(engine: Engine, *, refresh: bool = False) -> Backend:
    """The engine's backend; TimescaleDB when the extension is installed in its database."""
    dialect = engine.dialect
    known = getattr(dialect, "its_backend", None)
    if known is not None and not refresh:
        return known
    if dialect.name == "sqlite":
        backend = Backend.SQLITE
    else:
        try:
            with engine.connect() as conn:
                has = conn.execute(
                    text("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
                ).first()
        except SQLAlchemyError as exc:
            raise StorageError(
                f"cannot reach the database: {exc.__class__.__name__}: {exc}"
            ) from exc
        backend = Backend.TIMESCALEDB if has else Backend.POSTGRESQL
    dialect.its_backend = backend  # type: ignore[attr-defined]
    return backend
