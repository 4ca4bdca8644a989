"""ZSSD: diffusion posterior sampling with Unified Coordinate Guidance (Tie & Xiong 2026).

The GCM field ``Y`` (native grid, any resolution) and the prior's clean
estimate ``x̂0`` (0.25°) are compared on a *common* coordinate system: both
are averaged conservatively onto the unified 5° cells covering the region and
re-projected bilinearly to 0.25°, so the residual lives on fine pixels and its
gradient reaches every one of them with the same strength whatever the GCM's
resolution (with block averaging alone each fine pixel would receive ``1/r²``
of a coarse residual's gradient — why vanilla DPS fades at ×20).

* Fine grid: the ERA5 0.25° cells of the region.
* Coarse grid: ``unified_grid().covering(region)`` with the cells' bounds
  clipped to the fine grid's outer bounds, so the means of ``Y`` and of
  ``x̂0`` in every cell cover exactly the same area.
* ``A_high = bilinear(coarse → fine) ∘ conservative(fine → coarse)``
  (:func:`zssd_engine.operators.ucg_operator`).
* ``y_high = bilinear(coarse → fine)(conservative(native → coarse)(Y))``
  (NaN-aware; ``zssd-bc`` regrids t2m as an anomaly from the training climatology,
  :func:`zssd_engine.samplers.observation.coarse_means`).
* Each step (Chung et al. 2023, Alg. 1; :func:`zssd_engine.samplers.guidance.dps_correction`):
  ``x_{t'} = DDPM_step(x_t, ε_θ) − ζ_t ∇_{x_t} ‖W^{1/2}(A_high(x̂0(x_t)) − y_high)‖`` with ``W``
  the cos φ weights (mean 1), in the prior's normalised units; variables missing from ``Y``
  (e.g. ``msl`` in the real MPI-ESM-LR file) are left unguided.
"""

from __future__ import annotations

from typing import Iterator

import torch

from ..grids import UNIFIED_RES, LatLonGrid
from ..operators import bilinear, ucg_operator
from .contract import X0_CLIP, Denoiser, StepState
from .guidance import check_guidance_schedule, run_guided
from .inputs import validate_common
from .observation import (
    Observation, check_covers, coarse_means, gcm_grid_of, gcm_values, normalize_obs, obs_weights, ucg_coarse_grid,
)

__all__ = ["zssd_observation", "sample_zssd"]


def zssd_observation(prior: Denoiser, gcm, fine: LatLonGrid, unified_res: float | None = None,
                     subcell_climatology: dict | None = None, subcell_weight: float = 0.0,
                     subcell_terrain_order: int = 1, subcell_res: float | None = None,
                     target_climatology: dict | None = None) -> Observation:
    """Build the Unified Coordinate Guidance observation ``(A_high, y_high, W)`` for a GCM field.

    With ``subcell_climatology`` (variable → physical ``(H, W)`` climatology on ``fine``) and
    ``subcell_weight`` λ > 0, the observation also pulls each unified cell's land/terrain contrast toward
    the climatology's (:class:`~zssd_engine.samplers.subcell.SubcellObservation`); ``subcell_terrain_order``
    2 adds a row for the curvature of temperature with height (:func:`~zssd_engine.samplers.subcell.subcell_basis`);
    ``subcell_res`` puts the term on finer unified cells than the guidance's (nested in them, so the term still
    leaves every guidance cell's mean alone; default: the guidance cells).  With ``target_climatology``
    (variable → physical ``(H, W)`` field on ``fine``) those variables reach the unified cells as anomalies
    from it (:func:`~zssd_engine.samplers.observation.coarse_means`).
    """
    coarse = ucg_coarse_grid(fine, unified_res)
    native = gcm_grid_of(gcm)
    check_covers(native, fine)
    Y, unguided = gcm_values(prior, gcm, native, fine)
    y_coarse = coarse_means(Y, native, coarse, fine, prior.variables, target_climatology)
    y_high = bilinear(coarse, fine, dtype=torch.float64).masked(y_coarse)
    y_n = normalize_obs(prior, y_high)
    op = ucg_operator(fine, coarse).to(prior.device)
    w = obs_weights(fine, torch.float32).to(prior.device)
    desc = (f"UCG: {native.name} {native.shape[0]}x{native.shape[1]} -> {coarse.shape[0]}x{coarse.shape[1]} "
            f"unified cells (clipped) -> {fine.shape[0]}x{fine.shape[1]} fine")
    obs = Observation(op, y_n, w, desc, unguided, coarse, {"y_coarse": y_coarse})
    if subcell_climatology and subcell_weight > 0:
        from ..statics import load_statics
        from .subcell import SubcellObservation, SubcellTerm

        dem, land = load_statics().region(fine)
        cells = coarse if subcell_res is None else _nested_cells(fine, unified_res or UNIFIED_RES, subcell_res)
        term = SubcellTerm.build(prior, fine, cells, subcell_climatology, dem, land, subcell_weight,
                                 subcell_terrain_order)
        obs = SubcellObservation(obs, term)
    return obs


