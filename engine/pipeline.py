"""The downscaling pipeline: one facade shared by the CLI, the app and batch jobs.

* :func:`prepare_case` — everything a method needs for one (GCM, time, region):
  the 0.25° grid, the GCM field on its native cells, the reference, the
  prior's conditioning.  All input checks happen here (or in the sampler
  constructors), before any expensive computation.
* :func:`baseline` — bilinear interpolation, bilinear + lapse rate (``lapse``) or
  BCSD (trained on training-year samples only, cached per process).
* :func:`sampler` — a generator of :class:`engine.samplers.StepState` for
  ``zssd``/``dps``/``ddrm``.
* :func:`result_dataset` / :func:`baseline_result` — CF-style ``xr.Dataset``
  with the ensemble mean, spread and members plus provenance attributes.
* :func:`write_netcdf_atomic` — write to a temporary name in the same
  directory and ``os.replace`` it; nothing is left behind on failure.

The ``zssd downscale`` sub-command is :mod:`engine.cli.downscale`.
"""

from __future__ import annotations

import json
import os
import time as _time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from .conditioning import static_channels, time_features, to_timestamp
from .demo_world import SOURCE_LABEL, TRAIN_YEARS, DemoWorld, check_training_time
from .errors import DataError
from .gcm import GCM_SOURCES, REAL_FILES, fine_region_for, gcm_field
from .grids import GridError, LatLonGrid, Region, era5_grid
from .methods import CLASSICAL, DIFFUSION, METHODS as METHOD_REGISTRY, is_guided, method_names, sampler_name
from .operators import grid_from_xarray
from .real_sources import ERA5_CREDIT, REAL_LABEL, REAL_SOURCES, era5_points_grid, era5_reference
from .statics import ASSETS
from .variables import VARIABLE_INFO, VARIABLES

__all__ = [
    "Case", "METHODS", "BASELINES", "DIFFUSION_METHODS", "prepare_case", "baseline", "sampler", "result_dataset",
    "baseline_result", "write_netcdf_atomic", "write_json_atomic", "default_prior", "load_prior",
    "DEFAULT_CHECKPOINT", "get_world", "prior_sha256", "check_source",
    "bcsd_training_times", "parse_time", "parse_region", "check_method", "run_method",
    "REFERENCE_LABEL", "coarse_elevation", "reference_label",
]

#: Method names by kind, from the registry :data:`engine.methods.METHODS`.
BASELINES: tuple[str, ...] = method_names(kind=CLASSICAL)
DIFFUSION_METHODS: tuple[str, ...] = method_names(kind=DIFFUSION)
#: Methods that take a guidance scale ζ (zssd-bc uses zssd's).
GUIDED_METHODS: tuple[str, ...] = method_names(guided=True)
METHODS: tuple[str, ...] = tuple(METHOD_REGISTRY)
DEFAULT_CHECKPOINT = ASSETS / "checkpoints" / "zssd_demo_prior.safetensors"
REFERENCE_LABEL = "demo world (synthetic)"
#: BCSD training sample: every third training year (10 years) x these days of the case's month, same UTC hour.
BCSD_YEARS: tuple[int, ...] = TRAIN_YEARS[::3]
BCSD_DAYS: tuple[int, ...] = (6, 21)


# ---------------------------------------------------------------- inputs
def parse_time(time) -> pd.Timestamp:
    """An ISO time (or any time-like) → ``pd.Timestamp``; ``ValueError`` with the offending text."""
    try:
        return to_timestamp(time)
    except (ValueError, TypeError) as e:
        raise ValueError(f"cannot read time {time!r} (use ISO 8601, e.g. 2021-08-28T12:00): {e}") from None


def parse_region(region) -> Region:
    return region if isinstance(region, Region) else Region.parse(region)


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    return method


def check_source(source_id: str, files: dict | None = None) -> str:
    known = tuple(GCM_SOURCES) + tuple(files or {})
    if source_id not in known:
        raise GridError(f"unknown GCM {source_id!r}; known: {', '.join(known)}")
    return source_id


_WORLDS: dict[int, DemoWorld] = {}


