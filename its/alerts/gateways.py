"""Root cause before noise: one alert for a silent gateway, and who suppressed which traffic alert.

Pure functions, no database or clock, as the other rules (``its/alerts/rules.py``).

- **Gateway offline.** Stations behind one roadside gateway (``gateway_id`` in the road network,
  docs/network.md) share its power and its uplink: when it fails they all fall silent at once.
  An operator wants one ``gateway-offline`` alert naming the gateway and listing its stations,
  not one ``station-offline`` per station. A gateway is judged on the stations behind it that
  have ever been heard from (a station never heard from is "no data", as for the station rule);
  it is offline when at least ``min_stations`` (2) of them are heard-from and every one of them
  is offline. With one station left reporting, the others are individual outages.
- **Suppression evidence.** A station that is offline or diagnosed faulty blanks the traffic
  buckets its data would cause; :func:`merge_suppressed` keeps, on the root-cause alert, which
  traffic alert (rule and target) it held back, how many buckets and the last one, so an operator
  reading "detector fault" also reads "and that is why SDR-N-01 shows no congestion alert".
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

GATEWAY_OFFLINE = "gateway-offline"


def silent_gateways(
    gateways: Mapping[str, Sequence[str]],
    offline: Collection[str],
    heard: Collection[str],
    *,
    min_stations: int = 2,
) -> dict[str, list[str]]:
    """Gateway id -> its offline stations (sorted), for every gateway whose heard-from stations
    (at least ``min_stations``) are all offline."""
    out: dict[str, list[str]] = {}
    for gw, members in gateways.items():
        known = sorted(sid for sid in members if sid in heard or sid in offline)
        if len(known) >= min_stations and all(sid in offline for sid in known):
            out[gw] = known
    return out


def gateway_message(gateway_id: str, stations: Sequence[str], last_seen: datetime | None) -> str:
    when = last_seen.strftime("%Y-%m-%d %H:%M:%S UTC") if last_seen else "ever"
    shown = ", ".join(stations[:6]) + (
        f" and {len(stations) - 6} more" if len(stations) > 6 else ""
    )
    return (
        f"Gateway {gateway_id} is silent: its {len(stations)} stations ({shown}) "
        f"sent nothing since {when}"
    )


def newest(times: Iterable[datetime | None]) -> datetime | None:
    """The latest of ``times`` ignoring None (when a gateway's stations were last heard)."""
    return max((t for t in times if t is not None), default=None)


def merge_suppressed(
    previous: Sequence[Mapping[str, Any]] | None,
    new: Mapping[tuple[str, str], tuple[int, str]],
) -> list[dict[str, Any]]:
    """The ``suppressed`` list of a root-cause alert's details: one entry per (rule, target) of
    a traffic alert it held back, with the buckets suppressed so far and the last one (ISO)."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for item in previous or ():
        try:
            key = (str(item["rule"]), str(item["target_id"]))
            merged[key] = {
                "rule": key[0],
                "target_id": key[1],
                "buckets": int(item.get("buckets", 0)),
                "last_bucket": item.get("last_bucket"),
            }
        except (KeyError, TypeError, ValueError):
            continue  # unreadable old evidence is dropped, never fatal
    for (rule, target), (buckets, last) in new.items():
        entry = merged.setdefault(
            (rule, target), {"rule": rule, "target_id": target, "buckets": 0, "last_bucket": None}
        )
        entry["buckets"] += buckets
        if entry["last_bucket"] is None or last > entry["last_bucket"]:
            entry["last_bucket"] = last
    return sorted(merged.values(), key=lambda e: (e["rule"], e["target_id"]))


def feed_quiet(last_received: datetime | None, wall: datetime, offline_after_s: float) -> bool:
    """True when nothing at all has arrived for as long as makes a station offline.

    Then every station would be called offline at once, although the cause is one (the feed,
    the broker, ingest): station and gateway alarms wait for the feed-stalled decision, which
    either raises one critical alert and suppresses them, or sees data again and raises nothing.
    Without this hold a dead feed raised an alarm per station (or gateway) 30 s before the stall.
    """
    return last_received is not None and (wall - last_received).total_seconds() >= offline_after_s
