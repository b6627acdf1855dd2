"""Detection benchmark: seeded simulated days with random incidents and faults, scored against truth.

    python bench/detection.py                        # 1 day of the 96-station sample, SQLite
    python bench/detection.py --days 2 --seed 7      # another draw, longer
    python bench/detection.py --backend postgresql   # a fresh PostgreSQL database, dropped after
    python bench/detection.py --stations 2000 --hours 2   # a synthetic city (bench/query_scale.py)

What it does, in one process and one fresh database:

1. Draws a scenario from ``--seed``: incidents (segment, start, 10-60 min, severity), detector
   faults (stuck, zero, chatter, failed, silent; 20-120 min) and gateway outages (every station
   behind a gateway silent, 15-45 min), spread over the simulated days. The scenario's ground truth
   is what ``its sim --truth`` writes (``sim/truth.py``); congestion truth is the traffic model's
   own segment speed below the congestion threshold.
2. Replays the days interval by interval as fast as the machine goes (no real-time wait): the
   traffic model's observations (``sim/model.py``, as ``its sim backfill`` publishes them) are
   written the way ingest writes them, received 1 s after their interval ended, and the real
   alerts evaluator (``its/alerts/evaluator.py``) steps after every interval with its wall clock
   set to that simulated receipt time: both of its clocks run as they would live.
3. Stops every sensor (the dead-feed case) and steps the wall clock on until 3x the stall time.
4. Scores each rule that exists against the truth: detection rate, time to detect (mean, p95),
   false alarms per 1,000 station-hours. Rules not in the code base (incident, bottleneck until
   they arrive) are reported as "no rule".

Progress goes to stderr; one JSON line to stdout. Detection figures are in simulated time and do
not depend on the machine; ``evaluate_s`` and ``model_obs_per_s`` (the traffic model alone, the
reference for the replay's speed) do.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import pkgutil
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select, text
from sqlalchemy.engine import Engine, make_url

import its.alerts
from its.alerts import store
from its.alerts.config import AlertSettings
from its.alerts.evaluator import Evaluator
from its.db import migrate, schema
from its.db.engine import make_engine
from its.db.writes import insert_readings, reading_rows
from its.network import Network, load_network, network_from_geojson
from its.service import detector_health
from sim.model import TrafficModel
from sim.scenario import Incident, Scenario, SensorFault, gateway_outage

PERIOD_S = 30
LATENCY = timedelta(seconds=1)  # a reading is received this long after its interval ends
DETECTOR_KINDS = ("stuck", "zero", "chatter", "failed")
MIN_INCIDENT = timedelta(minutes=10)  # the target: incidents blocking >= 10 min


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- network


def city_network(stations: int) -> Network:
    """The synthetic city of bench/query_scale.py, with a gateway per 4 consecutive stations."""
    sys.path.insert(0, str(Path(__file__).parent))
    from query_scale import network_geojson  # noqa: PLC0415 - a sibling script, not a package

    doc = network_geojson(stations, max(1, stations // 40), 3, "Asia/Jakarta")
    n = 0
    for feat in doc["features"]:
        props = feat["properties"]
        if props["kind"] == "station":
            props["gateway_id"] = f"GW-{props['segment_id'].split('-')[0]}-{n // 4}"
            n += 1
    return network_from_geojson(doc)


# --------------------------------------------------------------------------- scenario


def draw_scenario(
    network: Network,
    rng: random.Random,
    start: datetime,
    end: datetime,
    *,
    incidents: int,
    faults: int,
    gateways: int,
) -> Scenario:
    """Random incidents, detector faults and gateway outages in [start, end); a station has at
    most one fault at a time, and none while its gateway is out."""
    span = (end - start).total_seconds()
    segs = sorted({st.segment_id for st in network.stations})
    out_incidents = []
    for _ in range(incidents):
        begin = start + timedelta(seconds=rng.uniform(0.05, 0.9) * span)
        begin = begin.replace(second=0, microsecond=0)
        length = timedelta(minutes=rng.randint(10, 60))
        out_incidents.append(
            Incident(rng.choice(segs), begin, min(begin + length, end), rng.uniform(0.45, 0.7))
        )
    busy: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)

    def free(sid: str, a: datetime, b: datetime) -> bool:
        margin = timedelta(minutes=20)  # room for the previous episode to clear
        return all(b + margin <= x or y + margin <= a for x, y in busy[sid])

    out_faults: list[SensorFault] = []
    gw_ids = sorted(network.gateways())
    for _ in range(gateways if gw_ids else 0):
        for _try in range(20):
            gw = rng.choice(gw_ids)
            begin = start + timedelta(seconds=rng.uniform(0.05, 0.9) * span)
            b = min(begin + timedelta(minutes=rng.randint(15, 45)), end)
            members = network.gateways()[gw]
            if all(free(sid, begin, b) for sid in members):
                out_faults += gateway_outage(network, gw, begin, b)
                for sid in members:
                    busy[sid].append((begin, b))
                break
    station_ids = [st.station_id for st in network.stations]
    kinds = (*DETECTOR_KINDS, "silent")
    for i in range(faults):
        kind = kinds[i % len(kinds)]  # every kind equally often
        for _try in range(20):
            sid = rng.choice(station_ids)
            begin = start + timedelta(seconds=rng.uniform(0.05, 0.9) * span)
            b = min(begin + timedelta(minutes=rng.randint(20, 120)), end)
            if free(sid, begin, b):
                out_faults.append(SensorFault(sid, kind, begin, b))  # type: ignore[arg-type]
                busy[sid].append((begin, b))
                break
    return Scenario(tuple(out_incidents), tuple(out_faults))


# --------------------------------------------------------------------------- truth


@dataclass
class Episode:
    target: str
    start: datetime
    end: datetime

    @property
    def minutes(self) -> float:
        return (self.end - self.start).total_seconds() / 60


def episodes(flags: dict[str, list[tuple[datetime, bool]]], merge: timedelta) -> list[Episode]:
    """Runs of True per target, runs closer than ``merge`` joined."""
    out = []
    for target, series in flags.items():
        current: Episode | None = None
        for t, flag in series:
            if not flag:
                continue
            if current is not None and t - current.end <= merge:
                current.end = t + timedelta(seconds=PERIOD_S)
            else:
                if current is not None:
                    out.append(current)
                current = Episode(target, t, t + timedelta(seconds=PERIOD_S))
        if current is not None:
            out.append(current)
    return out


# --------------------------------------------------------------------------- the store


class Store:
    """A fresh database: a SQLite file, or a PostgreSQL database dropped afterwards."""

    def __init__(self, backend: str, pg_admin_url: str, network: Network) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="its-detection-"))
        self.admin: Engine | None = None
        self.db = ""
        if backend == "postgresql":
            self.admin = make_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
            self.db = f"its_bench_{uuid.uuid4().hex[:8]}"
            with self.admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{self.db}"'))
            url = make_url(pg_admin_url).set(database=self.db).render_as_string(False)
        elif backend == "sqlite":
            url = f"sqlite:///{self.tmp / 'its.db'}"
        else:
            raise SystemExit(f"unknown backend {backend!r}: use sqlite or postgresql")
        self.engine = make_engine(url)
        # a benchmark of detection, not of fsync: a commit per interval and per step would
        # otherwise wait on the shared disk most of the time
        event.listen(self.engine, "connect", _no_sync if backend == "sqlite" else _pg_no_sync)
        migrate.upgrade_and_seed(self.engine, network)

    def close(self) -> None:
        self.engine.dispose()
        if self.admin is not None:
            with self.admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)'))
            self.admin.dispose()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _no_sync(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA synchronous = OFF")
    cur.close()


def _pg_no_sync(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("SET synchronous_commit = off")
    cur.close()
    dbapi_conn.commit()


# --------------------------------------------------------------------------- replay


class Clock:
    """The evaluator's wall clock, driven by the replay."""

    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


