"""What every session of the server shares: the prior, and the prepared cases (one bounded store).

A *case* is what a selection (source, valid time, region) needs before a Run: the GCM field, the
reference, the static conditioning, the bilinear and lapse-rate baselines and the colour limits of
the maps.  Every visitor of the default storm needs the same one, so they are prepared once per
server process by :class:`CaseStore` and shared read-only:

* a hit is served at once (a new session is Ready in well under a second);
* a miss is built on the store's worker threads, never on the server's event loop, and a second
  session asking for a case that is being built waits for the same build (no duplicate work);
* BCSD (tens of seconds to train for a new case) is one more deduplicated job per case, on its own
  worker, so a training run never holds up the preparation of other cases;
* the store keeps the ``max_items`` most recently used cases (least recently used dropped first).
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from zssd_engine.grids import GridError, Region, wrap_lon
from zssd_engine.methods import CLASSICAL, method_names

from .config import ServerConfig, server_config

__all__ = ["CaseStore", "PreparedCase", "get_store", "reset_store", "get_prior", "snap_region",
           "source_label", "case_key", "build_case", "DEMO_TIME_RANGE"]

#: The classical methods every case shows at once (no training): bilinear and bilinear + lapse rate.
INSTANT_BASELINES: tuple[str, ...] = method_names(kind=CLASSICAL, paired_training=False)

#: Years the demo world (and the pseudo-GCMs and paired tasks derived from it) covers.
DEMO_TIME_RANGE = (dt.datetime(1991, 1, 1), dt.datetime(2023, 12, 31, 18))

# ----------------------------------------------------------------- the prior
def get_prior(cfg: ServerConfig | None = None) -> tuple[Any, str]:
    """The server's prior and a warning text ("" for a trained checkpoint).

    ``ZSSD_PRIOR=tiny`` (or ``prior = "tiny"`` in the TOML config) forces the
    untrained tiny network; otherwise the configured checkpoint, else the
    shipped default; if that is missing, the tiny network with a warning.  The
    network itself is loaded once per process by the engine's prior cache
    (:func:`zssd_engine.pipeline.load_prior`), shared by every session.
    """
    from zssd_engine import pipeline

    cfg = cfg or server_config()
    untrained = ("**Untrained demo network**: the maps show the sampling machinery, not a skilful "
                 "downscaling {why}.")
    if cfg.prior == "tiny":
        return pipeline.load_prior("tiny"), untrained.format(why="(this server runs with ZSSD_PRIOR=tiny)")
    if cfg.prior:
        return pipeline.load_prior(cfg.prior), ""
    try:
        return pipeline.default_prior(), ""
    except (FileNotFoundError, OSError, ValueError) as e:
        return pipeline.load_prior("tiny"), untrained.format(why=f"(no trained checkpoint could be loaded: {e})")


# ----------------------------------------------------------------- regions and labels
def snap_region(region: Region, min_deg: float = 16.0, max_deg: float = 64.0, cell_multiple: int = 8) -> Region:
    """Snap a box to the 0.25° grid with sides a multiple of ``cell_multiple`` cells; enforce size limits.

    Raises :class:`GridError` with a message that says what to change.
    """
    h, w = region.height, region.width
    for name, size in (("height (north − south)", h), ("width (east − west)", w)):
        if size < min_deg - 1e-9:
            raise GridError(f"region {name} is {size:g}°; it must be at least {min_deg:g}° "
                            f"(the GCM needs several cells across the box)")
        if size > max_deg + 1e-9:
            raise GridError(f"region {name} is {size:g}°; it must be at most {max_deg:g}° "
                            f"(sampling cost grows with the area)")
    step = 0.25 * cell_multiple
    h2 = max(step, round(h / step) * step)
    w2 = max(step, round(w / step) * step)
    h2 = min(max(h2, math.ceil(min_deg / step) * step), math.floor(max_deg / step) * step)
    w2 = min(max(w2, math.ceil(min_deg / step) * step), math.floor(max_deg / step) * step)
    s = math.floor(region.south / 0.25) * 0.25
    s = min(max(s, -89.75), 90.0 - h2)  # keep whole cells inside [-90, 90)
    west = float(wrap_lon(math.floor(region.west / 0.25) * 0.25, -180.0))
    east = float(wrap_lon(west + w2, -180.0))
    return Region(float(s), float(s + h2), west, east)


def source_label(source_id: str, configured: dict | None = None) -> str:
    """A menu label for a GCM source id."""
    from zssd_engine.gcm import PSEUDO_GCMS, REAL_FILES
    from zssd_engine.grids import GCM_GRID_SPECS, PAIRED_TASKS
    from zssd_engine.real_sources import REAL_SOURCES

    if source_id in REAL_SOURCES:
        r = REAL_SOURCES[source_id]
        if r.paired:
            return f"{source_id} — real ERA5 week averaged to {r.coarse_res:g}° (paired, real)"
        return f"{source_id} — real {'GFS forecast' if source_id.startswith('GFS') else 'analysis'} (unpaired)"
    if source_id in PSEUDO_GCMS:
        return f"{source_id} — pseudo-GCM ({GCM_GRID_SPECS[source_id].note.split(' (')[0].split(',')[0]})"
    if source_id in PAIRED_TASKS:
        res = PAIRED_TASKS[source_id]
        return f"×{source_id[1:]} paired task ({res:g}° average of the demo world)"
    if source_id in REAL_FILES:
        return f"{source_id} — real CMIP5 file (2005 monthly means)"
    return f"{source_id} — configured CF file"


# ----------------------------------------------------------------- prepared cases
@dataclass
class PreparedCase:
    """A case with what every session shows before a Run (treated as read-only once built)."""

    case: Any
    baselines: dict[str, Any]                       # "bilinear", "lapse" (xr.Dataset on the fine grid)
    clims: dict[str, tuple[float, float]]           # colour limits per display variable (and ":diff")
    seconds: float = 0.0                            # how long the build took


def case_key(source_id: str, time: dt.datetime, region: Region, files: dict | None) -> tuple:
    """The store's key of a selection (configured files are part of it: a re-configured server differs)."""
    return (source_id, str(time), region.as_text(), tuple(map(str, (files or {}).get(source_id, ()))))


