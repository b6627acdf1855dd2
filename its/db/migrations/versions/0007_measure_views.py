"""Performance-measure views for Grafana and psql: ``v_segment_5m`` and ``v_corridor_5m``.

They compute, in SQL, from the 5-minute segment roll-ups (``rollup_segment_5m``) and the network
tables, the same numbers as ``GET /api/v1/measures?bucket=5m`` (its/service/measures.py; the
equality is tested on SQLite and PostgreSQL in tests/test_measures.py): flow, speed, occupancy,
% observed, VKT, VHT, delay against free flow and against 60 km/h, travel time and TTI per
segment; and per corridor direction the same sums, with segments without a speed filled at free
flow. The SQL is written once for both backends (CASE instead of GREATEST/LEAST, which SQLite
lacks; NULLIF where a degenerate zero-length segment would divide by zero). Views are not in the
SQLAlchemy metadata and alembic's autogenerate compares tables only,
so ``its db check`` ignores them; a change to a view is a new migration that re-creates it.

Revision ID: 0007_measure_views
Revises: 0006_rollup_dirty_key_index
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0007_measure_views"
down_revision = "0006_rollup_dirty_key_index"
branch_labels = None
depends_on = None

# Per segment and 5-minute bucket (h = 300 s = 1/12 h). Inner query: the handbook's flow, speed,
# occupancy and % observed (as its.service.traffic._intervals: a silent station's lanes are
# expected at the default 30-s period); outer query: the measures (its.service.measures).
V_SEGMENT_5M = """
CREATE VIEW v_segment_5m AS
SELECT segment_id, corridor_id, direction, seq, bucket_start,
       flow_vph, speed_kph, occupancy, pct_observed,
       flow_vph * length_km / 12.0 AS vkt_veh_km,
       CASE WHEN flow_vph = 0 THEN 0.0
            WHEN speed_kph IS NOT NULL THEN flow_vph * length_km / speed_kph / 12.0
       END AS vht_veh_h,
       CASE WHEN flow_vph = 0 THEN 0.0
            WHEN speed_kph IS NULL THEN NULL
            WHEN length_km / speed_kph > length_km / free_flow_kph
            THEN flow_vph * (length_km / speed_kph - length_km / free_flow_kph) / 12.0
            ELSE 0.0
       END AS delay_ff_veh_h,
       CASE WHEN flow_vph = 0 THEN 0.0
            WHEN speed_kph IS NULL THEN NULL
            WHEN length_km / speed_kph > length_km / 60.0
            THEN flow_vph * (length_km / speed_kph - length_km / 60.0) / 12.0
            ELSE 0.0
       END AS delay_60_veh_h,
       60.0 * length_km / speed_kph AS travel_time_min,
       60.0 * length_km / free_flow_kph AS free_flow_time_min,
       free_flow_kph / speed_kph AS tti,
       length_km, free_flow_kph
