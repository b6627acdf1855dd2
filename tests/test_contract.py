"""The wire contract: topics and payloads parse, serialise and reject as docs/mqtt.md says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from its.contract import (
    GatewayObsTopic,
    Observation,
    StationObsTopic,
    StationStateTopic,
    parse_gateway_batch,
    parse_observation,
    parse_state,
    parse_topic,
    serialise_observation,
    serialise_state,
    subscriptions,
)
from its.errors import PayloadError, TopicError

EXAMPLE = {
    "v": 1,
    "station_id": "JKT-SDR-N-012",
    "interval_start": "2026-11-22T01:05:00Z",
    "period_s": 30,
    "lanes": [
        {"lane": 1, "count": 12, "occupancy": 0.083, "speed_kph": 47.5},
        {"lane": 2, "count": 9, "occupancy": 0.061, "speed_kph": None},
    ],
    "status": "ok",
}
NOW = datetime(2026, 11, 22, 1, 6, tzinfo=UTC)


def _bytes(**changes: object) -> bytes:
    return orjson.dumps({**EXAMPLE, **changes})


def test_handbook_example_round_trips() -> None:
    obs = parse_observation(_bytes(), now=NOW)
    assert obs.interval_start == datetime(2026, 11, 22, 1, 5, tzinfo=UTC)
    assert obs.lanes[1].speed_kph is None
    assert orjson.loads(serialise_observation(obs)) == EXAMPLE


def test_offsets_are_normalised_to_utc() -> None:
    obs = parse_observation(_bytes(interval_start="2026-11-22T08:05:00+07:00"), now=NOW)
    assert obs.interval_start == datetime(2026, 11, 22, 1, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "JSON object"),
        (_bytes(v=2), "v:"),
        (_bytes(interval_start="2026-11-22T01:05:00"), "time zone"),
        (_bytes(period_s=0), "period_s"),
        (_bytes(lanes=[]), "lanes"),
        (_bytes(lanes=[{"lane": 1, "count": -1}]), "lanes.0.count"),
        (_bytes(lanes=[{"lane": 1, "count": "12"}]), "lanes.0.count"),
        (_bytes(lanes=[{"lane": 1, "occupancy": 1.2}]), "lanes.0.occupancy"),
        (_bytes(lanes=[{"lane": 1}, {"lane": 1}]), "duplicate lane"),
        (_bytes(lanes=[{"lane": 1, "count": 1, "extra": 1}]), "extra"),
        (_bytes(station_id="bad id!"), "station_id"),
        (_bytes(status="weird"), "status"),
        (_bytes(interval_start="2026-11-22T02:05:00Z"), "in the future"),
    ],
)
def test_bad_payloads_say_why(payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        parse_observation(payload, now=NOW)


def test_future_tolerance_is_configurable() -> None:
    later = (NOW + timedelta(minutes=10)).isoformat()
    with pytest.raises(PayloadError):
        parse_observation(_bytes(interval_start=later), now=NOW, max_future_s=300)
    assert parse_observation(_bytes(interval_start=later), now=NOW, max_future_s=3600)


def test_gateway_batch_keeps_good_entries() -> None:
    bad = {**EXAMPLE, "lanes": [{"lane": 1, "occupancy": 7}]}
    out = parse_gateway_batch(orjson.dumps([EXAMPLE, bad, 3]), now=NOW)
    assert isinstance(out[0], Observation)
    assert isinstance(out[1], PayloadError) and str(out[1]).startswith("[1] ")
    assert isinstance(out[2], PayloadError) and "object" in str(out[2])
    with pytest.raises(PayloadError, match="array"):
        parse_gateway_batch(_bytes(), now=NOW)


def test_topics() -> None:
    assert parse_topic("its/v1", "its/v1/stations/A-1/obs") == StationObsTopic("its/v1", "A-1")
    assert parse_topic("its/v1", "its/v1/stations/A-1/state") == StationStateTopic("its/v1", "A-1")
    assert parse_topic("its/v1", "its/v1/gateways/G/obs") == GatewayObsTopic("its/v1", "G")
    assert str(StationObsTopic("x/y", "S")) == "x/y/stations/S/obs"
    for bad in ("other/v1/stations/A/obs", "its/v1/stations/A/foo", "its/v1/stations/a b/obs"):
        with pytest.raises(TopicError):
            parse_topic("its/v1", bad)


def test_subscriptions_with_share_group() -> None:
    assert "its/v1/stations/+/obs" in subscriptions("its/v1")
    assert all(s.startswith("$share/g/its/v1/") for s in subscriptions("its/v1", "g"))


def test_state_round_trip() -> None:
    state = parse_state(serialise_state("offline", NOW))
    assert (state.state, state.at) == ("offline", NOW)
    with pytest.raises(PayloadError, match="state"):
        parse_state(b'{"state": "maybe"}')


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+07:00", "9999-12-31T23:59:59-05:00"])
def test_calendar_edge_timestamps_are_payload_errors_not_overflow(stamp: str) -> None:
    """Regression: these raised OverflowError (converting to UTC leaves years 1-9999), which
    escaped the parser and stopped ingest on every redelivery."""
    with pytest.raises(PayloadError, match="outside the years 1-9999"):
        parse_observation(_bytes(interval_start=stamp), now=NOW)
    with pytest.raises(PayloadError, match="at: .*outside the years 1-9999"):
        parse_state(orjson.dumps({"state": "offline", "at": stamp}))
    (item,) = parse_gateway_batch(orjson.dumps([{**EXAMPLE, "interval_start": stamp}]), now=NOW)
    assert isinstance(item, PayloadError) and "outside the years" in str(item)


@pytest.mark.parametrize("stamp", ["0001-01-02T00:00:00Z", "1969-12-31T23:59:30Z"])
def test_readings_before_1970_are_refused(stamp: str) -> None:
    """Within the calendar but before any detector: stored, they would overflow bucket arithmetic
    downstream (the roll-ups' local days) and fall outside what the API answers."""
    with pytest.raises(PayloadError, match="is before 1970-01-01"):
        parse_observation(_bytes(interval_start=stamp), now=NOW)
    assert parse_observation(_bytes(interval_start="1970-01-01T00:00:00Z"), now=NOW)


def test_reasons_quote_a_sender_s_strings_bounded() -> None:
    with pytest.raises(TopicError) as topic_err:
        parse_topic("its/v1", "its/v1/stations/" + "x" * 60_000 + "/obs")
    with pytest.raises(PayloadError) as key_err:
        parse_observation(_bytes(**{"k" * 60_000: 1}), now=NOW)
    assert len(str(topic_err.value)) < 300 and "60000 characters" in str(topic_err.value)
    assert len(str(key_err.value)) < 300 and "Extra inputs are not permitted" in str(key_err.value)
