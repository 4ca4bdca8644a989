"""Results: CF-style datasets of a finished run (ensemble mean, spread, members, provenance) and atomic writes.

* :func:`result_dataset` / :func:`baseline_result` — ``xr.Dataset`` (``time, member, lat, lon``)
  with the ensemble mean, spread and members plus provenance attributes.
* :func:`write_netcdf_atomic` / :func:`write_json_atomic` — write to a temporary name in the
  same directory and ``os.replace`` it; nothing is left behind on failure.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import DataError
from ..real_sources import ERA5_CREDIT, REAL_SOURCES
from ..variables import VARIABLE_INFO, VARIABLES
from .case import Case, reference_label
from .monthly import member_times, monthly_note
from .priors import prior_sha256

__all__ = ["result_dataset", "baseline_result", "write_netcdf_atomic", "write_json_atomic"]


def _now() -> str:
    return pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def _coords(case: Case, members: int) -> dict:
    f = case.fine
    lat_b = np.stack([f.lat_bounds[:-1], f.lat_bounds[1:]], 1)
    lon_b = np.stack([f.lon_bounds[:-1], f.lon_bounds[1:]], 1)
    return {
        "time": ("time", pd.DatetimeIndex([case.time]), {"standard_name": "time", "axis": "T"}),
        "member": ("member", np.arange(members, dtype=np.int32), {"long_name": "ensemble member"}),
        "lat": ("lat", f.lat, {"units": "degrees_north", "standard_name": "latitude", "axis": "Y",
                               "bounds": "lat_bnds"}),
        "lon": ("lon", f.lon, {"units": "degrees_east", "standard_name": "longitude", "axis": "X",
                               "bounds": "lon_bnds"}),
        "lat_bnds": (("lat", "nv"), lat_b),
        "lon_bnds": (("lon", "nv"), lon_b),
    }


def _assemble(case: Case, fields: dict[str, np.ndarray], attrs: dict[str, Any]) -> xr.Dataset:
    """``fields[var]`` is ``(members, H, W)`` physical → dataset with mean, spread and members."""
    members = next(iter(fields.values())).shape[0]
    data = {}
    for v, a in fields.items():
        a = np.asarray(a, dtype=np.float32)
        info = VARIABLE_INFO.get(v)
        base = {"units": info.units, "long_name": info.long_name, "standard_name": info.standard_name} if info else {}
        mean = a.mean(0)
        spread = a.std(0, ddof=1) if members > 1 else np.zeros_like(mean)
        data[v] = (("time", "lat", "lon"), mean[None], {**base, "cell_methods": "member: mean"})
        data[f"{v}_spread"] = (("time", "lat", "lon"), spread[None].astype(np.float32),
                               {"units": base.get("units", ""), "long_name": f"ensemble spread (std) of {v}",
                                "cell_methods": "member: standard_deviation",
                                **({"comment": "one member: no spread (zeros), kept so every file has the same "
                                               "layout"} if members == 1 else {})})
        data[f"{v}_members"] = (("time", "member", "lat", "lon"), a[None],
                                {**base, "long_name": f"{base.get('long_name', v)} (ensemble members)"})
    ds = xr.Dataset(data, coords=_coords(case, members))
    prov = case.provenance()
    ds.attrs = {
        "Conventions": "CF-1.8",
        "title": f"ZSSD Explorer downscaling: {attrs.get('method', '?')} of {case.source_id}",
        "source": f"{case.source_id}: {prov['gcm_description']}",
        "region": case.region.as_text(),
        "reference": f"{reference_label(case)}; paired={case.paired}",
        **({"credit": ERA5_CREDIT} if case.real_reference or case.source_id in REAL_SOURCES else {}),
        "paired": int(case.paired),
        "institution": "ZSSD Explorer (demo)",
        "history": f"{_now()} created by zssd-explorer",
        "provenance": json.dumps(prov),
        **{k: (v if isinstance(v, (str, int, float, np.integer, np.floating)) else str(v)) for k, v in attrs.items()
           if v is not None},
    }
    return ds


def result_dataset(case: Case, final_state, prior, method: str, steps: int, seed: int,
                   guidance_scale: float | None = None, seconds: float | None = None,
                   variables: Sequence[str] | None = None, extra_attrs: dict | None = None) -> xr.Dataset:
    """The final :class:`StepState` as a CF dataset (``time, member, lat, lon``).

    Variables: ``<var>`` ensemble mean, ``<var>_spread`` (std over members, 0 for one member),
    ``<var>_members``.  Attributes: method, checkpoint sha256, seed, steps, guidance scale,
    source, region, provenance (JSON) and the reference label.
    """
    if not getattr(final_state, "final", False):
        raise ValueError("result_dataset needs the final StepState of a finished run")
    x = final_state.sample_phys().detach().to("cpu", dtype=final_state.x_t.dtype).numpy()
    pv = list(prior.variables)
    want = list(variables) if variables else pv
    fields = {v: x[:, pv.index(v)] for v in want}
    unguided = [v for v in pv if v not in case.gcm.data_vars]
    attrs = {
        "method": method,
        "checkpoint_sha256": prior_sha256(prior),
        "seed": int(seed),
        "steps": int(steps),
        "members": int(x.shape[0]),
        "guidance_scale": "n/a" if guidance_scale is None else float(f"{float(guidance_scale):.6g}"),
        "unguided_variables": ",".join(unguided) if unguided else "none",
        "device": str(getattr(prior, "device", "cpu")),
        "last_step_misfit_rms": float(final_state.misfit_rms),
    }
    if seconds is not None:
        attrs["seconds"] = round(float(seconds), 3)
    monthly = case.gcm.attrs.get("time_mean") == "month"
    if monthly:
        attrs["input_time_mean"] = monthly_note(int(x.shape[0]))
    attrs.update(extra_attrs or {})
    ds = _assemble(case, fields, attrs)
    if monthly:  # each member's own time (pipeline.monthly.member_times)
        ds = ds.assign_coords(member_time=("member", np.asarray(member_times(case.time, int(x.shape[0])),
                                                                dtype="datetime64[ns]"),
                                           {"long_name": "time each member was drawn at (its time conditioning)"}))
    return ds


def baseline_result(case: Case, ds: xr.Dataset, method: str, seconds: float | None = None,
                    variables: Sequence[str] | None = None) -> xr.Dataset:
    """A baseline's output in the same layout as :func:`result_dataset` (one member)."""
    want = [v for v in (variables or VARIABLES) if v in ds.data_vars]
    if not want:
        raise DataError(f"{method}: none of the requested variables {list(variables or VARIABLES)} is available "
                        f"(the {case.source_id} field has {list(case.gcm_variables)})")
    fields = {v: np.asarray(ds[v].transpose("lat", "lon").values)[None] for v in want}
    attrs = {"method": method, "members": 1, "seed": "n/a", "steps": "n/a", "guidance_scale": "n/a",
             "checkpoint_sha256": "n/a",
             "downscaling": str(ds.attrs.get("downscaling", method))}
    for k, v in ds.attrs.items():
        if str(k).startswith("bcsd_"):
            attrs[k] = v if isinstance(v, (str, int, float)) else str(v)
    if seconds is not None:
        attrs["seconds"] = round(float(seconds), 3)
    return _assemble(case, fields, attrs)


def _write_atomic(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary name in ``path``'s directory, then ``os.replace`` it onto ``path``.

    On any exception — including ``KeyboardInterrupt`` — the temporary file is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    d = path.parent if str(path.parent) else Path(".")
    if not d.is_dir():
        raise FileNotFoundError(f"output directory {d} does not exist")
    tmp = d / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    return path


def write_netcdf_atomic(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` to ``path`` atomically (compressed NetCDF-4; see :func:`_write_atomic`)."""
    enc = {v: {"zlib": True, "complevel": 4} for v in ds.data_vars if ds[v].dtype.kind == "f"}
    return _write_atomic(path, lambda tmp: ds.to_netcdf(tmp, engine="netcdf4", encoding=enc))


def write_json_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """Write JSON atomically (same scheme as :func:`write_netcdf_atomic`)."""
    return _write_atomic(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n"))
