"""The "Cyclone" tab: a case study of the storm in a cyclone case.

For a case opened from the cyclone picker (real ERA5 or demo world): a map zoomed on the storm
(reference, GCM input, the result), radial profiles of sea-level pressure and 10 m wind around the
reference's centre (reference, GCM, bilinear, bilinear + lapse, and every member of the finished
run), and the cyclone metrics of :func:`zssd_engine.cyclones.cyclone_metrics` per member.  Profiles and
metrics use the reference's own points (real ERA5: its 1° points), so every curve is comparable.
"""

from __future__ import annotations

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param

from zssd_engine.cyclones import cyclone_metrics, radial_profile
from zssd_engine.metrics import at_reference_points

from ..state import AppState
from .common import coast_element, display_field
from .maps import map_plot

__all__ = ["CycloneView", "cyclone_analysis"]

ZOOM_DEG = 8.0


def _at_ref(ds, ref, var: str):
    """``ds[var]`` (one member, lat, lon) at the reference's points, as numpy."""
    da = ds[var]
    for d in list(da.dims):
        if d not in ("lat", "lon"):
            da = da.isel({d: 0})
    return np.asarray(at_reference_points(da, ref[var]).transpose("lat", "lon").values, dtype=np.float64)


def _members(result, ref):
    """``[(msl, u, v), …]`` of every member of a finished run at the reference's points."""
    if result is None or "msl_members" not in result:
        return []
    out = []
    for k in range(result.sizes["member"]):
        one = {v: result[f"{v}_members"].isel(time=0, member=k) for v in ("msl", "u10", "v10")
               if f"{v}_members" in result}
        arr = {v: np.asarray(at_reference_points(a, ref[v]).transpose("lat", "lon").values) for v, a in one.items()}
        out.append((arr["msl"], arr.get("u10"), arr.get("v10")))
    return out


def cyclone_analysis(state: AppState) -> dict | None:
    """Profiles and metrics of the current cyclone case (None when the case is not a cyclone case)."""
    c = state.case
    cat = state.catalog.get(state.case_name) if state.case_name else None
    if c is None or cat is None or "msl" not in c.reference:
        return None
    ref = c.reference.isel(time=0) if "time" in c.reference.dims else c.reference
    lat, lon = ref["lat"].values, ref["lon"].values
    near = (cat.peak_lat, cat.peak_lon + 360.0 * np.round((float(lon.mean()) - cat.peak_lon) / 360.0))
    rmsl = np.asarray(ref["msl"].transpose("lat", "lon").values, dtype=np.float64)
    ruv = ((np.asarray(ref["u10"].transpose("lat", "lon").values), np.asarray(ref["v10"].transpose("lat", "lon").values))
           if "u10" in ref else None)
    m0 = cyclone_metrics(rmsl, rmsl, lat, lon, near=near)
    centre = m0["ref_centre"][:2]
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {"msl": {}, "wind": {}}

    def add(name, msl, u, v):
        if msl is not None:
            curves["msl"][name] = radial_profile(msl / 100.0, lat, lon, centre)
        if u is not None and v is not None:
            curves["wind"][name] = radial_profile(np.hypot(u, v), lat, lon, centre)

    add("Reference", rmsl, *(ruv or (None, None)))
    rows = []
    for name, ds in (("Bilinear", state.baselines.get("bilinear")), ("Bilinear + lapse", state.baselines.get("lapse"))):
        if ds is not None and "msl" in ds:
            msl = _at_ref(ds, ref, "msl")
            uv = (_at_ref(ds, ref, "u10"), _at_ref(ds, ref, "v10")) if "u10" in ds and ruv else None
            add(name, msl, *(uv or (None, None)))
            rows.append((name, cyclone_metrics(msl, rmsl, lat, lon, uv, ruv, near=centre)))
    if "msl" in c.gcm:  # the GCM field drawn on its own cells: profile from its cell centres
        g = c.gcm
        gp = np.asarray(g["msl"].values, dtype=np.float64)
        curves["msl"]["GCM input"] = radial_profile(gp / 100.0, g["lat"].values, g["lon"].values, centre,
                                                    bin_km=100.0)
    meth = state.result_meta.get("method", state.method)
    for k, (msl, u, v) in enumerate(_members(state.result, ref)):
        add(f"{meth} member {k + 1}", msl, u, v)
        uv = (u, v) if u is not None and ruv else None
        rows.append((f"{meth} member {k + 1}", cyclone_metrics(msl, rmsl, lat, lon, uv, ruv, near=centre)))
    table = pd.DataFrame([{
        "Field": n, "Centre error (km)": f"{r['position_error_km']:.0f}",
        "Central p (hPa)": f"{r['pred_centre'][2]:.1f}", "Δp (hPa)": f"{r['pressure_error_hpa']:+.1f}",
        "Δ max wind (m/s)": "–" if not np.isfinite(r["max_wind_error"]) else f"{r['max_wind_error']:+.1f}",
        "RMW (km)": "–" if not np.isfinite(r["rmw_pred_km"]) else f"{r['rmw_pred_km']:.0f}",
        "Closed low ≤300 km": "yes" if r["detected"] else "no",
        "Hit (2°, 8 hPa)": "yes" if r["hit"] else "no"} for n, r in rows])
    return {"centre": centre, "ref_centre": m0["ref_centre"], "curves": curves, "table": table,
            "real": c.real_reference, "name": cat.name}


