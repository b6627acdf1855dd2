"""People: accounts with a role, password sign-in with a throttle, enable/disable.

A username is the identity recorded on everything a person does (acknowledgements, the audit
log), so it is stable: accounts are disabled, never renamed or deleted. Sign-in answers the same
"wrong username or password" for an unknown user, a wrong password, a disabled account and an
account without a password, and takes as long, so nobody learns which usernames exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from its.auth import audit
from its.auth.passwords import Passwords
from its.auth.roles import ROLE_PERMISSIONS, Permission, Role
from its.contract import iso
from its.db import schema
from its.errors import AuthenticationError, ConflictError, NotFoundError

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
LOCAL_ADMIN = "admin"


@dataclass(frozen=True)
class User:
    id: int
    username: str
    display_name: str
    role: Role
    disabled: bool
    has_password: bool
    created_at: datetime
    last_signin_at: datetime | None

    @property
    def permissions(self) -> frozenset[Permission]:
        return ROLE_PERMISSIONS[self.role]

    def to_dict(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "display_name": self.display_name,
            "role": self.role.value,
            "disabled": self.disabled,
            "has_password": self.has_password,
            "created_at": iso(self.created_at),
            "last_signin_at": iso(self.last_signin_at),
        }


def _user(m: Any) -> User:
    return User(
        id=m["id"],
        username=m["username"],
        display_name=m["display_name"],
        role=Role(m["role"]),
        disabled=bool(m["disabled"]),
        has_password=m["password_hash"] is not None,
        created_at=m["created_at"],
        last_signin_at=m["last_signin_at"],
    )


def check_username(username: str) -> str:
    """Usernames are lower-case letters, digits, ``.``, ``_`` and ``-`` (2-64 characters)."""
    if not USERNAME.match(username):
        raise ValueError(
            f"invalid username {username[:70]!r}: use 2-64 lower-case letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return username


def add_user(
    conn: Connection,
    username: str,
    *,
    role: Role,
    display_name: str | None = None,
    password_hash: str | None = None,
    actor: str | None,
    now: datetime | None = None,
) -> User:
    """Create an account; ``password_hash`` from :meth:`Passwords.hash` (None: link sign-in only)."""
    check_username(username)
    if display_name and ("\x00" in display_name or len(display_name) > 200):
        raise ValueError("a display name has at most 200 characters and no NUL")
    if find_user(conn, username) is not None:
        raise ConflictError(f"user {username!r} already exists")
    at = now or datetime.now(UTC)
    conn.execute(
        insert(schema.users).values(
            username=username,
            display_name=(display_name or "").strip() or username,
            role=Role(role).value,
            password_hash=password_hash,
            disabled=False,
            created_at=at,
            updated_at=at,
        )
    )
    audit.record(conn, "user.add", actor=actor, target=username, detail={"role": role}, at=at)
    return get_user(conn, username)


def find_user(conn: Connection, username: str) -> User | None:
    row = conn.execute(select(schema.users).where(schema.users.c.username == username)).first()
    return _user(row._mapping) if row else None


def get_user(conn: Connection, username: str) -> User:
    user = find_user(conn, username)
    if user is None:
        raise NotFoundError(f"no user {username!r}")
    return user


def user_by_id(conn: Connection, user_id: int) -> User | None:
    row = conn.execute(select(schema.users).where(schema.users.c.id == user_id)).first()
    return _user(row._mapping) if row else None


def list_users(conn: Connection) -> list[User]:
    rows = conn.execute(select(schema.users).order_by(schema.users.c.username)).all()
    return [_user(r._mapping) for r in rows]


def count_users(conn: Connection) -> int:
    return conn.execute(select(func.count()).select_from(schema.users)).scalar_one()


def _change(conn: Connection, username: str, action: str, actor: str | None, **values: Any) -> User:
    get_user(conn, username)  # NotFoundError first
    at = datetime.now(UTC)
    conn.execute(
        update(schema.users)
        .where(schema.users.c.username == username)
        .values(updated_at=at, **values)
    )
    detail = {k: v for k, v in values.items() if k != "password_hash"} or None
    audit.record(conn, action, actor=actor, target=username, detail=detail, at=at)
    return get_user(conn, username)


def set_disabled(conn: Connection, username: str, disabled: bool, *, actor: str | None) -> User:
    """Disable (or re-enable) an account; disabling also ends its sessions at once."""
    user = _change(
        conn, username, "user.disable" if disabled else "user.enable", actor, disabled=disabled
    )
    if disabled:
        from its.auth.sessions import revoke_user_sessions

        revoke_user_sessions(conn, user.id)
    return user


def set_password(conn: Connection, username: str, password_hash: str, *, actor: str | None) -> User:
    """Store a new password hash; the user's other sessions end (a changed password is often a
    suspected leak)."""
    user = _change(conn, username, "user.passwd", actor, password_hash=password_hash)
    from its.auth.sessions import revoke_user_sessions

    revoke_user_sessions(conn, user.id)
    return user


def set_role(conn: Connection, username: str, role: Role, *, actor: str | None) -> User:
    return _change(conn, username, "user.role", actor, role=Role(role).value)


def sign_in(
    engine: Engine,
    username: str,
    password: str,
    *,
    passwords: Passwords,
    max_failures: int,
    window: timedelta,
    client: str | None = None,
) -> User:
    """Check a username and password; every attempt is audited.

    Refused (:class:`AuthenticationError`) when the pair is wrong, the account is disabled or has
    no password, or when ``max_failures`` failed attempts on this username happened within
    ``window`` (the throttle; refused without checking the password, until the oldest of those
    failures is older than ``window``). Runs its own transactions so a failure is recorded even
    though the sign-in is refused.
    """
    now = datetime.now(UTC)

    def refuse(outcome: audit.Outcome, reason: str, message: str, **detail: Any) -> NoReturn:
        # its own transaction, committed before raising: the refusal must stay on record
        with engine.begin() as conn:
            audit.record(conn, "signin", actor=None, target=username, outcome=outcome,
                         detail={"reason": reason, **detail}, client=client, at=now)  # fmt: skip
        raise AuthenticationError(message)

    with engine.connect() as conn:
        failures = audit.count_failures(conn, "signin", username, now - window)
        row = (
            conn.execute(select(schema.users).where(schema.users.c.username == username)).first()
            if USERNAME.match(username)  # no account has any other name: no query for junk
            else None
        )
    if failures >= max_failures:
        refuse("denied", "throttled", "too many failed sign-ins for this username: try again later",
               recent_failures=failures)  # fmt: skip
    stored = row._mapping["password_hash"] if row else None
    if row is None or stored is None:
        passwords.burn(password)
        ok = False
    else:
        ok = passwords.verify(stored, password)
    if not ok or row._mapping["disabled"]:
        refuse("failed", "disabled" if ok else "wrong username or password",
               "wrong username or password, or the account is disabled")  # fmt: skip
    with engine.begin() as conn:
        values: dict[str, Any] = {"last_signin_at": now}
        if passwords.needs_rehash(stored):  # the cost setting changed: store the new cost
            values["password_hash"] = passwords.hash(password)
        conn.execute(
            update(schema.users).where(schema.users.c.id == row._mapping["id"]).values(**values)
        )
        audit.record(conn, "signin", actor=username, target=username, client=client, at=now)
        return get_user(conn, username)


def ensure_local_admin(conn: Connection) -> User | None:
    """On a store without any account, create the local ``admin`` (no password: it signs in
    through the one-time link ``its up`` prints). Returns the admin to print a link for: the
    local admin where it exists, is enabled and is still an admin; else None."""
    if count_users(conn) == 0:
        add_user(
            conn,
            LOCAL_ADMIN,
            role=Role.admin,
            display_name="Local administrator",
            actor="its up",
        )
    admin = find_user(conn, LOCAL_ADMIN)
    if admin is None or admin.disabled or admin.role is not Role.admin:
        return None
    return admin
