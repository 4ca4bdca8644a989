"""Training of the diffusion prior: ``zssd train --config FILE [--resume PATH] [--steps N]``.

The objective (:func:`zssd_engine.prior.loss.diffusion_loss`, a function of its own) is the simplified
DDPM loss (Ho et al. 2020, eq. 14)

    L = E_{x₀, t, ε} ‖ε − ε_θ(√ᾱ_t x₀ + √(1−ᾱ_t) ε, t | statics, time)‖²,

optionally with min-SNR-γ weighting (Hang et al. 2023: ``w_t = min(SNR_t, γ)/SNR_t`` for
ε-prediction), on random crops of the normalised state.  AdamW with linear
warm-up and cosine decay, gradient clipping, an exponential moving average of
the weights (the EMA network is what :class:`~zssd_engine.prior.model.Prior` ships).
With ``parameterization = "v"`` (the shipped demo prior) the target is
v = √ᾱ_t ε − √(1−ᾱ_t) x₀ instead, with weights ``min(SNR_t, γ)/(SNR_t + 1)``.

Reproducibility and resumption: the batch, the diffusion steps/noise and the
dropout masks of step ``s`` on rank ``r`` are drawn from generators seeded by
``(seed, r, s)``, so a run resumed from its training state file follows
exactly the same loss sequence as an uninterrupted run.

Scale-out: run the same entry point under ``torchrun --nproc_per_node N``;
it uses DDP (gloo on CPU, nccl on CUDA), every rank draws its own crops
(``batch`` is per rank) and only rank 0 writes files.

Where things live: the config (a TOML file, flat keys plus an optional ``[unet]`` table) is
:class:`zssd_engine.prior.config.TrainConfig`, the loss
:func:`zssd_engine.prior.loss.diffusion_loss`, the data streams and the per-step batch schedule
:mod:`zssd_engine.data_stream`, the DDP set-up :mod:`zssd_engine.prior.distributed`; this module holds
the run itself (state, optimisation step, checkpoints, resumption).
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..data_stream import Era5CropStream, make_stream, reseed, step_seed, training_batches
from ..variables import VARIABLES
from . import distributed as ddp
from .config import TrainConfig
from .loss import diffusion_loss
from .checkpoint import _atomic_write_bytes
from .model import Prior
from .network import ConditionalUNet, UNetConfig
from .schedule import DiffusionSchedule, make_betas

__all__ = ["TrainConfig", "TrainResult", "train", "make_stream", "Era5CropStream", "STATE_FORMAT"]

STATE_FORMAT = "zssd-train-state"
STATE_FILE = "train_state.pt"


@dataclass
class TrainResult:
    """What :func:`train` returns (on every rank; files are written by rank 0 only)."""

    prior: Prior
    losses: list[float]
    step: int
    card_path: Path | None
    state_path: Path | None
    wall_time_s: float


# ---------------------------------------------------------------------- helpers
def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 matrix units (oneDNN AMX / AVX512-BF16)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - depends on the build
        return False


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``cfg.amp`` on ``device`` (``None``: full precision)."""
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
    """``torch.save`` to ``path`` atomically (a temporary file, then a rename)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    _atomic_write_bytes(path, buf.getvalue())


def _atomic_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
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
    """The card's ``data`` entry: source, crop, training and held-out years (and the demo world's settings)."""
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


# ---------------------------------------------------------------------- the run
@dataclass(eq=False)
class _Run:
    """One training run on one rank: the network, its EMA, the optimiser and the progress so far."""

    cfg: TrainConfig
    stream: Any
    device: torch.device
    rank: int
    world: int
    schedule: DiffusionSchedule
    net: torch.nn.Module
    ema: torch.nn.Module
    opt: torch.optim.Optimizer
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    step: int = 0
    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    #: seconds this process waited for its next batch (since its start or resume): the data-bound share of ``elapsed``
    data_wait: float = 0.0
    meta_base: dict = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        """Rank 0 (the only one that writes files)."""
        return self.rank == 0

    @property
    def out(self) -> Path:
        """The output directory."""
        return Path(self.cfg.out)

    def make_prior(self) -> Prior:
        """The EMA network as a :class:`Prior`, with the training record in its card."""
        cfg = self.cfg
        curve = _loss_curve(self.losses)
        drawn = getattr(self.stream, "cyclone_counts", None)
        if drawn is not None and drawn[1]:
            self.meta_base["data"]["cyclone_crops_drawn"] = {"cyclone": int(drawn[0]), "total": int(drawn[1]),
                                                             "fraction": round(drawn[0] / drawn[1], 4)}
        tail = self.losses[-100:]
        meta = dict(self.meta_base, steps=self.step, target_steps=cfg.steps,
                    samples_seen=self.step * cfg.batch * self.world,
                    final_loss=float(np.mean(tail)) if tail else None, loss_curve=curve,
                    wall_time_s=round(self.elapsed, 1), data_wait_s=round(self.data_wait, 1),
                    machine=machine_info(self.device))
        return Prior(copy.deepcopy(self.ema), self.schedule, VARIABLES, self.mean, self.std, meta=meta,
                     parameterization=cfg.parameterization)

    def checkpoint(self) -> tuple[Path, Path]:
        """Write the training state, the EMA prior and ``loss.csv``; returns ``(card, state)`` paths."""
        state = {"format": STATE_FORMAT, "version": 1, "step": self.step, "model": self.net.state_dict(),
                 "ema": self.ema.state_dict(), "optimizer": self.opt.state_dict(),
                 "losses": torch.tensor(self.losses, dtype=torch.float64),
                 "lrs": torch.tensor(self.lrs, dtype=torch.float64),
                 "mean": self.mean, "std": self.std, "elapsed": float(self.elapsed), "rng_cpu": torch.get_rng_state(),
                 "config_json": json.dumps(self.cfg.to_dict()), "world_size": self.world}
        sp = self.out / STATE_FILE
        _atomic_torch_save(state, sp)
        card = self.make_prior().save(self.out / f"{self.cfg.name}.json")
        rows = io.StringIO()
        w = csv.writer(rows)
        w.writerow(["step", "loss", "lr"])
        for i, (l, r) in enumerate(zip(self.losses, self.lrs)):
            w.writerow([i + 1, f"{l:.6g}", f"{r:.6g}"])
        _atomic_text(self.out / "loss.csv", rows.getvalue())
        return card, sp


def _new_run(cfg: TrainConfig, stream, resume: str | os.PathLike | None) -> _Run:
    """Set up a run: rank and device, the stream, the network (seeded), resumed state or fresh statistics."""
    rank, world, local_rank = ddp.dist_info()
    device = ddp.select_device(cfg.device, local_rank)
    ddp.init_process_group(device, world)
    if rank == 0:
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
    if stream is None:
        stream = make_stream(cfg, seed=step_seed(cfg.seed, rank, 0))
    schedule = DiffusionSchedule(make_betas(cfg.schedule, cfg.T), kind=cfg.schedule)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = ConditionalUNet(cfg.unet)
    net.to(device)
    ema = copy.deepcopy(net).requires_grad_(False).eval()
    fused = device.type in ("cpu", "cuda")
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay,
                            fused=fused)
    run = _Run(cfg, stream, device, rank, world, schedule, net, ema, opt)
    if cfg.init_from and resume is None:
        _init_weights(net, ema, cfg)
    if resume is not None:
        _restore(run, load_state(resume))
    else:
        run.mean, run.std = _normalisation(run)
    return run


def _restore(run: _Run, state: dict) -> None:
    """Continue from a training state: weights, optimiser, progress, statistics and the CPU RNG."""
    cfg = run.cfg
    saved = json.loads(state["config_json"])
    if UNetConfig.from_dict(saved["unet"]) != cfg.unet:
        raise ValueError(f"cannot resume: the training state's network config {saved['unet']} differs from "
                         f"the config's {cfg.unet.to_dict()}")
    saved_param = saved.get("parameterization", "eps")
    if saved_param != cfg.parameterization:
        raise ValueError(f"cannot resume: the training state predicts {saved_param!r} but the config asks for "
                         f"{cfg.parameterization!r}")
    run.net.load_state_dict(state["model"])
    run.ema.load_state_dict(state["ema"])
    run.opt.load_state_dict(state["optimizer"])
    run.step = int(state["step"])
    run.losses = [float(v) for v in state["losses"]]
    run.lrs = [float(v) for v in state["lrs"]]
    run.elapsed = float(state["elapsed"])
    run.mean, run.std = state["mean"].float(), state["std"].float()
    torch.set_rng_state(state["rng_cpu"])


def _normalisation(run: _Run) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-variable mean and std of ``stats_samples`` crops, drawn on rank 0 and shared with every rank."""
    cfg = run.cfg
    if run.is_main:
        reseed(run.stream, step_seed(cfg.seed, 0, 0, 2))
        m, s = run.stream.stats(cfg.stats_samples)
        mean = torch.as_tensor(np.asarray(m), dtype=torch.float32)
        std = torch.as_tensor(np.asarray(s), dtype=torch.float32).clamp_min(1e-6)
    else:
        mean = torch.zeros(len(VARIABLES))
        std = torch.ones(len(VARIABLES))
    if run.world > 1:  # every rank normalises with rank 0's statistics
        st = ddp.broadcast_from_main(torch.stack([mean, std]), run.device, run.world)
        mean, std = st[0], st[1]
    return mean, std


