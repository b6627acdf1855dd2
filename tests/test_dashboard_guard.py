"""Nothing a signed-in browser (or a forged request with its cookies) sends to Dash's callback
endpoint answers 5xx: malformed bodies are a 400 from dashboard/guard.py, and values a client
controls (alert ids, comments, segment ids) are checked by the views."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.engine import Engine

from dashboard.guard import CallbackShapeError, check_callback_body
from dashboard.ids import ids
from its.alerts import store
from its.cli import build_web_app
from its.config import Settings
from its.db import schema
from its.network import Network
from tests.conftest import add_user

PASSWORD = "a long enough password"
SEGMENT_OUTPUT = f"{ids.segment_graph}.figure"


@pytest.fixture
def signed_in(settings: Settings, engine: Engine, network: Network) -> TestClient:
    """A browser session of an operator, with the CSRF header Dash's renderer sends."""
    add_user(engine, "rina", "operator", PASSWORD)
    client = TestClient(
        build_web_app(settings, engine=engine, network=network),
        follow_redirects=False,
        raise_server_exceptions=False,
    )
    client.get("/login")
    form = {"username": "rina", "password": PASSWORD, "csrf_token": client.cookies["_csrf_token"]}
    assert client.post("/login", data=form).status_code == 303
    client.headers["X-CSRFToken"] = client.cookies["_csrf_token"]
    return client


def _segment_request(segment: Any) -> dict[str, Any]:
    """What the renderer posts to redraw the segment chart (see dashboard/callbacks.py)."""
    return {
        "output": SEGMENT_OUTPUT,
        "outputs": {"id": ids.segment_graph, "property": "figure"},
        "inputs": [
            {"id": ids.selected_segment, "property": "data", "value": segment},
            {"id": ids.interval, "property": "n_intervals", "value": 1},
        ],
        "changedPropIds": [f"{ids.selected_segment}.data"],
    }


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"garbage", "invalid JSON"),
        (b"[]", "JSON object"),
        (b"{}", "unknown callback output"),
        (b'{"output": "nope.children"}', "unknown callback output"),
        (b'{"output": 7}', "unknown callback output"),
        (orjson.dumps({**_segment_request("SDR-N-01"), "inputs": []}), "inputs"),
        (orjson.dumps({**_segment_request("SDR-N-01"), "inputs": "x"}), "inputs"),
        (
            orjson.dumps(
                {**_segment_request("SDR-N-01"), "inputs": [{"id": "other", "property": "x"}] * 2}
            ),
            "inputs[0]",
        ),
        (orjson.dumps({**_segment_request("SDR-N-01"), "changedPropIds": [1]}), "changedPropIds"),
    ],
)
def test_malformed_callback_requests_are_400(
    signed_in: TestClient, body: bytes, reason: str
) -> None:
    response = signed_in.post(
        "/_dash-update-component", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert reason in response.json()["detail"]


@pytest.mark.parametrize("segment", ["SDR-N-01", "NOPE", ["SDR-N-01"], {"a": 1}, 12, None, ""])
def test_segment_chart_answers_any_value_the_client_sends(
    signed_in: TestClient, segment: Any
) -> None:
    response = signed_in.post("/_dash-update-component", json=_segment_request(segment))
    assert response.status_code in (200, 204), response.text


def _ack_request(alert: Any, comment: Any) -> dict[str, Any]:
    button = {"alert": alert, "type": ids.ack_button("x")["type"]}
    return {
        "output": f"..{ids.ack_message}.children...{ids.ack_version}.data..",
        "outputs": [
            {"id": ids.ack_message, "property": "children"},
            {"id": ids.ack_version, "property": "data"},
        ],
        "inputs": [[{"id": button, "property": "n_clicks", "value": 1}]],
        "state": [
            {"id": ids.comment, "property": "value", "value": comment},
            {"id": ids.ack_version, "property": "data", "value": 0},
        ],
        "changedPropIds": [
            orjson.dumps(button, option=orjson.OPT_SORT_KEYS).decode() + ".n_clicks"
        ],
    }


@pytest.mark.parametrize(
    ("alert", "comment", "shown"),
    [
        ("abc", None, "no such alert"),
        (2**40, None, "no longer exists"),
        (True, None, "no such alert"),
        (None, "ok", "no such alert"),
        ("real", "on\x00site", "control characters"),
        ("real", 12, "must be text"),
        ("real", "c" * 2001, "longer than 2000"),
    ],
)
def test_acknowledge_refuses_forged_values_with_a_message(
    signed_in: TestClient, engine: Engine, alert: Any, comment: Any, shown: str
) -> None:
    with engine.begin() as conn:
        real = store.raise_or_repeat(
            conn, "congestion", "SDR-N-01", "minor", "slow", {}, datetime.now(UTC)
        ).alert.id
    response = signed_in.post(
        "/_dash-update-component", json=_ack_request(real if alert == "real" else alert, comment)
    )
    assert response.status_code == 200, response.text
    assert shown in response.text
    with engine.connect() as conn:
        acked = conn.scalar(select(schema.alerts.c.acked_at).where(schema.alerts.c.id == real))
    assert acked is None


def test_a_well_formed_acknowledgement_still_lands(signed_in: TestClient, engine: Engine) -> None:
    with engine.begin() as conn:
        at = datetime.now(UTC) - timedelta(minutes=1)
        real = store.raise_or_repeat(conn, "congestion", "SDR-N-01", "minor", "slow", {}, at)
    response = signed_in.post(
        "/_dash-update-component", json=_ack_request(real.alert.id, "police on site")
    )
    assert response.status_code == 200, response.text
    with engine.connect() as conn:
        row = conn.execute(select(schema.alerts).where(schema.alerts.c.id == real.alert.id)).one()
    assert (row.acked_by, row.ack_comment) == ("rina", "police on site")


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


def test_any_json_body_is_answered_without_5xx(signed_in: TestClient) -> None:
    outputs = [SEGMENT_OUTPUT, f"..{ids.ack_message}.children...{ids.ack_version}.data.."]

    @hsettings(
        max_examples=150, deadline=None, derandomize=True, database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )  # fmt: skip
    @given(
        output=st.sampled_from(outputs) | st.text(max_size=30),
        inputs=_JSON,
        state=_JSON,
        changed=_JSON,
    )
    def check(output: str, inputs: Any, state: Any, changed: Any) -> None:
        body = {"output": output, "inputs": inputs, "state": state, "changedPropIds": changed}
        response = signed_in.post("/_dash-update-component", json=body)
        assert response.status_code < 500, response.text

    check()


def test_shape_check_accepts_what_the_renderer_sends(signed_in: TestClient) -> None:
    callback_map = next(
        m.kwargs["callback_map"]
        for m in signed_in.app.user_middleware
        if "callback_map" in m.kwargs
    )
    check_callback_body(orjson.dumps(_segment_request("SDR-N-01")), callback_map)
    check_callback_body(orjson.dumps(_ack_request(1, "x")), callback_map)
    with pytest.raises(CallbackShapeError):
        check_callback_body(b'{"output": "x"}', callback_map)
