"""The incident rule as a pure function over hand-made minute series of one station pair."""

from __future__ import annotations

import pytest

from its.alerts.config import AlertSettings
from its.alerts.incident import (
    INCIDENT_PRESETS,
    IncidentParams,
    IncidentState,
    PairObservation,
    incident_message,
    incident_params,
    incident_step,
)

P = IncidentParams()  # arterial defaults
FF = 60.0


def series(
    occ_up: list[float],
    occ_down: list[float],
    v_up: list[float] | None = None,
    v_down: list[float] | None = None,
    lag: int = 2,
) -> list[PairObservation]:
    """Minute observations; the "before" values are ``lag`` minutes back in the same lists."""
    out = []
    for t in range(len(occ_up)):
        b = t - lag
        out.append(
            PairObservation(
                occ_up=occ_up[t],
                occ_down=occ_down[t],
                occ_up_before=occ_up[b] if b >= 0 else None,
                occ_down_before=occ_down[b] if b >= 0 else None,
                speed_up=v_up[t] if v_up else None,
                speed_down=v_down[t] if v_down else None,
                speed_up_before=v_up[b] if v_up and b >= 0 else None,
                speed_down_before=v_down[b] if v_down and b >= 0 else None,
                free_flow_up=FF,
                free_flow_down=FF,
            )
        )
    return out


def run(obs: list[PairObservation | None], params: IncidentParams = P) -> list[str]:
    state = IncidentState()
    actions = []
    for o in obs:
        state, d = incident_step(state, o, params)
        actions.append(d.action)
        state = IncidentState.from_json(state.to_json())  # as persisted between steps
    return actions


def first(actions: list[str], action: str = "raise") -> int | None:
    return actions.index(action) if action in actions else None


def test_a_lane_blocking_incident_is_raised_within_two_minutes_where_speed_is_measured() -> None:
    # minutes 0-9 normal; the incident at minute 10: the queue fills the upstream loop at once,
    # the road below is starved a little
    occ_up = [0.12] * 10 + [0.38] * 15
    occ_down = [0.12] * 10 + [0.10] * 15
    v_up = [55.0] * 10 + [20.0] * 15
    v_down = [56.0] * 10 + [57.0] * 15
    actions = run(series(occ_up, occ_down, v_up, v_down))
    # occupancy and speed agree in the first minute: raised at its end (minute 10)
    assert first(actions) == 10
    assert actions[11:] == ["repeat"] * 14


def test_single_loops_need_one_more_minute_of_persistence() -> None:
    occ_up = [0.12] * 10 + [0.38] * 15
    occ_down = [0.12] * 10 + [0.10] * 15
    actions = run(series(occ_up, occ_down))  # no speeds: occupancy variant only
    assert first(actions) == 11  # tentative at minute 10, confirmed at 11
    assert actions[:11] == ["none"] * 11


def test_one_minute_spike_is_not_an_incident() -> None:
    occ_up = [0.12] * 10 + [0.38] + [0.12] * 10
    occ_down = [0.12] * 21
    assert run(series(occ_up, occ_down)) == ["none"] * 21


def test_a_recurrent_jam_building_at_a_bottleneck_is_not_an_incident() -> None:
    # demand grows past capacity: the upstream station slows over 25 minutes, the station past
    # the bottleneck flows; the spatial test holds at the end but nothing changed suddenly
    n = 40
    occ_up = [min(0.45, 0.12 + 0.015 * t) for t in range(n)]
    v_up = [max(15.0, 55.0 - 1.8 * t) for t in range(n)]
    occ_down = [0.12] * n
    v_down = [56.0] * n
    obs = series(occ_up, occ_down, v_up, v_down)
    assert run(obs) == ["none"] * n
    # ... although the pair ends with the same spatial picture as an incident
    state, d = incident_step(IncidentState(), obs[-1], P)
    assert d.evidence["occdf"] >= P.occdf and d.evidence["occrdf"] >= P.occrdf


def test_a_standing_queue_with_noisy_occupancy_is_not_an_incident() -> None:
    # recurrent queue at 18 km/h; the 1-min occupancy jumps by noise, the speed does not
    occ_up = [0.30, 0.42, 0.31, 0.45, 0.30, 0.47, 0.29, 0.44] * 3
    occ_down = [0.12] * 24
    v_up = [18.0] * 24
    v_down = [48.0] * 24
    assert run(series(occ_up, occ_down, v_up, v_down)) == ["none"] * 24


