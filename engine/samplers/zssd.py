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
  (:func:`engine.operators.ucg_operator`).
* ``y_high = bilinear(coarse → fine)(conservative(native → coarse)(Y))``
  (NaN-aware).
* Each step (Chung et al. 2023, Alg. 1): ``x_{t'} = DDPM_step(x_t, ε_θ) −
  ζ ∇_{x_t} ‖W^{1/2}(A_high(x̂0(x_t)) − y_high)‖`` with ``W`` the cos φ weights
  (mean 1), in the prior's normalised units; variables missing from ``Y``
  (e.g. ``msl`` in the real MPI-ESM-LR file) are left unguided.
"""

from __future__ import annotations

from typing import Iterator

import torch

from ..grids import GridError, LatLonGrid
from ..operators import bilinear, conservative, ucg_operator
from .common import (
    X0_CLIP,
    Denoiser, Observation, StepState, check_prior_size, check_steps, default_guidance_scale, expand_conditioning,
    fine_bounds_region, gcm_grid_of, gcm_tensor, guided_loop, obs_weights, ucg_coarse_grid, GUIDANCE_SCHEDULES,
    _alphas_cumprod,
)

__all__ = ["zssd_observation", "sample_zssd", "check_covers", "normalize_obs", "validate_common"]


def check_covers(native: LatLonGrid, fine: LatLonGrid, what: str = "the GCM field") -> None:
    """Raise :class:`GridError` unless ``native``'s cells span the fine grid's area."""
    nlb, flb = native.lat_bounds, fine.lat_bounds
    n_lo, n_hi = min(nlb[0], nlb[-1]), max(nlb[0], nlb[-1])
    f_lo, f_hi = min(flb[0], flb[-1]), max(flb[0], flb[-1])
    ok_lat = n_lo <= f_lo + 1e-6 and n_hi >= f_hi - 1e-6
    span = native.lon_bounds[-1] - native.lon_bounds[0]
    if native.is_global_lon:
        ok_lon = True
    else:
        off = 360.0 * round((fine.lon_bounds[0] - native.lon_bounds[0]) / 360.0)
        w = native.lon_bounds[0] + off
        ok_lon = (w <= fine.lon_bounds[0] + 1e-6 and w + span >= fine.lon_bounds[-1] - 1e-6) or (
            w - 360.0 <= fine.lon_bounds[0] + 1e-6 and w - 360.0 + span >= fine.lon_bounds[-1] - 1e-6)
    if not (ok_lat and ok_lon):
        raise GridError(f"{what} ({native.name}, lat {n_lo:g}..{n_hi:g}, lon {native.lon_bounds[0]:g}.."
                        f"{native.lon_bounds[-1]:g}) does not cover region {fine_bounds_region(fine)}")


def normalize_obs(prior: Denoiser, y_phys: torch.Tensor) -> torch.Tensor:
    """Physical ``(C, h, w)`` → the prior's normalised units (NaN stays NaN), float32 on the prior's device."""
    y = y_phys.to(device=prior.device, dtype=torch.float32)
    with torch.no_grad():
        return prior.normalize(y[None])[0]


def validate_common(prior: Denoiser, fine: LatLonGrid, steps: int, members: int, eta: float) -> None:
    """Checks shared by every sampler, before any computation."""
    check_steps(steps, int(_alphas_cumprod(prior).size))
    if isinstance(members, bool) or int(members) != members or members < 1:
        raise ValueError(f"members must be a positive integer, got {members!r}")
    if not (0.0 <= float(eta) <= 1.0):
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    check_prior_size(prior, fine)


def zssd_observation(prior: Denoiser, gcm, fine: LatLonGrid, unified_res: float | None = None) -> Observation:
    """Build the Unified Coordinate Guidance observation ``(A_high, y_high, W)`` for a GCM field."""
    coarse = ucg_coarse_grid(fine, unified_res)
    native = gcm_grid_of(gcm)
    check_covers(native, fine)
    Y = gcm_tensor(gcm, prior.variables)
    if not bool(torch.isfinite(Y).any()):
        raise ValueError(f"the GCM field {native.name} is all NaN over region {fine_bounds_region(fine)}")
    to_coarse = conservative(native, coarse, dtype=torch.float64)
    y_coarse = to_coarse.masked(Y)
    y_high = bilinear(coarse, fine, dtype=torch.float64).masked(y_coarse)
    y_n = normalize_obs(prior, y_high)
    unguided = tuple(v for c, v in enumerate(prior.variables) if not bool(torch.isfinite(Y[c]).any()))
    op = ucg_operator(fine, coarse).to(prior.device)
    w = obs_weights(fine, torch.float32).to(prior.device)
    desc = (f"UCG: {native.name} {native.shape[0]}x{native.shape[1]} -> {coarse.shape[0]}x{coarse.shape[1]} "
            f"unified cells (clipped) -> {fine.shape[0]}x{fine.shape[1]} fine")
    return Observation(op, y_n, w, desc, unguided, coarse, {"y_coarse": y_coarse})


def sample_zssd(prior: Denoiser, gcm, fine: LatLonGrid, static, time_feats, *, steps: int = 100,
                members: int = 1, seed: int = 0, guidance_scale: float | None = None,
                guidance_schedule: str = "constant", eta: float = 1.0,
                unified_res: float | None = None, x0_clip: float | None = X0_CLIP,
                min_alpha_bar: float | None = None) -> Iterator[StepState]:
    """ZSSD posterior samples of the 0.25° fields given a GCM field.

    Parameters
    ----------
    prior
        The denoiser (:class:`engine.prior.model.Prior`).
    gcm
        ``xr.Dataset`` on the GCM's native cells covering the region (:func:`engine.gcm.gcm_field`).
    fine
        The 0.25° grid of the region (``era5_grid().select(region)[0]``).
    static, time_feats
        Conditioning: ``(S, H, W)`` static channels and ``(F,)`` time features.
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
        Clamp of ``x̂0`` in normalised units (``None``: off); see :func:`engine.samplers.common.denoise`.
    min_alpha_bar
        The chain starts at the last timestep with ``ᾱ ≥ min_alpha_bar`` (default
        :data:`engine.samplers.common.MIN_ALPHA_BAR`); see :func:`engine.samplers.common.respaced_timesteps`.

    Returns
    -------
    Iterator[StepState]
        A generator; all input checks run *before* it is returned (``ValueError``/``GridError``).
    """
    validate_common(prior, fine, steps, members, eta)
    if guidance_schedule not in GUIDANCE_SCHEDULES:
        raise ValueError(f"unknown guidance schedule {guidance_schedule!r}; "
                         f"choose from {', '.join(GUIDANCE_SCHEDULES)}")
    obs = zssd_observation(prior, gcm, fine, unified_res)
    static_b, tf_b = expand_conditioning(prior, static, time_feats, members, fine.shape)
    zeta = default_guidance_scale("zssd", steps) if guidance_scale is None else float(guidance_scale)
    return guided_loop(prior, obs, static_b, tf_b, fine.shape, steps=steps, members=members, seed=seed,
                       guidance_scale=zeta, guidance_schedule=guidance_schedule, eta=eta, method="zssd",
                       x0_clip=x0_clip, min_alpha_bar=min_alpha_bar)
