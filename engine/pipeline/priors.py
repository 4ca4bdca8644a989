"""Priors for the pipeline: the shipped demo checkpoint, loading (cached per process), checkpoint hashes."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from ..paths import ASSETS

__all__ = ["DEFAULT_CHECKPOINT", "load_prior", "default_prior", "prior_sha256"]

DEFAULT_CHECKPOINT = ASSETS / "checkpoints" / "zssd_demo_prior.safetensors"


@lru_cache(maxsize=4)
def _load_prior_cached(path: str, device: str | None):
    from ..prior.model import Prior

    kw = {} if device is None else {"device": device}
    return Prior.load(path, **kw)


def load_prior(path: str | os.PathLike | None = None, device: str | None = None):
    """Load a checkpoint (``.safetensors`` + JSON card), cached per process.

    ``path="tiny"`` gives ``Prior.tiny(0)`` — an *untrained* network for smoke tests only.
    """
    from ..prior.model import Prior

    if path is not None and str(path) == "tiny":
        return Prior.tiny(0)
    p = Path(path) if path is not None else DEFAULT_CHECKPOINT
    if not p.exists():
        hint = ("train one with `zssd train --config …` or pass --checkpoint PATH"
                if path is None else "check the path")
        raise FileNotFoundError(f"prior checkpoint {p} not found; {hint}")
    return _load_prior_cached(str(p.resolve()), device)


def default_prior(device: str | None = None):
    """The shipped demo prior ``assets/checkpoints/zssd_demo_prior.safetensors``."""
    return load_prior(None, device)


def prior_sha256(prior) -> str:
    """The checkpoint's sha256 from the prior's card (``"untrained"`` for ``Prior.tiny``)."""
    for name in ("sha256", "checkpoint_sha256"):
        v = getattr(prior, name, None)
        if isinstance(v, str) and v:
            return v
    card = getattr(prior, "card_data", None)
    if isinstance(card, dict):
        sha = (card.get("weights") or {}).get("sha256") or card.get("sha256")
        if sha:
            return str(sha)
    return "untrained"
