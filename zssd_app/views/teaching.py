"""The "Teaching view": scrub or play through the recorded steps of posterior sampling.

For the current run: the noisy state x_t, the denoiser's clean estimate x̂0,
the guidance pull (where x̂0 disagrees with the GCM at the GCM's scale), the
noise level and the misfit curve, with plain-language notes on each stage.
A second mode runs ZSSD and vanilla DPS on the ×20 task side by side.
"""

from __future__ import annotations

import holoviews as hv
import numpy as np
import panel as pn
import param

from ..records import Trace
from ..state import AppState
from .common import BUTTON_CSS, DISPLAY, coast_element, map_element, pretty_source
from .maps import _bounds

__all__ = ["TeachingView", "guidance_pull", "stage_text", "LOOP_TEXT", "COMPARE_TEXT"]

VAR_INDEX = {"t2m": 0, "msl": 1, "u10": 2, "v10": 3}

LOOP_TEXT = """
**One step of diffusion posterior sampling** (repeated from pure noise to a clean field):

1. **Denoise.** The prior network looks at the noisy state *x_t* and predicts the noise in it
   (the demo prior is trained on the equivalent target *v*, from which the noise follows);
   removing that noise gives *x̂0*, its best guess of the clean 0.25° weather map.
2. **Compare with the GCM.** *x̂0* is averaged the way the GCM sees the world — ZSSD averages onto
   one *unified 5° grid* and interpolates back to 0.25° — and the misfit to the GCM field is measured
   (cos φ-weighted, in units of each variable's standard deviation).
3. **Guide.** The gradient of that misfit tells how to change *x_t* so that *x̂0* agrees better with the
   GCM; the step is scaled by the guidance scale ζ.
4. **Step down in noise.** A reverse-diffusion step moves to a lower noise level σ, adding a little
   fresh noise so the sample stays a plausible weather map rather than a blurry average.
"""

COMPARE_TEXT = """
**Why unified guidance matters at ×20.** Vanilla DPS compares *x̂0* with the GCM on the GCM's own
5° cells: each coarse cell averages 20 × 20 = 400 fine cells, so the gradient that reaches any one fine
cell is only 1/400 of that cell's residual. The pull fades, the misfit stays high and *x̂0* drifts
away from the large-scale pattern of the GCM. ZSSD measures the residual *after* re-projecting to
0.25°, so every fine cell feels the full residual and the sample follows the GCM at large scales while
the prior draws the small ones. Scrub both runs with the same slider and compare the misfit curves.

What the scores say (32 held-out ×20 cases of the demo world, prior v4, 8 members, each method at its own
tuned ζ): DPS makes up for the fade with a much larger ζ (30 against ZSSD's 1.73 at 50 steps), and its
ensemble mean ends level with ZSSD's (t2m 0.585 vs 0.579 K; DDRM 0.560). The mechanism above is real;
on these cases it does not turn into a better score (`benchmarks/results/paper_table_x20_prior_v4_32/`).
"""


def stage_text(sigma: float, step: int, n_steps: int) -> str:
    """A plain-language note on what happens at this noise level."""
    if not np.isfinite(sigma):
        return ""
    if sigma > 5.0:
        return (f"**Early (step {step + 1}/{n_steps}, σ = {sigma:.3g}).** *x_t* is almost pure noise. *x̂0* is "
                "a smooth, climatology-like guess; guidance mainly fixes the large-scale pattern — where the "
                "lows, highs and warm/cold regions of the GCM are.")
    if sigma > 0.5:
        return (f"**Middle (step {step + 1}/{n_steps}, σ = {sigma:.3g}).** Synoptic structures (fronts, the "
                "cyclone's circulation) take shape. The misfit to the GCM drops as the guidance and the prior "
                "agree on the large scales.")
    return (f"**Late (step {step + 1}/{n_steps}, σ = {sigma:.3g}).** The large scales are settled; the prior adds "
            "fine detail the GCM cannot resolve — coastlines and terrain (whether it also deepens a cyclone's core "
            "is for the Cyclone tab to show: the shipped CPU-trained prior mostly does not). *x̂0* and *x_t* are "
            "nearly the same field now.")


