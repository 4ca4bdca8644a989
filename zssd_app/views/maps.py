"""The "Downscale" maps: GCM input, reference, bilinear, BCSD, live x̂0 and the added detail.

One ``hv.Layout`` of ``DynamicMap`` s, each fed by its own ``hv.streams.Pipe``:
panels share their axes (linked pan/zoom), the colour range is fixed per case
and variable (so colours are comparable across panels and over a run), and a
live update only replaces the image data, so the user's zoom survives.

Updates after the first render (a variable switch, each live x̂0, a baseline arriving) are written
straight into the Bokeh models HoloViews made for each panel (:meth:`MapsView._update_in_place`:
image, colour map, title, colour-bar and hover labels, wind arrows, message) — the same model state a
re-render would give (tested), at a tenth of the cost.  The pipes then hold the new data without
being triggered; should the plots not have the expected layers, the update goes through the pipes.
"""

from __future__ import annotations

import contextlib
import functools

import holoviews as hv
import numpy as np
import panel as pn
import param

from zssd_engine.real_sources import REAL_LABEL, REAL_SOURCES

from ..state import AppState
from .common import (DISPLAY, SOURCE_LABEL_SHORT, blocky, coast_element, display_field, empty_map, lat_formatter,
                     lon_formatter, map_element, pretty_source, vector_element)

__all__ = ["MapsView", "PANELS", "map_plot"]

PANELS = ("gcm", "ref", "live", "bilinear", "lapse", "bcsd", "diff")
FRAME_W = 235


def _bounds(case):
    f = case.fine
    lb = f.lat_bounds
    return float(f.lon_bounds[0]), float(f.lon_bounds[-1]), float(min(lb[0], lb[-1])), float(max(lb[0], lb[-1]))


def map_plot(lat, lon, values, *, key: str, clim, title: str, bounds, kind: str = "image", lat_bounds=None,
             lon_bounds=None, u=None, v=None, cmap: str | None = None, units: str | None = None,
             message: str | None = None, coast=None, frame_width: int = FRAME_W, show_vectors: bool = True,
             vec_lat=None, vec_lon=None):
    """One map panel as an ``hv.Overlay``: field (Image/QuadMesh) + coastlines (+ wind arrows)."""
    d = DISPLAY.get(key)
    x0, x1, y0, y1 = bounds
    units = units or d.units
    cmap = cmap or d.cmap
    vdim = hv.Dimension("value", label=d.label if d else key, unit=units)
    missing = values is None
    if missing:  # same plot structure as with data (DynamicMap overlays must keep their layers)
        values = np.full((np.size(lat), np.size(lon)), 0.5 * (clim[0] + clim[1]))
    el = map_element(lat, lon, values, kind=kind, lat_bounds=lat_bounds, lon_bounds=lon_bounds, vdim=vdim)
    h = frame_width * (y1 - y0) / max(x1 - x0, 1e-6)
    el = el.opts(cmap=cmap, clim=tuple(clim), colorbar=True, clabel=units,
                 tools=["hover"], title=title, xlim=(x0, x1), ylim=(y0, y1), frame_width=frame_width,
                 frame_height=int(max(120, min(2 * frame_width, h))), clipping_colors={"NaN": "#dddddd"},
                 colorbar_opts={"width": 10}, toolbar="above", fontsize={"title": "10.5pt"},
                 xlabel="Longitude", ylabel="Latitude", xformatter=lon_formatter(), yformatter=lat_formatter(),
                 xticks=4, yticks=5,
                 default_tools=["pan", "wheel_zoom", "box_zoom", "reset", "save"], active_tools=["wheel_zoom"],
                 alpha=0.0 if missing else 1.0)
    if kind != "image":
        el = el.opts(line_alpha=0.0, line_width=0)
    coast = coast if coast is not None else coast_element(x0, x1, y0, y1)
    out = el * coast
    # the arrow layer is always there (empty unless wind): a variable switch keeps the overlay's layers
    wind = key == "wind" and show_vectors
    out = out * vector_element(lat if vec_lat is None else vec_lat, lon if vec_lon is None else vec_lon,
                               u if wind else None, v if wind else None, max_speed=float(clim[1]), target=14).opts(
        color="black", alpha=0.7, magnitude="length", rescale_lengths=False, normalize_lengths=False,
        pivot="mid", line_width=1.0)
    out = out * empty_map(message or "", x0, x1, y0, y1)
    return out.opts(title=title)


