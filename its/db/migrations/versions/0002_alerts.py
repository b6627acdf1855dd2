"""Alerts: alert episodes, their audit history, and the rules' persisted state.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from its.db.types import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column(
            "rule", sa.String(64), nullable=False, comment="congestion | station-offline | ..."
        ),
        sa.Column("target_kind", sa.String(16), nullable=False, comment="segment | station"),
        sa.Column("target_id", sa.String(64), nullable=False),
        sa.Column(
            "severity",
            sa.String(16),
            nullable=False,
            comment="critical|major|minor|warning|info",
        ),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("raised_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen", UTCDateTime(), nullable=False),
        sa.Column("cleared_at", UTCDateTime(), nullable=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("acked_at", UTCDateTime(), nullable=True),
        sa.Column("acked_by", sa.String(128), nullable=True),
        sa.Column("ack_comment", sa.Text(), nullable=True),
        sa.Column("assignee", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        comment="One row per alert episode: active until cleared, acknowledged independently.",
    )
    op.create_index(
        "uq_alerts_active_rule_target",
        "alerts",
        ["rule", "target_id"],
        unique=True,
        sqlite_where=sa.text("active"),
        postgresql_where=sa.text("active"),
    )
    op.create_index("ix_alerts_raised_at", "alerts", ["raised_at"])
    op.create_table(
        "alert_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column(
            "event",
            sa.String(16),
            nullable=False,
            comment="raised | repeated | severity | cleared | acknowledged",
        ),
        sa.Column("actor", sa.String(128), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alerts.id"],
            name=op.f("fk_alert_events_alert_id_alerts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_events")),
        comment="Audit history of every alert.",
    )
    op.create_index(op.f("ix_alert_events_alert_id"), "alert_events", ["alert_id"])
    op.create_table(
        "rule_state",
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("target_id", sa.String(64), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("rule", "target_id", name="pk_rule_state"),
        comment="Alert rules' memory (windows, streaks) and the evaluator's progress, so a "
        "restart resumes exactly.",
    )


def downgrade() -> None:
    op.drop_table("rule_state")
    op.drop_index(op.f("ix_alert_events_alert_id"), table_name="alert_events")
    op.drop_table("alert_events")
    op.drop_index("ix_alerts_raised_at", table_name="alerts")
    op.drop_index("uq_alerts_active_rule_target", table_name="alerts")
    op.drop_table("alerts")
