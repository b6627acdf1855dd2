"""Identity core on SQLite and PostgreSQL: passwords, accounts, sessions, links, keys, the sign-in
throttle and the audit entries they leave."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from its.auth import audit, keys, sessions, tokens, users
from its.auth.identity import Identity
from its.auth.passwords import Passwords
from its.auth.roles import Permission, Role, Scope
from its.db import schema
from its.errors import AuthenticationError, ConflictError, PermissionDenied
from tests.conftest import add_user

CHEAP = Passwords(time_cost=1, memory_kib=64)


def _sign_in(engine: Engine, username: str, password: str, max_failures: int = 5) -> users.User:
    return users.sign_in(engine, username, password, passwords=CHEAP, max_failures=max_failures,
                         window=timedelta(minutes=15), client="192.0.2.7")  # fmt: skip


def _actions(engine: Engine, **filters: str) -> list[tuple[str, str | None, str]]:
    with engine.connect() as conn:
        return [(e.action, e.target, e.outcome) for e in audit.query(conn, **filters)]


def test_passwords_are_argon2id_salted_and_verified() -> None:
    default = Passwords()  # the production cost
    h = default.hash("correct horse battery")
    assert h.startswith("$argon2id$") and "m=65536,t=3" in h
    assert default.verify(h, "correct horse battery")
    assert not default.verify(h, "correct horse battery!")
    assert default.hash("correct horse battery") != h  # salted
    assert not default.verify(None, "x") and not default.verify("garbage", "x")
    assert CHEAP.verify(h, "correct horse battery")  # parameters live in the hash
    assert CHEAP.needs_rehash(h) and not default.needs_rehash(h)
    for bad in ("short", "x" * 1025, "nul\x00byte-password"):
        with pytest.raises(ValueError, match="password"):
            CHEAP.hash(bad)


def test_user_lifecycle_sign_in_disable_passwd(engine: Engine) -> None:
    add_user(engine, "rina", "operator", "first password")
    with engine.begin() as conn:
        with pytest.raises(ConflictError):
            users.add_user(conn, "rina", role=Role.viewer, actor="tests")
        with pytest.raises(ValueError, match="invalid username"):
            users.add_user(conn, "Rina <script>", role=Role.viewer, actor="tests")
    user = _sign_in(engine, "rina", "first password")
    assert (user.username, user.role, user.last_signin_at is not None) == ("rina", "operator", True)
    assert user.permissions == {Permission.read, Permission.operate}

    with engine.begin() as conn:
        new = sessions.start_session(conn, user, lifetime=timedelta(hours=1))
    with engine.begin() as conn:
        active = sessions.find_session(conn, new.token)
        assert active is not None and active.user.username == "rina"
        assert active.csrf_ok(new.csrf_token) and not active.csrf_ok("forged")
        stored = conn.execute(select(schema.sessions.c.token_hash)).scalar_one()
        assert stored == tokens.digest(new.token) and new.token not in stored  # only the hash
        users.set_disabled(conn, "rina", True, actor="admin")
    with engine.begin() as conn:
        assert sessions.find_session(conn, new.token) is None  # disabling ends sessions at once
    with pytest.raises(AuthenticationError):
        _sign_in(engine, "rina", "first password")
    with engine.begin() as conn:
        users.set_disabled(conn, "rina", False, actor="admin")
        users.set_password(conn, "rina", CHEAP.hash("second password"), actor="admin")
    with pytest.raises(AuthenticationError):
        _sign_in(engine, "rina", "first password")
    assert _sign_in(engine, "rina", "second password").username == "rina"
    assert [a for a, _, o in _actions(engine, action="user.") if o == "ok"] == [
        "user.passwd", "user.enable", "user.disable", "user.add",
    ]  # fmt: skip
    failed = _actions(engine, action="signin")
    assert ("signin", "rina", "failed") in failed and ("signin", "rina", "ok") in failed


def test_session_expiry_and_sign_out(engine: Engine) -> None:
    add_user(engine, "budi", "viewer")
    now = datetime.now(UTC)
    with engine.begin() as conn:
        user = users.get_user(conn, "budi")
        old = sessions.start_session(conn, user, lifetime=timedelta(minutes=5), now=now)
        live = sessions.start_session(conn, user, lifetime=timedelta(hours=1), now=now)
    with engine.begin() as conn:
        assert sessions.find_session(conn, old.token, now=now + timedelta(minutes=6)) is None
        assert sessions.find_session(conn, live.token, now=now + timedelta(minutes=6)) is not None
        assert sessions.end_session(conn, live.token)
        assert sessions.find_session(conn, live.token) is None
        assert not sessions.end_session(conn, live.token)
        assert sessions.find_session(conn, "x" * 10_000) is None


def test_signin_links_work_once_and_expire(engine: Engine) -> None:
    with engine.begin() as conn:
        admin = users.ensure_local_admin(conn)
        assert admin is not None and admin.role is Role.admin and not admin.has_password
        assert users.ensure_local_admin(conn) == admin  # no second admin on the next start
        link = sessions.create_signin_link(conn, admin, lifetime=timedelta(minutes=10))
        late = sessions.create_signin_link(conn, admin, lifetime=timedelta(minutes=10))
    with engine.begin() as conn:
        assert sessions.redeem_signin_link(conn, link) == admin
        assert sessions.redeem_signin_link(conn, link) is None  # one time
        later = datetime.now(UTC) + timedelta(minutes=11)
        assert sessions.redeem_signin_link(conn, late, now=later) is None  # expired
        assert sessions.redeem_signin_link(conn, "not-a-link") is None
    with pytest.raises(AuthenticationError):  # a link-only account has no password to guess
        _sign_in(engine, "admin", "")


def test_failed_sign_ins_are_throttled_and_audited(engine: Engine) -> None:
    add_user(engine, "dewi", "operator", "dewi's password")
    for _ in range(3):
        with pytest.raises(AuthenticationError, match="wrong username or password"):
            _sign_in(engine, "dewi", "guess", max_failures=3)
    with pytest.raises(AuthenticationError, match="too many failed sign-ins"):
        _sign_in(engine, "dewi", "dewi's password", max_failures=3)  # even the right one
    assert _sign_in(engine, "dewi", "dewi's password", max_failures=4).username == "dewi"
    entries = _actions(engine, action="signin")
    assert [o for _, _, o in entries] == ["ok", "denied", "failed", "failed", "failed"]
    with pytest.raises(AuthenticationError, match="wrong username or password"):
        _sign_in(engine, "nobody", "guess")  # the same answer for an unknown user


def test_key_lifecycle_scope_expiry_revocation(engine: Engine) -> None:
    add_user(engine, "analyst", "viewer")
    now = datetime.now(UTC)
    with engine.begin() as conn:
        key, full = keys.create_key(conn, "grafana", scope=Scope.read, owner="analyst",
                                    expires_in=timedelta(days=1), actor="admin", now=now)  # fmt: skip
        stored = conn.execute(select(schema.api_keys)).one()
    assert full.startswith(key.key_id + ".") and full.split(".")[1] not in str(stored)
    assert stored.secret_hash == tokens.digest(full.split(".")[1])
    with engine.begin() as conn:
        used = keys.authenticate_key(conn, full, client="192.0.2.9")
        assert (used.owner, used.scope, used.actor) == ("analyst", Scope.read, "analyst")
        keys.authenticate_key(conn, full)  # second use: not audited again
        who = Identity.of_key(used)
        assert who.can(Permission.read) and not who.can(Permission.operate)
        with pytest.raises(PermissionDenied, match="operate"):
            who.require(Permission.operate)
        for bad, reason in [
            ("nonsense", "malformed"),
            (key.key_id + ".wrong-secret-but-long-enough", "unknown API key or wrong secret"),
            ("itsk_000000000000." + "a" * 40, "unknown"),
        ]:
            with pytest.raises(AuthenticationError, match=reason):
                keys.authenticate_key(conn, bad)
        with pytest.raises(AuthenticationError, match="expired"):
            keys.authenticate_key(conn, full, now=now + timedelta(days=2))
        users.set_disabled(conn, "analyst", True, actor="admin")
        with pytest.raises(AuthenticationError, match="owner"):
            keys.authenticate_key(conn, full)
        users.set_disabled(conn, "analyst", False, actor="admin")
        keys.revoke_key(conn, key.key_id, actor="admin")
        with pytest.raises(AuthenticationError, match="revoked"):
            keys.authenticate_key(conn, full)
    acts = _actions(engine, action="key.")
    assert [a for a, _, _ in acts] == ["key.revoke", "key.use", "key.create"]  # first use only
