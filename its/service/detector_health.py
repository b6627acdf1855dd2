"""Detector health for operators and engineers: % good detectors and each station's fault history.

PeMS reports "% good detectors" every day because every figure the platform shows is only as good
as its detectors. Here a station is **good** when it reports (not offline, not "no data") and is
not diagnosed faulty; the share is over *every* station of the network, so a station never heard
from counts against it (it is not measuring anything). The judgement is the alert evaluator's,
read from the alerts it keeps, so the API, the dashboard card and the alert list always agree:

- ``offline``: its station-offline alert is active, a gateway-offline alert covers it, or the
  live station health (Last Will, silent for 3 periods) says so;
- ``faulty``: its detector-fault alert is active (the diagnosis and its evidence are there);
- ``no-data``: nothing from it in the last hour of data;
- ``good``: none of these.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Connection

from its.alerts import store
from its.alerts.gateways import GATEWAY_OFFLINE
from its.alerts.health import DETECTOR_FAULT
from its.alerts.rules import STATION_OFFLINE
from its.contract import iso
from its.db import schema
from its.errors import NotFoundError
from its.network import Network
from its.service import live, traffic

STATUSES = ("good", "faulty", "offline", "no-data")
FAULT_RULES = (DETECTOR_FAULT, STATION_OFFLINE, GATEWAY_OFFLINE)


def pct(good: int, total: int) -> float | None:
    return round(100.0 * good / total, 1) if total else None


def _counts(statuses: Iterable[str], *, has_data: bool = True) -> dict[str, Any]:
    """Counts per status; ``pct_good`` is null before any data (no data is not 0% good)."""
    c = Counter(statuses)
    total = sum(c.values())
    return {
        "stations": total,
        "good": c["good"],
        "faulty": c["faulty"],
        "offline": c["offline"],
        "no_data": c["no-data"],
        "pct_good": pct(c["good"], total) if has_data else None,
    }


def station_statuses(
    network: Network,
    health: Iterable[Mapping[str, Any]],
    active: Mapping[tuple[str, str], store.AlertRecord],
) -> dict[str, dict[str, Any]]:
    """Station id -> {status, diagnosis, alert_id} from the live health and the active alerts
    (pure: the dashboard passes what its refresh already read)."""
    live_health = {h["station_id"]: h["health"] for h in health}
    by_gateway = {
        sid: alert
        for (rule, _gw), alert in active.items()
        if rule == GATEWAY_OFFLINE
        for sid in alert.details.get("stations", ())
    }
    out: dict[str, dict[str, Any]] = {}
    for st in network.stations:
        sid = st.station_id
        fault = active.get((DETECTOR_FAULT, sid))
        off = active.get((STATION_OFFLINE, sid)) or by_gateway.get(sid)
        if off is not None or live_health.get(sid) == "offline":
            status, alert = "offline", off
        elif fault is not None:
            status, alert = "faulty", fault
        elif live_health.get(sid, "no-data") == "no-data":
            status, alert = "no-data", None
        else:
            status, alert = "good", None
        out[sid] = {
            "status": status,
            "diagnosis": fault.details.get("diagnosis") if fault is not None else None,
            "alert_id": alert.id if alert is not None else None,
        }
    return out


def summarize(
    network: Network, statuses: Mapping[str, Mapping[str, Any]], data_time: str | None
) -> dict[str, Any]:
    """Network-wide and per-corridor counts and % good, plus every station that is not good."""
    corridor_of = {s.segment_id: s.corridor_id for s in network.segments}
    per_corridor: dict[str, list[str]] = defaultdict(list)
    problems = []
    for st in network.stations:
        info = statuses[st.station_id]
        cid = corridor_of[st.segment_id]
        per_corridor[cid].append(info["status"])
        if info["status"] != "good":
            problems.append(
                {
                    "station_id": st.station_id,
                    "corridor_id": cid,
                    "segment_id": st.segment_id,
                    "gateway_id": st.gateway_id,
                    **info,
                }
            )
    names = {c.corridor_id: c.name for c in network.corridors}
    has_data = data_time is not None
    return {
        "data_time": data_time,
        "network": _counts((i["status"] for i in statuses.values()), has_data=has_data),
        "corridors": [
            {
                "corridor_id": cid,
                "name": names.get(cid, cid),
                **_counts(per_corridor[cid], has_data=has_data),
            }
            for cid in sorted(per_corridor)
        ],
        "stations": problems,
    }


def detector_health(conn: Connection, network: Network) -> dict[str, Any]:
    """% good detectors now, network-wide and per corridor (``GET /api/v1/health/detectors``)."""
    clock = traffic.data_clock(conn)
    health = live.station_health(conn, network, now=clock)
    statuses = station_statuses(network, health, store.active_alerts(conn))
    return summarize(network, statuses, iso(clock))


def station_faults(
    conn: Connection,
    network: Network,
    station_id: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """One station's diagnosis history, newest first: its detector-fault and station-offline
    alerts and the gateway-offline alerts of its gateway that overlap [start, end), each with
    the diagnoses seen over the episode (``GET /api/v1/stations/{id}/faults``)."""
    station = next((s for s in network.stations if s.station_id == station_id), None)
    if station is None:
        raise NotFoundError(f"no station {station_id!r}")
    a = schema.alerts
    targets = [and_(a.c.rule.in_((DETECTOR_FAULT, STATION_OFFLINE)), a.c.target_id == station_id)]
    if station.gateway_id is not None:
        targets.append(and_(a.c.rule == GATEWAY_OFFLINE, a.c.target_id == station.gateway_id))
    where = [or_(*targets)]
    if end is not None:
        where.append(a.c.raised_at < end)
    if start is not None:
        where.append(or_(a.c.cleared_at.is_(None), a.c.cleared_at >= start))
    records = store.alerts_where(conn, *where, limit=limit)
    seen = _diagnoses_seen(conn, [r.id for r in records if r.rule == DETECTOR_FAULT])
    out = []
    for r in records:
        if r.rule == GATEWAY_OFFLINE and station_id not in r.details.get("stations", ()):
            continue  # the gateway was down while this station still reported
        kind = {
            DETECTOR_FAULT: r.details.get("diagnosis"),
            STATION_OFFLINE: r.details.get("reason"),
            GATEWAY_OFFLINE: "gateway",
        }[r.rule]
        out.append(
            {
                **r.to_dict(),
                "kind": kind,
                "diagnoses": seen.get(r.id, [kind] if r.rule == DETECTOR_FAULT and kind else []),
                "duration_s": (
                    (r.cleared_at - r.raised_at).total_seconds() if r.cleared_at else None
                ),
            }
        )
    return out


def _diagnoses_seen(conn: Connection, alert_ids: list[int]) -> dict[int, list[str]]:
    """Alert id -> the diagnoses its raise and repeats named, in order of first appearance."""
    if not alert_ids:
        return {}
    e = schema.alert_events
    rows = conn.execute(
        select(e.c.alert_id, e.c.details)
        .where(e.c.alert_id.in_(alert_ids), e.c.event.in_(("raised", "repeated", "severity")))
        .order_by(e.c.id)
    )
    out: dict[int, list[str]] = defaultdict(list)
    for alert_id, details in rows:
        kind = (details or {}).get("diagnosis")
        if kind and kind not in out[alert_id]:
            out[alert_id].append(kind)
    return dict(out)
