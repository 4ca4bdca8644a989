"""DDRM (Kawar et al. 2022) for the block-averaging operator of the GCM grid.

``A = conservative(fine → native cells overlapping the region, clipped)`` is
separable, ``A = M_lat ⊗ M_lon``, so its SVD is the Kronecker product of the
two small SVDs, computed exactly (``torch.linalg.svd`` of each factor):
``A = (U₁⊗U₂)(S₁⊗S₂)(V₁⊗V₂)ᵀ``.  For a field ``X`` (``n₁ × n₂``) the spectral
coefficients are ``V₁ᵀ X V₂`` and ``Uᵀ y = U₁ᵀ Y U₂``.

DDRM works in the variance-exploding parametrisation ``x = x_vp/√ᾱ_t``,
``σ_t = sqrt((1 − ᾱ_t)/ᾱ_t)``, on the same respaced timesteps as the other
samplers.  Per spectral component ``i`` with singular value ``s_i`` and
``ȳ_i = (Uᵀy)_i / s_i`` (eq. 7–8 of the paper):

* ``s_i = 0``:  ``x̄ ← x̄θ + sqrt(1−η²) σ' (x̄_t − x̄θ)/σ_t + η σ' z``
* ``σ' < σ_y/s_i``:  ``x̄ ← x̄θ + sqrt(1−η²) σ' (ȳ − x̄θ) s_i/σ_y + η σ' z``
* ``σ' ≥ σ_y/s_i``:  ``x̄ ← (1−η_B) x̄θ + η_B ȳ + sqrt(σ'² − σ_y² η_B²/s_i²) z``

No backpropagation.  With ``σ_y = 0`` and ``η_B = 1`` the last step sets every
observed component to ``ȳ``: the block means of the result equal the GCM
values exactly (including the GCM's bias — the known weakness).  GCM cells
that are NaN are imputed at every step with ``A(x̂0)`` (they constrain
nothing); variables missing from the GCM are sampled unconditionally.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch

from ..grids import LatLonGrid
from ..operators import SeparableOperator, conservative
from .contract import X0_CLIP, Denoiser, StepState, denoise
from .dps import native_observation
from .inputs import expand_conditioning, make_generator, validate_common
from .observation import Observation
from .respacing import alphas_cumprod_of, respaced_timesteps, start_timestep

__all__ = ["KroneckerSVD", "sample_ddrm"]


class KroneckerSVD:
    """Exact SVD of a separable operator ``X ↦ M_lat X M_lonᵀ`` (float64)."""

    def __init__(self, op: SeparableOperator, rtol: float = 1e-7) -> None:
        ml = op.m_lat.detach().to(torch.float64)
        mo = op.m_lon.detach().to(torch.float64)
        self.m1, self.n1 = ml.shape
        self.m2, self.n2 = mo.shape
        if self.m1 > self.n1 or self.m2 > self.n2:
            raise ValueError(f"DDRM needs a reducing operator, got {tuple(ml.shape)} x {tuple(mo.shape)}")
        self.u1, s1, self.vh1 = torch.linalg.svd(ml, full_matrices=True)
        self.u2, s2, self.vh2 = torch.linalg.svd(mo, full_matrices=True)
        s = torch.zeros(self.n1, self.n2, dtype=torch.float64, device=ml.device)
        s[: s1.numel(), : s2.numel()] = torch.outer(s1, s2)
        self.s = torch.where(s > rtol * float(s.max()), s, torch.zeros_like(s))
        self.pos = self.s > 0

    def vt(self, x: torch.Tensor) -> torch.Tensor:
        """Spectral coefficients ``Vᵀx``: ``V₁ᵀ X V₂`` (last two dims)."""
        return self.vh1 @ x @ self.vh2.transpose(0, 1)

    def v(self, z: torch.Tensor) -> torch.Tensor:
        """``V z``: ``V₁ Z V₂ᵀ``."""
        return self.vh1.transpose(0, 1) @ z @ self.vh2

    def ybar(self, y: torch.Tensor) -> torch.Tensor:
        """``S⁺ Uᵀ y`` padded to ``(…, n1, n2)`` (zero where ``s = 0``)."""
        uty = self.u1.transpose(0, 1) @ y @ self.u2  # (…, m1, m2)
        out = torch.zeros(y.shape[:-2] + (self.n1, self.n2), dtype=y.dtype, device=y.device)
        out[..., : self.m1, : self.m2] = uty
        s_safe = torch.where(self.pos, self.s, torch.ones_like(self.s))
        return torch.where(self.pos, out / s_safe, torch.zeros_like(out))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``A x`` through the SVD (tests): ``U S Vᵀ x``."""
        z = (self.s * self.vt(x))[..., : self.m1, : self.m2]
        return self.u1 @ z @ self.u2.transpose(0, 1)


