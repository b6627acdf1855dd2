"""The dashboard in a real browser on a real server: what an operator sees and clicks.

The dashboard and the API on one app, exactly as `its web` builds it (`build_web_app`), served by
uvicorn on a free 127.0.0.1 port, with data written to the PostgreSQL test database. Headless
Chromium (Debian's, through chromedriver) loads the page; the test waits for the map to render its
band traces, reads the KPI cards, acknowledges an alert by clicking, and checks the DATABASE.

Set ``ITS_SCREENSHOT=docs/dashboard.png`` to also save a 1600x900 screenshot of the populated page.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.by import By
from sqlalchemy.engine import Engine

from dashboard.ids import ids
from ingest.broker import free_port
from its.alerts import store
from its.auth import audit
from its.cli import build_web_app
from its.config import Settings
from its.contract import LaneReading, Observation
from its.db.writes import insert_readings, reading_rows, upsert_station_status
from its.network import Network
from tests.browser import click, wait_until
from tests.conftest import add_key, add_user, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.postgres]

PERIOD_S = 60
HISTORY = timedelta(hours=2)
JAMMED = "SDR-N-03"
# speed / free-flow ratio per segment: one jammed, a few congested and slow, the rest free
RATIOS = {
    JAMMED: 0.14,
    "SDR-N-04": 0.38,
    "TOL-E-02": 0.33,
    "GTS-W-03": 0.42,
    "SDR-N-02": 0.62,
    "TOL-E-03": 0.58,
    "RSD-S-02": 0.66,
    "MTH-E-02": 0.55,
}
SILENT_SEGMENT = "MTH-W-03"  # its stations never report: drawn grey as "no data"
OFFLINE_STATION_INDEX = 5  # this station sent its Last Will


# --------------------------------------------------------------------------- data


def _ratio(segment_id: str, minutes_ago: float) -> float:
    """Today's shape: targets reached over the last hour, free flow before, a little wobble."""
    target = RATIOS.get(segment_id, 0.86 + 0.06 * math.sin(hash(segment_id) % 7))
    ramp = min(1.0, max(0.0, (90 - minutes_ago) / 60))  # congestion builds up from 90 min ago
    ratio = 0.9 + (target - 0.9) * ramp
    return max(0.08, ratio + 0.03 * math.sin(minutes_ago / 7 + len(segment_id)))


