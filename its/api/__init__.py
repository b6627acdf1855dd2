"""The analysts' HTTP API (FastAPI) under ``/api/v1``; see :func:`its.api.app.create_app`."""
