"""Shared fixtures: the real PostgreSQL, Mosquitto, the embedded broker and SQLite.

Each test run creates its own PostgreSQL database (dropped at the end) and each test its own MQTT
topic prefix, so tests never depend on leftovers or on each other. A missing service is an error,
not a skip: ``make test`` installs and starts them on Debian.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url

from its.config import MqttEndpoint, Settings
from its.db import migrate, schema
from its.db.engine import make_engine
from its.network import Network, load_network

PG_ADMIN_URL = os.environ.get(
    "ITS_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MQTT_URL = os.environ.get("ITS_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")


def wait_for(
    condition: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll until ``condition()`` is truthy and return it; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what or condition}; last seen: {last!r}")


@pytest.fixture(scope="session")
def network() -> Network:
    return load_network()


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh database on the test server for this run, dropped afterwards."""
    admin = make_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"its_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is needed (run `make test`): {exc}")
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def pg_engine_session(pg_url: str, network: Network) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    migrate.upgrade_and_seed(engine, network)
    yield engine
    engine.dispose()


def clear_tables(engine: Engine) -> None:
    """Empty every table that tests write, keeping the road network."""
    with engine.begin() as conn:
        for table in reversed(schema.metadata.sorted_tables):
            if table.name not in ("corridors", "segments", "stations"):
                conn.execute(table.delete())


@pytest.fixture
def pg_engine(pg_engine_session: Engine) -> Engine:
    """The run's PostgreSQL database, migrated, with the sample network and no readings."""
    clear_tables(pg_engine_session)
    return pg_engine_session


@pytest.fixture
def sqlite_engine(tmp_path: Path, network: Network) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'its.db'}")
    migrate.upgrade_and_seed(engine, network)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest) -> Engine:
    """Each backend in turn: tests using it prove the backends give the same answers."""
    name = "sqlite_engine" if request.param == "sqlite" else "pg_engine"
    return request.getfixturevalue(name)


# --------------------------------------------------------------------------- MQTT


@pytest.fixture
def topic_prefix() -> str:
    return f"test/{uuid.uuid4().hex[:12]}/its/v1"


@pytest.fixture(scope="session")
def mosquitto() -> MqttEndpoint:
    ep = MqttEndpoint.parse(MQTT_URL)
    try:
        socket.create_connection((ep.host, ep.port), timeout=3).close()
    except OSError as exc:
        pytest.fail(f"Mosquitto at {MQTT_URL} is needed (run `make test`): {exc}")
    return ep


@pytest.fixture(scope="session")
def embedded_broker() -> Iterator[MqttEndpoint]:
    from ingest.broker import EmbeddedBroker

    broker = EmbeddedBroker(port=0)
    yield broker.start()
    broker.stop()


# argon2id at the smallest cost it accepts: the same code path as production, a fraction of the
# time (the default cost is the production setting, tested in test_auth.py).
CHEAP_PASSWORDS = {"password_time_cost": 1, "password_memory_kib": 64}


@pytest.fixture
def settings(tmp_path: Path, topic_prefix: str) -> Settings:
    """Settings isolated from the environment: own data dir and topic prefix."""
    return Settings(_env_file=None, data_dir=tmp_path, topic_prefix=topic_prefix, **CHEAP_PASSWORDS)


# --------------------------------------------------------------------------- identity


def add_key(engine: Engine, scope: str = "operate", *, name: str = "tests",
            owner: str | None = None) -> str:  # fmt: skip
    """An API key in ``engine``; returns the ``X-API-Key`` value."""
    from its.auth import keys
    from its.auth.roles import Scope

    with engine.begin() as conn:
        return keys.create_key(conn, name, scope=Scope(scope), owner=owner, actor="tests")[1]


def add_user(engine: Engine, username: str, role: str = "operator",
             password: str | None = None) -> None:  # fmt: skip
    """An account in ``engine`` (password hashed at the tests' cheap cost)."""
    from its.auth import users
    from its.auth.passwords import Passwords
    from its.auth.roles import Role

    hashed = Passwords(**_cheap()).hash(password) if password else None
    with engine.begin() as conn:
        users.add_user(conn, username, role=Role(role), password_hash=hashed, actor="tests")


def _cheap() -> dict[str, int]:
    return {"time_cost": CHEAP_PASSWORDS["password_time_cost"],
            "memory_kib": CHEAP_PASSWORDS["password_memory_kib"]}  # fmt: skip


@pytest.fixture
def api_auth_headers(request: pytest.FixtureRequest) -> dict[str, str]:
    """Headers of a read+operate identity (an ``operate`` API key) for API tests.

    The key is made in every test database the test uses (``engine``, ``sqlite_engine`` or
    ``pg_engine``, directly or through its other fixtures), so it works with any client fixture.
    """
    from its.auth import tokens
    from its.db import schema as db_schema

    names = ("engine", "sqlite_engine", "pg_engine", "pg_engine_session")
    used = [n for n in names if n in request.fixturenames]
    if not used:
        pytest.fail(f"api_auth_headers needs a test that uses one of {', '.join(names)}")
    key_id, secret = f"itsk_{uuid.uuid4().hex[:12]}", tokens.new_token()
    engines = {id(e): e for e in (request.getfixturevalue(n) for n in used)}
    for eng in engines.values():
        with eng.begin() as conn:
            conn.execute(
                db_schema.api_keys.insert().values(
                    key_id=key_id, secret_hash=tokens.digest(secret), name="api-tests",
                    scope="operate", created_at=datetime.now(UTC),
                )
            )  # fmt: skip
    return {"X-API-Key": f"{key_id}.{secret}"}


# --------------------------------------------------------------------------- browser


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's, through chromedriver), reaching only 127.0.0.1."""
    from tests.browser import chrome

    try:
        driver = chrome()
    except Exception as exc:  # noqa: BLE001 - a missing browser is an error, not a skip
        pytest.fail(f"Chromium and chromedriver are needed (run `make test`): {exc}")
    yield driver
    driver.quit()
