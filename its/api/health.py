"""``GET /healthz``: is the database reachable, and the broker? (for load balancers and compose)."""

from __future__ import annotations

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
from its.service.traffic import data_clock

router = APIRouter(tags=["health"])


def _broker_reachable(endpoint: MqttEndpoint, timeout: float = 2.0) -> bool:
    """A real MQTT CONNECT / CONNACK round trip (a bare TCP probe would make brokers log an
    aborted session on every check)."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"its-healthz-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv311,
    )
    if endpoint.username:
        client.username_pw_set(endpoint.username, endpoint.password)
    try:
        client.connect(endpoint.host, endpoint.port, keepalive=10)
        deadline = time.monotonic() + timeout
        while not client.is_connected() and time.monotonic() < deadline:
            client.loop(timeout=0.1)
        ok = client.is_connected()
        if ok:
            client.disconnect()
        return ok
    except OSError:
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
    endpoint = settings.mqtt_endpoint
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
