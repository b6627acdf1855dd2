"""Import files, read line by line: NDJSON in the wire contract and CSV with one lane reading
per row, each plain or gzip-compressed (recognised by its first bytes, whatever its name).

Lines are bounded: a line longer than the payload limit plus room for a topic is not held in
memory whole; it becomes a dead letter (its first bytes kept), and reading goes on at the next
line. Positions are bytes of the file on disk, so a progress bar tracks compressed files too.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from its.errors import ImportFileError, PayloadError

FORMATS = ("ndjson", "csv")
_SUFFIXES = {".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "ndjson", ".csv": "csv"}
#: room for the ``{"topic": ..., "payload": ...}`` wrapper around a payload on one line
LINE_SLACK = 64 * 1024

CSV_REQUIRED = ("station_id", "lane", "interval_start", "period_s")
CSV_OPTIONAL = ("count", "occupancy", "speed_kph", "status")
CSV_COLUMNS = CSV_REQUIRED + CSV_OPTIONAL


def detect_format(path: Path, given: str | None = None) -> str:
    """``ndjson`` or ``csv``: as given, else from the name (``.ndjson``, ``.jsonl``, ``.json``,
    ``.csv``, each optionally ``.gz``)."""
    if given:
        if given not in FORMATS:
            raise ImportFileError(f"unknown format {given!r}; known: {', '.join(FORMATS)}")
        return given
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    fmt = _SUFFIXES.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise ImportFileError(
            f"{path}: cannot tell the format from the name; name it .ndjson or .csv "
            "(optionally .gz), or pass --format"
        )
    return fmt


@dataclass(frozen=True)
class Line:
    """One line of a file: its number (from 1), its bytes without the line end, and, for a
    line over the limit, its full length (``text`` then holds only its first bytes)."""

    number: int
    text: bytes
    cut_from: int | None = None


class Source:
    """One import file: its format, size on disk, how far it has been read, and its lines."""

    def __init__(self, path: Path, fmt: str | None, max_line: int) -> None:
        self.path = path
        self.format = detect_format(path, fmt)
        try:
            self.size = path.stat().st_size
        except OSError as exc:
            raise ImportFileError(f"{path}: {exc.strerror or exc}") from None
        self.max_line = max_line
        self._raw: BinaryIO | None = None
        self.columns: tuple[str, ...] = ()

    @property
    def position(self) -> int:
        """Bytes of the file on disk read so far."""
        return self._raw.tell() if self._raw is not None else 0

    def _open(self) -> BinaryIO:
        self._raw = open(self.path, "rb", buffering=1 << 20)  # noqa: SIM115 - lines() closes it
        magic = self._raw.read(2)
        self._raw.seek(0)
        if magic == b"\x1f\x8b":
            return gzip.GzipFile(fileobj=self._raw, mode="rb")  # type: ignore[return-value]
        return self._raw

    def check(self) -> None:
        """Read a CSV file's header now (the file fails before anything is loaded)."""
        if self.format == "csv":
            lines = self.lines()
            try:
                next(lines, None)
            finally:
                lines.close()  # closes the file
            if not self.columns:
                raise ImportFileError(f"{self.path}: no CSV header (the file is empty)")

    def lines(self) -> Iterator[Line]:
        """The file's non-blank lines. A CSV file's header is read first (see
        :func:`csv_columns`) and not yielded."""
        stream = self._open()
        header_read = False
        try:
            number = 0
            while True:
                chunk = stream.readline(self.max_line + 1)
                if not chunk:
                    return
                number += 1
                length = len(chunk)
                cut = None
                if length > self.max_line and not chunk.endswith(b"\n"):
                    kept = chunk[: self.max_line]
                    while chunk and not chunk.endswith(b"\n"):  # skip the rest of the line
                        chunk = stream.readline(1 << 20)
                        length += len(chunk)
                    cut = length - (1 if chunk.endswith(b"\n") else 0)
                    chunk = kept
                text = chunk.rstrip(b"\r\n")
                if number == 1:
                    text = text.removeprefix(b"\xef\xbb\xbf")  # a byte order mark (Excel)
                if not text.strip() and cut is None:
                    continue
                if self.format == "csv" and not header_read:
                    self.columns = csv_columns(self.path, text)
                    header_read = True
                    continue
                yield Line(number, text, cut)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise ImportFileError(f"{self.path}: cannot read line {number + 1}: {exc}") from None
        finally:
            stream.close()
            self._raw.close()


# --------------------------------------------------------------------------- CSV


def _split(text: bytes) -> list[str]:
    import csv

    return next(csv.reader([text.decode("utf-8")]))


def csv_columns(path: Path, header: bytes) -> tuple[str, ...]:
    """The header's columns, checked: the required ones present, nothing unknown (a typo would
    otherwise silently leave a column empty), nothing twice."""
    try:
        columns = tuple(c.strip().lower() for c in _split(header))
    except (UnicodeDecodeError, StopIteration) as exc:
        raise ImportFileError(f"{path}: unreadable CSV header: {exc}") from None
    missing = [c for c in CSV_REQUIRED if c not in columns]
    unknown = [c for c in columns if c not in CSV_COLUMNS]
    doubled = sorted({c for c in columns if columns.count(c) > 1})
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown {', '.join(repr(c[:40]) for c in unknown[:10])}")
    if doubled:
        problems.append(f"repeated {', '.join(doubled)}")
    if problems:
        raise ImportFileError(
            f"{path}: CSV header {'; '.join(problems)} (columns: {', '.join(CSV_COLUMNS)}; "
            f"the first four are required)"
        )
    return columns


def _number(kind: type, name: str, value: str) -> Any:
    value = value.strip()
    if not value:
        return None
    try:
        return kind(value)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise PayloadError(f"{name}: {value[:40]!r} is not {what}") from None


def csv_observation(columns: tuple[str, ...], text: bytes) -> dict[str, Any]:
    """A CSV row as a one-lane observation of the wire contract (the contract then validates
    it as it validates a message): numbers parsed, empty cells missing (None, never 0)."""
    try:
        cells = _split(text)
    except UnicodeDecodeError:
        raise PayloadError("line is not valid UTF-8") from None
    if len(cells) != len(columns):
        raise PayloadError(f"CSV row has {len(cells)} cells; the header has {len(columns)}")
    row = dict(zip(columns, cells, strict=True))
    lane: dict[str, Any] = {"lane": _number(int, "lane", row["lane"])}
    for name, kind in (("count", int), ("occupancy", float), ("speed_kph", float)):
        if name in row:
            lane[name] = _number(kind, name, row[name])
    obs: dict[str, Any] = {
        "v": 1,
        "station_id": row["station_id"].strip(),
        "interval_start": row["interval_start"].strip(),
        "period_s": _number(int, "period_s", row["period_s"]),
        "lanes": [lane],
    }
    status = row.get("status", "").strip()
    if status:
        obs["status"] = status
    return obs
