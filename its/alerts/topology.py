"""Stations in driving order with their distance along the corridor: what the incident and
bottleneck rules need to know about "the next station downstream".

Computed once per network from the segments' ``seq`` (1 = most upstream) and lengths and the
stations' ``position_m`` on their segment, so the rules themselves stay pure functions of numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from its.network import Network


@dataclass(frozen=True)
class StationPoint:
    """A station on a corridor direction, ``km`` from the start of its first segment."""

    station_id: str
    segment_id: str
    corridor_id: str
    direction: str
    road_class: str
    free_flow_kph: float
    has_speed: bool
    km: float


def chains(network: Network) -> list[list[StationPoint]]:
    """Every corridor direction's stations, upstream first, with their along-road distance."""
    groups: dict[tuple[str, str], list] = {}
    for seg in network.segments:
        groups.setdefault((seg.corridor_id, seg.direction), []).append(seg)
    by_segment: dict[str, list] = {}
    for st in network.stations:
        by_segment.setdefault(st.segment_id, []).append(st)
    out = []
    for (corridor, direction), segs in sorted(groups.items()):
        offset = 0.0
        chain = []
        for seg in sorted(segs, key=lambda s: s.seq):
            for st in sorted(by_segment.get(seg.segment_id, []), key=lambda s: s.position_m):
                chain.append(
                    StationPoint(
                        station_id=st.station_id,
                        segment_id=seg.segment_id,
                        corridor_id=corridor,
                        direction=direction,
                        road_class=seg.road_class,
                        free_flow_kph=seg.free_flow_kph,
                        has_speed=st.detector != "single-loop",
                        km=offset + min(st.position_m, seg.length_m) / 1000.0,
                    )
                )
            offset += seg.length_km
        if chain:
            out.append(chain)
    return out


def adjacent_pairs(
    network: Network, max_gap_km: float | None = None
) -> Iterator[tuple[StationPoint, StationPoint]]:
    """(upstream, next downstream) station pairs, optionally no more than ``max_gap_km`` apart."""
    for chain in chains(network):
        for up, down in zip(chain, chain[1:], strict=False):
            if max_gap_km is None or down.km - up.km <= max_gap_km:
                yield up, down
