"""Bias-aware ZSSD (``zssd-bc``): correct the GCM's large-scale bias on the unified grid, then guide.

Zero-shot guidance pulls x̂0 toward the GCM field Y's large scales, bias included.  ``zssd-bc``
first maps Y's distribution onto the reference's at the *unified 5° grid* — the "BC" half of
BCSD (:meth:`zssd_engine.baselines.bcsd.BCSD.bias_correct`: empirical quantile mapping per calendar month,
unified cell and variable, trained on the GCM's historical simulation against the reference
averaged onto the same cells over the same training period) — and then runs ordinary UCG
guidance (:func:`zssd_engine.samplers.sample_zssd`) toward the corrected field Ŷ = QM(A₅ Y):

    x̂0 ← x̂0 − ζ ∇ ‖ W^{1/2} (A₅ x̂0 − QM(A₅ Y)) ‖,    A₅ = conservative average onto 5° cells

Training data: the same calendar month and UTC hour in every third training year, days 6 and 21
(:func:`zssd_engine.pipeline.bcsd_training_times`; held-out years refused), cached per (GCM, region,
month, hour).  A source without a historical run paired with a reference (a real file, the
real-weather sources, a user's files) is **refused** with a message: there is nothing to train
the mapping on, and a silent fallback to uncorrected guidance would hide the bias.  Monthly-mean
files are refused by the same rule (the shipped MPI-ESM-LR file has no historical pairs).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any

import numpy as np
import xarray as xr

from .errors import DataError
from .grids import unified_grid
from .methods import METHODS, method_names

__all__ = ["BC_METHODS", "bias_attrs", "check_trainable", "unified_field", "train_bias_correction", "bias_corrected_case"]

#: Bias-aware methods -> the sampler they run after the correction (from :data:`zssd_engine.methods.METHODS`).
BC_METHODS: dict[str, str] = {m: str(METHODS[m].sampler) for m in method_names(bias_corrected=True)}

_CACHE: "OrderedDict[tuple, Any]" = OrderedDict()


def check_trainable(case) -> None:
    """Raise :class:`DataError` unless the case's GCM has a historical run paired with a reference."""
    from .gcm import PSEUDO_GCMS
    from .grids import PAIRED_TASKS

    if case.source_id not in PSEUDO_GCMS and case.source_id not in PAIRED_TASKS:
        raise DataError(
            f"zssd-bc cannot correct {case.source_id}: the bias correction is trained on the GCM's historical "
            f"simulation against the reference over the same period, and {case.source_id} has no such paired "
            "history (a single real file, monthly means or an unpaired snapshot); use zssd (uncorrected "
            "guidance, the bias included) or train the correction on this model's historical run")


def _unified_cells(fine):
    """The unified 5° cells covering the 0.25° grid ``fine`` (its cell bounds)."""
    from .grids import Region

    lb = fine.lat_bounds
    box = Region(float(min(lb[0], lb[-1])), float(max(lb[0], lb[-1])), float(fine.lon_bounds[0]),
                 float(fine.lon_bounds[-1]))
    return unified_grid().covering(box, 0)[0]


def unified_field(ds: xr.Dataset, fine) -> xr.Dataset:
    """``ds`` (native GCM cells) averaged conservatively (NaN-aware) onto the unified 5° cells covering the
    0.25° grid ``fine`` (its cell bounds, so every fine cell lies in a corrected cell)."""
    from .operators import regrid

    dst = _unified_cells(fine)
    data = {v: regrid(ds[v], dst, "conservative") for v in ds.data_vars
            if "lat" in ds[v].dims and "lon" in ds[v].dims and not str(v).endswith(("_bnds", "_bounds"))}
    out = xr.Dataset(data)
    lb, lob = dst.lat_bounds, dst.lon_bounds
    out = out.assign_coords(lat_bnds=(("lat", "bnds"), np.stack([lb[:-1], lb[1:]], 1)),
                            lon_bnds=(("lon", "bnds"), np.stack([lob[:-1], lob[1:]], 1)))
    out.attrs = dict(ds.attrs)
    return out


def train_bias_correction(case):
    """The quantile mapping of the case's GCM at the unified grid (trained on training years, cached)."""
    from .gcm import fine_region_for, gcm_field
    from .grids import era5_grid
    from .pipeline import get_world, train_paired_bcsd

    check_trainable(case)
    world = get_world(case.world_seed)
    # the reference over the whole unified cells (not just the region): edge cells are then compared
    # like with like, full cell against full cell
    cover = era5_grid().select(fine_region_for(_unified_cells(case.fine), pad_deg=0.25))[0]

    def one(t):
        hist = unified_field(gcm_field(case.source_id, t, case.region, world), case.fine)
        return hist.expand_dims("time"), world.dataset(t, cover)

    # no detrending: one instantaneous field is corrected, not a multi-year run whose trend must survive
    return train_paired_bcsd(case, _CACHE, one, detrend_years=10 ** 6)


def bias_attrs(case) -> dict[str, str]:
    """Provenance of the correction for an output's attributes (trains it if needed)."""
    check_trainable(case)
    return {"bias_correction": "quantile mapping at the unified 5° grid (BCSD's BC step) before UCG guidance",
            "bias_correction_training": train_bias_correction(case).training_period}


def bias_corrected_case(case):
    """A copy of ``case`` whose GCM field is the quantile-mapped unified-grid field QM(A₅ Y).

    The copy's ``gcm`` carries the provenance in ``attrs``: ``bias_correction`` (what was done)
    and ``bias_correction_training`` (the training period).
    """
    model = train_bias_correction(case)
    y5 = unified_field(case.gcm, case.fine)
    vs = [v for v in model.fits if v in y5.data_vars]
    corrected = model.bias_correct(y5[vs].expand_dims("time")).isel(time=0)
    out = xr.Dataset({v: corrected[v].astype(np.float32).assign_attrs(y5[v].attrs) for v in vs},
                     coords={"lat": y5["lat"], "lon": y5["lon"], "lat_bnds": y5["lat_bnds"],
                             "lon_bnds": y5["lon_bnds"]})
    out.attrs = dict(case.gcm.attrs)
    out.attrs["bias_correction"] = ("empirical quantile mapping of the GCM averaged to the unified 5° grid against "
                                    "the reference averaged the same way, per calendar month and cell (BCSD's BC "
                                    "step), before UCG guidance")
    out.attrs["bias_correction_training"] = model.training_period
    out.attrs["native_grid"] = f"unified 5° ({case.gcm.attrs.get('native_grid', '')} native, corrected)"
    return dataclasses.replace(case, gcm=out)
