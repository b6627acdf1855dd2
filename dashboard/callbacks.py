"""Thin callbacks: read the trigger at the edge, call a plain function in :mod:`dashboard.views`.

Callbacks are ``async`` and run the (blocking) service calls in a worker thread, because the
FastAPI backend runs callbacks on the event loop it shares with the API: a database query
there would stall every API request for its duration.
"""

from __future__ import annotations

import asyncio
from typing import Any

from dash import ALL, Dash, Input, Output, State, ctx, no_update

from dashboard import views
from dashboard.ids import ids
from dashboard.session import current_identity


def register_callbacks(app: Dash, d: views.Dashboard) -> None:
    """Wire the page to the views of dashboard ``d``."""

    @app.callback(
        Output(ids.map_graph, "figure"),
        Output(ids.kpis, "children"),
        Output(ids.last_updated, "children"),
        Input(ids.interval, "n_intervals"),
    )
    async def refresh_live(_n: int) -> tuple[Any, Any, Any]:
        v = await asyncio.to_thread(views.live_view, d)
        return v.map_figure, v.kpis, v.updated

    @app.callback(
        Output(ids.alerts_list, "children"),
        Output(ids.alerts_count, "children"),
        Input(ids.interval, "n_intervals"),
        Input(ids.ack_version, "data"),
    )
    async def refresh_alerts(_n: int, _version: int) -> tuple[Any, Any]:
        return await asyncio.to_thread(views.alerts_view, d, current_identity(app))

    @app.callback(
        Output(ids.feed_banner, "children"),
        Output(ids.feed_banner, "className"),
        Input(ids.interval, "n_intervals"),
    )
    async def refresh_feed_banner(_n: int) -> tuple[Any, Any]:
        return await asyncio.to_thread(views.feed_banner_view, d)

    @app.callback(
        Output(ids.ack_message, "children"),
        Output(ids.ack_version, "data"),
        Input(ids.ack_button(ALL), "n_clicks"),
        State(ids.comment, "value"),
        State(ids.ack_version, "data"),
        prevent_initial_call=True,
    )
    async def acknowledge(_clicks: list, comment: str, version: int) -> Any:
        if not (ctx.triggered_id and ctx.triggered and ctx.triggered[0]["value"]):
            return no_update, no_update  # buttons re-rendered, nobody clicked
        alert_id, who = ctx.triggered_id["alert"], current_identity(app)
        client = app.backend.request_adapter().remote_addr
        msg = await asyncio.to_thread(views.acknowledge, d, alert_id, who, comment, client)
        return msg, (version or 0) + 1

    @app.callback(
        Output(ids.selected_segment, "data"),
        Input(ids.map_graph, "clickData"),
        prevent_initial_call=True,
    )
    def select_segment(click: dict | None) -> Any:
        return views.segment_from_click(click) or no_update

    @app.callback(
        Output(ids.segment_graph, "figure"),
        Input(ids.selected_segment, "data"),
        Input(ids.interval, "n_intervals"),
    )
    async def refresh_segment(segment_id: str | None, _n: int) -> Any:
        return await asyncio.to_thread(views.segment_view, d, segment_id)
