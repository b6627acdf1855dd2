"""The road network: corridors, directional segments (WGS84 lines) and detector stations.

A network is read from GeoJSON (see ``docs/network.md``); the bundled Jakarta sample lives in
``its/data/jakarta.geojson``. The model is plain frozen dataclasses so the simulator, the store,
the alert rules and the dashboard share one picture of the road without importing each other.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from its.errors import NetworkError

ROAD_CLASSES = ("expressway", "arterial", "collector")
DEFAULT_VEHICLE_LENGTH_M = 6.7
EARTH_RADIUS_M = 6_371_008.8
_GATEWAY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")  # as the wire contract's ids


def haversine_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance in metres between two (lon, lat) points."""
    lon1, lat1, lon2, lat2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))


def line_length_m(coords: Iterable[tuple[float, float]]) -> float:
    pts = list(coords)
    return sum(haversine_m(pts[i], pts[i + 1]) for i in range(len(pts) - 1))


@dataclass(frozen=True)
class Corridor:
    corridor_id: str
    name: str


@dataclass(frozen=True)
class Segment:
    """A directional stretch of road between two decision points, drawn as a WGS84 line."""

    segment_id: str
    corridor_id: str
    direction: str
    seq: int
    name: str
    road_class: str
    lanes: int
    free_flow_kph: float
    capacity_vph_lane: float
    coords: tuple[tuple[float, float], ...]

    @cached_property
    def length_m(self) -> float:
        return line_length_m(self.coords)

    @property
    def length_km(self) -> float:
        return self.length_m / 1000.0


@dataclass(frozen=True)
class Station:
    """A detector station on a segment; ``position_m`` runs along the segment's direction."""

    station_id: str
    segment_id: str
    lanes: int
    lon: float
    lat: float
    position_m: float = 0.0
    detector: str = "dual-loop"
    vehicle_length_m: float = DEFAULT_VEHICLE_LENGTH_M
    # The roadside gateway (field cabinet, communications controller) the station's data travels
    # through; stations that share one fall silent together when it fails (one alert, not many).
    gateway_id: str | None = None


@dataclass(frozen=True)
class Network:
    name: str
    timezone: str
    corridors: tuple[Corridor, ...]
    segments: tuple[Segment, ...]
    stations: tuple[Station, ...]
    _by_segment: dict[str, Segment] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_segment.update({s.segment_id: s for s in self.segments})

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def segment(self, segment_id: str) -> Segment:
        return self._by_segment[segment_id]

    @cached_property
    def station_groups(self) -> dict[str, dict[str, tuple[str, ...]]]:
        """Level (station, segment, corridor) -> target id -> the ids of its stations.

        Computed once per network (it is immutable): every API request checks its ids against
        these and counts a target's lanes, and at 2,000 stations rebuilding them per request
        is a measurable share of a 100 ms answer.
        """
        corridor_of = {s.segment_id: s.corridor_id for s in self.segments}
        out: dict[str, dict[str, list[str]]] = {
            "station": {},
            "segment": {s.segment_id: [] for s in self.segments},
            "corridor": {c.corridor_id: [] for c in self.corridors},
        }
        for st in self.stations:
            out["station"][st.station_id] = [st.station_id]
            out["segment"].setdefault(st.segment_id, []).append(st.station_id)
            out["corridor"].setdefault(corridor_of[st.segment_id], []).append(st.station_id)
        return {level: {k: tuple(v) for k, v in d.items()} for level, d in out.items()}

    @cached_property
    def target_lanes(self) -> dict[str, dict[str, int]]:
        """Level -> target id -> lanes over all its stations (the denominator of % observed);
        a target without stations is absent."""
        lanes = {st.station_id: st.lanes for st in self.stations}
        return {
            level: {k: sum(lanes[s] for s in v) for k, v in groups.items() if v}
            for level, groups in self.station_groups.items()
        }

    def stations_of(self, segment_id: str) -> list[Station]:
        return sorted(
            (s for s in self.stations if s.segment_id == segment_id), key=lambda s: s.position_m
        )

    def ordered_stations(self, corridor_id: str, direction: str) -> list[Station]:
        """Stations of one corridor direction in driving order (upstream first)."""
        segs = sorted(
            (s for s in self.segments if s.corridor_id == corridor_id and s.direction == direction),
            key=lambda s: s.seq,
        )
        return [st for seg in segs for st in self.stations_of(seg.segment_id)]

    def gateways(self) -> dict[str, list[str]]:
        """Gateway id -> the ids of the stations behind it (stations without one are left out)."""
        out: dict[str, list[str]] = {}
        for st in self.stations:
            if st.gateway_id is not None:
                out.setdefault(st.gateway_id, []).append(st.station_id)
        return out