def guidance_pull(case, x0_display: np.ndarray, gcm_display: np.ndarray | None) -> np.ndarray | None:
    """Where x̂0 disagrees with the GCM at the GCM's scale: bilinear(GCM − average(x̂0)) on the fine grid.

    This is the direction the guidance pushes (up to scaling): positive where the GCM is higher.
    """
    if gcm_display is None or x0_display is None:
        return None
    import torch

    from zssd_engine.operators import bilinear, conservative
    from zssd_engine.samplers import native_clipped_grid

    ops = getattr(case, "_zssd_app_pull_ops", None)
    if ops is None:
        clipped, li, lo = native_clipped_grid(case.gcm_grid, case.fine)
        ops = (conservative(case.fine, clipped, dtype=torch.float64), bilinear(clipped, case.fine, dtype=torch.float64),
               li, lo)
        case._zssd_app_pull_ops = ops
    down, up, li, lo = ops
    y = torch.as_tensor(np.asarray(gcm_display, dtype=np.float64)[np.ix_(li, lo)])
    x = torch.as_tensor(np.asarray(x0_display, dtype=np.float64))
    with torch.no_grad():
        r = up.masked(y - down(x))
    return r.numpy()


def _frame_display(frame_x0: np.ndarray, key: str, names) -> np.ndarray:
    d = DISPLAY[key]
    if key == "wind":
        return np.hypot(frame_x0[names.index("u10")], frame_x0[names.index("v10")])
    return frame_x0[names.index(key)] * d.scale + d.offset