class CycloneView(pn.viewable.Viewer):
    """Zoomed map, radial profiles and cyclone metrics of the current cyclone case."""

    state = param.ClassSelector(class_=AppState)
    active = param.Boolean(default=True, doc="tab visible: refresh only then")

    def __init__(self, **params):
        super().__init__(**params)
        self._title = pn.pane.Markdown("", sizing_mode="stretch_width")
        self._maps = pn.pane.HoloViews(None, sizing_mode="stretch_width", linked_axes=False)
        self._profiles = pn.pane.HoloViews(None, sizing_mode="stretch_width", linked_axes=False)
        self._table = pn.widgets.Tabulator(pd.DataFrame(), show_index=False, disabled=True,
                                           sizing_mode="stretch_width", layout="fit_columns", theme="simple")
        self._dirty = True
        s = self.state
        s.param.watch(lambda *_: self.refresh(), ["case_loaded", "baselines_changed", "status"])
        self.param.watch(lambda e: self.refresh() if e.new and self._dirty else None, "active")
        self.refresh()

    def __panel__(self):
        return pn.Column(self._title, self._maps, self._profiles, pn.pane.Markdown("### Cyclone metrics"),
                         self._table, sizing_mode="stretch_width")

    def refresh(self) -> None:
        if not self.active:
            self._dirty = True
            return
        self._dirty = False
        s = self.state
        a = cyclone_analysis(s)
        if a is None:
            self._title.object = ("### Cyclone case study\nPick a cyclone in the sidebar's case picker "
                                  "(the real ERA5 cyclone is listed first) to see its zoomed map, radial profiles "
                                  "and metrics here.")
            self._maps.object = self._profiles.object = None
            self._table.value = pd.DataFrame()
            return
        clat, clon, cp = a["ref_centre"]
        kind = "real ERA5, 1° points" if a["real"] else "demo world (synthetic)"
        self._title.object = (f"### {a['name']} — reference centre {abs(clat):.1f}°{'S' if clat < 0 else 'N'} "
                              f"{clon % 360:.1f}°E, {cp:.0f} hPa ({kind})\nProfiles are ring means around the "
                              "reference centre, at the reference's points; each member of a finished run is one "
                              "thin red line.")
        self._maps.object = self._zoom(a)
        self._profiles.object = self._profile_plot(a)
        self._table.value = a["table"]

    def _zoom(self, a):
        s, c = self.state, self.state.case
        lat0, lon0 = a["centre"]
        bounds = (lon0 - ZOOM_DEG, lon0 + ZOOM_DEG, lat0 - ZOOM_DEG, lat0 + ZOOM_DEG)
        coast = coast_element(*bounds)
        f = c.fine
        ref = display_field(c.reference_display, "msl")[0]
        if ref is None:
            return None
        clim = (float(np.nanmin(ref)), float(np.nanpercentile(ref, 99)))
        panels = [map_plot(f.lat, f.lon, ref, key="msl", clim=clim, bounds=bounds, coast=coast,
                           title="Reference msl" + (" (ERA5, 1° points)" if a["real"] else ""), frame_width=300)]
        disp = s.result_display()
        res = disp[0] if disp is not None else s.live_dataset()
        if res is not None and s.live_final:
            title = disp[1] if disp is not None else f"{s.result_meta.get('method', s.method)} result"
            panels.append(map_plot(f.lat, f.lon, display_field(res, "msl")[0], key="msl", clim=clim, bounds=bounds,
                                   coast=coast, title=title, frame_width=300))
        lap = s.baselines.get("lapse")
        if lap is not None and "msl" in lap:
            panels.append(map_plot(f.lat, f.lon, display_field(lap, "msl")[0], key="msl", clim=clim, bounds=bounds,
                                   coast=coast, title="Bilinear (+ lapse) msl", frame_width=300))
        return hv.Layout(panels).cols(3)

    @staticmethod
    def _profile_plot(a):
        plots = []
        for key, label, unit in (("msl", "Sea-level pressure", "hPa"), ("wind", "10 m wind speed", "m/s")):
            curves = []
            for name, (r, m) in a["curves"][key].items():
                ok = np.isfinite(m)
                member = "member" in name
                color = {"Reference": "black", "GCM input": "#7f7f7f", "Bilinear": "#1f77b4",
                         "Bilinear + lapse": "#2ca02c"}.get(name, "#d62728")
                curves.append(hv.Curve((r[ok], m[ok]), hv.Dimension("r", label="Distance from centre", unit="km"),
                                       hv.Dimension(key, label=label, unit=unit),
                                       label="members" if member else name).opts(
                    color=color, line_width=1.0 if member else 2.2, alpha=0.6 if member else 1.0,
                    line_dash="dashed" if name == "GCM input" else "solid"))
            if curves:
                plots.append(hv.Overlay(curves).opts(title=f"Radial profile: {label.lower()}", width=480,
                                                     height=300, show_grid=True, legend_position="bottom_right"))
        return hv.Layout(plots).cols(2) if plots else None
