"""Priors for the pipeline: the shipped demo checkpoint, the process's one prior cache, checkpoint hashes.

Every caller in a process — the CLI, the evaluation, a batch worker, the dashboard's sessions — gets
its prior from :func:`load_prior`, which keeps the last :data:`CACHE_SIZE` loaded priors keyed by the
checkpoint's resolved path, the size, modification time and inode of its two files, and the device: a
checkpoint rewritten on disk is loaded afresh, and two threads asking at once load it once.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from ..paths import ASSETS

__all__ = ["DEFAULT_CHECKPOINT", "CACHE_SIZE", "checkpoint_identity", "load_prior", "default_prior", "prior_loads", "prior_sha256"]

#: The shipped prior: v6, v4 fine-tuned on the demo world with ERA5's sea-level reduction over terrain and surface
#: lapse rate (``configs/demo_prior_v6.toml``, ``benchmarks/results/prior_v6.md``).  The earlier priors are in git
#: history, not in ``assets/``: ``_v4`` (v6's starting point, left 2026-12-05)
#: ``git show d4efa4c:assets/checkpoints/zssd_demo_prior_v4.safetensors``; ``_v2`` (v4's starting point, left
#: 2026-12-03)
#: ``git show 7bf266b:assets/checkpoints/zssd_demo_prior_v2.safetensors``; the round-3 ``zssd_demo_prior`` (left
#: 2026-12-04, so a GPU lease's tree can carry a starting point)
#: ``git show c901c8f:assets/checkpoints/zssd_demo_prior.safetensors``.
DEFAULT_CHECKPOINT = ASSETS / "checkpoints" / "zssd_demo_prior_v6.safetensors"
CACHE_SIZE = 4

_CACHE: "OrderedDict[tuple, Any]" = OrderedDict()
_LOADS: list[str] = []
_LOCK = threading.Lock()


def _stat(f: Path):
    try:
        return f.stat()
    except OSError:
        return None


def checkpoint_identity(path: str | os.PathLike) -> tuple:
    """The checkpoint's resolved card path and the size, mtime and inode of its card and weights: it changes
    whenever either file is rewritten (the cache key of :func:`load_prior`)."""
    from ..prior.checkpoint import resolve_checkpoint

    card, weights = resolve_checkpoint(path)
    stats = [(st.st_size, st.st_mtime_ns, st.st_ino) if (st := _stat(f)) else None for f in (card, weights)]
    return (str(card.resolve()), *stats)


def load_prior(path: str | os.PathLike | None = None, device: str | None = None, tiny_seed: int = 0):
    """Load a checkpoint (``.safetensors`` + JSON card) through the process's one cache.

    ``path="tiny"`` gives ``Prior.tiny(tiny_seed)`` — an *untrained* network for smoke tests only
    (cached too, per seed).  ``None`` is :data:`DEFAULT_CHECKPOINT`.
    """
    from ..prior.model import Prior

    tiny = path is not None and str(path) == "tiny"
    if tiny:
        key: tuple = ("tiny", int(tiny_seed), device)
    else:
        p = Path(path) if path is not None else DEFAULT_CHECKPOINT
        if not p.exists():
            hint = ("train one with `zssd train --config …` or pass --checkpoint PATH"
                    if path is None else "check the path")
            raise FileNotFoundError(f"prior checkpoint {p} not found; {hint}")
        key = (*checkpoint_identity(p), device)
    with _LOCK:  # held while loading, so a second caller waits for the first load instead of repeating it
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        if tiny:
            prior = Prior.tiny(int(tiny_seed)) if device is None else Prior.tiny(int(tiny_seed)).to(device)
        else:
            prior = Prior.load(p, **({} if device is None else {"device": device}))
        _CACHE[key] = prior
        _LOADS.append(str(key[0]) if not tiny else f"tiny-{tiny_seed}")
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
        return prior


def prior_loads() -> list[str]:
    """The checkpoints this process has loaded from disk (or built, ``tiny-SEED``), one entry per load."""
    with _LOCK:
        return list(_LOADS)


def default_prior(device: str | None = None):
    """The shipped demo prior (:data:`DEFAULT_CHECKPOINT`, ``assets/checkpoints/zssd_demo_prior_v6.safetensors``)."""
    return load_prior(None, device)


def prior_sha256(prior) -> str:
    """The checkpoint's sha256 (:attr:`Prior.sha256`; ``"untrained"`` for ``Prior.tiny``)."""
    return prior.sha256
