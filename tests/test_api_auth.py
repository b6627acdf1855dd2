"""Who may call what: every API route refuses a missing or insufficient identity, CSRF guards
cookie-authenticated writes, the login page, sign-in links, sign-out, the dashboard gate, the
audit endpoint, and the CLI that manages people and keys."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from its.alerts import store
from its.api.app import create_app
from its.auth import audit, sessions, users
from its.cli import app as cli
from its.cli import build_web_app
from its.config import Settings
from its.network import Network
from tests.conftest import add_key, add_user

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
PASSWORD = "a long enough password"


def _api_routes(app) -> list[tuple[str, str]]:  # noqa: ANN001
    """(method, concrete path) of every /api/v1 route; new routes are covered automatically.
    (FastAPI 0.165 keeps included routers nested: ``iter_route_contexts`` flattens them.)"""
    found = []
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIRoute) and route.path.startswith("/api/v1"):
            path = re.sub(r"\{[^}]+\}", "1", route.path)
            found += [(m, path) for m in sorted(route.methods - {"HEAD"})]
    return found


def _alert(engine: Engine) -> int:
    with engine.begin() as conn:
        at = datetime.now(UTC) - timedelta(minutes=3)
        return store.raise_or_repeat(
            conn, "congestion", "SDR-N-01", "major", "slow", {}, at
        ).alert.id


def _sign_in(client: TestClient, username: str, password: str = PASSWORD):  # noqa: ANN202
    client.get("/login")
    return client.post("/login", data={"username": username, "password": password,
                                       "csrf_token": client.cookies.get("_csrf_token", "")})  # fmt: skip


@pytest.fixture
def web(settings: Settings, engine: Engine, network: Network) -> TestClient:
    """The web process's app (API, pages and dashboard), on SQLite and on PostgreSQL."""
    return TestClient(build_web_app(settings, engine=engine, network=network),
                      follow_redirects=False)  # fmt: skip


def test_every_api_route_needs_an_identity_and_writes_need_operate(
    engine: Engine, network: Network, settings: Settings
) -> None:
    app = create_app(settings, engine=engine, network=network)
    routes = _api_routes(app)
    writes = [(m, p) for m, p in routes if m in WRITE_METHODS]
    assert ("POST", "/api/v1/alerts/1/ack") in writes and len(routes) >= 8
    alert_id = _alert(engine)
    read_key, operate_key = add_key(engine, "read"), add_key(engine, "operate")
    anonymous, reader = TestClient(app), TestClient(app, headers={"X-API-Key": read_key})
    for method, path in routes:
        r = anonymous.request(method, path, json={})
        assert r.status_code == 401, (method, path, r.text)
        assert r.json()["detail"] and r.headers["www-authenticate"].startswith("APIKey")
        bad = anonymous.request(method, path, json={}, headers={"X-API-Key": read_key + "x"})
        assert bad.status_code == 401, (method, path)
        r = reader.request(method, path, json={})
        if method in WRITE_METHODS:
            assert r.status_code == 403, (method, path, r.text)
            assert "needs operate" in r.json()["detail"]
        else:
            assert r.status_code not in (401, 403) or path == "/api/v1/audit", (path, r.text)
    operator = TestClient(app, headers={"X-API-Key": operate_key})
    assert operator.get("/api/v1/audit").status_code == 403  # admin only
    ok = operator.post(f"/api/v1/alerts/{alert_id}/ack", json={"comment": "crew sent"})
    assert ok.status_code == 200 and ok.json()["acked_by"] == "key:tests"
    with engine.connect() as conn:
        entries = {(e.action, e.outcome) for e in audit.query(conn, limit=1000)}
    assert {("alert.ack", "ok"), ("access.denied", "denied"), ("key.use", "ok"),
            ("key.use", "failed")} <= entries  # fmt: skip


def test_anonymous_read_setting_opens_reads_never_writes(
    sqlite_engine: Engine, network: Network, settings: Settings
) -> None:
    open_reads = settings.model_copy(update={"auth_anonymous_read": True})
    client = TestClient(create_app(open_reads, engine=sqlite_engine, network=network))
    assert client.get("/api/v1/network").status_code == 200
    assert client.get("/api/v1/me").json()["via"] == "anonymous"
    assert client.post("/api/v1/alerts/1/ack", json={}).status_code == 401
    assert client.get("/api/v1/audit").status_code == 401
    for public in ("/healthz", "/openapi.json", "/docs"):
        assert TestClient(create_app(settings, engine=sqlite_engine, network=network)).get(
            public
        ).status_code in (200, 503), public


