"""``zssd batch``: downscale many time steps on a Dask cluster into one resumable Zarr store.

One task per ``(time, region)`` case.  The same code runs on a
:class:`distributed.LocalCluster` started here (``processes=True``, sized to
the machine) or on an existing cluster (``--scheduler tcp://host:8786``), or
in-process without Dask (``--scheduler inline``, for debugging).

Design
------
* **Validation first.**  :func:`plan_batch` checks every argument (time range
  and frequency, GCM, method, region, the GCM's data coverage, members,
  steps, checkpoint, output location, and — for an existing store — that the
  stored run parameters equal the requested ones) and prepares the first case
  as a dry run, all before a cluster is started or a store is created.
* **Store.**  The whole store is created up front, atomically (written in a
  temporary directory next to it and renamed): every time from ``start`` to
  ``end`` at ``freq``, arrays filled with NaN, *one chunk per time step*,
  plus ``done(time)`` (uint8 0/1) and ``case_seed(time)``.  Layout::

      t2m, msl, u10, v10                 (time, lat, lon)          ensemble mean
      <var>_spread                       (time, lat, lon)          ensemble standard deviation
      <var>_members                      (time, member, lat, lon)  members
      done (time) uint8, case_seed (time) int64, lat_bnds, lon_bnds

  Zarr format 2 with consolidated metadata (readable by every Zarr/xarray
  version and netCDF-Java); CF-1.10 attributes on coordinates and variables;
  provenance in the global attributes (method, gcm, checkpoint and its
  SHA-256, seed, steps, members, command, …) and the run parameters as JSON
  in ``zssd_batch_params``.
* **Workers compute, the client writes.**  A task returns numpy arrays; the
  client writes the case's chunks (they belong to that time step alone, so
  writes never share a chunk) and only then sets ``done[t] = 1``.  A crash,
  a killed worker or Ctrl-C therefore loses only the cases in flight; a
  second run with the same arguments skips the done steps and rewrites the
  others in place (never appends, never duplicates).  Ctrl-C is deferred
  while one case is being written.  A lock file in the store stops two runs
  from writing it at once.
* **Model once per worker.**  The prior is loaded on first use in each
  worker process and cached in a module-level dict keyed by checkpoint kind,
  path and SHA-256 (:func:`get_prior`); a :class:`TorchThreads` worker plugin
  sets ``torch.set_num_threads(cores // (workers on the host × threads per
  worker))``.
* **Determinism.**  The seed of a case depends only on ``(seed, time)``
  (:func:`case_seed`), so results do not depend on scheduling order, on the
  number of workers, or on where the range starts.

Library API: :class:`BatchSpec`, :func:`plan_batch`, :func:`run_batch`,
:func:`compute_case`, :func:`case_seed`, :func:`open_store`, :func:`start_client`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import sys
import threading
import time as _time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from .grids import GridError, LatLonGrid, Region, era5_grid
from .variables import VARIABLE_INFO, VARIABLES

__all__ = [
    "BatchError",
    "BatchSpec",
    "BatchPlan",
    "BatchReport",
    "CaseResult",
    "PriorRef",
    "METHODS",
    "SAMPLER_METHODS",
    "DETERMINISTIC_METHODS",
    "plan_batch",
    "run_batch",
    "compute_case",
    "case_seed",
    "get_prior",
    "prior_loads",
    "open_store",
    "start_client",
    "TorchThreads",
    "add_parser",
    "run",
]

#: Methods ``zssd batch`` accepts.
SAMPLER_METHODS: tuple[str, ...] = ("zssd", "zssd-bc", "dps", "ddrm")
DETERMINISTIC_METHODS: tuple[str, ...] = ("bilinear", "lapse", "bcsd")
METHODS: tuple[str, ...] = SAMPLER_METHODS + DETERMINISTIC_METHODS
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


# ====================================================================== spec
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
        The user's own input files (``--gcm-file``; :func:`engine.user_files.open_gcm_files`); ``gcm``
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
        """The ``files`` mapping of :func:`engine.pipeline.prepare_case` (``None`` without ``gcm_files``)."""
        return {self.gcm: [Path(f) for f in self.gcm_files]} if self.gcm_files else None

    @property
    def deterministic(self) -> bool:
        return self.method in DETERMINISTIC_METHODS


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
        return f"{self.kind}:{self.path}:{self.seed}:{self.sha256}:{self.card_sha256}"

    @property
    def label(self) -> str:
        if self.kind == "tiny":
            return f"tiny (untrained test network, seed {self.seed})"
        return self.path or self.kind

    def load(self):
        """Load the prior (called once per process through :func:`get_prior`)."""
        if self.kind == "tiny":
            from .prior.model import Prior

            return Prior.tiny(self.seed)
        if self.kind == "file":
            if _checkpoint_hashes(Path(self.path)) != (self.sha256, self.card_sha256):
                raise BatchError(f"checkpoint {self.path} on this worker differs from the one the batch was "
                                 f"started with (weights SHA-256 {self.sha256[:12]}…)")
            from . import pipeline

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
    """Outcome of :func:`run_batch`."""

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
        return 60.0 * self.computed / self.seconds if self.seconds > 0 else float("nan")


# ================================================================ helpers
def case_seed(seed: int, time) -> int:
    """Seed of the case at ``time``: a function of ``(seed, time)`` only (32-bit)."""
    ts = pd.Timestamp(time)
    minutes = int((ts - _EPOCH) // pd.Timedelta(minutes=1))
    ss = np.random.SeedSequence([int(seed), minutes + (1 << 40)])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def _checkpoint_hashes(path: Path) -> tuple[str, str]:
    """``(weights sha256, card sha256)`` of a checkpoint (directory, ``.json`` or ``.safetensors``)."""
    from .prior.model import resolve_checkpoint

    card, weights = resolve_checkpoint(path)
    for f in (card, weights):
        if not f.is_file():
            raise BatchError(f"--checkpoint {path}: {f} is missing (a checkpoint is a .json card and "
                             f".safetensors weights side by side)")
    from .prior.model import sha256_file

    return sha256_file(weights), sha256_file(card)


def _parse_time(text: str, what: str) -> pd.Timestamp:
    from .conditioning import to_timestamp

    try:
        return to_timestamp(text)
    except (ValueError, TypeError) as e:
        raise BatchError(f"--{what} {text!r} is not a valid ISO time ({e})") from None


def _times(spec: BatchSpec) -> pd.DatetimeIndex:
    start = _parse_time(spec.start, "start")
    end = _parse_time(spec.end, "end")
    if end < start:
        raise BatchError(f"--end {end.isoformat()} is before --start {start.isoformat()}")
    try:
        off = pd.tseries.frequencies.to_offset(spec.freq)
    except (ValueError, TypeError):
        raise BatchError(f"--freq {spec.freq!r} is not a pandas frequency (e.g. 6h, 1D, MS)") from None
    if not start + off > start:
        raise BatchError(f"--freq {spec.freq!r} must be a positive step")
    times = pd.date_range(start, end, freq=off)
    if len(times) == 0 or times[0] != start:
        raise BatchError(f"--start {start.isoformat()} is not on the --freq {spec.freq} grid "
                         f"(first step would be {times[0].isoformat() if len(times) else 'none'})")
    return times


def _check_gcm_times(gcm: str, times: pd.DatetimeIndex, files: dict | None = None) -> None:
    """Every time must be in the GCM's data (real files have a finite time axis)."""
    from .gcm import REAL_FILES
    from .real_sources import PAIRED_REAL, REAL_SOURCES, source_dataset

    if gcm not in REAL_FILES and gcm not in REAL_SOURCES and not files:
        return  # pseudo-GCMs and paired tasks are defined at every time
    from .errors import DataError
    from .gcm import open_files
    from .readers import select_time

    if files:
        ds = open_files(files[gcm])
    else:
        ds = open_files(REAL_FILES[gcm]) if gcm in REAL_FILES else source_dataset(gcm)
    tolerance = "4h" if gcm in PAIRED_REAL else None
    monthly = str(ds.attrs.get("frequency", "")).lower().startswith("mon")
    seen: set = set()
    for t in times:
        k = (t.year, t.month) if monthly else t
        if k in seen:
            continue
        seen.add(k)
        try:
            select_time(ds, t, tolerance=tolerance)
        except DataError as e:
            raise BatchError(f"--start/--end: {gcm} has no data for {t.isoformat()}: {e}") from None


