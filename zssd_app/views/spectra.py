"""The "Spectra & metrics" tab: radially averaged power spectra and error scores.

Spectra (log-log, x = wavelength in km, small scales to the right) of the
reference, the GCM input, bilinear, BCSD and the current x̂0, updated during a
run (at most once a second); the metrics table scores every method against
the reference — or says "unpaired" for a real GCM.
"""

from __future__ import annotations

import time

import holoviews as hv
import numpy as np
import panel as pn
import param
import xarray as xr

from ..state import AppState
from .common import DISPLAY, display_field
from .scores import metrics_table

__all__ = ["SpectraView", "spectra_of"]

COLORS = {"Reference (demo world)": "black", "GCM input": "#7f7f7f", "Bilinear": "#1f77b4", "BCSD": "#ff7f0e",
          "x̂0": "#d62728"}


def _spectrum(lat, lon, a):
    from zssd_engine.metrics import power_spectrum

    if a is None or not np.all(np.isfinite(a)):
        if a is None:
            return None
        a = np.where(np.isfinite(a), a, np.nanmean(a))
    da = xr.DataArray(a, dims=("lat", "lon"), coords={"lat": np.asarray(lat), "lon": np.asarray(lon)})
    try:
        s = power_spectrum(da)
    except ValueError:
        return None
    return np.asarray(s["wavelength_km"].values), np.asarray(s.values)


def spectra_of(state: AppState, key: str | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{curve name: (wavelength_km, power)}`` for the display variable."""
    c = state.case
    if c is None:
        return {}
    key = key or state.variable
    f = c.fine
    out = {}
    ref, _, _ = display_field(c.reference, key)  # at its own points (real ERA5: 1°, wavelengths ≥ 222 km)
    r = _spectrum(c.reference["lat"].values, c.reference["lon"].values, ref) if c.paired else None
    if r is not None:  # an unpaired source has no reference: no curve that would pretend otherwise
        out["Reference: ERA5 (real, 1° points)" if c.real_reference else "Reference (demo world)"] = r
    g, _, _ = display_field(c.gcm, key)
    gs = _spectrum(c.gcm["lat"].values, c.gcm["lon"].values, g)
    if gs is not None:
        out["GCM input"] = gs
    for name, k in (("Bilinear", "bilinear"), ("Bilinear + lapse", "lapse"), ("BCSD", "bcsd")):
        a, _, _ = display_field(state.baselines.get(k), key)
        s = _spectrum(f.lat, f.lon, a)
        if s is not None:
            out[name] = s
    live = state.live_dataset()
    if live is not None:
        a, _, _ = display_field(live, key)
        s = _spectrum(f.lat, f.lon, a)
        if s is not None:
            meth = state.result_meta.get("method", state.method)
            out[f"{meth} result" if state.live_final else f"{meth} x̂0 (step {state.step})"] = s
    return out


class SpectraView(pn.viewable.Viewer):
    state = param.ClassSelector(class_=AppState)
    active = param.Boolean(default=True, doc="tab visible: refresh only then (else mark dirty)")

    def __init__(self, **params):
        super().__init__(**params)
        self._pipe = hv.streams.Pipe(data={})
        self._dmap = hv.DynamicMap(self._plot, streams=[self._pipe])
        self._plot_pane = pn.pane.HoloViews(self._dmap, sizing_mode="stretch_width", min_height=420,
                                            linked_axes=False)
        self._table = pn.widgets.Tabulator(metrics_table(self.state), show_index=False, disabled=True,
                                           sizing_mode="stretch_width", layout="fit_columns",
                                           theme="simple", header_align="center",
                                           # long notes wrap inside their cell instead of being cut off
                                           formatters={"Note": {"type": "textarea"}, "Method": {"type": "textarea"}})
        self._title = pn.pane.Markdown("", sizing_mode="stretch_width")
        self._note = pn.pane.Markdown(
            "Errors are latitude-weighted (cos φ) over the region against the reference (the demo world, or "
            "ERA5 at its 1° points for a real paired source; none exists for an unpaired real GCM). "
            "**P99 abs. error** is the (weighted) 99th percentile of |prediction − reference|: how wrong "
            "the worst 1 % of cells are (e.g. a cyclone's core). Spectra: the field's mean is removed, a Hann "
            "window tapers the region edges, then the 2-D periodogram is averaged over rings of equal "
            "wavenumber; a method that restores fine-scale detail follows the reference towards short "
            "wavelengths (right), where bilinear interpolation drops away.",
            sizing_mode="stretch_width", styles={"color": "#444", "font-size": "0.92em"})
        self._last = 0.0
        self._dirty = False
        self.param.watch(lambda e: self.refresh(force=True) if e.new and self._dirty else None, "active")
        s = self.state
        s.param.watch(lambda *_: self.refresh(force=True), ["case_loaded", "variable", "baselines_changed", "status"])
        s.param.watch(lambda *_: self.refresh(), ["frame_ready"])
        self.refresh(force=True)

    def __panel__(self):
        return pn.Column(self._title, self._plot_pane, pn.pane.Markdown("### Scores against the reference"),
                         self._table, self._note, sizing_mode="stretch_width")

    def _plot(self, data):
        key = data.get("key", "t2m") if data else "t2m"
        d = DISPLAY[key]
        curves = []
        for name, (wl, p) in (data.get("curves", {}) if data else {}).items():
            ok = np.isfinite(p) & (p > 0)
            live = name not in COLORS
            curves.append(hv.Curve((wl[ok], p[ok]), hv.Dimension("wavelength", label="Wavelength", unit="km"),
                                   hv.Dimension("power", label="Power", unit=f"({d.units})²"), label=name).opts(
                color=COLORS.get(name, COLORS["x̂0"]), line_width=2.5 if live else 1.8,
                line_dash="dashed" if name == "GCM input" else "solid"))
        if not curves:
            curves = [hv.Curve([], "wavelength", "power")]
        return hv.Overlay(curves).opts(
            logx=True, logy=True, invert_xaxis=True, legend_position="right", responsive=True, min_height=380,
            xticks=[5000, 2000, 1000, 500, 200, 100, 50, 20],
            title=f"Power spectrum of {d.label.lower()}", xlabel="Wavelength (km)  →  smaller scales",
            ylabel=f"Power ({d.units})²", show_grid=True, tools=["hover"])

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        s = self.state
        if not self.active:
            self._dirty = True
            return
        self._dirty = False
        if not force and now - self._last < 1.0 and not s.live_final:
            return
        self._last = now
        self._pipe.send({"key": s.variable, "curves": spectra_of(s)})
        self._table.value = metrics_table(s)
        d = DISPLAY[s.variable]
        if s.case is None:
            self._title.object = "### Spectra: no case loaded"
        else:
            what = "" if s.live is None else (" · x̂0 = final result" if s.live_final
                                              else f" · x̂0 at step {s.step}/{s.n_steps}")
            self._title.object = f"### {d.label} ({d.units}) · {s.case.label()}{what}"
