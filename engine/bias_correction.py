"""Bias-aware ZSSD (``zssd-bc``): correct the GCM's bias by quantile mapping, then guide.

Zero-shot guidance pulls x̂0 toward the GCM field Y's large scales, bias included.  ``zssd-bc``
first maps Y's distribution onto the reference's — the "BC" half of BCSD
(:meth:`zssd_engine.baselines.bcsd.BCSD.bias_correct`: empirical quantile mapping per calendar month,
cell and variable, trained on the GCM's historical simulation against the reference averaged onto
the same cells over the same training period) — and then runs ordinary UCG guidance
(:func:`zssd_engine.samplers.sample_zssd`) toward the corrected field Ŷ:

    x̂0 ← x̂0 − ζ ∇ ‖ W^{1/2} (A_r x̂0 − A_r Ŷ) ‖,    A_r = conservative average onto unified r° cells

with r the paper's 5°, or 2.5° for the GCMs whose training-year cases gain from it
(:data:`BC_GUIDANCE_RES`, :func:`guidance_res`): the corrected field carries detail finer than 5° that
the paper's unified grid averages away, worth following where the model resolves it.

The cell means fix how warm a cell is, not how that warmth is shared between its land and sea or its
ridges and valleys; guided samples share it wrongly where a coast or a steep slope crosses a cell.  A
second, weaker observation (:mod:`zssd_engine.samplers.subcell`, weight :data:`SUBCELL_WEIGHT`) pulls each
cell's land/terrain contrast of t2m toward the reference's fine climatology of the same calendar month and
UTC hour over the correction's own training pairs (:func:`subcell_climatology`); λ = 1 was chosen on
training-year cases (``benchmarks/bc_guidance.py --subcell``, ``benchmarks/results/bc_subcell_prior_v4_*.md``).

The mapping works on one of two grids (:data:`BIAS_GRIDS`), per variable:

* ``"native"`` (the default for every variable): Ŷ = QM(Y) on the GCM's own cells, as BCSD does;
* ``"unified"``: Ŷ = QM(A₅ Y) on the unified 5° cells (the first version of this method).

The default was chosen on training-year cases only (``benchmarks/bc_grid.py``): on the native
cells the corrected field's 5° error is 45 % lower for t2m (0.135 K against 0.247 K, mean of the
five pseudo-GCMs) and 5–13 % lower for msl and the winds — the mapping sees each native cell's own
bias before averaging mixes cells of different biases.

Training data: the same calendar month and UTC hour in every third training year, days 6 and 21
(:func:`zssd_engine.pipeline.bcsd_training_times`; held-out years refused), cached per (grid, GCM,
region, month, hour); the reference covers the whole cells, so an unbiased input maps onto itself.
A source without a historical run paired with a reference (a real file, the real-weather sources,
a user's files) is **refused** with a message: there is nothing to train the mapping on, and a
silent fallback to uncorrected guidance would hide the bias.  Monthly-mean files are refused by the
same rule (the shipped MPI-ESM-LR file has no historical pairs).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from .errors import DataError
from .grids import unified_grid
from .methods import METHODS, method_names

__all__ = ["BC_METHODS", "BIAS_GRIDS", "DEFAULT_BIAS_GRID", "BC_GUIDANCE_RES", "UNIFIED_RES", "SUBCELL_WEIGHT",
           "SUBCELL_VARIABLES", "ANOMALY_TARGET", "bias_attrs", "guidance_res", "subcell_climatology", "check_grid",
           "check_trainable", "resolve_grids", "unified_field", "train_bias_correction", "bias_corrected_case"]

#: Bias-aware methods -> the sampler they run after the correction (from :data:`zssd_engine.methods.METHODS`).
BC_METHODS: dict[str, str] = {m: str(METHODS[m].sampler) for m in method_names(bias_corrected=True)}

#: Grids the quantile mapping can work on (:func:`train_bias_correction`).
BIAS_GRIDS: tuple[str, ...] = ("native", "unified")

#: The grid each variable is corrected on by default.  Chosen on training-year cases only
#: (``python benchmarks/bc_grid.py``, ``benchmarks/results/bc_grid.md``), never on a scored case.
DEFAULT_BIAS_GRID: dict[str, str] = {"t2m": "native", "msl": "native", "u10": "native", "v10": "native"}

#: The unified-grid spacing (degrees) zssd-bc guides on, per GCM (:func:`guidance_res`).  Guiding on
#: 2.5° cells instead of the paper's 5° lets guidance use the corrected field's sub-5° detail — where
#: the model's own sub-5° scales are worth following.  Chosen per GCM on its training-year cases only
#: (``python benchmarks/bc_guidance.py``: the spacing with the lower t2m ensemble-mean MAE, 6 cases,
#: 4 members; ``benchmarks/results/bc_guidance_*.md``), as a user would choose it on the GCM's
#: historical run.  Any other source (the ×6/×10/×20 tasks): the paper's 5°.
#: Training-year t2m MAE, 5° / 2.5° (K): IPSL 0.494 / 0.484, MIROC6 0.461 / 0.420, AWI 0.455 / 0.408,
#: MPI-LR 0.468 / 0.438, MPI-HR 0.449 / 0.396; msl and the winds gain too.
BC_GUIDANCE_RES: dict[str, float] = {"IPSL-CM6A-LR": 2.5, "MIROC6": 2.5, "AWI-CM-1-1-MR": 2.5, "MPI-ESM1-2-LR": 2.5,
                                     "MPI-ESM1-2-HR": 2.5}

#: The paper's unified grid (degrees).
UNIFIED_RES = 5.0

_CACHE: "dict[str, OrderedDict[tuple, Any]]" = {g: OrderedDict() for g in BIAS_GRIDS}


def check_grid(grid: str) -> None:
    """Raise ``ValueError`` unless ``grid`` is one of :data:`BIAS_GRIDS`."""
    if grid not in BIAS_GRIDS:
        raise ValueError(f"unknown bias-correction grid {grid!r}; choose from {', '.join(BIAS_GRIDS)}")


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


def train_bias_correction(case, grid: str = "unified"):
    """The quantile mapping of the case's GCM on ``grid`` (trained on training years, cached).

    ``"unified"``: the GCM averaged onto the unified 5° cells covering the region, against the
    reference averaged onto the same cells.  ``"native"``: the GCM's own cells covering the region
    against the reference averaged onto them — BCSD's BC step on BCSD's grid.  Either way the
    reference covers the *whole* cells (not just the region), so edge cells are compared like with
    like, full cell against full cell, and an unbiased input maps onto itself.
    """
    from .gcm import fine_region_for, gcm_field
    from .grids import era5_grid
    from .operators import grid_from_xarray
    from .pipeline import get_world, train_paired_bcsd

    check_grid(grid)
    check_trainable(case)
    world = get_world(case.world_seed)
    cells = _unified_cells(case.fine) if grid == "unified" else grid_from_xarray(case.gcm)
    cover = era5_grid().select(fine_region_for(cells, pad_deg=0.25))[0]

    def one(t):
        hist = gcm_field(case.source_id, t, case.region, world)
        if grid == "unified":
            hist = unified_field(hist, case.fine)
        return hist.expand_dims("time"), world.dataset(t, cover)

    # no detrending: one instantaneous field is corrected, not a multi-year run whose trend must survive
    return train_paired_bcsd(case, _CACHE[grid], one, detrend_years=10 ** 6)


def resolve_grids(grids: Mapping[str, str] | None = None) -> dict[str, str]:
    """The correction grid per variable: :data:`DEFAULT_BIAS_GRID` updated with ``grids`` (checked)."""
    out = {**DEFAULT_BIAS_GRID, **(dict(grids) if grids else {})}
    for g in out.values():
        check_grid(g)
    return out


def _grid_text(grids: Mapping[str, str], variables) -> str:
    return ", ".join(f"{v}: {'native GCM grid' if grids[v] == 'native' else 'unified 5° grid'}" for v in variables)


def guidance_res(case, grids: Mapping[str, str] | None = None) -> float:
    """The unified-grid spacing (degrees) zssd-bc guides on: :data:`BC_GUIDANCE_RES` of the case's GCM, but
    never finer than the corrected field's own cells (the paper's 5° then).

    Finer unified cells than the field's own would pull x̂0 toward a blocky re-projection of it, so a
    5° (×20) field, or any variable corrected on the unified 5° grid, is guided on 5°: an unbiased ×20
    input is then guided exactly as ``zssd`` guides it.
    """
    from .operators import grid_from_xarray

    res = BC_GUIDANCE_RES.get(case.source_id, UNIFIED_RES)
    g = resolve_grids(grids)
    if res >= UNIFIED_RES or any(g[v] == "unified" for v in g if v in case.gcm.data_vars):
        return UNIFIED_RES
    native = grid_from_xarray(case.gcm)
    return res if res >= max(native.dlat, native.dlon) - 1e-6 else UNIFIED_RES


#: Weight λ of the sub-cell climatology term in zssd-bc's guidance (0: off) and the variables it constrains
#: (:mod:`zssd_engine.samplers.subcell`, :func:`subcell_climatology`).
SUBCELL_WEIGHT: float = 1.0
SUBCELL_VARIABLES: tuple[str, ...] = ("t2m",)
#: zssd-bc brings the corrected field of those variables from the GCM's cells to the unified cells as an
#: anomaly from the same climatology (:func:`zssd_engine.samplers.observation.coarse_means`): a GCM cell
#: astride a steep climatological gradient then no longer smears its mean across a unified cell's edge.
#: Chosen on training-year cases (``benchmarks/bc_guidance.py --anomaly-target``).
ANOMALY_TARGET: bool = True


def subcell_climatology(case, variables=SUBCELL_VARIABLES) -> dict[str, np.ndarray]:
    """The reference's fine climatology of the case's calendar month and UTC hour on ``case.fine``, per variable.

    Taken from the correction's own training pairs (:func:`train_bias_correction`, native grid: the
    reference over whole GCM cells at the training times), so it uses no held-out time.
    """
    model = train_bias_correction(case, "native")
    g = model.fine_grid
    li = np.abs(np.asarray(g.lat)[None, :] - np.asarray(case.fine.lat)[:, None]).argmin(1)
    lo = np.abs(np.mod(np.asarray(g.lon)[None, :] - np.asarray(case.fine.lon)[:, None] + 180.0, 360.0)
                - 180.0).argmin(1)
    out = {}
    for v in variables:
        if v in model.fits:
            clim = model.fits[v].clim_fine[case.time.month - 1].reshape(g.shape)
            out[v] = clim[np.ix_(li, lo)]
    return out


def bias_attrs(case, grids: Mapping[str, str] | None = None, unified_res: float | None = None,
               subcell_weight: float | None = None, subcell_terrain_order: int | None = None,
               subcell_res: float | None = None, anomaly_target: bool | None = None) -> dict[str, Any]:
    """Provenance of the correction for an output's attributes (trains it if needed).

    ``unified_res``: the guidance grid actually used (default :func:`guidance_res`); ``subcell_weight``:
    the sub-cell term's λ actually used (default :data:`SUBCELL_WEIGHT`); ``subcell_terrain_order``: its
    basis's terrain order (default 1); ``subcell_res``: its cells (default: the guidance cells).  Order 2 and
    finer cells are sampler options for experiments (``benchmarks/bc_guidance.py``), not defaults;
    ``anomaly_target``: whether the target was regridded as an anomaly (default :data:`ANOMALY_TARGET`).
    """
    check_trainable(case)
    g = resolve_grids(grids)
    vs = [v for v in g if v in case.gcm.data_vars]
    periods = {train_bias_correction(case, g[v]).training_period for v in vs}
    res = guidance_res(case, grids) if unified_res is None else float(unified_res)
    lam = SUBCELL_WEIGHT if subcell_weight is None else float(subcell_weight)
    order = 1 if subcell_terrain_order is None else int(subcell_terrain_order)
    cells = res if subcell_res is None else float(subcell_res)
    anom = ANOMALY_TARGET if anomaly_target is None else bool(anomaly_target)
    regrid = (f"; {', '.join(SUBCELL_VARIABLES)} brought from the GCM's cells to the unified cells as an anomaly "
              "from the training period's climatology of the month and hour" if anom else "")
    sub = (f"; each cell's land/terrain contrast of {', '.join(SUBCELL_VARIABLES)}"
           f"{' (with its curvature in height over relief)' if order == 2 else ''} pulled toward the training "
           f"period's climatology of the month and hour (sub-cell term, λ {lam:g}, on {cells:g}° cells)"
           if lam > 0 else "")
    return {"bias_correction": ("empirical quantile mapping per calendar month and cell (BCSD's BC step) before "
                                f"UCG guidance on the unified {res:g}° grid; {_grid_text(g, vs)}{regrid}{sub}"),
            "bias_correction_grid": ", ".join(f"{v}:{g[v]}" for v in vs),
            "bias_correction_training": "; ".join(sorted(periods)),
            "unified_res": res, "subcell_weight": lam, "subcell_terrain_order": order if lam > 0 else 0,
            "subcell_res": cells if lam > 0 else 0.0, "anomaly_target": int(anom)}


def _mapped(case, grid: str, variables: list[str]) -> xr.Dataset:
    """QM of the case's GCM field on ``grid`` for ``variables`` (those the model was trained on)."""
    model = train_bias_correction(case, grid)
    src = case.gcm if grid == "native" else unified_field(case.gcm, case.fine)
    vs = [v for v in variables if v in model.fits]
    corrected = model.bias_correct(src[list(model.fits)].expand_dims("time")).isel(time=0)
    return xr.Dataset({v: corrected[v].astype(np.float32).assign_attrs(src[v].attrs) for v in vs},
                      coords={k: src[k] for k in ("lat", "lon", "lat_bnds", "lon_bnds") if k in src.coords})


