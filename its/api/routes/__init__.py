"""One router per resource, gathered in :data:`api_router`."""

from __future__ import annotations

from fastapi import APIRouter

from its.api.routes import aggregates, alerts, network, stations

api_router = APIRouter(prefix="/api/v1")
for module in (network, stations, aggregates, alerts):
    api_router.include_router(module.router)