def get_world(seed: int = 0) -> DemoWorld:
    """A per-process demo world (its cyclone tracks are cached)."""
    if seed not in _WORLDS:
        _WORLDS[seed] = DemoWorld(seed)
    return _WORLDS[seed]


# ---------------------------------------------------------------- the case
@dataclass(eq=False)
class Case:
    """One downscaling problem: a GCM field at a time over a region, plus the reference and conditioning.

    ``paired`` is True for the pseudo-GCMs and the ×6/×10/×20 tasks (the reference is the
    same demo-world state the GCM field was derived from) and for the real ``ERA5-x20``/``ERA5-x10``
    tasks (the reference is real ERA5 at its 1° points, a subset of the fine grid: scores are taken
    at those points, :func:`engine.metrics.at_reference_points`); for a real GCM file or the
    unpaired real sources the reference is the demo world at that date — an *unpaired* comparison.
    """

    source_id: str
    time: pd.Timestamp
    region: Region
    fine: LatLonGrid
    reference: xr.Dataset
    gcm: xr.Dataset
    static: np.ndarray
    time_feats: np.ndarray
    paired: bool
    world_seed: int = 0
    files: dict | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return self.fine.shape

    @property
    def gcm_grid(self) -> LatLonGrid:
        return grid_from_xarray(self.gcm, name=self.source_id)

    @property
    def reference_display(self) -> xr.Dataset:
        """The reference on the fine grid, *for drawing only*.

        A demo-world reference is already on the fine grid.  Real ERA5 exists only at its 1°
        points: each 0.25° cell shows its nearest 1° point (blocks of 4x4 cells), so the map
        shows what is known and no more.  Scores never use this: they are taken at the points.
        """
        if not self.real_reference:
            return self.reference
        ref = self.reference
        f = self.fine
        li = np.abs(f.lat[:, None] - ref["lat"].values[None, :]).argmin(1)
        lo = np.abs(f.lon[:, None] - ref["lon"].values[None, :]).argmin(1)
        data = {v: (("lat", "lon"), ref[v].values[np.ix_(li, lo)], dict(ref[v].attrs)) for v in ref.data_vars}
        return xr.Dataset(data, coords={"lat": f.lat, "lon": f.lon}, attrs=dict(ref.attrs, display="nearest 1° point"))

    @property
    def real_reference(self) -> bool:
        """True when the reference is real ERA5 (at its 1° points), not the demo world."""
        return bool(self.reference.attrs.get("real", 0))

    @property
    def gcm_variables(self) -> tuple[str, ...]:
        return tuple(v for v in VARIABLES if v in self.gcm.data_vars)

    def label(self) -> str:
        return f"{self.source_id} {self.time.strftime('%Y-%m-%dT%H:%M')} {self.region.as_text()}"

    def provenance(self) -> dict[str, Any]:
        return {
            "gcm": self.source_id,
            "gcm_description": str(self.gcm.attrs.get("description", self.source_id)),
            "gcm_kind": str(self.gcm.attrs.get("kind", "")),
            "gcm_native_cells": f"{self.gcm.sizes['lat']}x{self.gcm.sizes['lon']}",
            "gcm_selected_time": str(self.gcm.attrs.get("selected_time", self.time.isoformat())),
            "time": self.time.isoformat(),
            "region": self.region.as_text(),
            "fine_grid": f"ERA5 0.25deg sub-grid {self.fine.shape[0]}x{self.fine.shape[1]}",
            "reference": reference_label(self),
            "paired": self.paired,
            **({"credit": ERA5_CREDIT} if self.real_reference or self.source_id in REAL_SOURCES else {}),
        }


def reference_label(case: "Case") -> str:
    """What the case's reference is, for views, tables and file attributes."""
    if case.real_reference:
        return f"{REAL_LABEL}: {case.reference.attrs.get('points', '')}"
    return f"{REFERENCE_LABEL}: {SOURCE_LABEL}, seed {case.world_seed}"


