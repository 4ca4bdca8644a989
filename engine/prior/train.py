"""Training of the diffusion prior: ``zssd train --config FILE [--resume PATH] [--steps N]``.

The objective (:func:`engine.prior.loss.diffusion_loss`, a function of its own) is the simplified
DDPM loss (Ho et al. 2020, eq. 14)

    L = E_{x₀, t, ε} ‖ε − ε_θ(√ᾱ_t x₀ + √(1−ᾱ_t) ε, t | statics, time)‖²,

optionally with min-SNR-γ weighting (Hang et al. 2023: ``w_t = min(SNR_t, γ)/SNR_t`` for
ε-prediction), on random crops of the normalised state.  AdamW with linear
warm-up and cosine decay, gradient clipping, an exponential moving average of
the weights (the EMA network is what :class:`~engine.prior.model.Prior` ships).
With ``parameterization = "v"`` (the shipped demo prior) the target is
v = √ᾱ_t ε − √(1−ᾱ_t) x₀ instead, with weights ``min(SNR_t, γ)/(SNR_t + 1)``.

Reproducibility and resumption: the batch, the diffusion steps/noise and the
dropout masks of step ``s`` on rank ``r`` are drawn from generators seeded by
``(seed, r, s)``, so a run resumed from its training state file follows
exactly the same loss sequence as an uninterrupted run.

Scale-out: run the same entry point under ``torchrun --nproc_per_node N``;
it uses DDP (gloo on CPU, nccl on CUDA), every rank draws its own crops
(``batch`` is per rank) and only rank 0 writes files.

The config is a TOML file, flat keys plus an optional ``[unet]`` table::

    data = "demo"          # or a path to an ERA5 NetCDF file / zarr store
    steps = 20000
    batch = 16
    out = "runs/prior"
    [unet]
    base_channels = 32
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import math
import os
import platform
import queue
import threading
import time
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..variables import VARIABLES
from .model import Prior, _atomic_write_bytes, default_device
from .network import ConditionalUNet, UNetConfig
from .loss import diffusion_loss
from .schedule import PARAMETERIZATIONS, SCHEDULES, DiffusionSchedule, make_betas

__all__ = ["TrainConfig", "TrainResult", "train", "make_stream", "Era5CropStream", "add_parser", "run",
           "add_train_parser", "run_train", "main", "STATE_FORMAT"]

STATE_FORMAT = "zssd-train-state"
STATE_FILE = "train_state.pt"


# ---------------------------------------------------------------------- config
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
        table; missing variables weigh 1; empty: all equal).  See :func:`~engine.prior.loss.diffusion_loss`.
    unet
        Network configuration (:class:`~engine.prior.network.UNetConfig`).
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
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training config keys {unknown}; known: {sorted(known)}")
        return cls(**d)

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
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "unet"}
        d["unet"] = self.unet.to_dict()
        return d


@dataclass
class TrainResult:
    """What :func:`train` returns (on every rank; files are written by rank 0 only)."""

    prior: Prior
    losses: list[float]
    step: int
    card_path: Path | None
    state_path: Path | None
    wall_time_s: float


# ---------------------------------------------------------------------- data
class Era5CropStream:
    """Random ``crop × crop`` windows of an ERA5 dataset opened by :func:`engine.readers.open_era5`.

    Same interface as :class:`engine.data_stream.TrainingStream` (``batch``,
    ``stats``, ``rng``, ``years``).  Held-out years are excluded.  The dataset
    must hold all four variables on the 0.25° ERA5 grid (global or regional);
    statics come from :func:`engine.statics.load_statics`.
    """

    def __init__(self, path: str | os.PathLike, crop: int = 64, seed: int = 0, statics=None,
                 years: tuple[int, ...] | None = None) -> None:
        from ..demo_world import HELDOUT_YEARS
        from ..errors import DataError
        from ..operators import grid_from_xarray
        from ..readers import open_era5

        self.ds = open_era5(path)
        missing = [v for v in VARIABLES if v not in self.ds.data_vars]
        if missing:
            raise DataError(f"ERA5 training data {str(path)!r} lacks variables {missing}")
        self.grid = grid_from_xarray(self.ds)
        if abs(self.grid.dlat - 0.25) > 1e-6 or abs(self.grid.dlon - 0.25) > 1e-6:
            raise DataError(f"ERA5 training data {str(path)!r} must be on the 0.25° grid, "
                            f"got {self.grid.dlat:g}°x{self.grid.dlon:g}°")
        self.crop = int(crop)
        if self.grid.shape[0] < self.crop or (self.grid.shape[1] < self.crop and not self.grid.is_global_lon):
            raise DataError(f"ERA5 training data {str(path)!r} ({self.grid.shape[0]}x{self.grid.shape[1]}) "
                            f"is smaller than the {crop}x{crop} crop")
        tidx = self.ds.indexes["time"]
        yrs = np.asarray([t.year for t in tidx])
        self.heldout_years = tuple(HELDOUT_YEARS)
        ok = ~np.isin(yrs, self.heldout_years)
        if years is not None:
            ok &= np.isin(yrs, list(years))
        self.time_index = np.nonzero(ok)[0]
        if self.time_index.size == 0:
            raise DataError(f"ERA5 training data {str(path)!r} has no time outside the held-out years "
                            f"{self.heldout_years}")
        self.years = tuple(sorted({int(y) for y in yrs[self.time_index]}))
        if statics is None:
            from ..statics import load_statics
            statics = load_statics()
        self.statics = statics
        self.rng = np.random.default_rng(seed)

    def sample(self):
        from ..conditioning import static_channels

        c = self.crop
        ti = int(self.rng.choice(self.time_index))
        i0 = int(self.rng.integers(0, self.grid.shape[0] - c + 1))
        nlon = self.grid.shape[1]
        j0 = int(self.rng.integers(0, nlon if self.grid.is_global_lon else nlon - c + 1))
        lat_idx = np.arange(i0, i0 + c)
        lon_idx = (j0 + np.arange(c)) % nlon
        shift = 360.0 * ((j0 + np.arange(c)) // nlon)
        sub = self.grid.subset(lat_idx, lon_idx, lon_shift=shift)
        win = self.ds.isel(time=ti, lat=xr_index(lat_idx), lon=xr_index(lon_idx))
        x = np.stack([np.asarray(win[v].values, dtype=np.float32) for v in VARIABLES])
        t = self.ds.indexes["time"][ti]
        dem, land = self.statics.region(sub)
        return x, static_channels(sub, dem, land, t), t

    def batch(self, n: int):
        from ..conditioning import time_features

        xs, ss, ts = [], [], []
        for _ in range(n):
            x, s, t = self.sample()
            xs.append(x)
            ss.append(s)
            ts.append(t)
        return _SimpleBatch(np.stack(xs), np.stack(ss), time_features(ts), ts)

    def stats(self, n_samples: int = 256) -> tuple[np.ndarray, np.ndarray]:
        b = self.batch(n_samples)
        return b.x.mean(axis=(0, 2, 3)).astype(np.float32), b.x.std(axis=(0, 2, 3)).astype(np.float32)


def xr_index(idx: np.ndarray) -> Any:
    """Index array for ``Dataset.isel`` (a contiguous slice when possible, for lazy stores)."""
    if idx.size and np.all(np.diff(idx) == 1):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


@dataclass(frozen=True)
class _SimpleBatch:
    x: np.ndarray
    static: np.ndarray
    time_feats: np.ndarray
    times: list


def make_stream(cfg: TrainConfig, seed: int = 0):
    """The training stream named by ``cfg.data`` (``"demo"`` or an ERA5 path)."""
    if cfg.data == "demo":
        from ..data_stream import TrainingStream
        from ..demo_world import DemoWorld

        return TrainingStream(world=DemoWorld(cfg.world_seed), crop=cfg.crop, seed=seed,
                              cyclone_fraction=cfg.cyclone_fraction)
    return Era5CropStream(cfg.data, crop=cfg.crop, seed=seed)


def _step_seed(*key: int) -> int:
    """A 63-bit seed derived from ``key`` (NumPy SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in key]).generate_state(2, np.uint32)
               .astype(np.uint64).dot(np.array([1, 1 << 32], dtype=np.uint64)) & ((1 << 63) - 1))