# --------------------------------------------------------------------------- GeoJSON


def _require(props: dict[str, Any], key: str, where: str) -> Any:
    if key not in props or props[key] is None:
        raise NetworkError(f"{where}: property {key!r} is required")
    return props[key]


def _coords(geometry: dict[str, Any], kind: str, where: str) -> Any:
    if not isinstance(geometry, dict) or geometry.get("type") != kind:
        raise NetworkError(f"{where}: geometry must be a {kind}")
    coords = geometry.get("coordinates")
    try:
        if kind == "Point":
            lon, lat = float(coords[0]), float(coords[1])
            _check_lonlat(lon, lat, where)
            return lon, lat
        pts = tuple((float(c[0]), float(c[1])) for c in coords)
    except (TypeError, IndexError, ValueError):
        raise NetworkError(f"{where}: coordinates are not numbers") from None
    if len(pts) < 2:
        raise NetworkError(f"{where}: a LineString needs at least two points")
    for lon, lat in pts:
        _check_lonlat(lon, lat, where)
    return pts


def _check_lonlat(lon: float, lat: float, where: str) -> None:
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise NetworkError(f"{where}: ({lon}, {lat}) is not a WGS84 longitude/latitude")


def _segment_from(props: dict[str, Any], geometry: dict[str, Any], where: str) -> Segment:
    road_class = _require(props, "road_class", where)
    if road_class not in ROAD_CLASSES:
        raise NetworkError(f"{where}: road_class must be one of {ROAD_CLASSES}")
    lanes = int(_require(props, "lanes", where))
    ffs = float(_require(props, "free_flow_kph", where))
    cap = float(_require(props, "capacity_vph_lane", where))
    if not (1 <= lanes <= 16) or ffs <= 0 or cap <= 0:
        raise NetworkError(f"{where}: lanes 1..16, free_flow_kph and capacity must be positive")
    return Segment(
        segment_id=str(_require(props, "segment_id", where)),
        corridor_id=str(_require(props, "corridor_id", where)),
        direction=str(_require(props, "direction", where)),
        seq=int(_require(props, "seq", where)),
        name=str(props.get("name") or props["segment_id"]),
        road_class=road_class,
        lanes=lanes,
        free_flow_kph=ffs,
        capacity_vph_lane=cap,
        coords=_coords(geometry, "LineString", where),
    )


def _station_from(props: dict[str, Any], geometry: dict[str, Any], where: str) -> Station:
    lon, lat = _coords(geometry, "Point", where)
    lanes = int(_require(props, "lanes", where))
    if not 1 <= lanes <= 16:
        raise NetworkError(f"{where}: lanes must be 1..16")
    gateway = props.get("gateway_id")
    if gateway is not None and not (
        isinstance(gateway, str) and _GATEWAY_ID.fullmatch(gateway) is not None
    ):
        raise NetworkError(
            f"{where}: gateway_id must be 1-64 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return Station(
        station_id=str(_require(props, "station_id", where)),
        segment_id=str(_require(props, "segment_id", where)),
        lanes=lanes,
        lon=lon,
        lat=lat,
        position_m=float(props.get("position_m", 0.0)),
        detector=str(props.get("detector", "dual-loop")),
        vehicle_length_m=float(props.get("vehicle_length_m", DEFAULT_VEHICLE_LENGTH_M)),
        gateway_id=gateway,
    )


