"""The MQTT wire contract, version 1: topics, payload schema, parse and serialise.

Both the simulator (which publishes) and ingest (which validates) use this module, so the two can
never disagree. ``docs/mqtt.md`` documents the same contract for people writing sensor clients.

Topics (``{prefix}`` defaults to ``its/v1``):

- ``{prefix}/stations/{station_id}/obs``   one observation interval of one station (QoS 1)
- ``{prefix}/stations/{station_id}/state`` retained ``{"state": "online"|"offline", "at": ...}``
- ``{prefix}/gateways/{gateway_id}/obs``   a JSON array of observations
- ``{prefix}/alerts/{alert_id}``           alert events published by the platform
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from its.errors import PayloadError, TopicError

CONTRACT_VERSION = 1
#: readings before this are refused (the API answers 1970..2200 too): far-past times only serve
#: to overflow bucket arithmetic downstream
EARLIEST_READING = datetime(1970, 1, 1, tzinfo=UTC)
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_SHOWN_CHARS = 80  # how much of a sender's string a reason quotes


def shorten(value: str, limit: int = _SHOWN_CHARS) -> str:
    """``repr`` of a sender's string, cut to ``limit`` characters: reasons quote what was sent
    without letting a 64 KiB topic or key become a 64 KiB reason."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def _check_id(kind: str, value: str) -> None:
    if not _ID_RE.match(value):
        raise TopicError(f"invalid {kind} id {shorten(value)} in topic")


# --------------------------------------------------------------------------- topics


@dataclass(frozen=True)
class StationObsTopic:
    """``{prefix}/stations/{station_id}/obs``."""

    prefix: str
    station_id: str

    def __post_init__(self) -> None:
        _check_id("station", self.station_id)

    def __str__(self) -> str:
        return f"{self.prefix}/stations/{self.station_id}/obs"


@dataclass(frozen=True)
class StationStateTopic:
    """``{prefix}/stations/{station_id}/state`` (retained; the station's Last Will)."""

    prefix: str
    station_id: str

    def __post_init__(self) -> None:
        _check_id("station", self.station_id)

    def __str__(self) -> str:
        return f"{self.prefix}/stations/{self.station_id}/state"


@dataclass(frozen=True)
class GatewayObsTopic:
    """``{prefix}/gateways/{gateway_id}/obs``: an array of observations."""

    prefix: str
    gateway_id: str

    def __post_init__(self) -> None:
        _check_id("gateway", self.gateway_id)

    def __str__(self) -> str:
        return f"{self.prefix}/gateways/{self.gateway_id}/obs"


@dataclass(frozen=True)
class AlertTopic:
    """``{prefix}/alerts/{alert_id}``: alert events published by the platform."""

    prefix: str
    alert_id: str

    def __str__(self) -> str:
        return f"{self.prefix}/alerts/{self.alert_id}"


Topic = StationObsTopic | StationStateTopic | GatewayObsTopic | AlertTopic


def parse_topic(prefix: str, topic: str) -> Topic:
    """Recognise a contract topic under ``prefix`` or raise :class:`TopicError`."""
    head = prefix.strip("/") + "/"
    if not topic.startswith(head):
        raise TopicError(f"topic {shorten(topic)} is not under prefix {prefix!r}")
    parts = topic[len(head) :].split("/")
    match parts:
        case ["stations", station_id, "obs"]:
            return StationObsTopic(prefix, station_id)
        case ["stations", station_id, "state"]:
            return StationStateTopic(prefix, station_id)
        case ["gateways", gateway_id, "obs"]:
            return GatewayObsTopic(prefix, gateway_id)
        case ["alerts", alert_id]:
            return AlertTopic(prefix, alert_id)
    raise TopicError(f"topic {shorten(topic)} is not part of the v{CONTRACT_VERSION} contract")


def subscriptions(prefix: str, share_group: str | None = None) -> list[str]:
    """The topic filters ingest subscribes to (observations and station state)."""
    filters = [
        f"{prefix}/stations/+/obs",
        f"{prefix}/gateways/+/obs",
        f"{prefix}/stations/+/state",
    ]
    if share_group:
        return [f"$share/{share_group}/{f}" for f in filters]
    return filters


# --------------------------------------------------------------------------- payloads


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must carry a time zone (UTC, e.g. ...Z)")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00:00+07:00 is year 0 in UTC, 9999-12-31T23:59:59-05:00 is year 10000:
        # Python cannot represent either. A ValueError becomes a validation error (a dead
        # letter), where the OverflowError used to escape the parser and stop ingest.
        raise ValueError("timestamp is outside the years 1-9999 once converted to UTC") from None


class LaneReading(BaseModel):
    """One lane's measurements over the interval; ``None`` means not measured, never 0."""

    # strict: "12" or true is a wrong type on the wire, not a number to guess at
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    lane: Annotated[int, Field(ge=1, le=16)]
    count: Annotated[int | None, Field(ge=0, le=10_000)] = None
    occupancy: Annotated[float | None, Field(ge=0.0, le=1.0)] = None
    speed_kph: Annotated[float | None, Field(ge=0.0, le=300.0)] = None


