"""Messages for the ingest fuzz tests: valid observations with unique reading keys, and a
catalogue of ways to break one, each of which must become exactly one dead letter.

Every crash or blow-up found in ingest so far has an entry here (calendar-edge times, NUL bytes,
huge ids and numbers, deep nesting, oversized payloads, gateway arrays, state for an unknown
station, topics outside the contract).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

# stations of the bundled network and their lanes (a sample; see its/data/jakarta.geojson)
STATIONS = {"JKT-SDR-N-001": 4, "JKT-SDR-N-002": 4, "JKT-GTS-E-001": 3}
BASE = datetime.now(UTC).replace(microsecond=0, second=0) - timedelta(days=2)
OFFSETS = ["Z", "+00:00", "+07:00", "-05:00", "+14:00", "-12:00"]
MAX_PAYLOAD = 32_768  # the fuzz runs' ITS_MQTT_MAX_PAYLOAD_BYTES: oversized ones stay cheap


def stamp(k: int, offset: str) -> str:
    """Interval ``k`` (30 s apart, going back from two days ago), written in a time zone."""
    t = BASE - timedelta(seconds=30 * k)
    if offset == "Z":
        return t.isoformat().replace("+00:00", "Z")
    sign = 1 if offset[0] == "+" else -1
    shift = timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])) * sign
    return (t + shift).replace(tzinfo=None).isoformat() + offset


def observation(station: str, k: int, offset: str = "Z", rng: random.Random | None = None) -> dict:
    rng = rng or random.Random(k)
    lanes = rng.sample(range(1, STATIONS[station] + 1), rng.randint(1, STATIONS[station]))
    return {
        "v": 1,
        "station_id": station,
        "interval_start": stamp(k, offset),
        "period_s": rng.choice([20, 30, 60]),
        "lanes": [
            {
                "lane": lane,
                "count": rng.choice([None, 0, rng.randint(0, 10_000)]),
                "occupancy": rng.choice([None, 0.0, 1.0, rng.random()]),
                "speed_kph": rng.choice([None, 0.0, 300.0, rng.uniform(0, 300)]),
            }
            for lane in lanes
        ],
        "status": rng.choice(["ok", "degraded", "fault"]),
    }


@dataclass
class Case:
    """One message and what ingest must make of it."""

    topic: str | bytes
    payload: bytes
    kind: str
    readings: set[tuple[str, int, str]] = field(default_factory=set)  # (station, lane, stamp)
    dead: bool = False
    state: str | None = None  # station whose state is recorded


def _keys(body: dict) -> set[tuple[str, int, str]]:
    return {(body["station_id"], lane["lane"], body["interval_start"]) for lane in body["lanes"]}


def valid(prefix: str, station: str, k: int, offset: str, rng: random.Random) -> Case:
    body = observation(station, k, offset, rng)
    return Case(
        f"{prefix}/stations/{station}/obs", orjson.dumps(body), "valid", readings=_keys(body)
    )


def _set(key: str, value: Any) -> Callable[[dict], dict]:
    return lambda body: {**body, key: value}


def _lane(key: str, value: Any) -> Callable[[dict], dict]:
    return lambda body: {**body, "lanes": [{**body["lanes"][0], key: value}]}


FUTURE = (datetime.now(UTC) + timedelta(days=1)).isoformat()
BODY_BREAKS: dict[str, Callable[[dict], dict]] = {
    "year 1 in +07:00": _set("interval_start", "0001-01-01T00:00:00+07:00"),
    "year 9999 in -05:00": _set("interval_start", "9999-12-31T23:59:59-05:00"),
    "year 0": _set("interval_start", "0000-01-01T00:00:00Z"),
    "naive time": _set("interval_start", "2026-01-01T00:00:00"),
    "future time": _set("interval_start", FUTURE),
    "time as words": _set("interval_start", "yesterday"),
    "time as a huge number": _set("interval_start", 10**18),
    "station NUL": _set("station_id", "JKT\x00SDR"),
    "station huge": _set("station_id", "S" * 10_000),
    "v 2": _set("v", 2),
    "v string": _set("v", "1"),
    "period 0": _set("period_s", 0),
    "period u64 max": _set("period_s", 2**64 - 1),
    "period i64 min": _set("period_s", -(2**63)),
    "period float": _set("period_s", 30.5),
    "period string": _set("period_s", "30"),
    "no lanes": _set("lanes", []),
    "17 lanes": _set("lanes", [{"lane": i} for i in range(1, 18)]),
    "duplicate lanes": lambda b: {**b, "lanes": [b["lanes"][0], b["lanes"][0]]},
    "lane 17": _lane("lane", 17),
    "lane 0": _lane("lane", 0),
    "count -1": _lane("count", -1),
    "count float": _lane("count", 1.5),
    "count bool": _lane("count", True),
    "occupancy 1.5": _lane("occupancy", 1.5),
    "speed 301": _lane("speed_kph", 301.0),
    "speed string": _lane("speed_kph", "fast"),
    "lane field unknown": _lane("ocupancy", 0.1),
    "status NUL": _set("status", "ok\x00"),
    "status unknown": _set("status", "fine"),
    "key NUL": _set("\x00key", 1),
    "key huge": _set("k" * 20_000, 1),
    "nested deep": _set("extra", orjson.loads(b"[" * 200 + b"]" * 200)),
}


def broken(prefix: str, station: str, k: int, kind: str, rng: random.Random) -> Case:
    """A message broken in the way ``kind`` names (one of :data:`KINDS`)."""
    obs_topic = f"{prefix}/stations/{station}/obs"
    body = observation(station, k, "Z", rng)
    if kind in BODY_BREAKS:
        payload = orjson.dumps(BODY_BREAKS[kind](body))
        if len(payload) > MAX_PAYLOAD:
            kind = f"{kind} (oversized)"
        return Case(obs_topic, payload, kind, dead=True)
    state_topic = f"{prefix}/stations/{station}/state"
    gw_topic = f"{prefix}/gateways/gw-{rng.randint(1, 9)}/obs"
    good = orjson.dumps(body)
    match kind:
        case "lane beyond the station's":
            body["lanes"][0]["lane"] = STATIONS[station] + 1
            return Case(obs_topic, orjson.dumps(body), kind, dead=True)
        case "unknown station":
            body["station_id"] = "NOPE-1"
            return Case(f"{prefix}/stations/NOPE-1/obs", orjson.dumps(body), kind, dead=True)
        case "topic station differs":
            other = next(s for s in STATIONS if s != station)
            return Case(f"{prefix}/stations/{other}/obs", good, kind, dead=True)
        case "not JSON":
            return Case(obs_topic, rng.randbytes(rng.randint(1, 64)) + b"{", kind, dead=True)
        case "not UTF-8":
            return Case(obs_topic, b'{"v": "\xff\xfe"}', kind, dead=True)
        case "raw NUL":
            return Case(obs_topic, b'{"v":1,\x00}', kind, dead=True)
        case "empty payload":
            return Case(obs_topic, b"", kind, dead=True)
        case "array on station topic":
            return Case(obs_topic, orjson.dumps([body]), kind, dead=True)
        case "number 1e400":
            return Case(obs_topic, good.replace(b'"v":1', b'"v":1e400'), kind, dead=True)
        case "deep nesting 5000":
            return Case(obs_topic, b"[" * 5000 + b"]" * 5000, kind, dead=True)
        case "oversized":
            padded = {**body, "pad": "x" * (MAX_PAYLOAD + rng.randint(1, 5000))}
            return Case(obs_topic, orjson.dumps(padded), kind, dead=True)
        case "huge id in topic":
            return Case(f"{prefix}/stations/{'X' * 60_000}/obs", good, kind, dead=True)
        case "topic outside the contract":
            return Case(f"{prefix}/stations/{station}/obs/extra", good, kind, dead=True)
        case "alerts topic":
            return Case(f"{prefix}/alerts/a1", good, kind, dead=True)
        case "gateway empty array":
            return Case(gw_topic, b"[]", kind, dead=True)
        case "gateway object":
            return Case(gw_topic, good, kind, dead=True)
        case "gateway all bad":
            items = [BODY_BREAKS["year 1 in +07:00"](body), 7, "x", None]
            return Case(gw_topic, orjson.dumps(items), kind, dead=True)
        case "state unknown station":
            return Case(f"{prefix}/stations/NOPE-2/state", b'{"state":"online"}', kind, dead=True)
        case "state at year 9999 in -05:00":
            payload = b'{"state":"offline","at":"9999-12-31T23:59:59-05:00"}'
            return Case(state_topic, payload, kind, dead=True)
        case "state unknown value":
            return Case(state_topic, b'{"state":"asleep"}', kind, dead=True)
        case "state not JSON":
            return Case(state_topic, b"offline", kind, dead=True)
        case "state NUL":
            return Case(state_topic, b'{"state":"online\\u0000"}', kind, dead=True)
    raise ValueError(kind)


KINDS = [
    *BODY_BREAKS,
    "lane beyond the station's",
    "unknown station",
    "topic station differs",
    "not JSON",
    "not UTF-8",
    "raw NUL",
    "empty payload",
    "array on station topic",
    "number 1e400",
    "deep nesting 5000",
    "oversized",
    "huge id in topic",
    "topic outside the contract",
    "alerts topic",
    "gateway empty array",
    "gateway object",
    "gateway all bad",
    "state unknown station",
    "state at year 9999 in -05:00",
    "state unknown value",
    "state not JSON",
    "state NUL",
]
# topics Mosquitto itself refuses (it disconnects the publisher): fed to the pipeline only
PIPELINE_ONLY_KINDS = ["topic NUL", "topic not UTF-8", "topic lone surrogate"]


def broken_topic(prefix: str, kind: str) -> Case:
    good = orjson.dumps(observation("JKT-SDR-N-001", 0))
    topic: str | bytes = {
        "topic NUL": f"{prefix}/stations/JKT\x00SDR/obs",
        "topic not UTF-8": f"{prefix}/stations/".encode() + b"\xff\xfe/obs",
        "topic lone surrogate": f"{prefix}/stations/\udcff/obs",
    }[kind]
    return Case(topic, good, kind, dead=True)


def gateway_mix(prefix: str, ks: list[int], bad_kinds: list[str], rng: random.Random) -> Case:
    """A gateway array of valid observations (intervals ``ks``) and broken ones: the valid
    are stored, the broken make one dead letter."""
    items: list[Any] = []
    keys: set[tuple[str, int, str]] = set()
    for k in ks:
        body = observation(rng.choice(list(STATIONS)), k, rng.choice(OFFSETS), rng)
        keys |= _keys(body)
        items.append(body)
    for kind in bad_kinds:
        base = observation("JKT-SDR-N-001", 0, "Z", rng)
        items.append(BODY_BREAKS[kind](base) if kind in BODY_BREAKS else kind)
    rng.shuffle(items)
    payload = orjson.dumps(items)
    dead = bool(bad_kinds) or len(payload) > MAX_PAYLOAD
    if len(payload) > MAX_PAYLOAD:
        keys = set()
    return Case(f"{prefix}/gateways/gw-{rng.randint(1, 9)}/obs", payload, "gateway", keys, dead)
