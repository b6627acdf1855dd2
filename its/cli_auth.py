"""``its users``, ``its keys`` and ``its audit``: identity administration from the command line.

Whoever can run these commands can already read the database, so they need no sign-in; every
change is audited with the actor ``cli:<OS user>``. Passwords are prompted twice (hidden), or read
from one line of standard input with ``--password-stdin`` for scripts; never from the command line,
where ``ps`` and shell history would show them.
"""

from __future__ import annotations

import getpass
import sys
from datetime import timedelta
from typing import Annotated

import typer

from its.auth.roles import Role, Scope
from its.config import Settings

users_app = typer.Typer(
    help="People who sign in: add, list, disable, enable, passwd.", no_args_is_help=True
)
keys_app = typer.Typer(help="API keys for programs: create, list, revoke.", no_args_is_help=True)


def _cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _engine():  # noqa: ANN202 - an sqlalchemy Engine, migrated
    from its.cli import _migrated_store, _settings

    engine, _ = _migrated_store(_settings())
    return engine


def _settings() -> Settings:
    from its.cli import _settings as settings

    return settings()


def _read_password(from_stdin: bool) -> str:
    from its.auth.passwords import check_strength

    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        check_strength(password)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return password


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


_STDIN = typer.Option("--password-stdin", help="Read the password from one line of stdin.")


@users_app.command("add")
def users_add(
    username: Annotated[str, typer.Argument(help="Lower-case login name, e.g. rina.")],
    role: Annotated[Role, typer.Option(help="What the person may do.")] = Role.operator,
    display_name: Annotated[
        str | None, typer.Option("--name", help="Shown on the dashboard.")
    ] = None,
    password_stdin: Annotated[bool, _STDIN] = False,
    no_password: Annotated[
        bool, typer.Option(help="No password: the person signs in through `its users link`.")
    ] = False,
) -> None:
    """Create an account (the password is prompted twice)."""
    from its.auth import users
    from its.auth.passwords import Passwords
    from its.errors import ConflictError

    settings = _settings()
    hashed = None
    if not no_password:
        hashed = Passwords.from_settings(settings).hash(_read_password(password_stdin))
    try:
        with _engine().begin() as conn:
            user = users.add_user(conn, username, role=role, display_name=display_name,
                                  password_hash=hashed, actor=_cli_actor())  # fmt: skip
    except (ValueError, ConflictError) as exc:
        raise _fail(exc) from None
    typer.echo(f"added {user.username} ({user.role.value})")


@users_app.command("list")
def users_list() -> None:
    """Every account: username, role, state, last sign-in."""
    from its.auth import users

    with _engine().connect() as conn:
        rows = users.list_users(conn)
    typer.echo(f"{'username':<20} {'role':<11} {'state':<9} {'password':<9} last sign-in")
    for u in rows:
        state = "disabled" if u.disabled else "active"
        last = u.last_signin_at.isoformat(timespec="seconds") if u.last_signin_at else "never"
        pw = "set" if u.has_password else "link only"
        typer.echo(f"{u.username:<20} {u.role.value:<11} {state:<9} {pw:<9} {last}")


def _set_disabled(username: str, disabled: bool) -> None:
    from its.auth import users
    from its.errors import NotFoundError

    try:
        with _engine().begin() as conn:
            users.set_disabled(conn, username, disabled, actor=_cli_actor())
    except NotFoundError as exc:
        raise _fail(exc) from None
    typer.echo(f"{username} {'disabled (sessions ended)' if disabled else 'enabled'}")


@users_app.command("disable")
def users_disable(username: str) -> None:
    """Disable an account: it cannot sign in, its sessions end at once, its keys stop working."""
    _set_disabled(username, True)


@users_app.command("enable")
def users_enable(username: str) -> None:
    """Enable a disabled account again."""
    _set_disabled(username, False)


@users_app.command("passwd")
def users_passwd(username: str, password_stdin: Annotated[bool, _STDIN] = False) -> None:
    """Set a new password (prompted twice); the account's sessions end."""
    from its.auth import users
    from its.auth.passwords import Passwords
    from its.errors import NotFoundError

    settings = _settings()
    engine = _engine()
    with engine.connect() as conn:
        if users.find_user(conn, username) is None:
            raise _fail(NotFoundError(f"no user {username!r}"))
    hashed = Passwords.from_settings(settings).hash(_read_password(password_stdin))
    with engine.begin() as conn:
        users.set_password(conn, username, hashed, actor=_cli_actor())
    typer.echo(f"password of {username} changed")