def prepare_case(source_id: str, time, region, world: DemoWorld | None = None, files: dict | None = None,
                 world_seed: int = 0, time_tolerance=None) -> Case:
    """Assemble a :class:`Case`; raises ``ValueError`` (``GridError``/``DataError``) for bad input.

    Checks: known GCM, readable time, valid region with ERA5 cells, GCM data at that time
    (the real file only covers 2005), region at least one GCM cell in each direction.
    """
    check_source(source_id, files)
    ts = parse_time(time)
    reg = parse_region(region)
    fine, _, _ = era5_grid().select(reg, what="region")
    world = world if world is not None else get_world(world_seed)
    gcm = gcm_field(source_id, ts, reg, world, files=files, time_tolerance=time_tolerance)
    g = grid_from_xarray(gcm, name=source_id)
    if reg.height < g.dlat - 1e-6 or reg.width < g.dlon - 1e-6:
        raise GridError(f"region {reg} ({reg.height:g}°x{reg.width:g}°) is smaller than one {source_id} cell "
                        f"({g.dlat:.3g}°x{g.dlon:.3g}°); choose a larger region")
    real_src = REAL_SOURCES.get(source_id)
    real = source_id in REAL_FILES or source_id in (files or {}) or (real_src is not None and not real_src.paired)
    if real_src is not None and real_src.paired:
        reference = era5_reference(ts, fine)  # real ERA5 at its 1° points
    else:
        reference = world.dataset(ts, fine)
        reference.attrs["paired"] = int(not real)
    dem, land = world.statics.region(fine)
    static = static_channels(fine, dem, land, ts)
    tf = time_features([ts])
    return Case(source_id, ts, reg, fine, reference, gcm, static, tf, paired=not real,
                world_seed=world.seed, files=files)


# ---------------------------------------------------------------- baselines
def bcsd_training_times(month: int, hour: int, years: Sequence[int] = BCSD_YEARS,
                        days: Sequence[int] = BCSD_DAYS) -> list[pd.Timestamp]:
    """Training-year times of one calendar month at one UTC hour (held-out years refused)."""
    out = [pd.Timestamp(year=y, month=month, day=d, hour=hour) for y in years for d in days]
    for t in out:
        check_training_time(t)
    return out


_BCSD_CACHE: "OrderedDict[tuple, Any]" = OrderedDict()
_BCSD_CACHE_SIZE = 8


def train_paired_bcsd(case: Case, cache: "OrderedDict[tuple, Any]", pair: Callable, **bcsd_kwargs):
    """A :class:`~engine.baselines.BCSD` trained on ``pair(t) -> (hist, ref)`` at the case's training times.

    The training times are :func:`bcsd_training_times` of the case's month and UTC hour (training
    years only); the model is cached in ``cache`` per (source, region, month, hour, world seed)
    and the cache keeps the :data:`_BCSD_CACHE_SIZE` most recent.  ``bcsd_kwargs`` go to ``BCSD``
    (default ``min_samples``: the number of times, at most 10; ``min_coverage`` 1e-3, so GCM cells
    on the region's edge are trained on the part inside it).  The model's ``training_period``
    names the years, month and hour.
    """
    from concurrent.futures import ThreadPoolExecutor

    from .baselines import BCSD

    key = (case.source_id, case.region.as_text(), case.time.month, case.time.hour, case.world_seed)
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    times = bcsd_training_times(case.time.month, case.time.hour)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as ex:
        pairs = list(ex.map(pair, times))
    hist = xr.concat([p[0] for p in pairs], dim="time", coords="minimal", compat="override")
    ref = xr.concat([p[1] for p in pairs], dim="time")
    kw = {"min_samples": min(10, len(times)), "min_coverage": 1e-3, **bcsd_kwargs}
    model = BCSD(**kw).train(ref, hist)
    model.training_period = f"{times[0]:%Y}-{times[-1]:%Y}, month {case.time.month:02d}, {case.time.hour:02d} UTC"
    cache[key] = model
    while len(cache) > _BCSD_CACHE_SIZE:
        cache.popitem(last=False)
    return model


def _train_bcsd(case: Case):
    """BCSD on (pseudo-)GCM/reference pairs of the case's month and hour (:func:`train_paired_bcsd`)."""
    world = get_world(case.world_seed)

    def one(t):
        return gcm_field(case.source_id, t, case.region, world).expand_dims("time"), world.dataset(t, case.fine)

    return train_paired_bcsd(case, _BCSD_CACHE, one)


