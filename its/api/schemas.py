"""Response and request models: what the OpenAPI page at ``/docs`` shows analysts."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from its.api.params import reject_control_characters

#: a name with at least one visible character and no control characters, as the schema states it
#: free text: tabs and line breaks, but no other control character
_TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"

Band = Literal["free", "slow", "congested", "jammed", "no-data"]


class SegmentState(BaseModel):
    segment_id: str
    corridor_id: str
    name: str
    direction: str
    road_class: str
    length_km: float
    free_flow_kph: float
    speed_kph: float | None = Field(
        description="Flow-weighted harmonic mean, newest complete 5-minute bucket of data"
    )
    flow_vph: float | None = Field(description="Mean station flow, vehicles per hour")
    occupancy: float | None = Field(description="Mean lane occupancy, fraction 0..1")
    pct_observed: float | None
    band: Band
    tti: float | None = Field(description="Travel time index: travel time / free-flow time")
    observed_at: datetime | None
    stale: bool


class LineString(BaseModel):
    type: Literal["LineString"] = "LineString"
    coordinates: list[list[float]]


class SegmentFeature(BaseModel):
    type: Literal["Feature"] = "Feature"
    id: str
    geometry: LineString
    properties: SegmentState


class NetworkState(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "type": "FeatureCollection",
                "data_time": "2026-11-22T01:05:00Z",
                "features": [
                    {
                        "type": "Feature",
                        "id": "SDR-N-03",
                        "geometry": {
                            "type": "LineString",
                            "coordinates": [[106.8228, -6.2146], [106.8236, -6.2063]],
                        },
                        "properties": {
                            "segment_id": "SDR-N-03",
                            "corridor_id": "SDR",
                            "name": "Jl. Jend. Sudirman (Semanggi - Karet)",
                            "direction": "N",
                            "road_class": "arterial",
                            "length_km": 0.92,
                            "free_flow_kph": 60,
                            "speed_kph": 21.4,
                            "flow_vph": 3120,
                            "occupancy": 0.241,
                            "pct_observed": 100,
                            "band": "congested",
                            "tti": 2.8,
                            "observed_at": "2026-11-22T01:05:00Z",
                            "stale": False,
                        },
                    }
                ],
            }
        }
    )
    type: Literal["FeatureCollection"] = "FeatureCollection"
    data_time: datetime | None = Field(description="Newest data stored: the clock of live views")
    features: list[SegmentFeature]


class StationOut(BaseModel):
    station_id: str
    segment_id: str
    corridor_id: str
    lanes: int
    lon: float
    lat: float
    detector: str
    health: Literal["ok", "offline", "no-data"]
    last_seen: datetime | None


class SeriesPoint(BaseModel):
    bucket_start: datetime
    speed_kph: float | None
    flow_vph: float | None
    occupancy: float | None
    pct_observed: float = Field(description="Lane intervals observed / expected, in percent")


class StationSeries(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "station_id": "JKT-SDR-N-012",
                "bucket": "5m",
                "start": "2026-11-22T00:00:00Z",
                "end": "2026-11-22T02:00:00Z",
                "points": [
                    {
                        "bucket_start": "2026-11-22T00:00:00Z",
                        "speed_kph": 47.5,
                        "flow_vph": 2880,
                        "occupancy": 0.082,
                        "pct_observed": 100,
                    }
                ],
            }
        }
    )
    station_id: str
    bucket: str
    start: datetime
    end: datetime
    points: list[SeriesPoint]


class AggregateRow(SeriesPoint):
    id: str = Field(description="Station, segment or corridor id")


class Aggregates(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "level": "corridor",
                "bucket": "1h",
                "start": "2026-11-22T00:00:00Z",
                "end": "2026-11-22T03:00:00Z",
                "rows": [
                    {
                        "id": "SDR",
                        "bucket_start": "2026-11-22T00:00:00Z",
                        "speed_kph": 38.2,
                        "flow_vph": 3410,
                        "occupancy": 0.12,
                        "pct_observed": 98.6,
                    }
                ],
            }
        }
    )
    level: str
    bucket: str
    start: datetime
    end: datetime
    rows: list[AggregateRow]


class AlertOut(BaseModel):
    id: int
    rule: str
    target_kind: str
    target_id: str
    severity: str
    active: bool
    message: str
    raised_at: datetime
    last_seen: datetime
    cleared_at: datetime | None
    count: int
    acked_at: datetime | None
    acked_by: str | None
    ack_comment: str | None
    details: dict[str, Any] = {}


class AckRequest(BaseModel):
    """Who acknowledges is the caller (the signed-in user, or the API key's owner or name), never
    a name in the body: an ``operator`` field is refused (422)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"comment": "Police on site"}},
    )
    comment: str | None = Field(
        None,
        max_length=2000,
        description="Free text; tabs and line breaks but no other control characters",
        json_schema_extra={"pattern": _TEXT_PATTERN},
    )

    @field_validator("comment")
    @classmethod
    def _printable_comment(cls, value: str | None) -> str | None:
        return None if value is None else reject_control_characters(value, allowed="\t\n\r")


class AuditEntryOut(BaseModel):
    id: int
    at: str
    actor: str | None = Field(description="username, key:<key_id>, or null (unknown caller)")
    action: str = Field(description="signin, signout, key.use, alert.ack, user.add, ...")
    target: str | None
    outcome: Literal["ok", "failed", "denied"]
    detail: dict[str, Any] | None
    client: str | None = Field(description="client address")


class IdentityOut(BaseModel):
    actor: str = Field(description="the name recorded on what this identity does")
    via: Literal["session", "key", "anonymous"]
    role: str = Field(description="viewer | operator | supervisor | admin, or key:<scope>")
    display_name: str
    permissions: list[str]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: str
    backend: str | None
    broker: str
    broker_url: str | None
    data_time: datetime | None


