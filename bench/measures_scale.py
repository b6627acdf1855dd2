"""Performance measures at city scale: /measures, /reliability and lane series against
/aggregates (what they are built on) and the SQL views, same rows, same run.

    python bench/measures_scale.py                       # 2,000 stations, 6 h, PostgreSQL
    python bench/measures_scale.py --stations 200 --hours 2 --backends sqlite   # quick

Builds the synthetic network of bench/query_scale.py (N one-station segments in C corridors, the
documented network format) and H hours of 30-s readings written straight into ``readings``, rolls
them up, then times in process (FastAPI's ASGI test client), over the whole window:

- ``/measures?level=corridor&bucket=5m`` (every corridor direction) against
  ``/aggregates?level=corridor&bucket=5m`` (the reference: the same roll-ups, no measures) and
  ``SELECT * FROM v_corridor_5m`` over the window (the Grafana view);
- ``/measures?level=segment&bucket=1h`` for 100 segments against ``/aggregates`` likewise;
- ``/reliability`` for every corridor over the day that holds the window;
- ``/stations/{id}/lanes?bucket=5m`` (raw rows of one station).

Progress goes to stderr; one JSON line to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url

sys.path.insert(0, str(Path(__file__).parent))
from query_scale import load_readings, log, network_geojson, timed  # noqa: E402

from its.config import Settings  # noqa: E402
from its.db import migrate, rollup  # noqa: E402
from its.db.engine import make_engine  # noqa: E402
from its.network import Network, load_network  # noqa: E402


def measure(engine: Engine, network: Network, start: datetime, end: datetime, repeat: int) -> dict:
    from fastapi.testclient import TestClient

    from its.api.app import create_app

    settings = Settings(_env_file=None, auth_anonymous_read=True)
    client = TestClient(create_app(settings, engine=engine, network=network))
    window = [("start", start.isoformat()), ("end", end.isoformat())]
    seg_ids = [("id", s.segment_id) for s in network.segments[:100]]

    def getter(path: str, params: list[tuple[str, str]], key: str = "rows") -> Any:
        def call() -> int:
            resp = client.get(path, params=params)
            resp.raise_for_status()
            return len(resp.json()[key])

        return call

    def view_sql() -> int:
        with engine.connect() as conn:
            return len(
                conn.execute(
                    text(
                        "SELECT * FROM v_corridor_5m WHERE bucket_start >= :a AND bucket_start < :b"
                    ),
                    {"a": start, "b": end},
                ).all()
            )

    cases = {
        "measures_corridor_5m": getter(
            "/api/v1/measures", [("level", "corridor"), ("bucket", "5m"), *window]
        ),
        "aggregates_corridor_5m": getter(
            "/api/v1/aggregates", [("level", "corridor"), ("bucket", "5m"), *window]
        ),
        "view_v_corridor_5m": view_sql,
        "measures_segment_1h_100": getter(
            "/api/v1/measures", [("level", "segment"), ("bucket", "1h"), *window, *seg_ids]
        ),
        "aggregates_segment_1h_100": getter(
            "/api/v1/aggregates", [("level", "segment"), ("bucket", "1h"), *window, *seg_ids]
        ),
        "reliability_day": getter("/api/v1/reliability", window),
        "lanes_5m": getter(
            f"/api/v1/stations/{network.stations[0].station_id}/lanes",
            [("bucket", "5m"), *window],
            "points",
        ),
    }
    out: dict[str, Any] = {}
    for name, fn in cases.items():
        rows = fn()
        out[name] = {"rows": rows, **timed(fn, repeat if "reliability" not in name else 3)}
        log(f"  {name}: {out[name]}")
    for a, b in (("measures_corridor_5m", "aggregates_corridor_5m"),
                 ("measures_segment_1h_100", "aggregates_segment_1h_100")):  # fmt: skip
        out[a]["vs_aggregates_p50"] = round(out[a]["p50_ms"] / out[b]["p50_ms"], 2)
    return out


def run_backend(url: str, network: Network, t0: datetime, hours: int, repeat: int) -> dict:
    engine = make_engine(url)
    try:
        migrate.upgrade_and_seed(engine, network)
        log(f"loading {hours} h for {len(network.stations)} stations")
        rows, load_s = load_readings(engine, t0, hours)
        started = time.monotonic()
        done = [0]

        def progress(n: int) -> None:
            done[0] += n
            log(f"  rolled up {done[0]} keys in {time.monotonic() - started:.0f} s")

        rollup.catch_up(engine, network.timezone, batch=10_000, progress=progress)
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE"))
        result: dict[str, Any] = {"rows": rows, "load_s": round(load_s, 1)}
        result["rollup_s"] = round(time.monotonic() - started, 1)
        result["cases"] = measure(engine, network, t0, t0 + timedelta(hours=hours), repeat)
        return result
    finally:
        engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stations", type=int, default=2000)
    ap.add_argument("--corridors", type=int, default=50)
    ap.add_argument("--lanes", type=int, default=3, choices=range(1, 7))
    ap.add_argument("--hours", type=int, default=6, choices=range(1, 25))
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--timezone", default="Asia/Jakarta")
    ap.add_argument("--backends", default="postgresql")
    ap.add_argument(
        "--pg-admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="its-measures-scale-"))
    path = tmp / "network.geojson"
    path.write_text(
        json.dumps(network_geojson(args.stations, args.corridors, args.lanes, args.timezone))
    )
    network = load_network(path)
    # a local day's first hours, so the reliability day holds the whole window
    day = datetime.now(UTC).replace(hour=17, minute=0, second=0, microsecond=0) - timedelta(days=2)
    report: dict[str, Any] = {
        "bench": "measures_scale", "stations": args.stations, "segments": len(network.segments),
        "corridors": len(network.corridors), "lanes": args.lanes, "hours": args.hours,
        "repeat": args.repeat, "backends": {},
    }  # fmt: skip
    for backend in args.backends.split(","):
        if backend == "postgresql":
            admin = make_engine(args.pg_admin_url, isolation_level="AUTOCOMMIT")
            db = f"its_bench_{uuid.uuid4().hex[:8]}"
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{db}"'))
            try:
                url = make_url(args.pg_admin_url).set(database=db).render_as_string(False)
                report["backends"][backend] = run_backend(
                    url, network, day, args.hours, args.repeat
                )
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
                admin.dispose()
        elif backend == "sqlite":
            url = f"sqlite:///{tmp / 'its.db'}"
            report["backends"][backend] = run_backend(url, network, day, args.hours, args.repeat)
        else:
            ap.error(f"unknown backend {backend!r}")
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
