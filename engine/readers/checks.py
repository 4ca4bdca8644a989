"""Units, physical ranges and coordinates: the checks every reader of :mod:`zssd_engine.readers` applies.

* :func:`standardize_units` converts to the canonical units ``K``, ``Pa``, ``m s-1``
  (recording the conversion in ``units_note``);
* :func:`check_range` rejects all-NaN fields and values outside :data:`PHYSICAL_RANGES`;
* :func:`standardize_coords` renames ``latitude``/``longitude``/``valid_time`` and keeps
  rectilinear ``time, lat, lon`` only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import xarray as xr

from ..errors import data_error
from ..variables import VARIABLE_INFO

__all__ = ["PHYSICAL_RANGES", "standardize_units", "check_range", "standardize_coords", "check_required"]

#: Accepted value range per variable in canonical units (inclusive).
PHYSICAL_RANGES: dict[str, tuple[float, float]] = {
    "t2m": (150.0, 350.0),
    "msl": (85000.0, 110000.0),
    "u10": (-150.0, 150.0),
    "v10": (-150.0, 150.0),
}

#: Arrays larger than this (values) are range-checked on their first and last time step only.
_FULL_CHECK_MAX = 20_000_000

_COORD_RENAMES = {"latitude": "lat", "longitude": "lon", "valid_time": "time"}
_KEEP_NONDIM = {"lat_bnds", "lon_bnds", "lat_bounds", "lon_bounds", "time_bnds", "time_bounds"}


# ------------------------------------------------------------------ units
def _norm_unit(u: str) -> str:
    """A unit string lower-cased, without ``**``/``^``/dots, single-spaced (the key of the unit table)."""
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
def standardize_coords(ds: xr.Dataset, file: object) -> xr.Dataset:
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


def check_required(ds: xr.Dataset, require: Sequence[str], file: object) -> None:
    """Raise :class:`DataError` naming the variables of ``require`` that ``ds`` lacks."""
    missing = [v for v in require if v not in ds.data_vars]
    if missing:
        raise data_error(f"required variable(s) {', '.join(missing)} missing; the file holds "
                         f"{', '.join(map(str, ds.data_vars)) or 'none'}", file=file, variable=", ".join(missing))
