"""Rebuild ``jakarta.geojson``, the bundled sample network, from hand-traced corridor waypoints.

Run ``python -m its.data.build_jakarta`` after editing the waypoints. Waypoints are (lon, lat)
traced along the centre lines of the real roads; each corridor is cut into equal-length directional
segments, the opposite carriageway drawn offset to its left-hand side (Indonesia drives on the left),
with two detector stations per segment at one third and two thirds of its length.
"""

from __future__ import annotations

import math
from pathlib import Path

import orjson

from its.network import (
    Corridor,
    Network,
    Segment,
    Station,
    haversine_m,
    network_to_geojson,
)

# code, name, (dir_forward, dir_back), road_class, lanes, free-flow km/h, capacity/lane, waypoints
CORRIDORS = [
    (
        "SDR",
        "Jl. Jend. Sudirman - M.H. Thamrin",
        ("N", "S"),
        "arterial",
        4,
        60.0,
        1800.0,
        6,
        [
            (106.8008, -6.2272),  # Bundaran Senayan
            (106.8062, -6.2238),  # Ratu Plaza / Gelora
            (106.8121, -6.2190),  # Semanggi
            (106.8185, -6.2120),  # Karet / Bendungan Hilir
            (106.8222, -6.2015),  # Dukuh Atas
            (106.8229, -6.1950),  # Bundaran HI
            (106.8235, -6.1870),  # Sarinah
            (106.8228, -6.1765),  # Patung Kuda / Medan Merdeka
        ],
    ),
    (
        "GTS",
        "Jl. Jend. Gatot Subroto",
        ("E", "W"),
        "arterial",
        3,
        60.0,
        1700.0,
        6,
        [
            (106.7985, -6.2005),  # Slipi
            (106.8048, -6.2085),  # Senayan / JCC
            (106.8121, -6.2190),  # Semanggi
            (106.8205, -6.2280),  # Gatot Subroto - Jamsostek
            (106.8300, -6.2365),  # Kuningan (Rasuna Said / Mampang)
            (106.8372, -6.2405),  # Tegal Parang
            (106.8440, -6.2430),  # Pancoran
        ],
    ),
    (
        "TOL",
        "Inner toll road (Tol Dalam Kota) Slipi - Cawang",
        ("E", "W"),
        "expressway",
        3,
        80.0,
        2000.0,
        4,
        [
            (106.7990, -6.2000),  # Slipi
            (106.8125, -6.2184),  # Semanggi
            (106.8306, -6.2358),  # Kuningan
            (106.8440, -6.2422),  # Pancoran
            (106.8590, -6.2428),  # Tebet
            (106.8718, -6.2450),  # Cawang
        ],
    ),
    (
        "RSD",
        "Jl. H.R. Rasuna Said",
        ("S", "N"),
        "arterial",
        3,
        50.0,
        1600.0,
        4,
        [
            (106.8322, -6.2003),  # Latuharhary / Menteng
            (106.8312, -6.2080),  # Setiabudi
            (106.8303, -6.2160),  # Epicentrum / Karet Kuningan
            (106.8293, -6.2240),  # Kuningan City
            (106.8296, -6.2300),  # Mega Kuningan
            (106.8300, -6.2365),  # Kuningan junction (Gatot Subroto)
        ],
    ),
    (
        "MTH",
        "Jl. Letjen M.T. Haryono",
        ("E", "W"),
        "arterial",
        3,
        50.0,
        1600.0,
        4,
        [
            (106.8440, -6.2434),  # Pancoran
            (106.8530, -6.2428),  # Tebet Barat
            (106.8620, -6.2432),  # Tebet Timur / Cikoko
            (106.8718, -6.2446),  # Cawang
        ],
    ),
]

CARRIAGEWAY_OFFSET_M = 14.0
# Segments that the sample marks as two-lane (bridges, ramps, merges) to vary the network.
NARROW = {("SDR", 3), ("GTS", 5), ("RSD", 1), ("MTH", 2), ("TOL", 3)}