class Observation(BaseModel):
    """One observation interval of one station (contract v1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1]
    station_id: Annotated[str, Field(pattern=_ID_RE.pattern)]
    interval_start: datetime
    period_s: Annotated[int, Field(ge=1, le=3600, strict=True)]
    lanes: Annotated[list[LaneReading], Field(min_length=1, max_length=16)]
    status: Literal["ok", "degraded", "fault"] = "ok"

    @field_validator("interval_start")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return _utc(value)

    @model_validator(mode="after")
    def _distinct_lanes(self) -> Observation:
        lanes = [r.lane for r in self.lanes]
        if len(set(lanes)) != len(lanes):
            raise ValueError(f"duplicate lane numbers {sorted(lanes)}")
        return self


class StationState(BaseModel):
    """Retained station state; ``offline`` is what the station's Last Will publishes."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    state: Literal["online", "offline"]
    at: datetime | None = None

    @field_validator("at")
    @classmethod
    def _to_utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _utc(value)


def _explain(exc: ValidationError) -> str:
    """A one-line reason a person can act on, e.g. ``lanes.0.occupancy: less than or equal to 1``."""
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        # a location can be a sender's key (an unknown field): quote it, bounded
        where = ".".join(str(p) if isinstance(p, int) else _loc(p) for p in err["loc"])
        parts.append(f"{where or 'payload'}: {err['msg'][:200]}")
    return "; ".join(parts)


def _loc(key: str) -> str:
    return key if _ID_RE.match(key) else shorten(key, 40)


def _load_json(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"invalid JSON: {exc}") from None


def _validate_observation(data: Any, now: datetime | None, max_future_s: int) -> Observation:
    try:
        obs = Observation.model_validate(data)
    except ValidationError as exc:
        raise PayloadError(_explain(exc)) from None
    if obs.interval_start < EARLIEST_READING:
        raise PayloadError(
            f"interval_start {obs.interval_start.isoformat()} is before "
            f"{EARLIEST_READING.isoformat()}: no detector measured then"
        )
    now = now or datetime.now(UTC)
    if obs.interval_start - now > timedelta(seconds=max_future_s):
        raise PayloadError(
            f"interval_start {obs.interval_start.isoformat()} is more than {max_future_s}s "
            "in the future"
        )
    return obs


def validate_observation(
    data: Any, *, now: datetime | None = None, max_future_s: int = 300
) -> Observation:
    """Validate an observation already parsed (a line of an import file, a CSV row made into
    one), raising :class:`PayloadError` with the same reasons as :func:`parse_observation`."""
    if not isinstance(data, dict):
        raise PayloadError("observation must be a JSON object")
    return _validate_observation(data, now, max_future_s)


def parse_observation(
    payload: bytes, *, now: datetime | None = None, max_future_s: int = 300
) -> Observation:
    """Parse one station's observation, raising :class:`PayloadError` with the reason."""
    data = _load_json(payload)
    if not isinstance(data, dict):
        raise PayloadError("observation must be a JSON object")
    return _validate_observation(data, now, max_future_s)


class RejectedItem(PayloadError):
    """One element of a gateway array that broke the contract: its index, the reason, and the
    element as sent (returned, not raised, by :func:`parse_gateway_batch`)."""

    def __init__(self, index: int, reason: str, item: Any) -> None:
        super().__init__(f"[{index}] {reason}")
        self.index = index
        self.item = item


def parse_gateway_batch(
    payload: bytes, *, now: datetime | None = None, max_future_s: int = 300
) -> list[Observation | RejectedItem]:
    """Parse a gateway's array; each element is validated on its own so one bad entry
    does not sink the rest (the bad ones are returned as :class:`RejectedItem`)."""
    data = _load_json(payload)
    if not isinstance(data, list):
        raise PayloadError("gateway payload must be a JSON array of observations")
    if not data:
        raise PayloadError("gateway payload is an empty array")
    out: list[Observation | RejectedItem] = []
    for i, item in enumerate(data):
        try:
            if not isinstance(item, dict):
                raise PayloadError("observation must be a JSON object")
            out.append(_validate_observation(item, now, max_future_s))
        except PayloadError as exc:
            out.append(RejectedItem(i, str(exc), item))
    return out


def parse_state(payload: bytes) -> StationState:
    """Parse a retained state message."""
    data = _load_json(payload)
    try:
        return StationState.model_validate(data)
    except ValidationError as exc:
        raise PayloadError(_explain(exc)) from None


def iso(ts: datetime | None) -> str | None:
    """A time as the wire contract and the API write it: UTC, ISO 8601, ``...Z``; None stays."""
    return None if ts is None else ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def observation_dict(obs: Observation) -> dict[str, Any]:
    """The JSON-ready dict of an observation, times as ``...Z``."""
    return {
        "v": CONTRACT_VERSION,
        "station_id": obs.station_id,
        "interval_start": iso(obs.interval_start),
        "period_s": obs.period_s,
        "lanes": [r.model_dump() for r in obs.lanes],
        "status": obs.status,
    }


def serialise_observation(obs: Observation) -> bytes:
    return orjson.dumps(observation_dict(obs))


def serialise_gateway_batch(observations: list[Observation]) -> bytes:
    return orjson.dumps([observation_dict(o) for o in observations])


def serialise_state(state: Literal["online", "offline"], at: datetime | None = None) -> bytes:
    body: dict[str, Any] = {"state": state}
    if at is not None:
        body["at"] = iso(at)
    return orjson.dumps(body)
