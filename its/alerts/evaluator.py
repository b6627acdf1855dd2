"""The alerts evaluator: runs the rules over the store on the data clock and keeps alerts current.

Why it is built this way:

- **Data time, not wall time.** The simulator may replay history at 60x and a real feed can lag,
  so "the last 5 minutes" are the last 5 minutes of data (:func:`its.service.traffic.data_clock`).
  A minute is evaluated once it is complete: when the data clock has passed its end plus a
  grace period for late readings.
- **Minutes for speed, 5-min buckets for bottlenecks.** Congestion (on a smoothed rolling
  window), incidents and detector health (on its 15-min window) run each minute so a jam, a
  blocked lane or a dead loop is named within minutes; bottlenecks (PeMS works on 5-min
  intervals) run as each 5-min bucket ends.
- **Exactly once, across restarts.** Each step evaluates every complete minute since the last one,
  in order, and writes the rules' state, the evaluator's progress and the alert changes in one
  transaction: a crash replays nothing twice and skips nothing. A fresh database starts at most
  ``backfill_s`` (1 h) before the data clock.
- **One leader.** On PostgreSQL several evaluators may run (for availability); a session-level
  advisory lock, held on a dedicated connection while leading, lets exactly one act. If that
  connection dies the server drops the lock and another evaluator takes over. SQLite is one
  process: it simply leads.
- **No MQTT client here.** Alert changes are published after commit through an injected
  ``publish(topic, payload)`` callable (the CLI passes a paho one), so subscribers never see an
  alert that was rolled back and this core module stays free of paho.
"""

from __future__ import annotations

import json
import logging
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection, Engine

from its.alerts import state as rule_state
from its.alerts import store
from its.alerts.bottleneck_runner import BottleneckRunner
from its.alerts.config import AlertSettings
from its.alerts.gateways import (
    GATEWAY_OFFLINE,
    feed_quiet,
    gateway_message,
    merge_suppressed,
    newest,
    silent_gateways,
)
from its.alerts.health import (
    DETECTOR_FAULT,
    DetectorState,
    Diagnosis,
    HealthParams,
    LaneSample,
    StationSample,
    detector_message,
    detector_step,
    diagnose,
    mean_lane_vph,
    mean_occupancy,
    neighbour_flow,
    neighbour_occupancy,
    pct_good,
    station_neighbours,
)
from its.alerts.incident_runner import IncidentRunner
from its.alerts.rules import (
    BAD,
    CONGESTION,
    FEED_STALLED,
    FEED_TARGET,
    STATION_OFFLINE,
    CongestionState,
    StationView,
    bucket_outcome,
    congestion_message,
    congestion_step,
    feed_stalled,
    feed_stalled_message,
    fully_offline_segments,
    offline_message,
    offline_reason,
    smoothed_speed,
)
from its.config import Settings
from its.contract import AlertTopic, iso
from its.db import schema
from its.network import Network, Segment
from its.service.traffic import (
    SegmentInterval,
    aggregate,
    data_clock,
    segment_buckets,
    station_states,
)
from its.telemetry import AlertMetrics

log = logging.getLogger("its.alerts")

BUCKET_S = 300
TICK_S = 60  # congestion, incidents and health run on each minute of data; bottlenecks on 5 min
# pg_try_advisory_lock key: "ITSALRT" as an integer. Advisory locks are per database, so test
# databases and separate deployments on one server never contend.
LOCK_KEY = int.from_bytes(b"ITSALRT", "big")
PUBLISHED_EVENTS = ("raised", "severity", "cleared")
HEALTH_SUMMARY_RULE = "_detector-health"  # rule_state row with the network's % good detectors

Publisher = Callable[[str, bytes], None]