def _reseed(stream, seed: int) -> None:
    """Make the stream's next draws a function of ``seed`` (``reseed()`` or its ``rng`` attribute)."""
    if hasattr(stream, "reseed"):
        stream.reseed(seed)
    elif hasattr(stream, "rng"):
        stream.rng = np.random.default_rng(seed)


def _fresh_batches(stream, n: int, seed: int, rank: int, start: int, prefetch: int) -> Iterator[Any]:
    """Fresh batches ``start, start+1, …``; batch ``k`` depends only on ``(seed, rank, k)``."""

    def make(k: int):
        _reseed(stream, _step_seed(seed, rank, k, 1))
        return stream.batch(n)

    if prefetch <= 0:
        k = start
        while True:
            yield make(k)
            k += 1
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def work() -> None:
        k = start
        while not stop.is_set():
            try:
                item: Any = ("ok", make(k))
            except BaseException as exc:  # handed to the consumer
                item = ("error", exc)
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.2)
                    break
                except queue.Full:
                    continue
            if item[0] == "error":
                return
            k += 1

    th = threading.Thread(target=work, daemon=True, name="zssd-train-data")
    th.start()
    try:
        while True:
            kind, val = q.get()
            if kind == "error":
                raise val
            yield val
    finally:
        stop.set()


