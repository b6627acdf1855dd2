"""The dashboard's pure builders: figures and components from service-layer dicts, no server."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dashboard import figures, layout, views
from dashboard.ids import ids
from its.network import Network

T0 = datetime(2026, 11, 28, 7, 0, tzinfo=UTC)


def _feature(seg: Any, band: str, speed: float | None = 42.0) -> dict[str, Any]:
    return {
        "type": "Feature",
        "id": seg.segment_id,
        "geometry": {"type": "LineString", "coordinates": [list(c) for c in seg.coords]},
        "properties": {
            "segment_id": seg.segment_id,
            "corridor_id": seg.corridor_id,
            "name": seg.name,
            "direction": seg.direction,
            "road_class": seg.road_class,
            "length_km": round(seg.length_km, 3),
            "free_flow_kph": seg.free_flow_kph,
            "speed_kph": speed,
            "flow_vph": None if speed is None else 1234.0,
            "occupancy": None if speed is None else 0.123,
            "band": band,
            "tti": None if speed is None else round(seg.free_flow_kph / speed, 2),
            "observed_at": None if speed is None else "2026-11-28T07:00:00Z",
            "stale": speed is None,
        },
    }


def _state(network: Network, bands: list[str], data_time: str | None = "2026-11-28T07:00:00Z"):
    feats = []
    for i, seg in enumerate(network.segments):
        band = bands[i % len(bands)]
        feats.append(_feature(seg, band, None if band == "no-data" else 42.0 + i))
    return {"type": "FeatureCollection", "data_time": data_time, "features": feats}


def _band_traces(fig: Any) -> list[Any]:
    return [t for t in fig.data if t.meta and "band" in t.meta]


def _station(st: Any, health: str) -> dict[str, Any]:
    return {
        "station_id": st.station_id,
        "segment_id": st.segment_id,
        "lon": st.lon,
        "lat": st.lat,
        "detector": st.detector,
        "health": health,
        "last_seen": None if health == "no-data" else "2026-11-28T06:59:00Z",
    }


def _text(component: Any) -> str:
    """All the text a Dash component tree renders."""
    if component is None:
        return ""
    if isinstance(component, str | int | float):
        return str(component)
    if isinstance(component, list | tuple):
        return " ".join(_text(c) for c in component)
    return _text(getattr(component, "children", None))


def _find(component: Any, pred: Any) -> list[Any]:
    found = []
    if isinstance(component, list | tuple):
        for c in component:
            found += _find(c, pred)
    elif component is not None and not isinstance(component, str | int | float):
        if pred(component):
            found.append(component)
        found += _find(getattr(component, "children", None), pred)
    return found


# --------------------------------------------------------------------------- map


def test_one_trace_per_band_present_not_per_segment(network: Network) -> None:
    fig = figures.network_map_figure(_state(network, ["free", "jammed", "slow"]))
    traces = _band_traces(fig)
    assert len(network.segments) == 48
    assert [t.meta["band"] for t in traces] == ["free", "slow", "jammed"]  # BANDS order
    assert sum(t.meta["segments"] for t in traces) == len(network.segments)
    for t in traces:
        assert t.type == "scattermap"
        assert t.mode == "lines"
        assert t.line.color == figures.BAND_COLORS[t.meta["band"]]
        assert t.name == figures.BAND_LABELS[t.meta["band"]]


def test_segments_of_a_band_are_separated_by_none(network: Network) -> None:
    state = _state(network, ["congested"])
    fig = figures.network_map_figure(state)
    (trace,) = _band_traces(fig)
    n_points = sum(len(figures.densify(f["geometry"]["coordinates"])) for f in state["features"])
    assert len(trace.lon) == n_points + len(network.segments)
    assert list(trace.lon).count(None) == len(network.segments)
    assert list(trace.lat).count(None) == len(network.segments)
    # every real point carries its segment id for click-to-select; separators carry nothing
    first = state["features"][0]
    k = len(figures.densify(first["geometry"]["coordinates"]))
    assert [c[0] for c in trace.customdata[:k]] == [first["properties"]["segment_id"]] * k
    assert trace.customdata[k] is None and trace.lon[k] is None


def test_hover_text_shows_speed_flow_occupancy_band_and_time(network: Network) -> None:
    seg = network.segments[0]
    state = {"data_time": "2026-11-28T07:00:00Z", "features": [_feature(seg, "slow", 37.4)]}
    fig = figures.network_map_figure(state, tz="Asia/Jakarta")
    (trace,) = _band_traces(fig)
    text = trace.hovertext[0]
    assert seg.name in text
    assert "Speed 37 km/h" in text
    assert "Flow 1,234 veh/h" in text
    assert "Occupancy 12.3 %" in text
    assert "Band: Slow" in text
    assert "14:00:00 WIB" in text  # observed_at in the network's local time
    assert trace.hoverinfo == "text"


def test_station_markers_one_trace_per_health_state(network: Network) -> None:
    health = ["ok", "offline", "no-data"]
    stations = [_station(st, health[i % 3]) for i, st in enumerate(network.stations)]
    fig = figures.network_map_figure(_state(network, ["free"]), stations)
    st_traces = [t for t in fig.data if t.meta and "health" in t.meta]
    assert sorted(t.meta["health"] for t in st_traces) == sorted(health)
    assert sum(len(t.lon) for t in st_traces) == len(network.stations)
    for t in st_traces:
        assert t.mode == "markers"
        assert t.marker.color == figures.HEALTH_COLORS[t.meta["health"]]
    offline = next(t for t in st_traces if t.meta["health"] == "offline")
    assert "Health: Station offline" in offline.hovertext[0]


def test_no_data_network_renders_grey_and_says_so(network: Network) -> None:
    fig = figures.network_map_figure(_state(network, ["no-data"], data_time=None))
    (trace,) = _band_traces(fig)
    assert trace.meta["band"] == "no-data"
    assert trace.line.color == figures.BAND_COLORS["no-data"]
    assert "no data" in trace.hovertext[0]
    assert "Speed no data" in trace.hovertext[0]
    assert any("No traffic data yet" in a.text for a in fig.layout.annotations)


def test_unknown_band_is_drawn_as_no_data_and_empty_network_still_renders(
    network: Network,
) -> None:
    state = _state(network, ["free"])
    state["features"][0]["properties"]["band"] = "mystery"
    bands = [t.meta["band"] for t in _band_traces(figures.network_map_figure(state))]
    assert bands == ["no-data", "free"]
    empty = figures.network_map_figure({"features": [], "data_time": None})
    assert len(empty.data) == 0
    assert empty.layout.map.zoom == 1


def test_offline_base_map_by_default_and_raster_layer_when_configured(network: Network) -> None:
    state = _state(network, ["free"])
    fig = figures.network_map_figure(state)
    assert fig.layout.map.style == "white-bg"
    assert len(fig.layout.map.layers) == 0
    assert fig.layout.uirevision == "network"
    assert all("text" not in (t.mode or "") for t in fig.data)  # text labels would fetch glyphs
    url = "https://tiles.example/{z}/{x}/{y}.png"
    tiled = figures.network_map_figure(state, tiles_url=url, map_style="white-bg")
    (layer,) = tiled.layout.map.layers
    assert layer.sourcetype == "raster" and list(layer.source) == [url]
    dark = figures.network_map_figure(state, map_style="dark-bg").layout.map.style
    # offline: a background layer, and only inline sources (nothing with a URL to fetch)
    assert dark["layers"][0]["type"] == "background"
    assert dark["sources"] and all(
        src["type"] == "geojson" and isinstance(src["data"], dict)
        for src in dark["sources"].values()
    )


def test_lines_get_hover_points_along_them_keeping_their_vertices() -> None:
    line = [[106.80, -6.20], [106.81, -6.20], [106.81, -6.2005]]
    dense = figures.densify(line, step_deg=0.001)
    assert dense[0] == line[0] and dense[-1] == line[-1] and line[1] in dense
    assert len(dense) == 1 + 10 + 1
    gaps = [math.dist(a, b) for a, b in zip(dense, dense[1:], strict=False)]
    assert max(gaps) <= 0.001 + 1e-12


def test_view_is_fitted_to_the_network(network: Network) -> None:
    bounds = figures.bounds_of(c for s in network.segments for c in s.coords)
    center, zoom = figures.fit_view(bounds)
    assert bounds[0] < center["lon"] < bounds[2]
    assert bounds[1] < center["lat"] < bounds[3]
    assert 11 <= zoom <= 15  # a city network of ~8 km, not the world and not one street
    wider = figures.fit_view((bounds[0] - 1, bounds[1] - 1, bounds[2] + 1, bounds[3] + 1))[1]
    assert wider < zoom


# --------------------------------------------------------------------------- segment chart


def _series(n: int = 24, skip: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    return [
        {
            "bucket_start": (T0 + timedelta(minutes=5 * i)).isoformat().replace("+00:00", "Z"),
            "speed_kph": 50.0 - i,
            "flow_vph": 1000.0 + 10 * i,
            "occupancy": 0.1,
            "pct_observed": 100.0,
        }
        for i in range(n)
        if i not in skip
    ]


def test_segment_chart_has_speed_and_flow_titled_with_the_name() -> None:
    fig = figures.segment_series_figure("Jl. Sudirman (N) 1/6", _series(), tz="Asia/Jakarta")
    assert fig.layout.title.text == "Jl. Sudirman (N) 1/6"
    speed, flow = fig.data
    assert list(speed.y) == [50.0 - i for i in range(24)]
    assert list(flow.y)[0] == 1000.0
    assert speed.yaxis != flow.yaxis  # two stacked panels, one unit each
    assert speed.x[0] == datetime(2026, 11, 28, 14, 0)  # local time (WIB) on the axis


def test_gaps_in_a_series_stay_gaps() -> None:
    start, end = T0 - timedelta(minutes=10), T0 + timedelta(minutes=5 * 24)
    filled = figures.fill_gaps(_series(skip=(3, 4)), start, end, 300)
    assert len(filled) == 24 + 2  # two buckets before the data, none lost
    gaps = [p for p in filled if p["speed_kph"] is None]
    assert len(gaps) == 4
    fig = figures.segment_series_figure("S", filled)
    assert list(fig.data[0].y).count(None) == 4
    assert fig.data[0].connectgaps is False


def test_segment_chart_without_data_says_so() -> None:
    start = T0 - timedelta(hours=2)
    fig = figures.segment_series_figure("S", figures.fill_gaps([], start, T0, 300))
    assert len(fig.data[0].y) == 24
    assert any("no data" in a.text for a in fig.layout.annotations)


# --------------------------------------------------------------------------- components


def test_kpi_cards_show_numbers_or_no_data_never_zero() -> None:
    empty = _text(layout.kpi_cards(None))
    assert empty.count("no data yet") == 6
    assert " 0 " not in f" {empty} "
    cards = layout.kpi_cards(
        {
            "data_time": "2026-11-28T07:00:00Z",
            "mean_speed_kph": 38.46,
            "total_flow_vph": 51234,
            "congested_km": 3.25,
            "stations_total": 96,
            "stations_reporting": 90,
            "stations_offline": 2,
            "pct_good_detectors": 92.7,
            "detectors_good": 89,
        }
    )
    text = _text(cards)
    assert "38 km/h" in text
    assert "51,234" in text and "3.2" in text and "90 / 96" in text
    assert "no data" not in text
    assert "alarm" in cards[4].className  # offline stations are highlighted


def _alert(alert_id: int, severity: str = "major", acked_by: str | None = None) -> dict:
    return {
        "id": alert_id,
        "rule": "congestion",
        "target_kind": "segment",
        "target_id": "SDR-N-01",
        "severity": severity,
        "active": True,
        "message": "Jammed: 8 km/h",
        "raised_at": "2026-11-28T06:40:00Z",
        "last_seen": "2026-11-28T07:00:00Z",
        "count": 5,
        "acked_at": "2026-11-28T07:01:00Z" if acked_by else None,
        "acked_by": acked_by,
        "ack_comment": "police on site" if acked_by else None,
    }


def test_alert_items_have_ack_buttons_until_acknowledged() -> None:
    items = layout.alert_items(
        [_alert(7, "critical"), _alert(5, "minor", acked_by="Dewi")],
        tz="Asia/Jakarta",
        names={"SDR-N-01": "Jl. Sudirman 1/6"},
    )
    assert [i.id for i in items] == [ids.alert_item(7), ids.alert_item(5)]  # order kept
    buttons = _find(items, lambda c: isinstance(getattr(c, "id", None), dict))
    assert [b.id for b in buttons] == [ids.ack_button(7)]
    first, second = _text(items[0]), _text(items[1])
    assert "CRITICAL" in first and "Jammed: 8 km/h" in first and "×5" in first
    assert "Jl. Sudirman 1/6" in first and "raised 13:40:00 WIB" in first
    assert "acknowledged by Dewi" in second and "police on site" in second
    assert items[0].style["borderLeftColor"] == figures.SEVERITY_COLORS["critical"]
    assert layout.alerts_count([_alert(7), _alert(5, acked_by="x")]) == (
        "2 active · 1 unacknowledged"
    )
    assert "No active alerts" in _text(layout.alert_items([]))
    assert buttons[0].disabled is False
    (viewer_button,) = _find(
        layout.alert_items([_alert(7)], can_ack=False),
        lambda c: isinstance(getattr(c, "id", None), dict),
    )
    assert viewer_button.disabled is True and "not acknowledge" in viewer_button.title


def test_last_updated_shows_data_and_wall_time_and_lag() -> None:
    wall = T0 + timedelta(seconds=4)
    assert "no data yet" in _text(layout.last_updated(None, wall, "Asia/Jakarta"))
    fresh = _text(layout.last_updated("2026-11-28T07:00:00Z", wall, "Asia/Jakarta"))
    assert "data time 14:00:00 WIB" in fresh and "refreshed 14:00:04 WIB" in fresh
    assert "behind" not in fresh
    late = _text(layout.last_updated("2026-11-28T06:00:00Z", wall, "Asia/Jakarta"))
    assert "60 min behind" in late


@pytest.mark.parametrize(
    ("click", "expected"),
    [
        ({"points": [{"customdata": ["SDR-N-01"]}]}, "SDR-N-01"),
        ({"points": [{"customdata": "TOL-E-02"}]}, "TOL-E-02"),
        ({"points": [{"lon": 1}]}, None),
        ({"points": []}, None),
        (None, None),
    ],
)
def test_segment_from_click(click: Any, expected: str | None) -> None:
    assert views.segment_from_click(click) == expected


def test_good_detectors_card_and_its_warning_tones() -> None:
    base = {"data_time": "2026-11-28T07:00:00Z", "stations_total": 96}
    cards = layout.kpi_cards({**base, "pct_good_detectors": 94.8, "detectors_good": 91})
    card = cards[5]
    assert card.id == "kpi-good-detectors"
    assert "94.8" in _text([card]) and "91/96" in _text([card])
    assert "warn" not in card.className and "alarm" not in card.className
    shaky = layout.kpi_cards({**base, "pct_good_detectors": 80.0, "detectors_good": 77})[5]
    assert "warn" in shaky.className
    bad = layout.kpi_cards({**base, "pct_good_detectors": 50.0, "detectors_good": 48})[5]
    assert "alarm" in bad.className
    # before any data the card says so, not 0 %
    assert "no data yet" in _text([layout.kpi_cards({"stations_total": 96})[5]])


def test_feed_banner_is_hidden_until_the_feed_stalls() -> None:
    wall = datetime(2026, 11, 28, 7, 12, tzinfo=UTC)
    children, cls = layout.feed_banner(None, wall, "Asia/Jakarta")
    assert (children, cls) == ([], "feed-banner")
    alert = {
        "rule": "feed-stalled",
        "raised_at": "2026-11-28T07:02:00Z",
        "details": {"last_received": "2026-11-28T07:00:00Z", "suppressed_offline": ["a", "b"]},
    }
    children, cls = layout.feed_banner(alert, wall, "Asia/Jakarta")
    text = _text(children)
    assert cls == "feed-banner critical"
    assert "FEED STALLED" in text and "14:00:00 WIB" in text and "12 min ago" in text
    assert "2 stations silent" in text
