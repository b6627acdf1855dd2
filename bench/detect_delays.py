"""Quick detection check for the incident, congestion and bottleneck rules on simulated days.

Not the scoring benchmark (that is ``bench/detection.py``): a developer's check that writes the
simulator's observations (``sim.model.TrafficModel``, the data ``its sim backfill`` publishes)
straight into a fresh SQLite store, runs the real evaluator over them on the data clock and
compares its alerts with the scenario's truth. One JSON line on stdout, progress on stderr:

    python bench/detect_delays.py --hours 24 --incidents 0        # a normal day: alarms raised
    python bench/detect_delays.py --hours 8 --incidents 10 --seed 3   # detection delays

Figures: per rule the alerts raised; for incidents the delay from each incident's start to the
first ``incident`` alert on its segment (missed if none before its end), and incident alerts on
segments without an incident (false alarms); for congestion the delay from the minute the
segment's 1-min speed fell below the raise threshold (and stayed there) to the alert.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from its.alerts import store
from its.alerts.config import AlertSettings
from its.alerts.evaluator import Evaluator
from its.db import migrate, schema
from its.db.engine import make_engine
from its.db.writes import insert_readings, reading_rows
from its.network import load_network
from its.service.traffic import segment_buckets
from sim.model import Rng, TrafficModel, intervals, stable_key
from sim.scenario import Incident, Scenario

START = datetime(2026, 11, 23, 17, 0, tzinfo=UTC)  # 00:00 Tuesday in Jakarta


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def random_incidents(network: Any, n: int, start: datetime, hours: float, seed: int) -> Scenario:
    """``n`` incidents of 15-45 min on segments with a station downstream, in daytime."""
    rng = Rng(stable_key(seed, "incidents"))
    segs = []
    for seg in network.segments:
        nxt = [
            s
            for s in network.segments
            if s.corridor_id == seg.corridor_id
            and s.direction == seg.direction
            and s.seq == seg.seq + 1
        ]
        if nxt and network.stations_of(seg.segment_id) and network.stations_of(nxt[0].segment_id):
            segs.append(seg.segment_id)
    out = []
    used: list[tuple[str, datetime, datetime]] = []
    while len(out) < n:
        seg = segs[int(rng.random() * len(segs))]
        begin = start + timedelta(minutes=30 + int(rng.random() * (hours * 60 - 90)))
        length = timedelta(minutes=15 + int(rng.random() * 30))
        if any(
            s == seg and begin < e + timedelta(minutes=30) and b < begin + length
            for s, b, e in used
        ):
            continue
        used.append((seg, begin, begin + length))
        out.append(Incident(seg, begin, begin + length))
    return Scenario(incidents=tuple(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--incidents", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=None, help="keep the SQLite store here")
    ap.add_argument("--start-hour", type=float, default=0.0, help="local hour the run starts")
    args = ap.parse_args()
    network = load_network()
    start = START + timedelta(hours=args.start_hour)
    end = start + timedelta(hours=args.hours)
    scenario = random_incidents(network, args.incidents, start, args.hours, args.seed)
    model = TrafficModel(network, seed=args.seed, scenario=scenario)
    with tempfile.TemporaryDirectory() as tmp:
        db = args.keep or Path(tmp) / "its.db"
        db.unlink(missing_ok=True)
        engine = make_engine(f"sqlite:///{db}")
        migrate.upgrade_and_seed(engine, network)
        t0 = time.perf_counter()
        rows: list[dict[str, Any]] = []
        n = 0
        for t in intervals(start, end):
            for obs in model.observations(t):
                rows.extend(reading_rows(obs, received_at=t + timedelta(seconds=30)))
            n += 1
            if len(rows) > 50_000:
                with engine.begin() as conn:
                    insert_readings(conn, rows)
                rows.clear()
                log(f"written {n} intervals ({(t - start) / (end - start):.0%})")
        with engine.begin() as conn:
            insert_readings(conn, rows)
        log(f"data written in {time.perf_counter() - t0:.0f} s; evaluating")
        cfg = AlertSettings(_env_file=None, backfill_s=int(args.hours * 3600) + 600)
        ev = Evaluator(
            engine, network, alert_settings=cfg, wall_clock=lambda: end + timedelta(seconds=31)
        )
        t1 = time.perf_counter()
        while True:
            r = ev.step()
            log(f"evaluated until {r.evaluated_until}")
            if r.buckets_behind == 0:
                break
        ev.close()
        log(f"evaluated in {time.perf_counter() - t1:.0f} s")
        with engine.connect() as conn:
            alerts = [
                store._record(row)  # every alert, not the API's page of 1,000
                for row in conn.execute(select(schema.alerts).order_by(schema.alerts.c.id))
            ]
            seg_minutes = segment_buckets(conn, network, start, end, 60)
    by_rule: dict[str, int] = {}
    for a in alerts:
        by_rule[a.rule] = by_rule.get(a.rule, 0) + 1
    result: dict[str, Any] = {
        "hours": args.hours,
        "seed": args.seed,
        "stations": len(network.stations),
        "raised": by_rule,
    }
    # incidents: delay to the first incident alert on the incident's segment
    inc_alerts = [a for a in alerts if a.rule == "incident"]
    delays, missed, matched = [], 0, set()
    for inc in scenario.incidents:
        hits = [
            a
            for a in inc_alerts
            if a.target_id == inc.segment_id and inc.start <= a.raised_at < inc.end
        ]
        if hits:
            first = min(hits, key=lambda a: a.raised_at)
            matched.add(first.id)
            delays.append((first.raised_at - inc.start).total_seconds() / 60)
        else:
            missed += 1
    false_inc = [
        a
        for a in inc_alerts
        if not any(
            a.target_id == i.segment_id and i.start <= a.raised_at < i.end + timedelta(minutes=10)
            for i in scenario.incidents
        )
    ]
    station_hours = len(network.stations) * args.hours
    result["incidents"] = {
        "truth": len(scenario.incidents),
        "detected": len(delays),
        "missed": missed,
        "delay_min": [round(d, 1) for d in delays],
        "mean_delay_min": round(statistics.fmean(delays), 2) if delays else None,
        "false_alarms": len(false_inc),
        "false_per_1000_station_h": round(1000 * len(false_inc) / station_hours, 3),
        "false_targets": sorted({(a.target_id, a.raised_at.isoformat()) for a in false_inc})[:20],
    }
    # congestion: delay from the start of the bad run of 1-min speeds to the raise
    ratio = cfg.congestion_raise_below
    series: dict[str, list[tuple[datetime, float | None]]] = {}
    for si in seg_minutes:
        ff = network.segment(si.segment_id).free_flow_kph
        series.setdefault(si.segment_id, []).append(
            (si.bucket_start, None if si.speed_kph is None else si.speed_kph / ff)
        )
    cdelays = []
    for a in alerts:
        if a.rule != "congestion":
            continue
        fell = None
        for ts, r in sorted(series.get(a.target_id, [])):
            if ts >= a.raised_at:
                break
            fell = (ts if fell is None else fell) if r is not None and r < ratio else None
        if fell is not None:
            cdelays.append((a.raised_at - fell).total_seconds() / 60)
    result["congestion"] = {
        "raised": by_rule.get("congestion", 0),
        "delay_min_mean": round(statistics.fmean(cdelays), 2) if cdelays else None,
        "delay_min_max": round(max(cdelays), 2) if cdelays else None,
    }
    result["bottleneck_episodes"] = by_rule.get("bottleneck", 0)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
