"""The traffic simulator: a pure, seeded traffic model (``sim.model``), scenarios with incidents
and broken sensors (``sim.scenario``), a paced live MQTT publisher with one connection and Last
Will per station (``sim.publisher``) and a fast history backfill (``sim.backfill``).

Nothing here reads settings or connects at import time; ``its sim`` in ``its/cli.py`` wires it.
"""
