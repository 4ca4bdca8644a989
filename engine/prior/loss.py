"""The diffusion training loss, as a function of its own (k-diffusion's ``Denoiser.loss`` shape).

Simplified DDPM objective (Ho et al. 2020, eq. 14) on a normalised batch ``x₀``::

    x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε                         (Ho et al. eq. 4)
    L   = E_{x₀,t,ε} w_t Σ_c λ_c ‖target_c − f_θ(x_t, t | statics, time)_c‖² / Σ_c λ_c

with target ε, or v = √ᾱ_t ε − √(1−ᾱ_t) x₀ (Salimans & Ho 2022) for the v-parameterisation,
min-SNR-γ time weights (Hang et al. 2023) ``w_t = min(SNR_t, γ)/SNR_t`` (ε) or
``min(SNR_t, γ)/(SNR_t + 1)`` (v), and optional per-variable weights ``λ_c`` (normalised so that
equal weights give the plain mean: a fine-tune that up-weights msl and the winds keeps the loss's scale).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .schedule import DiffusionSchedule, q_sample, v_target

__all__ = ["diffusion_loss"]


def diffusion_loss(model: Callable[..., torch.Tensor], schedule: DiffusionSchedule, x0: torch.Tensor,
                   t: torch.Tensor, noise: torch.Tensor, static: torch.Tensor, time_feats: torch.Tensor, *,
                   parameterization: str = "eps", min_snr_gamma: float = 0.0,
                   variable_weights: Sequence[float] | None = None,
                   amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Mean training loss of one batch (a scalar tensor with its graph).

    Parameters
    ----------
    model
        ``model(x_t, t, static, time_feats)`` → the network's prediction, shaped like ``x0``.
    schedule
        The noise schedule (ᾱ_t and SNR_t).
    x0
        Normalised clean batch ``(B, C, H, W)``.
    t, noise
        Diffusion step per sample ``(B,)`` and the Gaussian noise, shaped like ``x0``.
    static, time_feats
        The conditioning of the batch (static boundaries, cyclic time features).
    parameterization
        ``"eps"`` or ``"v"``: what the network predicts.
    min_snr_gamma
        γ of min-SNR weighting (0: unweighted).
    variable_weights
        One weight λ_c per channel (None: all 1).
    amp_dtype
        Autocast dtype of the forward pass (None: full precision).
    """
    device = x0.device
    x_t = q_sample(schedule, x0, t, noise)
    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        pred = model(x_t, t, static, time_feats)
    use_v = parameterization == "v"
    target = v_target(schedule, x0, t, noise) if use_v else noise
    err = (pred.float() - target).pow(2).mean(dim=(2, 3))  # (B, C)
    if variable_weights is not None:
        lam = torch.as_tensor(list(variable_weights), dtype=torch.float32, device=device)
        if lam.numel() != x0.shape[1]:
            raise ValueError(f"variable_weights has {lam.numel()} entries for {x0.shape[1]} variables")
        mse = (err * lam).sum(dim=1) / lam.sum()
    else:
        mse = err.mean(dim=1)
    if min_snr_gamma > 0:
        snr = schedule.snr.to(device=device, dtype=torch.float32)[t]
        mse = mse * torch.clamp(snr, max=min_snr_gamma) / (snr + 1.0 if use_v else snr)
    return mse.mean()