@functools.lru_cache(maxsize=32)
def _palette(cmap: str, n: int) -> tuple[str, ...]:
    from holoviews.plotting.util import process_cmap

    return tuple(process_cmap(cmap, ncolors=n))


def _write_panel(ov, img, arrows, text, data: dict) -> None:
    """Write one panel's ``data`` (:meth:`MapsView._data`) into the Bokeh models of its overlay plot."""
    d = DISPLAY.get(data["key"])
    lat, vals = np.asarray(data["lat"], dtype=np.float64), data.get("values")
    if data.get("kind", "image") != "image" or type(img).__name__ != "RasterPlot":
        raise TypeError("not an image panel")
    missing = vals is None  # as map_plot: a hidden mid-range image keeps the layer
    z = (np.full((lat.size, np.size(data["lon"])), 0.5 * (data["clim"][0] + data["clim"][1])) if missing
         else np.asarray(vals, dtype=np.float64))
    if lat.size > 1 and lat[0] > lat[-1]:
        z = z[::-1]
    src = img.handles["source"]
    if np.shape(src.data["image"][0]) != z.shape:
        raise ValueError("the panel's grid changed")
    units = data.get("key_units") or d.units
    lo, hi = map(float, data["clim"])
    cm = img.handles["color_mapper"]
    palette = _palette(data.get("cmap") or d.cmap, len(cm.palette))
    if tuple(cm.palette) != palette:  # (a palette is validated colour by colour: set it only when it changes)
        cm.palette = list(palette)
    cm.update(low=lo, high=hi)
    img.handles["glyph"].global_alpha = 0.0 if missing else 1.0
    src.data = dict(src.data, image=[z])
    img.handles["colorbar"].title = units
    label = f"{d.label if d else data['key']} ({units})"
    for hover in {id(h): h for h in (img.handles.get("hover"), ov.handles.get("hover")) if h is not None}.values():
        tips = list(hover.tooltips)
        hover.tooltips = tips[:-1] + [(label, tips[-1][1])]
    ov.handles["plot"].title.text = data["title"]
    asrc = arrows.handles["source"]
    if data["key"] == "wind" and data.get("u") is not None:
        el = vector_element(data.get("lat_u", data["lat"]), data.get("lon_u", data["lon"]), data["u"], data["v"],
                            max_speed=hi, target=14)
        # arrow lengths are the element's own ``length`` (normalize_lengths/rescale_lengths off): range unused
        seg, _, _ = arrows.get_data(el, {"length": {"combined": (0.0, 1.0)}}, {})
        asrc.data = {k: np.asarray(seg[k]) for k in asrc.data}
    elif any(len(c) for c in asrc.data.values()):
        asrc.data = {k: np.zeros(0) for k in asrc.data}
    text.handles["source"].data = dict(text.handles["source"].data, text=[data.get("message") or ""])