class ErrorOut(BaseModel):
    detail: str


# --------------------------------------------------------------------------- performance measures


class MeasuresRow(BaseModel):
    """One segment, or corridor direction, and bucket; only the ``measures`` picked are present."""

    model_config = ConfigDict(extra="allow")
    id: str = Field(description="Segment or corridor id")
    direction: str | None = Field(None, description="Corridor rows: the direction of travel")
    bucket_start: datetime
    flow_vph: float | None = Field(None, description="Segment: mean station flow; corridor: "
                                   "length-weighted mean of its segments' flows, veh/h")  # fmt: skip
    speed_kph: float | None = Field(None, description="Corridor: space-mean speed, length / "
                                    "travel time")  # fmt: skip
    occupancy: float | None = Field(None, description="Segments only")
    pct_observed: float | None = None
    vkt_veh_km: float | None = Field(None, description="Vehicle-kilometres travelled, q L h")
    vht_veh_h: float | None = Field(None, description="Vehicle-hours travelled, q L h / v")
    delay_ff_veh_h: float | None = Field(None, description="q h max(0, L/v - L/v_free)")
    delay_veh_h: float | None = Field(None, description="q h max(0, L/v - L/threshold)")
    travel_time_min: float | None = Field(None, description="L / v, minutes")
    free_flow_time_min: float | None = Field(None, description="L / v_free, minutes")
    tti: float | None = Field(None, description="Travel time / free-flow travel time")
    segments: int | None = Field(None, description="Corridor: segments in the direction")
    segments_observed: int | None = Field(None, description="Corridor: segments with a speed")


class MeasuresOut(BaseModel):
    level: Literal["segment", "corridor"]
    bucket: str
    start: datetime
    end: datetime
    threshold_kph: float
    measures: list[str]
    rows: list[MeasuresRow]


class ReliabilityRow(BaseModel):
    id: str = Field(description="Corridor id")
    direction: str
    day: str = Field(description="Local date in the network's time zone")
    day_start: datetime
    buckets: int = Field(description="5-minute travel times in the day")
    pct_observed: float
    free_flow_time_min: float
    tt_mean_min: float | None
    tt95_min: float | None = Field(description="95th percentile (linear interpolation)")
    tti_mean: float | None
    buffer_index: float | None = Field(description="(TT95 - TTmean) / TTmean")
    planning_time_index: float | None = Field(description="TT95 / TTfree")


class ReliabilityOut(BaseModel):
    start: datetime
    end: datetime
    timezone: str
    rows: list[ReliabilityRow]


class LanePointOut(BaseModel):
    lane: int
    bucket_start: datetime
    flow_vph: float | None = Field(description="Lane flow, veh/h, mean over observed intervals")
    speed_kph: float | None = Field(description="Flow-weighted harmonic mean (single loop: "
                                    "estimated from occupancy)")  # fmt: skip
    occupancy: float | None
    pct_observed: float = Field(description="Intervals observed / expected, in percent")


class LaneSeries(BaseModel):
    station_id: str
    lanes: int
    bucket: str
    start: datetime
    end: datetime
    points: list[LanePointOut]


class BottleneckOut(BaseModel):
    """One active-bottleneck episode (PeMS method, docs/alerts.md): where, when, how far the
    queue reached and the delay it caused against 60 km/h."""

    id: int
    head_station_id: str
    downstream_station_id: str
    segment_id: str
    corridor_id: str
    direction: str
    active: bool
    started_at: datetime
    detected_at: datetime
    last_seen: datetime
    ended_at: datetime | None
    duration_min: float
    intervals: int
    delay_veh_h: float
    max_extent_km: float
    farthest_station_id: str | None
    alert_id: int | None


class BottleneckDayOut(BaseModel):
    """One head station on one local day (the network's time zone)."""

    day: str
    head_station_id: str
    segment_id: str
    corridor_id: str
    direction: str
    episodes: int
    active_min: float
    delay_veh_h: float
    max_extent_km: float


class BottlenecksOut(BaseModel):
    start: datetime
    end: datetime
    timezone: str
    episodes: list[BottleneckOut]
    daily: list[BottleneckDayOut]


class DetectorCounts(BaseModel):
    stations: int = Field(description="Stations in the network (or corridor)")
    good: int = Field(description="Reporting, not offline, not diagnosed faulty")
    faulty: int = Field(description="With an active detector-fault alert")
    offline: int = Field(description="Station-offline or gateway-offline, or silent now")
    no_data: int = Field(description="Nothing from it in the last hour of data")
    pct_good: float | None = Field(description="good / stations, percent; null without stations")


class CorridorDetectors(DetectorCounts):
    corridor_id: str
    name: str


class StationDetectorStatus(BaseModel):
    station_id: str
    corridor_id: str
    segment_id: str
    gateway_id: str | None
    status: Literal["good", "faulty", "offline", "no-data"]
    diagnosis: str | None = Field(description="The active detector-fault diagnosis, if any")
    alert_id: int | None = Field(description="The alert that says so (offline or fault)")


class DetectorHealth(BaseModel):
    data_time: datetime | None
    network: DetectorCounts
    corridors: list[CorridorDetectors]
    stations: list[StationDetectorStatus] = Field(description="Every station that is not good")


class StationFault(AlertOut):
    kind: str | None = Field(
        description="The diagnosis (detector-fault), the reason (station-offline: last-will or "
        "silent) or 'gateway' (gateway-offline)"
    )
    diagnoses: list[str] = Field(description="Diagnoses seen over the episode, first first")
    duration_s: float | None = Field(description="Seconds from raised to cleared; null if active")