def _resolve_prior(spec: BatchSpec) -> PriorRef | None:
    if spec.deterministic:
        return None
    ck = spec.checkpoint if spec.checkpoint not in (None, "") else os.environ.get("ZSSD_PRIOR") or "default"
    if ck == "tiny" or ck.startswith("tiny:"):
        try:
            seed = int(ck.split(":", 1)[1]) if ":" in ck else 0
        except ValueError:
            raise BatchError(f"--checkpoint {ck!r}: expected 'tiny' or 'tiny:SEED'") from None
        return PriorRef("tiny", "", seed, f"tiny-{seed}")
    if ck == "default":
        from .pipeline import DEFAULT_CHECKPOINT

        if not Path(DEFAULT_CHECKPOINT).exists():
            raise BatchError(f"the default prior checkpoint {DEFAULT_CHECKPOINT} is not there; train one "
                             f"(zssd train) or pass --checkpoint PATH (or 'tiny' for an untrained test network)")
        ck = str(DEFAULT_CHECKPOINT)
    p = Path(ck).expanduser()
    if not p.exists():
        raise BatchError(f"--checkpoint {ck}: no such file or directory")
    w, c = _checkpoint_hashes(p)
    return PriorRef("file", str(p.resolve()), 0, w, c)


def _case_grid(case) -> LatLonGrid | None:
    for name in ("fine_grid", "grid", "target_grid", "fine"):
        g = getattr(case, name, None)
        if isinstance(g, LatLonGrid):
            return g
    return None


def _check_output(out: Path) -> bool:
    """Raise unless ``out`` is an existing batch store or a creatable path; return whether it exists."""
    if out.exists():
        if not out.is_dir() or not ((out / ".zattrs").exists() or (out / "zarr.json").exists()):
            raise BatchError(f"--out {out} exists and is not a Zarr store written by zssd batch")
        if not os.access(out, os.W_OK | os.X_OK):
            raise BatchError(f"--out {out}: the store is not writable")
        return True
    anc = out.parent
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir():
        raise BatchError(f"--out {out}: {anc} is not a directory")
    try:  # a real probe (permissions, read-only mounts, ACLs, running as root…); leaves nothing behind
        import tempfile

        os.rmdir(tempfile.mkdtemp(prefix=".zssd-probe-", dir=anc))
    except OSError as e:
        raise BatchError(f"--out {out}: cannot create it, {anc} is not writable ({e.strerror})") from None
    return False


def _stored_params(out: Path) -> dict:
    import zarr

    try:
        g = zarr.open_group(str(out), mode="r")
        raw = g.attrs.get(PARAMS_ATTR)
    except Exception as e:  # noqa: BLE001 - any unreadable store is the same user error
        raise BatchError(f"--out {out}: cannot read the existing store ({e})") from None
    if raw is None:
        raise BatchError(f"--out {out} exists and is not a Zarr store written by zssd batch")
    return json.loads(raw)