def test_key_owner_is_recorded_as_who_acknowledged(engine: Engine, web: TestClient) -> None:
    add_user(engine, "rina", "operator")
    key = add_key(engine, "operate", name="rina-script", owner="rina")
    alert_id = _alert(engine)
    r = web.post(f"/api/v1/alerts/{alert_id}/ack", json={}, headers={"X-API-Key": key})
    assert r.status_code == 200 and r.json()["acked_by"] == "rina"
    with engine.connect() as conn:
        (entry,) = audit.query(conn, action="alert.ack")
    assert entry.actor == "rina" and entry.detail["via"] == "key"


def test_login_session_csrf_and_logout(engine: Engine, web: TestClient) -> None:
    add_user(engine, "budi", "operator", PASSWORD)
    page = web.get("/")
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/"
    assert web.post("/_dash-update-component", json={}).status_code == 401
    assert web.get("/_dash-layout").status_code == 401

    form = web.get("/login")
    assert form.status_code == 200 and 'name="csrf_token"' in form.text
    forged = web.post("/login", data={"username": "budi", "password": PASSWORD})
    assert forged.status_code == 403 and "its_session" not in web.cookies  # no CSRF, no session
    junk = _sign_in(web, "budi\x00" + "x" * 100, "not the password")
    assert junk.status_code == 401  # refused and audited, never a 5xx
    wrong = _sign_in(web, "budi", "not the password")
    assert wrong.status_code == 401 and "wrong username or password" in wrong.text
    r = _sign_in(web, "budi")
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert "HttpOnly" in r.headers["set-cookie"] and "SameSite=lax" in r.headers["set-cookie"]
    assert web.get("/").status_code == 200
    layout = web.get("/_dash-layout")
    assert layout.status_code == 200 and "Signed in as budi (operator)" in layout.text
    assert web.get("/api/v1/me").json() == {
        "actor": "budi", "via": "session", "role": "operator", "display_name": "budi",
        "permissions": ["operate", "read"],
    }  # fmt: skip

    alert_id = _alert(engine)
    csrf = web.cookies["_csrf_token"]
    assert web.post(f"/api/v1/alerts/{alert_id}/ack", json={}).status_code == 403
    wrong_csrf = {"X-CSRFToken": "forged-token-of-some-length"}
    assert (
        web.post(f"/api/v1/alerts/{alert_id}/ack", json={}, headers=wrong_csrf).status_code == 403
    )
    assert web.post("/_dash-update-component", json={}).status_code == 403  # Dash needs it too
    ok = web.post(f"/api/v1/alerts/{alert_id}/ack", json={}, headers={"X-CSRFToken": csrf})
    assert ok.status_code == 200 and ok.json()["acked_by"] == "budi"

    session_cookie = web.cookies["its_session"]
    assert web.post("/logout", data={"csrf_token": "forged"}).status_code == 403
    out = web.post("/logout", data={"csrf_token": csrf})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    replay = TestClient(web.app, cookies={"its_session": session_cookie}, follow_redirects=False)
    assert replay.get("/").status_code == 303  # the session ended on the server
    assert replay.get("/api/v1/network").status_code == 401
    with engine.connect() as conn:
        actions = [(e.action, e.outcome) for e in audit.query(conn, actor=None)]
    assert ("signout", "ok") in actions and ("signin", "failed") in actions


def test_signin_link_lands_on_the_dashboard_once(
    engine: Engine, web: TestClient, settings: Settings
) -> None:
    with engine.begin() as conn:
        admin = users.ensure_local_admin(conn)
        token = sessions.create_signin_link(conn, admin, lifetime=timedelta(minutes=5))
    r = web.get(f"/signin/{token}")
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert web.get("/").status_code == 200
    assert web.get("/api/v1/audit").status_code == 200  # the admin reads the audit log
    again = TestClient(web.app, follow_redirects=False).get(f"/signin/{token}")
    assert again.status_code == 303 and again.headers["location"].startswith("/login")
    assert "already used or has expired" in web.get(again.headers["location"]).text
    entries = web.get("/api/v1/audit", params={"action": "signin.link"}).json()
    assert [e["outcome"] for e in entries] == ["failed", "ok"]
    assert (
        web.get("/api/v1/audit", params={"since": "9999-12-31T23:59:59-05:00"}).status_code == 400
    )


def test_viewer_cannot_acknowledge_and_next_stays_local(engine: Engine, web: TestClient) -> None:
    add_user(engine, "vita", "viewer", PASSWORD)
    web.get("/login")
    r = web.post("/login", data={"username": "vita", "password": PASSWORD, "next": "//evil.example/",
                                 "csrf_token": web.cookies["_csrf_token"]})  # fmt: skip
    assert r.headers["location"] == "/"
    alert_id = _alert(engine)
    csrf = {"X-CSRFToken": web.cookies["_csrf_token"]}
    refused = web.post(f"/api/v1/alerts/{alert_id}/ack", json={}, headers=csrf)
    assert refused.status_code == 403 and "role viewer" in refused.json()["detail"]


