"""GRIB input through cfgrib/ecCodes (ERA5 from the CDS, IFS/TIGGE, GFS), onto a rectilinear grid.

:func:`open_grib` returns the same layout as every other reader
(:mod:`zssd_engine.readers`): our variable names ``t2m, msl, u10, v10`` (plus the
statics ``orog`` in m and ``lsm`` as a fraction when asked for), coordinates
``lat``/``lon`` (and ``time`` = the *valid* time), canonical units, values
range-checked.

Grids
-----
* ``regular_ll`` and ``regular_gg``: already rectilinear.
* ``reduced_gg`` (IFS, TIGGE, ERA5 on its native grid): each Gaussian latitude
  row has its *own* number of equally spaced longitudes (from 20 points near
  the poles to 4N at the equator).  :func:`reduced_to_rectilinear` keeps the
  Gaussian latitudes and interpolates every row, periodically and linearly in
  longitude, onto ``4N`` regular longitudes — the equatorial row's own spacing,
  so no row is coarsened.
* anything else (rotated, Lambert, polar stereographic, spherical harmonics…)
  is refused with a :class:`~zssd_engine.errors.DataError` naming the grid type.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from .errors import DataError, data_error

__all__ = ["GRIB_SUFFIXES", "GRIB_NAMES", "is_grib", "open_grib", "reduced_to_rectilinear"]

#: File suffixes read as GRIB.
GRIB_SUFFIXES: tuple[str, ...] = (".grb", ".grib", ".grb1", ".grib1", ".grb2", ".grib2")

#: GRIB shortName -> our name.
GRIB_NAMES: dict[str, str] = {"2t": "t2m", "msl": "msl", "prmsl": "msl", "10u": "u10", "10v": "v10",
                              "orog": "orog", "z": "orog_geopotential", "lsm": "lsm"}

_RECTILINEAR = ("regular_ll", "regular_gg")
_G = 9.80665  # m s-2, to turn surface geopotential into orography


def is_grib(path: str | os.PathLike) -> bool:
    """True for a file whose name ends in a GRIB suffix or whose first bytes are ``GRIB``."""
    p = Path(path)
    if p.suffix.lower() in GRIB_SUFFIXES:
        return True
    try:
        with open(p, "rb") as f:
            return f.read(4) == b"GRIB"
    except OSError:
        return False


def reduced_to_rectilinear(values: np.ndarray, lat: np.ndarray, lon: np.ndarray,
                           nlon: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reduced Gaussian points → ``(field[nlat, nlon], lat_rows, lon_regular)``.

    Parameters
    ----------
    values, lat, lon
        1-D arrays over the GRIB points (row by row, as cfgrib gives them).
    nlon
        Output longitudes; default the largest row's count (``4N``).

    Each row is interpolated linearly and periodically in longitude from its
    own points; rows keep their Gaussian latitude (north to south).
    """
    values = np.asarray(values, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64) % 360.0
    rows, start, counts = np.unique(-lat, return_index=True, return_counts=True)  # north → south
    n_out = int(nlon or counts.max())
    lon_out = np.arange(n_out) * (360.0 / n_out)
    out = np.empty((rows.size, n_out))
    for k, (s, c) in enumerate(zip(start, counts)):
        xs = lon[s:s + c]
        order = np.argsort(xs)
        out[k] = np.interp(lon_out, xs[order], values[s:s + c][order], period=360.0)
    return out, -rows, lon_out


def _grid_type(da: xr.DataArray) -> str:
    return str(da.attrs.get("GRIB_gridType", "unknown"))


def _to_rectilinear(da: xr.DataArray, name: str, path: Path) -> xr.DataArray:
    gt = _grid_type(da)
    if gt in _RECTILINEAR:
        return da.rename({"latitude": "lat", "longitude": "lon"})
    if gt == "reduced_gg":
        if da.dims != ("values",):
            raise data_error(f"reduced Gaussian field with extra dimensions {da.dims}", file=path, variable=name)
        field, lat, lon = reduced_to_rectilinear(da.values, da["latitude"].values, da["longitude"].values)
        attrs = dict(da.attrs, grid_note=f"reduced Gaussian N{int(da.attrs.get('GRIB_N', lat.size // 2))} "
                                        f"interpolated row by row onto {lon.size} regular longitudes")
        return xr.DataArray(field.astype(np.float32), dims=("lat", "lon"), coords={"lat": lat, "lon": lon},
                            attrs=attrs)
    raise data_error(f"unsupported GRIB grid type {gt!r}", file=path, variable=name)  # checked in open_grib


