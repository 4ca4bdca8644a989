"""Diffusion prior: noise schedules, the conditional U-Net, the :class:`Prior` bundle and its trainer.

``zssd_engine.prior.train`` (the trainer, :func:`~zssd_engine.prior.train.train`) is imported on demand; its command
line ``zssd train --config FILE`` is :mod:`zssd_engine.cli.train`.
"""

from .schedule import DiffusionSchedule, cosine_betas, linear_betas, predict_x0, q_sample, respace
from .network import ConditionalUNet, UNetConfig, count_flops
from .checkpoint import CheckpointError
from .model import Conditioning, Prior, default_device

__all__ = ["DiffusionSchedule", "cosine_betas", "linear_betas", "predict_x0", "q_sample", "respace",
           "ConditionalUNet", "UNetConfig", "count_flops", "CheckpointError", "Conditioning", "Prior",
           "default_device"]
