"""Bulk import rate: `its import`'s loader against a plain binary COPY of the same rows, same run.

    python bench/import_rate.py                                  # 2,000 stations x 2 h, both backends
    python bench/import_rate.py --stations 200 --hours 1 --backends sqlite   # a quick run

Builds the synthetic city of bench/query_scale.py (N one-station segments in C corridors, L lanes
each), writes H hours of 30-s observations of every station to an NDJSON file in the wire
contract (bare observations, one a line; ``--gzip`` compresses it), and per backend:

- times the import (:class:`its.importer.load.Importer`: read, validate as ingest does, write
  through COPY + ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` on PostgreSQL, ``executemany``
  on SQLite), the roll-up triggers firing as in production;
- times a second import of the same file (every row a duplicate: the exactly-once path);
- times the roll-up catch-up that `its import` runs afterwards;
- times the retention clean-up deleting all those raw rows again (5,000 rows a transaction);
- PostgreSQL: times the reference, a plain binary COPY of the same rows (already parsed, no
  validation) into an empty table with readings' columns and indexes and no trigger: the
  database's ceiling. SQLite: ``executemany`` of the same tuples into such a table.

PostgreSQL gets a fresh database, dropped afterwards; SQLite a temporary file. Progress goes to
stderr; one JSON line to stdout.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.engine import make_url

from its.config import Settings
from its.db import migrate, retention, rollup
from its.db.engine import make_engine
from its.importer.bulk import COLUMNS
from its.importer.load import Importer
from its.network import Network, load_network

sys.path.insert(0, str(Path(__file__).parent))
from query_scale import network_geojson  # noqa: E402

REFERENCE_ROWS = 300_000  # rows of the COPY reference (a rate; more would only cost memory)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def write_file(path: Path, network: Network, t0: datetime, hours: int, compress: bool) -> int:
    """H hours of every station's observations, one bare observation a line; returns lines."""
    opener = gzip.open if compress else open
    lines = 0
    with opener(path, "wb") as f:
        for i in range(hours * 120):
            t = t0 + timedelta(seconds=30 * i)
            stamp = t.isoformat().replace("+00:00", "Z")
            chunk = []
            for k, st in enumerate(network.stations):
                v = 18.0 + (k + i // 10) % 60
                lanes = []
                for lane in range(1, st.lanes + 1):
                    c = 4 + (k + lane * 7 + i) % 15
                    occ = round(min(0.95, c * 120 * 6.7 / (v * 1000)), 4)
                    lanes.append({"lane": lane, "count": c, "occupancy": occ, "speed_kph": v})
                chunk.append(
                    orjson.dumps(
                        {
                            "v": 1,
                            "station_id": st.station_id,
                            "interval_start": stamp,
                            "period_s": 30,
                            "lanes": lanes,
                            "status": "ok",
                        }
                    )  # fmt: skip
                )
            f.write(b"\n".join(chunk) + b"\n")
            lines += len(chunk)
    return lines


def reference_rows(path: Path, limit: int) -> list[tuple[Any, ...]]:
    """The first ``limit`` rows of the file as tuples in readings' column order."""
    rows: list[tuple[Any, ...]] = []
    now = datetime.now(UTC)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        for line in f:
            obs = orjson.loads(line)
            t = datetime.fromisoformat(obs["interval_start"])
            for la in obs["lanes"]:
                rows.append((obs["station_id"], la["lane"], t, 30, la["count"], la["occupancy"],
                             la["speed_kph"], "ok", now))  # fmt: skip
            if len(rows) >= limit:
                return rows
    return rows


def copy_reference(engine: Any, rows: list[tuple[Any, ...]]) -> float:
    """Rows/s of the plainest load of the same rows into a trigger-free copy of readings."""
    cols = ", ".join(f'"{c}"' for c in COLUMNS)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("CREATE TABLE bench_copy (LIKE readings INCLUDING ALL)")
        else:
            conn.exec_driver_sql(
                "CREATE TABLE bench_copy (station_id TEXT, lane INTEGER, interval_start TEXT, "
                "period_s INTEGER, count INTEGER, occupancy REAL, speed_kph REAL, status TEXT, "
                "received_at TEXT, PRIMARY KEY (station_id, lane, interval_start))"
            )
            conn.exec_driver_sql("CREATE INDEX ix_bench_copy_t ON bench_copy (interval_start)")
    started = time.perf_counter()
    with engine.begin() as conn:
        dbapi = conn.connection.driver_connection
        if engine.dialect.name == "postgresql":
            with (
                dbapi.cursor() as cur,
                cur.copy(f"COPY bench_copy ({cols}) FROM STDIN (FORMAT BINARY)") as copy,
            ):
                copy.set_types(["text", "int2", "timestamptz", "int2", "int4", "float8",
                                "float8", "text", "timestamptz"])  # fmt: skip
                for row in rows:
                    copy.write_row(row)
        else:
            stamp = "%Y-%m-%d %H:%M:%S.%f"
            values = [(*r[:2], r[2].strftime(stamp), *r[3:8], r[8].strftime(stamp)) for r in rows]
            started = time.perf_counter()  # the formatting is Python's, not the database's
            dbapi.executemany(f"INSERT INTO bench_copy ({cols}) VALUES (?,?,?,?,?,?,?,?,?)", values)
    return len(rows) / (time.perf_counter() - started)


def run_backend(url: str, network: Network, path: Path, tmp: Path, batch_rows: int) -> dict:
    engine = make_engine(url)
    try:
        migrate.upgrade_and_seed(engine, network)
        settings = Settings(_env_file=None, data_dir=tmp, retention_raw_days=0)
        size = path.stat().st_size
        seen = [0]

        def progress(n: int) -> None:
            seen[0] += n
            if seen[0] * 10 // size != (seen[0] - n) * 10 // size:
                log(f"  {seen[0] * 100 // size}% of {size:,} bytes")

        importer = Importer(engine, settings, batch_rows=batch_rows, progress=progress)
        first = importer.run(importer.sources([path]))
        log(f"  {first.summary()}")
        seen[0] = 0
        importer = Importer(engine, settings, batch_rows=batch_rows, progress=progress)
        second = importer.run(importer.sources([path]))
        log(f"  again: {second.summary()}")
        with engine.connect() as conn:
            dirty = rollup.pending(conn)
        started = time.perf_counter()
        keys = rollup.catch_up(engine, network.timezone, batch=10_000)
        rollup_s = time.perf_counter() - started
        log(f"  rolled up {keys:,} keys ({dirty:,} logged) in {rollup_s:.1f} s")
        started = time.perf_counter()
        cleaned = retention.clean_readings(engine, datetime.now(UTC), batch_rows=5000)
        retention_s = time.perf_counter() - started
        log(f"  retention: {cleaned.summary()} in {retention_s:.1f} s")
        rows = reference_rows(path, REFERENCE_ROWS)
        reference = copy_reference(engine, rows)
        log(f"  reference: {reference:,.0f} rows/s over {len(rows):,} rows")
        return {
            "lines": first.lines,
            "readings": first.stored,
            "dead_letters": first.dead_letters,
            "import_s": round(first.seconds, 1),
            "import_readings_per_s": round(first.rate),
            "reimport_s": round(second.seconds, 1),
            "reimport_readings_per_s": round(second.rate),
            "reimport_stored": second.stored,
            "rollup_keys": keys,
            "rollup_s": round(rollup_s, 1),
            "retention_deleted": cleaned.readings_deleted,
            "retention_s": round(retention_s, 1),
            "retention_rows_per_s": round(cleaned.readings_deleted / retention_s),
            "reference_rows_per_s": round(reference),
            "reference": "binary COPY" if engine.dialect.name == "postgresql" else "executemany",
            "ratio_to_reference": round(first.rate / reference, 3),
        }
    finally:
        engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stations", type=int, default=2000)
    ap.add_argument("--corridors", type=int, default=50)
    ap.add_argument("--lanes", type=int, default=3, choices=range(1, 7))
    ap.add_argument("--hours", type=int, default=2)
    ap.add_argument("--gzip", action="store_true", help="compress the NDJSON file")
    ap.add_argument("--batch-rows", type=int, default=50_000)
    ap.add_argument("--backends", default="postgresql,sqlite")
    ap.add_argument(
        "--pg-admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="its-import-rate-"))
    net_path = tmp / "network.geojson"
    net_path.write_text(
        json.dumps(network_geojson(args.stations, args.corridors, args.lanes, "Asia/Jakarta"))
    )
    network = load_network(net_path)
    t0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(
        hours=args.hours + 1
    )
    path = tmp / ("history.ndjson.gz" if args.gzip else "history.ndjson")
    log(f"writing {args.hours} h of {args.stations} stations to {path}")
    lines = write_file(path, network, t0, args.hours, args.gzip)
    log(f"  {lines:,} lines, {path.stat().st_size:,} bytes")
    report: dict[str, Any] = {
        "bench": "import_rate", "stations": args.stations, "lanes": args.lanes,
        "hours": args.hours, "gzip": args.gzip, "file_bytes": path.stat().st_size,
        "batch_rows": args.batch_rows, "backends": {},
    }  # fmt: skip
    for backend in args.backends.split(","):
        log(f"{backend}:")
        if backend == "postgresql":
            admin = make_engine(args.pg_admin_url, isolation_level="AUTOCOMMIT")
            db = f"its_bench_{uuid.uuid4().hex[:8]}"
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{db}"'))
            try:
                url = make_url(args.pg_admin_url).set(database=db).render_as_string(False)
                report["backends"][backend] = run_backend(url, network, path, tmp, args.batch_rows)
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
                admin.dispose()
        elif backend == "sqlite":
            url = f"sqlite:///{tmp / 'its.db'}"
            report["backends"][backend] = run_backend(url, network, path, tmp, args.batch_rows)
        else:
            ap.error(f"unknown backend {backend!r}")
    path.unlink()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
