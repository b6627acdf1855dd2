"""Storage: one schema for SQLite, PostgreSQL and TimescaleDB, with backend detection."""
