"""Dependencies as named types (``SettingsDep``, ``ConnDep``, ``NetworkDep``).

The app factory puts the engine and the road network on ``app.state``; nothing connects at import
time. Tests swap ``get_settings`` through ``app.dependency_overrides``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Connection, Engine

from its.config import Settings, get_settings
from its.network import Network


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_network(request: Request) -> Network:
    return request.app.state.network


def get_app_settings(request: Request) -> Settings:
    """The settings the app was built with (``get_settings()`` when none were given)."""
    return getattr(request.app.state, "settings", None) or get_settings()


def get_conn(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Connection]:
    """A read connection per request."""
    with engine.connect() as conn:
        yield conn


def get_tx(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Connection]:
    """A connection in a transaction, committed when the handler returns."""
    with engine.begin() as conn:
        yield conn


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
NetworkDep = Annotated[Network, Depends(get_network)]
ConnDep = Annotated[Connection, Depends(get_conn)]
TxDep = Annotated[Connection, Depends(get_tx)]
