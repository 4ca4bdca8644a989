"""What a batch is: its arguments (:class:`BatchSpec`), the validated plan, results and reports.

Plain, picklable values shared by the client (planning, the store, the run loop) and the
workers (:mod:`zssd_engine.batch.worker`), plus the constants of the store layout and the
per-case seed rule (:func:`case_seed`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..grids import Region
from ..methods import CLASSICAL, DIFFUSION, method_names

__all__ = [
    "BatchError", "BatchSpec", "PriorRef", "BatchPlan", "CaseResult", "BatchReport", "case_seed",
    "checkpoint_hashes", "METHODS", "SAMPLER_METHODS", "DETERMINISTIC_METHODS", "GUIDED_METHODS",
    "PARAMS_ATTR", "LAYOUT_VERSION", "LOCK_NAME", "DEFAULT_STEPS", "ABORT_AFTER_FAILURES",
]

#: Methods ``zssd batch`` accepts, from the registry :data:`zssd_engine.methods.METHODS` (samplers first).
SAMPLER_METHODS: tuple[str, ...] = method_names(kind=DIFFUSION)
DETERMINISTIC_METHODS: tuple[str, ...] = method_names(kind=CLASSICAL)
METHODS: tuple[str, ...] = SAMPLER_METHODS + DETERMINISTIC_METHODS
#: Methods that take a guidance scale ζ.
GUIDED_METHODS: tuple[str, ...] = method_names(guided=True)
#: Global attribute holding the run parameters (JSON) compared on resume.
PARAMS_ATTR = "zssd_batch_params"
#: Version of the store layout written here.
LAYOUT_VERSION = 1
LOCK_NAME = ".zssd_batch.lock"
DEFAULT_STEPS = 100  # as ``zssd downscale``
#: Stop when this many cases failed before any succeeded (a systematic error, not a bad time step).
ABORT_AFTER_FAILURES = 3
_EPOCH = pd.Timestamp("1970-01-01")


class BatchError(ValueError):
    """A batch that cannot be run as asked (message says why)."""


@dataclass(frozen=True)
class BatchSpec:
    """What to compute.  All fields are plain values (picklable, JSON-able).

    Parameters
    ----------
    gcm
        GCM ``source_id`` (pseudo-GCM, paired task ``x6/x10/x20``, or the real ``MPI-ESM-LR`` file).
    start, end
        First and last time (ISO strings; ``end`` inclusive when on the ``freq`` grid).
    region
        ``"S,N,W,E"`` in degrees.
    method
        ``"zssd"`` (also ``"dps"``, ``"ddrm"``), ``"bilinear"``, ``"lapse"`` or ``"bcsd"``.
    freq
        pandas frequency of the time axis (``"6h"``, ``"1D"``, ``"MS"`` …).
    members
        Ensemble size (sampling methods; deterministic baselines store one member).
    steps
        Sampler steps (sampling methods only).
    seed
        Base seed (non-negative); per-case seeds come from :func:`case_seed`.
    checkpoint
        Prior checkpoint: a path, ``"tiny"``/``"tiny:SEED"`` (untrained test network),
        ``"default"``, or ``None`` (env ``ZSSD_PRIOR``, else ``"default"``).
    guidance_scale
        ζ for ``zssd``/``dps`` (``None``: the tuned default for ``steps``, resolved once when the
        store is created and reused on resume).
    gcm_files
        The user's own input files (``--gcm-file``; :func:`zssd_engine.user_files.open_gcm_files`); ``gcm``
        is then their file-set name ``file:<stem>``.
    """

    gcm: str
    start: str
    end: str
    region: str
    method: str
    freq: str = "6h"
    members: int = 1
    steps: int = DEFAULT_STEPS
    seed: int = 0
    checkpoint: str | None = None
    guidance_scale: float | None = None
    gcm_files: tuple[str, ...] = ()

    @property
    def files(self) -> dict | None:
        """The ``files`` mapping of :func:`zssd_engine.pipeline.prepare_case` (``None`` without ``gcm_files``)."""
        return {self.gcm: [Path(f) for f in self.gcm_files]} if self.gcm_files else None

    @property
    def deterministic(self) -> bool:
        """Whether the method is a deterministic baseline (one member, no prior)."""
        return self.method in DETERMINISTIC_METHODS


#: :attr:`PriorRef.key` -> the checkpoint's file identity when its hashes last matched (this process).
_VERIFIED: dict[str, tuple] = {}


@dataclass(frozen=True)
class PriorRef:
    """How a worker obtains the prior: ``kind`` is ``"tiny"``, ``"file"`` or ``"default"``."""

    kind: str
    path: str = ""
    seed: int = 0
    sha256: str = ""       #: weights (the model card's ``weights.sha256``), or ``tiny-SEED``
    card_sha256: str = ""  #: the model card file (normalisation statistics, schedule, config)

    @property
    def key(self) -> str:
        """The reference as text (kind, path, seed and both hashes): what a worker has checked."""
        return f"{self.kind}:{self.path}:{self.seed}:{self.sha256}:{self.card_sha256}"

    @property
    def label(self) -> str:
        """Human-readable name, recorded as the store's ``checkpoint`` attribute."""
        if self.kind == "tiny":
            return f"tiny (untrained test network, seed {self.seed})"
        return self.path or self.kind

    def load(self):
        """The prior, from the process's prior cache (:func:`zssd_engine.pipeline.load_prior`); a file is first
        checked against the hashes the batch was planned with."""
        from .. import pipeline

        if self.kind == "tiny":
            return pipeline.load_prior("tiny", tiny_seed=self.seed)
        if self.kind == "file":
            # hash the files once per file identity, not once per case: a rewritten file is hashed again
            identity = pipeline.checkpoint_identity(self.path)
            if _VERIFIED.get(self.key) != identity:
                if checkpoint_hashes(Path(self.path)) != (self.sha256, self.card_sha256):
                    raise BatchError(f"checkpoint {self.path} on this worker differs from the one the batch was "
                                     f"started with (weights SHA-256 {self.sha256[:12]}…)")
                _VERIFIED[self.key] = identity
            return pipeline.load_prior(self.path)
        raise BatchError(f"unknown prior reference kind {self.kind!r}")


