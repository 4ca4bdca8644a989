"""Sidebar controls: case selection (catalog, GCM, time, region, map box, cyclone finder), method, Run/Stop."""

from __future__ import annotations

import math

import holoviews as hv
import numpy as np
import panel as pn
import param

from zssd_engine.methods import METHODS

from ..cases import source_label
from ..state import AppState
from .common import BUTTON_CSS, coastline_segments, join_paths

__all__ = ["Controls", "overview_map"]

W = 300


def _case_options(state: AppState) -> dict[str, str]:
    opts = {"— custom GCM / time / region —": ""}
    for c in sorted(state.catalog.values(), key=lambda c: (not getattr(c, "real", False), c.peak_time)):
        kind = "real ERA5" if getattr(c, "real", False) else "demo"
        label = (f"{c.name} · {c.peak_time:%Y-%m-%d %H}Z · {c.peak_wind:.0f} m/s · {c.min_pressure / 100:.0f} hPa "
                 f"({kind})")
        opts[label] = c.name
    return opts


def overview_map(state: AppState, bounds_stream: hv.streams.BoundsXY, region_pipe: hv.streams.Pipe):
    """A small world map: the current region as a box; drag (box select) to choose a new one."""
    kd = [hv.Dimension("ov_lon", label="Longitude", unit="°E"), hv.Dimension("ov_lat", label="Latitude", unit="°N")]
    coast = hv.Path([join_paths(coastline_segments())], kdims=kd).opts(
        color="#555", line_width=0.6, tools=["box_select"], active_tools=["box_select"], default_tools=[],
        nonselection_alpha=1.0,
        selection_alpha=1.0)
    bounds_stream.source = coast

    def rect(data):
        boxes = data or []
        return hv.Rectangles(boxes, kdims=["ov_lon", "ov_lat", "ov_lon2", "ov_lat2"]).opts(
            fill_alpha=0.25, fill_color="#d62728", line_color="#d62728", line_width=2)

    region = hv.DynamicMap(rect, streams=[region_pipe])
    return (coast * region).opts(width=W, height=150, xlim=(-180, 180), ylim=(-80, 80), xaxis=None, yaxis=None,
                                 toolbar=None, title="")


def _region_boxes(state: AppState) -> list[tuple[float, float, float, float]]:
    if state.case is None:
        return []
    r = state.case.region
    w = (r.west + 180.0) % 360.0 - 180.0
    e = w + r.width
    boxes = [(w, r.south, min(e, 180.0), r.north)]
    if e > 180.0:
        boxes.append((-180.0, r.south, e - 360.0, r.north))
    return boxes