@users_app.command("role")
def users_role(username: str, role: Role) -> None:
    """Change an account's role."""
    from its.auth import users
    from its.errors import NotFoundError

    try:
        with _engine().begin() as conn:
            users.set_role(conn, username, role, actor=_cli_actor())
    except NotFoundError as exc:
        raise _fail(exc) from None
    typer.echo(f"{username} is now {role.value}")


@users_app.command("link")
def users_link(username: str) -> None:
    """Print a one-time sign-in link for an account (e.g. one without a password)."""
    from its.auth import sessions, users
    from its.errors import NotFoundError

    settings = _settings()
    try:
        with _engine().begin() as conn:
            user = users.get_user(conn, username)
            if user.disabled:
                raise _fail(ValueError(f"{username} is disabled"))
            token = sessions.create_signin_link(
                conn, user, lifetime=timedelta(seconds=settings.signin_link_lifetime_s)
            )
    except NotFoundError as exc:
        raise _fail(exc) from None
    typer.echo(signin_url(settings, token))


def signin_url(settings: Settings, token: str) -> str:
    return f"http://{settings.web_host}:{settings.web_port}/signin/{token}"


# --------------------------------------------------------------------------- keys


@keys_app.command("create")
def keys_create(
    name: Annotated[
        str, typer.Option(help="What the key is for, e.g. 'grafana' or 'rina-notebook'.")
    ],
    scope: Annotated[
        Scope, typer.Option(help="read: GET only; operate: also acknowledge.")
    ] = Scope.read,
    owner: Annotated[
        str | None, typer.Option(help="Username the key acts for (recorded on acknowledgements).")
    ] = None,
    expires_days: Annotated[
        float | None, typer.Option(min=0.001, max=3650, help="Expire after this many days.")
    ] = None,
) -> None:
    """Make an API key; its secret is printed once and stored only as a hash."""
    from its.auth import keys
    from its.errors import NotFoundError

    expires = timedelta(days=expires_days) if expires_days else None
    try:
        with _engine().begin() as conn:
            key, full = keys.create_key(conn, name, scope=scope, owner=owner, expires_in=expires,
                                        actor=_cli_actor())  # fmt: skip
    except (ValueError, NotFoundError) as exc:
        raise _fail(exc) from None
    typer.echo(f"created {key.key_id} ({key.scope.value}) - the key, shown only now:")
    typer.echo(full)
    typer.echo("send it as the header  X-API-Key: <key>")


@keys_app.command("list")
def keys_list() -> None:
    """Every key (never its secret): id, name, scope, owner, state, last use."""
    from datetime import UTC, datetime

    from its.auth import keys

    now = datetime.now(UTC)
    with _engine().connect() as conn:
        rows = keys.list_keys(conn)
    typer.echo(f"{'key id':<18} {'scope':<8} {'state':<8} {'owner':<14} {'last used':<26} name")
    for k in rows:
        state = (
            "revoked"
            if k.revoked_at
            else "expired"
            if k.expires_at and k.expires_at <= now
            else "active"
        )
        last = k.last_used_at.isoformat(timespec="seconds") if k.last_used_at else "never"
        typer.echo(
            f"{k.key_id:<18} {k.scope.value:<8} {state:<8} {k.owner or '-':<14} {last:<26} {k.name}"
        )


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key: the next request with it answers 401."""
    from its.auth import keys
    from its.errors import NotFoundError

    try:
        with _engine().begin() as conn:
            keys.revoke_key(conn, key_id, actor=_cli_actor())
    except NotFoundError as exc:
        raise _fail(exc) from None
    typer.echo(f"{key_id} revoked")


# --------------------------------------------------------------------------- audit


def audit_cmd(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many entries.")] = 50,
    action: Annotated[
        str | None, typer.Option(help="An action, or a prefix ending in '.' such as 'key.'.")
    ] = None,
    actor: Annotated[str | None, typer.Option(help="Only this actor.")] = None,
) -> None:
    """Recent audit log entries, newest first."""
    import json

    from its.auth import audit

    with _engine().connect() as conn:
        rows = audit.query(conn, action=action, actor=actor, limit=limit)
    for e in rows:
        detail = f" {json.dumps(e.detail, ensure_ascii=False)}" if e.detail else ""
        typer.echo(
            f"{e.at.isoformat(timespec='seconds')} {e.outcome:<6} {e.action:<14} "
            f"actor={e.actor or '-'} target={e.target or '-'} client={e.client or '-'}{detail}"
        )
