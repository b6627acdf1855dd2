"""The dirty-key log indexed on (bucket_start, station_id), not the bucket alone.

SQLite's roll-up trigger looks a (station, bucket) key up before logging it. With an index on the
bucket alone, that lookup scanned every station's key of the bucket for each row written: a bulk
import at 2,000 stations wrote about 1,000 rows/s. The composite index also serves what the
bucket index served (the oldest dirty bucket, the worker's claim in bucket order).

Revision ID: 0006_rollup_dirty_key_index
Revises: 0005_retention
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0006_rollup_dirty_key_index"
down_revision = "0005_retention"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_rollup_dirty_bucket_start_station_id", "rollup_dirty", ["bucket_start", "station_id"]
    )
    op.drop_index("ix_rollup_dirty_bucket_start", table_name="rollup_dirty")


def downgrade() -> None:
    op.create_index("ix_rollup_dirty_bucket_start", "rollup_dirty", ["bucket_start"])
    op.drop_index("ix_rollup_dirty_bucket_start_station_id", table_name="rollup_dirty")
