"""A small Python client of the analysts' API, for notebooks and scripts.

    from its.client import Client

    api = Client("http://127.0.0.1:8050", api_key=os.environ["ITS_KEY"])
    df = api.aggregates(level="corridor", bucket="1h", start="2026-11-22T00:00:00Z")
    week = api.export(level="station", bucket="5m", start="2026-11-16", end="2026-11-23")
    api.export(level="readings", start=..., end=..., path="readings.parquet")

Answers are pandas DataFrames when pandas is installed (``pip install its-monitor[analysis]``),
lists of dicts otherwise, so the client works in a bare environment too. Times in DataFrames are
UTC datetimes; in dicts they are the API's ISO 8601 text. An error answer raises
:class:`APIError` with the API's status and ``detail``.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

try:
    import httpx2 as httpx
except ImportError:  # pragma: no cover - the plain httpx package offers the same API
    import httpx  # type: ignore[no-redef]

API_KEY_HEADER = "X-API-Key"
TIME_COLUMNS = ("bucket_start", "interval_start", "received_at", "raised_at", "last_seen",
                "cleared_at", "acked_at", "observed_at")  # fmt: skip


class APIError(Exception):
    """The API answered an error: ``status`` (401, 404, 422, ...) and its ``detail``."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


def _pandas() -> Any:
    """pandas, or None where it is not installed."""
    try:
        import pandas
    except ImportError:
        return None
    return pandas


def _when(value: datetime | str | None) -> str | None:
    """A time parameter as the API reads it (an aware datetime keeps its zone; no zone = UTC)."""
    if value is None or isinstance(value, str):
        return value
    return value.isoformat()


def _frame(rows: list[dict[str, Any]], columns: Sequence[str] | None = None) -> Any:
    """A DataFrame of ``rows`` (times parsed as UTC) when pandas is there, else ``rows``."""
    pd = _pandas()
    if pd is None:
        return rows
    return _times(pd, pd.DataFrame(rows, columns=list(columns) if columns is not None else None))


def _times(pd: Any, df: Any) -> Any:
    """``df`` with its ISO 8601 time columns as UTC datetimes."""
    for name in TIME_COLUMNS:
        if name in df.columns:
            df[name] = pd.to_datetime(df[name], utc=True, format="ISO8601")
    return df


class Client:
    """The API at ``base_url`` (``http://host:8050``) with an API key (``its keys create``)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        http: httpx.Client | None = None,
    ) -> None:
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        self._http = http or httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------- requests

    def _get(self, path: str, params: list[tuple[str, Any]]) -> Any:
        response = self._http.get(f"/api/v1{path}", params=_clean(params))
        _raise_for(response)
        return response.json()

    def network(self) -> Any:
        """Every segment's live state: one row per segment (the GeoJSON features' properties:
        ``segment_id``, ``speed_kph``, ``band``, ...). :meth:`network_geojson` keeps geometry."""
        features = self.network_geojson()["features"]
        return _frame([f["properties"] for f in features])

    def network_geojson(self) -> dict[str, Any]:
        """``GET /api/v1/network`` as it is: a GeoJSON FeatureCollection."""
        return self._get("/network", [])

    def alerts(self, state: str = "active", limit: int = 100) -> Any:
        """Alerts, newest first; ``state`` = active, cleared, unacknowledged or all."""
        return _frame(self._get("/alerts", [("state", state), ("limit", limit)]))

    def aggregates(
        self,
        level: str = "segment",
        bucket: str = "15m",
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        ids: Iterable[str] | None = None,
    ) -> Any:
        """``GET /api/v1/aggregates`` rows (at most 100,000 points: use :meth:`export` for
        more): ``id``, ``bucket_start``, ``speed_kph``, ``flow_vph``, ``occupancy``,
        ``pct_observed``."""
        params = [("level", level), ("bucket", bucket), ("start", _when(start))]
        params += [("end", _when(end)), *(("id", i) for i in ids or ())]
        body = self._get("/aggregates", params)
        return _frame(body["rows"], AGGREGATE_NAMES)

    def iter_export(
        self,
        level: str = "segment",
        bucket: str | None = None,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        ids: Iterable[str] | None = None,
        format: str = "csv",
    ) -> Iterator[bytes]:
        """The bytes of ``GET /api/v1/export`` as they arrive (nothing held in memory)."""
        params = [("level", level), ("bucket", bucket), ("start", _when(start))]
        params += [("end", _when(end)), ("format", format), *(("id", i) for i in ids or ())]
        with self._http.stream("GET", "/api/v1/export", params=_clean(params)) as response:
            if response.status_code >= 400:
                response.read()
                _raise_for(response)
            yield from response.iter_bytes()

    def export(
        self,
        level: str = "segment",
        bucket: str | None = None,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        ids: Iterable[str] | None = None,
        *,
        format: str | None = None,
        path: str | Path | None = None,
    ) -> Any:
        """An export without the point limit (``level="readings"`` for the raw rows).

        With ``path`` the file is streamed to disk (format from ``format``, else the file's
        extension, else CSV) and the path returned. Without it the rows are returned: a
        DataFrame (read from Parquet) when pandas is installed, else a list of dicts (from
        NDJSON)."""
        if path is not None:
            path = Path(path)
            fmt = format or (path.suffix.lstrip(".").lower() or "csv")
            with path.open("wb") as out:
                for piece in self.iter_export(level, bucket, start, end, ids, fmt):
                    out.write(piece)
            return path
        pd = _pandas()
        fmt = format or ("parquet" if pd is not None else "ndjson")
        body = b"".join(self.iter_export(level, bucket, start, end, ids, fmt))
        if fmt == "ndjson":
            return _frame([orjson.loads(line) for line in body.splitlines() if line])
        if pd is None:
            raise ValueError(f"format={fmt!r} without a path needs pandas; pass path= to save it")
        if fmt == "parquet":
            return pd.read_parquet(io.BytesIO(body))
        return _times(pd, pd.read_csv(io.BytesIO(body)))


AGGREGATE_NAMES = ("id", "bucket_start", "speed_kph", "flow_vph", "occupancy", "pct_observed")


def _clean(params: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in params if v is not None]


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text
    raise APIError(response.status_code, detail)
