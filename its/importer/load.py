"""Loading import files: every line validated as ingest validates a message, written in big
batches, counted, and exactly once however often the same files are loaded.

Line formats (docs/storage.md, Import):

- NDJSON, one of:
  ``{"topic": "its/v1/stations/S/obs", "payload": {...}}`` a message as MQTT carried it (the
  payload a JSON value, or a string holding the payload's text; other keys such as
  ``mosquitto_sub -F %J`` writes, ``tst``, ``qos``, ``retain``, are ignored), so a capture of the
  broker's traffic loads as it is; a bare observation ``{"v": 1, "station_id": ...}``; or a bare
  array of observations (as a gateway publishes).
- CSV: one lane reading per row under a header naming the columns (:mod:`its.importer.sources`).

What ingest refuses becomes a dead letter with ingest's reason, its topic ``import:PATH:LINE``
(so it can be found, fixed and loaded again), one per line. Loading a file again stores no
reading twice (the reading key) and records no dead letter twice (the same ``import:PATH:LINE``).
State messages are validated but not applied: they describe a station's state when they were
sent, not now.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.engine import Engine

from ingest.pipeline import Batch, Message, Pipeline
from its.config import Settings
from its.db import schema
from its.db.writes import TOPIC_MAX_CHARS, DeadLetter, insert_dead_letters, storable_text
from its.errors import PayloadError
from its.importer.bulk import write_readings
from its.importer.sources import LINE_SLACK, Line, Source, csv_observation

DEFAULT_BATCH_ROWS = 50_000
TOO_OLD = "is older than the raw retention"  # in ingest's reason for such a reading
_PROGRESS_EVERY = 2000  # lines between progress reports
_MAX_DEAD = 5000  # dead letters a batch holds at most (a file of bad lines stays flat in memory)


@dataclass
class ImportStats:
    """What an import did; ``summary`` is the line `its import` prints."""

    files: int = 0
    lines: int = 0
    readings: int = 0  # valid reading rows read
    stored: int = 0
    duplicates: int = 0  # valid rows already stored (an earlier run) or repeated in the files
    dead_letters: int = 0  # recorded by this run
    dead_letters_known: int = 0  # refused lines an earlier run of the same file recorded
    states_skipped: int = 0
    too_old: int = 0  # lines refused as older than the raw retention
    batches: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Valid readings per second."""
        return self.readings / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        known = (
            f" ({self.dead_letters_known:,} more recorded by an earlier run)"
            if self.dead_letters_known
            else ""
        )
        states = (
            f", {self.states_skipped:,} state messages not applied" if self.states_skipped else ""
        )
        old = (
            f"; {self.too_old:,} lines older than the raw retention (--accept-old loads them)"
            if self.too_old
            else ""
        )
        return (
            f"imported {self.files} file(s): {self.lines:,} lines, {self.stored:,} readings "
            f"stored, {self.duplicates:,} duplicates, {self.dead_letters:,} dead letters"
            f"{known}{states} in {self.seconds:.1f} s ({self.rate:,.0f} readings/s){old}"
        )


def provenance(path: Path, line: int) -> str:
    """A dead letter's topic for a refused line: where to find it."""
    return f"import:{path}:{line}"