class TeachingView(pn.viewable.Viewer):
    state = param.ClassSelector(class_=AppState)
    active = param.Boolean(default=True, doc="tab visible: refresh only then (else mark dirty)")

    def __init__(self, **params):
        super().__init__(**params)
        s = self.state
        self.mode = pn.widgets.RadioButtonGroup(label="Show", options=["This run", "ZSSD vs DPS at ×20"],
                                                value="This run", color="primary", variant="outline",
                                                stylesheets=[BUTTON_CSS])
        self.player = pn.widgets.Player(label="Recorded step", start=0, end=1, value=0, interval=350,
                                        loop_policy="once", show_loop_controls=False, width=420,
                                        visible_buttons=["first", "previous", "pause", "play", "next", "last"])
        self.compare_btn = pn.widgets.Button(label="Run ZSSD vs DPS at ×20", color="primary", width=220)
        self.compare_btn.on_click(self._on_compare)
        self.compare_status = pn.pane.Markdown("", margin=(5, 10))
        self.stage = pn.pane.Markdown("", sizing_mode="stretch_width", min_height=70,
                                      styles={"background": "#f4f7fb", "border-left": "4px solid #4a7bd0",
                                              "padding": "2px 12px"})
        self.info = pn.pane.Markdown("", sizing_mode="stretch_width")
        self._maps = pn.pane.HoloViews(None, sizing_mode="stretch_width", min_height=330, linked_axes=False)
        self._curves = pn.pane.HoloViews(None, sizing_mode="stretch_width", min_height=230, linked_axes=False)
        self._follow = True
        self._dirty = False
        self.param.watch(lambda e: self.refresh() if e.new and self._dirty else None, "active")
        self.player.param.watch(self._on_index, "value")
        self.mode.param.watch(lambda *_: self.refresh(reset=True), "value")
        s.param.watch(lambda *_: self.refresh(), ["history_changed", "variable"])
        s.param.watch(lambda *_: self.refresh(), ["compare_changed"])
        s.param.watch(lambda *_: self.refresh(reset=True), ["case_loaded"])
        self.refresh(reset=True)

    def __panel__(self):
        return pn.Column(
            pn.Row(self.mode, self.compare_btn, self.compare_status, align="center"),
            pn.Row(self.player, pn.Spacer(width=10), self.info, align="center"),
            self.stage, self._maps, self._curves,
            pn.Row(pn.pane.Markdown(LOOP_TEXT, sizing_mode="stretch_width"),
                   pn.pane.Markdown(COMPARE_TEXT, sizing_mode="stretch_width"), sizing_mode="stretch_width"),
            sizing_mode="stretch_width")

    def _on_compare(self, event=None) -> None:
        s = self.state
        if s.compare_job is not None and not s.compare_job.finished_flag:
            s.stop_compare()
        else:
            s.run_compare()
        self._sync_compare_button()

    def _sync_compare_button(self) -> None:
        s = self.state
        running = s.compare_job is not None and not s.compare_job.finished_flag
        self.compare_btn.param.update(label="Stop the comparison" if running else "Run ZSSD vs DPS at ×20",
                                      color="danger" if running else "primary")

    # ------------------------------------------------------------------ data
    def _traces(self) -> list[Trace]:
        s = self.state
        if self.mode.value == "This run":
            return [s.trace] if s.trace is not None else []
        return [t for t in (s.compare.get("ZSSD"), s.compare.get("DPS")) if t is not None]

    def _on_index(self, event) -> None:
        traces = self._traces()
        n = max((len(t.frames) for t in traces), default=0)
        self._follow = event.new >= n - 1
        self._render(event.new)

    def refresh(self, reset: bool = False) -> None:
        s = self.state
        if not self.active:
            self._dirty = True
            self._reset_pending = getattr(self, "_reset_pending", False) or reset
            return
        reset = reset or getattr(self, "_reset_pending", False)
        self._dirty = self._reset_pending = False
        traces = self._traces()
        n = max((len(t.frames) for t in traces), default=0)
        self.compare_status.object = (f"×20 comparison: {s.compare_status}" if s.compare_status else "")
        self._sync_compare_button()
        self.compare_btn.visible = self.mode.value != "This run"
        if n == 0:
            self.player.param.update(end=1, value=0)
            msg = ("No steps recorded yet: press **Run** (top of the page)." if self.mode.value == "This run"
                   else "Press **Run ZSSD vs DPS at ×20** (same time, region, seed and steps; ×20 = 5° input).")
            self.info.object = msg
            self.stage.object = ""
            self._maps.object = None
            self._curves.object = None
            return
        end = max(n - 1, 1)
        ident = tuple(id(t) for t in traces)
        if ident != getattr(self, "_ident", None):  # a new run: follow it live again
            self._ident = ident
            reset = True
        follow = self._follow or reset
        self.player.end = end
        idx = n - 1 if follow else min(self.player.value, n - 1)
        if self.player.value != idx:
            self.player.value = idx  # triggers _render
        else:
            self._render(idx)

    def _render(self, idx: int) -> None:
        s = self.state
        traces = [tr for tr in self._traces() if tr.frames]  # a comparison run stopped before its first frame: none
        if not traces:
            return
        key = s.variable
        d = DISPLAY[key]
        names = list(getattr(s.prior(), "variables", ("t2m", "msl", "u10", "v10")))
        case = traces[0].case
        bounds = _bounds(case)
        coast = coast_element(*bounds)
        f = case.fine
        gcm_disp = None
        from .common import display_field

        gcm_disp = display_field(case.gcm, key)[0]
        clim = s.clims.get(key) if case is s.case else None
        if clim is None:
            from .common import robust_clim

            clim = robust_clim([display_field(case.reference_display, key)[0], gcm_disp], key)
        panels = []
        frames_used = []
        fw = 250

        def img(values, title, cmap, cl, label, units):
            el = map_element(f.lat, f.lon, values, vdim=hv.Dimension("value", label=label, unit=units))
            h = fw * (bounds[3] - bounds[2]) / max(bounds[1] - bounds[0], 1e-6)
            return (el.opts(cmap=cmap, clim=cl, colorbar=True, clabel=units, title=title,
                            frame_width=fw, frame_height=int(h), xlim=bounds[:2], ylim=bounds[2:],
                            tools=["hover"], toolbar=None, fontsize={"title": "10pt"}, colorbar_opts={"width": 10})
                    * coast).opts(title=title)

        xt_key = "u10" if key == "wind" else key
        compare = self.mode.value != "This run"
        x0s, pulls = [], []
        for tr in traces:
            fr = tr.frames[min(idx, len(tr.frames) - 1)]
            frames_used.append(fr)
            x0 = _frame_display(fr.x0, key, names)
            who = tr.method if compare else ""
            if not compare:
                panels.append(img(fr.x_t[names.index(xt_key)], f"Noisy state x_t ({xt_key})", "RdBu_r", (-3, 3),
                                  f"{xt_key}, normalised", "std"))
            x0s.append(img(x0, f"{who} x̂0: clean estimate".strip(), d.cmap, clim, d.label, d.units))
            pull = guidance_pull(case, x0, gcm_disp)
            if pull is not None:
                lim = float(np.nanpercentile(np.abs(pull), 99)) or 1.0
                lim = max(lim, 0.05 * (clim[1] - clim[0]))
                pulls.append(img(pull, f"{who} guidance pull: GCM − x̂0".strip(), "PuOr_r",
                                 (-lim, lim), f"{d.label} difference", d.units))
        if compare:
            # row 1: what both methods see and their x̂0; row 2: the truth and each method's remaining pull
            from .common import blocky

            g = case.gcm_grid
            gcm_img = img(blocky(g.lat_bounds, g.lon_bounds, gcm_disp, f.lat, f.lon),
                          f"GCM input: {pretty_source(case.source_id)} (5° cells)", d.cmap, clim, d.label, d.units)
            ref_img = img(display_field(case.reference_display, key)[0],
                          "ERA5 (real, 1° points)" if case.real_reference else "Demo world (synthetic stand-in for ERA5)",
                          d.cmap, clim, d.label, d.units)
            panels = [gcm_img, *x0s, ref_img, *pulls]
        else:
            panels += x0s + pulls
        self._maps.object = hv.Layout(panels).cols(3).opts(shared_axes=True, merge_tools=True)
        fr0 = frames_used[0]
        tr0 = traces[0]
        self.stage.object = stage_text(fr0.sigma, fr0.step, tr0.n_steps)
        self.info.object = (f"Step **{fr0.step + 1}** of {tr0.n_steps} · diffusion timestep t = {fr0.t} · "
                            f"noise level σ = {fr0.sigma:.3g} · misfit {fr0.misfit:.3g} · "
                            f"{len(tr0.frames)} recorded frames")
        self._curves.object = self._curve_plot(traces, fr0.step)

    def _curve_plot(self, traces: list[Trace], step: int):
        colors = {"ZSSD": "#d62728", "DPS": "#1f77b4", "DDRM": "#2ca02c"}
        sig, mis, gn = [], [], []
        for tr in traces:
            st = np.asarray(tr.steps) + 1
            if st.size == 0:
                continue
            c = colors.get(tr.method, "#333")
            sig.append(hv.Curve((st, np.asarray(tr.sigma)), "step", "sigma", label=tr.method).opts(color=c))
            mis.append(hv.Curve((st, np.asarray(tr.misfit)), "step", "misfit", label=tr.method).opts(color=c))
            gn.append(hv.Curve((st, np.maximum(np.asarray(tr.guidance), 1e-12)), "step", "guidance",
                               label=tr.method).opts(color=c))
        vline = hv.VLine(step + 1).opts(color="black", line_dash="dotted", line_width=1.5)
        common = dict(frame_width=280, frame_height=170, show_grid=True, xlabel="Step",
                      legend_position="top_right", show_legend=len(traces) > 1, toolbar=None)
        p1 = (hv.Overlay(sig) * vline).opts(logy=True, title="Noise level σ (falls to 0)", ylabel="σ", **common)
        p2 = (hv.Overlay(mis) * vline).opts(logy=True, title="Misfit to the GCM (RMS, std units)",
                                            ylabel="misfit", **common)
        p3 = (hv.Overlay(gn) * vline).opts(logy=True, title="Size of the guidance update ‖Δx_t‖",
                                           ylabel="‖Δx_t‖", **common)
        return hv.Layout([p1, p2, p3]).cols(3).opts(shared_axes=False)
