"""What the network is doing now: the live map, station health and the KPI cards.

"Now" is the data clock (:func:`its.service.traffic.data_clock`), not the wall clock, so the views
stay meaningful while the simulator replays history quickly or a feed lags. A segment's live value
is its traffic in the newest complete 5-minute bucket of data time (:func:`live_bucket`), read from
the stored segment roll-ups (raw rows only where the worker has not rolled up yet), so one refresh
of the map reads 2,000 stored rows at city scale rather than 60,000 raw ones. A segment whose
newest reading is older than ``stale_after_s`` is marked stale, and a segment with no data in that
bucket is "no-data", never free-flowing.
"""

from __future__ import annotations

import weakref
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection

from its import metrics
from its.contract import iso
from its.db import rollup
from its.errors import NotFoundError
from its.network import Network, Segment
from its.service import traffic
from its.service.traffic import round_or_none

LIVE_WINDOW = timedelta(minutes=5)
HEALTH_LOOKBACK = timedelta(hours=1)
OFFLINE_PERIODS = 3
CONGESTED_BANDS = ("congested", "jammed")
HEALTH_STATES = ("ok", "offline", "no-data")


def live_bucket(clock: datetime) -> tuple[datetime, datetime]:
    """The newest complete 5-minute bucket at data time ``clock``: the one the live map shows.

    A complete bucket (rather than a rolling five minutes) is what the roll-ups store, so the map
    reads one stored row per segment; the bucket in progress would count the intervals still to
    come as missing (its % observed would climb through the bucket)."""
    end = rollup.bucket_floor(clock, LIVE_WINDOW, None)
    return end - LIVE_WINDOW, end


def live_segments(
    conn: Connection, network: Network, clock: datetime
) -> dict[str, traffic.Interval]:
    """Each segment's traffic in the newest complete 5-minute bucket (:func:`live_bucket`)."""
    start, end = live_bucket(clock)
    rows = traffic.aggregate_rows(conn, network, "segment", start, end, 300)
    return {row[0]: traffic.Interval(*row) for row in rows}


def _clock(conn: Connection, now: datetime | None) -> datetime | None:
    return now if now is not None else traffic.data_clock(conn)


def _static_properties(seg: Segment) -> dict[str, Any]:
    """The properties of a segment that only change with the network."""
    return {
        "segment_id": seg.segment_id,
        "corridor_id": seg.corridor_id,
        "name": seg.name,
        "direction": seg.direction,
        "road_class": seg.road_class,
        "length_km": round(seg.length_km, 3),
        "free_flow_kph": seg.free_flow_kph,
    }


