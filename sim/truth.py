"""Ground truth of a simulated run, and scenario files for repeatable scenario sets.

A detection benchmark needs to know what really happened: ``--truth FILE`` writes every incident
and sensor fault of the run as JSON lines (one event per line, absolute UTC times), the moment the
run's start is known. ``--scenario FILE`` reads incidents and faults from a JSON file, with times
relative to the run start (``"+10m"``) or absolute (ISO 8601 with zone), so a set of scenarios can
be replayed exactly with the same seed.

Scenario file::

    {"incidents": [{"segment": "SDR-N-02", "start": "+10m", "duration": "45m", "severity": 0.55}],
     "faults": [{"station": "JKT-SDR-N-003", "kind": "stuck", "start": "+5m", "duration": "30m"}],
     "gateways": [{"gateway": "GW-GTS-E-2", "start": "+20m", "duration": "15m"}]}

A gateway outage silences every station behind the gateway (``gateway_id`` in the network); the
truth file lists each station's ``silent`` fault with ``"gateway"`` set.

Demand changes are not modelled yet (the traffic model's demand is its day profile).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from its.contract import iso
from its.network import Network
from sim.scenario import (
    DEFAULT_INCIDENT_SEVERITY,
    Incident,
    Scenario,
    ScenarioError,
    SensorFault,
    _parse_when,
    gateway_outage,
    parse_duration,
)


def truth_records(scenario: Scenario) -> Iterator[dict[str, Any]]:
    """One JSON-ready record per incident and fault of ``scenario``."""
    for i in scenario.incidents:
        yield {
            "type": "incident",
            "segment": i.segment_id,
            "start": iso(i.start),
            "end": iso(i.end),
            "severity": i.severity,
            # the model closes capacity by severity, not whole lanes: none are named closed
            "lanes_closed": None,
        }
    for f in scenario.faults:
        yield {
            "type": "fault",
            "station": f.station_id,
            "kind": f.kind,
            "start": iso(f.start),
            "end": iso(f.end) if f.end else None,
            **({"gateway": f.gateway_id} if f.gateway_id else {}),
        }


def write_truth(path: Path, scenario: Scenario) -> None:
    """Write the run's ground truth as JSON lines (the file is replaced)."""
    with path.open("w", encoding="utf-8") as out:
        for record in truth_records(scenario):
            out.write(json.dumps(record) + "\n")


def _end(item: dict[str, Any], begin: datetime, start: datetime) -> datetime | None:
    if "end" in item and item["end"] is not None:
        return _parse_when(str(item["end"]), start)
    if "duration" in item and item["duration"] is not None:
        return begin + parse_duration(str(item["duration"]))
    return None


def load_scenario_file(path: Path, start: datetime, network: Network | None = None) -> Scenario:
    """Read a scenario file (see the module docstring) against the run ``start``.

    Raises :class:`ScenarioError` naming the entry that cannot be used.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ScenarioError(f"cannot read scenario file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"scenario file {path}: expected a JSON object")
    incidents, faults = [], []
    n, kind = 0, "entry"
    try:
        kind = "incident"
        for n, item in enumerate(data.get("incidents", []), 1):  # noqa: B007 - n names it
            begin = _parse_when(str(item.get("start", "+0m")), start)
            end = _end(item, begin, start)
            if end is None:
                raise ScenarioError("needs an end or a duration")
            incidents.append(
                Incident(
                    str(item["segment"]),
                    begin,
                    end,
                    float(item.get("severity", DEFAULT_INCIDENT_SEVERITY)),
                )
            )
        kind = "fault"
        for n, item in enumerate(data.get("faults", []), 1):  # noqa: B007 - n names it
            begin = _parse_when(str(item.get("start", "+0m")), start)
            faults.append(
                SensorFault(str(item["station"]), item["kind"], begin, _end(item, begin, start))
            )
        kind = "gateway outage"
        for n, item in enumerate(data.get("gateways", []), 1):  # noqa: B007 - n names it
            if network is None:
                raise ScenarioError("gateway outages need the road network")
            begin = _parse_when(str(item.get("start", "+0m")), start)
            faults.extend(
                gateway_outage(network, str(item["gateway"]), begin, _end(item, begin, start))
            )
    except (KeyError, TypeError, ValueError, AttributeError, ScenarioError) as exc:
        raise ScenarioError(f"scenario file {path}: bad {kind} {n}: {exc}") from None
    scenario = Scenario(tuple(incidents), tuple(faults))
    if network is not None:
        scenario.check(network)
    return scenario
