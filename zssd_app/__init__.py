"""ZSSD Explorer: the Panel dashboard (``panel serve zssd_app/app.py`` or ``zssd serve``).

The engine (``engine/``) never imports this package; this package imports the engine's
pipeline facade only.  :func:`zssd_app.app.create_app` builds one session's page.
"""

__all__ = ["create_app"]


def create_app(*args, **kwargs):
    """Build the dashboard for one browser session (see :func:`zssd_app.app.create_app`)."""
    from .app import create_app as _create

    return _create(*args, **kwargs)