def _params(spec: BatchSpec, times: pd.DatetimeIndex, members: int, prior: PriorRef | None) -> dict:
    det = spec.deterministic
    return {
        "layout": LAYOUT_VERSION,
        "gcm": spec.gcm,
        "gcm_files": [os.path.abspath(f) for f in spec.gcm_files],
        "method": spec.method,
        "start": times[0].isoformat(),
        "end": times[-1].isoformat(),
        "freq": spec.freq,
        "n_times": int(len(times)),
        "region": Region.parse(spec.region).as_text(),
        "members": int(members),
        "steps": None if det else int(spec.steps),
        "seed": None if det else int(spec.seed),
        "guidance_scale_requested": None if (det or spec.guidance_scale is None) else float(spec.guidance_scale),
        "checkpoint_sha256": None if prior is None else prior.sha256,
        "checkpoint_card_sha256": None if prior is None else (prior.card_sha256 or None),
    }


def plan_batch(spec: BatchSpec, out: str | os.PathLike) -> BatchPlan:
    """Validate ``spec`` and ``out``; no side effects (nothing is created, no cluster is started).

    Raises
    ------
    BatchError, GridError, DataError
        Any argument that would make the batch fail, with a message naming it.
    """
    from .gcm import GCM_SOURCES

    if spec.method not in METHODS:
        raise BatchError(f"--method {spec.method!r} is not one of {', '.join(METHODS)}")
    if spec.gcm_files:
        for f in spec.gcm_files:
            if not os.path.exists(f):
                raise BatchError(f"--gcm-file {f} not found")
    elif spec.gcm not in GCM_SOURCES:
        raise BatchError(f"--gcm {spec.gcm!r} is unknown; known: {', '.join(GCM_SOURCES)}")
    for name in ("members", "steps", "seed"):
        v = getattr(spec, name)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise BatchError(f"--{name} must be an integer, got {v!r}")
    if spec.members < 1:
        raise BatchError(f"--members must be at least 1, got {spec.members}")
    if not spec.deterministic:
        from .samplers.common import MAX_STEPS

        if not 1 <= spec.steps <= MAX_STEPS:
            raise BatchError(f"--steps must be in [1, {MAX_STEPS}], got {spec.steps}")
    if spec.seed < 0:
        raise BatchError(f"--seed must be non-negative, got {spec.seed}")
    if spec.guidance_scale is not None:
        if spec.method not in ("zssd", "zssd-bc", "dps"):
            raise BatchError(f"--guidance-scale applies to zssd, zssd-bc and dps only, not {spec.method}")
        if not (np.isfinite(spec.guidance_scale) and spec.guidance_scale >= 0):
            raise BatchError(f"--guidance-scale must be a finite non-negative number, got {spec.guidance_scale}")
    try:
        region = Region.parse(spec.region)
    except GridError as e:
        raise BatchError(f"--region: {e}") from None
    times = _times(spec)
    out = Path(out).expanduser().absolute()
    exists = _check_output(out)
    members = 1 if spec.deterministic else int(spec.members)
    prior = _resolve_prior(spec)
    if exists:
        stored = _stored_params(out)
        # compare before the (slower) data checks: a mismatch is the likelier mistake
        want = _params(spec, times, members, prior)
        diff = {k: (stored.get(k), want[k]) for k in sorted(set(stored) | set(want)) if stored.get(k) != want.get(k)}
        if diff:
            lines = "; ".join(f"{k}: store has {a!r}, asked {b!r}" for k, (a, b) in diff.items())
            raise BatchError(f"--out {out} holds a batch with different parameters ({lines}); "
                             f"use another --out or the original arguments to resume")
    from .gcm import REAL_FILES
    from .real_sources import REAL_SOURCES

    if spec.method == "bcsd" and (spec.gcm in REAL_FILES or spec.gcm in REAL_SOURCES or spec.gcm_files):
        raise BatchError(f"--method bcsd needs years of historical GCM/reference pairs, which {spec.gcm} "
                         f"({'monthly means of one year' if spec.gcm in REAL_FILES else 'a real source'}) does not "
                         f"have; use bilinear, lapse or a diffusion method")
    _check_gcm_times(spec.gcm, times, spec.files)
    try:
        fine = era5_grid().select(region, min_cells=2, what="--region")[0]
    except GridError as e:
        raise BatchError(str(e)) from None
    # dry run of the first case: validates region vs. GCM (and vs. the prior), fixes the output grid
    from . import pipeline

    case = pipeline.prepare_case(spec.gcm, times[0], region, files=spec.files)
    g = _case_grid(case) or fine
    gs = None
    if not spec.deterministic:
        try:
            p = get_prior(prior)
        except FileNotFoundError as e:
            raise BatchError(f"--checkpoint: {e}") from None
        gs = _resolve_guidance(spec, out if exists else None)
        gen = pipeline.sampler(case, p, spec.method, spec.steps, spec.members, 0, gs)  # validates eagerly
        gen.close()
    params = _params(spec, times, members, prior)
    return BatchPlan(spec, out, times, region, np.asarray(g.lat), np.asarray(g.lon), np.asarray(g.lat_bounds),
                     np.asarray(g.lon_bounds), members, prior, params, exists, gs)


def _resolve_guidance(spec: BatchSpec, existing: Path | None) -> float | None:
    """ζ to use: the one asked for, else the one stored when the batch began, else the tuned default."""
    if spec.method not in ("zssd", "zssd-bc", "dps"):
        return None
    if spec.guidance_scale is not None:
        return float(spec.guidance_scale)
    if existing is not None:
        import zarr

        v = zarr.open_group(str(existing), mode="r").attrs.get("guidance_scale")
        if isinstance(v, (int, float)):
            return float(v)
    from .pipeline import guidance_default

    return float(guidance_default(spec.method, spec.steps))


