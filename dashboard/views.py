"""What each refresh shows: service-layer calls composed into figures and components.

These are the plain functions the (one-line) callbacks call. Data comes only from the service
layer (``its.service.live`` and ``its.alerts.store``); there is no SQL here. Each function opens
its own short connection, so a slow query never holds a connection across refreshes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from dashboard import figures, layout
from its.alerts import store
from its.alerts.rules import FEED_STALLED, FEED_TARGET
from its.api.params import MAX_ALERT_ID, reject_control_characters
from its.auth import audit
from its.auth.identity import Identity
from its.auth.roles import Permission
from its.config import Settings
from its.errors import ConflictError, NotFoundError, QueryError
from its.network import Network
from its.service import detector_health, live, traffic

SERIES_WINDOW = timedelta(hours=2)
SERIES_BUCKET_S = 300
MAX_COMMENT = 2000  # as the API's AckRequest


@dataclass(frozen=True)
class Dashboard:
    """Everything a refresh needs, built once by :func:`dashboard.app.create_dash`."""

    settings: Settings
    engine: Engine
    network: Network
    bounds: figures.Bounds | None = field(init=False)
    names: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        coords = (c for s in self.network.segments for c in s.coords)
        object.__setattr__(self, "bounds", figures.bounds_of(coords))
        object.__setattr__(self, "names", {s.segment_id: s.name for s in self.network.segments})

    @property
    def tz(self) -> Any:
        return self.network.tz


@dataclass(frozen=True)
class LiveView:
    map_figure: Any
    kpis: list[Any]
    updated: list[Any]


def live_view(d: Dashboard, wall_now: datetime | None = None) -> LiveView:
    """The map, KPI cards and "last updated" line of one refresh, all at one data time."""
    s = d.settings
    with d.engine.connect() as conn:
        state, health = live.snapshot(conn, d.network, stale_after_s=s.stale_after_s)
        active = store.active_alerts(conn)
    kpis = live.kpis_from(state["features"], health, state["data_time"])
    statuses = detector_health.station_statuses(d.network, health, active)
    good = detector_health.summarize(d.network, statuses, state["data_time"])["network"]
    kpis |= {"pct_good_detectors": good["pct_good"], "detectors_good": good["good"]}
    fig = figures.network_map_figure(
        state,
        health,
        tz=d.tz,
        bounds=d.bounds,
        map_style=s.map_style,
        tiles_url=s.map_tiles_url,
    )
    wall = wall_now or datetime.now(UTC)
    updated = layout.last_updated(state["data_time"], wall, d.tz, lag_warn_s=s.stale_after_s)
    return LiveView(fig, layout.kpi_cards(kpis), updated)


def feed_banner_view(d: Dashboard, wall_now: datetime | None = None) -> tuple[list[Any], str]:
    """The critical banner while a feed-stalled alert is active (hidden otherwise)."""
    with d.engine.connect() as conn:
        stalled = store.active_alerts(conn, FEED_STALLED).get((FEED_STALLED, FEED_TARGET))
    wall = wall_now or datetime.now(UTC)
    return layout.feed_banner(stalled.to_dict() if stalled else None, wall, d.tz)


def alerts_view(d: Dashboard, who: Identity | None = None) -> tuple[list[Any], str]:
    """The active alerts, newest first, and the count line above them; the Acknowledge buttons
    are disabled for people whose role cannot acknowledge."""
    with d.engine.connect() as conn:
        alerts = [a.to_dict() for a in store.list_alerts(conn, state="active", limit=100)]
    can_ack = who is not None and who.can(Permission.operate)
    return layout.alert_items(alerts, d.tz, d.names, can_ack), layout.alerts_count(alerts)


def acknowledge(
    d: Dashboard,
    alert_id: int,
    who: Identity | None,
    comment: str | None,
    client: str | None = None,
) -> Any:
    """Acknowledge one alert as the signed-in person; returns the message to show them.

    The acknowledgement and its audit entry commit together. A role without ``operate`` is
    refused with a message (the button is disabled for it too, but a page left open while an
    administrator changed the role still sends clicks)."""
    if who is None:
        return layout.ack_message("Your session has ended: sign in again to acknowledge.", "warn")
    if not who.can(Permission.operate):
        return layout.ack_message(
            f"Your role ({who.role}) can view alerts but not acknowledge them.", "warn"
        )
    if isinstance(alert_id, bool) or not isinstance(alert_id, int):  # a client sends both
        return layout.ack_message("Not acknowledged: no such alert.", "warn")
    if not 1 <= alert_id <= MAX_ALERT_ID:
        return layout.ack_message(f"Alert #{alert_id} no longer exists.", "warn")
    try:
        comment = _clean_comment(comment)
    except ValueError as exc:
        return layout.ack_message(f"Not acknowledged: the comment {exc}.", "warn")
    try:
        with d.engine.begin() as conn:
            rec = store.acknowledge(conn, alert_id, operator=who.actor, comment=comment)
            audit.record(
                conn,
                "alert.ack",
                actor=who.actor,
                target=f"alert:{alert_id}",
                detail={**who.audit_detail, "comment": rec.ack_comment},
                client=client,
            )
    except NotFoundError:
        return layout.ack_message(f"Alert #{alert_id} no longer exists.", "warn")
    except (ConflictError, QueryError) as exc:
        return layout.ack_message(f"Not acknowledged: {exc}.", "warn")
    return layout.ack_message(f"Alert #{rec.id} acknowledged by {rec.acked_by}.", "ok")


def _clean_comment(comment: object) -> str | None:
    """The comment as stored: text of at most MAX_COMMENT characters, no control characters
    but tabs and line breaks (the API's rule); None when empty."""
    if comment is not None and not isinstance(comment, str):
        raise ValueError("must be text")
    comment = (comment or "").strip()
    if len(comment) > MAX_COMMENT:
        raise ValueError(f"is longer than {MAX_COMMENT} characters")
    return reject_control_characters(comment, allowed="\t\n\r") or None


def segment_view(d: Dashboard, segment_id: str | None) -> Any:
    """Speed and flow of the selected segment over the last 2 hours of data time."""
    if not segment_id or not isinstance(segment_id, str):  # a client sends this value
        return figures.empty_segment_figure()
    try:
        seg = d.network.segment(segment_id)
    except KeyError:
        return figures.empty_segment_figure(f"Unknown segment {segment_id}")
    with d.engine.connect() as conn:
        end = traffic.data_clock(conn)
        if end is None:
            return figures.empty_segment_figure(f"{seg.name}: no data yet")
        start = end - SERIES_WINDOW
        series = live.segment_series(conn, d.network, segment_id, start, end, SERIES_BUCKET_S)
    return figures.segment_series_figure(
        f"{seg.name} — {segment_id}",
        figures.fill_gaps(series, start, end, SERIES_BUCKET_S),
        tz=d.tz,
        free_flow_kph=seg.free_flow_kph,
    )


def segment_from_click(click_data: dict[str, Any] | None) -> str | None:
    """The segment id a map click carries in ``customdata`` (None for a gap or no click)."""
    try:
        custom = click_data["points"][0]["customdata"]  # type: ignore[index]
    except (TypeError, KeyError, IndexError):
        return None
    if isinstance(custom, list | tuple):
        custom = custom[0] if custom else None
    return custom if isinstance(custom, str) else None