@dataclass(frozen=True)
class BatchPlan:
    """A validated batch: the spec plus everything derived from it."""

    spec: BatchSpec
    out: Path
    times: pd.DatetimeIndex
    region: Region
    lat: np.ndarray
    lon: np.ndarray
    lat_bounds: np.ndarray
    lon_bounds: np.ndarray
    members: int
    prior: PriorRef | None
    params: dict
    exists: bool
    guidance_scale: float | None = None

    @property
    def n(self) -> int:
        """Number of time steps (cases)."""
        return len(self.times)


@dataclass
class CaseResult:
    """What a task returns: arrays in store order for one time step."""

    index: int
    time: pd.Timestamp
    arrays: dict[str, np.ndarray]
    seconds: float
    worker: str = ""


@dataclass
class BatchReport:
    """Outcome of :func:`zssd_engine.batch.run_batch`."""

    store: Path
    total: int
    skipped: int
    computed: int
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    dashboard: str | None = None
    workers: int = 0
    interrupted: bool = False

    @property
    def cases_per_minute(self) -> float:
        """Cases computed per minute of run time (NaN before any time has passed)."""
        return 60.0 * self.computed / self.seconds if self.seconds > 0 else float("nan")


def case_seed(seed: int, time) -> int:
    """Seed of the case at ``time``: a function of ``(seed, time)`` only (32-bit)."""
    ts = pd.Timestamp(time)
    minutes = int((ts - _EPOCH) // pd.Timedelta(minutes=1))
    ss = np.random.SeedSequence([int(seed), minutes + (1 << 40)])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def checkpoint_hashes(path: Path) -> tuple[str, str]:
    """``(weights sha256, card sha256)`` of a checkpoint (directory, ``.json`` or ``.safetensors``)."""
    from ..prior.checkpoint import resolve_checkpoint, sha256_file

    card, weights = resolve_checkpoint(path)
    for f in (card, weights):
        if not f.is_file():
            raise BatchError(f"--checkpoint {path}: {f} is missing (a checkpoint is a .json card and "
                             f".safetensors weights side by side)")
    return sha256_file(weights), sha256_file(card)
