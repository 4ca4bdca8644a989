"""GCM inputs: pseudo-GCM views of the demo world, paired coarse tasks, and real CF files.

A *pseudo-GCM* is the demo world seen through a model's native grid with
documented, model-specific degradations, paired in time with the reference so
errors can be measured:

* **bias**: ``t2m`` offset ``t_bias`` K plus ``t_bias_land`` K over land and a
  meridional tilt ``t_bias_tilt`` K x sin φ; ``msl`` offset ``p_bias`` Pa;
  winds scaled by ``wind_factor``;
* **effective resolution**: a Gaussian smoothing of ``smooth_cells`` native
  grid cells (GCM dynamics resolve several grid lengths, not one);
* **weaker cyclones**: every cyclone's pressure deficit scaled by ``cyclone_scale``;
* then the area-weighted (conservative) average onto the native cells.

The paired tasks ``x6``, ``x10``, ``x20`` are the reference conservatively
averaged to 1.5°, 2.5° and 5° without any other change (perfect-model tests).

``MPI-ESM-LR`` is the real CMIP5 file shipped in ``assets/gcm`` (monthly means
of 2005: tas, uas, vas; no psl), read unchanged by :mod:`zssd_engine.readers`.

The real-weather sources ``ERA5-x20``, ``ERA5-x10`` (paired: the real ERA5 week
averaged to 5°/2.5°), ``NCEP-storm-1996`` and ``GFS-2.5deg`` (unpaired) are defined
in :mod:`zssd_engine.real_sources`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from .conditioning import to_timestamp
from .demo_world import DemoWorld
from .errors import DataError
from .grids import GCM_GRID_SPECS, PAIRED_TASKS, GridError, LatLonGrid, Region, era5_grid, gcm_grid, wrap_lon
from .operators import conservative
from .real_sources import REAL_SOURCES, describe_real, real_field
from .paths import ASSETS
from .variables import VARIABLE_INFO, VARIABLES

__all__ = ["PseudoGCM", "PSEUDO_GCMS", "GCM_SOURCES", "REAL_FILES", "gcm_field", "describe_gcm", "fine_region_for"]


@dataclass(frozen=True)
class PseudoGCM:
    source_id: str
    t_bias: float
    t_bias_land: float
    t_bias_tilt: float
    p_bias: float
    wind_factor: float
    smooth_cells: float
    cyclone_scale: float


#: Degradations per model (documented in the module docstring and shown in the app).
PSEUDO_GCMS: dict[str, PseudoGCM] = {
    "IPSL-CM6A-LR": PseudoGCM("IPSL-CM6A-LR", -0.8, -1.2, 0.6, 120.0, 0.92, 1.2, 0.45),
    "MIROC6": PseudoGCM("MIROC6", 0.9, 0.6, -0.5, -80.0, 1.05, 1.5, 0.55),
    "AWI-CM-1-1-MR": PseudoGCM("AWI-CM-1-1-MR", -0.4, -0.9, 0.8, 60.0, 0.95, 2.2, 0.65),
    "MPI-ESM1-2-LR": PseudoGCM("MPI-ESM1-2-LR", -0.7, -1.0, 0.4, 100.0, 0.93, 1.2, 0.5),
    "MPI-ESM1-2-HR": PseudoGCM("MPI-ESM1-2-HR", -0.3, -0.5, 0.3, 50.0, 0.97, 2.0, 0.7),
}

#: Real CF files shipped in the demo pack, by source id.
REAL_FILES: dict[str, list[Path]] = {
    "MPI-ESM-LR": [ASSETS / "gcm" / f"{v}_rectilinear_grid_2D.nc" for v in ("tas", "uas", "vas")],
}

GCM_SOURCES: tuple[str, ...] = (tuple(PSEUDO_GCMS) + tuple(REAL_FILES) + tuple(PAIRED_TASKS)
                                 + tuple(REAL_SOURCES))


def describe_gcm(source_id: str) -> str:
    """One line for menus and provenance."""
    if source_id in PSEUDO_GCMS:
        g = gcm_grid(source_id)
        d = PSEUDO_GCMS[source_id]
        return (f"{source_id} pseudo-GCM: demo world on the native {g.shape[1]}x{g.shape[0]} grid "
                f"({GCM_GRID_SPECS[source_id].note}); t2m bias {d.t_bias:+.1f} K (land {d.t_bias_land:+.1f} K), "
                f"smoothing {d.smooth_cells:g} cells, cyclones x{d.cyclone_scale:g}")
    if source_id in PAIRED_TASKS:
        return f"paired task {source_id}: demo world averaged to {PAIRED_TASKS[source_id]:g} deg (no other change)"
    if source_id in REAL_FILES:
        return "MPI-ESM-LR (CMIP5, real): historical 2005 monthly means, T63 192x96 (tas, uas, vas)"
    if source_id in REAL_SOURCES:
        return describe_real(source_id)
    raise GridError(f"unknown GCM {source_id!r}; known: {', '.join(GCM_SOURCES)}")


def fine_region_for(coarse: LatLonGrid, pad_deg: float = 0.0) -> Region:
    """The ERA5 region spanning a coarse sub-grid's cell bounds (plus ``pad_deg``)."""
    lb = coarse.lat_bounds
    s = max(float(min(lb[0], lb[-1])) - pad_deg, -90.0)
    n = min(float(max(lb[0], lb[-1])) + pad_deg, 90.0)
    w = float(np.floor((coarse.lon_bounds[0] - pad_deg) / 0.25) * 0.25)
    e = float(np.ceil((coarse.lon_bounds[-1] + pad_deg) / 0.25) * 0.25)
    if e - w >= 360.0:
        w, e = 0.0, 360.0
    else:
        w, e = float(wrap_lon(w, -180.0)), float(wrap_lon(e, -180.0))
    return Region(float(np.floor(s / 0.25) * 0.25), float(np.ceil(n / 0.25) * 0.25), w, e)