def _interpolate(points: list[tuple[float, float]], dist_m: float) -> tuple[float, float]:
    for a, b in zip(points, points[1:], strict=False):
        d = haversine_m(a, b)
        if dist_m <= d:
            t = dist_m / d if d else 0.0
            return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t)
        dist_m -= d
    return points[-1]


def _cut(points: list[tuple[float, float]], start_m: float, end_m: float) -> list:
    """The sub-line between two distances along a polyline, vertices kept."""
    out = [_interpolate(points, start_m)]
    run = 0.0
    for a, b in zip(points, points[1:], strict=False):
        run += haversine_m(a, b)
        if start_m < run < end_m:
            out.append(b)
    out.append(_interpolate(points, end_m))
    return out


def _offset(line: list[tuple[float, float]], metres: float) -> list[tuple[float, float]]:
    """Shift a line sideways (positive = left of travel) by a few metres, in a local tangent plane."""
    out = []
    for i, (lon, lat) in enumerate(line):
        a = line[max(i - 1, 0)]
        b = line[min(i + 1, len(line) - 1)]
        kx = 111_320.0 * math.cos(math.radians(lat))
        dx, dy = (b[0] - a[0]) * kx, (b[1] - a[1]) * 110_574.0
        norm = math.hypot(dx, dy) or 1.0
        nx, ny = -dy / norm, dx / norm
        out.append((round(lon + nx * metres / kx, 6), round(lat + ny * metres / 110_574.0, 6)))
    return out


def build() -> Network:
    corridors, segments, stations = [], [], []
    for code, name, dirs, rclass, lanes, ffs, cap, n_seg, pts in CORRIDORS:
        corridors.append(Corridor(code, name))
        total = sum(haversine_m(a, b) for a, b in zip(pts, pts[1:], strict=False))
        for d_index, direction in enumerate(dirs):
            path = pts if d_index == 0 else list(reversed(pts))
            for k in range(n_seg):
                a_m, b_m = total * k / n_seg, total * (k + 1) / n_seg
                line = _offset(_cut(path, a_m, b_m), CARRIAGEWAY_OFFSET_M)
                seg_id = f"{code}-{direction}-{k + 1:02d}"
                seg_lanes = 2 if (code, k) in NARROW else lanes
                segments.append(
                    Segment(
                        segment_id=seg_id,
                        corridor_id=code,
                        direction=direction,
                        seq=k + 1,
                        name=f"{name} ({direction}) {k + 1}/{n_seg}",
                        road_class=rclass,
                        lanes=seg_lanes,
                        free_flow_kph=ffs,
                        capacity_vph_lane=cap,
                        coords=tuple(line),
                    )
                )
                seg_len = b_m - a_m
                for j, frac in enumerate((1 / 3, 2 / 3)):
                    lon, lat = _interpolate(line, seg_len * frac)
                    number = 2 * k + j + 1
                    stations.append(
                        Station(
                            station_id=f"JKT-{code}-{direction}-{number:03d}",
                            segment_id=seg_id,
                            lanes=seg_lanes,
                            lon=round(lon, 6),
                            lat=round(lat, 6),
                            position_m=round(seg_len * frac, 1),
                            # every seventh station is a single loop: no speed measured
                            detector="single-loop" if number % 7 == 0 else "dual-loop",
                            # one roadside gateway (cabinet) per two consecutive segments of a
                            # direction: its four stations fall silent together when it fails
                            gateway_id=f"GW-{code}-{direction}-{k // 2 + 1}",
                        )
                    )
    return Network(
        "Jakarta sample", "Asia/Jakarta", tuple(corridors), tuple(segments), tuple(stations)
    )


def main() -> None:
    net = build()
    target = Path(__file__).with_name("jakarta.geojson")
    target.write_bytes(orjson.dumps(network_to_geojson(net), option=orjson.OPT_INDENT_2) + b"\n")
    print(f"wrote {target}: {len(net.segments)} segments, {len(net.stations)} stations")


if __name__ == "__main__":
    main()
