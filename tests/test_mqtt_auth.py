"""`its mqtt credentials` and `its mqtt self-signed`: who gets a login, what each may do, and that
re-running keeps passwords. tests/test_mqtt_security.py proves the files on the real Mosquitto."""

from __future__ import annotations

import json
import shutil
import ssl
import stat
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from its.cli import app
from its.errors import ConfigError
from its.mqtt_auth import (
    Credentials,
    Role,
    filter_covers,
    grants,
    load_credentials,
    mosquitto_acl_file,
    mosquitto_hash,
    plan_credentials,
    save_credentials,
    verify_mosquitto_hash,
)
from its.network import Network

PREFIX = "its/v1"


def _passwords(creds: Credentials) -> dict[str, str]:
    return {u.username: u.password for u in creds.users}


def test_one_login_per_station_and_gateway_plus_the_services(network: Network) -> None:
    ids = [s.station_id for s in network.stations]
    creds, changes = plan_credentials(PREFIX, ids, ["gw-7"])
    names = {u.username for u in creds.users}
    assert names == {f"station.{i}" for i in ids} | {
        "gateway.gw-7",
        "its-ingest",
        "its-alerts",
        "its-monitor",
    }
    assert len(changes.added) == len(ids) + 4
    passwords = list(_passwords(creds).values())
    assert len(set(passwords)) == len(passwords) and min(map(len, passwords)) >= 32


def test_rerun_keeps_passwords_adds_new_stations_and_drops_removed_ones() -> None:
    first, _ = plan_credentials(PREFIX, ["S1", "S2"], ["gw-1"])
    second, changes = plan_credentials(PREFIX, ["S2", "S3"], existing=first)
    old, new = _passwords(first), _passwords(second)
    assert new["station.S2"] == old["station.S2"] and new["its-ingest"] == old["its-ingest"]
    assert new["gateway.gw-1"] == old["gateway.gw-1"]  # gateways stay until revoked
    assert "station.S3" in new and "station.S1" not in new
    assert (changes.added, changes.removed) == (["station.S3"], ["station.S1"])

    same, changes = plan_credentials(PREFIX, ["S2", "S3"], existing=second)
    assert same == second and (changes.added, changes.rotated, changes.removed) == ([], [], [])
    rotated, changes = plan_credentials(
        PREFIX, ["S2", "S3"], existing=second, rotate_users=["station.S2"]
    )
    assert changes.rotated == ["station.S2"]
    assert _passwords(rotated)["station.S2"] != new["station.S2"]
    assert _passwords(rotated)["station.S3"] == new["station.S3"]
    everything, changes = plan_credentials(PREFIX, ["S2", "S3"], existing=second, rotate=True)
    assert not set(_passwords(everything).values()) & set(new.values())
    revoked, changes = plan_credentials(PREFIX, ["S2"], existing=second, revoke=["gateway.gw-1"])
    assert "gateway.gw-1" not in _passwords(revoked) and "gateway.gw-1" in changes.removed


def test_bad_requests_are_clear_errors() -> None:
    creds, _ = plan_credentials(PREFIX, ["S1"])
    with pytest.raises(ConfigError, match="no such MQTT user"):
        plan_credentials(PREFIX, ["S1"], existing=creds, rotate_users=["station.nobody"])
    with pytest.raises(ConfigError, match="invalid gateway id"):
        plan_credentials(PREFIX, ["S1"], ["gw/+"])
    with pytest.raises(ConfigError, match="its/v1"):
        creds.check_prefix("other/v1")


def test_each_role_gets_only_its_own_topics() -> None:
    creds, _ = plan_credentials(PREFIX, ["S1"], ["G1"])
    station = creds.for_station("S1")
    assert [(g.access, g.topic) for g in grants(station, PREFIX)] == [
        ("write", "its/v1/stations/S1/obs"),
        ("write", "its/v1/stations/S1/state"),
    ]
    assert [g.topic for g in grants(creds.for_gateway("G1"), PREFIX)] == ["its/v1/gateways/G1/obs"]
    ingest = grants(creds.for_service(Role.INGEST), PREFIX)
    assert {g.access for g in ingest} == {"read"}
    assert "$share/+/its/v1/stations/+/obs" in {g.topic for g in ingest}
    assert [(g.access, g.topic) for g in grants(creds.for_service(Role.ALERTS), PREFIX)] == [
        ("write", "its/v1/alerts/#")
    ]
    acl = mosquitto_acl_file(creds)
    block = acl.split("user station.S1\n")[1].split("\n\n")[0]
    assert block.splitlines() == [
        "topic write its/v1/stations/S1/obs",
        "topic write its/v1/stations/S1/state",
    ]


@pytest.mark.parametrize(
    ("granted", "requested", "covered"),
    [
        ("a/s/S1/obs", "a/s/S1/obs", True),
        ("a/s/S1/obs", "a/s/S2/obs", False),
        ("a/s/S1/obs", "a/s/S1/obs/x", False),
        ("a/s/+/obs", "a/s/S9/obs", True),
        ("a/s/+/obs", "a/s/+/obs", True),
        ("a/s/+/obs", "a/s/#", False),
        ("a/#", "a/alerts/42", True),
        ("a/#", "a", True),
        ("a/#", "b/x", False),
        ("$share/+/a/+/obs", "$share/its-ingest/a/S1/obs", True),
    ],
)
def test_filter_covers(granted: str, requested: str, covered: bool) -> None:
    assert filter_covers(granted, requested) is covered