def _nested_cells(fine: LatLonGrid, guidance_res: float, res: float) -> LatLonGrid:
    """Unified cells of ``res`` nested in the guidance cells of ``guidance_res`` (a multiple of ``res``)."""
    ratio = guidance_res / res if res > 0 else 0.0
    if round(ratio) < 1 or abs(ratio - round(ratio)) > 1e-6:
        raise ValueError(f"subcell_res {res:g}° must divide the guidance cells' {guidance_res:g}° (e.g. "
                         f"{guidance_res / 2:g}°), so that the sub-cell term leaves every guidance cell's mean alone")
    return ucg_coarse_grid(fine, res)


def sample_zssd(prior: Denoiser, gcm, fine: LatLonGrid, static, time_feats, *, steps: int = 100,
                members: int = 1, seed: int = 0, guidance_scale: float | None = None,
                guidance_schedule: str = "constant", eta: float = 1.0,
                unified_res: float | None = None, x0_clip: float | None = X0_CLIP,
                min_alpha_bar: float | None = None, guide_mean: bool = False,
                subcell_climatology: dict | None = None, subcell_weight: float = 0.0,
                subcell_terrain_order: int = 1, subcell_res: float | None = None,
                target_climatology: dict | None = None) -> Iterator[StepState]:
    """ZSSD posterior samples of the 0.25° fields given a GCM field.

    Parameters
    ----------
    prior
        The denoiser (:class:`zssd_engine.prior.model.Prior`).
    gcm
        ``xr.Dataset`` on the GCM's native cells covering the region (:func:`zssd_engine.gcm.gcm_field`).
    fine
        The 0.25° grid of the region (``era5_grid().select(region)[0]``).
    static, time_feats
        Conditioning: ``(S, H, W)`` static channels and ``(F,)`` time features, or one row per
        member (``(members, S, H, W)``, ``(members, F)``).
    steps, members, seed
        Respaced steps (1–1000), ensemble size (one batch), RNG seed.
    guidance_scale
        ζ; ``None`` takes :func:`default_guidance_scale` ("zssd", steps).
    guidance_schedule
        ``"constant"`` or ``"noise"`` (ζ·sqrt(1 − ᾱ_t)).
    eta
        DDIM η (1 = DDPM ancestral step).
    unified_res
        Resolution of the unified grid (default 5°, the paper's).
    x0_clip
        Clamp of ``x̂0`` in normalised units (``None``: off); see :func:`zssd_engine.samplers.contract.denoise`.
    min_alpha_bar
        The chain starts at the last timestep with ``ᾱ ≥ min_alpha_bar`` (default
        :data:`zssd_engine.samplers.respacing.MIN_ALPHA_BAR`); see :func:`zssd_engine.samplers.respacing.respaced_timesteps`.
    guide_mean
        Guide the ensemble mean, not each member (a monthly-mean ``gcm`` with members drawn at times
        spread over the month, each with its own ``static``/``time_feats`` row); see
        :func:`zssd_engine.samplers.guidance.guided_loop`.
    subcell_climatology, subcell_weight, subcell_terrain_order, subcell_res
        A climatological constraint on each unified cell's land/terrain contrast (variable → physical
        ``(H, W)`` field on ``fine``), its weight λ (0: off), whether it also constrains the curvature in
        height (2) or not (1), and the cells it acts on (default: the guidance's; a finer resolution must
        divide theirs); :mod:`zssd_engine.samplers.subcell`.
    target_climatology
        Variable → physical ``(H, W)`` climatology on ``fine``: those variables of ``gcm`` reach the unified
        cells as anomalies from it (:func:`~zssd_engine.samplers.observation.coarse_means`; ``None``: as is).

    Returns
    -------
    Iterator[StepState]
        A generator; all input checks run *before* it is returned (``ValueError``/``GridError``).
    """
    validate_common(prior, fine, steps, members, eta)
    check_guidance_schedule(guidance_schedule)
    obs = zssd_observation(prior, gcm, fine, unified_res, subcell_climatology, subcell_weight, subcell_terrain_order,
                           subcell_res, target_climatology)
    return run_guided(prior, obs, static, time_feats, fine, method="zssd", steps=steps, members=members, seed=seed,
                      guidance_scale=guidance_scale, guidance_schedule=guidance_schedule, eta=eta, x0_clip=x0_clip,
                      min_alpha_bar=min_alpha_bar, guide_mean=guide_mean)
