"""The :class:`Prior`: EMA network + noise schedule + normalisation.

Its checkpoint (a ``.safetensors`` of weights beside a ``.json`` model card) is written by
:meth:`Prior.save` and read by :meth:`Prior.load`; the format, its validation and the
:class:`CheckpointError` messages (naming the file and the problem) are in :mod:`zssd_engine.prior.checkpoint`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..conditioning import STATIC_CHANNELS, TIME_FEATURES, static_channels, time_features
from ..variables import VARIABLE_INFO, VARIABLES
from .network import ConditionalUNet, UNetConfig
from .checkpoint import (CARD_FORMAT, CARD_VERSION, CheckpointError, _atomic_write_bytes, read_card,
                         read_weights, resolve_checkpoint, sha256_file)
from .schedule import PARAMETERIZATIONS, DiffusionSchedule, cosine_betas, eps_from_v, predict_x0

__all__ = ["Prior", "CheckpointError", "Conditioning", "CARD_FORMAT", "default_device", "resolve_checkpoint", "sha256_file"]

#: Weight dtypes :meth:`Prior.save` writes (the card's ``weights.dtype``); loading always gives float32.
SAVE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class Conditioning:
    """Conditioning tensors of a batch: ``static [B, S, H, W]`` and ``time_feats [B, F]``."""

    static: torch.Tensor
    time_feats: torch.Tensor

    def to(self, device: torch.device | str) -> "Conditioning":
        return Conditioning(self.static.to(device), self.time_feats.to(device))


def _as_tensor(x: Any, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


class Prior:
    """A trained (or tiny test) diffusion prior over the normalised state.

    Parameters
    ----------
    net
        The ε-network (EMA weights); set to eval mode and frozen.
    schedule
        Training noise schedule.
    variables
        Channel names, in order (default :data:`zssd_engine.variables.VARIABLES`).
    mean, std
        Per-variable normalisation statistics in physical units, ``[C]``.
    meta
        Free-form training record written into the card's ``"training"`` entry.
    parameterization
        What the network outputs: ``"eps"`` (ε, Ho et al. 2020) or ``"v"`` (Salimans & Ho
        2022); :meth:`eps` always returns ε, so the samplers do not care.

    Notes
    -----
    The network models ``x = (x_phys − mean) / std``; :meth:`x0_from_eps` is Ho et al.'s eq. 15.
    """

    def __init__(self, net: ConditionalUNet, schedule: DiffusionSchedule,
                 variables: Sequence[str] = VARIABLES, mean: Sequence[float] | torch.Tensor | None = None,
                 std: Sequence[float] | torch.Tensor | None = None, meta: dict | None = None,
                 parameterization: str = "eps") -> None:
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
        self.parameterization = parameterization
        self.net = net.eval().requires_grad_(False)
        self.schedule = schedule
        self.variables = tuple(variables)
        dev = self.device
        if mean is None or std is None:
            raise ValueError("Prior needs normalisation mean and std")
        self.mean = _as_tensor(mean, dev).reshape(-1)
        self.std = _as_tensor(std, dev).reshape(-1)
        C = len(self.variables)
        if self.mean.numel() != C or self.std.numel() != C:
            raise ValueError(f"mean/std need {C} values (one per variable {self.variables}), "
                             f"got {self.mean.numel()} and {self.std.numel()}")
        if not bool(torch.isfinite(self.mean).all()) or not bool((self.std > 0).all()):
            raise ValueError("normalisation mean must be finite and std strictly positive")
        if net.cfg.in_vars != C:
            raise ValueError(f"network predicts {net.cfg.in_vars} variables but {C} were given")
        self.meta = dict(meta or {})
        self.card_data: dict | None = None  # the card this prior was loaded from

    # ------------------------------------------------------------ basics
    @property
    def config(self) -> UNetConfig:
        return self.net.cfg

    @property
    def sha256(self) -> str:
        """SHA-256 of the weights file this prior was loaded from (its card's), ``"untrained"`` if none."""
        sha = ((self.card_data or {}).get("weights") or {}).get("sha256")
        return str(sha) if sha else "untrained"

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def min_size(self) -> int:
        return self.net.min_size

    def to(self, device: torch.device | str) -> "Prior":
        """Move to ``device`` (in place; returns ``self``)."""
        device = torch.device(device)
        self.net.to(device)
        if device.type == "cpu":
            self.net.to(memory_format=torch.channels_last)
        self.mean = self.mean.to(device)
        self.std = self.std.to(device)
        return self

    def check_size(self, H: int, W: int) -> None:
        """Raise ``ValueError`` for a region the network cannot process (see :meth:`padded_shape`)."""
        m = self.min_size
        if H < m or W < m:
            raise ValueError(f"region of {H}x{W} cells is smaller than the prior's minimum of {m}x{m} cells")
        if H % m or W % m:
            raise ValueError(f"region of {H}x{W} cells is not a multiple of {m} cells in each direction "
                             f"(nearest valid size {self.padded_shape(H, W)[0]}x{self.padded_shape(H, W)[1]}); "
                             f"pad or crop the region")

    def padded_shape(self, H: int, W: int) -> tuple[int, int]:
        """Smallest valid ``(H', W') ≥ (H, W)`` for the network."""
        m = self.min_size
        return (max(m, -(-int(H) // m) * m), max(m, -(-int(W) // m) * m))

    # ------------------------------------------------------- normalisation
    def normalize(self, x_phys: torch.Tensor) -> torch.Tensor:
        """Physical units → network space: ``(x − mean) / std`` per channel (axis 1)."""
        x = _as_tensor(x_phys, self.device, x_phys.dtype if torch.is_tensor(x_phys) else torch.float32)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return (x - self.mean.to(x.dtype).reshape(shape)) / self.std.to(x.dtype).reshape(shape)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Network space → physical units."""
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return x * self.std.to(x.dtype).reshape(shape) + self.mean.to(x.dtype).reshape(shape)

    # ------------------------------------------------------------ network
    def conditioning(self, times: Sequence | Any, grid, statics=None) -> Conditioning:
        """Static channels and time features for ``times`` on ``grid`` (statics default: the demo pack)."""
        if statics is None:
            from ..statics import load_statics
            statics = load_statics()
        tf = time_features(times)
        tlist = list(times) if isinstance(times, (list, tuple)) else [times]
        dem, land = statics.region(grid)
        st = np.stack([static_channels(grid, dem, land, t) for t in tlist])
        return Conditioning(torch.from_numpy(st).to(self.device), torch.from_numpy(tf).to(self.device))

    def eps(self, x_t: torch.Tensor, t: torch.Tensor | int | float, static: torch.Tensor | Conditioning,
            time_feats: torch.Tensor | None = None) -> torch.Tensor:
        """ε̂(x_t, t | statics, time) — the network's noise prediction.

        ``static`` may be a :class:`Conditioning` (then ``time_feats`` is omitted).
        A batch of conditioning of size 1 is broadcast to the batch of ``x_t``.
        """
        if time_feats is None:
            if not hasattr(static, "time_feats"):
                raise TypeError("eps() needs time_feats, or a Conditioning as third argument")
            static, time_feats = static.static, static.time_feats
        dev, dt = x_t.device, x_t.dtype
        static = _as_tensor(static, dev, dt)
        time_feats = _as_tensor(time_feats, dev, dt)
        if static.ndim == 3:
            static = static[None]
        if time_feats.ndim == 1:
            time_feats = time_feats[None]
        B = x_t.shape[0]
        if static.shape[0] == 1 and B > 1:
            static = static.expand(B, *static.shape[1:])
        if time_feats.shape[0] == 1 and B > 1:
            time_feats = time_feats.expand(B, -1)
        t = torch.as_tensor(t, device=dev)
        out = self.net(x_t, t, static, time_feats)
        if self.parameterization == "v":
            out = eps_from_v(self.schedule, x_t, t, out)
        return out

    def x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor | int, eps: torch.Tensor) -> torch.Tensor:
        """x̂₀ = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t  (Ho et al. 2020, eq. 15)."""
        return predict_x0(self.schedule, x_t, torch.as_tensor(t), eps)

    # ------------------------------------------------------------ constructors
    @classmethod
    def tiny(cls, seed: int = 0, T: int = 1000) -> "Prior":
        """A tiny untrained prior (random non-zero outputs) for fast contract tests of samplers."""
        g = torch.Generator().manual_seed(int(seed))
        cfg = UNetConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_levels=(1,),
                         token_dim=16, heads=2, norm_groups=4)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            net = ConditionalUNet(cfg)
        with torch.no_grad():  # replace the zero-inits so the tiny net's output is not identically 0
            for name, p in net.named_parameters():
                if p.ndim > 1 and float(p.abs().max()) == 0.0:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        info = [VARIABLE_INFO[v] for v in VARIABLES]
        mean = [{"t2m": 285.0, "msl": 101000.0, "u10": 0.0, "v10": 0.0}[i.name] for i in info]
        std = [{"t2m": 15.0, "msl": 1200.0, "u10": 6.0, "v10": 5.0}[i.name] for i in info]
        sched = DiffusionSchedule(cosine_betas(T), kind="cosine")
        prior = cls(net, sched, VARIABLES, mean, std, meta={"note": f"tiny untrained test prior (seed {seed})"})
        return prior.to("cpu")

    # ------------------------------------------------------------ persistence
    def card(self, weights_file: str | None = None, sha256: str | None = None,
             n_bytes: int | None = None, dtype: str = "float32") -> dict:
        """The JSON model card (without weights info unless given)."""
        card = {
            "format": CARD_FORMAT,
            "format_version": CARD_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "variables": list(self.variables),
            "units": [VARIABLE_INFO[v].units if v in VARIABLE_INFO else "" for v in self.variables],
            "normalization": {"mean": [float(v) for v in self.mean.cpu()],
                              "std": [float(v) for v in self.std.cpu()]},
            "unet": self.config.to_dict(),
            "schedule": self.schedule.spec(),
            "parameterization": self.parameterization,
            "static_channels": list(STATIC_CHANNELS),
            "time_features": list(TIME_FEATURES),
            "n_params": int(sum(p.numel() for p in self.net.parameters())),
            "torch_version": torch.__version__,
            "training": self.meta,
        }
        if weights_file is not None:
            card["weights"] = {"file": weights_file, "sha256": sha256, "bytes": n_bytes, "dtype": dtype}
        return card

    def save(self, path: str | os.PathLike, dtype: str = "float32") -> Path:
        """Write ``<name>.safetensors`` + ``<name>.json`` (atomically); returns the card path.

        ``path`` is a directory (files ``prior.*`` inside, created if needed) or a
        ``.json``/``.safetensors`` file name.  ``dtype``: ``"float32"`` (shipped priors) or ``"bfloat16"``
        (half the bytes: a starting point carried to a GPU lease for ``init_from``; :meth:`load` returns float32).
        """
        from safetensors.torch import save

        if dtype not in SAVE_DTYPES:
            raise ValueError(f"dtype {dtype!r}: choose from {', '.join(SAVE_DTYPES)}")
        card_path, w_path = resolve_checkpoint(path, for_write=True)
        card_path.parent.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().to("cpu", SAVE_DTYPES[dtype]).contiguous() for k, v in self.net.state_dict().items()}
        blob = save(sd, metadata={"format": CARD_FORMAT, "card": card_path.name})
        _atomic_write_bytes(w_path, blob)
        sha = hashlib.sha256(blob).hexdigest()
        card = self.card(w_path.name, sha, len(blob), dtype)
        _atomic_write_bytes(card_path, (json.dumps(card, indent=1, allow_nan=False) + "\n").encode())
        return card_path

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str | None = None) -> "Prior":
        """Load a checkpoint written by :meth:`save` (validated; see :class:`CheckpointError`)."""
        card_path, w_path = resolve_checkpoint(path)
        card = read_card(card_path, w_path)
        net = read_weights(card_path, w_path, card)
        prior = cls(net, card.schedule, card.variables, card.mean, card.std, meta=card.data.get("training") or {},
                    parameterization=card.parameterization)
        prior.card_data = card.data
        return prior.to(device if device is not None else default_device())
