"""The classical methods of the pipeline: bilinear, bilinear + lapse rate, and BCSD with its training.

BCSD (and the bias correction of ``zssd-bc``, :mod:`zssd_engine.bias_correction`) train on
(pseudo-)GCM/reference pairs of the case's calendar month and UTC hour from training years
only (:func:`bcsd_training_times`), through the one training path :func:`train_paired_bcsd`
(cache, training times, parallel pairs, the fit).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from ..demo_world import TRAIN_YEARS, check_training_time
from ..errors import DataError
from ..gcm import REAL_FILES, fine_region_for, gcm_field
from ..grids import era5_grid
from ..real_sources import REAL_SOURCES, era5_points_grid
from .case import BASELINES, Case, get_world

__all__ = ["BCSD_YEARS", "BCSD_DAYS", "bcsd_training_times", "train_paired_bcsd", "coarse_elevation", "baseline"]

#: BCSD training sample: every third training year (10 years) x these days of the case's month, same UTC hour.
BCSD_YEARS: tuple[int, ...] = TRAIN_YEARS[::3]
BCSD_DAYS: tuple[int, ...] = (6, 21)


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
    """A :class:`~zssd_engine.baselines.BCSD` trained on ``pair(t) -> (hist, ref)`` at the case's training times.

    The training times are :func:`bcsd_training_times` of the case's month and UTC hour (training
    years only); the model is cached in ``cache`` per (source, region, month, hour, world seed)
    and the cache keeps the :data:`_BCSD_CACHE_SIZE` most recent.  ``bcsd_kwargs`` go to ``BCSD``
    (default ``min_samples``: the number of times, at most 10; ``min_coverage`` 1e-3, so GCM cells
    on the region's edge are trained on the part inside it).  The model's ``training_period``
    names the years, month and hour.
    """
    from concurrent.futures import ThreadPoolExecutor

    from ..baselines import BCSD

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

    from ..operators import conservative

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
    the elevation detail for t2m (:func:`zssd_engine.baselines.lapse_rate_downscale` with
    :func:`coarse_elevation`).  ``"bcsd"``: BCSD trained on
    (pseudo-)GCM/reference pairs of the same calendar month and UTC hour from training
    years only (:func:`bcsd_training_times`), cached per (source, region, month, hour).
    A real GCM file (12 monthly means, no historical pairs) cannot train BCSD:
    :class:`DataError`.
    """
    from ..baselines import bilinear_downscale, lapse_rate_downscale

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