def populate(engine: Engine, network: Network, end: datetime) -> dict[str, Any]:
    """Two hours of one-minute readings for every station, plus an offline station and alerts."""
    rows: list[dict[str, Any]] = []
    steps = int(HISTORY.total_seconds() // PERIOD_S)
    for st in network.stations:
        if st.segment_id == SILENT_SEGMENT:
            continue
        seg = network.segment(st.segment_id)
        for k in range(steps):
            start = end - timedelta(seconds=PERIOD_S * (steps - k))
            minutes_ago = (end - start).total_seconds() / 60
            ratio = _ratio(seg.segment_id, minutes_ago)
            speed = seg.free_flow_kph * ratio
            per_lane_vph = 1700 * (4 * ratio * (1 - ratio)) if ratio < 0.5 else 1300 * ratio
            count = max(1, round(per_lane_vph * PERIOD_S / 3600))
            occ = min(0.95, count * 3600 / PERIOD_S * 6.7 / (speed * 1000))
            lanes = [
                LaneReading(lane=i + 1, count=count, occupancy=round(occ, 3), speed_kph=speed)
                for i in range(st.lanes)
            ]
            obs = Observation(
                v=1, station_id=st.station_id, interval_start=start, period_s=PERIOD_S, lanes=lanes
            )
            rows += reading_rows(obs, received_at=start + timedelta(seconds=PERIOD_S))
    offline = network.stations[OFFLINE_STATION_INDEX].station_id
    with engine.begin() as conn:
        insert_readings(conn, rows)
        upsert_station_status(conn, offline, "offline", end, end)
        jam = store.raise_or_repeat(
            conn,
            "congestion",
            JAMMED,
            "critical",
            f"Jammed: {network.segment(JAMMED).free_flow_kph * 0.14:.0f} km/h for 25 min",
            {"speed_kph": 8.4},
            end - timedelta(minutes=25),
        ).alert
        store.raise_or_repeat(
            conn, "congestion", JAMMED, "critical", jam.message, {}, end - timedelta(minutes=1)
        )
        off = store.raise_or_repeat(
            conn,
            "station-offline",
            offline,
            "major",
            "Station offline (Last Will received)",
            {},
            end - timedelta(minutes=3),
            target_kind="station",
        ).alert
        slow = store.raise_or_repeat(
            conn,
            "congestion",
            "TOL-E-02",
            "major",
            "Congested: 26 km/h (free flow 80)",
            {},
            end - timedelta(minutes=12),
        ).alert
        store.acknowledge(conn, slow.id, operator="Rina (shift A)", comment="known works", now=end)
    return {"jam": jam.id, "offline": off.id, "rows": len(rows)}


# --------------------------------------------------------------------------- server


@pytest.fixture
def served(settings: Settings, pg_engine: Engine, network: Network) -> Iterator[str]:
    """The app on uvicorn in a thread; yields its base URL and stops it afterwards."""
    settings = settings.model_copy(update={"refresh_seconds": 2.0})
    app = build_web_app(settings, engine=pg_engine, network=network)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-dashboard", daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=20, what="uvicorn to start")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=15)
    assert not thread.is_alive(), "uvicorn did not stop"


def save_screenshot(driver: webdriver.Chrome, path: str | Path) -> Path:
    """Save what the browser shows as a PNG (the docs' picture of the dashboard)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not driver.save_screenshot(str(path)):
        raise RuntimeError(f"could not save a screenshot to {path}")
    return path


# --------------------------------------------------------------------------- helpers

MAP_TRACES_JS = f"""
const gd = document.querySelector('#{ids.map_graph} .js-plotly-plot');
if (!gd || !gd.data || !gd._fullLayout || !gd._fullLayout.map) return null;
const canvas = gd.querySelector('canvas');
if (!canvas || canvas.width === 0 || canvas.height === 0) return null;
return gd.data.map(t => (t.meta && (t.meta.band || ('station:' + t.meta.health))) || t.name);
"""

UNHOVER_JS = f"""
Plotly.Fx.unhover(document.querySelector('#{ids.map_graph} .js-plotly-plot'));
document.querySelector('#{ids.alerts_list}').scrollTop = 0;
"""

PROJECT_JS = f"""
const gd = document.querySelector('#{ids.map_graph} .js-plotly-plot');
const m = gd._fullLayout.map._subplot.map;
const p = m.project([arguments[0], arguments[1]]);
const r = m.getCanvas().getBoundingClientRect();
return [p.x + r.left, p.y + r.top];
"""


def _text(driver: webdriver.Chrome, css: str) -> str:
    """The rendered text of the first element matching ``css`` (read in one JS call)."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? (e.innerText ?? e.textContent) : '';",
        css,
    )


def _acked_by(engine: Engine, alert_id: int) -> str | None:
    with engine.connect() as conn:
        return store.get_alert(conn, alert_id).acked_by


