"""The batch's Zarr store: layout, atomic creation, the writer's lock, resume bookkeeping.

Layout (Zarr format 2, consolidated metadata, CF-1.10 attributes, one chunk per time step)::

    t2m, msl, u10, v10                 (time, lat, lon)          ensemble mean
    <var>_spread                       (time, lat, lon)          ensemble standard deviation
    <var>_members                      (time, member, lat, lon)  members
    done (time) uint8, case_seed (time) int64, lat_bnds, lon_bnds

Provenance goes to the global attributes; the run parameters, as JSON in
:data:`~zssd_engine.batch.spec.PARAMS_ATTR`, are what a resumed run must match
(:func:`check_params`, the one place where they are compared).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from ..variables import VARIABLE_INFO, VARIABLES
from .spec import LAYOUT_VERSION, LOCK_NAME, PARAMS_ATTR, BatchError, BatchPlan, CaseResult, case_seed

__all__ = ["Store", "create_store", "open_store", "stored_params", "stored_guidance", "check_params",
           "is_store_dir", "count_done"]


# ================================================================ reading
def is_store_dir(out: Path) -> bool:
    """Whether ``out`` is a directory that looks like a Zarr store (v2 or v3 metadata)."""
    return out.is_dir() and ((out / ".zattrs").exists() or (out / "zarr.json").exists())


def stored_params(out: Path) -> dict:
    """The run parameters recorded in the store ``out`` (``BatchError`` if unreadable or foreign)."""
    import zarr

    try:
        g = zarr.open_group(str(out), mode="r")
        raw = g.attrs.get(PARAMS_ATTR)
    except Exception as e:  # noqa: BLE001 - any unreadable store is the same user error
        raise BatchError(f"--out {out}: cannot read the existing store ({e})") from None
    if raw is None:
        raise BatchError(f"--out {out} exists and is not a Zarr store written by zssd batch")
    return json.loads(raw)


def check_params(out: Path, want: dict) -> None:
    """Raise ``BatchError`` naming every parameter in which the store ``out`` differs from ``want``."""
    stored = stored_params(out)
    diff = {k: (stored.get(k), want.get(k)) for k in sorted(set(stored) | set(want)) if stored.get(k) != want.get(k)}
    if diff:
        lines = "; ".join(f"{k}: store has {a!r}, asked {b!r}" for k, (a, b) in diff.items())
        raise BatchError(f"--out {out} holds a batch with different parameters ({lines}); "
                         f"use another --out or the original arguments to resume")


def stored_guidance(out: Path) -> float | None:
    """The guidance scale ζ the batch in ``out`` began with (``None`` if it has none)."""
    import zarr

    v = zarr.open_group(str(out), mode="r").attrs.get("guidance_scale")
    return float(v) if isinstance(v, (int, float)) else None


def count_done(out: Path) -> tuple[int, int]:
    """``(steps done, steps)`` of the store ``out`` (raises if it cannot be read)."""
    import zarr

    d = np.asarray(zarr.open_group(str(out), mode="r")["done"][:])
    return int(d.sum()), int(d.size)


def open_store(path: str | os.PathLike):
    """Open a batch store with xarray (``done`` tells which steps are complete)."""
    import xarray as xr

    return xr.open_zarr(str(path), consolidated=True)


# ================================================================= layout
def _var_attrs(v: str) -> dict:
    """CF ``units``, ``standard_name`` and ``long_name`` of our variable ``v``."""
    info = VARIABLE_INFO[v]
    return {"units": info.units, "standard_name": info.standard_name, "long_name": info.long_name}


def _data_vars(plan: BatchPlan) -> dict:
    """The store's variables, NaN-filled lazy arrays chunked one time step per chunk."""
    import dask.array as da

    nt, nm, nl, nn = plan.n, plan.members, plan.lat.size, plan.lon.size
    data = {}
    for v in VARIABLES:
        a = _var_attrs(v)
        data[v] = (("time", "lat", "lon"), da.full((nt, nl, nn), np.nan, dtype=np.float32, chunks=(1, nl, nn)),
                   {**a, "long_name": f"{a['long_name']} (ensemble mean)", "cell_methods": "member: mean"})
        data[f"{v}_spread"] = (("time", "lat", "lon"),
                               da.full((nt, nl, nn), np.nan, dtype=np.float32, chunks=(1, nl, nn)),
                               {"units": a["units"], "long_name": f"{a['long_name']} (ensemble standard deviation)",
                                "cell_methods": "member: standard_deviation"})
        data[f"{v}_members"] = (("time", "member", "lat", "lon"),
                                da.full((nt, nm, nl, nn), np.nan, dtype=np.float32, chunks=(1, nm, nl, nn)),
                                {**a, "long_name": f"{a['long_name']} (ensemble members)"})
    data["done"] = (("time",), da.zeros((nt,), dtype=np.uint8, chunks=(1,)),
                    {"long_name": "time step computed and written", "flag_values": np.array([0, 1], np.uint8),
                     "flag_meanings": "pending done"})
    data["case_seed"] = (("time",), da.full((nt,), -1, dtype=np.int64, chunks=(max(1, nt),)),
                         {"long_name": "random seed of the case (-1: deterministic method)"})
    return data


