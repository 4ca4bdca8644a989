"""Exports: the result as NetCDF (atomic write to the server's export directory) and a PNG of the maps.

Bokeh's PNG export needs a browser driver that is not available offline, so
the PNG is drawn with matplotlib (Agg) from the same arrays the maps show.
"""

from __future__ import annotations

import io

import numpy as np
import panel as pn

from .common import DISPLAY, SOURCE_LABEL_SHORT, coastlines_for, display_field

__all__ = ["render_png", "export_widgets"]


def render_png(state) -> io.BytesIO:
    """PNG (BytesIO) of GCM input, reference, bilinear, BCSD and the current x̂0 for the display variable."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    c = state.case
    if c is None:
        raise ValueError("Nothing to export: no case loaded")
    key = state.variable
    d = DISPLAY[key]
    vmin, vmax = state.clims[key]
    f = c.fine
    g = c.gcm_grid
    live = state.live_dataset()
    meth = state.result_meta.get("method", state.method)
    panels = [
        (f"GCM input: {c.source_id}", g, display_field(c.gcm, key)[0], "gcm"),
        ("ERA5 (real, 1° points)" if c.real_reference else SOURCE_LABEL_SHORT if c.paired
         else "Demo world (synthetic, unpaired)", f, display_field(c.reference_display, key)[0], "fine"),
        ("Bilinear", f, display_field(state.baselines.get("bilinear"), key)[0], "fine"),
        ("Bilinear + lapse", f, display_field(state.baselines.get("lapse"), key)[0], "fine"),
        ("BCSD", f, display_field(state.baselines.get("bcsd"), key)[0], "fine"),
        (f"{meth} " + ("result" if state.live_final else f"x̂0 (step {state.step}/{state.n_steps})"), f,
         display_field(live, key)[0] if live is not None else None, "fine"),
    ]
    x0, x1 = float(f.lon_bounds[0]), float(f.lon_bounds[-1])
    y0, y1 = float(min(f.lat_bounds[0], f.lat_bounds[-1])), float(max(f.lat_bounds[0], f.lat_bounds[-1]))
    coast = coastlines_for(x0, x1, y0, y1)
    fig = Figure(figsize=(15, 3.9), dpi=110, layout="constrained")
    axes = fig.subplots(1, len(panels), sharex=True, sharey=True)
    mesh = None
    for ax, (title, grid, vals, _) in zip(axes, panels):
        ax.set_title(title, fontsize=9)
        if vals is not None:
            lat_e = np.asarray(grid.lat_bounds)
            z = vals
            if lat_e[0] > lat_e[-1]:
                lat_e, z = lat_e[::-1], z[::-1]
            mesh = ax.pcolormesh(grid.lon_bounds, lat_e, z, cmap=d.cmap, vmin=vmin, vmax=vmax, shading="flat")
        else:
            ax.text(0.5 * (x0 + x1), 0.5 * (y0 + y1), "not available", ha="center", va="center", color="#666")
        for seg in coast:
            ax.plot(seg[:, 0], seg[:, 1], color="black", lw=0.7)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_aspect("equal")
        ax.set_xlabel("Longitude (°E)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("Latitude (°N)", fontsize=8)
    if mesh is not None:
        cb = fig.colorbar(mesh, ax=list(axes), shrink=0.85, pad=0.01)
        cb.set_label(f"{d.label} ({d.units})", fontsize=8)
    fig.suptitle(f"ZSSD Explorer · {c.source_id} · {c.time:%Y-%m-%d %H:%M} UTC · region {c.region.as_text()}"
                 + ("" if c.paired else " · unpaired"), fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    return buf


def export_widgets(state) -> pn.Row:
    """FileDownload buttons for NetCDF (the finished run) and PNG (the current maps)."""

    def nc_cb():
        try:
            path = state.export_netcdf()
        except Exception as e:  # noqa: BLE001 - shown to the user
            state.notify("error", f"NetCDF export failed: {e}")
            return None
        nc.filename = path.name
        return str(path)

    def png_cb():
        try:
            buf = state.export_png()
        except Exception as e:  # noqa: BLE001
            state.notify("error", f"PNG export failed: {e}")
            return None
        c = state.case
        png.filename = f"zssd_{c.source_id}_{c.time:%Y%m%dT%H%M}_{state.variable}.png"
        return buf

    nc = pn.widgets.FileDownload(callback=nc_cb, filename="zssd_result.nc", label="NetCDF of the result",
                                 color="success", variant="outline", embed=False, width=200,
                                 disabled=True)
    png = pn.widgets.FileDownload(callback=png_cb, filename="zssd_maps.png", label="PNG of these maps",
                                  color="primary", variant="outline", embed=False, width=180,
                                  )

    def upd(*_):
        nc.disabled = state.result is None

    state.param.watch(upd, ["status", "case_loaded"])
    return pn.Row(nc, png)