def _click_segment(driver: webdriver.Chrome, network: Network, segment_id: str) -> None:
    """Click the middle of a segment's line on the map, where an operator would."""
    coords = network.segment(segment_id).coords
    a, b = coords[len(coords) // 2 - 1], coords[len(coords) // 2]
    x, y = driver.execute_script(PROJECT_JS, (a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
    actions = ActionBuilder(driver)
    actions.pointer_action.move_to_location(round(x), round(y)).pause(0.5)
    actions.pointer_action.move_to_location(round(x) + 1, round(y)).pause(0.5).click()
    actions.perform()


def sign_in(driver: webdriver.Chrome, username: str, password: str) -> None:
    """Fill in the login page the dashboard redirected to, as a person would."""
    wait_until(driver, lambda d: d.find_elements(By.ID, "username"), 20, "the login page")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "login-submit").click()


# --------------------------------------------------------------------------- tests


def test_dashboard_does_not_shadow_the_api(served: str, pg_engine: Engine) -> None:
    key = {"X-API-Key": add_key(pg_engine, "read")}
    with httpx.Client(base_url=served, timeout=10) as client:
        page = client.get("/")
        assert page.status_code == 303 and page.headers["location"] == "/login?next=/"
        assert client.get("/_dash-layout").status_code == 401  # Dash's routes need a session
        assert client.get("/healthz").json()["database"] == "ok"
        assert client.get("/api/v1/network").status_code == 401
        assert client.get("/api/v1/network", headers=key).json()["type"] == "FeatureCollection"
        missing = client.get("/api/v1/no-such-thing", headers=key)
        assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}
        paths = set(client.get("/openapi.json").json()["paths"])
        assert "/api/v1/network" in paths
        assert not [p for p in paths if "dash" in p]  # no Dash routes listed
        assert client.get("/docs").status_code == 200
        assert "<form" in client.get("/login").text


def test_operator_sees_the_jam_and_acknowledges_its_alert(
    served: str, browser: webdriver.Chrome, pg_engine: Engine, network: Network
) -> None:
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    made = populate(pg_engine, network, end)
    add_user(pg_engine, "budi", "operator", "budi's long password")
    browser.get(served + "/")
    sign_in(browser, "budi", "budi's long password")
    wait_until(browser, lambda d: "Signed in as budi (operator)" in _text(d, f"#{ids.signed_in}"),
               30, "the signed-in line")  # fmt: skip

    bands = wait_until(browser, lambda d: d.execute_script(MAP_TRACES_JS), 60, "the map to render")
    assert {"free", "slow", "congested", "jammed", "no-data"} <= set(bands)
    assert len([b for b in bands if not b.startswith("station:")]) == 5  # one trace per band
    assert {"station:ok", "station:offline", "station:no-data"} <= set(bands)
    jam_trace = browser.execute_script(
        f"return document.querySelector('#{ids.map_graph} .js-plotly-plot').data"
        ".find(t => t.meta && t.meta.band === 'jammed').customdata.filter(c => c)"
        ".map(c => c[0]);"
    )
    assert set(jam_trace) == {JAMMED}

    speed = wait_until(browser, lambda d: _text(d, "#kpi-speed"), 30, "the KPI cards")
    assert any(ch.isdigit() for ch in speed) and "km/h" in speed
    assert "1 / 1" not in _text(browser, "#kpi-reporting")
    assert any(ch.isdigit() for ch in _text(browser, "#kpi-offline"))
    assert "data time" in _text(browser, f"#{ids.last_updated}")

    row = f"#{ids.alert_item(made['jam'])}"
    wait_until(
        browser, lambda d: d.find_elements(By.CSS_SELECTOR, f"{row} .ack-button"), 30, "alerts"
    )
    assert "acknowledged by Rina (shift A)" in _text(browser, f"#{ids.alerts_list}")

    # The acknowledgement records who is signed in: there is no name to type.
    assert not browser.find_elements(By.CSS_SELECTOR, "input[placeholder='Operator name']")
    browser.find_element(By.ID, ids.comment).send_keys("tow truck sent")
    click(browser, f"{row} .ack-button", "the Acknowledge button")
    wait_for(lambda: _acked_by(pg_engine, made["jam"]) == "budi", 20, what="the ack in the DB")
    wait_until(
        browser,
        lambda d: "acknowledged by budi" in _text(d, row),
        20,
        "the panel to show who acknowledged",
    )
    with pg_engine.connect() as conn:
        (entry,) = audit.query(conn, action="alert.ack")
        assert (entry.actor, entry.target) == ("budi", f"alert:{made['jam']}")
    with pg_engine.connect() as conn:
        assert store.get_alert(conn, made["jam"]).ack_comment == "tow truck sent"
        assert store.get_alert(conn, made["offline"]).acked_by is None  # only the one clicked

    # Clicking the jammed segment charts its last two hours, titled with its name.
    _click_segment(browser, network, JAMMED)
    title = network.segment(JAMMED).name
    wait_until(
        browser,
        lambda d: title in _text(d, f"#{ids.segment_graph} .gtitle"),
        20,
        "the segment chart",
    )
    shot = os.environ.get("ITS_SCREENSHOT")
    if shot:
        browser.execute_script(UNHOVER_JS)  # no hover label over the map, list from the top
        save_screenshot(browser, shot)

    # Signing out ends the session: the dashboard sends the browser back to the login page.
    click(browser, f"#{ids.sign_out}", "the Sign-out button")
    wait_until(browser, lambda d: d.current_url.startswith(served + "/login"), 20, "the login page")
    browser.get(served + "/")
    wait_until(browser, lambda d: "/login" in d.current_url, 20, "the redirect to /login")
    with pg_engine.connect() as conn:
        assert [e.actor for e in audit.query(conn, action="signout")] == ["budi"]


def test_a_stalled_feed_shows_a_critical_banner_until_data_flows(
    served: str, browser: webdriver.Chrome, pg_engine: Engine, network: Network
) -> None:
    """Every sensor stops: the real evaluator raises feed-stalled, the operator sees a critical
    banner across the top saying since when; when data flows again it goes away."""
    from its.alerts.config import AlertSettings
    from its.alerts.evaluator import Evaluator

    last = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=6)
    start = last.replace(second=0) - timedelta(minutes=20)
    rows: list[dict[str, Any]] = []
    for st in network.stations:
        for k in range(20):
            lanes = [
                LaneReading(lane=i + 1, count=9 + (k + i) % 4, occupancy=0.1, speed_kph=50.0)
                for i in range(st.lanes)
            ]
            obs = Observation(
                v=1,
                station_id=st.station_id,
                interval_start=start + timedelta(minutes=k),
                period_s=PERIOD_S,
                lanes=lanes,
            )
            rows += reading_rows(obs, received_at=last)  # the last receipt, 6 min ago
    with pg_engine.begin() as conn:
        insert_readings(conn, rows)
    cfg = AlertSettings(_env_file=None, feed_stall_s=120)
    evaluator = Evaluator(pg_engine, network, alert_settings=cfg)
    try:
        raised = [c.alert.rule for c in evaluator.step().events("raised")]
        assert raised == ["feed-stalled"]  # one alert, no flood of station-offline

        add_user(pg_engine, "sari", "viewer", "sari's long password")
        browser.get(served + "/")
        sign_in(browser, "sari", "sari's long password")
        banner = f"#{ids.feed_banner}"
        text = wait_until(
            browser, lambda d: _text(d, banner) if "STALLED" in _text(d, banner) else None,
            30, "the feed-stalled banner",
        )  # fmt: skip
        local = last.astimezone(network.tz).strftime("%H:%M:%S")
        assert f"since {local}" in text and "min ago" in text
        (element,) = browser.find_elements(By.CSS_SELECTOR, f"{banner}.critical")
        assert element.is_displayed()
        assert element.location["y"] < browser.find_element(By.ID, ids.kpis).location["y"]
        good = wait_until(browser, lambda d: _text(d, "#kpi-good-detectors"), 30, "the card")
        # frozen at the last data, as the banner says: every station reported until then
        assert "good detectors" in good.lower() and "100.0%" in good and "96/96" in good

        # data flows again: the evaluator clears the alert and the banner goes away
        with pg_engine.begin() as conn:
            now, later = datetime.now(UTC), timedelta(minutes=20)
            fresh = [  # the next minutes up to now, received now
                dict(row, interval_start=row["interval_start"] + later, received_at=now)
                for row in rows
                if row["interval_start"] + later + timedelta(seconds=PERIOD_S) <= now
            ]
            insert_readings(conn, fresh)
        cleared = [c.alert.rule for c in evaluator.step().events("cleared")]
        assert cleared == ["feed-stalled"]
        wait_until(
            browser,
            lambda d: not d.find_elements(By.CSS_SELECTOR, f"{banner}.critical"),
            30,
            "the banner to go away",
        )
        assert _text(browser, banner) == ""
    finally:
        evaluator.close()