def coarse_elevation(case: Case) -> np.ndarray:
    """Elevation (m) on the case's GCM cells, averaged exactly as the input was.

    ERA5-x20/x10: the cos φ area mean of the elevation *at the 1° points* (the input is the mean
    of the 1° values); every other source: the conservative mean of the 0.25° elevation (the
    pseudo-GCMs and paired tasks average the 0.25° world; for real model files it is the standard
    proxy for the model's own orography, which the files do not carry).
    """
    import torch

    from .operators import conservative

    coarse = case.gcm_grid
    world = get_world(case.world_seed)
    region = fine_region_for(coarse)
    if case.source_id in REAL_SOURCES and REAL_SOURCES[case.source_id].paired:
        pts, li, lo = era5_points_grid().covering(region)
        dem = world.statics.dem[::4, ::4][np.ix_(li, lo)]
        src = pts
    else:
        src, li, lo = era5_grid().select(region)
        dem = world.statics.dem[np.ix_(li, lo)]
    op = conservative(src, coarse, dtype=torch.float64)
    return op(torch.as_tensor(np.asarray(dem, dtype=np.float64))).numpy()


def baseline(case: Case, method: str) -> xr.Dataset:
    """A baseline downscaling of the case's GCM field on the fine grid (physical units, no time dim).

    ``"bilinear"``: NaN-aware bilinear interpolation.  ``"lapse"``: bilinear plus −6.5 K/km times
    the elevation detail for t2m (:func:`engine.baselines.lapse_rate_downscale` with
    :func:`coarse_elevation`).  ``"bcsd"``: BCSD trained on
    (pseudo-)GCM/reference pairs of the same calendar month and UTC hour from training
    years only (:func:`bcsd_training_times`), cached per (source, region, month, hour).
    A real GCM file (12 monthly means, no historical pairs) cannot train BCSD:
    :class:`DataError`.
    """
    from .baselines import bilinear_downscale, lapse_rate_downscale

    if method == "bilinear":
        out = bilinear_downscale(case.gcm, case.fine)
    elif method == "lapse":
        dem, _ = get_world(case.world_seed).statics.region(case.fine)
        out = lapse_rate_downscale(case.gcm, case.fine, dem, coarse_elevation(case))
    elif method == "bcsd":
        if case.source_id in REAL_SOURCES:
            raise DataError(
                f"BCSD cannot be trained for {case.source_id}: it needs years of input/reference pairs per "
                f"calendar month, and the real source holds {'one week (24 times)' if case.paired else 'no reference'}; "
                f"use bilinear, lapse, ddrm, dps or zssd")
        if not case.paired:
            what = ("the file holds monthly means of one year (one sample per calendar month) and"
                    if case.source_id in REAL_FILES else "it has")
            raise DataError(
                f"BCSD cannot be trained for {case.source_id}: {what} no historical run paired with a reference, "
                f"while BCSD needs at least 10 samples per month; use bilinear, lapse, ddrm, dps or zssd for this "
                f"source")
        model = _train_bcsd(case)
        sim = case.gcm.expand_dims("time") if "time" not in case.gcm.dims else case.gcm
        out = model.adjust(sim[[v for v in model.fits]]).isel(time=0)
        out.attrs["bcsd_training_years"] = f"{BCSD_YEARS[0]}-{BCSD_YEARS[-1]} every 3rd year (training years only)"
        out.attrs["bcsd_training_days"] = ",".join(map(str, BCSD_DAYS))
    else:
        raise ValueError(f"unknown baseline {method!r}; choose from {', '.join(BASELINES)}")
    return out


# ---------------------------------------------------------------- priors
@lru_cache(maxsize=4)
def _load_prior_cached(path: str, device: str | None):
    from .prior.model import Prior

    kw = {} if device is None else {"device": device}
    return Prior.load(path, **kw)


