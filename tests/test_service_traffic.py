"""Aggregates follow the handbook's definitions and agree across backends."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine

from its.contract import iso
from its.network import Network
from its.service import live, traffic
from tests.traffic_helpers import aligned, seed


def test_segment_speed_is_flow_weighted_harmonic_mean(engine: Engine, network: Network) -> None:
    seg = network.segments[0]
    a, b = network.stations_of(seg.segment_id)[:2]
    t0 = aligned(60)
    # Same count everywhere: the harmonic mean of 20 and 60 is 30, not the arithmetic 40.
    seed(engine, network, t0, 5, lambda st, t: 20.0 if st == a else 60.0, stations=[a, b])
    with engine.connect() as conn:
        [row] = traffic.segment_buckets(
            conn, network, t0, t0 + timedelta(minutes=5), 300, segment_ids=[seg.segment_id]
        )
    assert row.speed_kph == pytest.approx(30.0, rel=1e-3)
    assert row.flow_vph == pytest.approx(10 * 120 * a.lanes, rel=1e-6)
    assert row.bucket_start == t0


def test_single_loop_speed_is_estimated_from_occupancy(engine: Engine, network: Network) -> None:
    single = next(s for s in network.stations if s.detector == "single-loop")
    t0 = aligned(60)
    seed(engine, network, t0, 5, lambda st, t: 45.0, stations=[single])
    with engine.connect() as conn:
        [row] = traffic.aggregate(conn, network, "station", t0, t0 + timedelta(minutes=5), 300)
    # occupancy was rounded to 4 digits on the wire, so the estimate is close, not exact
    assert row.speed_kph == pytest.approx(45.0, rel=0.01)


def test_percent_observed_counts_missing_intervals_and_stations(
    engine: Engine, network: Network
) -> None:
    seg = network.segments[3]
    stations = network.stations_of(seg.segment_id)
    t0 = aligned(60)
    # only the first station reports, and only in every other interval
    first = stations[0]
    seed(
        engine,
        network,
        t0,
        5,
        lambda st, t: 50.0 if (t - t0).seconds // 30 % 2 == 0 else None,
        stations=[first],
    )
    with engine.connect() as conn:
        [st_row] = traffic.aggregate(conn, network, "station", t0, t0 + timedelta(minutes=5), 300)
        [seg_row] = traffic.segment_buckets(conn, network, t0, t0 + timedelta(minutes=5))
    assert st_row.pct_observed == pytest.approx(50.0)
    expected_seg = 100.0 * (first.lanes * 5) / sum(s.lanes * 10 for s in stations)
    assert seg_row.pct_observed == pytest.approx(expected_seg)
    # volume normalised: the flow is the mean over the intervals observed, not diluted by gaps
    assert st_row.flow_vph == pytest.approx(10 * 120 * first.lanes)


def test_levels_and_buckets_agree_between_backends(
    sqlite_engine: Engine, pg_engine: Engine, network: Network
) -> None:
    t0 = aligned(180)

    def speed(st, t):  # noqa: ANN001, ANN202 - a small deterministic field of speeds
        return 15.0 + (hash(st.station_id) % 50) + (t.minute % 7)

    results = []
    for eng in (sqlite_engine, pg_engine):
        seed(eng, network, t0, 70, speed, stations=network.stations[:30])
        with eng.connect() as conn:
            out = {}
            for level in ("station", "segment", "corridor"):
                for bucket in (300, 900, 3600):
                    rows = traffic.aggregate(
                        conn, network, level, t0, t0 + timedelta(hours=2), bucket
                    )
                    out[(level, bucket)] = [
                        (
                            r.target_id,
                            r.bucket_start,
                            round(r.speed_kph, 6),
                            round(r.flow_vph, 6),
                            round(r.pct_observed, 6),
                        )
                        for r in rows
                    ]
            results.append(out)
    assert results[0] == results[1]
    assert len(results[0][("station", 300)]) == 30 * 14


def test_data_clock_is_newest_interval_end(engine: Engine, network: Network) -> None:
    with engine.connect() as conn:
        assert traffic.data_clock(conn) is None
    t0 = aligned(30)
    seed(engine, network, t0, 2, lambda st, t: 50.0, stations=network.stations[:2])
    with engine.connect() as conn:
        assert traffic.data_clock(conn) == t0 + timedelta(seconds=120)
        seen = traffic.station_last_seen(conn, since=t0)
    assert set(seen) == {s.station_id for s in network.stations[:2]}


def test_network_state_bands_staleness_and_kpis(engine: Engine, network: Network) -> None:
    jam = network.segments[0]
    silent_seg = network.segments[1]
    t0 = aligned(60)

    def speed(st, t):  # noqa: ANN001, ANN202
        seg = network.segment(st.segment_id)
        if seg is silent_seg and t >= t0 + timedelta(minutes=5):
            return None  # this segment's stations stop reporting
        return 0.15 * seg.free_flow_kph if seg is jam else 0.9 * seg.free_flow_kph

    seed(engine, network, t0, 15, speed)
    with engine.connect() as conn:
        state = live.network_state(conn, network, stale_after_s=180)
        health = live.station_health(conn, network)
        k = live.kpis(conn, network)
    props = {f["properties"]["segment_id"]: f["properties"] for f in state["features"]}
    assert len(state["features"]) == len(network.segments)
    assert props[jam.segment_id]["band"] == "jammed"
    assert props[jam.segment_id]["tti"] == pytest.approx(1 / 0.15, rel=0.01)
    assert props[network.segments[2].segment_id]["band"] == "free"
    assert props[silent_seg.segment_id]["band"] == "no-data"
    assert props[silent_seg.segment_id]["stale"] is True
    assert props[jam.segment_id]["stale"] is False
    silent_ids = {s.station_id for s in network.stations_of(silent_seg.segment_id)}
    assert {h["station_id"] for h in health if h["health"] == "offline"} == silent_ids
    assert k["congested_km"] == pytest.approx(round(jam.length_km, 2), abs=0.01)
    assert k["stations_offline"] == len(silent_ids)
    assert k["stations_reporting"] == len(network.stations) - len(silent_ids)
    assert 0 < k["mean_speed_kph"] < max(s.free_flow_kph for s in network.segments)
    series = None
    with engine.connect() as conn:
        series = live.segment_series(conn, network, jam.segment_id, t0, t0 + timedelta(hours=1))
    assert [p["bucket_start"] for p in series][:1] == [iso(t0)]
    assert len(series) == 3


def test_segment_series_unknown_segment(engine: Engine, network: Network) -> None:
    from its.errors import NotFoundError

    with engine.connect() as conn, pytest.raises(NotFoundError, match="no segment"):
        live.segment_series(conn, network, "NOPE", aligned(10), aligned(0))


def test_live_map_shows_the_newest_complete_bucket(engine: Engine, network: Network) -> None:
    """The map's value is the newest complete 5-minute bucket, not a rolling 5 minutes: the
    minutes of the bucket in progress do not move it, yet they do count as seen (observed_at)."""
    seg = network.segments[0]
    stations = network.stations_of(seg.segment_id)
    t0 = aligned(60)  # 5-minute aligned
    ff = seg.free_flow_kph
    # two complete buckets (0.9 then 0.3 of free flow), then 2 minutes of 0.9 in the third
    seed(engine, network, t0, 10, lambda st, t: (0.9 if t < t0 + timedelta(minutes=5) else 0.3) * ff,
         stations=stations)  # fmt: skip
    seed(engine, network, t0 + timedelta(minutes=10), 2, lambda st, t: 0.9 * ff, stations=stations)
    clock = t0 + timedelta(minutes=12)
    assert live.live_bucket(clock) == (t0 + timedelta(minutes=5), t0 + timedelta(minutes=10))
    assert live.live_bucket(t0 + timedelta(minutes=10)) == live.live_bucket(clock)
    with engine.connect() as conn:
        assert traffic.data_clock(conn) == clock
        state = live.network_state(conn, network, stale_after_s=180)
        [bucket] = traffic.aggregate(
            conn, network, "segment", t0 + timedelta(minutes=5), t0 + timedelta(minutes=10), 300,
            target_ids=[seg.segment_id],
        )  # fmt: skip
    props = next(f["properties"] for f in state["features"] if f["id"] == seg.segment_id)
    assert props["speed_kph"] == pytest.approx(0.3 * ff, rel=0.01)  # not a blend with 0.9
    assert props["speed_kph"] == round(bucket.speed_kph, 1)
    assert props["flow_vph"] == round(bucket.flow_vph, 1)
    assert props["pct_observed"] == 100.0
    assert props["observed_at"] == iso(clock)
    assert props["stale"] is False
    others = [f["properties"] for f in state["features"] if f["id"] != seg.segment_id]
    assert {p["band"] for p in others} == {"no-data"}
    assert all(p["stale"] for p in others)
