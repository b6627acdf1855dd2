"""ITS monitoring platform: the core (config, domain, wire contract, metrics, storage, alerts, API)."""

__version__ = "0.1.0"