# =========================================================== worker side
_PRIORS: dict[str, Any] = {}
_PRIOR_LOADS: list[str] = []
_PRIOR_LOCK = threading.Lock()


def get_prior(ref: PriorRef):
    """The prior for ``ref``, loaded once per process (thread-safe module-level cache)."""
    with _PRIOR_LOCK:
        p = _PRIORS.get(ref.key)
        if p is None:
            p = ref.load()
            _PRIORS[ref.key] = p
            _PRIOR_LOADS.append(ref.key)
        return p


def prior_loads() -> list[str]:
    """Keys of the priors this process has loaded, in order (one entry per load)."""
    return list(_PRIOR_LOADS)


@dataclass(frozen=True)
class _Task:
    """The picklable part of a plan that a worker needs."""

    spec: BatchSpec
    times: tuple[str, ...]
    lat: np.ndarray
    lon: np.ndarray
    members: int
    prior: PriorRef | None
    guidance_scale: float | None = None


def _align(da, lat: np.ndarray, lon: np.ndarray, what: str):
    """``da`` on exactly the store's lat/lon (reordering if needed)."""
    dl = np.asarray(da["lat"].values)
    dn = np.asarray(da["lon"].values)
    if dl.shape == lat.shape and np.allclose(dl, lat, atol=1e-6) and dn.shape == lon.shape \
            and np.allclose(dn, lon, atol=1e-6):
        return da
    try:
        return da.sel(lat=lat, lon=lon, method="nearest", tolerance=1e-6)
    except KeyError:
        raise BatchError(f"{what}: the result grid ({dl.size}x{dn.size}) differs from the store's "
                         f"({lat.size}x{lon.size})") from None


def _extract(ds, task: _Task, what: str) -> dict[str, np.ndarray]:
    nl, nn = task.lat.size, task.lon.size
    out: dict[str, np.ndarray] = {}
    for v in VARIABLES:
        if v not in ds:
            continue  # e.g. no psl in the real MPI-ESM-LR file: stays NaN
        mean = _align(ds[v], task.lat, task.lon, what)
        mkey = f"{v}_members"
        if mkey in ds:
            mem = _align(ds[mkey], task.lat, task.lon, what).transpose("member", "lat", "lon").values
        else:
            mem = mean.transpose("lat", "lon").values[None]
        if mem.shape != (task.members, nl, nn):
            raise BatchError(f"{what}: {mkey} has shape {mem.shape}, expected {(task.members, nl, nn)}")
        skey = f"{v}_spread"
        if skey in ds:
            spread = _align(ds[skey], task.lat, task.lon, what).transpose("lat", "lon").values
        else:
            spread = np.zeros((nl, nn)) if task.members == 1 else np.std(mem, axis=0, ddof=1)
        out[v] = np.asarray(mean.transpose("lat", "lon").values, dtype=np.float32)
        out[skey] = np.asarray(spread, dtype=np.float32)
        out[mkey] = np.asarray(mem, dtype=np.float32)
    return out


def compute_case(task: _Task, index: int) -> CaseResult:
    """Downscale the case ``task.times[index]`` (runs on a worker, or in-process)."""
    from . import pipeline

    t0 = _time.perf_counter()
    spec = task.spec
    ts = pd.Timestamp(task.times[index])
    what = f"case {ts.isoformat()}"
    case = pipeline.prepare_case(spec.gcm, ts, Region.parse(spec.region), files=spec.files)
    if spec.deterministic:
        ds = pipeline.run_method(case, spec.method)
    else:
        ds = pipeline.run_method(case, spec.method, get_prior(task.prior), spec.steps, spec.members,
                                 case_seed(spec.seed, ts), task.guidance_scale)
    if "time" in ds.dims:
        ds = ds.isel(time=0)
    arrays = _extract(ds, task, what)
    return CaseResult(index, ts, arrays, _time.perf_counter() - t0, f"{os.uname().nodename}:{os.getpid()}")


# ============================================================ dask side
try:  # the plugin base class is optional at import time (inline runs need no Dask)
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPluginBase
except ImportError:  # pragma: no cover
    _WorkerPluginBase = object


