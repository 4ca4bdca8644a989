"""A scientist's own files as a GCM source: CF NetCDF, GRIB or Zarr, CMIP or ERA5 names.

:func:`open_gcm_files` opens one or several files (one per variable, or one with several) and
returns one dataset in our names and units (:mod:`zssd_engine.readers` conventions): CMIP names
``tas, psl, uas, vas`` and ERA5 names ``t2m/2t, msl, u10/10u, v10/10v`` are both mapped; any
calendar (cftime); units checked and converted; GRIB through cfgrib (:mod:`zssd_engine.grib`).

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

    CMIP-named NetCDF files go to :func:`zssd_engine.readers.open_cmip` together (it joins time chunks
    and merges variables); ERA5-named NetCDF, Zarr stores and GRIB files to
    :func:`zssd_engine.readers.open_era5`.  All parts must share one lat/lon grid.

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
    """One time step of ``ds`` on its cells covering ``region`` (+ margin), as :func:`zssd_engine.gcm.gcm_field` returns.

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
    if step.attrs.get("time_mean"):  # a monthly mean (select_time says so): carried to every output
        attrs["time_mean"] = step.attrs["time_mean"]
    return _to_dataset(vals, sub, time, attrs)


# ------------------------------------------------------------------ a user's reference
def user_reference(ref: xr.Dataset, time, fine, tolerance=None) -> xr.Dataset:
    """A user's reference at its own points inside the 0.25° grid ``fine``, at the step nearest ``time``.

    Points whose centres lie inside the fine grid's span are kept, with longitudes in the fine
    grid's frame.  If they lie on the 0.25° lattice (e.g. ERA5 at 0.25° or its every-4th-point
    1° subsample) the output is scored at exactly those points; otherwise the output is
    interpolated bilinearly to them (``attrs["score_at"]`` says which).

    Raises
    ------
    DataError
        No time step within ``tolerance``, or a reference that does not cover the region
        (its points must reach within one of its own cells of every edge).
    """
    from .readers import select_time

    src = ref.attrs.get("source_file", "reference")
    step = select_time(ref, time, tolerance=tolerance) if "time" in ref.dims else ref
    lat = np.asarray(step["lat"].values, dtype=np.float64)
    lon = np.asarray(step["lon"].values, dtype=np.float64)
    lon_f = fine.lon[0] + np.mod(lon - fine.lon[0], 360.0)
    s, n = float(fine.lat.min()), float(fine.lat.max())
    w, e = float(fine.lon[0]), float(fine.lon[-1])
    li = np.nonzero((lat >= s - 1e-6) & (lat <= n + 1e-6))[0]
    lo = np.nonzero(lon_f <= e + 1e-6)[0]
    dlat = float(np.median(np.abs(np.diff(lat)))) if lat.size > 1 else 180.0
    dlon = float(np.median(np.abs(np.diff(lon)))) if lon.size > 1 else 360.0
    covers = (li.size > 0 and lo.size > 0 and lat[li].min() <= s + dlat and lat[li].max() >= n - dlat
              and lon_f[lo].min() <= w + dlon and lon_f[lo].max() >= e - dlon)
    if not covers:
        raise data_error(f"the reference does not cover the region {fine.lat.min():g}..{fine.lat.max():g}°N, "
                         f"{w:g}..{e:g}°E (it spans {lat.min():g}..{lat.max():g}°N, "
                         f"{lon.min():g}..{lon.max():g}°E)", file=src)
    order = lo[np.argsort(lon_f[lo])]
    sub = step.isel(lat=li, lon=order).assign_coords(lon=lon_f[order])
    sub = sub[[v for v in VARIABLES if v in sub.data_vars]]
    on_grid = bool(np.allclose(sub["lat"].values * 4, np.round(sub["lat"].values * 4), atol=1e-6)
                   and np.allclose(sub["lon"].values * 4, np.round(sub["lon"].values * 4), atol=1e-6))
    sub = sub.drop_vars([c for c in sub.coords if c not in ("lat", "lon", "time")])
    for v in sub.data_vars:
        sub[v].attrs["score_at"] = "points" if on_grid else "interpolated points"
    sub.attrs = {"source": f"reference file(s) {src}", "paired": 1, "real": 1,
                 "points": f"the reference's own {sub.sizes['lat']}x{sub.sizes['lon']} points",
                 "score_at": "points" if on_grid else "interpolated points",
                 "selected_time": str(step["time"].values) if "time" in step.coords else ""}
    return sub


def parse_cases(times: str | None, regions: str | None, cases_file: str | None) -> list[tuple[str, str, Region]]:
    """``(name, time, region)`` from ``--times a,b --regions 'S,N,W,E;S,N,W,E'`` (every pair) or a TOML file
    with ``[[case]]`` tables holding ``time``, ``region`` and optionally ``name``."""
    out: list[tuple[str, str, Region]] = []
    if cases_file:
        import tomllib

        try:
            data = tomllib.loads(Path(cases_file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise DataError(f"--cases-file {cases_file}: {exc}") from None
        for k, c in enumerate(data.get("case", [])):
            if "time" not in c or "region" not in c:
                raise DataError(f"--cases-file {cases_file}: case {k + 1} needs 'time' and 'region'")
            out.append((str(c.get("name", f"case-{k + 1:02d}")), str(c["time"]), Region.parse(str(c["region"]))))
    if times or regions:
        if not (times and regions):
            raise DataError("give both --times and --regions (every time is scored on every region)")
        ts = [t.strip() for t in times.split(",") if t.strip()]
        rs = [Region.parse(r.strip()) for r in regions.split(";") if r.strip()]
        out += [(f"{r.as_text()} {t}", t, r) for r in rs for t in ts]
    if not out:
        raise DataError("no cases: give --times and --regions, or --cases-file")
    return out
