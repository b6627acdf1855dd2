"""Who may use the MQTT broker, and which topics each identity may publish or read.

One identity per sender, so that one compromised or misbehaving device can speak only for itself:

====================  ====================================  ================================
user                  may publish                           may read
====================  ====================================  ================================
``station.<id>``      ``{p}/stations/<id>/obs`` and         nothing
                      ``.../state`` (also as Last Will)
``gateway.<id>``      ``{p}/gateways/<id>/obs``             nothing
``its-ingest``        nothing                               station obs/state and gateway
                                                            obs, also as ``$share/<group>/``
``its-alerts``        ``{p}/alerts/#``                      nothing
``its-monitor``       nothing                               ``{p}/#`` and ``$SYS/#``
====================  ====================================  ================================

The road network has no gateways, so gateways come from a list the operator gives
(``its mqtt credentials --gateway ID``). The credentials file (JSON, mode 0600) holds the
generated passwords in clear, because devices and the simulator must send them; the broker only
ever gets :func:`mosquitto_password_file` (Mosquitto 2's ``$7$`` PBKDF2-SHA512 hashes, written
here so no ``mosquitto_passwd`` binary is needed) and :func:`mosquitto_acl_file`.

No MQTT client is imported here: the embedded broker (``ingest/broker.py``) and the CLI use the
same :func:`grants` so both brokers enforce one policy.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Literal

from its.contract import GatewayObsTopic, StationObsTopic, StationStateTopic, _check_id
from its.errors import ConfigError, TopicError

CREDENTIALS_VERSION = 1
PASSWORD_BYTES = 24  # secrets.token_urlsafe: 32 characters of [A-Za-z0-9_-], safe in URLs
HASH_ITERATIONS = 10_000  # Mosquitto 2 reads the count from the hash; its own default is 101
SALT_BYTES = 12  # what mosquitto_passwd uses

CREDENTIALS_FILE = "credentials.json"
PASSWORD_FILE = "passwd"
ACL_FILE = "acl"


class Role(StrEnum):
    STATION = "station"
    GATEWAY = "gateway"
    INGEST = "ingest"
    ALERTS = "alerts"
    MONITOR = "monitor"


SERVICE_USERS = {Role.INGEST: "its-ingest", Role.ALERTS: "its-alerts", Role.MONITOR: "its-monitor"}


def station_username(station_id: str) -> str:
    return f"station.{station_id}"


def gateway_username(gateway_id: str) -> str:
    return f"gateway.{gateway_id}"


@dataclass(frozen=True)
class MqttUser:
    """One broker login. ``subject`` is the station or gateway id for those roles."""

    username: str
    password: str = field(repr=False)
    role: Role
    subject: str | None = None


@dataclass(frozen=True)
class Grant:
    """One ACL line: ``access`` to a topic filter."""

    access: Literal["read", "write"]
    topic: str


def grants(user: MqttUser, prefix: str) -> list[Grant]:
    """What ``user`` may do under ``prefix``: the one policy both brokers enforce."""
    match user.role:
        case Role.STATION:
            sid = user.subject or ""
            return [
                Grant("write", str(StationObsTopic(prefix, sid))),
                Grant("write", str(StationStateTopic(prefix, sid))),
            ]
        case Role.GATEWAY:
            return [Grant("write", str(GatewayObsTopic(prefix, user.subject or "")))]
        case Role.INGEST:
            filters = [
                f"{prefix}/stations/+/obs",
                f"{prefix}/stations/+/state",
                f"{prefix}/gateways/+/obs",
            ]
            return [Grant("read", f) for f in filters] + [
                Grant("read", f"$share/+/{f}") for f in filters
            ]
        case Role.ALERTS:
            return [Grant("write", f"{prefix}/alerts/#")]
        case Role.MONITOR:
            return [Grant("read", f"{prefix}/#"), Grant("read", "$SYS/#")]
    raise ConfigError(f"unknown MQTT role {user.role!r}")


def filter_covers(granted: str, requested: str) -> bool:
    """Whether the granted topic filter covers ``requested`` (a topic, or a filter a client
    subscribes to): ``+`` covers one level (also a requested ``+``), ``#`` the rest."""
    want = requested.split("/")
    for i, level in enumerate(granted.split("/")):
        if level == "#":
            return True
        if i >= len(want) or want[i] == "#" or (level != "+" and level != want[i]):
            return False
    return len(want) == len(granted.split("/"))