def replay(
    engine: Engine,
    network: Network,
    model: TrafficModel,
    cfg: AlertSettings,
    start: datetime,
    end: datetime,
) -> dict[str, Any]:
    """Write each interval as ingest would, step the evaluator after it; record true segment
    speeds on the way. Then the dead feed: nothing more arrives."""
    clock = Clock(start)
    ev = Evaluator(engine, network, alert_settings=cfg, wall_clock=clock)
    bad_below = cfg.congestion_raise_below
    not_free_below = cfg.congestion_clear_at
    congested: dict[str, list[tuple[datetime, bool]]] = defaultdict(list)
    slowish: dict[str, list[tuple[datetime, bool]]] = defaultdict(list)
    ffs = {s.segment_id: s.free_flow_kph for s in network.segments}
    with_stations = {st.segment_id for st in network.stations}
    n = int((end - start).total_seconds() // PERIOD_S)
    obs_total = model_s = write_s = step_s = 0.0
    t = start
    began = time.monotonic()
    for i in range(n):
        t0 = time.perf_counter()
        observations = model.observations(t)
        states = model.segment_states(t)
        model_s += time.perf_counter() - t0
        for seg_id, state in states.items():
            if seg_id in with_stations:
                ratio = state.speed_kph / ffs[seg_id]
                congested[seg_id].append((t, ratio < bad_below))
                slowish[seg_id].append((t, ratio < not_free_below))
        received = t + timedelta(seconds=PERIOD_S) + LATENCY
        rows = [row for obs in observations for row in reading_rows(obs, received)]
        t1 = time.perf_counter()
        with engine.begin() as conn:
            insert_readings(conn, rows)
        write_s += time.perf_counter() - t1
        obs_total += len(observations)
        clock.t = received + LATENCY
        t2 = time.perf_counter()
        ev.step()
        step_s += time.perf_counter() - t2
        t += timedelta(seconds=PERIOD_S)
        if i % 120 == 0 or i == n - 1:
            elapsed = time.monotonic() - began
            log(
                f"  {t.isoformat()}  {i + 1}/{n} intervals  {elapsed:.0f} s"
                f"  (evaluator {step_s / (i + 1) * 1000:.1f} ms/step)"
            )
    last_received = t + LATENCY
    with engine.connect() as conn:
        last_alert_id = conn.execute(select(func.max(schema.alerts.c.id))).scalar() or 0
    dead = dead_feed(engine, ev, clock, last_received, cfg)
    ev.close()
    return {
        "intervals": n,
        "observations": int(obs_total),
        "model_obs_per_s": round(obs_total / model_s) if model_s else None,
        "write_s": round(write_s, 1),
        "evaluate_s": round(step_s, 1),
        "evaluator_ms_per_step": round(step_s / max(n, 1) * 1000, 1),
        "congested": congested,
        "slowish": slowish,
        "dead_feed": dead,
        "last_alert_id": last_alert_id,
    }


def dead_feed(
    engine: Engine, ev: Evaluator, clock: Clock, last_received: datetime, cfg: AlertSettings
) -> dict[str, Any]:
    """Every sensor stops: when is feed-stalled raised, and how many station or gateway alarms
    come with it (none should)."""
    stalled_after = None
    noise = 0
    for s in range(0, int(3 * cfg.feed_stall_s) + 1, 5):
        clock.t = last_received + timedelta(seconds=s)
        for change in ev.step().events("raised"):
            if change.alert.rule == "feed-stalled" and stalled_after is None:
                stalled_after = s
            elif change.alert.rule in ("station-offline", "gateway-offline"):
                noise += 1
    with engine.connect() as conn:
        active = store.active_alerts(conn)
    stalled = active.get(("feed-stalled", "feed"))
    return {
        "stall_setting_s": cfg.feed_stall_s,
        "feed_stalled_after_s": stalled_after,
        "within_2x": stalled_after is not None and stalled_after <= 2 * cfg.feed_stall_s,
        "offline_alarms_raised": noise,
        "suppressed_offline": len(stalled.details.get("suppressed_offline", [])) if stalled else 0,
    }


# --------------------------------------------------------------------------- scoring


def alerts_of(engine: Engine, last_id: int) -> list[store.AlertRecord]:
    """Every alert raised during the replayed days (not in the dead-feed phase after them)."""
    a = schema.alerts
    with engine.connect() as conn:
        return store.alerts_where(conn, a.c.id <= last_id, limit=1_000_000)


def _ttd_stats(ttds: list[float]) -> dict[str, Any]:
    if not ttds:
        return {"mean_ttd_s": None, "p95_ttd_s": None}
    ordered = sorted(ttds)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return {"mean_ttd_s": round(statistics.fmean(ttds), 1), "p95_ttd_s": round(p95, 1)}


def score(
    truth: Iterable[Episode],
    alerts: list[store.AlertRecord],
    *,
    names: Any,
    before: timedelta,
    after: timedelta,
    excuse: Iterable[Episode] = (),
    station_hours: float,
    within: timedelta | None = None,
    span: tuple[datetime, datetime] | None = None,
    horizon: timedelta | None = None,
) -> dict[str, Any]:
    """Match alerts to truth episodes by target and time.

    Episodes under way when the replay began (``span[0]``), or beginning less than ``horizon``
    (default ``after``) before it ended, cannot be timed and are not scored (``unscorable``).

    An episode is detected by an alert on one of ``names(episode)`` raised in [start - before,
    end + after], or already active at its start; time to detect = raised - start (>= 0). An alert
    matching no episode, and no ``excuse`` (a real but shorter or milder condition), is false.
    """
    truth = list(truth)
    excuse = list(excuse)
    unscorable = 0
    if span is not None:
        last = span[1] - (horizon or after)
        kept = [ep for ep in truth if span[0] < ep.start <= last]
        unscorable = len(truth) - len(kept)
        excuse += [ep for ep in truth if ep not in kept]
        truth = kept
    used: set[int] = set()
    ttds: list[float] = []
    missed = []
    for ep in truth:
        targets = names(ep)
        hit = None
        for al in alerts:
            if al.target_id not in targets:
                continue
            if ep.start - before <= al.raised_at <= ep.end + after:
                hit = al if hit is None or al.raised_at < hit.raised_at else hit
            elif al.raised_at < ep.start and (al.cleared_at is None or al.cleared_at > ep.start):
                hit = hit or al
        if hit is None:
            missed.append(f"{ep.target}@{ep.start:%m-%dT%H:%M}")
            continue
        used.add(hit.id)
        ttds.append(max(0.0, (hit.raised_at - ep.start).total_seconds()))
    false: list[str] = []
    for al in alerts:
        if al.id in used:
            continue
        ok = any(
            al.target_id in names(ep) and ep.start - before <= al.raised_at <= ep.end + after
            for ep in (*truth, *excuse)
        )
        if not ok:
            what = al.details.get("diagnosis") or al.details.get("reason") or ""
            false.append(f"{al.target_id}@{al.raised_at:%m-%dT%H:%M} {what}".strip())
    out: dict[str, Any] = {
        "truth": len(truth),
        "unscorable": unscorable,
        "detected": len(ttds),
        "detection_rate": round(len(ttds) / len(truth), 3) if truth else None,
        **_ttd_stats(ttds),
        "alerts": len(alerts),
        "false_alarms": len(false),
        "false_per_1000_station_h": round(1000 * len(false) / station_hours, 2),
    }
    if within is not None:
        n = sum(1 for x in ttds if x <= within.total_seconds())
        out[f"detected_within_{int(within.total_seconds() // 60)}min"] = (
            round(n / len(truth), 3) if truth else None
        )
    if missed:
        out["missed"] = missed[:20]
    if false:
        out["false"] = false[:20]
    return out


def known_rules() -> set[str]:
    """Rule names the alerts package defines (module-level UPPER_CASE string constants)."""
    names: set[str] = set()
    for mod in pkgutil.iter_modules(its.alerts.__path__):
        module = importlib.import_module(f"its.alerts.{mod.name}")
        names |= {v for k, v in vars(module).items() if k.isupper() and isinstance(v, str)}
    return names


def neighbours(network: Network, segment_id: str) -> set[str]:
    """The segment, the ones just up- and downstream, and their stations: an incident alert may
    name the pair of stations around it or the segment where its queue is seen."""
    seg = network.segment(segment_id)
    near = {
        s.segment_id
        for s in network.segments
        if s.corridor_id == seg.corridor_id
        and s.direction == seg.direction
        and abs(s.seq - seg.seq) <= 1
    }
    return near | {st.station_id for st in network.stations if st.segment_id in near}


def score_all(
    network: Network,
    scenario: Scenario,
    alerts: list[store.AlertRecord],
    replayed: dict[str, Any],
    cfg: AlertSettings,
    station_hours: float,
    congestion_min: timedelta,
    span: tuple[datetime, datetime],
) -> dict[str, Any]:
    rules = known_rules()
    by_rule: dict[str, list[store.AlertRecord]] = defaultdict(list)
    for al in alerts:
        by_rule[al.rule].append(al)
    out: dict[str, Any] = {}

    def same(ep: Episode) -> set[str]:
        return {ep.target}

    # congestion: the model's true segment speed below the raise threshold
    merge = timedelta(minutes=10)
    truth = [e for e in episodes(replayed["congested"], merge) if e.end - e.start >= congestion_min]
    faulty_segments: dict[str, list[SensorFault]] = defaultdict(list)
    seg_of = {st.station_id: st.segment_id for st in network.stations}
    for f in scenario.faults:
        faulty_segments[seg_of[f.station_id]].append(f)

    def fault_free(ep: Episode) -> bool:  # a faulty station suppresses its segment (by design)
        return not any(
            f.start < ep.end and (f.end is None or f.end > ep.start)
            for f in faulty_segments[ep.target]
        )

    scored = [e for e in truth if fault_free(e)]
    out["congestion"] = score(
        scored,
        by_rule["congestion"],
        names=same,
        before=timedelta(minutes=5),
        after=timedelta(minutes=10),
        excuse=[*episodes(replayed["slowish"], merge), *truth],
        station_hours=station_hours,
        span=span,
        within=timedelta(minutes=3),
        horizon=timedelta(minutes=20),
    )
    out["congestion"]["threshold_ratio"] = cfg.congestion_raise_below
    out["congestion"]["min_episode_min"] = congestion_min.total_seconds() / 60
    out["congestion"]["excluded_by_faults"] = len(truth) - len(scored)

    # incidents blocking >= 10 min, matched by segment (or the station pair around it) and time
    incidents = [
        Episode(i.segment_id, i.start, i.end)
        for i in scenario.incidents
        if i.end - i.start >= MIN_INCIDENT
    ]
    for rule in ("incident", "bottleneck"):
        if rule not in rules:
            out[rule] = "no rule"
    if "incident" in rules:
        names = {e.target: neighbours(network, e.target) for e in incidents}
        out["incident"] = score(
            incidents,
            by_rule["incident"],
            names=lambda ep: names.get(ep.target) or neighbours(network, ep.target),
            before=timedelta(minutes=1),
            after=timedelta(minutes=10),
            excuse=[Episode(i.segment_id, i.start, i.end) for i in scenario.incidents],
            station_hours=station_hours,
            span=span,
            within=timedelta(minutes=3),
        )
    if "bottleneck" in rules:
        n = len(by_rule["bottleneck"])
        out["bottleneck"] = {
            "alerts": n,
            "per_1000_station_h": round(1000 * n / station_hours, 2),
            "scored": False,  # recurrent bottlenecks are not in the truth file
        }

    # detector faults: diagnosed within 15 min of onset, false diagnoses on healthy stations
    det = [
        Episode(f.station_id, f.start, f.end or f.start)
        for f in scenario.faults
        if f.kind in DETECTOR_KINDS
    ]
    faulty_h = sum(e.minutes for e in det) / 60
    out["detector-fault"] = score(
        det,
        by_rule["detector-fault"],
        names=same,
        before=timedelta(0),
        after=timedelta(seconds=cfg.detector_window_s),
        station_hours=station_hours - faulty_h,
        span=span,
        within=timedelta(minutes=15),
    )
    per_kind: dict[str, list[Episode]] = defaultdict(list)
    for f in scenario.faults:
        if f.kind in DETECTOR_KINDS:
            per_kind[f.kind].append(Episode(f.station_id, f.start, f.end or f.start))
    out["detector-fault"]["by_kind"] = {
        kind: score(
            eps,
            [a for a in by_rule["detector-fault"] if a.target_id in {e.target for e in eps}],
            names=same,
            before=timedelta(0),
            after=timedelta(seconds=cfg.detector_window_s),
            station_hours=station_hours,
            span=span,
        )["detection_rate"]
        for kind, eps in sorted(per_kind.items())
    }

    # silent stations and gateways: one alert each, none per station behind a silent gateway
    silent = [
        Episode(f.station_id, f.start, f.end or f.start)
        for f in scenario.faults
        if f.kind == "silent" and f.gateway_id is None
    ]
    gw_faults: dict[tuple[str, datetime], list[SensorFault]] = defaultdict(list)
    for f in scenario.faults:
        if f.gateway_id is not None:
            gw_faults[(f.gateway_id, f.start)].append(f)
    gateways = [Episode(gw, start, fs[0].end or start) for (gw, start), fs in gw_faults.items()]
    behind = [
        Episode(f.station_id, f.start, f.end or f.start)
        for f in scenario.faults
        if f.gateway_id is not None
    ]
    out["station-offline"] = score(
        silent,
        by_rule["station-offline"],
        names=same,
        before=timedelta(0),
        after=timedelta(minutes=2),
        station_hours=station_hours,
        span=span,
    )
    in_gateway = sum(
        1
        for al in by_rule["station-offline"]
        for ep in behind
        if al.target_id == ep.target and ep.start <= al.raised_at <= ep.end
    )
    out["station-offline"]["raised_for_stations_behind_a_silent_gateway"] = in_gateway
    if "gateway-offline" in rules:
        out["gateway-offline"] = score(
            gateways,
            by_rule["gateway-offline"],
            names=same,
            before=timedelta(0),
            after=timedelta(minutes=2),
            station_hours=station_hours,
            span=span,
        )
    out["feed-stalled"] = {
        "false_alarms_during_the_days": len(by_rule["feed-stalled"]),
        **replayed["dead_feed"],
    }
    return out


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=float, default=1.0)
    ap.add_argument("--hours", type=float, default=None, help="instead of --days")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--incidents", type=int, default=10, help="per day")
    ap.add_argument("--faults", type=int, default=15, help="per day (kinds in turn)")
    ap.add_argument("--gateways", type=int, default=3, help="gateway outages per day")
    ap.add_argument("--stations", type=int, default=0, help="a synthetic city; 0: the sample")
    ap.add_argument("--start", default="2026-11-23T00:00:00+07:00", help="a Monday, local")
    ap.add_argument("--congestion-min-minutes", type=float, default=10.0)
    ap.add_argument("--backend", default="sqlite", choices=("sqlite", "postgresql"))
    ap.add_argument(
        "--pg-admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    args = ap.parse_args()

    network = city_network(args.stations) if args.stations else load_network()
    hours = args.hours if args.hours is not None else args.days * 24
    start = datetime.fromisoformat(args.start).astimezone(UTC)
    end = start + timedelta(hours=hours)
    rng = random.Random(args.seed)
    per_day = hours / 24
    scenario = draw_scenario(
        network,
        rng,
        start,
        end,
        incidents=round(args.incidents * per_day),
        faults=round(args.faults * per_day),
        gateways=round(args.gateways * per_day),
    )
    cfg = AlertSettings()
    log(
        f"detection: {len(network.stations)} stations, {hours:g} h from {start.isoformat()}, "
        f"seed {args.seed}: {len(scenario.incidents)} incidents, {len(scenario.faults)} "
        f"station faults, {args.backend}"
    )
    model = TrafficModel(network, seed=args.seed, scenario=scenario)
    db = Store(args.backend, args.pg_admin_url, network)
    try:
        began = time.monotonic()
        replayed = replay(db.engine, network, model, cfg, start, end)
        alerts = alerts_of(db.engine, replayed["last_alert_id"])
        t0 = time.perf_counter()
        with db.engine.connect() as conn:  # what GET /api/v1/health/detectors computes
            health = detector_health.detector_health(conn, network)
        replayed["detector_health_s"] = round(time.perf_counter() - t0, 3)
        replayed["pct_good_at_end"] = health["network"]["pct_good"]
        station_hours = len(network.stations) * hours
        rules = score_all(
            network,
            scenario,
            alerts,
            replayed,
            cfg,
            station_hours,
            timedelta(minutes=args.congestion_min_minutes),
            (start, end),
        )
        wall_s = time.monotonic() - began
    finally:
        db.close()
    report = {
        "bench": "detection",
        "backend": args.backend,
        "network": network.name,
        "stations": len(network.stations),
        "hours": hours,
        "seed": args.seed,
        "station_hours": station_hours,
        "scenario": {
            "incidents": len(scenario.incidents),
            "detector_faults": sum(1 for f in scenario.faults if f.kind in DETECTOR_KINDS),
            "silent_stations": sum(
                1 for f in scenario.faults if f.kind == "silent" and f.gateway_id is None
            ),
            "gateway_outages": len(
                {(f.gateway_id, f.start) for f in scenario.faults if f.gateway_id}
            ),
        },
        "rules": rules,
        "run": {
            k: replayed[k]
            for k in (
                "intervals",
                "observations",
                "model_obs_per_s",
                "write_s",
                "evaluate_s",
                "evaluator_ms_per_step",
                "detector_health_s",
                "pct_good_at_end",
            )
        }
        | {"wall_s": round(wall_s, 1)},
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
