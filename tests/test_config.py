"""Settings: ITS_ environment variables, defaults and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from its.config import MqttEndpoint, Settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("ITS_DATABASE_URL", "ITS_MQTT_URL", "ITS_DATA_DIR", "ITS_TOPIC_PREFIX"):
        monkeypatch.delenv(key, raising=False)
    s = Settings(_env_file=None)
    assert s.topic_prefix == "its/v1"
    assert s.mqtt_endpoint is None  # the embedded broker
    assert s.resolved_database_url == f"sqlite:///{Path('var/its.db').resolve()}"


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITS_MQTT_URL", "mqtt://user:pw@broker.example:1884")
    monkeypatch.setenv("ITS_TOPIC_PREFIX", "/city/its/v1/")
    monkeypatch.setenv("ITS_WEB_PORT", "9000")
    s = Settings(_env_file=None)
    ep = s.mqtt_endpoint
    assert (ep.host, ep.port, ep.username, ep.password) == ("broker.example", 1884, "user", "pw")
    assert s.topic_prefix == "city/its/v1"
    assert s.web_port == 9000


def test_blank_url_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITS_MQTT_URL", " ")
    assert Settings(_env_file=None).mqtt_endpoint is None


@pytest.mark.parametrize(
    ("key", "value"),
    [("ITS_WEB_PORT", "70000"), ("ITS_TOPIC_PREFIX", "its/#"), ("ITS_INGEST_BATCH_SIZE", "0")],
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, key: str, value: str) -> None:
    monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=key.removeprefix("ITS_").lower()):
        Settings(_env_file=None)


def test_mqtt_url_scheme() -> None:
    assert MqttEndpoint.parse("localhost").port == 1883
    with pytest.raises(ValueError, match="scheme"):
        MqttEndpoint.parse("http://x:1")