def test_classic_docctd_downstream_emptying_makes_it_tentative() -> None:
    # upstream fills slowly (below onset_rise) but the station downstream empties suddenly
    occ_up = [0.20] * 5 + [0.24] * 10
    occ_down = [0.12] * 5 + [0.05] * 10
    actions = run(series(occ_up, occ_down))
    assert first(actions) == 6  # tentative at 5 (DOCCTD 0.58), confirmed at 6


def test_a_queue_discharging_downstream_is_not_an_incident() -> None:
    # the queue downstream clears (DOCCTD high) while the upstream one is also clearing
    occ_up = [0.40, 0.38, 0.34, 0.30, 0.26, 0.22, 0.20, 0.20]
    occ_down = [0.45, 0.40, 0.30, 0.15, 0.07, 0.06, 0.06, 0.06]
    v_up = [18.0, 20.0, 22.0, 25.0, 28.0, 29.0, 29.0, 29.0]
    v_down = [16.0, 20.0, 30.0, 45.0, 55.0, 58.0, 58.0, 58.0]
    assert run(series(occ_up, occ_down, v_up, v_down)) == ["none"] * 8


def test_a_compression_wave_suppresses_detection_for_five_minutes() -> None:
    # a stop-and-go wave reaches the downstream station first (its occupancy jumps), then the
    # upstream one while downstream recovers: the picture of an incident, suppressed
    occ_down = [0.12] * 5 + [0.40, 0.30] + [0.10] * 13
    occ_up = [0.12] * 7 + [0.40] * 2 + [0.12] * 11
    actions = run(series(occ_up, occ_down))
    assert "raise" not in actions
    # without the wave check the same upstream jump is an incident
    no_wave = IncidentParams(cw_suppress_min=0)
    assert first(run(series(occ_up, occ_down), no_wave)) == 8


def test_clears_after_quiet_minutes_and_no_data_neither_confirms_nor_clears() -> None:
    occ_up = [0.12] * 5 + [0.38] * 5 + [0.12] * 5
    occ_down = [0.12] * 15
    v_up = [55.0] * 5 + [20.0] * 5 + [55.0] * 5
    v_down = [56.0] * 15
    obs: list[PairObservation | None] = list(series(occ_up, occ_down, v_up, v_down))
    actions = run(obs)
    assert first(actions) == 5
    assert first(actions, "clear") == 12  # 3 quiet minutes (clear_k)
    # the same with the detector silent in the middle: no clear while there is no data
    gap = obs[:10] + [None] * 5 + obs[10:]
    actions = run(gap)
    assert actions[10:15] == ["none"] * 5
    assert first(actions, "clear") == 17


def test_state_survives_json_and_bad_state_starts_afresh() -> None:
    s = IncidentState("tentative", 1, 0, 3, "occupancy")
    assert IncidentState.from_json(s.to_json()) == s
    assert IncidentState.from_json({"status": "???", "confirm": "x"}) == IncidentState()
    assert IncidentState.from_json(None) == IncidentState()


def test_thresholds_per_road_class_and_overrides() -> None:
    assert INCIDENT_PRESETS["expressway"].occdf > INCIDENT_PRESETS["arterial"].occdf
    merged = incident_params({"collector": {"occdf": 0.2, "persistence": 2}})
    assert merged["collector"].occdf == 0.2 and merged["collector"].persistence == 2
    assert merged["arterial"] == INCIDENT_PRESETS["arterial"]
    with pytest.raises(ValueError, match="unknown road class"):
        incident_params({"motorway": {"occdf": 0.2}})
    with pytest.raises(ValueError, match="unknown occ"):
        incident_params({"arterial": {"occ": 0.2}})
    with pytest.raises(ValueError, match="occdf"):
        IncidentParams(occdf=0)
    cfg = AlertSettings(_env_file=None, incident={"expressway": {"occrdf": 0.6}})
    assert cfg.incidents()["expressway"].occrdf == 0.6
    with pytest.raises(ValueError):
        AlertSettings(_env_file=None, incident={"expressway": {"occrdf": 5}})


def test_message_names_the_stations_and_what_was_seen() -> None:
    obs = series([0.12, 0.12, 0.38], [0.12, 0.12, 0.10], [55, 55, 20], [56, 56, 57])[-1]
    _s, d = incident_step(IncidentState(), obs, P)
    assert d.action == "raise" and d.evidence["variant"] == "occupancy+speed"
    text = incident_message("Sudirman northbound 1/6", "JKT-SDR-N-002", "JKT-SDR-N-003", d.evidence)
    assert text == (
        "Possible incident on Sudirman northbound 1/6 between JKT-SDR-N-002 and JKT-SDR-N-003: "
        "occupancy 38% upstream vs 10% downstream, 20 vs 57 km/h"
    )
