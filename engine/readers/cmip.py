"""CMIP5/CMIP6 reader: CF NetCDF files (one variable per file, time chunks joined), any calendar.

Also the shipped CMIP5 MPI-ESM-LR historical 2005 monthly files (:func:`open_mpi_esm_lr`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import DataError, data_error
from ..paths import ASSETS
from ..variables import CMIP_NAMES, VARIABLE_INFO, VARIABLES
from .checks import check_range, standardize_coords, standardize_units

__all__ = ["open_cmip", "open_mpi_esm_lr", "MPI_ESM_LR_FILES", "assets_gcm_dir"]

#: The three CMIP5 MPI-ESM-LR historical 2005 monthly files shipped in ``assets/gcm``.
MPI_ESM_LR_FILES: tuple[str, ...] = (
    "tas_rectilinear_grid_2D.nc", "uas_rectilinear_grid_2D.nc", "vas_rectilinear_grid_2D.nc")

#: ``(file, lat, lon)`` of the first file read: every other file must be on this grid.
_Grid = tuple[Path, np.ndarray, np.ndarray]


def assets_gcm_dir() -> Path:
    """``gcm/`` of the demo pack (:data:`zssd_engine.paths.ASSETS`), where the real CMIP5 files are shipped."""
    return ASSETS / "gcm"


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
    """One CMIP file, times decoded with cftime, loaded into memory (``DataError`` if unreadable)."""
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
    """One path or several as a non-empty list of :class:`Path`."""
    if isinstance(path_or_paths, (str, os.PathLike)):
        return [Path(path_or_paths)]
    paths = [Path(p) for p in path_or_paths]
    if not paths:
        raise DataError("open_cmip: no files given")
    return paths


def _cmip_name(v: str) -> str:
    """The CMIP name of a variable given by its CMIP name or ours."""
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
    per_var, global_attrs = _collect_variables(paths, wanted)
    parts: list[xr.Dataset] = []
    ref_grid: _Grid | None = None
    for cmip in [c for c in ("tas", "psl", "uas", "vas") if c in per_var]:
        items, ref_grid = _on_one_grid(per_var[cmip], cmip, ref_grid)
        parts.append(_join_variable(items, cmip))
    times = [tuple(np.asarray(d["time"].values)) if "time" in d.dims else () for d in parts]
    if len(set(times)) > 1:  # different time axes per variable: time bounds would not align
        parts = [d.drop_vars([b for b in ("time_bnds",) if b in d.variables]) for d in parts]
    try:
        out = xr.merge(parts, join="outer", compat="override", combine_attrs="drop_conflicts")
    except Exception as exc:  # noqa: BLE001
        raise data_error(f"cannot merge variables: {exc}", file=", ".join(p.name for p in paths)) from exc
    out = out[[v for v in VARIABLES if v in out.data_vars] + [b for b in ("lat_bnds", "lon_bnds", "time_bnds")
                                                                if b in out.variables]]
    out.attrs = _merged_attrs(global_attrs, paths, out)
    return out


def _collect_variables(paths: list[Path], wanted: list[str] | None
                       ) -> tuple[dict[str, list[tuple[Path, xr.Dataset]]], list[dict]]:
    """Read every file; return ``{CMIP name: [(file, dataset with it and its bounds)]}`` and their attributes."""
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
            ds = standardize_coords(ds, p)
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
    return per_var, global_attrs


def _on_one_grid(items: list[tuple[Path, xr.Dataset]], cmip: str, ref_grid: _Grid | None
                 ) -> tuple[list[tuple[Path, xr.Dataset]], _Grid]:
    """The parts of one variable on the first file's lat/lon (``DataError`` if a file's grid differs)."""
    out = []
    for p, part in items:
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
        out.append((p, part))
    return out, ref_grid


def _join_variable(items: list[tuple[Path, xr.Dataset]], cmip: str) -> xr.Dataset:
    """One variable's files joined along time (sorted, duplicates dropped), renamed to ours, units checked."""
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
    return comb.drop_vars(cmip).assign({ours: da})


def _merged_attrs(global_attrs: list[dict], paths: list[Path], out: xr.Dataset) -> dict:
    """The union of the files' attributes minus conflicting ones, plus ``source_file`` and ``calendar``."""
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
    return attrs


def _same_attr(a, b) -> bool:
    """Whether two attribute values are equal (arrays element-wise; incomparable values differ)."""
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
