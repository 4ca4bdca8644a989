"""The live server sessions of this process: Bokeh session id -> (state, document, page).

It lives in an imported module, not in ``app.py``: ``panel serve zssd_app/app.py`` runs that file as a
fresh module for every session and clears the module's globals when the session ends, so a registry
kept there would be one dict per session, gone by the time the session's end is handled.  Work on a
session from another thread goes through ``doc.add_next_tick_callback`` (the load test and benchmark
drive sessions so).
"""

from __future__ import annotations

__all__ = ["SESSIONS"]

SESSIONS: dict[str, tuple] = {}
