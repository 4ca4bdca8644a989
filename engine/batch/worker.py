"""The work of one case, as it runs on a Dask worker (or in-process): :func:`compute_case`.

The prior comes from the process's one prior cache (:func:`zssd_engine.pipeline.load_prior`) after
:meth:`PriorRef.load` has checked that the checkpoint on this worker is the one the batch was
planned with, so a worker loads it once however many cases it computes.
"""

from __future__ import annotations

import os
import time as _time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..grids import Region
from ..variables import VARIABLES
from .spec import BatchError, BatchSpec, CaseResult, PriorRef, case_seed

__all__ = ["CaseTask", "compute_case", "get_prior", "prior_loads"]

def get_prior(ref: PriorRef):
    """The prior for ``ref`` (checked against the plan; loaded once per process by the pipeline's cache)."""
    return ref.load()


def prior_loads() -> list[str]:
    """The priors this process has loaded, in order (one entry per load; :func:`zssd_engine.pipeline.prior_loads`)."""
    from ..pipeline import prior_loads as loads

    return loads()


@dataclass(frozen=True)
class CaseTask:
    """The picklable part of a plan that a worker needs."""

    spec: BatchSpec
    times: tuple[str, ...]
    lat: np.ndarray
    lon: np.ndarray
    members: int
    prior: PriorRef | None
    guidance_scale: float | None = None


def _align(da, lat: np.ndarray, lon: np.ndarray, what: str):
    """``da`` on exactly the store's lat/lon (reordering if needed)."""
    dl = np.asarray(da["lat"].values)
    dn = np.asarray(da["lon"].values)
    if dl.shape == lat.shape and np.allclose(dl, lat, atol=1e-6) and dn.shape == lon.shape \
            and np.allclose(dn, lon, atol=1e-6):
        return da
    try:
        return da.sel(lat=lat, lon=lon, method="nearest", tolerance=1e-6)
    except KeyError:
        raise BatchError(f"{what}: the result grid ({dl.size}x{dn.size}) differs from the store's "
                         f"({lat.size}x{lon.size})") from None


def _extract(ds, task: CaseTask, what: str) -> dict[str, np.ndarray]:
    """The result dataset of one case as float32 arrays named and shaped as in the store."""
    nl, nn = task.lat.size, task.lon.size
    out: dict[str, np.ndarray] = {}
    for v in VARIABLES:
        if v not in ds:
            continue  # e.g. no psl in the real MPI-ESM-LR file: stays NaN
        mean = _align(ds[v], task.lat, task.lon, what)
        mkey = f"{v}_members"
        if mkey in ds:
            mem = _align(ds[mkey], task.lat, task.lon, what).transpose("member", "lat", "lon").values
        else:
            mem = mean.transpose("lat", "lon").values[None]
        if mem.shape != (task.members, nl, nn):
            raise BatchError(f"{what}: {mkey} has shape {mem.shape}, expected {(task.members, nl, nn)}")
        skey = f"{v}_spread"
        if skey in ds:
            spread = _align(ds[skey], task.lat, task.lon, what).transpose("lat", "lon").values
        else:
            spread = np.zeros((nl, nn)) if task.members == 1 else np.std(mem, axis=0, ddof=1)
        out[v] = np.asarray(mean.transpose("lat", "lon").values, dtype=np.float32)
        out[skey] = np.asarray(spread, dtype=np.float32)
        out[mkey] = np.asarray(mem, dtype=np.float32)
    return out


def compute_case(task: CaseTask, index: int) -> CaseResult:
    """Downscale the case ``task.times[index]`` (runs on a worker, or in-process)."""
    from .. import pipeline

    t0 = _time.perf_counter()
    spec = task.spec
    ts = pd.Timestamp(task.times[index])
    what = f"case {ts.isoformat()}"
    case = pipeline.prepare_case(spec.gcm, ts, Region.parse(spec.region), files=spec.files)
    if spec.deterministic:
        ds = pipeline.run_method(case, spec.method)
    else:
        ds = pipeline.run_method(case, spec.method, get_prior(task.prior), spec.steps, spec.members,
                                 case_seed(spec.seed, ts), task.guidance_scale)
    if "time" in ds.dims:
        ds = ds.isel(time=0)
    arrays = _extract(ds, task, what)
    return CaseResult(index, ts, arrays, _time.perf_counter() - t0, f"{os.uname().nodename}:{os.getpid()}")
