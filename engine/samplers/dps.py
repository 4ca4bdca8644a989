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
from .contract import X0_CLIP, Denoiser, StepState
from .guidance import check_guidance_schedule, run_guided
from .inputs import validate_common
from .observation import (
    Observation, check_covers, gcm_grid_of, gcm_values, native_clipped_grid, normalize_obs, obs_weights,
)

__all__ = ["native_observation", "sample_dps"]


def native_observation(prior: Denoiser, gcm, fine: LatLonGrid) -> Observation:
    """``(A = conservative(fine → native clipped), y = Y on those cells, W = cos φ)``."""
    native = gcm_grid_of(gcm)
    check_covers(native, fine)
    clipped, li, lo = native_clipped_grid(native, fine)
    Y, unguided = gcm_values(prior, gcm, native, fine, li, lo)
    y_n = normalize_obs(prior, Y)
    op = conservative(fine, clipped).to(prior.device)
    w = obs_weights(clipped, torch.float32).to(prior.device)
    desc = (f"native: {fine.shape[0]}x{fine.shape[1]} fine -> {clipped.shape[0]}x{clipped.shape[1]} "
            f"{native.name} cells (clipped)")
    return Observation(op, y_n, w, desc, unguided, clipped, {"y_phys": Y})


def sample_dps(prior: Denoiser, gcm, fine: LatLonGrid, static, time_feats, *, steps: int = 100,
               members: int = 1, seed: int = 0, guidance_scale: float | None = None,
               guidance_schedule: str = "constant", eta: float = 1.0,
               x0_clip: float | None = X0_CLIP, min_alpha_bar: float | None = None,
               guide_mean: bool = False) -> Iterator[StepState]:
    """Vanilla DPS posterior samples; parameters as :func:`zssd_engine.samplers.zssd.sample_zssd`."""
    validate_common(prior, fine, steps, members, eta)
    check_guidance_schedule(guidance_schedule)
    obs = native_observation(prior, gcm, fine)
    return run_guided(prior, obs, static, time_feats, fine, method="dps", steps=steps, members=members, seed=seed,
                      guidance_scale=guidance_scale, guidance_schedule=guidance_schedule, eta=eta, x0_clip=x0_clip,
                      min_alpha_bar=min_alpha_bar, guide_mean=guide_mean)