@dataclass(frozen=True)
class Credentials:
    """Every broker login for one topic prefix, as kept in the credentials file."""

    prefix: str
    users: tuple[MqttUser, ...]

    def get(self, username: str) -> MqttUser | None:
        return next((u for u in self.users if u.username == username), None)

    def require(self, username: str) -> MqttUser:
        user = self.get(username)
        if user is None:
            raise ConfigError(f"the MQTT credentials file has no user {username!r}")
        return user

    def for_station(self, station_id: str) -> MqttUser:
        return self.require(station_username(station_id))

    def for_gateway(self, gateway_id: str) -> MqttUser:
        return self.require(gateway_username(gateway_id))

    def for_service(self, role: Role) -> MqttUser:
        return self.require(SERVICE_USERS[role])

    def check_prefix(self, prefix: str) -> None:
        """The ACLs name topics under one prefix: refuse to use them for another."""
        if prefix != self.prefix:
            raise ConfigError(
                f"the MQTT credentials are for topic prefix {self.prefix!r}, not {prefix!r}: "
                "re-run `its mqtt credentials` with this ITS_TOPIC_PREFIX"
            )


@dataclass
class CredentialChanges:
    """What :func:`plan_credentials` did, for the command's report."""

    added: list[str] = field(default_factory=list)
    rotated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept: int = 0


def new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


def plan_credentials(
    prefix: str,
    station_ids: Iterable[str],
    gateway_ids: Iterable[str] = (),
    *,
    existing: Credentials | None = None,
    rotate: bool = False,
    rotate_users: Iterable[str] = (),
    revoke: Iterable[str] = (),
) -> tuple[Credentials, CredentialChanges]:
    """The logins for a network: one per station and gateway plus the service users.

    Existing passwords are kept unless ``rotate`` (all) or ``rotate_users`` names them. Stations
    no longer in the network lose their login; gateways already in ``existing`` stay until
    named in ``revoke`` (the network does not list gateways, so absence means nothing).
    """
    changes = CredentialChanges()
    old = {u.username: u for u in existing.users} if existing else {}
    revoked = set(revoke)
    rotate_set = set(rotate_users)
    unknown = sorted((rotate_set | revoked) - set(old))
    if unknown:
        raise ConfigError(f"no such MQTT user(s) to rotate or revoke: {', '.join(unknown)}")
    wanted: list[tuple[str, Role, str | None]] = []
    for sid in station_ids:
        _valid_id("station", sid)
        wanted.append((station_username(sid), Role.STATION, sid))
    gateways = list(dict.fromkeys(gateway_ids))
    gateways += [u.subject for u in old.values() if u.role is Role.GATEWAY and u.subject]
    for gid in dict.fromkeys(gateways):
        _valid_id("gateway", gid)
        wanted.append((gateway_username(gid), Role.GATEWAY, gid))
    wanted += [(name, role, None) for role, name in SERVICE_USERS.items()]

    users: list[MqttUser] = []
    for username, role, subject in {w[0]: w for w in wanted}.values():
        if username in revoked:
            continue
        prior = old.get(username)
        if prior is None:
            users.append(MqttUser(username, new_password(), role, subject))
            changes.added.append(username)
        elif rotate or username in rotate_set:
            users.append(replace(prior, password=new_password()))
            changes.rotated.append(username)
        else:
            users.append(prior)
            changes.kept += 1
    names = {u.username for u in users}
    changes.removed = sorted(n for n in old if n not in names)
    return Credentials(prefix, tuple(users)), changes


