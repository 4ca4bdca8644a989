"""Input checks and batching shared by every sampler (ZSSD, DPS, DDRM, unconditional).

Every sampler validates its input eagerly — ``ValueError``/``GridError`` before any
computation — with :func:`validate_common`, batches the conditioning over the ensemble
members with :func:`expand_conditioning` and draws all its randomness from one seeded
generator (:func:`make_generator`).
"""

from __future__ import annotations

import numpy as np
import torch

from ..grids import LatLonGrid
from .contract import Denoiser
from .respacing import alphas_cumprod_of, check_steps

__all__ = ["validate_common", "check_prior_size", "expand_conditioning", "make_generator"]


def check_prior_size(prior: Denoiser, grid: LatLonGrid) -> None:
    """Raise ``ValueError`` if the fine grid is not a size the prior accepts."""
    h, w = grid.shape
    check = getattr(prior, "check_size", None)
    if check is not None:
        check(h, w)


def validate_common(prior: Denoiser, fine: LatLonGrid, steps: int, members: int, eta: float) -> None:
    """Checks shared by every sampler, before any computation.

    ``steps`` in ``[1, T]``, ``members`` a positive integer, ``eta`` in ``[0, 1]`` and a fine
    grid whose size the prior accepts; ``ValueError`` otherwise.
    """
    check_steps(steps, int(alphas_cumprod_of(prior).size))
    if isinstance(members, bool) or int(members) != members or members < 1:
        raise ValueError(f"members must be a positive integer, got {members!r}")
    if not (0.0 <= float(eta) <= 1.0):
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    check_prior_size(prior, fine)


def make_generator(device: torch.device, seed: int) -> torch.Generator:
    """A :class:`torch.Generator` on ``device`` seeded with ``seed`` (a run's only source of randomness)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def expand_conditioning(prior: Denoiser, static, time_feats, members: int,
                        shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Static channels ``(S, H, W)`` and time features ``(F,)``/``(1, F)`` → batched tensors on the prior's device."""
    dev = prior.device
    s = torch.as_tensor(np.asarray(static) if not isinstance(static, torch.Tensor) else static,
                        dtype=torch.float32, device=dev)
    if s.ndim == 4:
        if s.shape[0] != 1:
            raise ValueError(f"static channels must be (S, H, W) or (1, S, H, W), got {tuple(s.shape)}")
        s = s[0]
    if s.ndim != 3 or tuple(s.shape[-2:]) != tuple(shape):
        raise ValueError(f"static channels of shape {tuple(s.shape)} do not match the fine grid {shape}")
    tf = torch.as_tensor(np.asarray(time_feats) if not isinstance(time_feats, torch.Tensor) else time_feats,
                         dtype=torch.float32, device=dev).reshape(1, -1)
    return s[None].expand(members, *s.shape).contiguous(), tf.expand(members, tf.shape[1]).contiguous()