def test_hashes_match_mosquittos_own_format(tmp_path: Path) -> None:
    assert verify_mosquitto_hash("pw", mosquitto_hash("pw"))
    assert not verify_mosquitto_hash("pw2", mosquitto_hash("pw"))
    assert not verify_mosquitto_hash("pw", "$6$not$ours")
    tool = shutil.which("mosquitto_passwd")
    assert tool, "mosquitto_passwd (Debian's mosquitto package) is the reference here"
    subprocess.run([tool, "-c", "-b", str(tmp_path / "pw"), "alice", "s3cret"], check=True)
    reference = (tmp_path / "pw").read_text().strip().split(":", 1)[1]
    assert reference.startswith("$7$")
    assert verify_mosquitto_hash("s3cret", reference)
    assert not verify_mosquitto_hash("S3cret", reference)


def test_credentials_file_is_private_and_round_trips(tmp_path: Path) -> None:
    creds, _ = plan_credentials(PREFIX, ["S1"], ["G1"])
    path = tmp_path / "c.json"
    save_credentials(creds, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_credentials(path) == creds
    path.write_text(json.dumps({"version": 1, "prefix": PREFIX, "users": [{"username": "x"}]}))
    with pytest.raises(ConfigError, match="not usable"):
        load_credentials(path)
    with pytest.raises(ConfigError, match="its mqtt credentials"):
        load_credentials(tmp_path / "missing.json")


def test_cli_writes_mosquitto_files_and_env_and_keeps_passwords(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from its.config import get_settings

    monkeypatch.setenv("ITS_TOPIC_PREFIX", "city/v1")
    monkeypatch.delenv("ITS_NETWORK_FILE", raising=False)
    get_settings.cache_clear()
    out, env = tmp_path / "mqtt", tmp_path / ".env"
    env.write_text("ITS_DB_PASSWORD=keep-me\n")
    args = ["mqtt", "credentials", "--out", str(out), "--gateway", "gw-1", "--env-file", str(env)]
    try:
        first = CliRunner().invoke(app, args)
        assert first.exit_code == 0, first.output
        creds = load_credentials(out / "credentials.json")
        again = CliRunner().invoke(app, ["mqtt", "credentials", "--out", str(out)])
        assert again.exit_code == 0, again.output
        assert "0 added, 0 rotated, 0 removed, 100 kept" in again.output
        bad = CliRunner().invoke(app, [*args[:4], "--rotate-user", "nobody"])
        assert bad.exit_code == 2 and "nobody" in bad.output
    finally:
        get_settings.cache_clear()
    assert load_credentials(out / "credentials.json") == creds
    assert creds.prefix == "city/v1" and len(creds.users) == 96 + 1 + 3
    lines = dict(ln.split("=", 1) for ln in env.read_text().splitlines())
    assert lines == {
        "ITS_DB_PASSWORD": "keep-me",
        "ITS_MQTT_INGEST_PASSWORD": creds.require("its-ingest").password,
        "ITS_MQTT_ALERTS_PASSWORD": creds.require("its-alerts").password,
    }
    hashes = dict(ln.split(":", 1) for ln in (out / "passwd").read_text().splitlines())
    assert set(hashes) == {u.username for u in creds.users}
    assert all(verify_mosquitto_hash(u.password, hashes[u.username]) for u in creds.users)
    assert stat.S_IMODE((out / "passwd").stat().st_mode) == 0o600


def test_self_signed_pair_verifies_against_its_ca(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["mqtt", "self-signed", "--out", str(tmp_path), "--host", "localhost", "--host", "::1"]
    )
    assert result.exit_code == 0, result.output
    for key in ("ca.key", "server.key"):
        assert stat.S_IMODE((tmp_path / key).stat().st_mode) == 0o600
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    client.verify_flags |= ssl.VERIFY_X509_STRICT  # what Python 3.13 checks by default
    # a TLS handshake in memory: the client checks the chain and the host name
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    tls_client = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    tls_server = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side, outgoing, incoming in ((tls_client, c_out, s_in), (tls_server, s_out, c_in)):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
            incoming.write(outgoing.read())
    tls_client.do_handshake()
    assert tls_client.getpeercert()["subject"][-1] == (("commonName", "localhost"),)


def test_its_up_refuses_credentials_for_another_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ingest.broker import free_port
    from its.config import get_settings
    from its.mqtt_auth import write_broker_files

    creds, _ = plan_credentials("other/v1", ["JKT-SDR-N-001"])
    write_broker_files(creds, tmp_path / "mqtt")
    for key in ("ITS_MQTT_URL", "ITS_DATABASE_URL", "ITS_TOPIC_PREFIX", "ITS_NETWORK_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("ITS_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("ITS_WEB_PORT", str(free_port()))
    monkeypatch.setenv("ITS_EMBEDDED_MQTT_CREDENTIALS", str(tmp_path / "mqtt/credentials.json"))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["up", "--no-sim"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2, result.output
    flat = " ".join(result.output.replace("│", " ").split())  # without rich's box
    assert "for topic prefix 'other/v1', not 'its/v1'" in flat
