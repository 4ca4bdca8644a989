"""Vanilla DPS (Chung et al. 2023) with the block-averaging operator of the GCM's own grid.

``A = conservative(fine → the GCM's native cells overlapping the region, clipped
to the fine grid's outer bounds)``; the misfit ``‖W^{1/2}(A(x̂0) − Y)‖`` is
measured on that coarse grid against ``Y`` itself (cos φ weights of mean 1,
normalised units).  Edge cells are only partly inside the region: their ``Y``
is the mean over the whole GCM cell while ``A`` averages the part inside — an
honest property of the vanilla method, kept as is.

Reproduced on purpose: at ×20 each fine pixel receives ``1/r² = 1/400`` of a
coarse residual's gradient, so guidance fades; ζ is chosen with the same
protocol as for ZSSD (``benchmarks/tune_guidance.py``), not tuned away.
"""

from __future__ import annotations

from typing import Iterator

import torch

from ..grids import LatLonGrid
from ..operators import conservative
from .common import (
    X0_CLIP,
    GUIDANCE_SCHEDULES, Denoiser, Observation, StepState, default_guidance_scale, expand_conditioning,
    fine_bounds_region, gcm_grid_of, gcm_tensor, guided_loop, native_clipped_grid, obs_weights,
)
from .zssd import check_covers, normalize_obs, validate_common

__all__ = ["native_observation", "sample_dps"]


def native_observation(prior: Denoiser, gcm, fine: LatLonGrid) -> Observation:
    """``(A = conservative(fine → native clipped), y = Y on those cells, W = cos φ)``."""
    native = gcm_grid_of(gcm)
    check_covers(native, fine)
    clipped, li, lo = native_clipped_grid(native, fine)
    Y = gcm_tensor(gcm, prior.variables, li, lo)
    if not bool(torch.isfinite(Y).any()):
        raise ValueError(f"the GCM field {native.name} is all NaN over region {fine_bounds_region(fine)}")
    y_n = normalize_obs(prior, Y)
    unguided = tuple(v for c, v in enumerate(prior.variables) if not bool(torch.isfinite(Y[c]).any()))
    op = conservative(fine, clipped).to(prior.device)
    w = obs_weights(clipped, torch.float32).to(prior.device)
    desc = (f"native: {fine.shape[0]}x{fine.shape[1]} fine -> {clipped.shape[0]}x{clipped.shape[1]} "
            f"{native.name} cells (clipped)")
    return Observation(op, y_n, w, desc, unguided, clipped, {"y_phys": Y})


def sample_dps(prior: Denoiser, gcm, fine: LatLonGrid, static, time_feats, *, steps: int = 100,
               members: int = 1, seed: int = 0, guidance_scale: float | None = None,
               guidance_schedule: str = "constant", eta: float = 1.0,
               x0_clip: float | None = X0_CLIP, min_alpha_bar: float | None = None) -> Iterator[StepState]:
    """Vanilla DPS posterior samples; parameters as :func:`engine.samplers.zssd.sample_zssd`."""
    validate_common(prior, fine, steps, members, eta)
    if guidance_schedule not in GUIDANCE_SCHEDULES:
        raise ValueError(f"unknown guidance schedule {guidance_schedule!r}; "
                         f"choose from {', '.join(GUIDANCE_SCHEDULES)}")
    obs = native_observation(prior, gcm, fine)
    static_b, tf_b = expand_conditioning(prior, static, time_feats, members, fine.shape)
    zeta = default_guidance_scale("dps", steps) if guidance_scale is None else float(guidance_scale)
    return guided_loop(prior, obs, static_b, tf_b, fine.shape, steps=steps, members=members, seed=seed,
                       guidance_scale=zeta, guidance_schedule=guidance_schedule, eta=eta, method="dps",
                       x0_clip=x0_clip, min_alpha_bar=min_alpha_bar)