def _to_dataset(fields: dict[str, np.ndarray], grid: LatLonGrid, time: pd.Timestamp, attrs: dict):
    import xarray as xr

    ds = xr.Dataset(
        {v: (("lat", "lon"), fields[v].astype(np.float32),
             {"units": VARIABLE_INFO[v].units, "long_name": VARIABLE_INFO[v].long_name}) for v in fields},
        coords={"lat": ("lat", grid.lat, {"units": "degrees_north"}),
                "lon": ("lon", grid.lon, {"units": "degrees_east"}),
                "time": time,
                "lat_bnds": (("lat", "bnds"), np.stack([grid.lat_bounds[:-1], grid.lat_bounds[1:]], 1)),
                "lon_bnds": (("lon", "bnds"), np.stack([grid.lon_bounds[:-1], grid.lon_bounds[1:]], 1))},
        attrs=attrs,
    )
    ds["lat"].attrs["bounds"] = "lat_bnds"
    ds["lon"].attrs["bounds"] = "lon_bnds"
    return ds


def gcm_field(source_id: str, time, region: Region, world: DemoWorld | None = None, margin_cells: int = 2,
              files: dict[str, list[Path]] | None = None, time_tolerance=None):
    """The GCM field ``Y`` on its native cells covering ``region`` (+ ``margin_cells``), as an xr.Dataset.

    ``files`` maps extra source ids (a user's or the server's configured files: NetCDF, GRIB or
    Zarr, :func:`zssd_engine.user_files.open_gcm_files`) to their paths; ``time_tolerance`` bounds the
    distance to the nearest time step of such files (default half their median step).
    """
    ts = to_timestamp(time)
    files = {**REAL_FILES, **(files or {})}
    if source_id in files:
        return _real_field(source_id, files[source_id], ts, region, margin_cells, time_tolerance)
    if source_id in REAL_SOURCES:
        return real_field(source_id, ts, region, margin_cells)
    native = gcm_grid(source_id)  # raises GridError for unknown ids
    coarse, _, _ = native.covering(region, margin_cells)
    world = world or DemoWorld(0)
    deg = PSEUDO_GCMS.get(source_id)
    sigma_deg = (deg.smooth_cells * max(native.dlat, native.dlon)) if deg else 0.0
    fine_region = fine_region_for(coarse, pad_deg=3.0 * sigma_deg)
    fine = era5_grid().select(fine_region)[0]
    f = world.fields(ts, fine, cyclone_scale=deg.cyclone_scale if deg else 1.0)
    if deg is not None:
        from scipy.ndimage import gaussian_filter

        _, land = world.statics.region(fine)
        s = (sigma_deg / 0.25, sigma_deg / 0.25)
        f = {k: gaussian_filter(v.astype(np.float64), s, mode="nearest") for k, v in f.items()}
        tilt = np.sin(np.deg2rad(fine.lat))[:, None]
        f["t2m"] = f["t2m"] + deg.t_bias + deg.t_bias_land * land + deg.t_bias_tilt * tilt
        f["msl"] = f["msl"] + deg.p_bias
        f["u10"] = f["u10"] * deg.wind_factor
        f["v10"] = f["v10"] * deg.wind_factor
    op = conservative(fine, coarse, dtype=__import__("torch").float64)
    import torch

    out = {k: op(torch.as_tensor(np.asarray(v, dtype=np.float64))).numpy() for k, v in f.items()}
    attrs = {"source_id": source_id, "description": describe_gcm(source_id), "kind": "pseudo-GCM" if deg else "paired",
             "region": region.as_text(), "native_grid": f"{native.shape[1]}x{native.shape[0]}"}
    if deg is not None:
        attrs["degradations"] = str(asdict(deg))
    return _to_dataset(out, coarse, ts, attrs)


@lru_cache(maxsize=8)
def _open_files_cached(key: tuple[tuple[str, float], ...]):
    from .user_files import open_gcm_files

    return open_gcm_files([k for k, _ in key])


def open_files(paths) -> "object":
    """A file set opened once per process (keyed by path and modification time)."""
    key = tuple((str(Path(p)), Path(p).stat().st_mtime if Path(p).exists() else -1.0) for p in paths)
    return _open_files_cached(key)


def _real_field(source_id: str, paths: list[Path], ts: pd.Timestamp, region: Region, margin_cells: int,
                tolerance=None):
    from .user_files import field_on_region

    ds = open_files(paths)
    desc = describe_gcm(source_id) if source_id in REAL_FILES else source_id
    out = field_on_region(ds, source_id, ts, region, margin_cells, tolerance=tolerance, description=desc)
    out.attrs["source_file"] = ", ".join(Path(p).name for p in paths)
    return out
