"""The alerts evaluator (1-minute congestion and incidents, 5-minute health and bottlenecks) on a
synthetic city: how long a catch-up over an hour of history and a live one-minute step take.

    python bench/detect_scale.py --stations 2000 --hours 2      # PostgreSQL, a temporary database

One JSON line on stdout, progress on stderr. The reference, measured in the same run, is the
evaluator's own input read: one 1-minute station aggregate over the same window (the rules'
work is what the step adds to it). The readings are query_scale's synthetic ones (speeds 18-78
km/h changing every 5 minutes per station), so the alert counts are stress, not realism.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from its.alerts import state as rule_state
from its.alerts.config import AlertSettings
from its.alerts.evaluator import Evaluator
from its.db import migrate, schema
from its.db.engine import make_engine
from its.network import load_network
from its.service.traffic import aggregate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from query_scale import load_readings, network_geojson  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stations", type=int, default=2000)
    ap.add_argument("--corridors", type=int, default=50)
    ap.add_argument("--hours", type=int, default=2)
    ap.add_argument(
        "--pg-admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    ap.add_argument("--profile", action="store_true", help="profile the live step (stderr)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="its-detect-scale-"))
    path = tmp / "network.geojson"
    path.write_text(json.dumps(network_geojson(args.stations, args.corridors, 3, "Asia/Jakarta")))
    network = load_network(path)
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    t0 = end - timedelta(hours=args.hours)
    admin = make_engine(args.pg_admin_url, isolation_level="AUTOCOMMIT")
    db = f"its_detect_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db}"'))
    report: dict[str, Any] = {"bench": "detect_scale", "stations": args.stations}
    try:
        engine = make_engine(make_url(args.pg_admin_url).set(database=db).render_as_string(False))
        migrate.upgrade_and_seed(engine, network)
        rows, load_s = load_readings(engine, t0, args.hours)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
        report.update(rows=rows, load_s=round(load_s, 1))
        cfg = AlertSettings(_env_file=None, backfill_s=3600)
        ev = Evaluator(
            engine, network, alert_settings=cfg, wall_clock=lambda: end + timedelta(seconds=31)
        )
        started = time.perf_counter()
        steps = minutes = 0
        while True:
            r = ev.step()
            steps += 1
            minutes += r.ticks
            log(f"  step {steps}: {r.ticks} minutes until {r.evaluated_until}")
            if r.buckets_behind == 0:
                break
        catch_up_s = time.perf_counter() - started
        # a live step: one minute (ending on a 5-minute mark, the heaviest kind)
        with engine.begin() as conn:
            rule_state.save_progress(conn, end - timedelta(minutes=1), end)
        profiler = cProfile.Profile() if args.profile else None
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        live = ev.step()
        live_s = time.perf_counter() - started
        if profiler is not None:
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(25)
        ev.close()
        with engine.connect() as conn:
            started = time.perf_counter()
            aggregate(conn, network, "station", end - timedelta(minutes=3), end, 60)
            ref_live_s = time.perf_counter() - started
            by_rule = dict(
                conn.execute(
                    select(schema.alerts.c.rule, func.count()).group_by(schema.alerts.c.rule)
                ).all()
            )
        report.update(
            catch_up_minutes=minutes,
            catch_up_s=round(catch_up_s, 1),
            catch_up_ms_per_minute=round(1000 * catch_up_s / max(minutes, 1), 1),
            live_step_minutes=live.ticks,
            live_step_s=round(live_s, 2),
            reference_station_minute_read_s=round(ref_live_s, 2),
            alerts_by_rule=by_rule,
        )
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