def network_from_geojson(doc: dict[str, Any]) -> Network:
    """Build and check a :class:`Network` from a GeoJSON FeatureCollection dict."""
    if doc.get("type") != "FeatureCollection":
        raise NetworkError("network file must be a GeoJSON FeatureCollection")
    meta = doc.get("properties") or {}
    timezone = str(meta.get("timezone", "UTC"))
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise NetworkError(f"unknown time zone {timezone!r}") from None
    corridors: dict[str, Corridor] = {}
    segments: list[Segment] = []
    stations: list[Station] = []
    for i, feat in enumerate(doc.get("features") or []):
        props = feat.get("properties") or {}
        kind = props.get("kind")
        where = f"feature {i} ({kind or 'no kind'})"
        if kind == "segment":
            seg = _segment_from(props, feat.get("geometry"), where)
            segments.append(seg)
            corridors.setdefault(
                seg.corridor_id,
                Corridor(seg.corridor_id, str(props.get("corridor_name") or seg.corridor_id)),
            )
        elif kind == "station":
            stations.append(_station_from(props, feat.get("geometry"), where))
        else:
            raise NetworkError(f"{where}: properties.kind must be 'segment' or 'station'")
    _check_unique([s.segment_id for s in segments], "segment_id")
    _check_unique([s.station_id for s in stations], "station_id")
    known = {s.segment_id for s in segments}
    for st in stations:
        if st.segment_id not in known:
            raise NetworkError(f"station {st.station_id} names unknown segment {st.segment_id}")
    if not segments:
        raise NetworkError("network has no segments")
    return Network(
        name=str(meta.get("name", "network")),
        timezone=timezone,
        corridors=tuple(corridors.values()),
        segments=tuple(segments),
        stations=tuple(stations),
    )


def _check_unique(ids: list[str], what: str) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise NetworkError(f"duplicate {what} {i!r}")
        seen.add(i)


def network_to_geojson(net: Network) -> dict[str, Any]:
    """The GeoJSON form of a network, readable by :func:`network_from_geojson`."""
    names = {c.corridor_id: c.name for c in net.corridors}
    features: list[dict[str, Any]] = []
    for s in net.segments:
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "LineString", "coordinates": [list(c) for c in s.coords]},
                "properties": {
                    "kind": "segment",
                    "segment_id": s.segment_id,
                    "corridor_id": s.corridor_id,
                    "corridor_name": names.get(s.corridor_id, s.corridor_id),
                    "direction": s.direction,
                    "seq": s.seq,
                    "name": s.name,
                    "road_class": s.road_class,
                    "lanes": s.lanes,
                    "free_flow_kph": s.free_flow_kph,
                    "capacity_vph_lane": s.capacity_vph_lane,
                    "length_m": round(s.length_m, 1),
                },
            }
        )
    for st in net.stations:
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [st.lon, st.lat]},
                "properties": {
                    "kind": "station",
                    "station_id": st.station_id,
                    "segment_id": st.segment_id,
                    "lanes": st.lanes,
                    "position_m": st.position_m,
                    "detector": st.detector,
                    "vehicle_length_m": st.vehicle_length_m,
                    **({"gateway_id": st.gateway_id} if st.gateway_id is not None else {}),
                },
            }
        )
    return {
        "type": "FeatureCollection",
        "properties": {"name": net.name, "timezone": net.timezone},
        "features": features,
    }


def load_network(path: Path | None = None) -> Network:
    """Load a GeoJSON network file, or the bundled Jakarta sample when ``path`` is None."""
    try:
        if path is None:
            raw = resources.files("its.data").joinpath("jakarta.geojson").read_bytes()
        else:
            raw = Path(path).read_bytes()
    except OSError as exc:
        raise NetworkError(f"cannot read network file {path}: {exc}") from None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise NetworkError(f"network file {path or 'jakarta.geojson'} is not JSON: {exc}") from None
    return network_from_geojson(doc)