def bias_corrected_case(case, grids: Mapping[str, str] | None = None):
    """A copy of ``case`` whose GCM field is the bias-corrected field Ŷ that guidance pulls toward.

    Each variable is quantile-mapped on its grid (:func:`resolve_grids`): ``"native"`` —
    ``Ŷ = QM(Y)`` on the GCM's own cells, BCSD's BC step where BCSD does it, and UCG then averages Ŷ
    to the unified cells (``A₅ Ŷ``); ``"unified"`` — ``Ŷ = QM(A₅ Y)`` on the unified 5° cells.  When
    every variable is corrected natively Ŷ stays on the native grid; otherwise the natively corrected
    variables are averaged onto the unified cells too, so that one dataset holds them all.

    The copy's ``gcm`` carries the provenance in ``attrs``: ``bias_correction`` (what was done, per
    variable), ``bias_correction_grid`` and ``bias_correction_training`` (the training period).
    """
    g = resolve_grids(grids)
    vs = [v for v in g if v in case.gcm.data_vars]
    parts = {grid: _mapped(case, grid, [v for v in vs if g[v] == grid]) for grid in BIAS_GRIDS
             if any(g[v] == grid for v in vs)}
    if set(parts) == {"native"}:
        out = parts["native"]
    else:
        nat = parts.get("native")
        out = parts["unified"]
        if nat is not None and nat.data_vars:
            out = out.assign({v: a.astype(np.float32) for v, a in unified_field(nat, case.fine).data_vars.items()})
    out = out[[v for v in vs if v in out.data_vars]]
    out.attrs = {**case.gcm.attrs, **bias_attrs(case, g)}
    native = case.gcm.attrs.get("native_grid", "")
    out.attrs["native_grid"] = (f"{native} (bias-corrected)" if set(parts) == {"native"} else
                                f"unified 5° ({native} native, corrected)")
    return dataclasses.replace(case, gcm=out)
