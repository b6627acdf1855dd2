"""Server-side sessions of signed-in people, and one-time sign-in links.

The browser holds a random session token (cookie ``its_session``, HttpOnly) and a CSRF token
(cookie ``_csrf_token``, readable by the page so it can echo it in the ``X-CSRFToken`` header);
the database holds only their SHA-256. A session ends at ``expires_at`` (``ITS_SESSION_LIFETIME_S``
after sign-in), on sign-out, or when its user is disabled or changes password: the server decides,
so revoking works at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, insert, select, update
from sqlalchemy.engine import Connection

from its.auth import tokens
from its.auth.users import User, user_by_id
from its.db import schema

TOUCH_EVERY = timedelta(seconds=60)  # last_seen_at is written at most once a minute


@dataclass(frozen=True)
class NewSession:
    """What the browser gets once: the session token and the CSRF token (both in cookies)."""

    token: str
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True)
class ActiveSession:
    id: int
    user: User
    csrf_hash: str
    expires_at: datetime

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and tokens.same(tokens.digest(presented), self.csrf_hash)


def start_session(
    conn: Connection,
    user: User,
    *,
    lifetime: timedelta,
    client: str | None = None,
    now: datetime | None = None,
) -> NewSession:
    now = now or datetime.now(UTC)
    token, csrf = tokens.new_token(), tokens.new_token()
    conn.execute(
        insert(schema.sessions).values(
            token_hash=tokens.digest(token),
            user_id=user.id,
            csrf_hash=tokens.digest(csrf),
            created_at=now,
            expires_at=now + lifetime,
            last_seen_at=now,
            client=(client or "")[:64] or None,
        )
    )
    return NewSession(token, csrf, now + lifetime)


def find_session(
    conn: Connection, token: str | None, *, now: datetime | None = None
) -> ActiveSession | None:
    """The live session of a token: not expired, not revoked, its user enabled; else None."""
    if not token or len(token) > 256:
        return None
    now = now or datetime.now(UTC)
    s = schema.sessions
    row = conn.execute(
        select(s).where(and_(s.c.token_hash == tokens.digest(token), s.c.revoked_at.is_(None)))
    ).first()
    if row is None or row.expires_at <= now:
        return None
    user = user_by_id(conn, row.user_id)
    if user is None or user.disabled:
        return None
    if now - row.last_seen_at >= TOUCH_EVERY:
        conn.execute(update(s).where(s.c.id == row.id).values(last_seen_at=now))
    return ActiveSession(row.id, user, row.csrf_hash, row.expires_at)


def end_session(conn: Connection, token: str | None, *, now: datetime | None = None) -> bool:
    """Revoke the session of ``token`` (sign-out); True when there was one."""
    if not token or len(token) > 256:
        return False
    s = schema.sessions
    done = conn.execute(
        update(s)
        .where(and_(s.c.token_hash == tokens.digest(token), s.c.revoked_at.is_(None)))
        .values(revoked_at=now or datetime.now(UTC))
        .execution_options(preserve_rowcount=True)
    )
    return done.rowcount == 1


def revoke_user_sessions(conn: Connection, user_id: int) -> None:
    s = schema.sessions
    conn.execute(
        update(s)
        .where(and_(s.c.user_id == user_id, s.c.revoked_at.is_(None)))
        .values(revoked_at=datetime.now(UTC))
    )


# --------------------------------------------------------------------------- one-time links


def create_signin_link(
    conn: Connection, user: User, *, lifetime: timedelta, now: datetime | None = None
) -> str:
    """A one-time sign-in token for ``user`` (the path is ``/signin/<token>``)."""
    now = now or datetime.now(UTC)
    token = tokens.new_token()
    conn.execute(
        insert(schema.signin_links).values(
            token_hash=tokens.digest(token),
            user_id=user.id,
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    return token


def redeem_signin_link(
    conn: Connection, token: str | None, *, now: datetime | None = None
) -> User | None:
    """The user of an unused, unexpired link, marking it used (a guarded UPDATE, so two clicks
    at once sign in once); None for anything else."""
    if not token or len(token) > 256:
        return None
    now = now or datetime.now(UTC)
    t = schema.signin_links
    row = conn.execute(
        select(t).where(and_(t.c.token_hash == tokens.digest(token), t.c.used_at.is_(None)))
    ).first()
    if row is None or row.expires_at <= now:
        return None
    done = conn.execute(
        update(t)
        .where(and_(t.c.id == row.id, t.c.used_at.is_(None)))
        .values(used_at=now)
        .execution_options(preserve_rowcount=True)
    )
    user = user_by_id(conn, row.user_id)
    if done.rowcount != 1 or user is None or user.disabled:
        return None
    return user
