"""The page: header, KPI cards, live map, alerts panel and the segment chart.

Besides :func:`build_layout`, the pieces that callbacks refresh (KPI cards, the alert list, the
"last updated" line) are pure functions of service-layer dicts, so tests call them directly.
"No data" is rendered as such (grey, "no data yet"), never as 0 or OK.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, tzinfo
from typing import Any

from dash import dcc, html

from dashboard import figures
from dashboard.ids import ids

# --------------------------------------------------------------------------- KPI cards


def _card(label: str, value: str, unit: str = "", *, tone: str = "", kid: str = "") -> html.Div:
    no_data = value == "no data"
    return html.Div(
        className=f"kpi-card {tone} {'no-data' if no_data else ''}".strip(),
        id=kid or None,
        children=[
            html.Div(label, className="kpi-label"),
            html.Div(
                className="kpi-value",
                children=[
                    html.Span("no data yet" if no_data else value, className="kpi-number"),
                    html.Span("" if no_data else unit, className="kpi-unit"),
                ],
            ),
        ],
    )


def kpi_cards(kpis: Mapping[str, Any] | None) -> list[html.Div]:
    """The KPI row from :func:`its.service.live.kpis`; missing values say "no data yet"."""
    k = dict(kpis or {})
    has_data = k.get("data_time") is not None
    total = k.get("stations_total")
    reporting = k.get("stations_reporting")
    offline = k.get("stations_offline")
    congested = k.get("congested_km") if has_data else None
    pct_good = k.get("pct_good_detectors") if has_data else None
    return [
        _card(
            "Network mean speed",
            figures.fmt_number(k.get("mean_speed_kph")),
            "km/h",
            kid="kpi-speed",
        ),
        _card("Total flow", figures.fmt_number(k.get("total_flow_vph")), "veh/h", kid="kpi-flow"),
        _card(
            "Congested",
            figures.fmt_number(congested, digits=1),
            "km",
            tone="warn" if congested else "",
            kid="kpi-congested",
        ),
        _card(
            "Stations reporting",
            "no data" if reporting is None or not has_data else f"{reporting} / {total}",
            "",
            kid="kpi-reporting",
        ),
        _card(
            "Stations offline",
            "no data" if offline is None else str(offline),
            "",
            tone="alarm" if offline else "",
            kid="kpi-offline",
        ),
        _card(
            "Good detectors",
            figures.fmt_number(pct_good, digits=1),
            "%" if k.get("detectors_good") is None else f"% ({k['detectors_good']}/{total})",
            tone=_good_detector_tone(pct_good),
            kid="kpi-good-detectors",
        ),
    ]


def _good_detector_tone(pct_good: float | None) -> str:
    """PeMS districts aim for 90%+ good detectors: below that the figures are shaky."""
    if pct_good is None:
        return ""
    return "alarm" if pct_good < 75 else "warn" if pct_good < 90 else ""


# --------------------------------------------------------------------------- feed banner


def feed_banner(
    alert: Mapping[str, Any] | None, wall_time: datetime, tz: tzinfo | str | None = None
) -> tuple[list[Any], str]:
    """(children, className) of the banner across the top: empty and hidden unless a
    feed-stalled alert is active; then critical, saying since when nothing has arrived."""
    if alert is None:
        return [], "feed-banner"
    details = alert.get("details") or {}
    since = figures.parse_time(details.get("last_received") or alert.get("raised_at"))
    ago = ""
    if since is not None:
        minutes = max(0.0, (wall_time - since).total_seconds() / 60)
        ago = f" ({minutes:.0f} min ago)" if minutes < 120 else f" ({minutes / 60:.1f} h ago)"
    suppressed = len(details.get("suppressed_offline") or [])
    detail = "Live figures are frozen at the last data; station-offline alarms are held back"
    if suppressed:
        detail += f" ({suppressed} stations silent)"
    return [
        html.Span(
            f"⚠ FEED STALLED: no data from any station since {figures.fmt_time(since, tz)}{ago}",
            className="feed-banner-title",
        ),
        html.Span(detail, className="feed-banner-detail"),
    ], "feed-banner critical"


# --------------------------------------------------------------------------- last updated


def last_updated(
    data_time: str | datetime | None,
    wall_time: datetime,
    tz: tzinfo | str | None = None,
    *,
    lag_warn_s: float = 180,
) -> list[Any]:
    """Data time and wall time of the refresh, and a warning when data lags the wall clock."""
    refreshed = html.Span(f"refreshed {figures.fmt_time(wall_time, tz)}", className="wall-time")
    data = figures.parse_time(data_time)
    if data is None:
        return [html.Span("data: no data yet", className="data-time no-data"), " · ", refreshed]
    parts: list[Any] = [
        html.Span(f"data time {figures.fmt_time(data, tz)}", className="data-time"),
        " · ",
        refreshed,
    ]
    lag = (wall_time - data).total_seconds()
    if lag > lag_warn_s:
        minutes = lag / 60
        text = f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"
        parts += [" · ", html.Span(f"data {text} behind wall clock", className="lag")]
    return parts


# --------------------------------------------------------------------------- alerts


def _alert_target(alert: Mapping[str, Any], names: Mapping[str, str] | None) -> str:
    target = alert.get("target_id", "?")
    label = (names or {}).get(target)
    kind = alert.get("target_kind", "")
    return f"{kind} {target}" + (f" · {label}" if label else "")


def alert_item(
    alert: Mapping[str, Any],
    tz: tzinfo | str | None = None,
    names: Mapping[str, str] | None = None,
    can_ack: bool = True,
) -> html.Div:
    """One alert row: severity, target, message, times, count, and ack state or an ack button
    (disabled for people whose role cannot acknowledge)."""
    severity = alert.get("severity", "info")
    acked_by = alert.get("acked_by")
    if acked_by:
        comment = alert.get("ack_comment")
        ack = html.Div(
            className="ack-done",
            children=[
                f"✓ acknowledged by {acked_by} at {figures.fmt_time(alert.get('acked_at'), tz)}",
                html.Span(f" — {comment}", className="ack-comment") if comment else None,
            ],
        )
    else:
        ack = html.Button(
            "Acknowledge",
            id=ids.ack_button(alert["id"]),
            n_clicks=0,
            className="ack-button",
            disabled=not can_ack,
            title=f"Acknowledge alert #{alert['id']}"
            if can_ack
            else "Your role can view alerts but not acknowledge them",
        )
    return html.Div(
        id=ids.alert_item(alert["id"]),
        className=f"alert-item sev-{severity} {'acked' if acked_by else 'unacked'}",
        style={"borderLeftColor": figures.SEVERITY_COLORS.get(severity, figures.MUTED)},
        children=[
            html.Div(
                className="alert-head",
                children=[
                    html.Span(
                        severity.upper(),
                        className="sev-badge",
                        style={"backgroundColor": figures.SEVERITY_COLORS.get(severity)},
                    ),
                    html.Span(alert.get("rule", ""), className="alert-rule"),
                    html.Span(f"×{alert.get('count', 1)}", className="alert-count"),
                    html.Span(f"#{alert['id']}", className="alert-id"),
                ],
            ),
            html.Div(_alert_target(alert, names), className="alert-target"),
            html.Div(alert.get("message", ""), className="alert-message"),
            html.Div(
                className="alert-times",
                children=(
                    f"raised {figures.fmt_time(alert.get('raised_at'), tz)}"
                    f" · last seen {figures.fmt_time(alert.get('last_seen'), tz)}"
                ),
            ),
            ack,
        ],
    )


def alert_items(
    alerts: Sequence[Mapping[str, Any]],
    tz: tzinfo | str | None = None,
    names: Mapping[str, str] | None = None,
    can_ack: bool = True,
) -> list[html.Div]:
    """The alert list (already newest first from the store), or a calm "no active alerts"."""
    if not alerts:
        return [html.Div("No active alerts", className="alerts-empty")]
    return [alert_item(a, tz, names, can_ack) for a in alerts]


def alerts_count(alerts: Sequence[Mapping[str, Any]]) -> str:
    unacked = sum(1 for a in alerts if not a.get("acked_by"))
    return f"{len(alerts)} active · {unacked} unacknowledged"


def ack_message(text: str, tone: str = "info") -> html.Div:
    return html.Div(text, className=f"ack-message {tone}")


# --------------------------------------------------------------------------- page


def user_box(who: str | None, role: str | None, csrf_token: str) -> html.Div:
    """ "Signed in as ... (role)" and a Sign-out button: a plain form POST to ``/logout`` with the
    session's CSRF token, so signing out works even if the page's scripts have stalled."""
    if not who:
        return html.Div(className="user-box")
    return html.Div(
        className="user-box",
        children=[
            html.Span(f"Signed in as {who} ({role})", id=ids.signed_in, className="signed-in"),
            html.Form(
                action="/logout",
                method="post",
                className="sign-out-form",
                children=[
                    dcc.Input(type="hidden", name="csrf_token", value=csrf_token),
                    html.Button("Sign out", id=ids.sign_out, type="submit", className="sign-out"),
                ],
            ),
        ],
    )


def build_layout(
    *,
    title: str,
    refresh_seconds: float,
    segment_figure: Any = None,
    map_figure: Any = None,
    user: html.Div | None = None,
) -> html.Div:
    """The whole page; the callbacks fill the live parts on the first interval tick."""
    return html.Div(
        className="its-page",
        children=[
            html.Header(
                className="its-header",
                children=[
                    html.Div(id=ids.feed_banner, className="feed-banner", role="alert"),
                    html.H1(title),
                    html.Div(id=ids.last_updated, className="last-updated", children="loading…"),
                    user if user is not None else html.Div(className="user-box"),
                ],
            ),
            html.Section(id=ids.kpis, className="kpi-row", children=kpi_cards(None)),
            html.Main(
                className="its-main",
                children=[
                    html.Section(
                        className="panel map-panel",
                        children=dcc.Graph(
                            id=ids.map_graph,
                            className="map-graph",
                            figure=map_figure if map_figure is not None else {},
                            config={"displaylogo": False, "scrollZoom": True},
                            style={"height": "100%"},
                        ),
                    ),
                    html.Aside(
                        className="panel alerts-panel",
                        children=[
                            html.Div(
                                className="alerts-header",
                                children=[
                                    html.H2("Active alerts"),
                                    html.Span(id=ids.alerts_count, className="alerts-count"),
                                ],
                            ),
                            html.Div(
                                className="ack-form",
                                children=[
                                    dcc.Input(
                                        id=ids.comment,
                                        type="text",
                                        placeholder="Comment (optional)",
                                        debounce=False,
                                        className="comment-input",
                                    ),
                                ],
                            ),
                            html.Div(id=ids.ack_message),
                            html.Div(id=ids.alerts_list, className="alerts-list"),
                        ],
                    ),
                ],
            ),
            html.Section(
                className="panel segment-panel",
                children=dcc.Graph(
                    id=ids.segment_graph,
                    figure=segment_figure
                    if segment_figure is not None
                    else figures.empty_segment_figure(),
                    config={"displaylogo": False},
                    style={"height": "100%"},
                ),
            ),
            dcc.Interval(id=ids.interval, interval=int(refresh_seconds * 1000), n_intervals=0),
            dcc.Store(id=ids.ack_version, data=0),
            dcc.Store(id=ids.selected_segment, data=None),
        ],
    )
