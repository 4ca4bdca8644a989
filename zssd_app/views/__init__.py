"""Dashboard views (``pn.viewable.Viewer`` components over one :class:`zssd_app.state.AppState`)."""