def segment_properties(
    seg: Segment,
    live: traffic.Interval | None,
    observed_at: datetime | None,
    stale: bool,
    preset: str,
    static: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The live properties of one segment, as the API and the map show them (``static``: its
    :func:`_static_properties`, when the caller has them already)."""
    speed = live.speed_kph if live else None
    band = metrics.classify_band(speed, seg.free_flow_kph, preset)
    return {
        **(static if static is not None else _static_properties(seg)),
        "speed_kph": round_or_none(speed),
        "flow_vph": round_or_none(live.flow_vph if live else None),
        "occupancy": round_or_none(live.occupancy if live else None, 4),
        "pct_observed": round_or_none(live.pct_observed if live else None),
        "band": band,
        "tti": round_or_none(metrics.tti(speed, seg.free_flow_kph), 2),
        "observed_at": iso(observed_at),
        "stale": stale,
    }


def _segment_observed(network: Network, last_seen: dict[str, datetime]) -> dict[str, datetime]:
    out: dict[str, datetime] = {}
    for st in network.stations:
        seen = last_seen.get(st.station_id)
        if seen is not None and (st.segment_id not in out or seen > out[st.segment_id]):
            out[st.segment_id] = seen
    return out


def _recent_last_seen(conn: Connection, clock: datetime | None) -> dict[str, datetime]:
    """Each station's newest interval end within the last hour of data time."""
    if clock is None:
        return {}
    return traffic.station_last_seen(conn, since=clock - HEALTH_LOOKBACK, until=clock)


def _features(
    conn: Connection,
    network: Network,
    clock: datetime | None,
    seen: dict[str, datetime],
    stale_after_s: int,
    preset: str,
) -> list[dict[str, Any]]:
    live: dict[str, traffic.Interval] = {}
    if clock is not None:
        live = live_segments(conn, network, clock)
    observed = _segment_observed(network, seen)
    stale_before = clock - timedelta(seconds=stale_after_s) if clock else None
    features = []
    for seg, static, geometry in _static_parts(network):
        at = observed.get(seg.segment_id)
        stale = at is None or (stale_before is not None and at < stale_before)
        props = segment_properties(seg, live.get(seg.segment_id), at, stale, preset, static)
        features.append(
            {"type": "Feature", "id": seg.segment_id, "geometry": geometry, "properties": props}
        )
    return features


# id(network) -> (a weak reference to it, each segment with its static properties and geometry)
_STATIC: dict[int, tuple[weakref.ref[Network], list[tuple[Segment, dict, dict]]]] = {}


def _static_parts(network: Network) -> list[tuple[Segment, dict[str, Any], dict[str, Any]]]:
    """Each segment with the parts of its feature that only change with the network, built once
    per network rather than on every refresh of the map (2,000 segments' geometry). The
    geometry dicts are shared between answers: read them, never change them."""
    hit = _STATIC.get(id(network))
    if hit is not None and hit[0]() is network:
        return hit[1]
    parts = [
        (
            seg,
            _static_properties(seg),
            {"type": "LineString", "coordinates": [list(c) for c in seg.coords]},
        )
        for seg in network.segments
    ]
    key = id(network)
    _STATIC[key] = (weakref.ref(network, lambda _ref: _STATIC.pop(key, None)), parts)
    return parts


def _healths(
    conn: Connection, network: Network, clock: datetime | None, seen: dict[str, datetime]
) -> list[dict[str, Any]]:
    states = traffic.station_states(conn)
    out = []
    for st in network.stations:
        last = seen.get(st.station_id)
        state = states.get(st.station_id, ("unknown", None))[0]
        out.append(
            {
                "station_id": st.station_id,
                "segment_id": st.segment_id,
                "lon": st.lon,
                "lat": st.lat,
                "detector": st.detector,
                "health": _health(last, state, clock),
                "last_seen": iso(last),
            }
        )
    return out


def network_state(
    conn: Connection,
    network: Network,
    *,
    now: datetime | None = None,
    stale_after_s: int = 180,
    preset: str = "ratio",
) -> dict[str, Any]:
    """GeoJSON FeatureCollection of the segments with their live state in ``properties``."""
    clock = _clock(conn, now)
    seen = _recent_last_seen(conn, clock)
    features = _features(conn, network, clock, seen, stale_after_s, preset)
    return {"type": "FeatureCollection", "data_time": iso(clock), "features": features}


def station_health(
    conn: Connection,
    network: Network,
    *,
    now: datetime | None = None,
    stale_after_s: int = 180,
) -> list[dict[str, Any]]:
    """Each station's health: ok, offline (Last Will or silent for 3 periods) or no-data.

    ``stale_after_s`` is accepted for symmetry with the other live views; a station's own health
    uses its period, as the offline alert does."""
    clock = _clock(conn, now)
    return _healths(conn, network, clock, _recent_last_seen(conn, clock))


def snapshot(
    conn: Connection,
    network: Network,
    *,
    now: datetime | None = None,
    stale_after_s: int = 180,
    preset: str = "ratio",
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """:func:`network_state` and :func:`station_health` at one data time, reading the clock and
    the stations' last readings once: what one dashboard refresh or the KPI cards need."""
    clock = _clock(conn, now)
    seen = _recent_last_seen(conn, clock)
    features = _features(conn, network, clock, seen, stale_after_s, preset)
    state = {"type": "FeatureCollection", "data_time": iso(clock), "features": features}
    return state, _healths(conn, network, clock, seen)


def _health(last: datetime | None, state: str, clock: datetime | None) -> str:
    """Offline: the station's Last Will said so, or it has been silent for 3 periods of data time
    (the same test as the station-offline alert). No data in the last hour is "no-data"."""
    if state == "offline":
        return "offline"
    if last is None or clock is None:
        return "no-data"
    if (clock - last).total_seconds() > OFFLINE_PERIODS * traffic.DEFAULT_PERIOD_S:
        return "offline"
    return "ok"


def kpis_from(
    features: list[dict[str, Any]], health: list[dict[str, Any]], data_time: str | None
) -> dict[str, Any]:
    """The KPI cards from the live map and station health (so one refresh runs each query once).

    Network mean speed is total VKT over total VHT, which is the flow- and length-weighted
    harmonic mean of segment speeds.
    """
    vkt = vht = flow = congested_km = 0.0
    for f in features:
        p = f["properties"]
        if p["stale"] or p["speed_kph"] is None or not p["flow_vph"]:
            continue
        vkt += p["flow_vph"] * p["length_km"]
        vht += p["flow_vph"] * p["length_km"] / p["speed_kph"]
        flow += p["flow_vph"]
        if p["band"] in CONGESTED_BANDS:
            congested_km += p["length_km"]
    counts = dict.fromkeys(HEALTH_STATES, 0)
    for h in health:
        counts[h["health"]] += 1
    return {
        "data_time": data_time,
        "mean_speed_kph": round(vkt / vht, 1) if vht else None,
        "total_flow_vph": round(flow) if vkt else None,
        "congested_km": round(congested_km, 2),
        "stations_total": len(health),
        "stations_reporting": counts["ok"],
        "stations_offline": counts["offline"],
        "stations_no_data": counts["no-data"],
    }


def kpis(
    conn: Connection,
    network: Network,
    *,
    now: datetime | None = None,
    stale_after_s: int = 180,
) -> dict[str, Any]:
    """Network mean speed, total flow, congested km and station counts."""
    state, health = snapshot(conn, network, now=now, stale_after_s=stale_after_s)
    return kpis_from(state["features"], health, state["data_time"])


def segment_series(
    conn: Connection,
    network: Network,
    segment_id: str,
    start: datetime,
    end: datetime,
    bucket_s: int = 300,
) -> list[dict[str, Any]]:
    """One segment's speed, flow, occupancy and % observed per bucket over [start, end)."""
    try:
        network.segment(segment_id)
    except KeyError:
        raise NotFoundError(f"no segment {segment_id!r}") from None
    rows = traffic.aggregate(
        conn, network, "segment", start, end, bucket_s, target_ids=[segment_id]
    )
    return [r.to_point() for r in rows]
