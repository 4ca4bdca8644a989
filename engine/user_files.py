"""A scientist's own files as a GCM source: CF NetCDF, GRIB or Zarr, CMIP or ERA5 names.

:func:`open_gcm_files` opens one or several files (one per variable, or one with several) and
returns one dataset in our names and units (:mod:`engine.readers` conventions): CMIP names
``tas, psl, uas, vas`` and ERA5 names ``t2m/2t, msl, u10/10u, v10/10v`` are both mapped; any
calendar (cftime); units checked and converted; GRIB through cfgrib (:mod:`engine.grib`).

A built-in source is just a named file set: the server's configured files (``ZSSD_GCM_FILES``)
and ``zssd downscale|evaluate|batch --gcm-file`` go through the same :func:`open_gcm_files`, and
:func:`field_on_region` is the one place a file's field is cut to a region, checked for data
(all-NaN over the region is refused) and stamped with the time actually used.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .errors import DataError, data_error
from .grids import Region
from .variables import CMIP_NAMES, ERA5_NAMES, VARIABLES

__all__ = ["open_gcm_files", "field_on_region", "user_source_name"]


def _kind(p: Path) -> str:
    from .grib import is_grib

    if p.is_dir() or p.name.rstrip("/").endswith(".zarr"):
        return "zarr"
    if is_grib(p):
        return "grib"
    return "netcdf"


def _netcdf_names(p: Path) -> list[str]:
    try:
        with xr.open_dataset(p, decode_times=False) as ds:
            return [str(v) for v in ds.data_vars]
    except Exception as exc:  # noqa: BLE001 - any backend failure is a data problem here
        raise data_error(f"cannot read NetCDF file: {type(exc).__name__}: {exc}", file=p) from exc


def user_source_name(paths: Sequence[str | os.PathLike]) -> str:
    """A source id for a file set: ``file:<first file's stem>`` (``+N`` when there are more)."""
    ps = [Path(p) for p in paths]
    stem = ps[0].name.split(".")[0] if ps else "none"
    return f"file:{stem}" + (f"+{len(ps) - 1}" if len(ps) > 1 else "")


def open_gcm_files(paths: Sequence[str | os.PathLike]) -> xr.Dataset:
    """Open a user's files as one GCM dataset (``t2m, msl, u10, v10``, those present).

    CMIP-named NetCDF files go to :func:`engine.readers.open_cmip` together (it joins time chunks
    and merges variables); ERA5-named NetCDF, Zarr stores and GRIB files to
    :func:`engine.readers.open_era5`.  All parts must share one lat/lon grid.

    Raises
    ------
    DataError
        A missing file, no known variable (the message lists what the file holds), files on
        different grids or time axes that cannot be merged, and every reader check (units,
        ranges, curvilinear coordinates, GRIB grid types and levels).
    """
    from .readers import open_cmip, open_era5

    ps = [Path(p) for p in paths]
    if not ps:
        raise DataError("--gcm-file: no file given")
    for p in ps:
        if not p.exists():
            raise data_error("file not found", file=p)
    cmip, others = [], []
    for p in ps:
        if _kind(p) == "netcdf":
            names = _netcdf_names(p)
            if any(n in CMIP_NAMES for n in names):
                cmip.append(p)
            elif any(n in ERA5_NAMES for n in names):
                others.append(p)
            else:
                raise data_error(f"no known variable; expected CMIP {sorted(CMIP_NAMES)} or ERA5 "
                                 f"{sorted(set(ERA5_NAMES))}, the file holds {names}", file=p)
        else:
            others.append(p)
    parts = ([open_cmip(cmip)] if cmip else []) + [open_era5(p) for p in others]
    ref = parts[0]
    for d, p in zip(parts[1:], (cmip[:1] or []) + others):
        if d.sizes.get("lat") != ref.sizes.get("lat") or d.sizes.get("lon") != ref.sizes.get("lon") or not (
                np.allclose(d["lat"].values, ref["lat"].values, atol=1e-4)
                and np.allclose(d["lon"].values, ref["lon"].values, atol=1e-4)):
            raise data_error(f"files are on different grids ({ref.sizes.get('lat')}x{ref.sizes.get('lon')} vs "
                             f"{d.sizes.get('lat')}x{d.sizes.get('lon')} lat/lon)", file=p)
    dup = [v for v in VARIABLES if sum(v in d.data_vars for d in parts) > 1]
    if dup:
        raise data_error(f"variable(s) {dup} appear in more than one file", file=", ".join(map(str, ps)))
    if len(parts) == 1:
        out = parts[0]
    else:
        parts = [d.assign_coords(lat=ref["lat"].values, lon=ref["lon"].values) for d in parts]
        try:
            out = xr.merge([d[[v for v in VARIABLES if v in d.data_vars]] for d in parts], join="outer",
                           compat="override", combine_attrs="drop_conflicts")
        except Exception as exc:  # noqa: BLE001
            raise data_error(f"cannot merge the files: {exc}", file=", ".join(map(str, ps))) from exc
    out = out[[v for v in VARIABLES if v in out.data_vars]]
    out.attrs = {**ref.attrs, "source_file": ", ".join(str(p) for p in ps)}
    return out


def field_on_region(ds: xr.Dataset, source_id: str, time, region: Region, margin_cells: int = 2,
                    tolerance=None, description: str | None = None) -> xr.Dataset:
    """One time step of ``ds`` on its cells covering ``region`` (+ margin), as :func:`engine.gcm.gcm_field` returns.

    ``tolerance``: the largest distance to the nearest time step (``"3h"``; default half the median
    step; monthly files match by month).  The time actually used is in ``attrs["selected_time"]``.
    A variable with no finite value over the region raises :class:`DataError` naming it.
    """
    from .gcm import _to_dataset
    from .operators import grid_from_xarray
    from .readers import select_time

    step = select_time(ds, time, tolerance=tolerance) if "time" in ds.dims else ds
    grid = grid_from_xarray(step, name=source_id)
    sub, li, lo = grid.covering(region, margin_cells)
    vals = {v: np.asarray(step[v].values)[np.ix_(li, lo)] for v in VARIABLES if v in step}
    if not vals:
        raise DataError(f"{source_id}: none of {VARIABLES} in {ds.attrs.get('source_file', '?')}")
    inner, li2, lo2 = grid.covering(region, 0)
    for v, a in vals.items():
        core = np.asarray(step[v].values)[np.ix_(li2, lo2)]
        if not np.isfinite(core).any():
            raise data_error(f"no finite value over region {region.as_text()} (all NaN / fill value)",
                             file=ds.attrs.get("source_file"), variable=v)
    t_sel = step["time"].values if "time" in step.coords else time
    try:
        t_used = pd.Timestamp(t_sel).isoformat()
    except (TypeError, ValueError):
        t_used = str(t_sel)
    attrs = {"source_id": source_id, "description": description or source_id, "kind": "real",
             "source_file": str(ds.attrs.get("source_file", "")), "region": region.as_text(),
             "selected_time": t_used}
    return _to_dataset(vals, sub, time, attrs)
