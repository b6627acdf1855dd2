"""docker-compose.yml is a real deployment that agrees with the settings and the CLI, and keeps
its secrets out of the file: passwords come from `.env` (listed in .env.example), the broker
takes logins over TLS only. tests/test_mqtt_security.py runs its mosquitto.conf on the real
Mosquitto."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from typer.main import get_command
from typer.testing import CliRunner

from its.cli import app
from its.config import MqttEndpoint, Settings

ROOT = Path(__file__).parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
PLATFORM = {n: s for n, s in SERVICES.items() if s.get("image") == "its-monitor:latest"}
INGEST = {n: s for n, s in PLATFORM.items() if s["command"] == ["ingest"]}
VARIABLE = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")
MOSQUITTO_CONF = COMPOSE["configs"]["mosquitto_conf"]["content"].replace("$$", "$")


def _env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    pairs = [ln.split("=", 1) for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    return {k.strip(): v for k, v in pairs}


# what a filled-in .env would hold
DOT_ENV = {name: f"test-{name.lower().replace('_', '-')}" for name in _env_example()}


def _substitute(value: str) -> str:
    """Compose's ${VAR}, ${VAR:?message} and ${VAR:-default}, from DOT_ENV: a variable that is
    not there takes its default, and one without a default must be in ``.env.example``."""

    def value_of(m: re.Match[str]) -> str:
        name, kind, default = m.groups()
        return DOT_ENV[name] if name in DOT_ENV or kind != "-" else default

    return VARIABLE.sub(value_of, value)


def _raw_env(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {k: _substitute(v) for k, v in _raw_env(service).items()}


def _cli_envvars() -> set[str]:
    """Variables the CLI's options read (typer ``envvar=``), beside the Settings fields."""
    found: set[str] = set()

    def walk(cmd: click.Command) -> None:
        for param in cmd.params:
            envvar = getattr(param, "envvar", None)
            found.update([envvar] if isinstance(envvar, str) else envvar or [])
        for sub in getattr(cmd, "commands", {}).values():
            walk(sub)

    walk(get_command(app))
    return found


def test_platform_services_present() -> None:
    assert {"migrate", "alerts", "web", "sim"} <= set(PLATFORM)
    assert len(INGEST) >= 2
    assert {"timescaledb", "mosquitto"} <= set(SERVICES)
    assert "timescale/timescaledb" in SERVICES["timescaledb"]["image"]


@pytest.mark.parametrize("name", sorted(PLATFORM))
def test_environment_is_valid_settings(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env(PLATFORM[name])
    known = {f"ITS_{field.upper()}" for field in Settings.model_fields} | _cli_envvars()
    unknown = sorted(k for k in env if k.startswith("ITS_") and k not in known)
    assert not unknown, f"{name} sets variables neither Settings nor the CLI read: {unknown}"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)
    assert settings.database_url and settings.database_url.startswith("postgresql")
    assert settings.mqtt_url is not None


@pytest.mark.parametrize("name", sorted(PLATFORM))
def test_endpoints_name_compose_services(name: str) -> None:
    env = _env(PLATFORM[name])
    tsdb = _env(SERVICES["timescaledb"])
    db = env["ITS_DATABASE_URL"]
    user, password, dbname = tsdb["POSTGRES_USER"], tsdb["POSTGRES_PASSWORD"], tsdb["POSTGRES_DB"]
    assert db == f"postgresql://{user}:{password}@timescaledb:5432/{dbname}"
    mqtt = MqttEndpoint.parse(env["ITS_MQTT_URL"])
    assert (mqtt.host, mqtt.port, mqtt.tls) == ("mosquitto", 8883, True)
    assert mqtt.username is None and mqtt.password is None  # logins are separate settings
    assert "8883:8883" in SERVICES["mosquitto"]["ports"]


