"""Bulk import of history: ``its import FILE...`` (docs/storage.md, Import).

- :mod:`its.importer.sources` reads files (NDJSON in the wire contract, CSV with the documented
  columns, either gzip-compressed) into records, one per line;
- :mod:`its.importer.load` validates them exactly as ingest does (through
  :class:`ingest.pipeline.Pipeline`), batches them and counts what happened;
- :mod:`its.importer.bulk` writes a batch the fast way for the backend: PostgreSQL binary COPY
  into a staging table then one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``, SQLite one
  ``executemany`` per transaction.
"""