def open_grib(path: str | os.PathLike, statics: bool = False) -> xr.Dataset:
    """Open a GRIB 1/2 file with cfgrib as one dataset in our names, units and layout.

    Parameters
    ----------
    path
        GRIB file (no index file is written beside it).
    statics
        Also return ``orog`` (m; from ``orog`` or surface geopotential ``z``) and
        ``lsm`` (0–1) when the file has them.

    Raises
    ------
    DataError
        Unreadable file, no usable variable, an unsupported grid type, several
        levels or steps of one variable, unsupported units or out-of-range values.
    """
    p = Path(path)
    if not p.exists():
        raise data_error("GRIB file not found", file=p)
    parts = _open_parts(p)
    found, valid = _collect_fields(parts, p, statics)
    if not found:
        raise data_error("no usable GRIB field (2t, msl/prmsl, 10u, 10v)", file=p)
    if len(valid) > 1:
        raise data_error(f"fields with different valid times {sorted(map(str, valid))}; pass one time", file=p)
    if "orog_geopotential" in found:
        z = found.pop("orog_geopotential")
        found.setdefault("orog", (z / _G).assign_attrs(units="m"))
    grids = {k: (da.sizes["lat"], da.sizes["lon"]) for k, da in found.items()}
    if len(set(grids.values())) > 1:
        raise data_error(f"fields on different grids {grids}", file=p)
    res = _standardize(found, p)
    if valid:
        res = res.expand_dims(time=[next(iter(valid))])
        for v in ("orog", "lsm"):
            if v in res:
                res[v] = res[v].isel(time=0, drop=True)
    res.attrs = {"source_file": str(p), "grib_centre": str(parts[0].attrs.get("GRIB_centre", "")),
                 "grid_type": _grid_type(next(iter(found.values())))}
    return res


def _open_parts(p: Path) -> list[xr.Dataset]:
    """cfgrib's datasets of one file (one per hypercube), no index file written."""
    try:
        import cfgrib
    except ImportError as exc:  # pragma: no cover - cfgrib is a dependency
        raise DataError("reading GRIB needs cfgrib and eccodes (pip install cfgrib eccodes)") from exc
    try:
        with warnings.catch_warnings():  # cfgrib's own xr.merge FutureWarning
            warnings.simplefilter("ignore", FutureWarning)
            return cfgrib.open_datasets(str(p), backend_kwargs={"indexpath": ""}, cache_geo_coords=True)
    except Exception as exc:  # noqa: BLE001 - ecCodes raises many types for a bad file
        raise data_error(f"cannot read GRIB file: {type(exc).__name__}: {exc}", file=p) from exc


def _collect_fields(parts: list[xr.Dataset], p: Path, statics: bool) -> tuple[dict[str, xr.DataArray], set]:
    """Our variables found in ``parts`` (on a lat/lon grid, one level and step each) and their valid times."""
    found: dict[str, xr.DataArray] = {}
    valid: set = set()
    for ds in parts:
        for v, da in ds.data_vars.items():
            short = str(da.attrs.get("GRIB_shortName", v))
            ours = GRIB_NAMES.get(short)
            if ours is None or (not statics and ours in ("orog", "orog_geopotential", "lsm")):
                continue
            gt = _grid_type(da)
            if gt not in _RECTILINEAR + ("reduced_gg",):
                raise data_error(f"unsupported GRIB grid type {gt!r} (supported: regular_ll, regular_gg, "
                                 "reduced_gg); regrid to a regular lat/lon grid first", file=p, variable=short)
            extra = [d for d in da.dims if d not in ("values", "latitude", "longitude")]
            if extra:
                raise data_error(f"{short} has several {', '.join(map(str, extra))} "
                                 f"({' x '.join(str(da.sizes[d]) for d in extra)}); pass a file with one level "
                                 "and one time step per variable (e.g. select with grib_copy -w)",
                                 file=p, variable=short)
            if ours in found:
                raise data_error(f"{short} occurs on several levels or steps in one file; pass one",
                                 file=p, variable=short)
            if "valid_time" in da.coords:
                valid.add(np.datetime64(da["valid_time"].values, "ns"))
            found[ours] = _to_rectilinear(da.load(), short, p)
    return found, valid


def _standardize(found: dict[str, xr.DataArray], p: Path) -> xr.Dataset:
    """One dataset in our variable order; weather fields in our units and checked for range."""
    from .readers import check_range, standardize_units

    out = {}
    for v, da in found.items():
        da = da.drop_vars([c for c in da.coords if c not in ("lat", "lon")])
        if v in ("orog", "lsm"):
            out[v] = da.astype(np.float32)
            continue
        da.name = v
        da = standardize_units(da, v, file=p)
        check_range(da, v, file=p)
        out[v] = da
    return xr.Dataset({v: out[v] for v in ("t2m", "msl", "u10", "v10", "orog", "lsm") if v in out})
