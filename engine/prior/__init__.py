"""Diffusion prior: noise schedules, the conditional U-Net, the :class:`Prior` bundle and its trainer.

``engine.prior.train`` (the trainer and ``zssd train``) is imported on demand.
"""

from .schedule import DiffusionSchedule, cosine_betas, linear_betas, predict_x0, q_sample, respace
from .network import ConditionalUNet, UNetConfig, count_flops
from .model import CheckpointError, Conditioning, Prior, default_device

__all__ = ["DiffusionSchedule", "cosine_betas", "linear_betas", "predict_x0", "q_sample", "respace",
           "ConditionalUNet", "UNetConfig", "count_flops", "CheckpointError", "Conditioning", "Prior",
           "default_device"]