def _valid_id(kind: str, value: str) -> None:
    try:
        _check_id(kind, value)
    except TopicError:
        raise ConfigError(
            f"invalid {kind} id {value!r}: 1-64 letters, digits, _ . -, starting with a letter "
            "or digit"
        ) from None


# --------------------------------------------------------------------------- the file


def load_credentials(path: Path) -> Credentials:
    """Read a credentials file written by :func:`save_credentials`; ConfigError if unusable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("version") != CREDENTIALS_VERSION:
            raise ValueError(f"version {data.get('version')!r}, expected {CREDENTIALS_VERSION}")
        users = tuple(
            MqttUser(u["username"], u["password"], Role(u["role"]), u.get("subject"))
            for u in data["users"]
        )
        return Credentials(str(data["prefix"]), users)
    except FileNotFoundError:
        raise ConfigError(
            f"MQTT credentials file {path} does not exist: create it with `its mqtt credentials`"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"MQTT credentials file {path} is not usable: {exc}") from None


def save_credentials(creds: Credentials, path: Path) -> None:
    """Write the credentials file, readable by its owner only (0600)."""
    data = {
        "version": CREDENTIALS_VERSION,
        "prefix": creds.prefix,
        "users": [
            {"username": u.username, "password": u.password, "role": str(u.role)}
            | ({"subject": u.subject} if u.subject else {})
            for u in creds.users
        ],
    }
    write_private(path, json.dumps(data, indent=1) + "\n")


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Write ``text`` atomically with ``mode`` from the start (never briefly world-readable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, mode)  # O_CREAT's mode is filtered by the umask
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- Mosquitto


def mosquitto_hash(
    password: str, *, iterations: int = HASH_ITERATIONS, salt: bytes | None = None
) -> str:
    """Mosquitto 2's ``$7$`` format: PBKDF2-HMAC-SHA512 over a 12-byte salt, base64."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def verify_mosquitto_hash(password: str, hashed: str) -> bool:
    """Whether ``password`` matches a ``$7$`` hash (constant-time comparison)."""
    try:
        _, kind, iterations, salt, digest = hashed.split("$")
        if kind != "7":
            return False
        expected = base64.b64decode(digest, validate=True)
        got = hashlib.pbkdf2_hmac(
            "sha512", password.encode(), base64.b64decode(salt, validate=True), int(iterations)
        )
    except ValueError:
        return False
    return hmac.compare_digest(got, expected)


def mosquitto_password_file(creds: Credentials) -> str:
    return "".join(f"{u.username}:{mosquitto_hash(u.password)}\n" for u in creds.users)


def mosquitto_acl_file(creds: Credentials) -> str:
    """Mosquitto's ``acl_file``: nothing for anonymous clients, then one block per user."""
    lines = [
        "# Generated by `its mqtt credentials`; edit the credentials, not this file.",
        "# Anonymous clients (where a listener allows them) may read the broker version only.",
        "topic read $SYS/broker/version",
        "",
    ]
    for user in creds.users:
        lines.append(f"user {user.username}")
        lines += [f"topic {g.access} {g.topic}" for g in grants(user, creds.prefix)]
        lines.append("")
    return "\n".join(lines)


def write_broker_files(creds: Credentials, out_dir: Path) -> dict[str, Path]:
    """Write the credentials, Mosquitto password and ACL files into ``out_dir``."""
    out_dir = Path(out_dir)
    paths = {
        "credentials": out_dir / CREDENTIALS_FILE,
        "password_file": out_dir / PASSWORD_FILE,
        "acl_file": out_dir / ACL_FILE,
    }
    save_credentials(creds, paths["credentials"])
    # hashes only, but still nobody else's business; the ACL holds no secret
    write_private(paths["password_file"], mosquitto_password_file(creds), 0o600)
    write_private(paths["acl_file"], mosquitto_acl_file(creds), 0o644)
    return paths
