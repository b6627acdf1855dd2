"""Settings read from the environment (prefix ``ITS_``) and an optional ``.env`` file.

Nothing reads the environment at import time: call :func:`get_settings` (cached) or build a
:class:`Settings` yourself, as the tests do, and pass it down.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the platform; each field is ``ITS_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="ITS_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("./var"), description="Where the embedded store and logs live.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; unset means an SQLite file in ITS_DATA_DIR."
    )
    mqtt_url: str | None = Field(
        None, description="mqtt://[user:pass@]host:port; unset means the embedded broker."
    )
    topic_prefix: str = Field("its/v1", description="Prefix of every MQTT topic.")
    web_host: str = Field("127.0.0.1", description="Interface the web process binds.")
    web_port: int = Field(8050, ge=1, le=65535, description="Port of the API and dashboard.")
    network_file: Path | None = Field(
        None, description="GeoJSON road network to load; unset means the bundled Jakarta sample."
    )
    ingest_batch_size: int = Field(1000, ge=1, le=100_000)
    ingest_batch_seconds: float = Field(0.5, gt=0, le=60)
    ingest_idle_flush_s: float = Field(
        0.02,
        ge=0,
        le=60,
        description="Write the batch once no message arrived for this long (0: only by size "
        "and time). Acks follow the commit, and brokers stop sending until they arrive.",
    )
    ingest_share_group: str | None = Field(
        None, description="MQTT shared-subscription group, e.g. its-ingest, for several workers."
    )
    ingest_max_future_s: int = Field(
        300, ge=0, description="Readings stamped further than this in the future are rejected."
    )
    rollup_interval_s: float = Field(
        2.0,
        ge=0,
        le=3600,
        description="How often the roll-up worker inside `its up` and `its ingest` looks for "
        "dirty buckets; 0 runs no worker in that process (run `its db rollup` or another one).",
    )
    embedded_mqtt_port: int = Field(1883, ge=0, le=65535, description="0 picks a free port.")
    map_style: str = Field(
        "dark-bg",
        description="Map style; dark-bg and white-bg need no internet (docs/dashboard.md).",
    )
    map_tiles_url: str | None = Field(
        None, description="Optional XYZ raster tile URL template for an online base map."
    )
    refresh_seconds: float = Field(5.0, gt=0, description="Dashboard refresh interval.")
    stale_after_s: int = Field(
        180, ge=1, description="Live state older than this (in data time) is marked stale."
    )

    @field_validator("mqtt_url", "database_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("topic_prefix")
    @classmethod
    def _clean_prefix(cls, value: str) -> str:
        value = value.strip("/")
        if not value or any(c in value for c in "+#"):
            raise ValueError("topic prefix must be non-empty and contain no MQTT wildcards")
        return value

    @property
    def resolved_database_url(self) -> str:
        """The URL to connect to: the configured one, or the embedded SQLite file."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'its.db').resolve()}"

    @property
    def mqtt_endpoint(self) -> MqttEndpoint | None:
        return MqttEndpoint.parse(self.mqtt_url) if self.mqtt_url else None


class MqttEndpoint:
    """Host, port and credentials parsed from an ``mqtt://`` URL."""

    def __init__(
        self, host: str, port: int = 1883, username: str | None = None, password: str | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.password = password

    @classmethod
    def parse(cls, url: str) -> MqttEndpoint:
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "tcp"):
            raise ValueError(f"unsupported MQTT URL scheme {parts.scheme!r} (use mqtt://)")
        if not parts.hostname:
            raise ValueError(f"MQTT URL {url!r} has no host")
        return cls(parts.hostname, parts.port or 1883, parts.username, parts.password)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"MqttEndpoint({self.url})"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
