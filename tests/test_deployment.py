"""docker-compose.yml is a real deployment that agrees with the settings and the CLI, and keeps
its secrets out of the file: passwords come from `.env` (listed in .env.example), the broker
takes logins over TLS only. tests/test_mqtt_security.py runs its mosquitto.conf on the real
Mosquitto."""

from __future__ import annotations

import json
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


# --------------------------------------------------------------------------- monitoring

PROMETHEUS = yaml.safe_load(COMPOSE["configs"]["prometheus_yml"]["content"])
DASHBOARD = ROOT / "ops" / "grafana" / "its-platform.json"
METRIC_NAME = re.compile(r"\bits_[a-z_]+\b")


def _code_metric_names() -> set[str]:
    """Every series the code exports, as Prometheus names them (counters gain ``_total``,
    histograms ``_bucket``/``_sum``/``_count``), read from the real metric objects."""
    from prometheus_client import CollectorRegistry

    from its.api.metrics import WebMetrics
    from its.telemetry import AlertMetrics, IngestMetrics

    registry = CollectorRegistry()
    IngestMetrics(registry), AlertMetrics(registry), WebMetrics(registry)
    names: set[str] = set()
    for family in registry.collect():
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
        }.get(family.type, ("",))
        names.update(family.name + s for s in suffixes)
    return names


def test_every_scrape_target_is_a_compose_service_serving_metrics() -> None:
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in PROMETHEUS["scrape_configs"]
    }
    hosts = {t.split(":")[0] for ts in targets.values() for t in ts}
    assert hosts == {"web", *INGEST, "alerts"}, "scrape every long-running component"
    for job, ts in targets.items():
        for target in ts:
            host, port = target.split(":")
            env = _env(PLATFORM[host])
            if host == "web":
                assert port == env["ITS_WEB_PORT"]
                continue
            assert port == env["ITS_METRICS_PORT"], f"{job}: {target}"
            assert env["ITS_METRICS_HOST"] == "0.0.0.0"  # reachable on the compose network
            assert "ports" not in PLATFORM[host], "metrics stay on the compose network"
    web_job = next(j for j in PROMETHEUS["scrape_configs"] if "web:8050" in str(j))
    key_file = web_job["authorization"]["credentials_file"]
    mounts = " ".join(SERVICES["prometheus"]["volumes"])
    assert f":{key_file}:ro" in mounts and "deploy/prometheus/" in mounts
    assert "deploy/prometheus/" in (ROOT / ".gitignore").read_text()
    assert "ITS_METRICS_PUBLIC" not in _env(PLATFORM["web"])  # the key stays required


def test_monitoring_listens_on_loopback_and_grafana_needs_a_password() -> None:
    assert SERVICES["prometheus"]["ports"] == ["127.0.0.1:9090:9090"]
    assert SERVICES["grafana"]["ports"] == ["127.0.0.1:3000:3000"]
    env = _raw_env(SERVICES["grafana"])
    assert VARIABLE.fullmatch(env["GF_SECURITY_ADMIN_PASSWORD"])
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


def test_grafana_is_provisioned_with_the_dashboard_from_the_repository() -> None:
    mounts = dict(v.split(":")[:2] for v in SERVICES["grafana"]["volumes"])
    for source in mounts:
        if source.startswith("./"):
            assert (ROOT / source).exists(), source
    provisioning = ROOT / "ops" / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (datasource,) = sources["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "its.yml").read_text())
    path = providers["providers"][0]["options"]["path"]
    assert mounts["./ops/grafana/its-platform.json"].startswith(path + "/")
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]


def test_every_dashboard_expression_names_metrics_the_code_exports() -> None:
    exported = _code_metric_names()
    panels = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    used: set[str] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(METRIC_NAME.findall(target["expr"]))
            assert names, f"{panel['title']}: {target['expr']} names no its_ metric"
            assert names <= exported, f"{panel['title']}: unknown {sorted(names - exported)}"
            used |= names
    for prefix in ("its_ingest_", "its_alerts_", "its_http_"):
        assert any(n.startswith(prefix) for n in used), f"no panel shows {prefix}*"