def _coords(plan: BatchPlan) -> dict:
    """CF coordinates: time, member, lat/lon with their cell bounds."""
    latb = np.stack([plan.lat_bounds[:-1], plan.lat_bounds[1:]], 1)
    lonb = np.stack([plan.lon_bounds[:-1], plan.lon_bounds[1:]], 1)
    return {
        "time": ("time", plan.times.values, {"standard_name": "time", "long_name": "time", "axis": "T"}),
        "member": ("member", np.arange(plan.members, dtype=np.int32),
                   {"standard_name": "realization", "long_name": "ensemble member"}),
        "lat": ("lat", plan.lat, {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north",
                                  "axis": "Y", "bounds": "lat_bnds"}),
        "lon": ("lon", plan.lon, {"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east",
                                  "axis": "X", "bounds": "lon_bnds"}),
        "lat_bnds": (("lat", "bnds"), latb),
        "lon_bnds": (("lon", "bnds"), lonb),
    }


def _global_attrs(plan: BatchPlan, command: str) -> dict:
    """CF global attributes and provenance (method, GCM, checkpoint hashes, seed rule, command, parameters)."""
    from ..gcm import describe_gcm

    spec = plan.spec
    now = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    det = spec.deterministic
    prior = plan.prior
    return {
        "Conventions": "CF-1.10",
        "title": f"ZSSD Explorer batch downscaling of {spec.gcm} to the ERA5 0.25 degree grid ({spec.method})",
        "institution": "ZSSD Explorer",
        "source": (f"{spec.gcm}: {', '.join(map(str, spec.gcm_files))}" if spec.gcm_files else describe_gcm(spec.gcm))
                  + f"; method {spec.method}",
        "history": f"{now}: created by {command}",
        "references": "Tie & Xiong (2026), zero-shot statistical downscaling by diffusion posterior sampling",
        "comment": ("Each time step is written whole, then done(time) is set to 1; steps with done == 0 are "
                    "missing (NaN) and are computed by re-running the same command. "
                    "Pseudo-GCM and paired-task inputs derive from the synthetic ZSSD demo world, not ERA5."),
        "method": spec.method,
        "gcm": spec.gcm,
        "region": plan.region.as_text(),
        "time_coverage_start": plan.times[0].isoformat(),
        "time_coverage_end": plan.times[-1].isoformat(),
        "time_step": spec.freq,
        "members": plan.members,
        "steps": "n/a" if det else spec.steps,
        "seed": "n/a" if det else spec.seed,
        "seed_rule": "case_seed = SeedSequence([seed, minutes since 1970-01-01 + 2**40]).generate_state(1)[0]",
        "guidance_scale": "n/a" if plan.guidance_scale is None else plan.guidance_scale,
        "guidance_scale_source": ("n/a" if plan.guidance_scale is None else
                                  "tuned default" if spec.guidance_scale is None else "--guidance-scale"),
        "checkpoint": "n/a" if prior is None else prior.label,
        "checkpoint_kind": "n/a" if prior is None else prior.kind,
        "checkpoint_sha256": "n/a" if prior is None else prior.sha256,
        "checkpoint_card_sha256": "n/a" if (prior is None or not prior.card_sha256) else prior.card_sha256,
        "command": command,
        "date_created": now,
        "zssd_batch_layout": LAYOUT_VERSION,
        PARAMS_ATTR: json.dumps(plan.params, sort_keys=True),
    }


