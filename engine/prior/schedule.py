"""DDPM noise schedules and the closed-form forward process.

Notation follows Ho et al. (2020), "Denoising Diffusion Probabilistic Models":

* ``β_t``                       — variance of step ``t`` (``t = 0 … T-1``, zero-based as in code),
* ``α_t = 1 − β_t``, ``ᾱ_t = Π_{s≤t} α_s``,
* forward process (eq. 4)      ``q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I)``,
* ε-parameterised x₀ (eq. 15)  ``x̂_0 = (x_t − √(1 − ᾱ_t) ε) / √ᾱ_t``,
* posterior (eqs. 6–7)         ``q(x_{t-1} | x_t, x_0) = N(c₁ x_0 + c₂ x_t, β̃_t I)`` with
  ``β̃_t = β_t (1 − ᾱ_{t-1}) / (1 − ᾱ_t)``, ``c₁ = β_t √ᾱ_{t-1} / (1 − ᾱ_t)``,
  ``c₂ = (1 − ᾱ_{t-1}) √α_t / (1 − ᾱ_t)``.

All schedule arrays are computed in float64; the helpers cast to the dtype of
their inputs when indexing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import torch

__all__ = [
    "linear_betas",
    "cosine_betas",
    "make_betas",
    "DiffusionSchedule",
    "respace",
    "q_sample",
    "predict_x0",
    "predict_eps",
    "x0_from_eps",
    "eps_from_x0",
    "SCHEDULES",
]

SCHEDULES: tuple[str, ...] = ("linear", "cosine")


def linear_betas(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2) -> torch.Tensor:
    """Linear β schedule of Ho et al. (2020), float64 ``[T]``.

    Parameters
    ----------
    T
        Number of diffusion steps.
    beta_start, beta_end
        First and last β (the DDPM defaults ``1e-4`` and ``0.02``).
    """
    if T <= 0:
        raise ValueError(f"number of diffusion steps T must be positive, got {T}")
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def cosine_betas(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cosine schedule of Nichol & Dhariwal (2021, eq. 17), float64 ``[T]``.

    ``ᾱ(t) = f(t)/f(0)``, ``f(t) = cos²(((t/T) + s)/(1 + s) · π/2)``; ``β_t = 1 − ᾱ(t+1)/ᾱ(t)``
    clipped at ``max_beta`` (as in diffusers' ``squaredcos_cap_v2``).
    """
    if T <= 0:
        raise ValueError(f"number of diffusion steps T must be positive, got {T}")
    t = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = 1.0 - f[1:] / f[:-1]
    return betas.clamp(max=max_beta)


def make_betas(kind: str, T: int = 1000, **kw: float) -> torch.Tensor:
    """β schedule by name: ``"linear"`` or ``"cosine"``."""
    if kind == "linear":
        return linear_betas(T, **kw)
    if kind == "cosine":
        return cosine_betas(T, **kw)
    raise ValueError(f"unknown noise schedule {kind!r}; expected one of {SCHEDULES}")


