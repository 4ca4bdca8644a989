"""Guided ancestral sampling: the DPS/UCG gradient step and the loop that applies it.

ZSSD (Unified Coordinate Guidance) and vanilla DPS share this loop and differ only in their
:class:`~zssd_engine.samplers.observation.Observation`; ``obs=None`` or ``ζ = 0`` is unguided
ancestral sampling.  Samplers are Python generators yielding one
:class:`~zssd_engine.samplers.contract.StepState` per step; the last one holds the result.  Closing
the generator (``.close()``) stops the run; randomness comes from one seeded
:class:`torch.Generator`.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch

from ..grids import LatLonGrid
from .contract import X0_CLIP, Denoiser, StepState, denoise
from .guidance_table import default_guidance_scale
from .inputs import expand_conditioning, make_generator
from .observation import Observation
from .respacing import alphas_cumprod_of, ddim_step, respaced_timesteps, start_timestep

__all__ = ["GUIDANCE_SCHEDULES", "REFERENCE_PIXELS", "effective_scale", "guidance_factor",
           "check_guidance_schedule", "dps_correction", "guided_loop", "run_guided"]

GUIDANCE_SCHEDULES = ("constant", "noise")
#: Guidance scales are quoted for a region of this many 0.25° pixels (128 x 128, the evaluation size).
REFERENCE_PIXELS = 128 * 128


def effective_scale(zeta: float, shape: tuple[int, int]) -> float:
    """ζ applied to an ``H x W`` region: ``ζ · sqrt(H·W / 128²)``.

    With the unsquared norm the gradient ``∇‖r‖`` has O(1) total size spread over
    ``H·W`` pixels, so each pixel moves by ``∝ ζ/sqrt(H·W)``; this rescaling keeps the
    per-pixel step — and so one tuned ζ — independent of the region size (for ZSSD,
    DPS and every GCM resolution alike).
    """
    return float(zeta) * math.sqrt(shape[0] * shape[1] / REFERENCE_PIXELS)


def check_guidance_schedule(schedule: str) -> None:
    """Raise ``ValueError`` unless ``schedule`` is one of :data:`GUIDANCE_SCHEDULES`."""
    if schedule not in GUIDANCE_SCHEDULES:
        raise ValueError(f"unknown guidance schedule {schedule!r}; choose from {', '.join(GUIDANCE_SCHEDULES)}")


def guidance_factor(schedule: str, a_t: float) -> float:
    """The schedule-dependent factor ``s(t)`` of ζ_t: 1 (``"constant"``) or ``sqrt(1 − ᾱ_t)`` (``"noise"``)."""
    if schedule == "constant":
        return 1.0
    if schedule == "noise":
        return math.sqrt(1.0 - a_t)
    raise ValueError(f"unknown guidance schedule {schedule!r}; choose from {', '.join(GUIDANCE_SCHEDULES)}")


def dps_correction(x_prime: torch.Tensor, x_t: torch.Tensor, misfit: torch.Tensor,
                   zeta_t: float) -> tuple[torch.Tensor, float]:
    """The DPS/UCG guidance step (Chung et al. 2023, Alg. 1, line 7) as :func:`guided_loop` applies it.

    .. math::

        x_{t'} \\leftarrow x'_{t'} - \\zeta_t \\, \\nabla_{x_t}
            \\sum_b \\big\\| W^{1/2} \\big(y - A(\\hat x_0(x_t))\\big) \\big\\|_b ,
        \\qquad \\zeta_t = \\zeta \\sqrt{H W / 128^2} \\; s(t)

    i.e. ``x_{t−1} ← x'_{t−1} − ζ_t ∇_{x_t} ‖W^{1/2}(y − A(x̂0(x_t)))‖`` where, exactly as the code does:

    * ``x'_{t'}`` (``x_prime``) is the unguided respaced ancestral step from ``x_t`` to the next
      timestep ``t'`` of the respaced chain (:func:`~zssd_engine.samplers.respacing.ddim_step`; DDPM for
      η = 1), built from the same ``(ε̂, x̂0)``; ``t'`` is the paper's ``t − 1``.
    * ``x̂0(x_t) = (x_t − sqrt(1 − ᾱ_t) ε_θ(x_t, t)) / sqrt(ᾱ_t)``, clamped to ``±x0_clip``
      (:func:`~zssd_engine.samplers.contract.denoise`); the gradient flows back through the clamp
      and the network.
    * ``‖·‖_b`` is the plain (unsquared) L2 norm of member ``b``'s weighted residual over all
      channels and observed cells (``misfit`` = :meth:`Observation.misfit`, computed as
      ``sqrt(Σ r² + 1e-20)``); ``W`` is cos φ of the observation grid, normalised to mean 1 and
      zero where nothing is observed; ``y``, ``A`` and ``x̂0`` are in the prior's normalised units.
      The gradient of the sum over members gives each member the gradient of its own misfit
      (members do not interact).
    * ``ζ_t`` (``zeta_t``) is computed by the caller: ζ rescaled to the region's ``H x W``
      pixels (:func:`effective_scale`) times the schedule-dependent factor ``s(t)``
      (:func:`guidance_factor`: 1 for ``"constant"``, ``sqrt(1 − ᾱ_t)`` for ``"noise"``).

    Parameters
    ----------
    x_prime
        ``x'_{t'}`` ``(members, C, H, W)`` (no graph).
    x_t
        The iterate the denoiser was evaluated at (a leaf with ``requires_grad``).
    misfit
        ``‖W^{1/2}(A(x̂0(x_t)) − y)‖`` per member ``(members,)``, still attached to ``x_t``'s graph.
    zeta_t
        The step size ``ζ_t``.

    Returns
    -------
    tuple of (torch.Tensor, float)
        ``x_{t'}`` and the mean over members of the L2 norm of the correction ``ζ_t ∇``.
    """
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(misfit.sum(), x_t)
    with torch.no_grad():
        upd = zeta_t * grad
        return x_prime - upd, float(upd.flatten(1).norm(dim=1).mean())


def _misfit_record(obs: Observation | None, mis: torch.Tensor | None) -> tuple[tuple[float, ...], float, float]:
    """``(per member, mean, rms)`` of a step's misfit (``((), nan, nan)`` without an observation)."""
    if obs is None or mis is None:
        return (), float("nan"), float("nan")
    m = tuple(float(v) for v in mis.detach())
    mean = float(np.mean(m))
    return m, mean, mean / math.sqrt(max(obs.n_obs, 1))


def guided_loop(prior: Denoiser, obs: Observation | None, static: torch.Tensor, time_feats: torch.Tensor,
                shape: tuple[int, int], *, steps: int, members: int, seed: int, guidance_scale: float,
                guidance_schedule: str = "constant", eta: float = 1.0, method: str = "zssd",
                x0_clip: float | None = X0_CLIP, min_alpha_bar: float | None = None,
                guide_mean: bool = False) -> Iterator[StepState]:
    """Respaced ancestral sampling with DPS-style guidance (Chung et al. 2023, Alg. 1).

    Each step evaluates the denoiser at ``x_t`` (with autograd when guided), takes the
    unguided ancestral step (:func:`~zssd_engine.samplers.respacing.ddim_step`) and, when guided,
    applies :func:`dps_correction` with ``ζ_t = effective_scale(ζ, shape) · guidance_factor(…)``.
    ``obs=None`` or ``ζ = 0`` gives unguided ancestral sampling (no backpropagation).  The
    graph is dropped after every step.  The noise of step ``i`` and the initial ``x_T`` are
    drawn from one generator seeded with ``seed``.

    ``guide_mean=True`` guides the *ensemble mean* instead of each member (a monthly-mean
    observation of members drawn at different times): one misfit
    ``‖W^{1/2}(A(mean_b x̂0_b) − y)‖``, whose gradient gives each member ``1/B`` of the mean's
    step, so ζ_t is multiplied by ``B`` — each member moves as far as one guided sample would.
    The step's ``misfit`` is then the mean's; ``misfit_members`` stay each member's own.
    """
    dev = prior.device
    ab = alphas_cumprod_of(prior)
    ts = respaced_timesteps(steps, ab.size, start_timestep(ab, min_alpha_bar))
    gen = make_generator(dev, seed)
    x = torch.randn((members, len(prior.variables), *shape), generator=gen, device=dev, dtype=torch.float32)
    guided = obs is not None and guidance_scale != 0.0
    zeta = effective_scale(guidance_scale, shape)
    for i, t in enumerate(ts):
        a_t = float(ab[t])
        t_next = ts[i + 1] if i + 1 < len(ts) else -1
        a_prev = float(ab[t_next]) if t_next >= 0 else 1.0
        t_vec = torch.full((members,), t, device=dev, dtype=torch.long)
        x_in = x.detach().requires_grad_(guided)
        mis = None
        with torch.enable_grad() if guided else torch.no_grad():
            eps, x0 = denoise(prior, x_in, t_vec, a_t, static, time_feats, x0_clip)
            if obs is not None:
                mis = obs.misfit(x0.mean(0, keepdim=True) if guide_mean else x0)
        with torch.no_grad():
            noise = (torch.randn(x.shape, generator=gen, device=dev, dtype=x.dtype) if t_next >= 0 else None)
            x_next = ddim_step(x_in.detach(), x0.detach(), eps.detach(), a_t, a_prev, eta, noise)
        gnorm = 0.0
        if guided:
            scale = zeta * guidance_factor(guidance_schedule, a_t) * (members if guide_mean else 1)
            x_next, gnorm = dps_correction(x_next, x_in, mis, scale)
        m, mean, rms = _misfit_record(obs, mis)
        if guide_mean and obs is not None:  # the record keeps each member's own misfit beside the mean's
            with torch.no_grad():
                m = tuple(float(v) for v in obs.misfit(x0.detach()))
        state = StepState(step=i, n_steps=len(ts), t=int(t), t_next=int(t_next), x_t=x_next.detach(),
                          x0_hat=x0.detach(), misfit=mean, misfit_members=m, misfit_rms=rms,
                          guidance_norm=gnorm, sigma=math.sqrt((1.0 - a_t) / a_t), alpha_bar=a_t,
                          method=method, denormalize=prior.denormalize)
        del x_in, eps, x0, mis
        x = x_next.detach()
        yield state


def run_guided(prior: Denoiser, obs: Observation, static, time_feats, fine: LatLonGrid, *, method: str,
               steps: int, members: int, seed: int, guidance_scale: float | None, guidance_schedule: str,
               eta: float, x0_clip: float | None, min_alpha_bar: float | None,
               guide_mean: bool = False) -> Iterator[StepState]:
    """Batch the conditioning, resolve ζ (``None``: the tuned :func:`default_guidance_scale` of
    ``method`` for this prior, demo-world table; the pipeline passes the table of its input's domain)
    and return :func:`guided_loop` — the common tail of :func:`sample_zssd
    <zssd_engine.samplers.zssd.sample_zssd>` and :func:`sample_dps <zssd_engine.samplers.dps.sample_dps>`."""
    static_b, tf_b = expand_conditioning(prior, static, time_feats, members, fine.shape)
    zeta = (default_guidance_scale(method, steps, prior_sha256=getattr(prior, "sha256", None))
            if guidance_scale is None else float(guidance_scale))
    return guided_loop(prior, obs, static_b, tf_b, fine.shape, steps=steps, members=members, seed=seed,
                       guidance_scale=zeta, guidance_schedule=guidance_schedule, eta=eta, method=method,
                       x0_clip=x0_clip, min_alpha_bar=min_alpha_bar, guide_mean=guide_mean)
