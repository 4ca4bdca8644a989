"""The checkpoint format of a :class:`~zssd_engine.prior.model.Prior`: paths, the model card, the weights.

A checkpoint is two files side by side:

* ``<name>.safetensors`` — the EMA state dict of :class:`~zssd_engine.prior.network.ConditionalUNet`
  (float32; loaded with :func:`safetensors.torch.load_file`, never unpickled);
* ``<name>.json`` — the model card: network config, noise schedule, variables
  and their normalisation statistics, the training data split, steps, loss
  curve, wall time, machine, torch version and the SHA-256 of the weights.

:func:`read_card` and :func:`read_weights` validate everything and raise :class:`CheckpointError`
(a ``ValueError``) with a message naming the file and the problem; :meth:`Prior.load` is the two in turn.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from .network import ConditionalUNet, UNetConfig
from .schedule import PARAMETERIZATIONS, DiffusionSchedule

__all__ = ["CARD_FORMAT", "CARD_VERSION", "CheckpointError", "Card", "resolve_checkpoint", "sha256_file",
           "read_card", "read_weights"]

CARD_FORMAT = "zssd-prior"
CARD_VERSION = 1
DEFAULT_NAME = "prior"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing/corrupt file, card and weights disagree, …"""


@dataclass(frozen=True)
class Card:
    """A validated model card: what :class:`~zssd_engine.prior.model.Prior` is built from."""

    data: dict
    variables: tuple[str, ...]
    mean: list[float]
    std: list[float]
    config: UNetConfig
    schedule: DiffusionSchedule
    parameterization: str


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


def read_card(card_path: Path, w_path: Path) -> Card:
    """Read and validate the model card ``card_path`` (``w_path``: its weights, for the messages)."""
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
    mean, std = _normalization(where, card.get("normalization"), variables)
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
    param = card.get("parameterization", "eps")
    if param not in PARAMETERIZATIONS:
        raise CheckpointError(f"{where}: unknown parameterization {param!r} (known: {', '.join(PARAMETERIZATIONS)})")
    return Card(card, variables, mean, std, cfg, schedule, param)


def _normalization(where: str, norm, variables: tuple[str, ...]) -> tuple[list[float], list[float]]:
    """The card's per-variable normalisation ``(mean, std)``, checked for shape and finiteness."""
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
    return mean, std


def read_weights(card_path: Path, w_path: Path, card: Card) -> ConditionalUNet:
    """The network of ``card`` with the weights of ``w_path`` (sha256, keys, shapes, finiteness checked)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    where = f"checkpoint {str(card_path)!r}"
    if not w_path.exists():
        raise CheckpointError(f"{where}: weights file {str(w_path)!r} not found")
    expected = (card.data.get("weights") or {}).get("sha256")
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
    net = ConditionalUNet(card.config)
    ref = net.state_dict()
    missing = sorted(set(ref) - set(sd))
    unexpected = sorted(set(sd) - set(ref))
    shape_bad = [f"{k} {tuple(sd[k].shape)} vs config {tuple(ref[k].shape)}"
                 for k in sorted(set(ref) & set(sd)) if sd[k].shape != ref[k].shape]
    if missing or unexpected or shape_bad:
        parts = ([f"missing keys {_few(missing)}"] if missing else []) + \
                ([f"unexpected keys {_few(unexpected)}"] if unexpected else []) + \
                ([f"shape mismatch {_few(shape_bad)}"] if shape_bad else [])
        raise CheckpointError(f"{where}: weights do not match the network config: " + "; ".join(parts))
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{where}: weights contain NaN/inf in {_few(bad)}")
    net.load_state_dict({k: v.to(ref[k].dtype) for k, v in sd.items()})
    return net


def _few(items: list[str], n: int = 5) -> str:
    s = ", ".join(items[:n])
    return f"[{s}{', …' if len(items) > n else ''}] ({len(items)} in all)" if len(items) > n else f"[{s}]"
