"""Pure figure builders: service-layer dicts in, Plotly figures out.

Nothing here touches the database, Dash or the clock, so tests call these functions directly and
the callbacks stay one-liners. The map draws ONE trace per congestion band (every segment of a
band concatenated with ``None`` separators) instead of one trace per segment: a few traces keep
the browser fast on a wall screen and give a legend with one entry per band.

The base map must work without internet: ``white-bg`` has no tiles and no glyphs, and we never
put text labels on the map (they would make MapLibre fetch fonts); everything readable is in
hover text, the legend, or paper annotations (plain SVG).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import plotly.graph_objects as go
from plotly.subplots import make_subplots

# Congestion bands in legend order, worst last so it is drawn on top.
BANDS: tuple[str, ...] = ("no-data", "free", "slow", "congested", "jammed")
BAND_LABELS: dict[str, str] = {
    "free": "Free flow",
    "slow": "Slow",
    "congested": "Congested",
    "jammed": "Jammed",
    "no-data": "No data",
}
BAND_COLORS: dict[str, str] = {
    "free": "#22c55e",  # green
    "slow": "#facc15",  # amber-yellow
    "congested": "#f97316",  # orange
    "jammed": "#b91c1c",  # dark red
    "no-data": "#6b7280",  # grey: "no data" is never drawn as OK
}
# Station health: deliberately not the road colours, so a marker never reads as a band.
HEALTH_STATES: tuple[str, ...] = ("ok", "no-data", "stale", "offline")
HEALTH_LABELS: dict[str, str] = {
    "ok": "Station OK",
    "stale": "Station stale",
    "offline": "Station offline",
    "no-data": "Station: no data",
}
HEALTH_COLORS: dict[str, str] = {
    "ok": "#38bdf8",  # sky blue
    "stale": "#c084fc",  # violet
    "offline": "#ec4899",  # magenta
    "no-data": "#9ca3af",  # grey
}
HEALTH_SIZES: dict[str, int] = {"ok": 7, "no-data": 7, "stale": 10, "offline": 12}
SEVERITY_COLORS: dict[str, str] = {
    "critical": "#dc2626",
    "major": "#f97316",
    "minor": "#facc15",
    "warning": "#38bdf8",
    "info": "#9ca3af",
}

PAPER = "#111a24"
PLOT = "#16212d"
INK = "#e5edf5"
MUTED = "#94a3b8"
GRID = "#2a3746"
FONT = {"family": "Inter, Segoe UI, Roboto, Helvetica, Arial, sans-serif", "color": INK, "size": 15}

Bounds = tuple[float, float, float, float]  # min_lon, min_lat, max_lon, max_lat
# Offline styles of our own: a MapLibre style with a background layer and nothing to fetch, shaped
# like Plotly's built-in ``white-bg`` (an ``id``, a ``glyphs`` URL that nothing uses since no text
# is drawn). ``sources`` holds one empty inline GeoJSON source: an empty ``{}`` is pruned on its way
# through Dash and Plotly, and MapLibre then rejects the style on the next update ("Map error:
# missing required property sources"), which froze the live map after its first draw.
OFFLINE_STYLES: dict[str, dict[str, Any]] = {
    "dark-bg": {
        "id": "dark-bg",
        "version": 8,
        "sources": {
            "its-empty": {"type": "geojson", "data": {"type": "FeatureCollection", "features": []}}
        },
        "layers": [{"id": "bg", "type": "background", "paint": {"background-color": "#1c2733"}}],
        "glyphs": "https://fonts.openmaptiles.org/{fontstack}/{range}.pbf",
    },
}
HOVER_STEP_DEG = 0.0008  # about 90 m: hover/click points along each drawn line


# --------------------------------------------------------------------------- formatting


def _tz(tz: tzinfo | str | None) -> tzinfo:
    if tz is None:
        return UTC
    return ZoneInfo(tz) if isinstance(tz, str) else tz


def parse_time(value: str | datetime | None) -> datetime | None:
    """An ISO string or datetime from the service layer as an aware datetime (None stays None)."""
    if value is None or value == "":
        return None
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def fmt_time(value: str | datetime | None, tz: tzinfo | str | None = None, *, seconds=True) -> str:
    """A timestamp in the network's local time with its zone abbreviation, or ``no data``."""
    dt = parse_time(value)
    if dt is None:
        return "no data"
    local = dt.astimezone(_tz(tz))
    return local.strftime("%H:%M:%S %Z" if seconds else "%H:%M %Z")