class Controls(pn.viewable.Viewer):
    state = param.ClassSelector(class_=AppState)

    def __init__(self, **params):
        super().__init__(**params)
        s = self.state
        # ---------------------------------------------------------- case
        self.case_select = pn.widgets.Select(label="Cyclone case (real ERA5, then demo 2021–23)",
                                             options=_case_options(s), value=s.case_name, width=W)
        self.gcm = pn.widgets.Select(label="GCM input", options={source_label(x): x for x in s.param.gcm.objects},
                                     value=s.gcm, width=W)
        self.time = pn.widgets.DatetimePicker.from_param(s.param.time, label="Date and time (UTC)", width=W,
                                                          enable_seconds=False)
        self.region = pn.widgets.TextInput.from_param(
            s.param.region_text, label="Region S,N,W,E (degrees)", width=W,
            placeholder="e.g. 10,42,-80,-48 — 16° to 64° per side")
        self.region_help = pn.pane.Markdown(
            "Type S,N,W,E and press Enter, or **drag a box** on the map below. Boxes snap to the 0.25° grid "
            f"(sides {s.config.min_region_deg:g}–{s.config.max_region_deg:g}°).",
            width=W, styles={"font-size": "0.85em", "color": "#555"}, margin=(0, 10))
        # a selection error is shown beside the field it belongs to (and nowhere else), until it is fixed
        self.errors = {f: pn.pane.Alert("", alert_type="danger", visible=False, width=W, margin=(0, 10),
                                        css_classes=[f"zssd-error-{f or 'case'}"])
                       for f in ("", "gcm", "time", "region")}
        self.region_error = self.errors["region"]
        self._bounds = hv.streams.BoundsXY()
        self._region_pipe = hv.streams.Pipe(data=_region_boxes(s))
        self.map = pn.pane.HoloViews(overview_map(s, self._bounds, self._region_pipe), width=W + 10,
                                     margin=(0, 5), linked_axes=False, css_classes=["zssd-overview"])
        self._bounds.add_subscriber(self._on_bounds)
        # no icon= anywhere: Bokeh fetches Tabler icon fonts from a CDN, and the page must work offline
        self.find_btn = pn.widgets.Button(label="Find cyclones in this GCM field", color="light", width=W)
        self.found = pn.widgets.Select(label="Candidate centres (click one to re-centre)", options={}, width=W,
                                       visible=False, size=4)
        self.find_btn.on_click(lambda e: self._find())
        self.found.param.watch(self._on_found, "value")
        # ---------------------------------------------------------- method
        self.method = pn.widgets.RadioButtonGroup.from_param(s.param.method, label="Method", width=W,
                                                             color="primary", variant="outline",
                                                             stylesheets=[BUTTON_CSS])
        self.steps = pn.widgets.IntInput.from_param(s.param.steps, label="Steps", width=W // 2 - 10, step=10)
        self.g_auto = pn.widgets.Checkbox.from_param(s.param.guidance_auto, label="Tuned guidance scale ζ (auto)")
        self.g_scale = pn.widgets.FloatInput.from_param(s.param.guidance_scale, label="Guidance scale ζ",
                                                        width=W // 2 - 10, step=0.1, start=0.0)
        self.members = pn.widgets.IntSlider.from_param(s.param.members, label="Ensemble members", width=W)
        self.seed = pn.widgets.IntInput.from_param(s.param.seed, label="Seed", width=W // 2 - 10)
        self.g_note = pn.pane.Markdown("", width=W, styles={"font-size": "0.85em", "color": "#555"},
                                       margin=(0, 10))
        # ---------------------------------------------------------- run
        self.run_btn = pn.widgets.Button(label="▶ Run", color="primary", width=120, height=40, margin=(8, 5, 8, 10),
                                         stylesheets=[BUTTON_CSS])
        self.stop_btn = pn.widgets.Button(label="■ Stop", color="danger", width=120, height=40, disabled=True,
                                          margin=(8, 5), stylesheets=[BUTTON_CSS])
        self.run_btn.on_click(lambda e: s.run())
        self.stop_btn.on_click(lambda e: s.stop())
        self.progress = pn.indicators.Progress(value=0, max=1, sizing_mode="stretch_width",
                                               bar_color="primary", active=False, margin=(10, 0, 2, 0), height=14)
        self.status = pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 0), min_height=24,
                                       css_classes=["zssd-status"])
        # ---------------------------------------------------------- wiring
        self.case_select.param.watch(self._on_case, "value")
        self.gcm.param.watch(lambda e: setattr(s, "gcm", e.new), "value")
        s.param.watch(self._sync_from_state, ["gcm", "case_name", "case_error", "case_error_field", "case_loaded",
                                             "detections"])
        s.param.watch(self._sync_progress, ["status", "step", "n_steps", "sec_per_step", "misfit", "queue_position",
                                            "queue_wait_s", "status_text"])
        s.param.watch(self._sync_guidance, ["method", "steps", "guidance_auto", "gcm"])
        self._sync_guidance()
        self._sync_progress()
        self._sync_from_state()

    # -------------------------------------------------------------- handlers
    def _on_case(self, event) -> None:
        if event.new and event.new != self.state.case_name:
            self.state.pick_case(event.new)

    def _on_bounds(self, bounds=None, **_) -> None:
        if not bounds:
            return
        x0, y0, x1, y1 = bounds
        if not all(np.isfinite([x0, y0, x1, y1])):
            return
        self.state.set_region(y0, y1, x0, x1)

    def _find(self) -> None:
        cands = self.state.find_cyclones()
        opts = {c.label(): i for i, c in enumerate(cands)}
        self.found.param.update(options=opts, value=None, visible=bool(opts))

    def _on_found(self, event) -> None:
        if event.new is None:
            return
        self.state.centre_on(int(event.new))

    def _sync_from_state(self, *_) -> None:
        s = self.state
        if self.gcm.value != s.gcm:
            self.gcm.value = s.gcm
        if self.case_select.value != s.case_name:
            self.case_select.value = s.case_name
        if self.region.value != s.region_text:  # a snapped region (set while the typed value was propagating)
            self.region.value = s.region_text
        for f, alert in self.errors.items():
            on = bool(s.case_error) and s.case_error_field == f
            alert.param.update(object=s.case_error if on else "", visible=on)
        self._region_pipe.send(_region_boxes(s))
        if not s.detections and self.found.visible:
            self.found.param.update(options={}, visible=False)

    def _sync_guidance(self, *_) -> None:
        s = self.state
        ddrm = not METHODS[s.method_id].guided
        self.g_auto.visible = not ddrm
        self.g_scale.visible = not ddrm
        self.g_scale.disabled = s.guidance_auto
        if ddrm:
            self.g_note.object = f"{s.method} projects onto the GCM data at every step; it has no guidance scale."
        elif s.guidance_auto:
            z, where = s.tuned_guidance(with_source=True)
            self.g_note.object = f"ζ = {z:.3g} (tuned for {s.method} at {s.steps} steps {where})"
        else:
            self.g_note.object = "Larger ζ follows the GCM more closely; too large makes fields noisy."

    def _sync_progress(self, *_) -> None:
        s = self.state
        busy = s.status in ("queued", "running")
        self.run_btn.disabled = busy
        self.stop_btn.disabled = not busy
        # the case cannot change under a running sampler: lock its inputs until Stop or the end
        for w in (self.case_select, self.gcm, self.time, self.region, self.find_btn, self.found):
            w.disabled = busy
        self.progress.max = max(s.n_steps, 1)
        self.progress.value = min(s.step, max(s.n_steps, 1))
        self.progress.active = s.status == "queued"
        self.progress.bar_color = {"done": "success", "cancelled": "warning", "error": "danger"}.get(s.status,
                                                                                                  "primary")
        if s.status == "running":
            sps = f"{s.sec_per_step:.2f} s/step" if math.isfinite(s.sec_per_step) else "…"
            mis = f"{s.misfit:.3g}" if math.isfinite(s.misfit) else "…"
            eta = (s.n_steps - s.step) * s.sec_per_step if math.isfinite(s.sec_per_step) else float("nan")
            self.status.object = (f"**Step {s.step} / {s.n_steps}** · {sps} · misfit {mis}"
                                  + (f" · ~{eta:.0f} s left" if math.isfinite(eta) else ""))
        elif s.status == "queued":
            pos = f"position {s.queue_position} in the server's queue" if s.queue_position else "waiting for a slot"
            wait = (f" · about {s.queue_wait_s:.0f} s to wait" if math.isfinite(s.queue_wait_s) and s.queue_wait_s > 0
                    else " · estimating the wait…" if s.queue_position else "")
            self.status.object = (f"**Queued** · {pos}{wait} (this server runs {s.queue.max_concurrent} sampling "
                                  f"run{'s' if s.queue.max_concurrent > 1 else ''} at a time) · Stop leaves the queue")
        elif s.status == "loading":
            self.status.object = f"⏳ {s.status_text}"
        else:
            self.status.object = s.status_text

    def __panel__(self):
        return pn.Column(
            pn.pane.Markdown("#### 1 · Case", margin=(0, 10)),
            self.errors[""], self.case_select, self.gcm, self.errors["gcm"], self.time, self.errors["time"],
            self.region, self.region_help, self.errors["region"],
            self.map, self.find_btn, self.found,
            pn.layout.Divider(),
            pn.pane.Markdown("#### 2 · Method", margin=(0, 10)),
            self.method, pn.Row(self.steps, self.seed), self.g_auto, self.g_scale, self.g_note, self.members,
            pn.pane.Markdown("Then press **Run** (top of the page).", margin=(0, 10),
                             styles={"font-size": "0.85em", "color": "#555"}),
            sizing_mode="fixed", width=W + 20)

    def run_bar(self) -> pn.Row:
        """Run/Stop buttons, progress bar and status line (shown above the tabs, visible on every tab)."""
        return pn.Row(self.run_btn, self.stop_btn, pn.Column(self.progress, self.status, margin=(0, 10)),
                      sizing_mode="stretch_width", styles={"border-bottom": "1px solid #e5e5e5"})
