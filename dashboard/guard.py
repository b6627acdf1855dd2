"""Refuse malformed Dash callback requests with a 400 before Dash sees them.

Dash's own middleware turns any error inside ``POST /_dash-update-component`` into a 500: a
body that is not an object, an ``output`` no callback has, inputs that do not line up with the
callback's declaration. Those are a client's mistakes (or a forged request from someone signed
in), not the server's, and nothing a sender does may answer 5xx. This middleware checks the
request's shape against the app's ``callback_map`` (the declared inputs and state, their ids
and properties) and answers 400 with the reason; a well-formed request passes through
unchanged. The values themselves are the callbacks' to check (dashboard/views.py).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from its.api.limits import replay_body

CALLBACK_PATH = "/_dash-update-component"


class CallbackShapeError(ValueError):
    """A callback request whose shape does not match any declared callback."""


def _check_item(item: Any, spec: dict[str, str], where: str) -> None:
    """One declared input or state: a dict with the spec's id and property, or, for a
    pattern-matching id (declared as a JSON object), a list of such dicts."""
    pattern = spec["id"].startswith("{")
    entries = item if pattern and isinstance(item, list) else [item]
    if pattern and not isinstance(item, list | dict):
        raise CallbackShapeError(f"{where}: expected a list of inputs for {spec['id']}")
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("property") != spec["property"]:
            raise CallbackShapeError(f"{where}: expected {spec['id']}.{spec['property']}")
        ident = entry.get("id")
        if pattern:
            declared = orjson.loads(spec["id"])
            if not isinstance(ident, dict) or set(ident) != set(declared):
                raise CallbackShapeError(f"{where}: expected an id shaped like {spec['id']}")
        elif ident != spec["id"]:
            raise CallbackShapeError(f"{where}: expected {spec['id']}.{spec['property']}")


def check_callback_body(body: bytes, callback_map: dict[str, dict[str, Any]]) -> None:
    """Raise :class:`CallbackShapeError` unless ``body`` is a request for a declared callback."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CallbackShapeError(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CallbackShapeError("a callback request is a JSON object")
    output = data.get("output")
    spec = callback_map.get(output) if isinstance(output, str) else None
    if spec is None:
        raise CallbackShapeError("unknown callback output")
    for key in ("inputs", "state"):
        items = data.get(key, [])
        declared = spec.get(key, [])
        if not isinstance(items, list) or len(items) != len(declared):
            raise CallbackShapeError(f"{key}: expected {len(declared)} item(s)")
        for i, (item, item_spec) in enumerate(zip(items, declared, strict=True)):
            _check_item(item, item_spec, f"{key}[{i}]")
    changed = data.get("changedPropIds", [])
    if not isinstance(changed, list) or not all(isinstance(c, str) for c in changed):
        raise CallbackShapeError("changedPropIds: expected a list of strings")
    if not isinstance(data.get("outputs", []), list | dict):
        raise CallbackShapeError("outputs: expected an object or a list")


class CallbackGuard:
    """ASGI middleware in front of Dash: checks ``POST /_dash-update-component`` bodies (which
    the body-size limit around the web process has already bounded)."""

    def __init__(self, app: ASGIApp, *, callback_map: dict[str, dict[str, Any]]) -> None:
        self.app = app
        self.callback_map = callback_map

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != CALLBACK_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            check_callback_body(body, self.callback_map)
        except CallbackShapeError as exc:
            await JSONResponse({"detail": f"malformed callback request: {exc}"}, 400)(
                scope, receive, send
            )
            return
        await self.app(scope, replay_body(body, receive), send)
