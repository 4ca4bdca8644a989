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
    """Static channels and time features → tensors batched over the members, on the prior's device.

    ``static`` is ``(S, H, W)``/``(1, S, H, W)`` (shared) or ``(members, S, H, W)`` (one per member);
    ``time_feats`` is ``(F,)``/``(1, F)`` or ``(members, F)``.  Per-member conditioning is how an
    ensemble drawn at different times (a monthly-mean input, :mod:`zssd_engine.pipeline.monthly`)
    keeps each member's own time embedding.
    """
    dev = prior.device
    s = torch.as_tensor(np.asarray(static) if not isinstance(static, torch.Tensor) else static,
                        dtype=torch.float32, device=dev)
    if s.ndim == 3:
        s = s[None]
    if s.ndim != 4 or s.shape[0] not in (1, members):
        raise ValueError(f"static channels must be (S, H, W), (1, S, H, W) or ({members}, S, H, W), "
                         f"got {tuple(s.shape)}")
    if tuple(s.shape[-2:]) != tuple(shape):
        raise ValueError(f"static channels of shape {tuple(s.shape)} do not match the fine grid {shape}")
    tf = torch.as_tensor(np.asarray(time_feats) if not isinstance(time_feats, torch.Tensor) else time_feats,
                         dtype=torch.float32, device=dev)
    tf = tf.reshape(1, -1) if tf.ndim < 2 else tf
    if tf.ndim != 2 or tf.shape[0] not in (1, members):
        raise ValueError(f"time features must be (F,), (1, F) or ({members}, F), got {tuple(tf.shape)}")
    return s.expand(members, *s.shape[1:]).contiguous(), tf.expand(members, tf.shape[1]).contiguous()
