"""The :class:`Prior`: EMA network + noise schedule + normalisation, and its checkpoint format.

A checkpoint is two files side by side:

* ``<name>.safetensors`` — the EMA state dict of :class:`~engine.prior.network.ConditionalUNet`
  (float32; loaded with :func:`safetensors.torch.load_file`, never unpickled);
* ``<name>.json`` — the model card: network config, noise schedule, variables
  and their normalisation statistics, the training data split, steps, loss
  curve, wall time, machine, torch version and the SHA-256 of the weights.

Loading validates everything and raises :class:`CheckpointError` (a
``ValueError``) with a message naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..conditioning import STATIC_CHANNELS, TIME_FEATURES, static_channels, time_features
from ..variables import VARIABLE_INFO, VARIABLES
from .network import ConditionalUNet, UNetConfig
from .schedule import PARAMETERIZATIONS, DiffusionSchedule, cosine_betas, eps_from_v, predict_x0

__all__ = ["Prior", "CheckpointError", "Conditioning", "CARD_FORMAT", "default_device", "resolve_checkpoint", "sha256_file"]

CARD_FORMAT = "zssd-prior"
CARD_VERSION = 1
DEFAULT_NAME = "prior"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing/corrupt file, card and weights disagree, …"""


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


def resolve_checkpoint(path: str | os.PathLike, for_write: bool = False) -> tuple[Path, Path]:
    """``(card.json, weights.safetensors)`` for a directory, a ``.json`` or a ``.safetensors`` path.

    When reading, a directory must hold ``prior.json`` or exactly one ``*.json``
    card; when writing, a directory gets ``prior.json``/``prior.safetensors``.
    """
    p = Path(path)
    if p.suffix in (".json", ".safetensors"):
        stem = p.with_suffix("")
        return stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    if for_write and (p.is_dir() or not p.exists()):
        return p / f"{DEFAULT_NAME}.json", p / f"{DEFAULT_NAME}.safetensors"
    if p.is_dir():
        card = p / f"{DEFAULT_NAME}.json"
        if not card.exists():
            cards = sorted(p.glob("*.json"))
            if len(cards) == 1:
                card = cards[0]
            elif len(cards) > 1:
                raise CheckpointError(f"checkpoint directory {str(p)!r} holds several model cards "
                                      f"{[c.name for c in cards]}; pass the .json file to use")
            else:
                raise CheckpointError(f"no model card (*.json) in checkpoint directory {str(p)!r}")
        return card, card.with_suffix(".safetensors")
    if not p.exists():
        raise CheckpointError(f"checkpoint {str(p)!r} not found (expected a directory, a .json card or a "
                              f".safetensors file)")
    raise CheckpointError(f"checkpoint path {str(p)!r} must be a directory, a .json card or a .safetensors file")