def load_prior(path: str | os.PathLike | None = None, device: str | None = None):
    """Load a checkpoint (``.safetensors`` + JSON card), cached per process.

    ``path="tiny"`` gives ``Prior.tiny(0)`` — an *untrained* network for smoke tests only.
    """
    from .prior.model import Prior

    if path is not None and str(path) == "tiny":
        return Prior.tiny(0)
    p = Path(path) if path is not None else DEFAULT_CHECKPOINT
    if not p.exists():
        hint = ("train one with `zssd train --config …` or pass --checkpoint PATH"
                if path is None else "check the path")
        raise FileNotFoundError(f"prior checkpoint {p} not found; {hint}")
    return _load_prior_cached(str(p.resolve()), device)


def default_prior(device: str | None = None):
    """The shipped demo prior ``assets/checkpoints/zssd_demo_prior.safetensors``."""
    return load_prior(None, device)


def prior_sha256(prior) -> str:
    """The checkpoint's sha256 from the prior's card (``"untrained"`` for ``Prior.tiny``)."""
    for name in ("sha256", "checkpoint_sha256"):
        v = getattr(prior, name, None)
        if isinstance(v, str) and v:
            return v
    card = getattr(prior, "card_data", None)
    if isinstance(card, dict):
        sha = (card.get("weights") or {}).get("sha256") or card.get("sha256")
        if sha:
            return str(sha)
    return "untrained"


# ---------------------------------------------------------------- sampling
def sampler(case: Case, prior, method: str, steps: int = 100, members: int = 1, seed: int = 0,
            guidance_scale: float | None = None, **kw) -> Iterator:
    """A generator of :class:`engine.samplers.StepState` for a diffusion method.

    Extra keywords go to the sampler (``guidance_schedule``, ``eta``; DDRM: ``eta``, ``eta_b``,
    ``sigma_y``).  Validation happens now, before any step is computed.
    """
    from .samplers import get_sampler

    if method in BASELINES:
        raise ValueError(f"{method!r} is a baseline, not a sampler; use pipeline.baseline()")
    from .bias_correction import BC_METHODS, bias_corrected_case

    if method in BC_METHODS:  # correct Y's large-scale bias at the unified grid, then guide as usual
        case, method = bias_corrected_case(case), BC_METHODS[method]
    fn = get_sampler(method)
    if is_guided(method):
        kw["guidance_scale"] = guidance_scale
    elif guidance_scale is not None and method in METHOD_REGISTRY:  # ddrm: the registered unguided sampler
        raise ValueError(f"{method} takes no guidance scale (it projects onto the data); use sigma_y/eta_b")
    return fn(prior, case.gcm, case.fine, case.static, case.time_feats, steps=steps, members=members, seed=seed,
              **kw)


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
    attrs.update(extra_attrs or {})
    return _assemble(case, fields, attrs)


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


def run_method(case: Case, method: str, prior=None, steps: int = 100, members: int = 1, seed: int = 0,
               guidance_scale: float | None = None, progress=None, variables: Sequence[str] | None = None,
               **kw) -> xr.Dataset:
    """Run one method to completion and return its result dataset (used by evaluate and batch jobs).

    ``progress(state)`` is called after every sampler step (ignored for baselines).
    """
    check_method(method)
    t0 = _time.perf_counter()
    if method in BASELINES:
        out = baseline(case, method)
        return baseline_result(case, out, method, _time.perf_counter() - t0, variables)
    if prior is None:
        raise ValueError(f"{method} needs a prior")
    if method in GUIDED_METHODS and guidance_scale is None:
        guidance_scale = guidance_default(method, steps)
    from .bias_correction import BC_METHODS, bias_attrs

    extra = bias_attrs(case) if method in BC_METHODS else {}
    gen = sampler(case, prior, method, steps, members, seed, guidance_scale, **kw)
    final = None
    try:
        for st in gen:
            final = st
            if progress is not None:
                progress(st)
    finally:
        gen.close()
    return result_dataset(case, final, prior, method, steps, seed, guidance_scale, _time.perf_counter() - t0,
                          variables, extra_attrs={**{k: v for k, v in kw.items() if isinstance(v, (int, float, str))},
                                                  **extra})


def guidance_default(method: str, steps: int) -> float:
    """The tuned ζ for a guided method (``zssd-bc`` guides like ``zssd``)."""
    from .samplers import default_guidance_scale

    return default_guidance_scale(sampler_name(method), steps)


# ---------------------------------------------------------------- output
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