def test_every_variable_compose_needs_is_in_env_example() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    needed = {m.group(1) for m in VARIABLE.finditer(text) if m.group(2) != "-"}  # no default
    assert needed, "compose takes no secret from .env"
    assert needed <= set(DOT_ENV), f"missing from .env.example: {sorted(needed - set(DOT_ENV))}"
    assert all(v == "" for v in _env_example().values()), ".env.example must hold no value"


def test_no_secret_is_written_in_compose() -> None:
    for name, service in SERVICES.items():
        for key, value in _raw_env(service).items():
            if re.search(r"PASSWORD|SECRET|TOKEN|KEY", key) and not key.endswith("_FILE"):
                assert VARIABLE.fullmatch(value), f"{name}: {key} is a literal, not from .env"
            for url in re.findall(r"\w+://[^\s]+", value):
                userinfo = url.split("://", 1)[1].split("@")[0] if "@" in url else ""
                if ":" in userinfo:
                    secret = userinfo.split(":", 1)[1]
                    assert VARIABLE.fullmatch(secret), f"{name}: {key} has a literal password"


def test_broker_wants_a_login_and_tls_from_outside() -> None:
    listeners = re.split(r"^listener ", MOSQUITTO_CONF, flags=re.M)
    assert "per_listener_settings true" in listeners[0]
    by_port = {block.split()[0]: block for block in listeners[1:]}
    tls = by_port["8883"]
    for line in (
        "allow_anonymous false",
        "password_file /mosquitto/config/passwd",
        "acl_file /mosquitto/config/acl",
        "certfile /mosquitto/certs/server.crt",
        "keyfile /mosquitto/certs/server.key",
    ):
        assert re.search(rf"^{re.escape(line)}$", tls, flags=re.M), f"8883 lacks {line!r}"
    # the only other listener is the health check's, inside the container
    others = {port: block for port, block in by_port.items() if port != "8883"}
    assert all(block.split()[1] == "127.0.0.1" for block in others.values())
    assert SERVICES["mosquitto"]["ports"] == ["8883:8883"]
    health = " ".join(SERVICES["mosquitto"]["healthcheck"]["test"])
    assert all(f"-p {port}" in health for port in others)
    mounts = " ".join(SERVICES["mosquitto"]["volumes"])
    for target in ("passwd", "acl", "server.crt", "server.key"):
        assert f"{target}:ro" in mounts
    # the settings Mosquitto needs for ack-after-commit ingest stay (docs/ingest.md)
    for line in ("max_queued_messages 100000", "max_inflight_messages 5000"):
        assert line in MOSQUITTO_CONF


def test_each_component_logs_in_as_itself() -> None:
    users = {name: _env(s).get("ITS_MQTT_USERNAME") for name, s in PLATFORM.items()}
    assert {users[n] for n in INGEST} == {"its-ingest"}
    assert users["alerts"] == "its-alerts"
    assert _env(PLATFORM["sim"])["ITS_SIM_CREDENTIALS_FILE"]  # every station its own login
    for name in [*INGEST, "alerts", "sim"]:
        assert _env(PLATFORM[name])["ITS_MQTT_CA_FILE"], f"{name} does not check the broker"


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


def test_each_ingest_worker_has_its_own_identity_on_one_shared_subscription() -> None:
    envs = {name: _env(s) for name, s in INGEST.items()}
    assert all(s.get("deploy", {}).get("replicas", 1) == 1 for s in INGEST.values()), (
        "replicas of one service share an identity: give each worker a service of its own"
    )
    ids = [e.get("ITS_INGEST_WORKER_ID") for e in envs.values()]
    assert all(ids) and len(set(ids)) == len(ids), ids
    groups = {e.get("ITS_INGEST_SHARE_GROUP") for e in envs.values()}
    assert len(groups) == 1 and None not in groups


def test_services_wait_for_migrations() -> None:
    for name in [*INGEST, "alerts", "web"]:
        dep = PLATFORM[name]["depends_on"]["migrate"]["condition"]
        assert dep == "service_completed_successfully"