def _encoding(ds, plan: BatchPlan) -> dict[str, dict]:
    """Zarr encoding: NaN fill values, ``done`` chunked per step, time in hours since the first step."""
    enc: dict[str, dict] = {v: {"_FillValue": np.float32(np.nan)} for v in ds.data_vars if ds[v].dtype == np.float32}
    enc["done"] = {"_FillValue": None, "chunks": (1,)}
    enc["case_seed"] = {"_FillValue": None}
    enc["time"] = {"units": f"hours since {plan.times[0].strftime('%Y-%m-%d %H:%M:%S')}",
                   "calendar": "proleptic_gregorian", "dtype": "float64"}
    return enc


# ================================================================ create
def create_store(plan: BatchPlan, command: str) -> None:
    """Create the full NaN store atomically (temporary directory + rename)."""
    import dask
    import xarray as xr
    import zarr

    out = plan.out
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    ds = xr.Dataset(_data_vars(plan), coords=_coords(plan), attrs=_global_attrs(plan, command))
    seeds = np.array([case_seed(plan.spec.seed, t) if plan.prior is not None else -1 for t in plan.times],
                     dtype=np.int64)
    try:
        # metadata only (compute=False); nothing may go to a distributed client that is the default scheduler
        with dask.config.set(scheduler="synchronous"):
            ds.to_zarr(str(tmp), mode="w-", compute=False, encoding=_encoding(ds, plan), zarr_format=2,
                       consolidated=True)
        g = zarr.open_group(str(tmp), mode="r+", zarr_format=2)
        g["done"][:] = np.zeros(plan.n, np.uint8)
        g["case_seed"][:] = seeds
        try:
            os.rename(tmp, out)
        except OSError:
            if out.exists():  # another run created it first: use theirs (parameters re-checked on open)
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_stale_tmp(out: Path) -> None:
    """Remove half-created stores of runs that were killed (their process no longer exists)."""
    for p in out.parent.glob(f".{out.name}.tmp-*"):
        try:
            pid = int(p.name[len(f".{out.name}.tmp-"):].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            continue


# ================================================================= write
class Store:
    """The client's handle on an existing batch store (holds its lock until :meth:`close`).

    Raises ``BatchError`` if another run holds the lock, if the stored parameters differ from
    ``plan.params`` (:func:`check_params`) or if the store's grid is not the plan's.
    """

    def __init__(self, plan: BatchPlan) -> None:
        import zarr

        self.plan = plan
        self._lockf = None
        self._lock()
        try:
            check_params(plan.out, plan.params)
        except BaseException:
            self.close()
            raise
        self.group = zarr.open_group(str(plan.out), mode="r+", zarr_format=2)
        lat = np.asarray(self.group["lat"][:])
        lon = np.asarray(self.group["lon"][:])
        if lat.shape != plan.lat.shape or lon.shape != plan.lon.shape or not (
                np.allclose(lat, plan.lat) and np.allclose(lon, plan.lon)):
            self.close()
            raise BatchError(f"--out {plan.out}: the store's grid differs from the region's grid")

    def _lock(self) -> None:
        """Take the store's exclusive lock file (``BatchError`` if another run holds it)."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX: no lock
            return
        self._lockf = open(self.plan.out / LOCK_NAME, "a+")
        try:
            fcntl.flock(self._lockf.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lockf.close()
            self._lockf = None
            raise BatchError(f"--out {self.plan.out} is being written by another zssd batch run") from None

    def done(self) -> np.ndarray:
        """Boolean mask of the time steps already written."""
        return np.asarray(self.group["done"][:], dtype=bool)

    def write(self, res: CaseResult) -> None:
        """Write one case's chunks, then mark it done (Ctrl-C deferred meanwhile)."""
        i = res.index
        with _defer_sigint():
            for name, arr in res.arrays.items():
                self.group[name][i] = arr
            self.group["done"][i] = 1

    def close(self) -> None:
        """Release the lock (idempotent)."""
        if self._lockf is not None:
            self._lockf.close()
            self._lockf = None


@contextlib.contextmanager
def _defer_sigint() -> Iterator[None]:
    """Hold back SIGINT for the duration (main thread only); re-raise it afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    try:
        old = signal.signal(signal.SIGINT, lambda s, f: got.append(s))
    except ValueError:  # pragma: no cover - not in the main interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if got:
            raise KeyboardInterrupt
