"""Analytics at city scale: the API on roll-ups against the naive raw GROUP BY, same rows, same run.

    python bench/query_scale.py                          # 2,000 stations, 1 day (slow: minutes)
    python bench/query_scale.py --stations 200 --days 1  # a quick run, about a minute
    python bench/query_scale.py --keep                   # leave the databases for...
    python bench/query_scale.py --reuse URL [--reuse URL] # ...measuring again, no reload

First, on the empty database, it times ingest's write path with the roll-up triggers on and off
(``ingest_writes``: the issue asks for no worse than 0.8x). Then it builds a synthetic network (N stations on N segments in C corridors, L lanes each) written in the
documented network format (docs/network.md) and loaded like any other, then D days of 30-s
readings written straight into ``readings`` with one SQL statement per hour of data
(``generate_series`` on PostgreSQL, a recursive CTE on SQLite): the triggers log them and the
roll-up worker (``its db rollup``'s catch-up) rolls them up, timed. Then, per backend, it times
the API in process (FastAPI's ASGI test client) and the naive SQL an analyst would write against
``readings`` for:

- ``/aggregates?level=corridor&bucket=5m`` over the last 24 h,
- ``/aggregates?level=segment&bucket=1h`` over the last 7 days (or D) for 100 segments,
- ``/aggregates?level=station&bucket=1d`` over the last 30 days (or D), every station,
- ``/network`` (every segment's live state).

PostgreSQL gets a fresh database that is dropped afterwards; SQLite a temporary file. Progress
goes to stderr; one JSON line to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine, make_url

from its.config import Settings
from its.db import caggs, migrate, rollup, schema
from its.db.engine import make_engine
from its.db.timebucket import time_bucket
from its.network import Network, load_network


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the network


def network_geojson(stations: int, corridors: int, lanes: int, tz: str) -> dict[str, Any]:
    """N one-station segments in C corridors on a grid near Jakarta, in the documented format."""
    features = []
    per = math.ceil(stations / corridors)
    for i in range(stations):
        c, seq = divmod(i, per)
        lon, lat = 106.7 + c * 0.004, -6.3 + seq * 0.0015
        seg = f"C{c:02d}-S{seq:03d}"
        features.append({
            "type": "Feature",
            "geometry": {"type": "LineString", "coordinates": [[lon, lat], [lon, lat + 0.0012]]},
            "properties": {
                "kind": "segment", "segment_id": seg, "corridor_id": f"C{c:02d}",
                "corridor_name": f"Corridor {c}", "direction": "N", "seq": seq + 1,
                "name": f"Corridor {c} segment {seq + 1}", "road_class": "arterial",
                "lanes": lanes, "free_flow_kph": 60, "capacity_vph_lane": 1800,
            },
        })  # fmt: skip
        features.append({
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [lon, lat + 0.0006]},
            "properties": {
                "kind": "station", "station_id": f"ST-{i:05d}", "segment_id": seg,
                "lanes": lanes, "position_m": 60.0, "detector": "dual-loop",
            },
        })  # fmt: skip
    return {
        "type": "FeatureCollection",
        "properties": {"name": f"synthetic {stations}", "timezone": tz},
        "features": features,
    }


# --------------------------------------------------------------------------- loading

PG_HOUR = """
INSERT INTO readings (station_id, lane, interval_start, period_s, count, occupancy, speed_kph,
                      status, received_at)
SELECT s.station_id, l, t, 30, c, least(0.95, c * 120 * 6.7 / (v * 1000)), v, 'ok',
       t + INTERVAL '31 seconds'
FROM stations s
CROSS JOIN generate_series(1, s.lanes) AS l
CROSS JOIN generate_series(CAST(:lo AS timestamptz), CAST(:hi AS timestamptz)
                           - INTERVAL '30 seconds', INTERVAL '30 seconds') AS t
CROSS JOIN LATERAL (SELECT 4 + (abs(hashtext(s.station_id)) + l * 7
                                + CAST(extract(epoch FROM t) AS bigint) / 30) % 15 AS c,
                           CAST(18 + (abs(hashtext(s.station_id))
                                + CAST(extract(epoch FROM t) AS bigint) / 300) % 60
                                AS double precision) AS v) AS x
"""

SQLITE_HOUR = """
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 119),
     l(lane) AS (VALUES (1), (2), (3), (4), (5), (6))
