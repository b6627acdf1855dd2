"""``GET /healthz``: is the database reachable, and the broker? (for load balancers and compose)."""

from __future__ import annotations

import ssl
import time
import uuid

import paho.mqtt.client as mqtt
from fastapi import APIRouter, Response
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from its.api.deps import EngineDep, SettingsDep
from its.api.schemas import Health
from its.config import MqttEndpoint
from its.db.engine import detect_backend
from its.errors import ConfigError
from its.service.traffic import data_clock

router = APIRouter(tags=["health"])


def _broker_reachable(endpoint: MqttEndpoint, timeout: float = 2.0) -> bool:
    """A real MQTT CONNECT / CONNACK round trip (a bare TCP probe would make brokers log an
    aborted session on every check), over TLS where the endpoint says so. Any CONNACK counts,
    a refused login too: the broker answers, and the web process needs no broker login."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"its-healthz-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv311,
    )
    answered: list[object] = []
    client.on_connect = lambda _c, _u, _f, rc, _p: answered.append(rc)
    if endpoint.username:
        client.username_pw_set(endpoint.username, endpoint.password)
    try:
        if endpoint.tls:
            cafile = str(endpoint.ca_file) if endpoint.ca_file else None
            client.tls_set_context(ssl.create_default_context(cafile=cafile))
        client.connect(endpoint.host, endpoint.port, keepalive=10)
        deadline = time.monotonic() + timeout
        while not answered and time.monotonic() < deadline:
            client.loop(timeout=0.1)
        if client.is_connected():
            client.disconnect()
        return bool(answered)
    except OSError:  # ssl.SSLError included: a broker we cannot trust is not healthy
        return False
    finally:
        sock = client.socket()
        if sock is not None:
            sock.close()


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
def healthz(engine: EngineDep, settings: SettingsDep, response: Response) -> dict:
    """200 when the database answers (and the broker accepts connections, where one is set);
    503 with what failed otherwise."""
    db, backend, clock = "ok", None, None
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            clock = data_clock(conn)
        backend = detect_backend(engine).value
    except SQLAlchemyError as exc:
        db = f"unreachable: {exc.__class__.__name__}"
    try:
        endpoint = settings.mqtt_endpoint
    except (ConfigError, ValueError) as exc:  # e.g. an unreadable ITS_MQTT_PASSWORD_FILE
        endpoint, broker = None, f"misconfigured: {exc}"
    else:
        if endpoint is None:
            broker = "not configured"
        else:
            broker = "ok" if _broker_reachable(endpoint) else "unreachable"
    healthy = db == "ok" and broker in ("ok", "not configured")
    if not healthy:
        response.status_code = 503
    return {
        "status": "ok" if healthy else "degraded",
        "database": db,
        "backend": backend,
        "broker": broker,
        "broker_url": endpoint.url if endpoint else None,
        "data_time": clock,
    }
