"""ZSSD Explorer dashboard: ``panel serve zssd_app/app.py`` (or ``zssd serve``).

:func:`create_app` builds one browser session's page: a FastListTemplate with
the controls in the sidebar and four tabs — "Downscale", "Spectra & metrics",
"Teaching view", "About".  Nothing is created at import time; every session
gets its own :class:`zssd_app.state.AppState` and views, and shares only the
server-wide run queue, the prior, the demo world and the prepared cases (:mod:`zssd_app.cases`).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # executed by `panel serve zssd_app/app.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import holoviews as hv
import panel as pn

from zssd_app.config import ServerConfig
from zssd_app.runner import RunQueue
from zssd_app.sessions import SESSIONS
from zssd_app.state import POLL_MS, AppState
from zssd_app.views.about import AboutView
from zssd_app.views.common import BUTTON_CSS, configure_cartopy
from zssd_app.views.controls import Controls
from zssd_app.views.cyclone import CycloneView
from zssd_app.views.export import export_widgets
from zssd_app.views.maps import MapsView
from zssd_app.views.spectra import SpectraView
from zssd_app.views.teaching import TeachingView

__all__ = ["create_app", "TAB_NAMES", "SESSIONS"]


TAB_NAMES = ("Downscale", "Spectra & metrics", "Teaching view", "Cyclone", "About")
ACCENT = "#1f4e79"

_CSS = """
.bk-panel-models-markup-HTML h4, h4 { margin: 4px 0 2px 0; }
"""


def _silence_bokeh_sizing_warning() -> None:
    # maps use frame_width/frame_height (data aspect) rather than width/height: expected, not a problem
    try:
        from bokeh.core.validation import silence
        from bokeh.core.validation.warnings import FIXED_SIZING_MODE

        silence(FIXED_SIZING_MODE, True)
    except ImportError:  # pragma: no cover
        pass


def _setup_logging() -> None:
    log = logging.getLogger("zssd_app")
    if not log.handlers:
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        log.addHandler(h)
        log.setLevel(logging.INFO)
        log.propagate = False


def _offline_design() -> None:
    """Nothing from the internet: the Fast design's Google-font link is dropped (the page uses the
    system sans-serif font); Panel and Bokeh serve their own scripts from this server."""
    from panel.theme.fast import Fast

    if Fast._resources.get("font"):
        Fast._resources = {**Fast._resources, "font": {}}


def _in_server_session() -> bool:
    doc = pn.state.curdoc
    return doc is not None and getattr(doc, "session_context", None) is not None


def _variable_and_ensemble_bar(state: AppState):
    """The variable buttons, and the bar that picks what the result panel shows after an ensemble run."""
    variable = pn.widgets.RadioButtonGroup.from_param(
        state.param.variable, options={"2 m temperature": "t2m", "Sea-level pressure": "msl",
                                       "10 m wind (speed + arrows)": "wind"},
        color="primary", variant="outline", label="Variable", stylesheets=[BUTTON_CSS])
    # after an ensemble run: the result panel shows one member, the ensemble mean or the spread
    result_view = pn.widgets.RadioButtonGroup.from_param(
        state.param.result_view, options={"Member": "member", "Ensemble mean": "mean", "Spread (std)": "spread"},
        color="primary", variant="outline", name="Result", stylesheets=[BUTTON_CSS])
    member = pn.widgets.IntSlider.from_param(state.param.result_member, name="Member", width=160)
    ensemble_row = pn.Row(pn.pane.Markdown("**Ensemble result**", margin=(2, 5, 0, 10)), result_view, member,
                          visible=False, sizing_mode="stretch_width")

    def on_result(*_):
        n = int(state.result_meta.get("members", 1)) if state.result is not None else 1
        ensemble_row.visible = n > 1 and state.live_final
        member.end = max(n, 2)
    state.param.watch(on_result, ["status", "frame_ready"])
    return variable, ensemble_row


def create_app(state: AppState | None = None, *, config: ServerConfig | None = None, queue: RunQueue | None = None,
               initial_case: str | None = "default") -> pn.template.FastListTemplate:
    """Build the page for one session.

    Parameters
    ----------
    state
        An existing state (tests); by default a new :class:`AppState`.
    config, queue
        Server configuration and run queue (default: the process-wide ones).
    initial_case
        Catalog cyclone to open with (``"default"``: a strong held-out storm; ``None``: nothing).
    """
    _setup_page()
    # in a server session cases load off the event loop (other sessions stay responsive); tests and --warm: inline
    state = state or AppState(config=config, queue=queue, background=_in_server_session())
    state.prior()  # load (once per server) and set the warning banner text
    if initial_case is not None and state.case is None:
        state.pick_case(state.default_case_name() if initial_case == "default" else initial_case)

    controls = Controls(state=state)
    maps = MapsView(state=state)
    spectra = SpectraView(state=state)
    teaching = TeachingView(state=state)
    about = AboutView(state=state)
    cyclone = CycloneView(state=state)

    variable, ensemble_row = _variable_and_ensemble_bar(state)
    banner = pn.pane.Alert(f"⚠ {state.prior_warning}", alert_type="warning",
                           visible=bool(state.prior_warning), sizing_mode="stretch_width", margin=(0, 10))
    state.param.watch(lambda e: banner.param.update(object=f"⚠ {e.new}",
                                                    visible=bool(e.new)), "prior_warning")
    downscale = pn.Column(
        pn.Row(pn.pane.Markdown("**Variable**", margin=(2, 5, 0, 10)), variable, pn.layout.HSpacer(),
               pn.pane.Markdown("**Export**", margin=(2, 5, 0, 10)), export_widgets(state),
               sizing_mode="stretch_width"),
        # the maps (seven linked HoloViews plots, most of a session's start-up cost) render just after the page
        # has loaded: the page, its sidebar and status line come at once, and sessions opened together do not
        # wait for each other's maps
        ensemble_row, pn.panel(lambda: maps, defer_load=True), sizing_mode="stretch_width")
    tabs = pn.Tabs((TAB_NAMES[0], downscale), (TAB_NAMES[1], spectra), (TAB_NAMES[2], teaching),
                   (TAB_NAMES[3], cyclone), (TAB_NAMES[4], about), dynamic=True, sizing_mode="stretch_width")
    # dynamic: a tab is rendered when first opened (a new session renders only the maps: Ready sooner)

    def on_tab(event=None):
        spectra.active = tabs.active == 1
        teaching.active = tabs.active == 2
        cyclone.active = tabs.active == 3
    tabs.param.watch(on_tab, "active")
    on_tab()

    template = pn.template.FastListTemplate(
        title="ZSSD Explorer",
        sidebar=[controls], main=[banner, controls.run_bar(), tabs], sidebar_width=350, accent=ACCENT,
        header_background=ACCENT,
        theme_toggle=False, main_layout=None,
    )
    template.header.append(pn.pane.Markdown(
        "zero-shot downscaling of climate-model fields by diffusion posterior sampling",
        styles={"color": "white", "font-size": "0.95em"}, margin=(14, 10, 0, 10)))
    # keep handles for tests
    template.zssd_state = state
    template.zssd_views = {"controls": controls, "maps": maps, "spectra": spectra, "teaching": teaching,
                           "about": about, "cyclone": cyclone, "tabs": tabs, "variable": variable, "banner": banner,
                           "ensemble": ensemble_row}
    if _in_server_session():
        _register_session(state, template)
    return template


def _setup_page() -> None:
    """Extensions, offline design, cartopy's offline data, logging (idempotent; every session calls it)."""
    _offline_design()
    pn.extension("tabulator", notifications=True, raw_css=[_CSS], design="fast")
    hv.extension("bokeh", logo=False)
    configure_cartopy()
    _setup_logging()
    _silence_bokeh_sizing_warning()


def _register_session(state: AppState, template) -> None:
    """Record a server session in :data:`zssd_app.sessions.SESSIONS`, poll its runs, and cancel them when it
    closes.

    The end-of-session callback uses only what it closes over: when it runs, ``panel serve`` has already
    cleared this script module's globals (a global looked up there would raise ``NameError``, and the
    session's queued runs would go on for a browser that is gone).
    """
    doc = pn.state.curdoc
    sid = doc.session_context.id
    registry, log = SESSIONS, logging.getLogger("zssd_app")
    registry[sid] = (state, doc, template)
    pn.state.add_periodic_callback(state.poll, period=POLL_MS)

    def destroyed(ctx) -> None:
        registry.pop(sid, None)
        state.cancel_all()
        log.info("session %s: closed; its runs are cancelled", getattr(state, "session_id", sid))
    pn.state.on_session_destroyed(destroyed)


if __name__.startswith("bokeh") or __name__ == "__main__":
    create_app().servable(title="ZSSD Explorer")