class Importer:
    """Loads files through ingest's validation (:class:`ingest.pipeline.Pipeline`) into the
    store, ``batch_rows`` readings per transaction."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        accept_old: bool = False,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.pipeline = Pipeline(engine, settings, clock=clock)
        self.pipeline.accept_old = accept_old
        self.batch_rows = batch_rows
        self.clock = clock
        self.progress = progress
        self.stats = ImportStats()
        self.max_line = settings.mqtt_max_payload_bytes + LINE_SLACK
        self._known: set[str] = set()
        self._writer: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None

    def sources(self, paths: Iterable[Path], fmt: str | None = None) -> list[Source]:
        """Every file described and checked first (name, format, CSV header), so a file that
        cannot be read fails the import before anything is written."""
        out = [Source(Path(p).resolve(), fmt, self.max_line) for p in paths]
        for source in out:
            source.check()
        return out

    def run(self, sources: list[Source], stop: threading.Event | None = None) -> ImportStats:
        """Load ``sources`` in order. Batches are written on a second thread while the next one
        is validated (the database and the parsing overlap); an error in either stops the
        import and is raised here, after what was written is counted."""
        started = time.perf_counter()
        self.pipeline.directory.ensure_loaded(lambda: stop is not None and stop.is_set())
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="its-import-write")
        try:
            for source in sources:
                if stop is not None and stop.is_set():
                    break
                self._load(source, stop)
                self.stats.files += 1
        finally:
            try:
                self._wait()
            finally:
                self._writer.shutdown()
                self.stats.seconds = time.perf_counter() - started
        return self.stats

    def _wait(self) -> None:
        """Wait for the batch being written (raising its error, if any)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    # ------------------------------------------------------------------ one file

    def _load(self, source: Source, stop: threading.Event | None) -> None:
        self._wait()  # the previous file's last batch, which reads _known
        self._known = self._recorded(source.path)
        batch, now = Batch(), self.clock()
        reported = 0
        for line in source.lines():
            self.stats.lines += 1
            self._line(source, line, batch, now)
            if len(batch.rows) >= self.batch_rows or len(batch.dead) >= _MAX_DEAD:
                self._flush(batch)
                batch, now = Batch(), self.clock()
            if self.stats.lines % _PROGRESS_EVERY == 0:
                reported = self._report(source, reported)
                if stop is not None and stop.is_set():
                    break
        self._flush(batch)
        self._report(source, reported, done=True)

    def _report(self, source: Source, reported: int, done: bool = False) -> int:
        position = source.size if done else source.position
        if self.progress is not None and position > reported:
            self.progress(position - reported)
        return max(position, reported)

    def _recorded(self, path: Path) -> set[str]:
        """Dead letters an earlier run recorded for this file (their topics)."""
        d = schema.dead_letters
        prefix = storable_text(provenance(path, 0)[:-1], TOPIC_MAX_CHARS)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(d.c.topic).where(d.c.topic.startswith(prefix, autoescape=True))
            )
            return {topic for (topic,) in rows}

    # ------------------------------------------------------------------ one line

    def _line(self, source: Source, line: Line, b: Batch, now: datetime) -> None:
        where = provenance(source.path, line.number)
        msg = Message(where, line.text)
        before = len(b.dead)
        if line.cut_from is not None:
            reason = (
                f"line of {line.cut_from:,} bytes exceeds the limit of {self.max_line:,} bytes "
                "(ITS_MQTT_MAX_PAYLOAD_BYTES plus 64 KiB for a topic)"
            )
            b.dead.append(self._dead(msg, reason, now))
        elif source.format == "csv":
            try:
                data = csv_observation(source.columns, line.text)
            except PayloadError as exc:
                b.dead.append(self._dead(msg, str(exc), now))
            else:
                self.pipeline.collect_observation(data, msg, b, now)
        else:
            self._ndjson(msg, b, now)
        for i in range(before, len(b.dead)):  # whatever the message's topic was
            b.dead[i] = dataclasses.replace(b.dead[i], topic=where)
            if TOO_OLD in b.dead[i].reason:
                self.stats.too_old += 1
        if b.states:
            self.stats.states_skipped += len(b.states)
            b.states.clear()

    def _ndjson(self, msg: Message, b: Batch, now: datetime) -> None:
        try:
            data: Any = orjson.loads(msg.payload)
        except orjson.JSONDecodeError:
            self.pipeline.collect_payload(msg, b, now)  # the reason ingest gives bad JSON
            return
        if isinstance(data, dict) and "topic" in data:
            topic, payload = data["topic"], data.get("payload")
            if not isinstance(topic, str):
                b.dead.append(self._dead(msg, "import line: topic must be a string", now))
            elif "payload" not in data:
                b.dead.append(self._dead(msg, "import line: a topic without a payload", now))
            else:
                body = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
                self.pipeline.collect(Message(topic, body), b, now)
        elif isinstance(data, dict) and len(msg.payload) <= self.settings.mqtt_max_payload_bytes:
            self.pipeline.collect_observation(data, msg, b, now)
        else:  # an array (a gateway's), an oversized object, or not an object at all
            self.pipeline.collect_payload(msg, b, now)

    def _dead(self, msg: Message, reason: str, now: datetime) -> DeadLetter:
        return DeadLetter.bounded(
            msg.topic_text, msg.payload, reason, now, self.settings.dead_letter_max_bytes
        )

    # ------------------------------------------------------------------ writing

    def _flush(self, b: Batch) -> None:
        """Hand ``b`` to the writer thread, once the batch before it is written."""
        if not b.rows and not b.dead:
            return
        self._wait()
        self._pending = self._writer.submit(self._write, b)

    def _write(self, b: Batch) -> None:
        fresh = [d for d in b.dead if storable_text(d.topic, TOPIC_MAX_CHARS) not in self._known]
        with self.engine.begin() as conn:
            stored = write_readings(conn, b.rows)
            insert_dead_letters(conn, fresh)
        self._known.update(storable_text(d.topic, TOPIC_MAX_CHARS) for d in fresh)
        self.stats.readings += len(b.rows)
        self.stats.stored += stored
        self.stats.duplicates += len(b.rows) - stored
        self.stats.dead_letters += len(fresh)
        self.stats.dead_letters_known += len(b.dead) - len(fresh)
        self.stats.batches += 1
