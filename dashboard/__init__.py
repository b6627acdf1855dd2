"""The operator dashboard: a Plotly Dash app served at ``/`` on the web process's FastAPI app.

``dashboard.app.create_dash`` attaches it; figures are pure functions in ``dashboard.figures``.
"""