# A bigint advisory key shows in pg_locks as classid = high 32 bits, objid = low 32, objsubid 1.
_HOLDS_LOCK = text(
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND pid = pg_backend_pid() AND database = (SELECT oid FROM pg_database"
    " WHERE datname = current_database())"
    " AND classid::bigint = (:key >> 32) AND objid::bigint = (:key & 4294967295)"
    " AND objsubid = 1)"
)


def floor_bucket(ts: datetime, bucket_s: int = BUCKET_S) -> datetime:
    """Start of the ``bucket_s`` bucket holding ``ts`` (epoch-aligned, as time_bucket's origin
    2000-01-03 is a multiple of every bucket width up to a day)."""
    epoch = int(ts.timestamp())
    return datetime.fromtimestamp(epoch - epoch % bucket_s, UTC)


def alert_payload(change: store.Change) -> bytes:
    """The JSON published on ``{prefix}/alerts/{id}``: the alert plus the event that changed it."""
    return json.dumps({"event": change.event, **change.alert.to_dict()}).encode()


@dataclass
class StepResult:
    """What one step did (for logs, tests and the catch-up loop)."""

    leading: bool
    data_time: datetime | None = None
    buckets: int = 0  # 5-minute buckets completed (health, bottlenecks)
    ticks: int = 0  # minutes evaluated (congestion, incidents)
    evaluated_until: datetime | None = None
    changes: list[store.Change] = field(default_factory=list)
    # complete buckets still to evaluate after this step (a step does at most max_buckets_per_step)
    buckets_behind: int = 0

    def events(self, kind: str | None = None) -> list[store.Change]:
        return [c for c in self.changes if kind is None or c.event == kind]


@dataclass(frozen=True)
class _Recent:
    """One station in the look-back window: newest interval start, period, last receipt."""

    last_start: datetime
    period_s: int
    received: datetime


@dataclass
class EvaluatorStats:
    steps: int = 0
    buckets: int = 0
    raised: int = 0
    cleared: int = 0
    published: int = 0
    publish_errors: int = 0


class Evaluator:
    """Evaluates the alert rules step by step; see the module docstring for the why."""

    def __init__(
        self,
        engine: Engine,
        network: Network,
        *,
        alert_settings: AlertSettings | None = None,
        publish: Publisher | None = None,
        topic_prefix: str = "its/v1",
        wall_clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.engine = engine
        self.wall_clock = wall_clock or (lambda: datetime.now(UTC))
        self.network = network
        self.cfg = alert_settings or AlertSettings(_env_file=None)
        self.params = self.cfg.congestion()
        self.health = HealthParams(window_s=self.cfg.detector_window_s)
        self.publish = publish
        self.topic_prefix = topic_prefix
        self.stats = EvaluatorStats()
        self._stations_by_segment: dict[str, list[str]] = defaultdict(list)
        for st in network.stations:
            self._stations_by_segment[st.segment_id].append(st.station_id)
        self._segment_of = {st.station_id: st.segment_id for st in network.stations}
        self._neighbours = station_neighbours(network)
        self.incidents = IncidentRunner(network, self.cfg.incidents())
        self.bottlenecks = BottleneckRunner(network, self.cfg.bottleneck())
        self._gateways = network.gateways()
        self._lock_conn: Connection | None = None
        # one step's look-back query, shared by the receipt and silence checks of that step
        self._recent_cache: tuple[datetime, Connection, dict[str, _Recent]] | None = None
        self._leading = False

    # ------------------------------------------------------------------ leadership

    @property
    def leading(self) -> bool:
        return self._leading

    def try_lead(self) -> bool:
        """Become (or stay) the leader; False while another evaluator holds the lock."""
        if self.engine.dialect.name != "postgresql":
            self._leading = True
            return True
        if self._lock_conn is not None:
            # Ask the server whether THIS session still holds the lock: "SELECT 1" is not enough,
            # as SQLAlchemy silently reconnects an invalidated connection (a new session, no lock).
            try:
                held = bool(self._lock_conn.execute(_HOLDS_LOCK, {"key": LOCK_KEY}).scalar())
                self._lock_conn.commit()
            except Exception as exc:  # noqa: BLE001 - a dead session means the lock is gone
                log.warning("alerts leader session failed (%s)", exc)
                held = False
            if held:
                return True
            log.warning("lost the alerts leader lock; trying to lead again")
            self._drop_lock_conn(invalidate=True)
        conn = self.engine.connect()
        try:
            got = bool(conn.execute(select(func.pg_try_advisory_lock(LOCK_KEY))).scalar())
            conn.commit()
        except Exception:
            conn.invalidate()
            conn.close()
            raise
        if not got:
            conn.close()
            self._leading = False
            return False
        self._lock_conn = conn
        self._leading = True
        log.info("alerts evaluator is leading")
        return True

    def _drop_lock_conn(self, *, invalidate: bool = False) -> None:
        conn, self._lock_conn, self._leading = self._lock_conn, None, False
        if conn is None:
            return
        try:
            if invalidate:
                conn.invalidate()  # closes the session: the server releases the lock
            else:
                conn.execute(select(func.pg_advisory_unlock(LOCK_KEY)))
                conn.commit()
        except Exception:  # noqa: BLE001
            conn.invalidate()
        finally:
            conn.close()

    def release(self) -> None:
        """Step down (another evaluator may then lead)."""
        if self._lock_conn is not None:
            self._drop_lock_conn()
            log.info("alerts evaluator stepped down")
        self._leading = False

    close = release

    # ------------------------------------------------------------------ one step

    def step(self) -> StepResult:
        """Lead if possible, evaluate in one transaction, then publish what changed."""
        if not self.try_lead():
            return StepResult(leading=False)
        with self.engine.begin() as conn:
            try:
                result = self._evaluate(conn)
            finally:
                self._recent_cache = None
        self.stats.steps += 1
        self.stats.buckets += result.buckets
        for change in result.changes:
            self._report(change)
        return result

    def _report(self, change: store.Change) -> None:
        a = change.alert
        if change.event == "raised":
            self.stats.raised += 1
            log.info(
                "alert %d raised: %s %s [%s] %s", a.id, a.rule, a.target_id, a.severity, a.message
            )
        elif change.event == "cleared":
            self.stats.cleared += 1
            log.info("alert %d cleared: %s %s", a.id, a.rule, a.target_id)
        elif change.event == "severity":
            log.info("alert %d now %s: %s", a.id, a.severity, a.message)
        if self.publish is None or change.event not in PUBLISHED_EVENTS:
            return
        try:
            self.publish(str(AlertTopic(self.topic_prefix, str(a.id))), alert_payload(change))
            self.stats.published += 1
        except Exception as exc:  # noqa: BLE001 - the store is the record; MQTT is a notification
            self.stats.publish_errors += 1
            log.warning("could not publish alert %d: %s", a.id, exc)

    def _evaluate(self, conn: Connection) -> StepResult:
        wall = self.wall_clock()
        now = data_clock(conn, now=wall)
        at = now or wall
        result = StepResult(leading=True, data_time=now)
        active = store.active_alerts(conn)
        since = (now - timedelta(hours=1)) if now is not None else None
        received = self._last_received(conn, since)
        last_any = max(received.values(), default=None)
        # When the data stops, the clock keeps running in wall time from the last receipt: the
        # last bucket is still evaluated once past its end plus grace, and silent stations are
        # still found (a dead feed must not be the quietest state of all).
        clock = now
        if now is not None and last_any is not None and wall > last_any:
            clock = max(now, min(now + (wall - last_any), wall))
        offline = self._offline_stations(conn, clock, wall, received, active)
        stalled = feed_stalled(last_any, wall, self.cfg.feed_stall_s)
        # Nothing from anyone for an offline period: hold station alarms for the stall decision.
        hold = stalled or feed_quiet(
            last_any, wall, self.cfg.offline_periods * self.cfg.default_period_s
        )
        # Stations behind one gateway that are all silent: one gateway alert covers them.
        gateways_down = silent_gateways(self._gateways, offline, set(received) | set(offline))
        covered = {sid: gw for gw, sids in gateways_down.items() for sid in sids}

        # Feed stalled: one critical alert instead of an offline alarm per station.
        if stalled:
            assert last_any is not None
            suppressed_ids = sorted(sid for sid in offline if (STATION_OFFLINE, sid) not in active)
            details = {
                "last_received": iso(last_any),
                "stall_s": self.cfg.feed_stall_s,
                "suppressed_offline": suppressed_ids,
            }
            current = active.get((FEED_STALLED, FEED_TARGET))
            if current is None or current.details.get("suppressed_offline") != suppressed_ids:
                result.changes.append(
                    store.raise_or_repeat(
                        conn,
                        FEED_STALLED,
                        FEED_TARGET,
                        "critical",
                        feed_stalled_message(last_any, wall, len(suppressed_ids)),
                        details,
                        at,
                        target_kind="feed",
                    )
                )
        elif (FEED_STALLED, FEED_TARGET) in active:
            change = store.clear(conn, FEED_STALLED, FEED_TARGET, at, {"reason": "data flows"})
            if change is not None:
                result.changes.append(change)

        # Station offline: checked every step (seconds matter), raised and cleared at data time.
        # While the feed is stalled no new offline alarm is raised and none is cleared: the
        # stall is the root cause, and its alert lists the stations it suppresses.
        if not hold:
            for sid, (reason, last_seen) in sorted(offline.items()):
                if (STATION_OFFLINE, sid) not in active and sid not in covered:
                    result.changes.append(_raise_offline(conn, sid, reason, last_seen, at))
            for (rule, sid), _alert in sorted(active.items()):
                if rule == STATION_OFFLINE and (sid not in offline or sid in covered):
                    why = (
                        {"reason": "gateway-offline", "gateway_id": covered[sid]}
                        if sid in covered
                        else {"reason": "data flows"}
                    )
                    change = store.clear(conn, STATION_OFFLINE, sid, at, why)
                    if change is not None:
                        result.changes.append(change)
            result.changes += self._gateway_alerts(conn, gateways_down, offline, active, at)

        # Congestion: every complete 5-min bucket since the last one, in order.
        if now is not None and clock is not None:
            self._evaluate_buckets(conn, clock, active, offline, result, covered=covered)
            if result.buckets and not hold:
                for sid, (reason, last_seen) in offline.items():
                    if (STATION_OFFLINE, sid) in active and sid not in covered:
                        _raise_offline(conn, sid, reason, last_seen, at)
                for gw, sids in gateways_down.items():
                    if (GATEWAY_OFFLINE, gw) in active:
                        self._raise_gateway(conn, gw, sids, offline, at)
        return result

    def _gateway_alerts(
        self,
        conn: Connection,
        down: dict[str, list[str]],
        offline: dict[str, tuple[str, datetime | None]],
        active: dict[tuple[str, str], store.AlertRecord],
        at: datetime,
    ) -> list[store.Change]:
        """Raise a gateway-offline alert for each gateway newly down (or whose list of silent
        stations changed), and clear those of gateways with a station reporting again."""
        changes = []
        for gw, sids in sorted(down.items()):
            current = active.get((GATEWAY_OFFLINE, gw))
            if current is None or current.details.get("stations") != sids:
                changes.append(self._raise_gateway(conn, gw, sids, offline, at))
        for (rule, gw), _alert in sorted(active.items()):
            if rule == GATEWAY_OFFLINE and gw not in down:
                change = store.clear(conn, GATEWAY_OFFLINE, gw, at, {"reason": "data flows"})
                if change is not None:
                    changes.append(change)
        return changes

    def _raise_gateway(
        self,
        conn: Connection,
        gateway_id: str,
        stations: list[str],
        offline: dict[str, tuple[str, datetime | None]],
        at: datetime,
    ) -> store.Change:
        last_seen = newest(offline[sid][1] for sid in stations)
        details: dict[str, Any] = {
            "stations": stations,
            "reasons": sorted({offline[sid][0] for sid in stations}),
            "last_seen": iso(last_seen),
            # one alert instead of these stations' station-offline alarms
            "suppressed_offline": stations,
        }
        return store.raise_or_repeat(
            conn,
            GATEWAY_OFFLINE,
            gateway_id,
            "major",
            gateway_message(gateway_id, stations, last_seen),
            details,
            at,
            target_kind="gateway",
            keep=("suppressed",),
        )

    def _last_received(self, conn: Connection, since: datetime | None) -> dict[str, datetime]:
        """Station id -> wall time the server last received anything from it: a reading (in
        the look-back window of data time, an index range) or a state message."""
        s = schema.station_status
        out: dict[str, datetime] = {}
        if since is not None:
            out = {sid: recent.received for sid, recent in self._recent(conn, since).items()}
        for sid, at in conn.execute(select(s.c.station_id, s.c.updated_at)):
            if at is not None and (sid not in out or at > out[sid]):
                out[sid] = at
        return out

    def _offline_stations(
        self,
        conn: Connection,
        now: datetime | None,
        wall: datetime,
        received: dict[str, datetime],
        active: dict[tuple[str, str], store.AlertRecord],
    ) -> dict[str, tuple[str, datetime | None]]:
        """Station id -> (reason, last seen) for every station judged offline now."""
        states = station_states(conn)
        since = (now - timedelta(hours=1)) if now is not None else None
        recent = self._recent(conn, since) if since is not None else {}
        last_seen = {sid: x.last_start + timedelta(seconds=x.period_s) for sid, x in recent.items()}
        periods = {sid: x.period_s for sid, x in recent.items()}
        out: dict[str, tuple[str, datetime | None]] = {}
        for st in self.network.stations:
            sid = st.station_id
            state = states.get(sid, (None, None))[0]
            view = StationView(sid, state, last_seen.get(sid), periods.get(sid), received.get(sid))
            reason = offline_reason(
                view,
                now,
                periods=self.cfg.offline_periods,
                default_period_s=self.cfg.default_period_s,
                wall=wall,
            )
            alert = active.get((STATION_OFFLINE, sid))
            if (
                reason is None
                and sid not in last_seen
                and alert is not None
                and alert.details.get("reason") == "silent"
            ):
                # Silent for longer than the look-back window: still offline, not recovered.
                reason = "silent"
                seen = alert.details.get("last_seen")
                out[sid] = (reason, datetime.fromisoformat(seen) if seen else None)
            elif reason is not None:
                out[sid] = (reason, last_seen.get(sid))
        return out

    def _recent(self, conn: Connection, since: datetime) -> dict[str, _Recent]:
        """Each station's newest interval start, reporting period and receipt time in the
        look-back window [since, ...), in one pass over that window's rows.

        The window is a MATERIALIZED CTE: with a plain GROUP BY, SQLite walks the whole readings
        table along the (station, lane, time) key to group it, a full scan every step that grew
        with the history (0.1 s per step after an hour of 96 stations, seconds after a day of a
        city); materialized, it reads the window through the time index. PostgreSQL 12+ and
        SQLite 3.35+ both accept it."""
        cached = self._recent_cache
        if cached is not None and cached[0] == since and cached[1] is conn:
            return cached[2]
        r = schema.readings
        window = (
            select(r.c.station_id, r.c.interval_start, r.c.period_s, r.c.received_at)
            .where(r.c.interval_start >= since)
            .cte("recent_window")
            .prefix_with("MATERIALIZED")
        )
        q = select(
            window.c.station_id,
            func.max(window.c.interval_start),
            func.max(window.c.period_s),
            func.max(window.c.received_at),
        ).group_by(window.c.station_id)
        process = r.c.received_at.type.process_result_value
        out = {
            sid: _Recent(
                process(last, conn.dialect),
                int(period or self.cfg.default_period_s),
                process(received, conn.dialect),
            )
            for sid, last, period, received in conn.execute(q)
            if last is not None
        }
        self._recent_cache = (since, conn, out)
        return out

    def _evaluate_buckets(
        self,
        conn: Connection,
        now: datetime,
        active: dict[tuple[str, str], Any],
        offline: dict[str, tuple[str, datetime | None]],
        result: StepResult,
        *,
        covered: dict[str, str] | None = None,
    ) -> None:
        """Every complete minute since the last one, in order: congestion and incidents each
        minute, detector health and bottlenecks at the end of each 5-minute bucket."""
        progress = rule_state.load_progress(conn)
        fresh_start = floor_bucket(now - timedelta(seconds=self.cfg.backfill_s))
        complete_until = floor_bucket(now - timedelta(seconds=self.cfg.grace_s), TICK_S)
        if progress is not None and progress > complete_until + timedelta(
            seconds=self.cfg.backfill_s
        ):
            # The data went back in time (readings deleted, a new replay): waiting for the old
            # progress would stall the rules for as long, so start again from the new history.
            log.warning(
                "data clock %s is far behind the alerts progress %s: restarting from %s",
                now.isoformat(),
                progress.isoformat(),
                fresh_start.isoformat(),
            )
            progress = None
        start = progress or fresh_start
        limit = start + timedelta(seconds=BUCKET_S * self.cfg.max_buckets_per_step)
        end = min(complete_until, limit)
        behind = max(int((complete_until - max(end, start)).total_seconds()), 0)
        result.buckets_behind = -(-behind // BUCKET_S)
        if end <= start:
            return
        smooth = timedelta(seconds=self.cfg.congestion_smooth_s)
        seg_minutes = {
            (si.segment_id, si.bucket_start): si
            for si in segment_buckets(conn, self.network, start - smooth, end, TICK_S)
        }
        st_minutes = {
            (i.target_id, i.bucket_start): i
            for i in aggregate(
                conn, self.network, "station", start - self.incidents.lookback, end, TICK_S
            )
        }
        st_buckets: dict[tuple[str, datetime], Any] = {}
        # detector health runs every minute, on the window that ends with it
        samples = self._station_samples(conn, start - timedelta(seconds=self.health.window_s), end)
        if floor_bucket(end) > start:  # a 5-minute bucket ends in (start, end]
            lo = floor_bucket(start)
            hi = floor_bucket(end)
            st_buckets = {
                (i.target_id, i.bucket_start): i
                for i in aggregate(conn, self.network, "station", lo, hi, BUCKET_S)
            }
        stored_health = rule_state.load(conn, DETECTOR_FAULT)
        health: dict[str, DetectorState] = {}
        for st in self.network.stations:
            h = DetectorState.from_json(stored_health.get(st.station_id))
            is_active = (DETECTOR_FAULT, st.station_id) in active
            if h.active != is_active:
                h = DetectorState(is_active, h.kind if is_active else None, 0)
            health[st.station_id] = h
        summary: dict[str, Any] | None = None
        stored = rule_state.load(conn, CONGESTION)
        states: dict[str, CongestionState] = {}
        for seg in self.network.segments:
            s = CongestionState.from_json(stored.get(seg.segment_id))
            is_active = (CONGESTION, seg.segment_id) in active
            if s.active != is_active:  # the alerts table is the truth if the two ever disagree
                s = CongestionState(s.window, 0, is_active, s.severity if is_active else None)
            states[seg.segment_id] = s
        self.incidents.load(conn, active)
        self.bottlenecks.load(conn, active)

        # (root-cause alert) -> (rule, target) of the traffic alert it held back -> [minutes, last]
        held: dict[tuple[str, str], dict[tuple[str, str], list[Any]]] = defaultdict(dict)
        minute = start
        while minute < end:
            tick_end = minute + timedelta(seconds=TICK_S)
            at_bucket = int(tick_end.timestamp()) % BUCKET_S == 0
            # Suppression uses each station's state at the minute's time, not now: a station
            # offline now but reporting back then does not blank its past minutes in a catch-up.
            offline_then = {
                sid for sid, (_r, seen) in offline.items() if seen is None or seen < tick_end
            }
            suppressed = fully_offline_segments(self._stations_by_segment, offline_then)
            summary = self._evaluate_health(conn, tick_end, samples, health, at_bucket, result)
            # A station diagnosed faulty suppresses the traffic alerts its data would cause:
            # its segment's minutes count as no data (neither raise nor clear) while it lasts.
            faulty = {sid for sid, h in health.items() if h.active}
            suppressed |= {self._segment_of[sid] for sid in faulty}
            excluded = offline_then | faulty
            if at_bucket:
                bucket = tick_end - timedelta(seconds=BUCKET_S)
                self.bottlenecks.interval(
                    conn, bucket, tick_end, st_buckets, excluded, result.changes
                )
                result.buckets += 1
            for seg in self.network.segments:
                self._congestion_minute(
                    conn, seg, minute, seg_minutes, suppressed, states, at_bucket, result
                )
                current = seg_minutes.get((seg.segment_id, minute))
                if seg.segment_id in suppressed and current is not None:
                    self._note_suppressed(
                        held, seg, current.speed_kph, minute, offline_then, health, covered or {}
                    )
            self.incidents.tick(conn, minute, st_minutes, excluded, at_bucket, result.changes)
            result.ticks += 1
            minute = tick_end

        for sid, s in states.items():
            if not s.active and BAD not in s.window:
                s = CongestionState()  # nothing that could count towards a raise
            if s.to_json() != stored.get(sid):
                if s == CongestionState() and sid in stored:
                    rule_state.forget(conn, CONGESTION, sid)
                elif s != CongestionState():
                    rule_state.save(conn, CONGESTION, sid, s.to_json(), now)
        for sid, h in health.items():
            if h.to_json() != stored_health.get(sid):
                rule_state.save(conn, DETECTOR_FAULT, sid, h.to_json(), now)
        self.incidents.save(conn, now)
        self.bottlenecks.save(conn, now)
        if summary is not None:
            rule_state.save(conn, HEALTH_SUMMARY_RULE, "network", summary, now)
        self._record_suppressed(conn, held, active)
        rule_state.save_progress(conn, end, now)
        result.evaluated_until = end

    def _congestion_minute(
        self,
        conn: Connection,
        seg: Segment,
        minute: datetime,
        seg_minutes: dict[tuple[str, datetime], SegmentInterval],
        suppressed: set[str],
        states: dict[str, CongestionState],
        at_bucket: bool,
        result: StepResult,
    ) -> None:
        """One segment's congestion rule for the minute starting at ``minute``, on the speed
        smoothed over the rolling window that ends with it. Repeats are written at 5-minute
        boundaries (and on a change of severity), not every minute, to keep the history short."""
        sid = seg.segment_id
        tick_end = minute + timedelta(seconds=TICK_S)
        window = [
            seg_minutes.get((sid, tick_end - timedelta(seconds=TICK_S * k)))
            for k in range(self.cfg.congestion_smooth_s // TICK_S, 0, -1)
        ]
        current = seg_minutes.get((sid, minute))
        speed = None
        if sid not in suppressed and current is not None and current.speed_kph is not None:
            speed = smoothed_speed([(si.flow_vph, si.speed_kph) for si in window if si])
        before = states[sid]
        new, decision = congestion_step(before, speed, seg.free_flow_kph, self.params)
        states[sid] = new
        details = {
            **decision.details,
            "minute_start": iso(minute),
            "smoothed_s": self.cfg.congestion_smooth_s,
            "pct_observed": None if current is None else round(current.pct_observed, 1),
        }
        if decision.action == "raise" or (
            decision.action == "repeat" and (at_bucket or decision.severity != before.severity)
        ):
            assert decision.severity is not None
            result.changes.append(
                store.raise_or_repeat(
                    conn,
                    CONGESTION,
                    sid,
                    decision.severity,
                    congestion_message(seg.name, decision),
                    details,
                    tick_end,
                    target_kind="segment",
                )
            )
        elif decision.action == "clear":
            change = store.clear(conn, CONGESTION, sid, tick_end, details)
            if change is not None:
                result.changes.append(change)

    def _note_suppressed(
        self,
        held: dict[tuple[str, str], dict[tuple[str, str], list[Any]]],
        seg: Any,
        raw_speed: float | None,
        bucket: datetime,
        offline_then: set[str],
        health: dict[str, DetectorState],
        covered: dict[str, str],
    ) -> None:
        """Remember that the stations blanking ``seg`` held back a congestion minute its data
        would have counted as bad (a blanked minute that was fine suppressed nothing)."""
        ratio = raw_speed / seg.free_flow_kph if raw_speed is not None else None
        if bucket_outcome(ratio, self.params) != "bad":
            return
        causes = set()
        for st_id in self._stations_by_segment[seg.segment_id]:
            if health[st_id].active:
                causes.add((DETECTOR_FAULT, st_id))
            elif st_id in offline_then:
                gw = covered.get(st_id)
                causes.add((GATEWAY_OFFLINE, gw) if gw else (STATION_OFFLINE, st_id))
        for cause in causes:
            entry = held[cause].setdefault((CONGESTION, seg.segment_id), [0, ""])
            entry[0] += 1
            entry[1] = max(entry[1], iso(bucket) or "")

    def _record_suppressed(
        self,
        conn: Connection,
        held: dict[tuple[str, str], dict[tuple[str, str], list[Any]]],
        active: dict[tuple[str, str], store.AlertRecord],
    ) -> None:
        """Write on each root-cause alert which traffic alerts it suppressed, and on an active
        traffic alert which alerts hold it back (the operator sees why it does not move)."""
        holders: dict[tuple[str, str], set[str]] = defaultdict(set)
        for (rule, target), new in held.items():
            row = store.active_alerts(conn, rule).get((rule, target))
            previous = row.details.get("suppressed") if row is not None else None
            merged = merge_suppressed(previous, {k: (n, last) for k, (n, last) in new.items()})
            store.annotate(conn, rule, target, {"suppressed": merged})
            for key in new:
                holders[key].add(f"{rule}:{target}")
        for (rule, target), by in holders.items():
            # active now, including an alert raised earlier in this same step
            if (rule, target) in active or (rule, target) in store.active_alerts(conn, rule):
                store.annotate(conn, rule, target, {"suppressed_by": sorted(by)})

    def _station_samples(
        self, conn: Connection, start: datetime, end: datetime
    ) -> dict[str, list[tuple[datetime, StationSample]]]:
        """Each station's intervals in [start, end), in time order, for the diagnostics."""
        r = schema.readings
        q = (
            select(
                r.c.station_id,
                r.c.interval_start,
                r.c.period_s,
                r.c.lane,
                r.c.count,
                r.c.occupancy,
                r.c.speed_kph,
                r.c.status,
            )
            .where(r.c.interval_start >= start, r.c.interval_start < end)
            .order_by(r.c.station_id, r.c.interval_start, r.c.lane)
        )
        grouped: dict[tuple[str, datetime], tuple[int, list[LaneSample], list[str]]] = {}
        for row in conn.execute(q):
            key = (row.station_id, row.interval_start)
            period, lanes, statuses = grouped.setdefault(key, (row.period_s, [], []))
            lanes.append(LaneSample(row.count, row.occupancy, row.speed_kph))
            statuses.append(row.status or "ok")
        out: dict[str, list[tuple[datetime, StationSample]]] = defaultdict(list)
        for (sid, ts), (period, lanes, statuses) in grouped.items():
            status = next((x for x in statuses if x != "ok"), "ok")
            out[sid].append((ts, StationSample(int(period), tuple(lanes), status)))
        for rows in out.values():
            rows.sort(key=lambda item: item[0])
        return out

    def _evaluate_health(
        self,
        conn: Connection,
        bucket_end: datetime,
        samples: dict[str, list[tuple[datetime, StationSample]]],
        health: dict[str, DetectorState],
        at_bucket: bool,
        result: StepResult,
    ) -> dict[str, Any]:
        """Diagnose every reporting station over the window ending at ``bucket_end`` (the end
        of a minute); raise or clear its detector-fault alert, and repeat it at the end of each
        5-minute bucket (not every minute, to keep the history short). Returns the network's %
        good detectors."""
        window_start = bucket_end - timedelta(seconds=self.health.window_s)
        windows = {
            sid: [smp for ts, smp in rows if window_start <= ts < bucket_end]
            for sid, rows in samples.items()
        }
        # the neighbours' flow over the span a zero run needs (``no-flow``)
        zero_from = bucket_end - timedelta(
            seconds=self.health.zero_min_intervals * self.cfg.default_period_s
        )
        recent_vph = {
            sid: mean_lane_vph(smp for ts, smp in rows if zero_from <= ts < bucket_end)
            for sid, rows in samples.items()
        }
        window_occ = {sid: mean_occupancy(win) for sid, win in windows.items()}
        faulty_before = {sid for sid, h in health.items() if h.active}
        lane_flows = [
            statistics.fmean(
                ln.count * 3600.0 / smp.period_s
                for smp in win
                for ln in smp.lanes
                if ln.count is not None
            )
            for win in windows.values()
            if any(ln.count is not None for smp in win for ln in smp.lanes)
        ]
        network_vph = statistics.median(lane_flows) if lane_flows else None
        faulty = reporting = 0
        for st in self.network.stations:
            sid = st.station_id
            win = windows.get(sid) or []
            if not win:
                continue  # no data: the offline rule's business; neither raises nor clears
            reporting += 1
            # Expected intervals between its first and last report in the window: a station
            # that started, stopped or came back within it is new or silent (the offline
            # rule), not intermittent; too short a span is not judged.
            stamps = [ts for ts, _smp in samples[sid] if window_start <= ts < bucket_end]
            first, last = stamps[0], stamps[-1]
            span_s = (last - first).total_seconds() + win[-1].period_s
            expected = (
                int(span_s // win[-1].period_s) if span_s >= self.health.window_s / 2 else None
            )
            found: list[Diagnosis] = diagnose(
                win,
                expected_intervals=expected,
                network_lane_vph=network_vph,
                neighbour_lane_vph=neighbour_flow(
                    self._neighbours.get(sid, ()), recent_vph, faulty_before
                ),
                neighbour_occupancy=neighbour_occupancy(
                    self._neighbours.get(sid, ()), window_occ, faulty_before
                ),
                params=self.health,
            )
            new, action = detector_step(health[sid], found)
            health[sid] = new
            if new.active:
                faulty += 1
            if action == "raise" or (action == "repeat" and at_bucket):
                details = {
                    "diagnosis": found[0].kind,
                    "evidence": found[0].evidence,
                    "all": {d.kind: d.evidence for d in found},
                    "window_end": iso(bucket_end),
                    "window_s": self.health.window_s,
                    "suppresses_congestion_on": st.segment_id,
                }
                result.changes.append(
                    store.raise_or_repeat(
                        conn,
                        DETECTOR_FAULT,
                        sid,
                        "major",
                        detector_message(sid, found),
                        details,
                        bucket_end,
                        target_kind="station",
                        keep=("suppressed",),
                    )
                )
            elif action == "clear":
                change = store.clear(
                    conn, DETECTOR_FAULT, sid, bucket_end, {"reason": "diagnostics clean"}
                )
                if change is not None:
                    result.changes.append(change)
        return {
            "at": iso(bucket_end),
            "reporting": reporting,
            "faulty": faulty,
            "pct_good": pct_good(faulty, reporting),
        }


def _raise_offline(
    conn: Connection, station_id: str, reason: str, last_seen: datetime | None, at: datetime
) -> store.Change:
    """Raise the station-offline alert, or count one more interval of it (a repeat)."""
    return store.raise_or_repeat(
        conn,
        STATION_OFFLINE,
        station_id,
        "major",
        offline_message(station_id, reason, last_seen),
        {"reason": reason, "last_seen": iso(last_seen)},
        at,
        target_kind="station",
        keep=("suppressed",),
    )


def run_evaluator(
    settings: Settings,
    engine: Engine,
    network: Network,
    stop: threading.Event,
    *,
    publish: Publisher | None = None,
    interval_s: float = 2.0,
    alert_settings: AlertSettings | None = None,
    metrics: AlertMetrics | None = None,
) -> EvaluatorStats:
    """Evaluate until ``stop`` is set: ``its alerts`` runs it, ``its up`` runs it in a thread.

    A failing step (database restarting, say) is logged and retried on the next tick; leadership
    is re-checked every tick, so a standby takes over within ``interval_s`` of a leader's loss.
    """
    evaluator = Evaluator(
        engine,
        network,
        alert_settings=alert_settings or AlertSettings(),
        publish=publish,
        topic_prefix=settings.topic_prefix,
    )
    was_leading = None
    try:
        while not stop.is_set():
            catching_up = False
            started = time.perf_counter()
            try:
                result = evaluator.step()
                if metrics is not None:
                    _observe(metrics, result, time.perf_counter() - started)
                catching_up = result.buckets_behind > 0
                if result.leading != was_leading and not result.leading:
                    log.info("alerts evaluator on standby: another instance leads")
                was_leading = result.leading
            except Exception:  # noqa: BLE001 - keep evaluating; the next tick retries
                log.exception("alerts evaluation step failed; retrying")
                evaluator.release()
                if metrics is not None:
                    metrics.steps.labels("failed").inc()
                    metrics.leading.set(0)
            if not catching_up:
                stop.wait(interval_s)
    finally:
        evaluator.close()
    s = evaluator.stats
    log.info(
        "alerts evaluator stopped: %d steps, %d buckets, %d raised, %d cleared",
        s.steps,
        s.buckets,
        s.raised,
        s.cleared,
    )
    return s


def _observe(metrics: AlertMetrics, result: StepResult, seconds: float) -> None:
    """One step's figures on the evaluator's metrics (docs/observability.md)."""
    metrics.leading.set(1 if result.leading else 0)
    if not result.leading:
        metrics.steps.labels("standby").inc()
        return
    metrics.steps.labels("led").inc()
    metrics.step_seconds.observe(seconds)
    metrics.buckets.inc(result.buckets)
    metrics.buckets_behind.set(result.buckets_behind)
    if result.data_time is not None:
        metrics.data_time.set(result.data_time.timestamp())
    for change in result.changes:
        metrics.alerts.labels(change.alert.rule, change.event).inc()
