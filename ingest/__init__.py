"""Ingest: MQTT subscription -> validated batches -> the store; ack after commit; dead letters."""
