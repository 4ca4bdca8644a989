"""Posterior samplers over the prior's denoiser: ZSSD (Unified Coordinate Guidance), vanilla DPS, DDRM.

Modules: :mod:`~zssd_engine.samplers.contract` (the denoiser contract, :class:`StepState`),
:mod:`~zssd_engine.samplers.observation` (grids, GCM values, :class:`Observation`),
:mod:`~zssd_engine.samplers.respacing` (timesteps, the ancestral step), :mod:`~zssd_engine.samplers.inputs`
(checks shared by every sampler), :mod:`~zssd_engine.samplers.guidance` (:func:`dps_correction`,
:func:`guided_loop`), :mod:`~zssd_engine.samplers.guidance_table` (the tuned ζ), :mod:`~zssd_engine.samplers.trajectory`
(recording a run), and one module per method: :mod:`~zssd_engine.samplers.zssd`, :mod:`~zssd_engine.samplers.dps`,
:mod:`~zssd_engine.samplers.ddrm`.

Every sampler is called as ``sample_X(prior, gcm, fine, static, time_feats, *, steps, members, seed, …)``,
validates its input eagerly (``ValueError``/``GridError`` before any computation) and returns a generator of
:class:`StepState` (the last one is the result; ``.close()`` cancels).
"""

from __future__ import annotations

from typing import Callable, Iterator

from ..grids import LatLonGrid
from .contract import X0_CLIP, Denoiser, StepState
from .ddrm import KroneckerSVD, sample_ddrm
from .dps import native_observation, sample_dps
from .guidance import GUIDANCE_SCHEDULES, dps_correction, guided_loop
from .guidance_table import DEFAULT_GUIDANCE, default_guidance_scale
from .inputs import expand_conditioning, validate_common
from .observation import Observation, native_clipped_grid, ucg_coarse_grid
from .respacing import MAX_STEPS, MIN_ALPHA_BAR, check_steps, respaced_timesteps, start_timestep
from .trajectory import Frame, Trajectory, record_trajectory
from .zssd import sample_zssd, zssd_observation

__all__ = [
    "StepState", "Observation", "Trajectory", "Frame", "Denoiser", "record_trajectory", "sample_zssd",
    "sample_dps", "sample_ddrm", "sample_unconditional", "SAMPLERS", "get_sampler", "default_guidance_scale",
    "DEFAULT_GUIDANCE", "GUIDANCE_SCHEDULES", "MAX_STEPS", "KroneckerSVD", "zssd_observation",
    "native_observation", "ucg_coarse_grid", "native_clipped_grid", "respaced_timesteps", "check_steps",
    "start_timestep", "MIN_ALPHA_BAR", "X0_CLIP", "dps_correction",
]


def sample_unconditional(prior: Denoiser, gcm, fine: LatLonGrid, static, time_feats, *, steps: int = 100,
                         members: int = 1, seed: int = 0, eta: float = 1.0, x0_clip: float | None = X0_CLIP,
                         min_alpha_bar: float | None = None, **_ignored) -> Iterator[StepState]:
    """Unguided ancestral sampling from the prior (``gcm`` is ignored; the same signature as the others)."""
    validate_common(prior, fine, steps, members, eta)
    static_b, tf_b = expand_conditioning(prior, static, time_feats, members, fine.shape)
    return guided_loop(prior, None, static_b, tf_b, fine.shape, steps=steps, members=members, seed=seed,
                       guidance_scale=0.0, eta=eta, method="unconditional", x0_clip=x0_clip,
                       min_alpha_bar=min_alpha_bar)


#: Diffusion samplers by method name (the baselines live in :mod:`zssd_engine.baselines`).
SAMPLERS: dict[str, Callable[..., Iterator[StepState]]] = {
    "zssd": sample_zssd,
    "dps": sample_dps,
    "ddrm": sample_ddrm,
    "unconditional": sample_unconditional,
}


def get_sampler(method: str) -> Callable[..., Iterator[StepState]]:
    """The sampler function for ``method`` (``ValueError`` naming the choices otherwise)."""
    try:
        return SAMPLERS[method]
    except KeyError:
        raise ValueError(f"unknown sampling method {method!r}; choose from {', '.join(SAMPLERS)}") from None