def sample_ddrm(prior: Denoiser, gcm, fine: LatLonGrid, static, time_feats, *, steps: int = 20,
                members: int = 1, seed: int = 0, eta: float = 0.85, eta_b: float = 1.0,
                sigma_y: float = 0.0, x0_clip: float | None = X0_CLIP,
                min_alpha_bar: float | None = None) -> Iterator[StepState]:
    """DDRM samples (Kawar et al. 2022) of the 0.25° fields given a GCM field.

    Parameters
    ----------
    eta, eta_b
        DDRM's η (noise injection, default 0.85) and η_B (data weight, default 1).
    sigma_y
        Observation noise std in the prior's normalised units (0 = noiseless: the
        result's block means equal the GCM values exactly).
    x0_clip
        Clamp of ``x̂0`` in normalised units (``None``: off); see :func:`zssd_engine.samplers.contract.denoise`.
    min_alpha_bar
        First timestep of the chain (see :func:`zssd_engine.samplers.respacing.respaced_timesteps`).

    Other parameters as :func:`zssd_engine.samplers.zssd.sample_zssd`.  All checks run
    before the generator is returned.
    """
    validate_common(prior, fine, steps, members, eta)
    if not (0.0 <= float(eta_b) <= 1.0):
        raise ValueError(f"eta_b must be in [0, 1], got {eta_b}")
    if not (float(sigma_y) >= 0.0 and math.isfinite(float(sigma_y))):
        raise ValueError(f"sigma_y must be a finite number >= 0, got {sigma_y}")
    obs = native_observation(prior, gcm, fine)
    static_b, tf_b = expand_conditioning(prior, static, time_feats, members, fine.shape)
    op64 = conservative(fine, obs.coarse_grid, dtype=torch.float64).to(prior.device)
    svd = KroneckerSVD(op64)
    return _ddrm_loop(prior, obs, op64, svd, static_b, tf_b, fine.shape, steps, members, seed, float(eta),
                      float(eta_b), float(sigma_y), x0_clip, min_alpha_bar)


def _ddrm_loop(prior: Denoiser, obs: Observation, op64: SeparableOperator, svd: KroneckerSVD,
               static: torch.Tensor, tf: torch.Tensor, shape: tuple[int, int], steps: int, members: int,
               seed: int, eta: float, eta_b: float, sigma_y: float,
               x0_clip: float | None, min_alpha_bar: float | None) -> Iterator[StepState]:
    """The DDRM chain (the update rules of the module docstring), one :class:`StepState` per step."""
    dev = prior.device
    f64 = torch.float64
    ab = alphas_cumprod_of(prior)
    ts = respaced_timesteps(steps, ab.size, start_timestep(ab, min_alpha_bar))
    gen = make_generator(dev, seed)
    C = len(prior.variables)
    H, W = shape
    chan_obs = obs.mask.flatten(1).any(1).to(dev)                         # (C,)
    pos = svd.pos[None] & chan_obs[:, None, None]                          # (C, n1, n2)
    s_safe = torch.where(svd.pos, svd.s, torch.ones_like(svd.s))
    sy_s = torch.where(svd.pos, sigma_y / s_safe, torch.zeros_like(svd.s))  # σ_y / s_i
    mask = obs.mask.to(dev)
    y0 = obs.y0.to(device=dev, dtype=f64)
    # NaN cells in the initial guess: the channel's mean of the observed cells
    cnt = mask.flatten(1).sum(1).clamp_min(1).to(f64)
    chan_mean = (y0.flatten(1).sum(1) / cnt)[:, None, None]
    y_init = torch.where(mask, y0, chan_mean.expand_as(y0))
    ybar = svd.ybar(y_init)[None]                                          # (1, C, n1, n2)

    a_T = float(ab[ts[0]])
    sig_T = math.sqrt((1.0 - a_T) / a_T)
    z = torch.randn((members, C, H, W), generator=gen, device=dev, dtype=torch.float32).to(f64)
    xbar = torch.where(pos & (sig_T >= sy_s), ybar + torch.sqrt((sig_T ** 2 - sy_s ** 2).clamp_min(0)) * z, sig_T * z)
    x = (math.sqrt(a_T) * svd.v(xbar)).to(torch.float32)
    denorm = prior.denormalize
    for i, t in enumerate(ts):
        a_t = float(ab[t])
        t_next = ts[i + 1] if i + 1 < len(ts) else -1
        a_p = float(ab[t_next]) if t_next >= 0 else 1.0
        sig_t = math.sqrt((1.0 - a_t) / a_t)
        sig_p = math.sqrt((1.0 - a_p) / a_p)
        t_vec = torch.full((members,), t, device=dev, dtype=torch.long)
        with torch.no_grad():
            eps, x0 = denoise(prior, x, t_vec, a_t, static, tf, x0_clip)
            mis = obs.misfit(x0)
            x0d = x0.to(f64)
            a_x0 = op64(x0d)
            y_step = torch.where(mask, y0, a_x0)                            # impute NaN cells with A(x̂0)
            yb = svd.ybar(y_step)
            x0bar = svd.vt(x0d)
            xbar_t = svd.vt(x.to(f64)) / math.sqrt(a_t)
            if t_next >= 0:
                z = torch.randn((members, C, H, W), generator=gen, device=dev, dtype=torch.float32).to(f64)
            else:
                z = torch.zeros_like(x0bar)
            c = math.sqrt(max(1.0 - eta ** 2, 0.0)) * sig_p
            uncond = x0bar + c * (xbar_t - x0bar) / sig_t + eta * sig_p * z
            lo = x0bar + c * (yb - x0bar) / torch.where(sy_s > 0, sy_s, torch.ones_like(sy_s)) + eta * sig_p * z
            hi = (1.0 - eta_b) * x0bar + eta_b * yb + torch.sqrt((sig_p ** 2 - sy_s ** 2 * eta_b ** 2).clamp_min(0)) * z
            new = torch.where(pos, torch.where(sig_p < sy_s, lo, hi), uncond)
            x_next = (math.sqrt(a_p) * svd.v(new)).to(torch.float32)
            gnorm = float((math.sqrt(a_p) * (new - uncond)).flatten(1).norm(dim=1).mean())
            m = tuple(float(v) for v in mis)
            mean = sum(m) / len(m)
        state = StepState(step=i, n_steps=len(ts), t=int(t), t_next=int(t_next), x_t=x_next, x0_hat=x0,
                          misfit=mean, misfit_members=m, misfit_rms=mean / math.sqrt(max(obs.n_obs, 1)),
                          guidance_norm=gnorm, sigma=sig_t, alpha_bar=a_t, method="ddrm", denormalize=denorm)
        x = x_next
        yield state
