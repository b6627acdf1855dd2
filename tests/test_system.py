"""The whole system as ``make run`` starts it: ``its up`` on the embedded defaults (SQLite and the
embedded broker), the simulator running fast with its demo incident, and an operator in headless
Chromium who sees the congestion alert the simulator caused and acknowledges it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from selenium.webdriver.common.by import By
from sqlalchemy import select

from dashboard.ids import ids
from ingest.broker import free_port
from its.db import schema
from its.db.engine import make_engine
from its.network import Network
from sim.scenario import demo_segment
from tests.browser import click, wait_until
from tests.conftest import add_key, wait_for

MAP_HOVER_JS = f"""
const gd = document.querySelector('#{ids.map_graph} .js-plotly-plot');
return gd && gd.data ? JSON.stringify(gd.data.map(t => t.hovertext)) : null;
"""
SPEED = "240"  # 4 simulated minutes per second: the demo incident congests within seconds


@pytest.fixture
def its_up(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen]]:
    """``its up`` in its own process, as ``make run`` runs it, on a fresh data directory."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITS_")}
    env.update(
        ITS_DATA_DIR=str(tmp_path / "var"),
        ITS_WEB_PORT=str(port),
        ITS_EMBEDDED_MQTT_PORT="0",
        ITS_REFRESH_SECONDS="1",
    )
    log = (tmp_path / "its-up.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "its.cli", "up", "--speed", SPEED],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}", tmp_path, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def _get(url: str, headers: dict[str, str] | None = None) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5, headers=headers)
    except httpx.HTTPError:
        return None


def test_make_run_shows_live_traffic_and_operator_acknowledges_sim_alert(
    its_up: tuple[str, Path, subprocess.Popen], browser, network: Network
) -> None:
    base, workdir, proc = its_up
    output = workdir / "its-up.log"

    def up() -> bool:
        assert proc.poll() is None, output.read_text()[-3000:]
        r = _get(f"{base}/healthz")
        return r is not None and r.status_code == 200

    wait_for(up, timeout=60, interval=0.3, what="its up to serve /healthz")
    # Like Jupyter's token URL: a one-time link for the local admin, printed on every start.
    link = wait_for(
        lambda: re.search(r"sign in: (http://\S+/signin/\S+)", output.read_text()),
        timeout=30,
        what="the sign-in link in the output of its up",
    ).group(1)
    assert link.startswith(base + "/signin/")
    engine = make_engine(f"sqlite:///{workdir / 'var' / 'its.db'}")
    key = {"X-API-Key": add_key(engine, "read", name="system-test")}
    assert _get(f"{base}/api/v1/network").status_code == 401  # nobody gets in without identity

    def live_speeds() -> int:
        r = _get(f"{base}/api/v1/network", key)
        feats = r.json()["features"] if r is not None and r.status_code == 200 else []
        return sum(1 for f in feats if f["properties"]["speed_kph"] is not None)

    assert wait_for(live_speeds, timeout=90, what="live speeds in /api/v1/network") > 0
    target = demo_segment(network)

    def sim_alert() -> dict | None:
        r = _get(f"{base}/api/v1/alerts?state=all", key)
        alerts = r.json() if r is not None and r.status_code == 200 else []
        return next(
            (a for a in alerts if a["rule"] == "congestion" and a["target_id"] == target), None
        )

    alert = wait_for(sim_alert, timeout=120, interval=0.5, what=f"a congestion alert on {target}")
    assert "Ingest" in output.read_text() or "ingest" in output.read_text()
    # one /metrics for the whole process: ingest, alerts and web (docs/observability.md)
    assert _get(f"{base}/metrics").status_code == 401
    metrics = _get(f"{base}/metrics", {"Authorization": f"Bearer {key['X-API-Key']}"}).text
    inserted = re.search(r"^its_ingest_readings_inserted_total (\S+)$", metrics, re.M)
    assert inserted and float(inserted.group(1)) > 0, metrics[:2000]
    assert re.search(
        r'^its_alerts_events_total\{event="raised",rule="congestion"\} [1-9]', metrics, re.M
    )
    assert 'its_http_request_seconds_count{method="GET",route="/api/v1/alerts"}' in metrics

    browser.get(link)  # signs in and lands on the dashboard at once
    wait_until(
        browser,
        lambda d: "Signed in as" in d.find_element(By.ID, ids.signed_in).text,
        60,
        "the dashboard, signed in as the local admin",
    )
    assert browser.current_url == base + "/"
    wait_until(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, f"#{ids.map_graph} canvas"),
        60,
        "the map to render",
    )
    # The live map keeps redrawing (a MapLibre style error once froze it after its first draw).
    drawn = browser.execute_script(MAP_HOVER_JS)
    wait_until(browser, lambda d: d.execute_script(MAP_HOVER_JS) != drawn, 30, "the map to redraw")
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    row = f"#{ids.alert_item(alert['id'])}"
    wait_until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, row), 60, "the alert row")
    click(browser, f"{row} .ack-button", "the Acknowledge button")
    a = schema.alerts

    def acked_by() -> str | None:
        with engine.connect() as conn:
            return conn.execute(select(a.c.acked_by).where(a.c.id == alert["id"])).scalar()

    assert wait_for(acked_by, timeout=30, what="the acknowledgement in the database") == "admin"
    engine.dispose()

    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"its up still running 60 s after SIGINT:\n{output.read_text()[-3000:]}")
    assert code == 0, output.read_text()[-3000:]
    text = output.read_text()
    assert "dashboard: http://127.0.0.1:" in text
    assert "stopped" in text