def _meta_base(run: _Run, amp_dtype: torch.dtype | None, gamma: float, weights: list[float] | None) -> dict:
    """The parts of the card's training record fixed for the whole run."""
    cfg = run.cfg
    return {"data": _data_split(cfg, run.stream), "batch_per_rank": cfg.batch, "world_size": run.world,
            "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off",
            "objective": f"{cfg.parameterization}-mse" + (f", min-SNR gamma={gamma:g}" if gamma > 0 else "")
            + (f", variable weights {dict(zip(VARIABLES, weights))}" if weights else ""),
            "train_config": cfg.to_dict()}


def _optimisation_step(run: _Run, model: torch.nn.Module, b, amp_dtype: torch.dtype | None, gamma: float,
                       weights: list[float] | None, mean_d: torch.Tensor, std_d: torch.Tensor) -> tuple[float, float]:
    """One step on batch ``b`` (seeded by ``(seed, rank, step)``): loss, AdamW, EMA; ``(loss over ranks, lr)``."""
    cfg, device, step = run.cfg, run.device, run.step
    gen = torch.Generator().manual_seed(step_seed(cfg.seed, run.rank, step, 3))
    torch.manual_seed(step_seed(cfg.seed, run.rank, step, 4))  # dropout masks
    x0 = (torch.from_numpy(np.asarray(b.x, dtype=np.float32)).to(device) - mean_d) / std_d
    static = torch.from_numpy(np.asarray(b.static, dtype=np.float32)).to(device)
    tf = torch.from_numpy(np.asarray(b.time_feats, dtype=np.float32)).to(device)
    t = torch.randint(0, cfg.T, (x0.shape[0],), generator=gen).to(device)
    noise = torch.randn(x0.shape, generator=gen).to(device)
    loss = diffusion_loss(model, run.schedule, x0, t, noise, static, tf, parameterization=cfg.parameterization,
                          min_snr_gamma=gamma, variable_weights=weights, amp_dtype=amp_dtype)
    lr = lr_at(cfg, step)
    for g in run.opt.param_groups:
        g["lr"] = lr
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.net.parameters(), cfg.grad_clip)
    run.opt.step()
    d = min(cfg.ema_decay, (1.0 + step) / (10.0 + step))
    with torch.no_grad():
        for pe, p in zip(run.ema.parameters(), run.net.parameters()):
            pe.lerp_(p, 1.0 - d)
    lv = float(ddp.mean_over_ranks(loss.detach(), run.world))
    if not math.isfinite(lv):
        raise FloatingPointError(f"training loss became {lv} at step {step + 1}; lower lr or enable grad_clip")
    return lv, lr


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
    elif cfg.prefetch > 0 and ddp.select_device(cfg.device, ddp.dist_info()[2]).type == "cpu":
        # leave a core to the data thread: oversubscribed OpenMP pools spin and stall
        torch.set_num_threads(max(1, min(threads_before, (os.cpu_count() or 2) - 1)))
    try:
        return _train(cfg, stream, resume, stop_after, progress, callback)
    finally:
        torch.set_num_threads(threads_before)


