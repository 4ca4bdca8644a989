"""Validation of a batch before any work: :func:`plan_batch` turns a :class:`BatchSpec` into a :class:`BatchPlan`.

Every argument is checked (time range and frequency, GCM, method, region, the GCM's data
coverage, members, steps, checkpoint, output location and — for an existing store — that the
stored run parameters equal the requested ones), and the first case is prepared as a dry run,
all before a cluster is started or a store is created.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..grids import GridError, LatLonGrid, Region, era5_grid
from .spec import (GUIDED_METHODS, LAYOUT_VERSION, METHODS, BatchError, BatchPlan, BatchSpec, PriorRef,
                   checkpoint_hashes)
from .store import check_params, is_store_dir, stored_guidance
from .worker import get_prior

__all__ = ["plan_batch", "run_params"]


def _parse_time(text: str, what: str) -> pd.Timestamp:
    """``--start``/``--end`` text as a timestamp (``BatchError`` naming the option)."""
    from ..conditioning import to_timestamp

    try:
        return to_timestamp(text)
    except (ValueError, TypeError) as e:
        raise BatchError(f"--{what} {text!r} is not a valid ISO time ({e})") from None


def _times(spec: BatchSpec) -> pd.DatetimeIndex:
    """The batch's time axis: ``start`` to ``end`` (inclusive) at ``freq``; ``start`` must be on it."""
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


def _check_gcm_times(gcm: str, times: pd.DatetimeIndex, files: dict | None) -> None:
    """Every time must be in the GCM's data (real files have a finite time axis)."""
    from ..gcm import REAL_FILES
    from ..real_sources import PAIRED_REAL, REAL_SOURCES, source_dataset

    if gcm not in REAL_FILES and gcm not in REAL_SOURCES and not files:
        return  # pseudo-GCMs and paired tasks are defined at every time
    from ..errors import DataError
    from ..gcm import open_files
    from ..readers import select_time

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
    """The prior reference of a sampling batch (``None`` for a deterministic method)."""
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
        from ..pipeline import DEFAULT_CHECKPOINT

        if not Path(DEFAULT_CHECKPOINT).exists():
            raise BatchError(f"the default prior checkpoint {DEFAULT_CHECKPOINT} is not there; train one "
                             f"(zssd train) or pass --checkpoint PATH (or 'tiny' for an untrained test network)")
        ck = str(DEFAULT_CHECKPOINT)
    p = Path(ck).expanduser()
    if not p.exists():
        raise BatchError(f"--checkpoint {ck}: no such file or directory")
    w, c = checkpoint_hashes(p)
    return PriorRef("file", str(p.resolve()), 0, w, c)


def _check_output(out: Path) -> bool:
    """Raise unless ``out`` is an existing batch store or a creatable path; return whether it exists."""
    if out.exists():
        if not is_store_dir(out):
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


def run_params(spec: BatchSpec, times: pd.DatetimeIndex, members: int, prior: PriorRef | None) -> dict:
    """The run parameters stored in a batch store and compared on resume (JSON-able)."""
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


def _check_arguments(spec: BatchSpec) -> None:
    """Method, source, integer arguments and guidance scale (no data is opened)."""
    from ..gcm import GCM_SOURCES

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
        from ..samplers.respacing import MAX_STEPS

        if not 1 <= spec.steps <= MAX_STEPS:
            raise BatchError(f"--steps must be in [1, {MAX_STEPS}], got {spec.steps}")
    if spec.seed < 0:
        raise BatchError(f"--seed must be non-negative, got {spec.seed}")
    if spec.guidance_scale is not None:
        if spec.method not in GUIDED_METHODS:
            raise BatchError(f"--guidance-scale applies to zssd, zssd-bc and dps only, not {spec.method}")
        if not (np.isfinite(spec.guidance_scale) and spec.guidance_scale >= 0):
            raise BatchError(f"--guidance-scale must be a finite non-negative number, got {spec.guidance_scale}")


def _check_source(spec: BatchSpec, times: pd.DatetimeIndex, region: Region) -> None:
    """The method suits the source, the source has every time, the region holds enough 0.25° cells."""
    from ..gcm import REAL_FILES
    from ..real_sources import REAL_SOURCES

    if spec.method == "bcsd" and (spec.gcm in REAL_FILES or spec.gcm in REAL_SOURCES or spec.gcm_files):
        raise BatchError(f"--method bcsd needs years of historical GCM/reference pairs, which {spec.gcm} "
                         f"({'monthly means of one year' if spec.gcm in REAL_FILES else 'a real source'}) does not "
                         f"have; use bilinear, lapse or a diffusion method")
    _check_gcm_times(spec.gcm, times, spec.files)
    try:
        era5_grid().select(region, min_cells=2, what="--region")
    except GridError as e:
        raise BatchError(str(e)) from None


def _dry_run(spec: BatchSpec, time: pd.Timestamp, region: Region, prior: PriorRef | None,
             existing: Path | None) -> tuple[LatLonGrid, float | None]:
    """Prepare the first case (validates region vs. GCM and prior); return the output grid and ζ."""
    from .. import pipeline

    case = pipeline.prepare_case(spec.gcm, time, region, files=spec.files)
    if spec.deterministic:
        return case.fine, None
    try:
        p = get_prior(prior)
    except FileNotFoundError as e:
        raise BatchError(f"--checkpoint: {e}") from None
    gs = _resolve_guidance(spec, existing, p, case)
    gen = pipeline.sampler(case, p, spec.method, spec.steps, spec.members, 0, gs)  # validates eagerly
    gen.close()
    return case.fine, gs


def plan_batch(spec: BatchSpec, out: str | os.PathLike) -> BatchPlan:
    """Validate ``spec`` and ``out``; no side effects (nothing is created, no cluster is started).

    Raises
    ------
    BatchError, GridError, DataError
        Any argument that would make the batch fail, with a message naming it.
    """
    _check_arguments(spec)
    try:
        region = Region.parse(spec.region)
    except GridError as e:
        raise BatchError(f"--region: {e}") from None
    times = _times(spec)
    out = Path(out).expanduser().absolute()
    exists = _check_output(out)
    members = 1 if spec.deterministic else int(spec.members)
    prior = _resolve_prior(spec)
    params = run_params(spec, times, members, prior)
    if exists:  # compare before the (slower) data checks: a mismatch is the likelier mistake
        check_params(out, params)
    _check_source(spec, times, region)
    g, gs = _dry_run(spec, times[0], region, prior, out if exists else None)
    return BatchPlan(spec, out, times, region, np.asarray(g.lat), np.asarray(g.lon), np.asarray(g.lat_bounds),
                     np.asarray(g.lon_bounds), members, prior, params, exists, gs)


def _resolve_guidance(spec: BatchSpec, existing: Path | None, prior=None, case=None) -> float | None:
    """ζ to use: the one asked for, else the one stored when the batch began, else the prior's tuned default
    for the case's kind of input (demo world or real)."""
    if spec.method not in GUIDED_METHODS:
        return None
    if spec.guidance_scale is not None:
        return float(spec.guidance_scale)
    if existing is not None:
        v = stored_guidance(existing)
        if v is not None:
            return v
    from ..pipeline import guidance_default

    return float(guidance_default(spec.method, spec.steps, prior, case.domain if case is not None else "demo"))
