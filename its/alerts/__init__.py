"""Alerts: pure rules over traffic aggregates (``rules``), their persisted state (``state``), the
alert store and lifecycle (``store``), and the evaluator that runs the rules on the data clock
(``evaluator``). See docs/alerts.md. No MQTT client in here: publishing is injected.
"""