def _train(cfg: TrainConfig, stream, resume, stop_after, progress, callback) -> TrainResult:
    """The training loop of :func:`train` (thread settings are the caller's)."""
    run = _new_run(cfg, stream, resume)
    mean_d, std_d = run.mean.to(run.device).reshape(1, -1, 1, 1), run.std.to(run.device).reshape(1, -1, 1, 1)
    model = ddp.wrap_ddp(run.net, run.device, run.world)
    amp_dtype = _amp_dtype(cfg, run.device)
    gamma = float(cfg.min_snr_gamma)
    weights = [float(cfg.variable_weights[v]) for v in VARIABLES] if cfg.variable_weights else None
    total = cfg.steps if stop_after is None else min(cfg.steps, int(stop_after))
    run.meta_base = _meta_base(run, amp_dtype, gamma, weights)
    bar = None
    if progress and run.is_main and run.step < total:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.steps, initial=run.step, desc="train prior", unit="step", dynamic_ncols=True)
    card_path = state_path = None
    batches = training_batches(run.stream, cfg, run.rank, run.step)
    t_start = time.perf_counter() - run.elapsed
    model.train()
    try:
        while run.step < total:
            t_wait = time.perf_counter()
            b = next(batches)
            run.data_wait += time.perf_counter() - t_wait
            lv, lr = _optimisation_step(run, model, b, amp_dtype, gamma, weights, mean_d, std_d)
            run.losses.append(lv)
            run.lrs.append(lr)
            run.step += 1
            run.elapsed = time.perf_counter() - t_start
            if run.is_main and callback is not None:
                callback(run.step, lv)
            if bar is not None:
                bar.update(1)
                if run.step % cfg.log_every == 0 or run.step == total:
                    bar.set_postfix(loss=f"{np.mean(run.losses[-cfg.log_every:]):.4f}", lr=f"{lr:.2e}")
            if cfg.max_minutes > 0 and run.elapsed > 60.0 * cfg.max_minutes:
                total = run.step
            if run.is_main and (run.step % cfg.checkpoint_every == 0 or run.step == total):
                card_path, state_path = run.checkpoint()
    finally:
        if bar is not None:
            bar.close()
        batches.close()
    ddp.barrier(run.world)
    return TrainResult(run.make_prior(), run.losses, run.step, card_path, state_path, run.elapsed)


if __name__ == "__main__":  # ``python -m zssd_engine.prior.train --config FILE …``; the command line is zssd_engine.cli.train
    from zssd_engine.cli.train import main

    raise SystemExit(main())
