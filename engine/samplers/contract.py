"""The denoiser contract, the clean estimate it gives and the step record every sampler yields.

* :class:`Denoiser` — what a sampler needs from the prior (:class:`zssd_engine.prior.model.Prior`
  provides it; tests may pass any object that satisfies it).
* :func:`denoise` — ``(ε, x̂0)`` at ``x_t`` with the optional clamp of ``x̂0``.
* :class:`StepState` — one step of a posterior sampler (the last one holds the result).

Everything here lives in the prior's *normalised* space (per-variable ``(x − mean)/std``);
the batch axis holds the ensemble members.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import torch

from ..prior.schedule import eps_from_x0, x0_from_eps

__all__ = ["Denoiser", "StepState", "denoise", "X0_CLIP"]

#: Default clamp of x̂0 in normalised units: far beyond any physical state (a 90 hPa cyclone is ~8 std),
#: but it stops the 1/sqrt(ᾱ) amplification of ε errors at the noisiest steps.
X0_CLIP = 20.0


class Denoiser(Protocol):
    """What a sampler needs from the prior (see :class:`zssd_engine.prior.model.Prior`)."""

    device: torch.device
    variables: Sequence[str]
    schedule: Any  # .alphas_cumprod: 1-D tensor (T,)

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, static: torch.Tensor,
            time_feats: torch.Tensor) -> torch.Tensor:
        """The predicted noise ε at ``x_t`` (a v-network converts its output to ε)."""
        ...

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Physical units → normalised (per-variable ``(x − mean)/std``)."""
        ...

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised → physical units."""
        ...

    def check_size(self, h: int, w: int) -> None:
        """Raise ``ValueError`` if the network cannot take an ``h x w`` field."""
        ...


def denoise(prior: Denoiser, x_t: torch.Tensor, t_vec: torch.Tensor, a_t: float, static: torch.Tensor,
            time_feats: torch.Tensor, x0_clip: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ε, x̂0)`` at ``x_t``.

    ``x̂0`` comes from :func:`zssd_engine.prior.schedule.x0_from_eps` (the one place it is computed).
    With ``x0_clip`` the estimate is clamped to ``±x0_clip`` (normalised units) and ε recomputed
    from it, so the ancestral step stays consistent (as guided-diffusion does).

    Parameters
    ----------
    prior
        The denoiser.
    x_t
        The iterate ``(members, C, H, W)``.
    t_vec
        Its timestep per member ``(members,)``.
    a_t
        ``ᾱ_t`` (one timestep for the whole batch).
    static, time_feats
        Batched conditioning (:func:`zssd_engine.samplers.inputs.expand_conditioning`).
    x0_clip
        The clamp (``None``: off).

    Returns
    -------
    tuple of torch.Tensor
        ``(ε, x̂0)``, both shaped like ``x_t``.
    """
    eps = prior.eps(x_t, t_vec, static, time_feats)
    x0 = x0_from_eps(x_t, eps, a_t)
    if x0_clip is not None:
        x0 = x0.clamp(-x0_clip, x0_clip)
        eps = eps_from_x0(x_t, x0, a_t)
    return eps, x0


@dataclass(frozen=True, eq=False)
class StepState:
    """One step of a posterior sampler (all tensors normalised, batch = members).

    Attributes
    ----------
    step, n_steps
        Index of this step (0-based) and the total; ``step == n_steps - 1`` is the final state.
    t
        Diffusion timestep (of the training schedule) at which the denoiser was evaluated.
    t_next
        Timestep of ``x_t`` after this step (``-1`` once the sample is clean).
    x_t
        The iterate *after* this step (``x_{t_next}``); on the final step, the sample itself.
    x0_hat
        The denoiser's clean estimate ``x̂0(x_t)`` at this step (before guidance).
    misfit
        Mean over members of ``‖W^{1/2}(A(x̂0) − y)‖`` (normalised units, cos φ weights of
        mean 1, missing observations excluded); ``nan`` for an unconditional run.
    misfit_members
        The same per member.
    misfit_rms
        ``misfit / sqrt(number of observed values)``: an RMS error in units of the variables' std.
    guidance_norm
        Mean over members of the L2 norm of the guidance correction added to ``x_t`` at this step.
    sigma
        Noise level ``sqrt((1 − ᾱ_t)/ᾱ_t)`` at ``t``.
    alpha_bar
        ``ᾱ_t``.
    method
        ``"zssd"``, ``"dps"``, ``"ddrm"`` or ``"unconditional"``.
    """

    step: int
    n_steps: int
    t: int
    t_next: int
    x_t: torch.Tensor
    x0_hat: torch.Tensor
    misfit: float
    misfit_members: tuple[float, ...]
    misfit_rms: float
    guidance_norm: float
    sigma: float
    alpha_bar: float
    method: str = ""
    denormalize: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)

    @property
    def final(self) -> bool:
        """Whether this is the last step (its ``x_t`` is the sample)."""
        return self.step == self.n_steps - 1

    @property
    def members(self) -> int:
        """Ensemble size (the batch of ``x_t``)."""
        return int(self.x_t.shape[0])

    @property
    def progress(self) -> float:
        """Fraction of the run done after this step (0–1)."""
        return (self.step + 1) / self.n_steps

    def result(self) -> torch.Tensor:
        """The sample (normalised): ``x_t`` of the final state (raises on an earlier state)."""
        if not self.final:
            raise ValueError(f"step {self.step + 1}/{self.n_steps} is not the final state")
        return self.x_t

    def _denorm(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in physical units (``ValueError`` without a denormalize function)."""
        if self.denormalize is None:
            raise ValueError("this StepState carries no denormalize function (pass the prior's)")
        with torch.no_grad():
            return self.denormalize(x)

    def x0_phys(self) -> torch.Tensor:
        """``x̂0`` in physical units (``members, C, H, W``)."""
        return self._denorm(self.x0_hat)

    def sample_phys(self) -> torch.Tensor:
        """The final sample in physical units (only on the final state)."""
        return self._denorm(self.result())

    def xt_phys(self) -> torch.Tensor:
        """``x_t / sqrt(ᾱ)`` of the iterate mapped to physical units (a noisy field, for viewers)."""
        return self._denorm(self.x_t)
