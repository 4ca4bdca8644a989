"""The respaced chain a sampler walks: its timesteps and one ancestral step.

Timesteps are integers in ``[0, T)`` of the prior's training schedule (``T = len(alphas_cumprod)``,
1000 for the demo prior).  A run of ``n`` steps uses an evenly spaced subset (Nichol & Dhariwal
2021 respacing): ``ᾱ`` at the subset, ``β'_i = 1 − ᾱ_i/ᾱ_{i−1}``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .contract import Denoiser

__all__ = ["MAX_STEPS", "MIN_ALPHA_BAR", "check_steps", "start_timestep", "respaced_timesteps",
           "alphas_cumprod_of", "ddim_step"]

#: Upper limit of ``steps`` (the demo prior is trained with T = 1000).
MAX_STEPS = 1000

#: Sampling starts at the last timestep whose ᾱ is at least this (σ = sqrt((1−ᾱ)/ᾱ) ≤ 31.6); see
#: :func:`respaced_timesteps`.
MIN_ALPHA_BAR = 1e-3


def check_steps(steps: int, T: int = MAX_STEPS) -> int:
    """Validate a step count: an integer in ``[1, T]`` (``ValueError`` otherwise); returns it as ``int``."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise ValueError(f"steps must be an integer, got {steps!r}")
    if steps <= 0:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if steps > T:
        raise ValueError(f"steps must be at most {T} (the prior's training schedule has {T} timesteps), got {steps}")
    return int(steps)


def start_timestep(alphas_cumprod, min_alpha_bar: float | None = None) -> int:
    """The largest ``t`` with ``ᾱ_t ≥ min_alpha_bar`` (default :data:`MIN_ALPHA_BAR`; ``T − 1`` if ``<= 0``)."""
    if min_alpha_bar is None:
        min_alpha_bar = MIN_ALPHA_BAR
    ab = np.asarray(alphas_cumprod.detach().cpu() if isinstance(alphas_cumprod, torch.Tensor) else alphas_cumprod,
                    dtype=np.float64)
    if min_alpha_bar <= 0:
        return int(ab.size - 1)
    ok = np.nonzero(ab >= min_alpha_bar)[0]
    return int(ok.max()) if ok.size else 0


def respaced_timesteps(n_steps: int, T: int, t_start: int | None = None) -> list[int]:
    """Evenly spaced training timesteps, descending from ``t_start`` (default ``T − 1``) to ``0``.

    With ``t_start = T − 1`` this is :func:`zssd_engine.prior.schedule.respace`.  The samplers pass
    :func:`start_timestep`: at the first timesteps of a cosine schedule ᾱ is ~1e-9, and an
    ε-network's clean estimate ``x̂0 = (x_t − sqrt(1−ᾱ) ε̂)/sqrt(ᾱ)`` carries its ε error times
    ``σ_t = sqrt((1−ᾱ)/ᾱ)`` (≈ 2·10⁴ at t = 999): the first ancestral step would inject it.
    Below ``ᾱ = 10⁻³`` the signal in ``x_t`` (``sqrt(ᾱ)·x0 ≤ 0.03 x0``) is negligible, so starting
    from ``N(0, I)`` at ``t_start`` samples the same distribution (as diffusers' "leading" spacing).
    """
    from ..prior.schedule import respace

    check_steps(n_steps, T)
    if t_start is None or t_start >= T - 1 or n_steps > t_start + 1:
        # (more steps than timesteps below t_start: the full chain, whose first steps are tiny)
        return [int(t) for t in respace(n_steps, T)]
    t_start = int(t_start)
    if n_steps == 1:
        return [t_start]
    return [int(t) for t in np.round(np.linspace(t_start, 0, n_steps)).astype(int)]


def alphas_cumprod_of(prior: Denoiser) -> np.ndarray:
    """The prior's ``ᾱ_t`` as a float64 NumPy array ``(T,)``."""
    ab = prior.schedule.alphas_cumprod
    if isinstance(ab, torch.Tensor):
        ab = ab.detach().to("cpu", torch.float64).numpy()
    return np.asarray(ab, dtype=np.float64)


def ddim_step(x_t: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, a_t: float, a_prev: float, eta: float,
              noise: torch.Tensor | None) -> torch.Tensor:
    """One respaced ancestral step ``x_t → x_{t_prev}`` (Song et al. 2021, eq. 12).

    With ``η = 1`` this is exactly the DDPM posterior ``q(x_{t−1} | x_t, x̂0)`` of the
    respaced chain (mean ``(√ᾱ_prev β'/(1−ᾱ_t)) x̂0 + (√α'(1−ᾱ_prev)/(1−ᾱ_t)) x_t``,
    variance ``β' (1−ᾱ_prev)/(1−ᾱ_t)``); ``η = 0`` is deterministic DDIM.  ``a_prev = 1``
    (the last step) returns ``x̂0``; ``noise=None`` adds no noise.
    """
    if a_prev >= 1.0:
        return x0
    var = eta ** 2 * (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev)
    sig = math.sqrt(max(var, 0.0))
    c = math.sqrt(max(1.0 - a_prev - var, 0.0))
    out = math.sqrt(a_prev) * x0 + c * eps
    if sig > 0 and noise is not None:
        out = out + sig * noise
    return out
