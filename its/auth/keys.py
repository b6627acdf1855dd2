"""API keys for programs: ``<key_id>.<secret>``, sent as the ``X-API-Key`` header.

The key id is public (it names the key in lists, logs and the audit log); the secret is shown once
when the key is made and stored only as its SHA-256. A key has a scope (``read`` or ``operate``),
an optional owner (whose username an acknowledgement made with the key records) and an optional
expiry; revoking takes effect on the next request.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, insert, select, update
from sqlalchemy.engine import Connection

from its.auth import audit, tokens
from its.auth.roles import SCOPE_PERMISSIONS, Permission, Scope
from its.auth.users import get_user, user_by_id
from its.contract import iso
from its.db import schema
from its.errors import AuthenticationError, NotFoundError

KEY_ID_PREFIX = "itsk_"
KEY_FORMAT = re.compile(r"^(itsk_[0-9a-f]{12})\.([A-Za-z0-9_-]{20,100})$")
TOUCH_EVERY = timedelta(seconds=60)  # last_used_at is written at most once a minute


@dataclass(frozen=True)
class ApiKey:
    id: int
    key_id: str
    name: str
    scope: Scope
    owner: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def permissions(self) -> frozenset[Permission]:
        return SCOPE_PERMISSIONS[self.scope]

    @property
    def actor(self) -> str:
        """Who the key acts as: its owner's username, else ``key:<name>``."""
        return self.owner or f"key:{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "name": self.name,
            "scope": self.scope.value,
            "owner": self.owner,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "revoked_at": iso(self.revoked_at),
            "last_used_at": iso(self.last_used_at),
        }


def _key(conn: Connection, m: Any) -> ApiKey:
    owner = user_by_id(conn, m["owner_id"]) if m["owner_id"] is not None else None
    return ApiKey(
        id=m["id"],
        key_id=m["key_id"],
        name=m["name"],
        scope=Scope(m["scope"]),
        owner=owner.username if owner else None,
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        revoked_at=m["revoked_at"],
        last_used_at=m["last_used_at"],
    )


def create_key(
    conn: Connection,
    name: str,
    *,
    scope: Scope,
    owner: str | None = None,
    expires_in: timedelta | None = None,
    actor: str | None,
    now: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Make a key; returns it and the full ``<key_id>.<secret>`` string, shown only this once."""
    name = name.strip()
    if not name or len(name) > 100 or "\x00" in name:
        raise ValueError("a key needs a name of 1-100 characters")
    owner_id = get_user(conn, owner).id if owner else None
    now = now or datetime.now(UTC)
    key_id, secret = KEY_ID_PREFIX + secrets.token_hex(6), tokens.new_token()
    conn.execute(
        insert(schema.api_keys).values(
            key_id=key_id,
            secret_hash=tokens.digest(secret),
            name=name,
            scope=Scope(scope).value,
            owner_id=owner_id,
            created_at=now,
            expires_at=now + expires_in if expires_in else None,
        )
    )
    detail = {"name": name, "scope": Scope(scope).value, "owner": owner}
    audit.record(conn, "key.create", actor=actor, target=key_id, detail=detail, at=now)
    return get_key(conn, key_id), f"{key_id}.{secret}"


def get_key(conn: Connection, key_id: str) -> ApiKey:
    row = conn.execute(select(schema.api_keys).where(schema.api_keys.c.key_id == key_id)).first()
    if row is None:
        raise NotFoundError(f"no API key {key_id!r}")
    return _key(conn, row._mapping)


def list_keys(conn: Connection) -> list[ApiKey]:
    rows = conn.execute(select(schema.api_keys).order_by(schema.api_keys.c.created_at)).all()
    return [_key(conn, r._mapping) for r in rows]


def revoke_key(conn: Connection, key_id: str, *, actor: str | None) -> ApiKey:
    get_key(conn, key_id)
    k = schema.api_keys
    now = datetime.now(UTC)
    conn.execute(
        update(k).where(and_(k.c.key_id == key_id, k.c.revoked_at.is_(None))).values(revoked_at=now)
    )
    audit.record(conn, "key.revoke", actor=actor, target=key_id, at=now)
    return get_key(conn, key_id)


def authenticate_key(
    conn: Connection,
    presented: str | None,
    *,
    client: str | None = None,
    now: datetime | None = None,
) -> ApiKey:
    """The key a request presents, if it is well-formed, known, matches, and is neither revoked
    nor expired; else :class:`AuthenticationError` saying which (the key id is public, so saying
    "revoked" leaks nothing). The first use of a key is audited."""
    match = KEY_FORMAT.match(presented or "")
    if match is None:
        raise AuthenticationError("malformed API key: expected X-API-Key: <key_id>.<secret>")
    key_id, secret = match.groups()
    k = schema.api_keys
    row = conn.execute(select(k).where(k.c.key_id == key_id)).first()
    if row is None or not tokens.same(tokens.digest(secret), row.secret_hash):
        raise AuthenticationError("unknown API key or wrong secret")
    now = now or datetime.now(UTC)
    if row.revoked_at is not None:
        raise AuthenticationError(f"API key {key_id} was revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise AuthenticationError(f"API key {key_id} expired at {iso(row.expires_at)}")
    if row.owner_id is not None:
        owner = user_by_id(conn, row.owner_id)
        if owner is None or owner.disabled:
            raise AuthenticationError(f"the owner of API key {key_id} is disabled")
    if row.last_used_at is None:
        audit.record(conn, "key.use", actor=f"key:{key_id}", target=key_id, client=client,
                     detail={"first_use": True}, at=now)  # fmt: skip
    if row.last_used_at is None or now - row.last_used_at >= TOUCH_EVERY:
        conn.execute(update(k).where(k.c.id == row.id).values(last_used_at=now))
    return _key(conn, {**row._mapping, "last_used_at": now})