class MapsView(pn.viewable.Viewer):
    """Six linked maps of the current case and run."""

    state = param.ClassSelector(class_=AppState)

    def __init__(self, **params):
        super().__init__(**params)
        self._pipes: dict[str, hv.streams.Pipe] = {}
        self.fallbacks = 0  # in-place updates that had to re-render through the pipes (tests: none)
        self._case = None
        self._pane = pn.pane.HoloViews(None, sizing_mode="stretch_width", min_height=400, linked_axes=True,
                                       css_classes=["zssd-maps"])
        self._caption = pn.pane.Markdown("", sizing_mode="stretch_width", styles={"color": "#444"},
                                         margin=(0, 10))
        self._layout = pn.Column(self._caption, self._pane, sizing_mode="stretch_width")
        s = self.state
        s.param.watch(lambda *_: self.rebuild(), ["case_loaded"])
        s.param.watch(lambda *_: self.switch_variable(), ["variable"])
        s.param.watch(lambda *_: self.push_live(), ["frame_ready"])
        s.param.watch(lambda *_: self.push_baselines(), ["baselines_changed"])
        s.param.watch(lambda *_: self.push_live(), ["status", "result_view", "result_member"])
        s.param.watch(lambda *_: self._show_loading(), ["status"])
        self.rebuild()

    def _show_loading(self) -> None:
        """While a new case loads, the maps (still the old case, under its own caption) are greyed with a spinner."""
        self._pane.loading = self.state.status == "loading"

    def __panel__(self):
        return self._layout

    # ------------------------------------------------------------ contents
    def _data(self, panel: str) -> dict:
        s = self.state
        c = s.case
        key = s.variable
        d = DISPLAY[key]
        f = c.fine
        base = {"lat": f.lat, "lon": f.lon, "kind": "image", "message": None, "u": None, "v": None,
                "clim": s.clims[key], "key": key}
        if panel == "gcm":
            g = c.gcm_grid
            vals, u, v = display_field(c.gcm, key)
            # each 0.25° pixel shows the GCM cell that contains it: true cell boundaries, drawn as one image
            vals = blocky(g.lat_bounds, g.lon_bounds, vals, f.lat, f.lon)
            nat = f"{c.gcm.attrs.get('native_grid', '')}".strip().replace("x", "×")
            return {**base, "values": vals, "u": u, "v": v, "lat_u": g.lat, "lon_u": g.lon,
                    "title": f"GCM: {pretty_source(c.source_id)}"
                             + (f" ({nat} native grid)" if nat else " (native grid)"),
                    "message": None if vals is not None else f"{d.label}: not in this GCM file"}
        if panel == "ref":
            vals, u, v = display_field(c.reference_display, key)
            title = (REAL_LABEL if c.real_reference else SOURCE_LABEL_SHORT if c.paired
                     else "Demo world (synthetic), NOT paired")
            return {**base, "values": vals, "u": u, "v": v, "title": title}
        if panel in ("bilinear", "lapse", "bcsd"):
            ds = s.baselines.get(panel)
            name = {"bilinear": "Bilinear interpolation", "lapse": "Bilinear + lapse rate (−6.5 K/km)",
                    "bcsd": "BCSD (bias correction + disaggregation)"}[panel]
            if ds is None:
                err = s.baseline_errors.get(panel)
                msg = ("not available for a real source" if (err and c.source_id in REAL_SOURCES) else
                       "not available for a real GCM" if (err and not c.paired) else
                       "turned off on this server" if (err and "turned off" in err) else
                       "failed: see notification" if err else "training BCSD on demo years… (~20 s)")
                return {**base, "values": None, "title": name, "message": msg}
            vals, u, v = display_field(ds, key)
            return {**base, "values": vals, "u": u, "v": v, "title": name,
                    "message": None if vals is not None else "not available"}
        meth = s.result_meta.get("method", s.method)
        live = s.live_dataset()
        if panel == "live":
            if live is None:
                return {**base, "values": None, "title": f"{s.method} x̂0 (press Run)", "message": "press Run"}
            ens = s.result_display()
            if ens is not None:
                vals, u, v = display_field(ens[0], key)
                if s.result_view == "spread":  # a standard deviation: the display scale, not its offset (°C)
                    sp = vals if key == "wind" or vals is None else vals - DISPLAY[key].offset
                    hi = float(np.nanpercentile(sp, 99.5)) if sp is not None and np.isfinite(sp).any() else 1.0
                    return {**base, "values": sp, "u": None, "v": None, "title": ens[1], "clim": (0.0, max(hi, 1e-6)),
                            "cmap": "viridis"}
                return {**base, "values": vals, "u": u, "v": v, "title": ens[1]}
            vals, u, v = display_field(live, key)
            if s.live_final:
                title = f"{meth} result (member 1 of {s.result_meta.get('members', 1)})"
            else:
                title = f"{meth} x̂0, step {s.step}/{s.n_steps}"
            return {**base, "values": vals, "u": u, "v": v, "title": title}
        # diff: added detail over bilinear
        bil = s.baselines.get("bilinear")
        title = f"Added detail: {meth} − bilinear"
        if live is None or bil is None:
            return {**base, "values": None, "title": title, "message": "after Run", "clim": s.clims[key + ":diff"],
                    "cmap": "RdBu_r"}
        a, _, _ = display_field(live, key)
        b, _, _ = display_field(bil, key)
        if a is None or b is None:  # e.g. msl of a GCM file without psl: bilinear has nothing to compare
            return {**base, "values": None, "title": title, "clim": s.clims[key + ":diff"], "cmap": "RdBu_r",
                    "message": f"{DISPLAY[key].label}: not in this GCM"}
        return {**base, "values": a - b, "title": title, "clim": s.clims[key + ":diff"], "cmap": "RdBu_r",
                "key_units": DISPLAY[key].units}

    def _callback(self, bounds, coast):
        def cb(data):
            if not data:
                return hv.Overlay([coast])
            return map_plot(data["lat"], data["lon"], data.get("values"), key=data["key"], clim=data["clim"],
                            title=data["title"], bounds=bounds, kind=data.get("kind", "image"),
                            lat_bounds=data.get("lat_bounds"), lon_bounds=data.get("lon_bounds"),
                            u=data.get("u"), v=data.get("v"), cmap=data.get("cmap"), message=data.get("message"),
                            coast=coast, vec_lat=data.get("lat_u"), vec_lon=data.get("lon_u"))
        return cb

    def rebuild(self) -> None:
        s = self.state
        if s.case is None:
            self._pane.object = None
            self._caption.object = "No case loaded: pick a cyclone or a GCM, time and region in the sidebar."
            return
        c = s.case
        bounds = _bounds(c)
        coast = coast_element(*bounds)
        self._pipes = {p: hv.streams.Pipe(data=self._data(p)) for p in PANELS}
        dmaps = [hv.DynamicMap(self._callback(bounds, coast), streams=[self._pipes[p]]) for p in PANELS]
        layout = hv.Layout(dmaps).cols(3).opts(shared_axes=True, merge_tools=True)
        self._pane.object = layout
        self._case = c
        self._caption.object = self._caption_text()

    def _caption_text(self) -> str:
        c, d = self.state.case, DISPLAY[self.state.variable]
        paired = ("paired with **real ERA5**: the reference is ERA5 at its 1° points (each drawn as a 4×4 block; "
                  "scores use the points only); ERA5 © ECMWF/Copernicus, CC-BY 4.0" if c.real_reference else
                  "paired: the demo-world reference is the truth the GCM field was derived from"
                  if c.paired else "**unpaired**: a real GCM has no matching reference state; the demo-world "
                                   "panel is context only")
        monthly = (" · **monthly means**: the input is a month's mean, not a state at this hour; ZSSD and DPS draw "
                   "their members at times spread over the month and guide the members' *mean* toward it, so the "
                   "ensemble mean is the downscaled monthly mean (use 8 members); live x̂0 is member 1, an instant"
                   if c.gcm.attrs.get("time_mean") == "month" else "")
        return (
            f"**{c.source_id}**, {c.time:%Y-%m-%d %H:%M} UTC, region {c.region.as_text()} (S,N,W,E) · "
            f"{d.label} in {d.units}, one colour scale for all field panels · {paired}{monthly} · "
            f"maps in longitude/latitude (PlateCarree); pan/zoom is linked.")

    def switch_variable(self) -> None:
        """A new variable on the same case: new data through the existing pipes (no new plots), new caption."""
        if not self._pipes or self.state.case is None or self._case is not self.state.case:
            self.rebuild()
            return
        self._send({p: self._data(p) for p in PANELS})
        self._caption.object = self._caption_text()

    def _send(self, datas: dict[str, dict]) -> None:
        """New contents for some panels: in place when the plots allow it, else re-rendered through the pipes
        (in a frozen document, so the model graph is recomputed once).  In place needs no frozen document:
        no model is added, so there is nothing to recompute."""
        if not self._update_in_place(datas):
            with self._frozen():
                for p, data in datas.items():
                    self._pipes[p].send(data)

    def _overlay_plots(self) -> list[tuple]:
        """Per rendered document, ``(document, panels)`` with the layer plots ``(overlay, [image, coast, arrows,
        message])`` of each panel in :data:`PANELS` order, read from the HoloViews plot of the pane; ``[]``
        when any panel is not in that shape."""
        out = []
        for plot, _ in self._pane._plots.values():
            panels = []
            for key in sorted(plot.subplots):  # (row, col) in layout order
                ov = plot.subplots[key].subplots.get("main")
                layers = list(getattr(ov, "subplots", {}).values())
                if len(layers) != 4 or type(layers[0]).__name__ != "RasterPlot":
                    return []
                panels.append((ov, layers))
            if len(panels) != len(PANELS):
                return []
            out.append((plot.document, panels))
        return out

    def _update_in_place(self, datas: dict[str, dict]) -> bool:
        """The fast path of every update (variable switch, live x̂0, baselines): write each panel's new
        field, colour map, title, arrows and message straight into the Bokeh models HoloViews made (about
        10x cheaper than re-rendering seven overlays), and store the data in the pipes without triggering
        them, so that the next live update starts from it.

        Bokeh models of a server session may only change as Panel changes its own: where the session may be
        written now (``state._unblocked``) the write happens inside ``panel.io.document.unlocked`` (which sends
        the changes to the session's sockets), otherwise (a worker thread) it is scheduled as the document's
        next tick callback.  Returns False (nothing done) when the plots are not in the
        expected shape; the caller then re-renders through the pipes."""
        from panel.io.document import unlocked
        from panel.io.state import state as pn_state

        docs = self._overlay_plots()
        if not docs:
            return False
        for p, data in datas.items():
            self._pipes[p].update(data=data)
        for doc, panels in docs:
            if doc is None or doc.session_context is None or pn_state._unblocked(doc):
                with unlocked():  # as Panel applies its own updates: the changes go out to the session's sockets
                    self._write_panels(panels, datas)
            else:
                doc.add_next_tick_callback(functools.partial(self._write_panels, panels, datas))
        return True

    def _write_panels(self, panels: list, datas: dict[str, dict]) -> None:
        """Write ``datas`` into one document's panels; on a surprise, re-render them through the pipes."""
        try:
            for (ov, (img, _coast, arrows, text)), p in zip(panels, PANELS):
                if p in datas:
                    _write_panel(ov, img, arrows, text, datas[p])
        except (KeyError, AttributeError, IndexError, TypeError, ValueError):
            self.fallbacks += 1
            for p, data in datas.items():
                self._pipes[p].send(data)

    @contextlib.contextmanager
    def _frozen(self):
        """Hold the Bokeh documents showing the maps while several panels change: the document's model
        graph is then recomputed once, not once per panel (half the cost of a variable switch)."""
        with contextlib.ExitStack() as stack:
            docs = {id(m.document): m.document for m, _ in self._pane._models.values()
                    if getattr(m, "document", None) is not None}
            for doc in docs.values():
                stack.enter_context(doc.models.freeze())
            yield

    def push_live(self) -> None:
        if not self._pipes or self.state.case is None:
            return
        self._send({p: self._data(p) for p in ("live", "diff")})

    def push_baselines(self) -> None:
        if not self._pipes or self.state.case is None:
            return
        self._send({p: self._data(p) for p in ("bilinear", "lapse", "bcsd", "diff")})