class TorchThreads(_WorkerPluginBase):
    """Worker plugin: ``torch.set_num_threads`` so the workers of a host share its cores.

    ``threads`` fixes the number; otherwise ``cores // (workers on this host × worker threads)``
    (at least 1), where the host's worker count is taken from ``per_host`` (host → workers).
    """

    name = "zssd-torch-threads"

    def __init__(self, per_host: dict[str, int] | None = None, threads: int | None = None) -> None:
        self.per_host = dict(per_host or {})
        self.threads = threads

    def setup(self, worker) -> None:
        import torch

        n = self.threads
        if not n:
            from urllib.parse import urlparse

            try:
                cores = len(os.sched_getaffinity(0))
            except AttributeError:  # pragma: no cover - non-Linux
                cores = os.cpu_count() or 1
            host = urlparse(worker.address).hostname
            nw = self.per_host.get(host, 1)
            n = max(1, cores // max(1, nw * int(getattr(worker.state, "nthreads", 1) or 1)))
        torch.set_num_threads(int(n))
        os.environ["OMP_NUM_THREADS"] = str(int(n))


class IgnoreSigint(_WorkerPluginBase):
    """Worker plugin for the LocalCluster started here: Ctrl-C in the terminal reaches the whole
    process group; the client handles it (cancels, closes the cluster), so its worker processes
    ignore it instead of dying with tracebacks mid-task."""

    name = "zssd-ignore-sigint"

    def setup(self, worker) -> None:
        with contextlib.suppress(ValueError):  # not the process's main thread: nothing to do
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def start_client(scheduler: str | None = None, workers: int | None = None, threads_per_worker: int | None = None,
                 dashboard_address: str = ":8787"):
    """Connect to ``scheduler`` or start a :class:`LocalCluster` sized to this machine.

    Returns ``(client, cluster)``; ``cluster`` is ``None`` for an external scheduler (the caller
    closes what it got).
    """
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as e:
            raise BatchError(f"--scheduler {scheduler}: cannot connect ({e})") from None
        return client, None
    tpw = int(threads_per_worker or 1)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        cores = os.cpu_count() or 1
    nw = int(workers or max(1, cores // tpw))
    cluster = LocalCluster(n_workers=nw, threads_per_worker=tpw, processes=True,
                           dashboard_address=dashboard_address, silence_logs=40)
    try:
        client = Client(cluster)
        client.register_plugin(IgnoreSigint(), name=IgnoreSigint.name)
    except BaseException:
        cluster.close()
        raise
    return client, cluster


def _setup_workers(client, torch_threads: int | None = None) -> int:
    """Register the torch-threads plugin; return the number of worker threads."""
    ws = _workers_info(client)
    per_host: dict[str, int] = {}
    for w in ws.values():
        per_host[w.get("host")] = per_host.get(w.get("host"), 0) + 1
    client.register_plugin(TorchThreads(per_host, torch_threads), name=TorchThreads.name)
    return sum(int(w.get("nthreads", 1)) for w in ws.values()) or 1


def _workers_info(client) -> dict:
    """All workers of the scheduler (recent ``distributed`` lists only 5 unless asked for all)."""
    try:
        info = client.scheduler_info(n_workers=-1)
    except TypeError:  # older distributed: no n_workers argument, lists every worker
        info = client.scheduler_info()
    return info.get("workers", {})


# ================================================================= store
def _var_attrs(v: str) -> dict:
    info = VARIABLE_INFO[v]
    return {"units": info.units, "standard_name": info.standard_name, "long_name": info.long_name}


def _store_dataset(plan: BatchPlan, attrs: dict):
    import dask.array as da
    import xarray as xr

    nt, nm, nl, nn = plan.n, plan.members, plan.lat.size, plan.lon.size
    data = {}
    for v in VARIABLES:
        a = _var_attrs(v)
        data[v] = (("time", "lat", "lon"), da.full((nt, nl, nn), np.nan, dtype=np.float32, chunks=(1, nl, nn)),
                   {**a, "long_name": f"{a['long_name']} (ensemble mean)", "cell_methods": "member: mean"})
        data[f"{v}_spread"] = (("time", "lat", "lon"),
                               da.full((nt, nl, nn), np.nan, dtype=np.float32, chunks=(1, nl, nn)),
                               {"units": a["units"], "long_name": f"{a['long_name']} (ensemble standard deviation)",
                                "cell_methods": "member: standard_deviation"})
        data[f"{v}_members"] = (("time", "member", "lat", "lon"),
                                da.full((nt, nm, nl, nn), np.nan, dtype=np.float32, chunks=(1, nm, nl, nn)),
                                {**a, "long_name": f"{a['long_name']} (ensemble members)"})
    data["done"] = (("time",), da.zeros((nt,), dtype=np.uint8, chunks=(1,)),
                    {"long_name": "time step computed and written", "flag_values": np.array([0, 1], np.uint8),
                     "flag_meanings": "pending done"})
    data["case_seed"] = (("time",), da.full((nt,), -1, dtype=np.int64, chunks=(max(1, nt),)),
                         {"long_name": "random seed of the case (-1: deterministic method)"})
    latb = np.stack([plan.lat_bounds[:-1], plan.lat_bounds[1:]], 1)
    lonb = np.stack([plan.lon_bounds[:-1], plan.lon_bounds[1:]], 1)
    coords = {
        "time": ("time", plan.times.values, {"standard_name": "time", "long_name": "time", "axis": "T"}),
        "member": ("member", np.arange(nm, dtype=np.int32),
                   {"standard_name": "realization", "long_name": "ensemble member"}),
        "lat": ("lat", plan.lat, {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north",
                                  "axis": "Y", "bounds": "lat_bnds"}),
        "lon": ("lon", plan.lon, {"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east",
                                  "axis": "X", "bounds": "lon_bnds"}),
        "lat_bnds": (("lat", "bnds"), latb),
        "lon_bnds": (("lon", "bnds"), lonb),
    }
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _global_attrs(plan: BatchPlan, command: str) -> dict:
    from .gcm import describe_gcm

    spec = plan.spec
    now = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    det = spec.deterministic
    attrs = {
        "Conventions": "CF-1.10",
        "title": f"ZSSD Explorer batch downscaling of {spec.gcm} to the ERA5 0.25 degree grid ({spec.method})",
        "institution": "ZSSD Explorer",
        "source": (f"{spec.gcm}: {', '.join(map(str, spec.gcm_files))}" if spec.gcm_files else describe_gcm(spec.gcm))
                  + f"; method {spec.method}",
        "history": f"{now}: created by {command}",
        "references": "Tie & Xiong (2026), zero-shot statistical downscaling by diffusion posterior sampling",
        "comment": ("Each time step is written whole, then done(time) is set to 1; steps with done == 0 are "
                    "missing (NaN) and are computed by re-running the same command. "
                    "Pseudo-GCM and paired-task inputs derive from the synthetic ZSSD demo world, not ERA5."),
        "method": spec.method,
        "gcm": spec.gcm,
        "region": plan.region.as_text(),
        "time_coverage_start": plan.times[0].isoformat(),
        "time_coverage_end": plan.times[-1].isoformat(),
        "time_step": spec.freq,
        "members": plan.members,
        "steps": "n/a" if det else spec.steps,
        "seed": "n/a" if det else spec.seed,
        "seed_rule": "case_seed = SeedSequence([seed, minutes since 1970-01-01 + 2**40]).generate_state(1)[0]",
        "guidance_scale": "n/a" if plan.guidance_scale is None else plan.guidance_scale,
        "guidance_scale_source": ("n/a" if plan.guidance_scale is None else
                                  "tuned default" if spec.guidance_scale is None else "--guidance-scale"),
        "checkpoint": "n/a" if plan.prior is None else plan.prior.label,
        "checkpoint_kind": "n/a" if plan.prior is None else plan.prior.kind,
        "checkpoint_sha256": "n/a" if plan.prior is None else plan.prior.sha256,
        "checkpoint_card_sha256": "n/a" if (plan.prior is None or not plan.prior.card_sha256)
        else plan.prior.card_sha256,
        "command": command,
        "date_created": now,
        "zssd_batch_layout": LAYOUT_VERSION,
        PARAMS_ATTR: json.dumps(plan.params, sort_keys=True),
    }
    return attrs


def _create_store(plan: BatchPlan, command: str) -> None:
    """Create the full NaN store atomically (temporary directory + rename)."""
    out = plan.out
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    ds = _store_dataset(plan, _global_attrs(plan, command))
    enc: dict[str, dict] = {v: {"_FillValue": np.float32(np.nan)} for v in ds.data_vars if ds[v].dtype == np.float32}
    enc["done"] = {"_FillValue": None, "chunks": (1,)}
    enc["case_seed"] = {"_FillValue": None}
    enc["time"] = {"units": f"hours since {plan.times[0].strftime('%Y-%m-%d %H:%M:%S')}",
                   "calendar": "proleptic_gregorian", "dtype": "float64"}
    seeds = np.array([case_seed(plan.spec.seed, t) if plan.prior is not None else -1 for t in plan.times],
                     dtype=np.int64)
    import dask
    import zarr

    try:
        # metadata only (compute=False); nothing may go to a distributed client that is the default scheduler
        with dask.config.set(scheduler="synchronous"):
            ds.to_zarr(str(tmp), mode="w-", compute=False, encoding=enc, zarr_format=2, consolidated=True)
        g = zarr.open_group(str(tmp), mode="r+", zarr_format=2)
        g["done"][:] = np.zeros(plan.n, np.uint8)
        g["case_seed"][:] = seeds
        try:
            os.rename(tmp, out)
        except OSError:
            if out.exists():  # another run created it first: use theirs (parameters re-checked on open)
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_stale_tmp(out: Path) -> None:
    """Remove half-created stores of runs that were killed (their process no longer exists)."""
    for p in out.parent.glob(f".{out.name}.tmp-*"):
        try:
            pid = int(p.name[len(f".{out.name}.tmp-"):].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            continue


class _Store:
    """The client's handle on an existing batch store (holds its lock)."""

    def __init__(self, plan: BatchPlan) -> None:
        import zarr

        self.plan = plan
        self._lockf = None
        try:
            import fcntl

            self._lockf = open(plan.out / LOCK_NAME, "a+")
            try:
                fcntl.flock(self._lockf.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self._lockf.close()
                self._lockf = None
                raise BatchError(f"--out {plan.out} is being written by another zssd batch run") from None
        except ImportError:  # pragma: no cover - non-POSIX: no lock
            pass
        stored = _stored_params(plan.out)
        if stored != plan.params:
            self.close()
            raise BatchError(f"--out {plan.out} holds a batch with different parameters; use another --out")
        self.group = zarr.open_group(str(plan.out), mode="r+", zarr_format=2)
        lat = np.asarray(self.group["lat"][:])
        lon = np.asarray(self.group["lon"][:])
        if lat.shape != plan.lat.shape or lon.shape != plan.lon.shape or not (
                np.allclose(lat, plan.lat) and np.allclose(lon, plan.lon)):
            self.close()
            raise BatchError(f"--out {plan.out}: the store's grid differs from the region's grid")

    def done(self) -> np.ndarray:
        return np.asarray(self.group["done"][:], dtype=bool)

    def write(self, res: CaseResult) -> None:
        """Write one case's chunks, then mark it done (Ctrl-C deferred meanwhile)."""
        i = res.index
        with _defer_sigint():
            for name, arr in res.arrays.items():
                self.group[name][i] = arr
            self.group["done"][i] = 1

    def close(self) -> None:
        if self._lockf is not None:
            self._lockf.close()
            self._lockf = None


@contextlib.contextmanager
def _defer_sigint() -> Iterator[None]:
    """Hold back SIGINT for the duration (main thread only); re-raise it afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    try:
        old = signal.signal(signal.SIGINT, lambda s, f: got.append(s))
    except ValueError:  # pragma: no cover - not in the main interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if got:
            raise KeyboardInterrupt


def open_store(path: str | os.PathLike):
    """Open a batch store with xarray (``done`` tells which steps are complete)."""
    import xarray as xr

    return xr.open_zarr(str(path), consolidated=True)


# ================================================================== run
def run_batch(spec: BatchSpec, out: str | os.PathLike, *, client=None, scheduler: str | None = None,
              workers: int | None = None, threads_per_worker: int | None = None, torch_threads: int | None = None,
              progress: bool = True, command: str | None = None, max_in_flight: int | None = None,
              on_case_written: Callable[[CaseResult, BatchReport], None] | None = None,
              log: Callable[[str], None] | None = print, dashboard_address: str = ":8787") -> BatchReport:
    """Run (or resume) a batch into the store ``out``.

    Parameters
    ----------
    spec, out
        What to compute and where (see :class:`BatchSpec`).
    client
        An existing ``distributed.Client`` to use (not closed here).  Otherwise ``scheduler``:
        an address, ``"inline"`` (in-process, no Dask) or ``None`` (start a LocalCluster with
        ``workers`` processes of ``threads_per_worker`` threads, closed at the end).
    torch_threads
        Fix ``torch.set_num_threads`` on the workers (default: cores shared out); inline runs
        use it while computing and restore the process's setting afterwards.
    on_case_written
        Called on the client after each case is in the store (tests use it to interrupt).
    max_in_flight
        Tasks submitted at once (default: 2 × worker threads); bounds the client's memory.

    Returns
    -------
    BatchReport
        Counts of cases skipped (already done), computed and failed.  Failed cases stay
        ``done == 0`` and are retried by the next run.  ``KeyboardInterrupt`` propagates after
        the cluster is shut down (the store keeps every case written so far).
    """
    say = log or (lambda s: None)
    t_start = _time.perf_counter()
    plan = plan_batch(spec, out)
    command = command or "zssd batch (library call)"
    report = BatchReport(plan.out, plan.n, 0, 0)
    if spec.deterministic and spec.members > 1:
        say(f"note: {spec.method} is deterministic; the store holds one member")
    if plan.exists:
        st = _Store(plan)
        done0 = st.done()
        st.close()
        if done0.all():
            report.skipped = plan.n
            say(f"{plan.out}: all {plan.n} time steps are already done; nothing to compute")
            report.seconds = _time.perf_counter() - t_start
            return report
    own = None
    inline = client is None and scheduler == "inline"
    if client is None and not inline:
        client, own = start_client(scheduler, workers, threads_per_worker, dashboard_address)
        own = (client, own)
    store = None
    try:
        if client is not None:
            report.workers = len(_workers_info(client))
            report.dashboard = client.dashboard_link
            say(f"Dask dashboard: {report.dashboard}  ({report.workers} workers)")
            nthreads = _setup_workers(client, torch_threads)
        else:
            nthreads = 1
            report.workers = 0
        if not plan.exists:
            _create_store(plan, command)
        store = _Store(plan)
        done = store.done()
        todo = [i for i in range(plan.n) if not done[i]]
        report.skipped = plan.n - len(todo)
        say(f"{plan.n} time steps, {report.skipped} already done, {len(todo)} to compute -> {plan.out}")
        task = _Task(spec, tuple(t.isoformat() for t in plan.times), plan.lat, plan.lon, plan.members, plan.prior,
                     plan.guidance_scale)
        from tqdm.auto import tqdm

        bar = tqdm(total=plan.n, initial=report.skipped, unit="case", desc=f"{spec.method} {spec.gcm}",
                   disable=not progress, file=sys.stderr, dynamic_ncols=True)
        t_run = _time.perf_counter()
        if client is None:
            results = _inline_results(task, todo, torch_threads)
        else:
            results = _dask_results(client, task, todo, max_in_flight or 2 * nthreads)
        try:
            for i, res, err in results:
                if err is not None:
                    report.failed[plan.times[i].isoformat()] = err
                    bar.set_postfix(failed=len(report.failed))
                    if report.computed == 0 and len(report.failed) >= ABORT_AFTER_FAILURES:
                        raise BatchError(f"the first {len(report.failed)} cases all failed, stopping (nothing "
                                         f"was marked done); first error: {next(iter(report.failed.values()))}")
                else:
                    store.write(res)
                    report.computed += 1
                    if on_case_written is not None:
                        on_case_written(res, report)
                bar.update(1)
        except KeyboardInterrupt:
            report.interrupted = True
            raise
        finally:
            results.close()  # cancels what is still queued or running
            bar.close()
            report.seconds = _time.perf_counter() - t_run
    finally:
        if store is not None:
            store.close()
        if own is not None:
            c, cl = own
            with contextlib.suppress(Exception):
                c.close(timeout=10)
            if cl is not None:
                with contextlib.suppress(Exception):
                    cl.close(timeout=10)
    if report.failed:
        say(f"{len(report.failed)} case(s) failed and stay pending (first: "
            f"{next(iter(report.failed.items()))[0]}: {next(iter(report.failed.values()))})")
    return report


def _inline_results(task: _Task, todo: list[int], torch_threads: int | None = None
                    ) -> Iterator[tuple[int, CaseResult | None, str | None]]:
    """Cases computed one by one in this process (``torch_threads``: set for the run, then restored)."""
    import torch

    before = torch.get_num_threads()
    try:
        for i in todo:
            if torch_threads:
                torch.set_num_threads(int(torch_threads))
            try:
                res = compute_case(task, i)
            except Exception as e:  # noqa: BLE001 - like a Dask task error: recorded, the case stays pending
                yield i, None, f"{type(e).__name__}: {e}"
                continue
            finally:
                torch.set_num_threads(before)
            yield i, res, None
    finally:
        torch.set_num_threads(before)


def _dask_results(client, task: _Task, todo: list[int], window: int
                  ) -> Iterator[tuple[int, CaseResult | None, str | None]]:
    """Submit at most ``window`` tasks at a time; yield results as they complete."""
    from distributed import as_completed

    nonce = uuid.uuid4().hex[:8]
    it = iter(todo)
    index: dict = {}
    ac = as_completed()

    def submit() -> None:
        i = next(it, None)
        if i is None:
            return
        # the task (spec, times, lat/lon) travels with each submission: a few kB, and unlike scattered
        # data it cannot be lost with a worker
        f = client.submit(compute_case, task, i, key=f"zssd-case-{i}-{nonce}", pure=False, retries=0)
        index[f.key] = i
        ac.add(f)

    try:
        for _ in range(max(1, window)):
            submit()
        for f in ac:
            i = index.pop(f.key)
            if f.status == "error":
                exc = f.exception()
                yield i, None, f"{type(exc).__name__}: {exc}"
            else:
                yield i, f.result(), None
            f.release()
            submit()
    finally:
        pending = [f for f in ac.futures] if hasattr(ac, "futures") else []
        with contextlib.suppress(Exception):
            if pending:
                client.cancel(pending)


# =================================================================== CLI
def add_parser(sub) -> None:
    p = sub.add_parser(
        "batch", help="downscale a time range on a Dask cluster into one resumable CF Zarr store",
        description="Downscale every time from --start to --end (step --freq) over --region into one Zarr "
                    "store; one Dask task per time step.  Re-running the same command resumes.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--gcm", help="GCM source_id (pseudo-GCM, x6/x10/x20, MPI-ESM-LR, or a real source: "
                                   "ERA5-x20, ERA5-x10, NCEP-storm-1996, GFS-2.5deg)")
    src.add_argument("--gcm-file", nargs="+", metavar="FILE",
                     help="your own input files instead of --gcm (NetCDF, GRIB or Zarr; as zssd downscale)")
    p.add_argument("--start", required=True, help="first time, ISO (e.g. 2022-08-01T00)")
    p.add_argument("--end", required=True, help="last time, ISO (inclusive)")
    p.add_argument("--freq", default="6h", help="time step, pandas frequency (default 6h)")
    p.add_argument("--region", required=True, help="S,N,W,E in degrees")
    p.add_argument("--method", required=True, choices=None, help=f"one of {', '.join(METHODS)}")
    p.add_argument("--members", type=int, default=1, help="ensemble members (default 1; baselines: 1)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"sampler steps (default {DEFAULT_STEPS})")
    p.add_argument("--seed", type=int, default=0, help="base seed (per-case seeds derive from it and the time)")
    p.add_argument("--guidance-scale", type=float, default=None, help="guidance scale ζ (default: tuned)")
    p.add_argument("--checkpoint", default=None,
                   help="prior checkpoint (.safetensors/.json/directory), 'tiny' (untrained test network) or "
                        "'default'; default: $ZSSD_PRIOR, else the shipped demo prior")
    p.add_argument("--out", required=True, help="output Zarr store (created, or resumed if it exists)")
    p.add_argument("--scheduler", default=None,
                   help="Dask scheduler address; 'inline' runs in-process; default: a LocalCluster here")
    p.add_argument("--workers", type=int, default=None, help="LocalCluster worker processes (default: cores)")
    p.add_argument("--threads-per-worker", type=int, default=None, help="threads per worker (default 1)")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch threads per worker (default: cores // (workers x threads per worker))")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(_run=run)


def _command(args) -> str:
    parts = ["zssd", "batch"] + (["--gcm-file", *map(str, args.gcm_file)] if getattr(args, "gcm_file", None) else [])
    for k in ("gcm", "start", "end", "freq", "region", "method", "members", "steps", "seed", "guidance_scale",
              "checkpoint", "out", "scheduler", "workers", "threads_per_worker", "torch_threads"):
        v = getattr(args, k, None)
        if v is not None:
            parts += [f"--{k.replace('_', '-')}", str(v)]
    return " ".join(shlex.quote(p) for p in parts)


def spec_from_args(args) -> BatchSpec:
    files = tuple(str(f) for f in (getattr(args, "gcm_file", None) or ()))
    if files:
        from .user_files import user_source_name

        gcm = user_source_name(files)
    else:
        gcm = args.gcm
    return BatchSpec(gcm=gcm, gcm_files=files, start=args.start, end=args.end, region=args.region, method=args.method,
                     freq=args.freq, members=args.members, steps=args.steps, seed=args.seed,
                     checkpoint=args.checkpoint, guidance_scale=args.guidance_scale)


def run(args) -> int:
    for name in ("workers", "threads_per_worker", "torch_threads"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise BatchError(f"--{name.replace('_', '-')} must be at least 1, got {v}")
    if args.scheduler and args.scheduler != "inline" and (args.workers or args.threads_per_worker):
        print("zssd: note: --workers/--threads-per-worker apply to a LocalCluster only; ignored with --scheduler",
              file=sys.stderr)
    spec = spec_from_args(args)
    out = Path(args.out)
    try:
        rep = run_batch(spec, out, scheduler=args.scheduler, workers=args.workers,
                        threads_per_worker=args.threads_per_worker, torch_threads=args.torch_threads,
                        progress=not args.no_progress, command=_command(args))
    except KeyboardInterrupt:
        done = _count_done(out)
        print(f"zssd: interrupted; {done} time steps are complete in {out}; run the same command again to resume",
              file=sys.stderr)
        return 130
    rate = f", {rep.cases_per_minute:.1f} cases/min" if rep.computed else ""
    print(f"{rep.store}: {rep.computed} computed, {rep.skipped} skipped, {len(rep.failed)} failed "
          f"in {rep.seconds:.1f} s{rate}")
    for t, err in list(rep.failed.items())[:10]:
        print(f"  failed {t}: {err}", file=sys.stderr)
    return 1 if rep.failed else 0


def _count_done(out: Path) -> str:
    try:
        import zarr

        d = np.asarray(zarr.open_group(str(out), mode="r")["done"][:])
        return f"{int(d.sum())} of {d.size}"
    except Exception:  # noqa: BLE001 - reporting only
        return "no"