def _batches(stream, cfg: TrainConfig, rank: int, start: int) -> Iterator[Any]:
    """Training batches for steps ``start, start+1, …`` (deterministic in ``(seed, rank, step)``).

    With ``data_reuse = R > 1`` step ``s`` samples ``batch`` crops from the fresh
    batches ``k(s)-data_pool+1 … k(s)``, ``k(s) = s // R`` (a sliding pool).
    """
    R, P = cfg.data_reuse, cfg.data_pool
    if R == 1:
        yield from _fresh_batches(stream, cfg.batch, cfg.seed, rank, start, cfg.prefetch)
        return
    k_first = max(0, start // R - P + 1)
    fresh = _fresh_batches(stream, cfg.batch, cfg.seed, rank, k_first, cfg.prefetch)
    pool: dict[int, Any] = {}
    try:
        s = start
        while True:
            k = s // R
            while not pool or max(pool) < k:
                pool[k_first + len(pool) if not pool else max(pool) + 1] = next(fresh)
            for old in [j for j in pool if j <= k - P]:
                del pool[old]
            keys = sorted(pool)
            rng = np.random.default_rng(_step_seed(cfg.seed, rank, s, 5))
            pick = rng.choice(len(keys) * cfg.batch, cfg.batch, replace=False)  # distinct crops
            src = [(pool[keys[j // cfg.batch]], j % cfg.batch) for j in pick]
            yield _SimpleBatch(np.stack([np.asarray(b.x)[i] for b, i in src]),
                               np.stack([np.asarray(b.static)[i] for b, i in src]),
                               np.stack([np.asarray(b.time_feats)[i] for b, i in src]), [])
            s += 1
    finally:
        fresh.close()


# ---------------------------------------------------------------------- helpers
def _dist_info() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the torchrun environment (``(0, 1, 0)`` otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def _select_device(cfg: TrainConfig, local_rank: int) -> torch.device:
    if cfg.device == "cpu":
        return torch.device("cpu")
    if cfg.device == "cuda" or (cfg.device == "auto" and default_device().type == "cuda"):
        if not torch.cuda.is_available():
            raise ValueError("training config asks for device 'cuda' but CUDA is not available")
        return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    return torch.device("cpu")


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 matrix units (oneDNN AMX / AVX512-BF16)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - depends on the build
        return False


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.amp == "off":
        return None
    if cfg.amp == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_bf16() else None


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``lr * min_lr_ratio`` at ``steps``."""
    if cfg.warmup > 0 and step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(cfg.steps - cfg.warmup, 1)
    frac = min(max(step - cfg.warmup, 0) / span, 1.0)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * frac))


def machine_info(device: torch.device) -> dict:
    """Platform, CPU count, torch threads and accelerator name (for model cards)."""
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
            "device": str(device)}
    if device.type == "cuda":
        info["accelerator"] = torch.cuda.get_device_name(device)
    return info


def _loss_curve(losses: list[float], max_points: int = 400) -> dict:
    """Loss curve binned to at most ``max_points`` (bin means, bin-end steps, 1-based)."""
    n = len(losses)
    if n == 0:
        return {"step": [], "loss": []}
    edges = np.unique(np.linspace(0, n, min(max_points, n) + 1).round().astype(int))
    arr = np.asarray(losses, dtype=np.float64)
    return {"step": [int(e) for e in edges[1:]],
            "loss": [float(arr[a:b].mean()) for a, b in zip(edges[:-1], edges[1:])]}


def _atomic_torch_save(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    _atomic_write_bytes(path, buf.getvalue())


def _atomic_text(path: Path, text: str) -> None:
    _atomic_write_bytes(path, text.encode())


def load_state(path: str | os.PathLike) -> dict:
    """Read a training state file (``weights_only=True``); a directory means its ``train_state.pt``."""
    p = Path(path)
    if p.is_dir():
        p = p / STATE_FILE
    if not p.exists():
        raise FileNotFoundError(f"training state {str(p)!r} not found")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling/zip errors of a bad file
        raise ValueError(f"training state {str(p)!r} cannot be read (corrupt or not a state file): {exc}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{str(p)!r} is not a ZSSD training state file")
    return state


def _init_weights(net: torch.nn.Module, ema: torch.nn.Module, cfg: TrainConfig) -> None:
    """Start ``net`` and ``ema`` from the weights of checkpoint ``cfg.init_from`` (fine-tuning)."""
    p = Prior.load(cfg.init_from, device="cpu")
    if p.parameterization != cfg.parameterization:
        raise ValueError(f"init_from {cfg.init_from} predicts {p.parameterization!r}, the config "
                         f"{cfg.parameterization!r}")
    try:
        net.load_state_dict(p.net.state_dict())
    except RuntimeError as exc:
        raise ValueError(f"init_from {cfg.init_from}: its network differs from the config's ({exc})") from None
    ema.load_state_dict(net.state_dict())


def _data_split(cfg: TrainConfig, stream) -> dict:
    d: dict[str, Any] = {"source": cfg.data, "crop": cfg.crop}
    if cfg.data == "demo":
        d["cyclone_fraction"] = cfg.cyclone_fraction
    if cfg.init_from:
        d["init_from"] = str(cfg.init_from)
    years = getattr(stream, "years", None)
    held = getattr(stream, "heldout_years", None)
    if held is None and cfg.data == "demo":
        from ..demo_world import HELDOUT_YEARS
        held = HELDOUT_YEARS
    if cfg.data == "demo":
        d["world_seed"] = cfg.world_seed
    d["train_years"] = [int(y) for y in years] if years is not None else None
    d["heldout_years"] = [int(y) for y in held] if held is not None else None
    return d


# ---------------------------------------------------------------------- training
def train(cfg: TrainConfig, stream=None, *, resume: str | os.PathLike | None = None,
          stop_after: int | None = None, progress: bool = True,
          callback: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train (or resume training) the prior; write the EMA :class:`Prior` and the training state.

    Parameters
    ----------
    cfg
        Training configuration.
    stream
        Data stream with ``batch(n)`` (physical units) and ``stats(n)``; built
        from ``cfg`` (:func:`make_stream`) when omitted.  For exact resumption
        it must expose ``reseed(seed)`` or an ``rng`` attribute.
    resume
        Training state file (or the run directory) to continue from.
    stop_after
        Stop (and save) once this step count is reached, as if interrupted;
        the learning-rate schedule still follows ``cfg.steps``.
    progress
        Show a tqdm progress bar (rank 0).
    callback
        Called as ``callback(step, loss)`` after every step (rank 0).

    Returns
    -------
    TrainResult
    """
    threads_before = torch.get_num_threads()
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    elif cfg.prefetch > 0 and _select_device(cfg, _dist_info()[2]).type == "cpu":
        # leave a core to the data thread: oversubscribed OpenMP pools spin and stall
        torch.set_num_threads(max(1, min(threads_before, (os.cpu_count() or 2) - 1)))
    try:
        return _train(cfg, stream, resume, stop_after, progress, callback)
    finally:
        torch.set_num_threads(threads_before)


def _train(cfg: TrainConfig, stream, resume, stop_after, progress, callback) -> TrainResult:
    rank, world, local_rank = _dist_info()
    device = _select_device(cfg, local_rank)
    ddp = world > 1
    if ddp:
        import torch.distributed as dist
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    is_main = rank == 0
    out = Path(cfg.out)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)

    if stream is None:
        stream = make_stream(cfg, seed=_step_seed(cfg.seed, rank, 0))
    schedule = DiffusionSchedule(make_betas(cfg.schedule, cfg.T), kind=cfg.schedule)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = ConditionalUNet(cfg.unet)
    net.to(device)
    ema = copy.deepcopy(net).requires_grad_(False).eval()
    fused = device.type in ("cpu", "cuda")
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay,
                            fused=fused)
    step, losses, lrs, elapsed = 0, [], [], 0.0
    if cfg.init_from and resume is None:
        _init_weights(net, ema, cfg)

    if resume is not None:
        state = load_state(resume)
        saved_unet = json.loads(state["config_json"])["unet"]
        if UNetConfig.from_dict(saved_unet) != cfg.unet:
            raise ValueError(f"cannot resume: the training state's network config {saved_unet} differs from "
                             f"the config's {cfg.unet.to_dict()}")
        saved_param = json.loads(state["config_json"]).get("parameterization", "eps")
        if saved_param != cfg.parameterization:
            raise ValueError(f"cannot resume: the training state predicts {saved_param!r} but the config asks for "
                             f"{cfg.parameterization!r}")
        net.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        losses = [float(v) for v in state["losses"]]
        lrs = [float(v) for v in state["lrs"]]
        elapsed = float(state["elapsed"])
        mean, std = state["mean"].float(), state["std"].float()
        torch.set_rng_state(state["rng_cpu"])
    else:
        if is_main:
            _reseed(stream, _step_seed(cfg.seed, 0, 0, 2))
            m, s = stream.stats(cfg.stats_samples)
            mean = torch.as_tensor(np.asarray(m), dtype=torch.float32)
            std = torch.as_tensor(np.asarray(s), dtype=torch.float32).clamp_min(1e-6)
        else:
            mean = torch.zeros(len(VARIABLES))
            std = torch.ones(len(VARIABLES))
        if ddp:  # every rank normalises with rank 0's statistics
            import torch.distributed as dist
            st = torch.stack([mean, std]).to(device)
            dist.broadcast(st, 0)
            mean, std = st[0].cpu(), st[1].cpu()
    mean_d, std_d = mean.to(device).reshape(1, -1, 1, 1), std.to(device).reshape(1, -1, 1, 1)

    model: torch.nn.Module = net
    if ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(net, device_ids=[device.index] if device.type == "cuda" else None)
    amp_dtype = _amp_dtype(cfg, device)
    gamma = float(cfg.min_snr_gamma)
    weights = [float(cfg.variable_weights[v]) for v in VARIABLES] if cfg.variable_weights else None
    total = cfg.steps if stop_after is None else min(cfg.steps, int(stop_after))
    meta_base = {"data": _data_split(cfg, stream), "batch_per_rank": cfg.batch, "world_size": world,
                 "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off",
                 "objective": f"{cfg.parameterization}-mse" + (f", min-SNR gamma={gamma:g}" if gamma > 0 else "")
                 + (f", variable weights {dict(zip(VARIABLES, weights))}" if weights else ""),
                 "train_config": cfg.to_dict()}

    def make_prior() -> Prior:
        curve = _loss_curve(losses)
        drawn = getattr(stream, "cyclone_counts", None)
        if drawn is not None and drawn[1]:
            meta_base["data"]["cyclone_crops_drawn"] = {"cyclone": int(drawn[0]), "total": int(drawn[1]),
                                                        "fraction": round(drawn[0] / drawn[1], 4)}
        tail = losses[-100:]
        meta = dict(meta_base, steps=step, target_steps=cfg.steps, samples_seen=step * cfg.batch * world,
                    final_loss=float(np.mean(tail)) if tail else None, loss_curve=curve,
                    wall_time_s=round(elapsed, 1), machine=machine_info(device))
        return Prior(copy.deepcopy(ema), schedule, VARIABLES, mean, std, meta=meta,
                     parameterization=cfg.parameterization)

    def checkpoint() -> tuple[Path, Path]:
        state = {"format": STATE_FORMAT, "version": 1, "step": step, "model": net.state_dict(),
                 "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                 "losses": torch.tensor(losses, dtype=torch.float64), "lrs": torch.tensor(lrs, dtype=torch.float64),
                 "mean": mean, "std": std, "elapsed": float(elapsed), "rng_cpu": torch.get_rng_state(),
                 "config_json": json.dumps(cfg.to_dict()), "world_size": world}
        sp = out / STATE_FILE
        _atomic_torch_save(state, sp)
        card = make_prior().save(out / f"{cfg.name}.json")
        rows = io.StringIO()
        w = csv.writer(rows)
        w.writerow(["step", "loss", "lr"])
        for i, (l, r) in enumerate(zip(losses, lrs)):
            w.writerow([i + 1, f"{l:.6g}", f"{r:.6g}"])
        _atomic_text(out / "loss.csv", rows.getvalue())
        return card, sp

    bar = None
    if progress and is_main and step < total:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.steps, initial=step, desc="train prior", unit="step", dynamic_ncols=True)
    card_path = state_path = None
    batches = _batches(stream, cfg, rank, step)
    t_start = time.perf_counter() - elapsed
    model.train()
    try:
        while step < total:
            b = next(batches)
            gen = torch.Generator().manual_seed(_step_seed(cfg.seed, rank, step, 3))
            torch.manual_seed(_step_seed(cfg.seed, rank, step, 4))  # dropout masks
            x0 = (torch.from_numpy(np.asarray(b.x, dtype=np.float32)).to(device) - mean_d) / std_d
            static = torch.from_numpy(np.asarray(b.static, dtype=np.float32)).to(device)
            tf = torch.from_numpy(np.asarray(b.time_feats, dtype=np.float32)).to(device)
            B = x0.shape[0]
            t = torch.randint(0, cfg.T, (B,), generator=gen).to(device)
            noise = torch.randn(x0.shape, generator=gen).to(device)
            loss = diffusion_loss(model, schedule, x0, t, noise, static, tf, parameterization=cfg.parameterization,
                                  min_snr_gamma=gamma, variable_weights=weights, amp_dtype=amp_dtype)
            lr = lr_at(cfg, step)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            opt.step()
            d = min(cfg.ema_decay, (1.0 + step) / (10.0 + step))
            with torch.no_grad():
                for pe, p in zip(ema.parameters(), net.parameters()):
                    pe.lerp_(p, 1.0 - d)
            lval = loss.detach()
            if ddp:
                import torch.distributed as dist
                dist.all_reduce(lval)
                lval = lval / world
            lv = float(lval)
            if not math.isfinite(lv):
                raise FloatingPointError(f"training loss became {lv} at step {step + 1}; lower lr or enable grad_clip")
            losses.append(lv)
            lrs.append(lr)
            step += 1
            elapsed = time.perf_counter() - t_start
            if is_main and callback is not None:
                callback(step, lv)
            if bar is not None:
                bar.update(1)
                if step % cfg.log_every == 0 or step == total:
                    bar.set_postfix(loss=f"{np.mean(losses[-cfg.log_every:]):.4f}", lr=f"{lr:.2e}")
            out_of_time = cfg.max_minutes > 0 and elapsed > 60.0 * cfg.max_minutes
            if out_of_time:
                total = step
            if is_main and (step % cfg.checkpoint_every == 0 or step == total):
                card_path, state_path = checkpoint()
    finally:
        if bar is not None:
            bar.close()
        batches.close()
    if ddp:
        import torch.distributed as dist
        dist.barrier()
    return TrainResult(make_prior(), losses, step, card_path, state_path, elapsed)


# ---------------------------------------------------------------------- CLI
def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``zssd train`` on an argparse sub-parser collection."""
    p = subparsers.add_parser("train", help="train the diffusion prior (TOML config; torchrun for DDP)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="TOML training config")
    p.add_argument("--resume", default=None, help="training state file (or run directory) to continue from")
    p.add_argument("--steps", type=int, default=None, help="override the total number of steps")
    p.add_argument("--out", default=None, help="override the output directory")
    p.add_argument("--stop-after", type=int, default=None, metavar="STEP",
                   help="stop (and save) at this step although the learning-rate schedule runs to --steps")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(_run=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``zssd train`` from parsed arguments; returns the exit code."""
    cfg = TrainConfig.from_file(args.config)
    if args.steps is not None:
        cfg.steps = int(args.steps)
    if getattr(args, "out", None):
        cfg.out = args.out
    TrainConfig.from_dict(cfg.to_dict())  # re-validate overrides
    stop_after = getattr(args, "stop_after", None)
    if stop_after is not None and stop_after <= 0:
        raise ValueError(f"--stop-after must be a positive step, got {stop_after}")
    train(cfg, resume=args.resume, stop_after=stop_after, progress=not getattr(args, "no_progress", False))
    return 0


add_train_parser = add_parser
run_train = run


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m engine.prior.train --config FILE …``."""
    ap = argparse.ArgumentParser(prog="zssd")
    sub = ap.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = ap.parse_args(["train", *(argv if argv is not None else __import__("sys").argv[1:])])
    return int(args._run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