FROM (
    SELECT r.target_id AS segment_id, g.corridor_id, g.direction, g.seq, r.bucket_start,
           g.length_m / 1000.0 AS length_km, g.free_flow_kph,
           r.flow / r.stations AS flow_vph,
           CASE WHEN r.q_over_v > 0 THEN r.q_speed / r.q_over_v END AS speed_kph,
           CASE WHEN r.occ_n > 0 THEN r.occ_sum / r.occ_n END AS occupancy,
           CASE WHEN r.expected > 0 AND 100.0 * r.lane_rows / r.expected < 100.0
                THEN 100.0 * r.lane_rows / r.expected
                WHEN r.expected > 0 THEN 100.0
                ELSE 0.0
           END AS pct_observed
    FROM (
        SELECT x.*, (l.lanes - x.lanes_reporting) * 10.0 + x.expected_own AS expected
        FROM rollup_segment_5m x
        JOIN (SELECT segment_id, sum(lanes) AS lanes FROM stations GROUP BY segment_id) l
          ON l.segment_id = x.target_id
    ) r
    JOIN segments g ON g.segment_id = r.target_id
    WHERE r.stations > 0
) m
"""

# Per corridor, direction and 5-minute bucket, over v_segment_5m. Travel time = the sum of every
# segment's L / v in the direction, a segment without a speed (or without a row) at free flow:
# free-flow time of the direction + the observed segments' extra time over free flow.
V_CORRIDOR_5M = """
CREATE VIEW v_corridor_5m AS
SELECT s.corridor_id, s.direction, s.bucket_start,
       sum(s.flow_vph * s.length_km) / NULLIF(sum(s.length_km), 0) AS flow_vph,
       CASE WHEN count(s.speed_kph) > 0
            THEN d.length_km / NULLIF((d.free_flow_time_min + sum(CASE WHEN s.speed_kph IS NOT NULL
                 THEN 60.0 * s.length_km / s.speed_kph - 60.0 * s.length_km / s.free_flow_kph
                 ELSE 0.0 END)) / 60.0, 0)
       END AS speed_kph,
       sum(s.pct_observed * l.lanes) / NULLIF(d.lanes, 0) AS pct_observed,
       sum(s.vkt_veh_km) AS vkt_veh_km,
       CASE WHEN count(s.speed_kph) > 0
            THEN sum(CASE WHEN s.flow_vph = 0 THEN 0.0
                          WHEN s.speed_kph IS NOT NULL THEN s.vht_veh_h
                          ELSE s.vkt_veh_km / s.free_flow_kph END)
       END AS vht_veh_h,
       CASE WHEN count(s.speed_kph) > 0 THEN sum(coalesce(s.delay_ff_veh_h, 0.0)) END
           AS delay_ff_veh_h,
       CASE WHEN count(s.speed_kph) > 0
            THEN sum(CASE WHEN s.speed_kph IS NOT NULL THEN s.delay_60_veh_h
                          WHEN s.free_flow_kph < 60.0
                          THEN s.vkt_veh_km * (1.0 / s.free_flow_kph - 1.0 / 60.0)
                          ELSE 0.0 END)
       END AS delay_60_veh_h,
       CASE WHEN count(s.speed_kph) > 0
            THEN d.free_flow_time_min + sum(CASE WHEN s.speed_kph IS NOT NULL
                 THEN s.travel_time_min - s.free_flow_time_min ELSE 0.0 END)
       END AS travel_time_min,
       d.free_flow_time_min,
       CASE WHEN count(s.speed_kph) > 0
            THEN (d.free_flow_time_min + sum(CASE WHEN s.speed_kph IS NOT NULL
                 THEN s.travel_time_min - s.free_flow_time_min ELSE 0.0 END))
                 / NULLIF(d.free_flow_time_min, 0)
       END AS tti,
       d.segments,
       count(s.speed_kph) AS segments_observed
FROM v_segment_5m s
JOIN (SELECT segment_id, sum(lanes) AS lanes FROM stations GROUP BY segment_id) l
  ON l.segment_id = s.segment_id
JOIN (
    SELECT g.corridor_id, g.direction, count(*) AS segments,
           sum(g.length_m) / 1000.0 AS length_km,
           sum(60.0 * g.length_m / 1000.0 / g.free_flow_kph) AS free_flow_time_min,
           sum(coalesce(sl.lanes, 0)) AS lanes
    FROM segments g
    LEFT JOIN (SELECT segment_id, sum(lanes) AS lanes FROM stations GROUP BY segment_id) sl
      ON sl.segment_id = g.segment_id
    GROUP BY g.corridor_id, g.direction
) d ON d.corridor_id = s.corridor_id AND d.direction = s.direction
GROUP BY s.corridor_id, s.direction, s.bucket_start, d.length_km, d.free_flow_time_min,
         d.segments, d.lanes
"""


def upgrade() -> None:
    op.execute(V_SEGMENT_5M)
    op.execute(V_CORRIDOR_5M)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS v_corridor_5m")
    op.execute("DROP VIEW IF EXISTS v_segment_5m")
