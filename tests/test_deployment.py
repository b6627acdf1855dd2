"""docker-compose.yml is a real deployment that agrees with the settings and the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from its.cli import app
from its.config import MqttEndpoint, Settings

COMPOSE = yaml.safe_load((Path(__file__).parents[1] / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
PLATFORM = {n: s for n, s in SERVICES.items() if s.get("image") == "its-monitor:latest"}


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def test_platform_services_present() -> None:
    assert {"migrate", "ingest-1", "ingest-2", "alerts", "web", "sim"} <= set(PLATFORM)
    assert {"timescaledb", "mosquitto"} <= set(SERVICES)
    assert "timescale/timescaledb" in SERVICES["timescaledb"]["image"]


@pytest.mark.parametrize("name", sorted(PLATFORM))
def test_environment_is_valid_settings(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env(PLATFORM[name])
    known = {f"ITS_{field.upper()}" for field in Settings.model_fields}
    unknown = sorted(k for k in env if k.startswith("ITS_") and k not in known)
    assert not unknown, f"{name} sets variables Settings does not read: {unknown}"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)
    assert settings.database_url and settings.database_url.startswith("postgresql")
    assert settings.mqtt_endpoint is not None


@pytest.mark.parametrize("name", sorted(PLATFORM))
def test_endpoints_name_compose_services(name: str) -> None:
    env = _env(PLATFORM[name])
    tsdb = _env(SERVICES["timescaledb"])
    db = env["ITS_DATABASE_URL"]
    user, password, dbname = tsdb["POSTGRES_USER"], tsdb["POSTGRES_PASSWORD"], tsdb["POSTGRES_DB"]
    assert db == f"postgresql://{user}:{password}@timescaledb:5432/{dbname}"
    mqtt = MqttEndpoint.parse(env["ITS_MQTT_URL"])
    assert (mqtt.host, mqtt.port) == ("mosquitto", 1883)


@pytest.mark.parametrize("name", sorted(PLATFORM))
def test_commands_exist(name: str) -> None:
    result = CliRunner().invoke(app, [*PLATFORM[name]["command"], "--help"])
    assert result.exit_code == 0, result.output


def test_web_port_is_published_and_bound_to_all_interfaces() -> None:
    web = PLATFORM["web"]
    env = _env(web)
    assert env["ITS_WEB_HOST"] == "0.0.0.0"
    assert f"{env['ITS_WEB_PORT']}:{env['ITS_WEB_PORT']}" in web["ports"]
    assert env["ITS_WEB_PORT"] in " ".join(web["healthcheck"]["test"])


def test_scaled_ingest_uses_a_shared_subscription_with_a_name_per_worker() -> None:
    workers = [_env(s) for s in PLATFORM.values() if s["command"] == ["ingest"]]
    assert len(workers) >= 2
    assert len({w["ITS_INGEST_SHARE_GROUP"] for w in workers}) == 1
    assert len({w["ITS_INGEST_WORKER_ID"] for w in workers}) == len(workers)
    assert all(s.get("deploy", {}).get("replicas", 1) == 1 for s in PLATFORM.values())


def test_services_wait_for_migrations() -> None:
    for name in ("ingest-1", "ingest-2", "alerts", "web"):
        dep = PLATFORM[name]["depends_on"]["migrate"]["condition"]
        assert dep == "service_completed_successfully"
