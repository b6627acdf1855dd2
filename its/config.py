"""Settings read from the environment (prefix ``ITS_``) and an optional ``.env`` file.

Nothing reads the environment at import time: call :func:`get_settings` (cached) or build a
:class:`Settings` yourself, as the tests do, and pass it down.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from its.errors import ConfigError

WORKER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


class Settings(BaseSettings):
    """Every knob of the platform; each field is ``ITS_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="ITS_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("./var"), description="Where the embedded store and logs live.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; unset means an SQLite file in ITS_DATA_DIR."
    )
    mqtt_url: str | None = Field(
        None,
        description="mqtt://[user:pass@]host:1883 or mqtts://... (TLS, port 8883); unset "
        "means the embedded broker.",
    )
    mqtt_username: str | None = Field(
        None, description="MQTT user name (overrides one in ITS_MQTT_URL)."
    )
    mqtt_password: SecretStr | None = Field(
        None, description="MQTT password (overrides one in ITS_MQTT_URL)."
    )
    mqtt_password_file: Path | None = Field(
        None,
        description="File holding the MQTT password (e.g. a docker secret); read at start.",
    )
    mqtt_ca_file: Path | None = Field(
        None,
        description="PEM CA bundle that signs the broker's certificate (mqtts); unset means "
        "the system's trusted CAs.",
    )
    sim_credentials_file: Path | None = Field(
        None,
        description="Credentials file from `its mqtt credentials`: each simulated station "
        "then logs in as itself.",
    )
    embedded_mqtt_credentials: Path | None = Field(
        None,
        description="Credentials file from `its mqtt credentials`: the embedded broker then "
        "refuses anonymous clients and enforces the per-user topic ACLs.",
    )
    topic_prefix: str = Field("its/v1", description="Prefix of every MQTT topic.")
    web_host: str = Field("127.0.0.1", description="Interface the web process binds.")
    web_port: int = Field(8050, ge=1, le=65535, description="Port of the API and dashboard.")
    http_max_body_bytes: int = Field(
        1_048_576,
        ge=1024,
        le=1_073_741_824,
        description="Largest HTTP request body the web process reads; larger ones get a 413.",
    )
    network_file: Path | None = Field(
        None, description="GeoJSON road network to load; unset means the bundled Jakarta sample."
    )
    export_max_concurrent: int = Field(
        4,
        ge=1,
        le=64,
        description="Exports (GET /api/v1/export) one web process streams at once; more get a "
        "429. Each holds a database connection while it streams.",
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
    ingest_worker_id: str | None = Field(
        None,
        pattern=WORKER_ID_RE.pattern,
        description="This ingest worker's name, unique per broker: its MQTT client id is "
        "its-ingest-<worker id>, so a restarted worker resumes its own persistent session. "
        "Required with ITS_INGEST_SHARE_GROUP (docs/ingest.md, Worker identities).",
    )
    mqtt_max_payload_bytes: int = Field(
        256 * 1024,
        ge=1,
        description="Largest MQTT payload ingest reads; a larger one is dead-lettered.",
    )
    dead_letter_max_bytes: int = Field(
        4096, ge=0, description="How much of a dead letter's payload is kept (the first bytes)."
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
    # retention (docs/storage.md, Retention)
    retention_raw_days: int = Field(
        90,
        ge=0,
        le=100_000,
        description="Raw readings older than this many days are deleted once rolled up (the "
        "roll-ups are kept for ever); 0 keeps raw readings for ever. Ingest refuses readings "
        "older than this. On TimescaleDB: an add_retention_policy on readings.",
    )
    retention_dead_letter_days: int = Field(
        30, ge=0, le=100_000, description="Dead letters older than this are deleted; 0 keeps all."
    )
    retention_interval_s: float = Field(
        600.0,
        ge=0,
        le=86_400,
        description="How often `its up` and `its ingest` run the retention clean-up; 0 runs none "
        "in that process (run `its db retention` or another process).",
    )
    retention_batch_rows: int = Field(
        5000,
        ge=100,
        le=1_000_000,
        description="Rows the clean-up deletes per transaction (short, so ingest never waits long).",
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

    # observability (docs/observability.md)
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Port where `its ingest` and `its alerts` serve Prometheus /metrics "
        "(unset: none). The web process serves its own at /metrics on ITS_WEB_PORT.",
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Interface the ITS_METRICS_PORT server binds."
    )
    metrics_public: bool = Field(
        False,
        description="Serve the web process's /metrics to anyone; off: it needs an API key "
        "(X-API-Key or Authorization: Bearer).",
    )

    # identity (docs/security.md)
    auth_anonymous_read: bool = Field(
        False,
        description="Let API reads (GET) through without an identity; writes always need one.",
    )
    session_lifetime_s: int = Field(
        12 * 3600,
        ge=60,
        le=30 * 86400,
        description="A dashboard session ends this long after sign-in.",
    )
    cookie_secure: bool = Field(
        False,
        description="Mark session cookies Secure (HTTPS only); set it behind a TLS proxy.",
    )
    signin_link_lifetime_s: int = Field(
        3600, ge=60, le=7 * 86400, description="A one-time sign-in link expires after this long."
    )
    signin_max_failures: int = Field(
        5,
        ge=1,
        le=1000,
        description="Failed sign-ins per username within the window before it is refused.",
    )
    signin_failure_window_s: int = Field(
        900, ge=1, le=86400, description="Window of the failed sign-in throttle (and the lock-out)."
    )
    password_time_cost: int = Field(3, ge=1, le=20, description="argon2id passes (time cost).")
    password_memory_kib: int = Field(
        65536, ge=8, le=4 * 1024 * 1024, description="argon2id memory cost in KiB."
    )

    @field_validator(
        "mqtt_url",
        "database_url",
        "ingest_worker_id",
        "mqtt_username",
        "mqtt_password",
        "mqtt_password_file",
        "mqtt_ca_file",
        "sim_credentials_file",
        "embedded_mqtt_credentials",
        "metrics_port",
        mode="before",
    )
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
        """The broker from ``ITS_MQTT_URL``, with the separate credential and CA settings
        applied (they win over credentials in the URL, so a password need not sit in a URL)."""
        if not self.mqtt_url:
            return None
        endpoint = MqttEndpoint.parse(self.mqtt_url)
        password = endpoint.password
        if self.mqtt_password_file is not None:
            try:
                password = self.mqtt_password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"cannot read ITS_MQTT_PASSWORD_FILE {self.mqtt_password_file}: {exc}"
                ) from None
        if self.mqtt_password is not None:
            password = self.mqtt_password.get_secret_value()
        return replace(
            endpoint,
            username=self.mqtt_username or endpoint.username,
            password=password,
            ca_file=self.mqtt_ca_file,
        )


@dataclass(frozen=True)
class MqttEndpoint:
    """Where the broker is, whether to speak TLS, and who to log in as.

    ``mqtts://`` (or ``ssl://``) means TLS, default port 8883, the broker's certificate checked
    against ``ca_file`` (or the system's CAs) and its host name. The password never shows in
    ``repr`` or :attr:`url`.
    """

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: Path | None = None

    @classmethod
    def parse(cls, url: str) -> MqttEndpoint:
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "tcp", "mqtts", "ssl"):
            raise ValueError(
                f"unsupported MQTT URL scheme {parts.scheme!r} (use mqtt:// or mqtts://)"
            )
        if not parts.hostname:
            raise ValueError(f"MQTT URL {url!r} has no host")
        tls = parts.scheme in ("mqtts", "ssl")
        return cls(
            parts.hostname,
            parts.port or (8883 if tls else 1883),
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password is not None else None,
            tls,
        )

    def login(self, username: str | None, password: str | None) -> MqttEndpoint:
        """The same broker, as another user (a station, ingest, the alerts publisher)."""
        return replace(self, username=username, password=password)

    @property
    def url(self) -> str:
        """The broker's URL without credentials (safe to log and print)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
