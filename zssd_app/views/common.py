"""Shared pieces of the map views: display variables, coastlines, colour limits, map elements.

All maps are drawn in geographic coordinates (longitude/latitude in degrees,
i.e. the PlateCarree projection, one degree = one degree on both axes) with
HoloViews + Bokeh; coastlines come from the shipped Natural Earth 110 m
shapefile (offline) and are drawn as an ``hv.Path`` (a Bokeh ``MultiLine``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the Bokeh backend so .opts() works before hv.extension)
import numpy as np

if hv.Store.current_backend != "bokeh":
    hv.Store.set_current_backend("bokeh")

__all__ = [
    "DISPLAY", "DisplayVar", "pretty_source", "NE_DIR", "COASTLINE_SHP", "configure_cartopy", "coastline_segments",
    "coastlines_for", "field2d", "display_field", "robust_clim", "lon_lat_edges", "map_element",
    "coast_element", "vector_element", "blocky", "empty_map", "SOURCE_LABEL_SHORT",
]

ROOT = Path(__file__).resolve().parents[2]
from zssd_engine.paths import NATURAL_EARTH_DIR as NE_DIR  # noqa: E402  (the demo pack, wherever installed)
COASTLINE_SHP = NE_DIR / "shapefiles" / "natural_earth" / "physical" / "ne_110m_coastline.shp"
#: How the demo world's fields are labelled everywhere in the app (never "ERA5").
SOURCE_LABEL_SHORT = "Demo world (synthetic stand-in for ERA5)"


@dataclass(frozen=True)
class DisplayVar:
    key: str
    label: str
    units: str          # display units (after ``scale``/``offset``)
    cmap: str
    scale: float = 1.0
    offset: float = 0.0


#: What the variable switch offers; msl is shown in hPa, wind as speed (with arrows).
DISPLAY: dict[str, DisplayVar] = {
    "t2m": DisplayVar("t2m", "2 m temperature", "K", "RdYlBu_r"),
    "msl": DisplayVar("msl", "Mean sea-level pressure", "hPa", "viridis", scale=0.01),
    "wind": DisplayVar("wind", "10 m wind speed", "m s⁻¹", "YlGnBu"),
}


def pretty_source(source_id: str) -> str:
    """``x20`` → ``×20 task``; other source ids unchanged."""
    if source_id in ("x6", "x10", "x20"):
        return f"×{source_id[1:]} task"
    return source_id


def configure_cartopy() -> None:
    """Point cartopy at the shipped Natural Earth files (no download is ever attempted)."""
    try:
        import cartopy

        cartopy.config["pre_existing_data_dir"] = str(NE_DIR)
        cartopy.config["data_dir"] = str(NE_DIR)
    except ImportError:  # pragma: no cover - cartopy is a dependency
        pass


@lru_cache(maxsize=1)
def coastline_segments() -> tuple[np.ndarray, ...]:
    """Natural Earth 110 m coastlines as a tuple of ``(n, 2)`` lon/lat arrays (lon in [-180, 180])."""
    import shapefile  # pyshp

    out = []
    with shapefile.Reader(str(COASTLINE_SHP)) as r:
        for shp in r.shapes():
            pts = np.asarray(shp.points, dtype=np.float64)
            parts = list(shp.parts) + [len(pts)]
            for a, b in zip(parts[:-1], parts[1:]):
                if b - a >= 2:
                    out.append(pts[a:b])
    return tuple(out)


def coastlines_for(x0: float, x1: float, y0: float, y1: float, margin: float = 2.0) -> list[np.ndarray]:
    """Coastline pieces inside a lon/lat box, in the box's own longitude frame.

    The box may use longitudes beyond 180 (or below −180) for regions across
    the dateline; coastlines are shifted by ±360° to match and cut where they
    leave the box (plus ``margin`` degrees).
    """
    xa, xb, ya, yb = x0 - margin, x1 + margin, y0 - margin, y1 + margin
    pieces: list[np.ndarray] = []
    for seg in coastline_segments():
        for shift in (-360.0, 0.0, 360.0):
            lon = seg[:, 0] + shift
            if lon.max() < xa or lon.min() > xb:
                continue
            lat = seg[:, 1]
            inside = (lon >= xa) & (lon <= xb) & (lat >= ya) & (lat <= yb)
            if not inside.any():
                continue
            idx = np.nonzero(inside)[0]
            breaks = np.nonzero(np.diff(idx) > 1)[0]
            for run in np.split(idx, breaks + 1):
                lo, hi = max(run[0] - 1, 0), min(run[-1] + 2, lon.size)
                if hi - lo >= 2:
                    pieces.append(np.column_stack([lon[lo:hi], lat[lo:hi]]))
    return pieces


def field2d(ds, var: str) -> np.ndarray | None:
    """A ``(lat, lon)`` numpy array of ``var`` from a dataset (time/member squeezed), or None if absent."""
    if ds is None or var not in ds:
        return None
    da = ds[var]
    for d in list(da.dims):
        if d not in ("lat", "lon"):
            da = da.isel({d: 0})
    return np.asarray(da.transpose("lat", "lon").values, dtype=np.float64)


def display_field(ds, key: str) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """``(values, u, v)`` for the display variable ``key`` (u, v only for wind); values in display units."""
    if key == "wind":
        u, v = field2d(ds, "u10"), field2d(ds, "v10")
        if u is None or v is None:
            return None, None, None
        return np.hypot(u, v), u, v
    a = field2d(ds, key)
    if a is None:
        return None, None, None
    d = DISPLAY[key]
    return a * d.scale + d.offset, None, None


def robust_clim(arrays, key: str, lo: float = 0.5, hi: float = 99.5) -> tuple[float, float]:
    """A colour range shared by every panel of a case: percentiles over all given arrays."""
    vals = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays if a is not None] or [np.zeros(1)])
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return (0.0, 1.0)
    a, b = np.percentile(vals, [lo, hi])
    if key in ("msl", "wind"):
        # let a cyclone's core (a few dozen cells) reach further into the scale without washing out the rest
        vmin, vmax = float(vals.min()), float(vals.max())
        span = b - a
        a = max(vmin, a - 0.5 * span)
        b = min(vmax, b + 0.35 * span)
    if key == "wind":
        a = 0.0
        b = max(b * 1.05, 5.0)
    if not b > a:
        b = a + 1.0
    pad = 0.02 * (b - a)
    return (float(a - (pad if key != "wind" else 0.0)), float(b + pad))


def lon_lat_edges(lat: np.ndarray, lon: np.ndarray, lat_bounds=None, lon_bounds=None) -> tuple[np.ndarray, np.ndarray]:
    """Cell edges (ascending) from centres or CF bounds."""
    def edges(c, b):
        if b is not None:
            return np.asarray(b, dtype=np.float64)
        c = np.asarray(c, dtype=np.float64)
        if c.size == 1:
            return np.array([c[0] - 0.5, c[0] + 0.5])
        mid = 0.5 * (c[1:] + c[:-1])
        return np.concatenate([[2 * c[0] - mid[0]], mid, [2 * c[-1] - mid[-1]]])
    return edges(lon, lon_bounds), edges(lat, lat_bounds)


def blocky(coarse_lat_bounds, coarse_lon_bounds, values: np.ndarray | None, fine_lat: np.ndarray,
           fine_lon: np.ndarray) -> np.ndarray | None:
    """A coarse field (any rectilinear grid, e.g. Gaussian) sampled at fine cell centres: each fine cell takes
    the value of the coarse cell containing it, so the coarse cells show as blocks on a regular image."""
    if values is None:
        return None
    lb = np.asarray(coarse_lat_bounds, dtype=np.float64)
    ob = np.asarray(coarse_lon_bounds, dtype=np.float64)
    v = np.asarray(values)
    if lb[0] > lb[-1]:
        lb, v = lb[::-1], v[::-1]
    i = np.clip(np.searchsorted(lb, np.asarray(fine_lat), side="right") - 1, 0, v.shape[0] - 1)
    lon = ob[0] + (np.asarray(fine_lon, dtype=np.float64) - ob[0]) % 360.0
    j = np.clip(np.searchsorted(ob, lon, side="right") - 1, 0, v.shape[1] - 1)
    return v[np.ix_(i, j)]


def map_element(lat: np.ndarray, lon: np.ndarray, values: np.ndarray | None, *, kind: str = "image",
                lat_bounds=None, lon_bounds=None, label: str = "", vdim: str = "value"):
    """An ``hv.Image`` (regular grid) or ``hv.QuadMesh`` (e.g. a Gaussian GCM grid) in lon/lat."""
    import holoviews as hv

    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    if values is None:
        values = np.full((lat.size, lon.size), np.nan)
    z = np.asarray(values, dtype=np.float64)
    if lat.size > 1 and lat[0] > lat[-1]:
        lat, z = lat[::-1], z[::-1]
        if lat_bounds is not None:
            lat_bounds = np.asarray(lat_bounds)[::-1]
    kdims = [hv.Dimension("lon", label="Longitude", unit="°E"), hv.Dimension("lat", label="Latitude", unit="°N")]
    if kind == "image":
        return hv.Image((lon, lat, z), kdims=kdims, vdims=[vdim], label=label)
    xe, ye = lon_lat_edges(lat, lon, lat_bounds, lon_bounds)
    if ye.size > 1 and ye[0] > ye[-1]:
        ye = ye[::-1]
    return hv.QuadMesh((xe, ye, z), kdims=kdims, vdims=[vdim], label=label)


def coast_element(x0: float, x1: float, y0: float, y1: float):
    """Coastlines over a box as an ``hv.Path`` (black, thin)."""
    import holoviews as hv

    kdims = [hv.Dimension("lon", label="Longitude", unit="°E"), hv.Dimension("lat", label="Latitude", unit="°N")]
    return hv.Path([join_paths(coastlines_for(x0, x1, y0, y1))], kdims=kdims).opts(
        color="black", line_width=1.0, alpha=0.8)


def join_paths(pieces) -> np.ndarray:
    """Line pieces as one ``(n, 2)`` array with NaN rows between them (drawn as separate lines by Bokeh,
    but one glyph: a map renders several times faster than with one path per piece)."""
    pieces = [np.asarray(p, dtype=np.float64) for p in pieces if len(p)]
    if not pieces:
        return np.empty((0, 2))
    gap = np.full((1, 2), np.nan)
    return np.concatenate([x for p in pieces for x in (p, gap)][:-1])


def lon_formatter():
    """Bokeh tick formatter writing longitudes as 130°W / 0° / 45°E (any frame: 200 → 160°W)."""
    from bokeh.models import CustomJSTickFormatter

    return CustomJSTickFormatter(code=(
        "const l = ((tick + 180) % 360 + 360) % 360 - 180; const a = Math.round(Math.abs(l) * 100) / 100;"
        "return a == 0 ? '0°' : (a == 180 ? '180°' : a + (l < 0 ? '°W' : '°E'));"))


def lat_formatter():
    """Bokeh tick formatter writing latitudes as 20°S / 0° / 35°N."""
    from bokeh.models import CustomJSTickFormatter

    return CustomJSTickFormatter(code=(
        "const a = Math.round(Math.abs(tick) * 100) / 100; return a == 0 ? '0°' : a + (tick < 0 ? '°S' : '°N');"))


def vector_element(lat: np.ndarray, lon: np.ndarray, u: np.ndarray | None, v: np.ndarray | None,
                   target: int = 14, max_speed: float | None = None):
    """Thinned wind arrows (``hv.VectorField``; about ``target`` arrows across the wider side).

    vdims ``angle`` and ``length``: an arrow of ``max_speed`` (default: the largest speed) is as long as the
    spacing between arrows, in degrees; use ``.opts(magnitude="length", rescale_lengths=False)``.
    """
    import holoviews as hv

    kdims = [hv.Dimension("lon", label="Longitude", unit="°E"), hv.Dimension("lat", label="Latitude", unit="°N")]
    vd = ["angle", "length", hv.Dimension("speed", unit="m s⁻¹")]
    if u is None or v is None:
        return hv.VectorField([], kdims=kdims, vdims=vd)
    lat = np.asarray(lat)
    lon = np.asarray(lon)
    step = max(1, int(np.ceil(max(lat.size, lon.size) / target)))
    o_lat, o_lon = (lat.size % step) // 2, (lon.size % step) // 2
    li = np.arange(o_lat + step // 2, lat.size, step)
    lo = np.arange(o_lon + step // 2, lon.size, step)
    uu, vv = u[np.ix_(li, lo)], v[np.ix_(li, lo)]
    X, Y = np.meshgrid(lon[lo], lat[li])
    ang = np.arctan2(vv, uu)
    mag = np.hypot(uu, vv)
    vmax = max_speed if max_speed else float(np.nanmax(mag)) if np.isfinite(mag).any() else 1.0
    spacing = step * min(float(np.median(np.abs(np.diff(lat)))) if lat.size > 1 else 1.0,
                         float(np.median(np.abs(np.diff(lon)))) if lon.size > 1 else 1.0)
    length = np.minimum(mag, vmax) / max(vmax, 1e-9) * spacing * 0.95
    ok = np.isfinite(ang) & np.isfinite(mag)
    return hv.VectorField((X[ok], Y[ok], ang[ok], length[ok], mag[ok]), kdims=kdims, vdims=vd)


def empty_map(message: str, x0: float, x1: float, y0: float, y1: float):
    """A placeholder with a centred message (e.g. a variable the GCM file does not have)."""
    import holoviews as hv

    return hv.Text(0.5 * (x0 + x1), 0.5 * (y0 + y1), message).opts(text_font_size="11pt", color="#555")


#: Shadow-DOM stylesheets of buttons (Panel renders each widget in its own shadow root, so page CSS
#: cannot reach them): a selected button of a group reads white on the accent colour; a disabled button
#: is plainly grey, not a paler version of its active colour.
BUTTON_CSS = """
.bk-btn.bk-active { color: #ffffff !important; font-weight: 600; }
.bk-btn[disabled], .bk-btn.bk-disabled { background-color: #e6e6e6 !important; border-color: #cccccc !important;
  color: #8a8a8a !important; opacity: 1 !important; cursor: not-allowed; }
"""