INSERT INTO readings (station_id, lane, interval_start, period_s, count, occupancy, speed_kph,
                      status, received_at)
SELECT station_id, lane, ts, 30, c, min(0.95, c * 120 * 6.7 / (v * 1000)), v, 'ok', ts
FROM (
    SELECT s.station_id, l.lane,
           strftime('%Y-%m-%d %H:%M:%S', :lo, '+' || (30 * n.i) || ' seconds') || '.000000' AS ts,
           4 + (s.rowid + l.lane * 7 + (:e0 / 30 + n.i)) % 15 AS c,
           18.0 + (s.rowid + (:e0 / 30 + n.i) / 10) % 60 AS v
    FROM stations s JOIN l ON l.lane <= s.lanes CROSS JOIN n
)
"""


def load_readings(engine: Engine, t0: datetime, hours: int) -> tuple[int, float]:
    """Write ``hours`` hours of 30-s readings for every station, an hour per statement."""
    started = time.monotonic()
    for h in range(hours):
        lo, hi = t0 + timedelta(hours=h), t0 + timedelta(hours=h + 1)
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text(PG_HOUR), {"lo": lo, "hi": hi})
            else:
                conn.execute(
                    text(SQLITE_HOUR),
                    {"lo": lo.strftime("%Y-%m-%d %H:%M:%S"), "e0": int(lo.timestamp())},
                )
        elapsed = time.monotonic() - started
        log(
            f"  loaded {h + 1}/{hours} h in {elapsed:.0f} s (eta {elapsed / (h + 1) * (hours - h - 1):.0f} s)"
        )
    with engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(schema.readings)).scalar_one()
    return rows, time.monotonic() - started


# --------------------------------------------------------------------------- timing


def timed(fn: Any, repeat: int) -> dict[str, float]:
    fn()  # warm-up: caches, plans, the pool
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    p95 = samples[min(len(samples) - 1, math.ceil(0.95 * len(samples)) - 1)]
    return {"p50_ms": round(statistics.median(samples), 1), "p95_ms": round(p95, 1)}


def naive_sql(
    engine: Engine,
    level: str,
    bucket: timedelta,
    tz: str | None,
    start: datetime,
    end: datetime,
    ids: list[str] | None = None,
) -> Any:
    """The GROUP BY an analyst would write on the raw rows (sums and means per target)."""
    r, st, sg = schema.readings, schema.stations, schema.segments
    key = {"station": r.c.station_id, "segment": st.c.segment_id, "corridor": sg.c.corridor_id}[
        level
    ]
    b = time_bucket(bucket, r.c.interval_start, tz)
    q = (
        select(key, b, func.sum(r.c["count"]), func.avg(r.c.speed_kph), func.avg(r.c.occupancy))
        .select_from(
            r.join(st, st.c.station_id == r.c.station_id).join(
                sg, sg.c.segment_id == st.c.segment_id
            )
        )
        .where(r.c.interval_start >= start, r.c.interval_start < end)
        .group_by(key, b)
    )
    if ids:
        q = q.where(key.in_(ids))

    def run() -> int:
        with engine.connect() as conn:
            return len(conn.execute(q).all())

    return run


def measure(engine: Engine, network: Network, end: datetime, days: int, repeat: int) -> dict:
    from fastapi.testclient import TestClient

    from its.api.app import create_app
    from its.auth import keys

    settings = Settings(_env_file=None, stale_after_s=10**6)
    with engine.begin() as conn:  # a read key, as an analyst's program would send
        _key, secret = keys.create_key(conn, "query-scale bench", scope="read", actor=None)
    client = TestClient(
        create_app(settings, engine=engine, network=network), headers={"X-API-Key": secret}
    )
    seg_ids = [s.segment_id for s in network.segments[:100]]
    tz = network.timezone
    cases = {
        "corridor_5m_24h": ("corridor", "5m", timedelta(minutes=5), None, timedelta(hours=24), None),
        "segment_1h_7d_100": ("segment", "1h", timedelta(hours=1), tz, timedelta(days=min(7, days)), seg_ids),
        "station_1d_30d": ("station", "1d", timedelta(days=1), tz, timedelta(days=min(30, days)), None),
    }  # fmt: skip
    out: dict[str, Any] = {}
    for name, (level, bucket, width, zone, span, ids) in cases.items():
        start = end - span
        params: list[tuple[str, str]] = [
            ("level", level), ("bucket", bucket),
            ("start", start.isoformat()), ("end", end.isoformat()),
        ]  # fmt: skip
        params += [("id", i) for i in ids or []]

        def call(p: list[tuple[str, str]] = params) -> int:
            # timed to the last byte of the answer; the client's JSON parsing is not the API's
            resp = client.get("/api/v1/aggregates", params=p)
            resp.raise_for_status()
            return len(resp.content)

        first = client.get("/api/v1/aggregates", params=params)
        first.raise_for_status()
        rows = len(first.json()["rows"])
        api = timed(call, repeat)
        raw = timed(naive_sql(engine, level, width, zone, start, end, ids), max(3, repeat // 3))
        out[name] = {
            "rows": rows, "api": api, "raw_group_by": raw,
            "speedup_p50": round(raw["p50_ms"] / api["p50_ms"], 1),
        }  # fmt: skip
        log(f"  {name}: {out[name]}")

    def network_call() -> int:
        resp = client.get("/api/v1/network")
        resp.raise_for_status()
        return len(resp.content)

    segments = len(client.get("/api/v1/network").json()["features"])
    out["network"] = {"segments": segments, "api": timed(network_call, repeat)}
    log(f"  network: {out['network']}")
    return out


def ingest_writes(engine: Engine, network: Network, before: datetime, rounds: int = 4) -> dict:
    """Ingest's write path (``insert_readings``, batches of 1,200 rows as ``its ingest`` writes
    them) with the roll-up triggers on and off, alternated on fresh keys 40 days before the
    data, so the ratio holds on a noisy machine. The rows are deleted afterwards."""
    from sqlalchemy import delete

    from its.db import rollup_sql
    from its.db.writes import insert_readings

    stations = [s.station_id for s in network.stations[:400]]
    origin = before - timedelta(days=40)
    rates: dict[str, list[float]] = {"on": [], "off": []}
    step = 0
    for k in range(rounds * 2):
        mode = "off" if k % 2 == 0 else "on"
        if mode == "off":
            with engine.begin() as conn:
                rollup_sql.drop_triggers(conn)
        rows = 0
        started = time.perf_counter()
        try:
            for _ in range(10):  # ten batches of 400 stations x 3 lanes
                at = origin + timedelta(seconds=30 * step)
                step += 1
                batch = [
                    {"station_id": st, "lane": lane, "interval_start": at, "period_s": 30,
                     "count": 7, "occupancy": 0.05, "speed_kph": 50.0, "status": "ok",
                     "received_at": at}
                    for st in stations for lane in (1, 2, 3)
                ]  # fmt: skip
                with engine.begin() as conn:
                    rows += insert_readings(conn, batch)
        finally:
            if mode == "off":
                with engine.begin() as conn:
                    rollup_sql.create_triggers(conn)
        rates[mode].append(rows / (time.perf_counter() - started))
    with engine.begin() as conn:
        r, d = schema.readings, schema.rollup_dirty
        conn.execute(delete(r).where(r.c.interval_start < before - timedelta(days=35)))
        conn.execute(delete(d).where(d.c.bucket_start < before - timedelta(days=35)))
    on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
    return {
        "rows_per_s_triggers_on": round(on),
        "rows_per_s_triggers_off": round(off),
        "ratio": round(on / off, 2),
    }


# --------------------------------------------------------------------------- backends


def reuse_backend(url: str, network: Network, days: int, repeat: int) -> dict[str, Any]:
    """Measure a database an earlier ``--keep`` run loaded and rolled up (same network options),
    without loading it again: the window ends where its data ends."""
    engine = make_engine(url)
    try:
        migrate.upgrade_and_seed(engine, network)  # a newer migration may have come since
        rollup.catch_up(engine, network.timezone, batch=10_000)
        r = schema.readings
        with engine.connect() as conn:
            rows = conn.execute(select(func.count()).select_from(r)).scalar_one()
            last = conn.execute(select(func.max(r.c.interval_start))).scalar_one()
        end = rollup.bucket_ceil(last + timedelta(seconds=30), timedelta(hours=1), None)
        log(f"{engine.dialect.name}: reusing {rows} rows ending {end.isoformat()}")
        return {"rows": rows, "reused": True, "cases": measure(engine, network, end, days, repeat)}
    finally:
        engine.dispose()


def run_backend(
    name: str, url: str, network: Network, t0: datetime, hours: int, days: int, repeat: int
) -> dict[str, Any]:
    engine = make_engine(url)
    try:
        migrate.upgrade_and_seed(engine, network)
        writes = ingest_writes(engine, network, t0)
        log(f"{name}: ingest writes {writes}")
        caggs.setup(engine, network.timezone)  # TimescaleDB's continuous aggregates (else no-op)
        log(f"{name}: loading {hours} h for {len(network.stations)} stations")
        rows, load_s = load_readings(engine, t0, hours)
        with engine.connect() as conn:
            dirty = rollup.pending(conn)
        started = time.monotonic()
        done = [0]

        def progress(n: int) -> None:
            done[0] += n
            log(
                f"  rolled up {done[0]} keys ({dirty} logged) in {time.monotonic() - started:.0f} s"
            )

        rollup.catch_up(engine, network.timezone, batch=10_000, progress=progress)
        rollup_s = time.monotonic() - started
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE"))
        result = {
            "ingest_writes": writes,
            "rows": rows,
            "load_s": round(load_s, 1),
            "load_rows_per_s": round(rows / load_s),
            "rollup_s": round(rollup_s, 1),
            "rollup_rows_per_s": round(rows / rollup_s) if rollup_s else None,
        }
        log(f"  {result}")
        result["cases"] = measure(engine, network, t0 + timedelta(hours=hours), days, repeat)
        return result
    finally:
        engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stations", type=int, default=2000)
    ap.add_argument("--corridors", type=int, default=50)
    ap.add_argument("--lanes", type=int, default=3, choices=range(1, 7))
    ap.add_argument("--days", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=15, help="timed calls per case (after a warm-up)")
    ap.add_argument("--timezone", default="Asia/Jakarta")
    ap.add_argument("--backends", default="postgresql,sqlite")
    ap.add_argument(
        "--pg-admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    ap.add_argument(
        "--keep",
        action="store_true",
        help="keep the databases it builds (their URLs go to stderr), to measure again with --reuse",
    )
    ap.add_argument(
        "--reuse",
        action="append",
        default=[],
        metavar="URL",
        help="measure a database a --keep run built, instead of building one (repeatable)",
    )
    ap.add_argument(
        "--timescale-admin-url",
        default="postgresql+psycopg://postgres@127.0.0.1:5433/postgres",
        help="a TimescaleDB server, for --backends timescaledb (docs/timescaledb.md)",
    )
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="its-query-scale-"))
    path = tmp / "network.geojson"
    path.write_text(
        json.dumps(network_geojson(args.stations, args.corridors, args.lanes, args.timezone))
    )
    network = load_network(path)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    hours = args.days * 24
    t0 = now - timedelta(hours=hours)
    report: dict[str, Any] = {
        "bench": "query_scale", "stations": args.stations, "segments": len(network.segments),
        "corridors": len(network.corridors), "lanes": args.lanes, "days": args.days,
        "repeat": args.repeat, "backends": {},
    }  # fmt: skip
    if args.reuse:
        for url in args.reuse:
            backend = make_url(url).get_backend_name()
            report["backends"][backend] = reuse_backend(url, network, args.days, args.repeat)
        path.unlink()
        tmp.rmdir()
        print(json.dumps(report), flush=True)
        return
    for backend in args.backends.split(","):
        if backend in ("postgresql", "timescaledb"):
            admin_url = args.pg_admin_url if backend == "postgresql" else args.timescale_admin_url
            admin = make_engine(admin_url, isolation_level="AUTOCOMMIT")
            db = f"its_bench_{uuid.uuid4().hex[:8]}"
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{db}"'))
            try:
                url = make_url(admin_url).set(database=db).render_as_string(False)
                report["backends"][backend] = run_backend(
                    backend, url, network, t0, hours, args.days, args.repeat
                )
            finally:
                if args.keep:
                    log(f"kept: --reuse {url}")
                else:
                    with admin.connect() as conn:
                        conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
                admin.dispose()
        elif backend == "sqlite":
            url = f"sqlite:///{tmp / 'its.db'}"
            if args.keep:
                log(f"kept: --reuse {url}")
            report["backends"][backend] = run_backend(
                backend, url, network, t0, hours, args.days, args.repeat
            )
        else:
            ap.error(f"unknown backend {backend!r}")
    if not args.keep:
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