def sha256_file(path: Path) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary sibling, then ``os.replace`` (readers never see a partial file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
        Channel names, in order (default :data:`engine.variables.VARIABLES`).
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
             n_bytes: int | None = None) -> dict:
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
            card["weights"] = {"file": weights_file, "sha256": sha256, "bytes": n_bytes, "dtype": "float32"}
        return card

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``<name>.safetensors`` + ``<name>.json`` (atomically); returns the card path.

        ``path`` is a directory (files ``prior.*`` inside, created if needed) or a
        ``.json``/``.safetensors`` file name.
        """
        from safetensors.torch import save

        card_path, w_path = resolve_checkpoint(path, for_write=True)
        card_path.parent.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.net.state_dict().items()}
        blob = save(sd, metadata={"format": CARD_FORMAT, "card": card_path.name})
        _atomic_write_bytes(w_path, blob)
        sha = hashlib.sha256(blob).hexdigest()
        card = self.card(w_path.name, sha, len(blob))
        _atomic_write_bytes(card_path, (json.dumps(card, indent=1, allow_nan=False) + "\n").encode())
        return card_path

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str | None = None) -> "Prior":
        """Load a checkpoint written by :meth:`save` (validated; see :class:`CheckpointError`)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        card_path, w_path = resolve_checkpoint(path)
        where = f"checkpoint {str(card_path)!r}"
        if not card_path.exists():
            raise CheckpointError(f"model card {str(card_path)!r} not found (a checkpoint needs both "
                                  f"{card_path.name} and {w_path.name})")
        try:
            card = json.loads(card_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{where}: model card is not valid JSON ({exc})") from None
        if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
            raise CheckpointError(f"{where}: not a ZSSD prior card (expected \"format\": \"{CARD_FORMAT}\")")
        if int(card.get("format_version", 0)) > CARD_VERSION:
            raise CheckpointError(f"{where}: card format_version {card.get('format_version')} is newer than "
                                  f"this code supports ({CARD_VERSION})")
        for key in ("variables", "unet", "schedule"):
            if key not in card:
                raise CheckpointError(f"{where}: model card has no {key!r} entry")
        variables = tuple(card["variables"])
        norm = card.get("normalization")
        if not isinstance(norm, dict) or "mean" not in norm or "std" not in norm:
            raise CheckpointError(f"{where}: model card has no normalisation statistics "
                                  f"(\"normalization\": {{\"mean\": [...], \"std\": [...]}})")
        try:
            mean = [float(v) for v in norm["mean"]]
            std = [float(v) for v in norm["std"]]
        except (TypeError, ValueError):
            raise CheckpointError(f"{where}: normalisation statistics must be lists of numbers") from None
        if len(mean) != len(variables) or len(std) != len(variables):
            raise CheckpointError(f"{where}: normalisation statistics have {len(mean)} means and {len(std)} "
                                  f"stds for {len(variables)} variables {list(variables)}")
        if not all(math.isfinite(m) for m in mean) or not all(math.isfinite(s) and s > 0 for s in std):
            raise CheckpointError(f"{where}: normalisation means must be finite and stds positive, "
                                  f"got mean={mean}, std={std}")
        try:
            cfg = UNetConfig.from_dict(card["unet"])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: invalid network config: {exc}") from None
        if cfg.in_vars != len(variables):
            raise CheckpointError(f"{where}: network config predicts {cfg.in_vars} variables but the card "
                                  f"lists {len(variables)}: {list(variables)}")
        try:
            schedule = DiffusionSchedule.from_spec(card["schedule"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: invalid noise schedule {card['schedule']!r}: {exc}") from None
        # ----- weights
        if not w_path.exists():
            raise CheckpointError(f"{where}: weights file {str(w_path)!r} not found")
        expected = (card.get("weights") or {}).get("sha256")
        if expected:
            actual = sha256_file(w_path)
            if actual != expected:
                raise CheckpointError(f"{where}: weights file {w_path.name} is corrupt or was modified: "
                                      f"sha256 {actual[:16]}… does not match the card's {expected[:16]}…")
        try:
            sd = load_file(str(w_path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{where}: cannot read weights file {w_path.name} "
                                  f"(corrupt or truncated safetensors): {exc}") from None
        net = ConditionalUNet(cfg)
        ref = net.state_dict()
        missing = sorted(set(ref) - set(sd))
        unexpected = sorted(set(sd) - set(ref))
        shape_bad = [f"{k} {tuple(sd[k].shape)} vs config {tuple(ref[k].shape)}"
                     for k in sorted(set(ref) & set(sd)) if sd[k].shape != ref[k].shape]
        if missing or unexpected or shape_bad:
            parts = []
            if missing:
                parts.append(f"missing keys {_few(missing)}")
            if unexpected:
                parts.append(f"unexpected keys {_few(unexpected)}")
            if shape_bad:
                parts.append(f"shape mismatch {_few(shape_bad)}")
            raise CheckpointError(f"{where}: weights do not match the network config: " + "; ".join(parts))
        bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            raise CheckpointError(f"{where}: weights contain NaN/inf in {_few(bad)}")
        net.load_state_dict({k: v.to(ref[k].dtype) for k, v in sd.items()})
        param = card.get("parameterization", "eps")
        if param not in PARAMETERIZATIONS:
            raise CheckpointError(f"{where}: unknown parameterization {param!r} (known: {', '.join(PARAMETERIZATIONS)})")
        prior = cls(net, schedule, variables, mean, std, meta=card.get("training") or {}, parameterization=param)
        prior.card_data = card
        return prior.to(device if device is not None else default_device())


def _few(items: list[str], n: int = 5) -> str:
    s = ", ".join(items[:n])
    return f"[{s}{', …' if len(items) > n else ''}] ({len(items)} in all)" if len(items) > n else f"[{s}]"
