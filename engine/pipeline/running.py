"""Running a method: a diffusion sampler's step generator (:func:`sampler`) or a whole run (:func:`run_method`)."""

from __future__ import annotations

import time as _time
from typing import Any, Iterator, Sequence

import xarray as xr

from ..methods import METHODS as METHOD_REGISTRY, is_guided, sampler_name
from .case import BASELINES, GUIDED_METHODS, Case, check_method
from .classical import baseline
from .monthly import check_monthly_method, is_monthly, member_conditioning
from .results import baseline_result, result_dataset

__all__ = ["sampler", "run_method", "guidance_default"]


def sampler(case: Case, prior, method: str, steps: int = 100, members: int = 1, seed: int = 0,
            guidance_scale: float | None = None, **kw) -> Iterator:
    """A generator of :class:`zssd_engine.samplers.StepState` for a diffusion method.

    Extra keywords go to the sampler (``guidance_schedule``, ``eta``; DDRM: ``eta``, ``eta_b``,
    ``sigma_y``).  Validation happens now, before any step is computed.
    """
    from ..samplers import get_sampler

    if method in BASELINES:
        raise ValueError(f"{method!r} is a baseline, not a sampler; use pipeline.baseline()")
    from ..bias_correction import (ANOMALY_TARGET, BC_METHODS, SUBCELL_WEIGHT, bias_corrected_case, guidance_res,
                                   subcell_climatology)

    if method in BC_METHODS:  # correct Y's bias on its cells, then guide as usual (on finer unified cells)
        if BC_METHODS[method] == "zssd":
            kw.setdefault("unified_res", guidance_res(case))
            kw.setdefault("subcell_weight", SUBCELL_WEIGHT)
            clim = kw.get("subcell_climatology") or subcell_climatology(case)  # the month's and hour's, same pairs
            if kw["subcell_weight"] > 0:  # each cell's land/terrain contrast pulled toward it
                kw.setdefault("subcell_climatology", clim)
            if ANOMALY_TARGET:  # Y reaches the unified cells as an anomaly from it
                kw.setdefault("target_climatology", clim)
        case, method = bias_corrected_case(case), BC_METHODS[method]
    fn = get_sampler(method)
    if is_guided(method):  # None: the tuned ζ of this prior for this kind of input
        kw["guidance_scale"] = (guidance_default(method, steps, prior, case) if guidance_scale is None
                                else guidance_scale)
    elif guidance_scale is not None and method in METHOD_REGISTRY:  # ddrm: the registered unguided sampler
        raise ValueError(f"{method} takes no guidance scale (it projects onto the data); use sigma_y/eta_b")
    static, time_feats = case.static, case.time_feats
    if is_monthly(case):  # members drawn through the month, their mean guided (pipeline.monthly)
        check_monthly_method(case, method)
        static, time_feats, _ = member_conditioning(case, members)
        kw["guide_mean"] = True
    return fn(prior, case.gcm, case.fine, static, time_feats, steps=steps, members=members, seed=seed, **kw)


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
        guidance_scale = guidance_default(method, steps, prior, case)
    from ..bias_correction import BC_METHODS, bias_attrs

    anom = None if "target_climatology" not in kw else kw["target_climatology"] is not None  # None: the default
    extra = (bias_attrs(case, unified_res=kw.get("unified_res"), subcell_weight=kw.get("subcell_weight"),
                        subcell_terrain_order=kw.get("subcell_terrain_order"), subcell_res=kw.get("subcell_res"),
                        anomaly_target=anom) if method in BC_METHODS else {})
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


def guidance_default(method: str, steps: int, prior=None, domain: str | Case = "demo",
                     with_source: bool = False) -> float | tuple[float, Any]:
    """The tuned ζ for a guided method (``zssd-bc`` guides like ``zssd``).

    ``prior``: the prior that will sample (its own table; ``None``: the shipped prior's); ``domain``:
    ``"demo"``, ``"real"`` or a :class:`Case` (its :attr:`Case.domain`).  ``with_source=True`` also returns
    the :class:`zssd_engine.samplers.guidance_table.TunedSource` (``None`` for the built-in fallback).  See
    :func:`zssd_engine.samplers.default_guidance_scale`.
    """
    from ..samplers.guidance_table import lookup

    dom = domain.domain if isinstance(domain, Case) else domain
    z, source = lookup(sampler_name(method), steps, getattr(prior, "sha256", None), dom)
    return (z, source) if with_source else z