def test_openapi_documents_the_schemes(web: TestClient) -> None:
    spec = web.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {**schemes["ApiKey"], "in": "header", "name": "X-API-Key"}
    assert schemes["Session"]["in"] == "cookie"
    ack = spec["paths"]["/api/v1/alerts/{alert_id}/ack"]["post"]
    assert {"401", "403"} <= set(ack["responses"]) and ack["security"]
    assert set(spec["components"]["schemas"]["AckRequest"]["properties"]) == {"comment"}
    assert not [p for p in spec["paths"] if p in ("/login", "/logout")]


def test_cli_manages_users_keys_and_shows_the_audit(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    from its.config import get_settings

    monkeypatch.setenv("ITS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ITS_PASSWORD_TIME_COST", "1")
    monkeypatch.setenv("ITS_PASSWORD_MEMORY_KIB", "64")
    monkeypatch.delenv("ITS_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    run = CliRunner().invoke
    try:
        r = run(cli, ["users", "add", "rina", "--role", "supervisor", "--password-stdin"],
                input=PASSWORD + "\n")  # fmt: skip
        assert r.exit_code == 0, r.output
        assert run(cli, ["users", "add", "rina", "--password-stdin"], input=PASSWORD).exit_code == 1
        short = run(cli, ["users", "add", "budi", "--password-stdin"], input="short\n")
        assert short.exit_code != 0 and "at least 8" in short.output
        typed = run(cli, ["users", "add", "budi"], input=f"{PASSWORD}\n{PASSWORD}\n")
        assert typed.exit_code == 0 and PASSWORD not in typed.output  # prompted, hidden
        assert run(cli, ["users", "disable", "budi"]).exit_code == 0
        listing = run(cli, ["users", "list"]).output
        assert re.search(r"budi\s+operator\s+disabled", listing)
        assert re.search(r"rina\s+supervisor\s+active", listing)
        assert (
            run(
                cli, ["users", "passwd", "rina", "--password-stdin"], input="new password!\n"
            ).exit_code
            == 0
        )
        assert "/signin/" in run(cli, ["users", "link", "rina"]).output
        made = run(cli, ["keys", "create", "--name", "grafana", "--scope", "read"])
        key = re.search(r"^(itsk_\w+)\.\S+$", made.output, re.M)
        assert made.exit_code == 0 and key, made.output
        assert "grafana" in run(cli, ["keys", "list"]).output
        assert key.group(0).split(".")[1] not in run(cli, ["keys", "list"]).output
        assert run(cli, ["keys", "revoke", key.group(1)]).exit_code == 0
        assert re.search(rf"{key.group(1)}\s+read\s+revoked", run(cli, ["keys", "list"]).output)
        log = run(cli, ["audit", "--limit", "20"]).output
        for action in ("user.add", "user.disable", "user.passwd", "key.create", "key.revoke"):
            assert action in log, log
        assert "actor=cli:" in log
    finally:
        get_settings.cache_clear()


def test_dashboard_acknowledges_as_the_signed_in_person_only(
    sqlite_engine: Engine, network: Network, settings: Settings
) -> None:
    from dashboard import views
    from its.auth.identity import Identity

    add_user(sqlite_engine, "vita", "viewer")
    add_user(sqlite_engine, "ops", "operator")
    d = views.Dashboard(settings=settings, engine=sqlite_engine, network=network)
    alert_id = _alert(sqlite_engine)

    def who(username: str) -> Identity:
        with sqlite_engine.begin() as conn:
            user = users.get_user(conn, username)
            new = sessions.start_session(conn, user, lifetime=timedelta(hours=1))
            return Identity.of_session(sessions.find_session(conn, new.token))

    def said(msg) -> str:  # noqa: ANN001 - a Dash component
        return str(msg.children)

    assert "session has ended" in said(views.acknowledge(d, alert_id, None, "x"))
    assert "Your role (viewer)" in said(views.acknowledge(d, alert_id, who("vita"), "x"))
    with sqlite_engine.connect() as conn:
        assert store.get_alert(conn, alert_id).acked_by is None
    ok = views.acknowledge(d, alert_id, who("ops"), " on it ", client="192.0.2.1")
    assert "acknowledged by ops" in said(ok)
    with sqlite_engine.connect() as conn:
        (entry,) = audit.query(conn, action="alert.ack")
    assert (entry.actor, entry.client, entry.detail) == (
        "ops",
        "192.0.2.1",
        {"via": "session", "comment": "on it"},
    )
