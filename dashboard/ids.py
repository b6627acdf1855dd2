"""Component ids, built by functions so layout, callbacks and tests never disagree on a string.

Following Dash's All-in-One convention (``class ids``): every id the dashboard uses is produced
here, and pattern-matching ids (one Acknowledge button per alert) come from builder functions.
The browser test also reads these to find elements, so renaming an id is a one-line change.
"""

from __future__ import annotations

from typing import Any

PREFIX = "its"


def _id(name: str) -> str:
    return f"{PREFIX}-{name}"


class ids:  # noqa: N801 - the Dash All-in-One convention spells it lower case
    """Plain ids of the dashboard's single-instance components."""

    interval = _id("refresh")
    map_graph = _id("map")
    kpis = _id("kpis")
    last_updated = _id("last-updated")
    alerts_list = _id("alerts")
    alerts_count = _id("alerts-count")
    signed_in = _id("signed-in")
    sign_out = _id("sign-out")
    comment = _id("ack-comment")
    ack_message = _id("ack-message")
    ack_version = _id("ack-version")
    segment_graph = _id("segment-chart")
    selected_segment = _id("selected-segment")
    feed_banner = _id("feed-banner")

    @staticmethod
    def ack_button(alert_id: int | Any) -> dict[str, Any]:
        """The Acknowledge button of one alert; pass ``dash.ALL`` to match every button."""
        return {"type": _id("ack-button"), "alert": alert_id}

    @staticmethod
    def alert_item(alert_id: int) -> str:
        """The row of one alert (a plain id, so tests can find it with a CSS selector)."""
        return _id(f"alert-{alert_id}")