def case_clims(case, baselines: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Fixed colour limits per display variable for a case: robust limits of the GCM, reference and bilinear
    fields, widened to the reference's extremes (a cyclone core is never clipped), and the ``:diff`` limits."""
    from .views.common import display_field, robust_clim

    clims: dict[str, tuple[float, float]] = {}
    for key in ("t2m", "msl", "wind"):
        arrays = [display_field(case.reference_display, key)[0], display_field(case.gcm, key)[0],
                  display_field(baselines.get("bilinear"), key)[0]]
        lo, hi = robust_clim(arrays, key)
        ref = arrays[0]
        if ref is not None and np.isfinite(ref).any():
            lo = min(lo, float(np.nanmin(ref))) if key == "msl" else lo
            hi = max(hi, float(np.nanmax(ref))) if key in ("msl", "wind") else hi
        clims[key] = (lo, hi)
        d = None
        if arrays[0] is not None and arrays[2] is not None:
            d = np.nanpercentile(np.abs(arrays[0] - arrays[2]), 99)
        clims[key + ":diff"] = (-float(d or 1.0) * 1.2, float(d or 1.0) * 1.2)
    return clims


def build_case(pipeline, source_id: str, time, region: Region, world, files: dict | None) -> PreparedCase:
    """Prepare a selection: :func:`zssd_engine.pipeline.prepare_case`, the bilinear and lapse baselines, colour limits."""
    import time as _time

    t0 = _time.perf_counter()
    case = pipeline.prepare_case(source_id, time, region, world=world, files=files or None)
    bil = {m: pipeline.baseline(case, m) for m in INSTANT_BASELINES}
    return PreparedCase(case, bil, case_clims(case, bil), _time.perf_counter() - t0)


@dataclass
class StoreStats:
    hits: int = 0
    misses: int = 0
    joined: int = 0          # requests that waited for a build already under way
    builds_s: list[float] = field(default_factory=list)


class CaseStore:
    """Server-wide, bounded, thread-safe store of prepared cases and BCSD results.

    Parameters
    ----------
    max_items
        Cases kept (least recently used dropped first); BCSD results follow their case.
    workers
        Threads that build cases (BCSD has one thread of its own).
    """

    def __init__(self, max_items: int = 24, workers: int = 2) -> None:
        self.max_items = int(max_items)
        self._lock = threading.Lock()
        self._done: OrderedDict[tuple, PreparedCase] = OrderedDict()
        self._building: dict[tuple, Future] = {}
        self._bcsd: OrderedDict[tuple, Future] = OrderedDict()
        self._pool = ThreadPoolExecutor(max_workers=max(1, int(workers)), thread_name_prefix="zssd-case")
        self._bcsd_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zssd-bcsd")
        self.stats = StoreStats()

    def __len__(self) -> int:
        with self._lock:
            return len(self._done)

    def lookup(self, key: tuple) -> PreparedCase | None:
        """The prepared case for ``key`` if it is ready (and mark it recently used), else None."""
        with self._lock:
            hit = self._done.get(key)
            if hit is not None:
                self._done.move_to_end(key)
                self.stats.hits += 1
            return hit

    def request(self, key: tuple, build: Callable[[], PreparedCase]) -> Future:
        """A future of the prepared case: done at once on a hit, shared with a build under way, else a new build."""
        with self._lock:
            hit = self._done.get(key)
            if hit is not None:
                self._done.move_to_end(key)
                self.stats.hits += 1
                fut: Future = Future()
                fut.set_result(hit)
                return fut
            fut = self._building.get(key)
            if fut is not None:
                self.stats.joined += 1
                return fut
            self.stats.misses += 1
            fut = self._pool.submit(build)
            self._building[key] = fut
        fut.add_done_callback(lambda f, k=key: self._store(k, f))
        return fut

    def get(self, key: tuple, build: Callable[[], PreparedCase], timeout: float | None = None) -> PreparedCase:
        """Blocking :meth:`request` (command-line use and tests); re-raises the build's error."""
        return self.request(key, build).result(timeout)

    def _store(self, key: tuple, fut: Future) -> None:
        with self._lock:
            self._building.pop(key, None)
            if fut.cancelled() or fut.exception() is not None:
                return  # a failed build is not cached: the next request tries again (the file may be fixed)
            pc = fut.result()
            self.stats.builds_s.append(pc.seconds)
            self._done[key] = pc
            self._done.move_to_end(key)
            while len(self._done) > self.max_items:
                old, _ = self._done.popitem(last=False)
                self._bcsd.pop(old, None)

    def bcsd(self, key: tuple, train: Callable[[], Any]) -> Future:
        """A future of the case's BCSD downscaling, trained once per case for all sessions."""
        with self._lock:
            fut = self._bcsd.get(key)
            if fut is not None and not (fut.done() and fut.exception() is not None):
                return fut
            fut = self._bcsd_pool.submit(train)
            self._bcsd[key] = fut
            while len(self._bcsd) > self.max_items:
                self._bcsd.popitem(last=False)
            return fut


_STORE: CaseStore | None = None
_STORE_LOCK = threading.Lock()


def get_store() -> CaseStore:
    """The server-wide case store."""
    global _STORE
    with _STORE_LOCK:
        if _STORE is None:
            _STORE = CaseStore()
        return _STORE


def reset_store(max_items: int = 24, workers: int = 2) -> CaseStore:
    """Replace the server-wide store (tests)."""
    global _STORE
    with _STORE_LOCK:
        _STORE = CaseStore(max_items, workers)
        return _STORE
