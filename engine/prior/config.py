"""The training configuration of the prior: :class:`TrainConfig` (the TOML keys of ``zssd train --config``).

The config is a TOML file, flat keys plus an optional ``[unet]`` table::

    data = "demo"          # or a path to an ERA5 NetCDF file / zarr store
    steps = 20000
    batch = 16
    out = "runs/prior"
    [unet]
    base_channels = 32

Unknown keys and invalid values raise ``ValueError`` naming them (:meth:`TrainConfig.from_file`).
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..variables import VARIABLES
from .network import UNetConfig, strict_from_dict
from .schedule import PARAMETERIZATIONS, SCHEDULES

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig:
    """Training hyper-parameters (TOML keys of the same names).

    Parameters
    ----------
    data
        ``"demo"`` (the synthetic demo world) or a path to ERA5 (NetCDF or zarr).
    crop
        Square crop size in 0.25° cells (a multiple of the network's ``min_size``).
    batch
        Crops per step and per rank.
    steps
        Total optimisation steps.
    lr, weight_decay
        AdamW peak learning rate and decoupled weight decay.
    warmup
        Linear warm-up steps; then cosine decay to ``lr * min_lr_ratio`` at ``steps``.
    ema_decay
        EMA decay of the shipped weights (``min(ema_decay, (1+s)/(10+s))``).
    seed
        Seeds the initial weights, the data, noise and dropout.
    grad_clip
        Global gradient-norm clip (0 disables).
    checkpoint_every
        Steps between writes of the training state and of the EMA prior.
    log_every
        Steps between progress-bar loss updates.
    out, name
        Output directory and checkpoint base name (``<out>/<name>.safetensors|.json``).
    num_threads
        ``torch.set_num_threads`` during training (0: automatic — on CPU with
        ``prefetch > 0`` one core is left to the data thread, else unchanged).
    schedule, T
        Noise schedule (``"cosine"`` or ``"linear"``) and number of diffusion steps.
    min_snr_gamma
        γ of min-SNR loss weighting (0: plain MSE of the network's target).
    parameterization
        ``"eps"`` (predict ε) or ``"v"`` (predict v = √ᾱ ε − √(1−ᾱ) x₀, Salimans & Ho 2022): with v the
        network must get the domain-mean state right at high noise, where an ε-network's error is
        amplified by 1/√ᾱ in x̂₀ (a mean bias of the unconditional samples).
    stats_samples
        Crops used to estimate the normalisation mean/std at the start.
    amp
        ``"auto"`` (bf16 autocast on CUDA with bf16, or CPUs with AMX/AVX512-BF16), ``"bf16"`` or ``"off"``.
    device
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    max_minutes
        Wall-time budget; training stops (and saves) when exceeded (0: none).
    prefetch
        Batches prepared ahead in a background thread (0: synchronous).
    data_workers
        Worker processes that make the batches (0: none, the ``prefetch`` thread).  Each draws whole
        batches from its own copy of the stream, ``2 × data_workers`` ahead; the batches and their order
        are those of one process, so a run is the same (and resumes the same) with any number of workers.
        On a GPU the demo world's crops, not the network, set the pace: give it the machine's cores.
    data_reuse, data_pool
        When generating crops is slower than training on them (the demo
        world on a small CPU), draw a fresh batch only every ``data_reuse``
        steps and form each step's batch from random samples of the last
        ``data_pool`` fresh batches (each crop is then seen ≈``data_reuse``
        times, at different noise levels).  ``data_reuse = 1``: every step a fresh batch.
    world_seed
        Seed of the demo world (``data = "demo"`` only).
    cyclone_fraction
        Share of the demo crops centred (±35 % of the crop) on an active tropical-cyclone core;
        the rest uniform over the sphere.  The share actually drawn is recorded in the card.
    init_from
        A checkpoint (``.safetensors`` + card) whose weights start the network and its EMA
        (fine-tuning; same network configuration and parameterization required).  The optimiser,
        the schedule and the normalisation statistics start fresh.
    variable_weights
        Per-variable loss weights λ_c, e.g. ``{t2m = 1, msl = 2, u10 = 1.5, v10 = 1.5}`` (a TOML
        table; missing variables weigh 1; empty: all equal).  See :func:`~zssd_engine.prior.loss.diffusion_loss`.
    unet
        Network configuration (:class:`~zssd_engine.prior.network.UNetConfig`).
    """

    data: str = "demo"
    crop: int = 64
    batch: int = 16
    steps: int = 20000
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup: int = 500
    min_lr_ratio: float = 0.05
    ema_decay: float = 0.999
    seed: int = 0
    grad_clip: float = 1.0
    checkpoint_every: int = 1000
    log_every: int = 25
    out: str = "runs/prior"
    name: str = "prior"
    num_threads: int = 0
    schedule: str = "cosine"
    T: int = 1000
    min_snr_gamma: float = 0.0
    parameterization: str = "eps"
    stats_samples: int = 256
    amp: str = "auto"
    device: str = "auto"
    max_minutes: float = 0.0
    prefetch: int = 2
    data_workers: int = 0
    data_reuse: int = 1
    data_pool: int = 8
    world_seed: int = 0
    cyclone_fraction: float = 0.15
    init_from: str = ""
    variable_weights: dict[str, float] = field(default_factory=dict)
    unet: UNetConfig = field(default_factory=UNetConfig)

    def __post_init__(self) -> None:
        if isinstance(self.unet, dict):
            self.unet = UNetConfig.from_dict(self.unet)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {self.parameterization!r}")
        if self.amp not in ("auto", "bf16", "off"):
            raise ValueError(f"amp must be 'auto', 'bf16' or 'off', got {self.amp!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        for k in ("crop", "batch", "steps", "T", "checkpoint_every", "log_every", "stats_samples", "data_reuse",
                  "data_pool"):
            if int(getattr(self, k)) <= 0:
                raise ValueError(f"training config: {k} must be positive, got {getattr(self, k)!r}")
        if int(self.data_workers) < 0:
            raise ValueError(f"training config: data_workers must be >= 0, got {self.data_workers!r}")
        if self.crop % self.unet.min_size:
            raise ValueError(f"crop {self.crop} must be a multiple of the network's min_size {self.unet.min_size}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.variable_weights:
            unknown = sorted(set(self.variable_weights) - set(VARIABLES))
            if unknown:
                raise ValueError(f"variable_weights: unknown variables {unknown}; known: {list(VARIABLES)}")
            w = {v: float(self.variable_weights.get(v, 1.0)) for v in VARIABLES}
            if any(not math.isfinite(x) or x < 0 for x in w.values()) or sum(w.values()) <= 0:
                raise ValueError(f"variable_weights must be non-negative and not all zero, got {w}")
            self.variable_weights = w

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """From a (TOML-parsed) dict; unknown keys raise ``ValueError`` naming them."""
        return strict_from_dict(cls, d, "training config keys")

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "TrainConfig":
        """Read a TOML config file."""
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"training config {str(p)!r} not found")
        try:
            d = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"training config {str(p)!r} is not valid TOML: {exc}") from None
        try:
            return cls.from_dict(d)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"training config {str(p)!r}: {exc}") from None

    def to_dict(self) -> dict:
        """JSON-able dict of every key (the ``[unet]`` table as a dict); :meth:`from_dict` inverts it."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "unet"}
        d["unet"] = self.unet.to_dict()
        return d
