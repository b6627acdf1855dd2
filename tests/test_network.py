"""The road network: the bundled Jakarta sample and the GeoJSON format users load."""

from __future__ import annotations

import copy
from pathlib import Path

import orjson
import pytest

from its.errors import NetworkError
from its.network import Network, load_network, network_from_geojson, network_to_geojson


def test_sample_network_size_and_geometry(network: Network) -> None:
    assert len(network.corridors) >= 4
    assert len(network.segments) >= 40
    assert len(network.stations) >= 80
    assert network.timezone == "Asia/Jakarta"
    for seg in network.segments:
        assert 2 <= seg.lanes <= 4 and seg.free_flow_kph > 0 and seg.capacity_vph_lane > 0
        assert 200 < seg.length_m < 3000
        for lon, lat in seg.coords:  # inside central Jakarta
            assert 106.75 < lon < 106.90 and -6.27 < lat < -6.15
    assert {s.lanes for s in network.stations} <= {2, 3, 4}
    assert any(s.detector == "single-loop" for s in network.stations)


def test_driving_order(network: Network) -> None:
    north = network.ordered_stations("SDR", "N")
    south = network.ordered_stations("SDR", "S")
    assert len(north) == len(south) == 12
    # northbound stations move north (latitude increases toward Monas)
    assert north[0].lat < north[-1].lat
    assert south[0].lat > south[-1].lat


def test_geojson_round_trip(network: Network, tmp_path: Path) -> None:
    path = tmp_path / "net.geojson"
    path.write_bytes(orjson.dumps(network_to_geojson(network)))
    again = load_network(path)
    assert again.segments == network.segments
    assert again.stations == network.stations


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(type="Feature"), "FeatureCollection"),
        (lambda d: d["properties"].update(timezone="Mars/Olympus"), "time zone"),
        (lambda d: d["features"][0]["properties"].pop("lanes"), "'lanes' is required"),
        (lambda d: d["features"][0]["properties"].update(road_class="track"), "road_class"),
        (lambda d: d["features"][0]["geometry"].update(coordinates=[[1, 2]]), "two points"),
        (lambda d: d["features"][0]["geometry"].update(coordinates=[[500, 2], [1, 2]]), "WGS84"),
        (lambda d: d["features"][-1]["properties"].update(segment_id="NOPE"), "unknown segment"),
        (lambda d: d["features"].append(copy.deepcopy(d["features"][-1])), "duplicate station"),
        (lambda d: d["features"][0]["properties"].update(kind="road"), "kind"),
    ],
)
def test_bad_network_files_say_why(network: Network, mutate, message: str) -> None:
    doc = network_to_geojson(network)
    mutate(doc)
    with pytest.raises(NetworkError, match=message):
        network_from_geojson(doc)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(NetworkError, match="cannot read"):
        load_network(tmp_path / "missing.geojson")
    (tmp_path / "bad.geojson").write_text("{")
    with pytest.raises(NetworkError, match="not JSON"):
        load_network(tmp_path / "bad.geojson")