def _extract(a: torch.Tensor, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
    """``a[t]`` broadcast to ``like`` (batch on dim 0), in ``like``'s dtype and device."""
    if not torch.is_tensor(t):
        t = torch.tensor([int(t)])
    t = t.reshape(-1).long().to(a.device)
    out = a[t].to(dtype=like.dtype, device=like.device)
    return out.reshape(-1, *([1] * (like.ndim - 1)))


@dataclass(frozen=True, eq=False)
class DiffusionSchedule:
    """Derived DDPM quantities of a β schedule (all float64 ``[T]`` tensors on CPU).

    Parameters
    ----------
    betas
        The β_t, float tensor ``[T]`` with ``0 < β < 1``.
    kind
        Name of the generating schedule (only recorded in checkpoint cards).
    """

    betas: torch.Tensor
    kind: str = field(default="custom")

    def __post_init__(self) -> None:
        b = torch.as_tensor(self.betas, dtype=torch.float64).detach().cpu().reshape(-1)
        if b.numel() == 0 or not bool(((b > 0) & (b < 1)).all()):
            raise ValueError("betas must be a non-empty 1-D tensor with 0 < beta < 1")
        object.__setattr__(self, "betas", b)

    @classmethod
    def from_spec(cls, spec: dict) -> "DiffusionSchedule":
        """Build from a card spec ``{"kind": "cosine"|"linear", "T": …, …}``."""
        spec = dict(spec)
        kind = spec.pop("kind")
        T = int(spec.pop("T", 1000))
        return cls(make_betas(kind, T, **spec), kind=kind)

    def spec(self) -> dict:
        """JSON-able description (``kind`` and ``T``; used by :meth:`from_spec`)."""
        return {"kind": self.kind, "T": self.T}

    @property
    def T(self) -> int:
        return int(self.betas.numel())

    @cached_property
    def alphas(self) -> torch.Tensor:
        """α_t = 1 − β_t."""
        return 1.0 - self.betas

    @cached_property
    def alphas_cumprod(self) -> torch.Tensor:
        """ᾱ_t = Π_{s≤t} α_s."""
        return torch.cumprod(self.alphas, dim=0)

    @cached_property
    def alphas_cumprod_prev(self) -> torch.Tensor:
        """ᾱ_{t-1} with ᾱ_{-1} = 1."""
        return torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])

    @cached_property
    def posterior_variance(self) -> torch.Tensor:
        """β̃_t = β_t (1 − ᾱ_{t-1}) / (1 − ᾱ_t)  (Ho et al. eq. 7)."""
        return self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)

    @cached_property
    def posterior_mean_coef1(self) -> torch.Tensor:
        """Coefficient of x₀ in μ̃_t: β_t √ᾱ_{t-1} / (1 − ᾱ_t)."""
        return self.betas * torch.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)

    @cached_property
    def posterior_mean_coef2(self) -> torch.Tensor:
        """Coefficient of x_t in μ̃_t: (1 − ᾱ_{t-1}) √α_t / (1 − ᾱ_t)."""
        return (1.0 - self.alphas_cumprod_prev) * torch.sqrt(self.alphas) / (1.0 - self.alphas_cumprod)

    @cached_property
    def snr(self) -> torch.Tensor:
        """Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t)."""
        return self.alphas_cumprod / (1.0 - self.alphas_cumprod)

    # convenience wrappers ------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return q_sample(self, x0, t, noise)

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return predict_x0(self, x_t, t, eps)

    def posterior_mean(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """μ̃_t(x_t, x₀) = c₁ x₀ + c₂ x_t  (Ho et al. eq. 7)."""
        return (_extract(self.posterior_mean_coef1, t, x_t) * x0
                + _extract(self.posterior_mean_coef2, t, x_t) * x_t)


def respace(n_steps: int, T: int) -> torch.Tensor:
    """Descending, evenly spaced sub-sequence of ``0 … T-1`` for an ``n_steps`` sampler.

    Always contains ``T-1`` (first) and ``0`` (last) when ``n_steps ≥ 2``;
    ``n_steps == 1`` gives ``[T-1]``.

    Raises
    ------
    ValueError
        If ``n_steps <= 0`` or ``n_steps > T``.
    """
    n_steps, T = int(n_steps), int(T)
    if T <= 0:
        raise ValueError(f"T must be positive, got {T}")
    if n_steps <= 0 or n_steps > T:
        raise ValueError(f"number of sampling steps must be in 1..{T} (the training T), got {n_steps}")
    if n_steps == 1:
        return torch.tensor([T - 1], dtype=torch.long)
    ts = torch.linspace(T - 1, 0, n_steps, dtype=torch.float64).round().long()
    return ts


def q_sample(schedule: DiffusionSchedule, x0: torch.Tensor, t: torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:
    """Sample ``x_t ~ q(x_t | x_0)``: ``√ᾱ_t x₀ + √(1 − ᾱ_t) ε``  (Ho et al. eq. 4)."""
    ab = _extract(schedule.alphas_cumprod, t, x0)
    return ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar: float | torch.Tensor) -> torch.Tensor:
    """The clean estimate ``x̂₀ = (x_t − √(1 − ᾱ) ε) / √ᾱ``  (Ho et al. eq. 15).

    The one place x̂₀ is computed from ``(x_t, ε)``: :func:`predict_x0`, :meth:`Prior.x0_from_eps
    <zssd_engine.prior.model.Prior.x0_from_eps>` and the samplers (:func:`zssd_engine.samplers.contract.denoise`)
    call it.  A v-network's output is first turned into ε (:func:`eps_from_v`, inside ``Prior.eps``).

    Parameters
    ----------
    x_t, eps
        The noisy state and the predicted noise (same shape).
    alpha_bar
        ``ᾱ``: a Python float (one timestep for the whole batch; the square roots are taken in
        float64) or a tensor broadcastable to ``x_t`` (per-sample timesteps, in ``x_t``'s dtype).
    """
    if torch.is_tensor(alpha_bar):
        return (x_t - (1.0 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()
    return (x_t - math.sqrt(1.0 - alpha_bar) * eps) / math.sqrt(alpha_bar)


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, alpha_bar: float | torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`x0_from_eps`: ``ε = (x_t − √ᾱ x₀) / √(1 − ᾱ)`` (``alpha_bar`` as there)."""
    if torch.is_tensor(alpha_bar):
        return (x_t - alpha_bar.sqrt() * x0) / (1.0 - alpha_bar).sqrt()
    return (x_t - math.sqrt(alpha_bar) * x0) / math.sqrt(1.0 - alpha_bar)


def predict_x0(schedule: DiffusionSchedule, x_t: torch.Tensor, t: torch.Tensor,
               eps: torch.Tensor) -> torch.Tensor:
    """Tweedie/ε estimate ``x̂₀ = (x_t − √(1 − ᾱ_t) ε) / √ᾱ_t``  (Ho et al. eq. 15; :func:`x0_from_eps`)."""
    return x0_from_eps(x_t, eps, _extract(schedule.alphas_cumprod, t, x_t))


def predict_eps(schedule: DiffusionSchedule, x_t: torch.Tensor, t: torch.Tensor,
                x0: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`predict_x0`: ``ε = (x_t − √ᾱ_t x₀) / √(1 − ᾱ_t)`` (:func:`eps_from_x0`)."""
    return eps_from_x0(x_t, x0, _extract(schedule.alphas_cumprod, t, x_t))


#: Network output parameterisations: ε (Ho et al. 2020) or v = √ᾱ ε − √(1−ᾱ) x₀ (Salimans & Ho 2022).
PARAMETERIZATIONS = ("eps", "v")


def v_target(schedule: DiffusionSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The v-prediction target ``v = √ᾱ_t ε − √(1 − ᾱ_t) x₀`` (Salimans & Ho 2022, eq. 9)."""
    ab = _extract(schedule.alphas_cumprod, t, x0)
    return ab.sqrt() * noise - (1.0 - ab).sqrt() * x0


def eps_from_v(schedule: DiffusionSchedule, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """ε from a v-prediction: ``ε = √ᾱ_t v + √(1 − ᾱ_t) x_t``.

    Unlike ε, ``v → −x₀`` as ᾱ → 0, so a v-network has to get the large-scale (domain-mean)
    state right at high noise, where an ε-network's error is amplified by ``1/√ᾱ`` in x̂₀.
    """
    ab = _extract(schedule.alphas_cumprod, t, x_t)
    return ab.sqrt() * v + (1.0 - ab).sqrt() * x_t
