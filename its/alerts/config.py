"""Alert thresholds and evaluator timing, read from ``ITS_ALERT_*`` (like :mod:`its.config`).

Kept apart from the platform's Settings so the alert rules can be tuned without touching the rest;
nothing is read at import time: build :class:`AlertSettings` (the CLI does) or pass one in.
"""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from its.alerts.bottleneck import BottleneckParams
from its.alerts.incident import IncidentParams, incident_params
from its.alerts.rules import CongestionParams


class AlertSettings(BaseSettings):
    """Each field is ``ITS_ALERT_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="ITS_ALERT_", env_file=".env", extra="ignore")

    congestion_raise_below: float = Field(
        0.5, gt=0, le=1.5, description="Raise below this speed / free-flow ratio."
    )
    congestion_clear_at: float = Field(
        0.6, gt=0, le=1.5, description="Clear at or above this ratio (hysteresis)."
    )
    congestion_major_below: float = Field(
        0.25, gt=0, le=1.5, description="Severity major below this ratio (jammed), else minor."
    )
    congestion_n: int = Field(
        2, ge=1, le=48, description="Raise when N of the last M minutes are bad."
    )
    congestion_m: int = Field(3, ge=1, le=48, description="Persistence window in minutes.")
    congestion_clear_k: int = Field(
        5, ge=1, le=48, description="Consecutive good minutes needed to clear."
    )
    congestion_smooth_s: int = Field(
        120,
        ge=60,
        le=900,
        description="Each minute's speed is the harmonic mean over this rolling window.",
    )
    incident: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Incident thresholds per road class over the presets, as JSON: "
        '{"expressway": {"occdf": 0.18}}.',
    )
    bottleneck_below_kph: float = Field(
        64, gt=0, le=200, description="A bottleneck's head station is slower than this."
    )
    bottleneck_diff_kph: float = Field(
        32, gt=0, le=200, description="... and its next station downstream this much faster."
    )
    bottleneck_max_gap_km: float = Field(
        5, gt=0, le=50, description="... and less than this far downstream."
    )
    bottleneck_n: int = Field(5, ge=1, le=48, description="Active when N of the last M hold.")
    bottleneck_m: int = Field(7, ge=1, le=48, description="Window in 5-min intervals.")
    bottleneck_delay_kph: float = Field(
        60, gt=0, le=200, description="Delay is counted against this speed (GUIDE section 5)."
    )
    offline_periods: int = Field(
        3, ge=1, le=100, description="A station silent this many periods is offline."
    )
    default_period_s: int = Field(30, ge=1, le=3600)
    grace_s: int = Field(
        30, ge=0, le=3600, description="A bucket is complete this long (data time) after its end."
    )
    backfill_s: int = Field(
        3600, ge=0, le=7 * 86400, description="On a fresh start, evaluate this much history."
    )
    feed_stall_s: float = Field(
        120,
        ge=1,
        le=86400,
        description="Raise feed-stalled when nothing at all arrives for this long (wall time).",
    )
    detector_window_s: int = Field(
        900,
        ge=300,
        le=3600,
        description="Detector diagnostics look at this much data time per station.",
    )
    max_buckets_per_step: int = Field(
        24, ge=1, le=10_000, description="Catch-up work per transaction after a long pause."
    )

    @model_validator(mode="after")
    def _consistent(self) -> AlertSettings:
        self.congestion()  # raises ValueError with the reason
        self.incidents()
        self.bottleneck()
        return self

    def congestion(self) -> CongestionParams:
        return CongestionParams(
            raise_below=self.congestion_raise_below,
            clear_at=self.congestion_clear_at,
            major_below=self.congestion_major_below,
            n=self.congestion_n,
            m=self.congestion_m,
            clear_k=self.congestion_clear_k,
        )

    def incidents(self) -> dict[str, IncidentParams]:
        """Incident thresholds per road class: the presets with ``ITS_ALERT_INCIDENT`` applied."""
        return incident_params(self.incident)

    def bottleneck(self) -> BottleneckParams:
        return BottleneckParams(
            below_kph=self.bottleneck_below_kph,
            diff_kph=self.bottleneck_diff_kph,
            max_gap_km=self.bottleneck_max_gap_km,
            n=self.bottleneck_n,
            m=self.bottleneck_m,
            delay_kph=self.bottleneck_delay_kph,
        )