def fmt_number(value: float | None, unit: str = "", digits: int = 0) -> str:
    """A number for display; ``None`` is shown as ``no data``, never as 0."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "no data"
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}".strip()


def segment_hover(props: Mapping[str, Any], tz: tzinfo | str | None = None) -> str:
    """Hover text of one segment: name, speed, flow, occupancy, TTI, band, observation time."""
    band = props.get("band") or "no-data"
    occ = props.get("occupancy")
    lines = [
        f"<b>{props.get('name', props.get('segment_id', '?'))}</b>",
        f"{props.get('segment_id', '')} · {props.get('road_class', '')}",
        f"Speed {fmt_number(props.get('speed_kph'), 'km/h')}"
        f" (free flow {fmt_number(props.get('free_flow_kph'), 'km/h')})",
        f"Flow {fmt_number(props.get('flow_vph'), 'veh/h')}",
        f"Occupancy {fmt_number(None if occ is None else occ * 100, '%', 1)}",
        f"TTI {fmt_number(props.get('tti'), '', 2)}",
        f"Band: {BAND_LABELS.get(band, band)}" + (" (stale)" if props.get("stale") else ""),
        f"Observed {fmt_time(props.get('observed_at'), tz)}",
    ]
    return "<br>".join(lines)


def station_hover(station: Mapping[str, Any], tz: tzinfo | str | None = None) -> str:
    health = station.get("health") or "no-data"
    return "<br>".join(
        [
            f"<b>Station {station.get('station_id', '?')}</b>",
            f"Segment {station.get('segment_id', '')} · {station.get('detector', '')}",
            f"Health: {HEALTH_LABELS.get(health, health)}",
            f"Last seen {fmt_time(station.get('last_seen'), tz)}",
        ]
    )


# --------------------------------------------------------------------------- map


def bounds_of(coords: Iterable[Sequence[float]]) -> Bounds | None:
    """The (min_lon, min_lat, max_lon, max_lat) box around some [lon, lat] points."""
    lons, lats = [], []
    for c in coords:
        lons.append(float(c[0]))
        lats.append(float(c[1]))
    if not lons:
        return None
    return min(lons), min(lats), max(lons), max(lats)


def fit_view(
    bounds: Bounds | None, width_px: int = 1000, height_px: int = 450, pad: float = 1.15
) -> tuple[dict[str, float], float]:
    """Centre and zoom that show ``bounds`` in a map of about ``width_px`` x ``height_px``.

    The default size is the map panel on a 1600x900 desk screen, so a bigger wall screen shows a
    little margin rather than cutting the network off. MapLibre draws 512-px tiles, so at zoom z
    the map shows 360 * width / (512 * 2**z) degrees of longitude; the
    latitude span shrinks with cos(lat). The smaller of both zooms keeps the whole network in view.
    """
    if bounds is None:
        return {"lon": 0.0, "lat": 0.0}, 1.0
    min_lon, min_lat, max_lon, max_lat = bounds
    center = {"lon": (min_lon + max_lon) / 2, "lat": (min_lat + max_lat) / 2}
    lon_span = max(max_lon - min_lon, 1e-4) * pad
    lat_span = max(max_lat - min_lat, 1e-4) * pad
    cos_lat = max(math.cos(math.radians(center["lat"])), 0.05)
    z_lon = math.log2(360 * width_px / (512 * lon_span))
    z_lat = math.log2(360 * height_px * cos_lat / (512 * lat_span))
    return center, round(max(1.0, min(z_lon, z_lat, 17.0)), 2)


def densify(
    coords: Sequence[Sequence[float]], step_deg: float = HOVER_STEP_DEG
) -> list[list[float]]:
    """The line with extra points every ``step_deg`` or so along it.

    Plotly's map hovers and clicks on a trace's points, not along its lines: without the extra
    points a long segment could only be selected at its few vertices.
    """
    out = [list(coords[0])]
    for (x0, y0), (x1, y1) in zip(coords, coords[1:], strict=False):
        n = max(1, math.ceil(math.hypot(x1 - x0, y1 - y0) / step_deg - 1e-9))
        out += [[x0 + (x1 - x0) * i / n, y0 + (y1 - y0) * i / n] for i in range(1, n + 1)]
    return out


def _band_trace(band: str, features: Sequence[Mapping[str, Any]], tz: tzinfo | str | None):
    """All segments of one band as a single line trace, ``None`` between segments."""
    lons: list[float | None] = []
    lats: list[float | None] = []
    hover: list[str | None] = []
    custom: list[list[str] | None] = []
    for feat in features:
        props = feat["properties"]
        text = segment_hover(props, tz)
        for lon, lat in densify(feat["geometry"]["coordinates"]):
            lons.append(lon)
            lats.append(lat)
            hover.append(text)
            custom.append([props["segment_id"]])
        lons.append(None)
        lats.append(None)
        hover.append(None)
        custom.append(None)
    return go.Scattermap(
        name=BAND_LABELS[band],
        legendgroup="bands",
        meta={"band": band, "segments": len(features)},
        mode="lines",
        lon=lons,
        lat=lats,
        line={"color": BAND_COLORS[band], "width": 3 if band == "no-data" else 5},
        hovertext=hover,
        hoverinfo="text",
        customdata=custom,
        connectgaps=False,
    )


def _station_trace(health: str, stations: Sequence[Mapping[str, Any]], tz: tzinfo | str | None):
    return go.Scattermap(
        name=HEALTH_LABELS[health],
        legendgroup="stations",
        meta={"health": health, "stations": len(stations)},
        mode="markers",
        lon=[s["lon"] for s in stations],
        lat=[s["lat"] for s in stations],
        marker={"color": HEALTH_COLORS[health], "size": HEALTH_SIZES[health], "opacity": 0.95},
        hovertext=[station_hover(s, tz) for s in stations],
        hoverinfo="text",
        customdata=[[s.get("segment_id")] for s in stations],
    )


def network_map_figure(
    state: Mapping[str, Any],
    stations: Sequence[Mapping[str, Any]] = (),
    *,
    tz: tzinfo | str | None = None,
    bounds: Bounds | None = None,
    map_style: str = "white-bg",
    tiles_url: str | None = None,
    uirevision: str = "network",
) -> go.Figure:
    """The live map: one line trace per congestion band present, one marker trace per health.

    ``state`` is :func:`its.service.live.network_state` (a GeoJSON FeatureCollection); a segment
    with an unknown band is drawn as no-data. ``uirevision`` stays constant across refreshes so the
    operator's pan and zoom survive them. ``map_style`` is a Plotly style name (``white-bg``
    needs no internet) or ``dark-bg``, our own offline dark background.
    """
    features = list(state.get("features") or [])
    by_band: dict[str, list[Mapping[str, Any]]] = {b: [] for b in BANDS}
    for feat in features:
        band = feat["properties"].get("band")
        by_band[band if band in by_band else "no-data"].append(feat)
    traces = [_band_trace(b, by_band[b], tz) for b in BANDS if by_band[b]]

    by_health: dict[str, list[Mapping[str, Any]]] = {h: [] for h in HEALTH_STATES}
    for st in stations:
        health = st.get("health")
        by_health[health if health in by_health else "no-data"].append(st)
    traces += [_station_trace(h, by_health[h], tz) for h in HEALTH_STATES if by_health[h]]

    if bounds is None:
        bounds = bounds_of(c for f in features for c in f["geometry"]["coordinates"])
    center, zoom = fit_view(bounds)
    layers = []
    if tiles_url:
        layers.append({"sourcetype": "raster", "source": [tiles_url], "below": "traces"})
    fig = go.Figure(data=traces)
    fig.update_layout(
        map={
            "style": OFFLINE_STYLES.get(map_style, map_style),
            "center": center,
            "zoom": zoom,
            "layers": layers,
        },
        uirevision=uirevision,
        margin={"l": 0, "r": 0, "t": 0, "b": 0},
        paper_bgcolor=PAPER,
        font=FONT,
        hoverlabel={"font": {"size": 15}, "align": "left"},
        legend={
            "orientation": "h",
            "x": 0.01,
            "y": 0.99,
            "xanchor": "left",
            "yanchor": "top",
            "bgcolor": "rgba(17,26,36,0.85)",
            "bordercolor": GRID,
            "borderwidth": 1,
            "font": {"size": 14, "color": INK},
        },
        clickmode="event",
    )
    if state.get("data_time") is None:
        _centred_note(fig, "No traffic data yet", size=26, bgcolor="rgba(17,26,36,0.85)")
    return fig


# --------------------------------------------------------------------------- segment chart


def _centred_note(fig: go.Figure, text: str, size: int = 18, **style: Any) -> None:
    """A muted message in the middle of a figure: how "no data" is said, never drawn as 0."""
    fig.add_annotation(
        text=text,
        xref="paper",
        yref="paper",
        x=0.5,
        y=0.5,
        showarrow=False,
        font={"size": size, "color": MUTED},
        **style,
    )


def _placeholder(message: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(
        paper_bgcolor=PAPER,
        plot_bgcolor=PAPER,
        font=FONT,
        margin={"l": 20, "r": 20, "t": 20, "b": 20},
        xaxis={"visible": False},
        yaxis={"visible": False},
    )
    _centred_note(fig, message)
    return fig


def empty_segment_figure(
    message: str = "Click a segment on the map to see its last 2 hours",
) -> go.Figure:
    return _placeholder(message)


def fill_gaps(
    series: Sequence[Mapping[str, Any]], start: datetime, end: datetime, bucket_s: int = 300
) -> list[dict[str, Any]]:
    """The series with an empty (all-``None``) bucket wherever no data was stored.

    The service returns only buckets that hold data; without the empty ones a line would be drawn
    straight across an outage, which hides it. Buckets are aligned like the stored ones.
    """
    have = {parse_time(p["bucket_start"]): dict(p) for p in series}
    step = timedelta(seconds=bucket_s)
    first = min(have) if have else None
    if first is None:
        epoch = datetime(2000, 1, 3, tzinfo=UTC)
        first = epoch + step * ((start - epoch) // step)
    t = first - step * ((first - start) // step)
    while t < end:
        have.setdefault(
            t,
            {
                "bucket_start": t.isoformat(),
                "speed_kph": None,
                "flow_vph": None,
                "occupancy": None,
                "pct_observed": 0.0,
            },
        )
        t += step
    return [have[k] for k in sorted(have)]


def segment_series_figure(
    name: str,
    series: Sequence[Mapping[str, Any]],
    *,
    tz: tzinfo | str | None = None,
    free_flow_kph: float | None = None,
) -> go.Figure:
    """Speed (top) and flow (bottom) of one segment over time, titled with the segment's name.

    ``series`` is :func:`its.service.live.segment_series`; a bucket without data (``None``)
    leaves a gap in the line rather than dropping to zero.
    """
    zone = _tz(tz)
    xs = [parse_time(p["bucket_start"]).astimezone(zone).replace(tzinfo=None) for p in series]
    speed = [p.get("speed_kph") for p in series]
    flow = [p.get("flow_vph") for p in series]
    observed = [p.get("pct_observed") for p in series]
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1, row_heights=[0.55, 0.45]
    )
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=speed,
            name="Speed (km/h)",
            mode="lines+markers",
            line={"color": "#38bdf8", "width": 3},
            marker={"size": 5},
            connectgaps=False,
            customdata=observed,
            hovertemplate="%{y:.0f} km/h<br>%{customdata:.0f}% observed<extra>speed</extra>",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Bar(
            x=xs,
            y=flow,
            name="Flow (veh/h)",
            marker={"color": "#a78bfa"},
            customdata=observed,
            hovertemplate="%{y:,.0f} veh/h<br>%{customdata:.0f}% observed<extra>flow</extra>",
        ),
        row=2,
        col=1,
    )
    if free_flow_kph:
        fig.add_hline(
            y=free_flow_kph,
            line={"color": MUTED, "dash": "dash", "width": 1},
            annotation_text=f"free flow {free_flow_kph:.0f}",
            annotation_font={"color": MUTED, "size": 12},
            row=1,
            col=1,
        )
    zone_name = datetime.now(zone).strftime("%Z")
    fig.update_layout(
        title={
            "text": name,
            "x": 0.01,
            "font": {"size": 18},
            "subtitle": {
                "text": f"speed and flow per 5 min, data time ({zone_name})",
                "font": {"size": 13, "color": MUTED},
            },
        },
        paper_bgcolor=PAPER,
        plot_bgcolor=PLOT,
        font=FONT,
        showlegend=False,
        margin={"l": 60, "r": 20, "t": 58, "b": 30},
        uirevision=name,
        bargap=0.15,
    )
    fig.update_xaxes(gridcolor=GRID, zeroline=False)
    fig.update_yaxes(gridcolor=GRID, zeroline=False, rangemode="tozero")
    fig.update_yaxes(title_text="speed km/h", row=1, col=1)
    fig.update_yaxes(title_text="flow veh/h", row=2, col=1)
    if not any(v is not None for v in speed + flow):
        _centred_note(fig, "no data in the last 2 hours")
    return fig
