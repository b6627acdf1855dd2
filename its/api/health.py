"""``GET /healthz``: is the database reachable, and the broker? (for load balancers and compose)."""

from __future__ import annotations

import socket

from fastapi import APIRouter, Response
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from its.api.deps import EngineDep, SettingsDep
from its.api.schemas import Health
from its.db.engine import detect_backend
from its.service.traffic import data_clock

router = APIRouter(tags=["health"])


def _broker_reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1.0).close()
    except OSError:
        return False
    return True


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
        broker = "ok" if _broker_reachable(endpoint.host, endpoint.port) else "unreachable"
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
