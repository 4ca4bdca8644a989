"""Training data for the prior: random crops of the demo world or of ERA5 files, and the batch schedule.

* :class:`TrainingStream` — demo-world crops drawn uniformly over the sphere's area
  (latitude ∝ cos φ) at 6-hourly times of :data:`zssd_engine.demo_world.TRAIN_YEARS` only; a
  fraction is centred on active tropical cyclones so the prior sees their (rare) structure.
  The held-out years are refused by :func:`zssd_engine.demo_world.check_training_time`.
* :class:`Era5CropStream` — random windows of an ERA5 dataset (held-out years excluded).
* :func:`make_stream` — the stream a training config names.
* :func:`training_batches` — the batches of steps ``start, start+1, …``: batch ``k`` of rank
  ``r`` depends only on ``(seed, r, k)`` (:func:`step_seed`, :func:`reseed`), so a resumed run
  sees exactly the batches of an uninterrupted one; optional prefetch thread, worker processes
  (``data_workers``: on a many-core accelerator machine the demo world, not the network, is the
  bottleneck) and reuse pool.
"""

from __future__ import annotations

import collections
import multiprocessing as mp
import os
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import pandas as pd

from .conditioning import static_channels, time_features
from .demo_world import HELDOUT_YEARS, TRAIN_YEARS, DemoWorld, check_training_time
from .grids import LatLonGrid, Region, era5_grid, wrap_lon
from .variables import VARIABLES

__all__ = ["Batch", "TrainingStream", "Era5CropStream", "xr_index", "make_stream", "step_seed", "reseed",
           "fresh_batches", "training_batches"]


@dataclass(frozen=True)
class Batch:
    """A batch of training crops (what every stream's ``batch(n)`` returns)."""

    x: np.ndarray           # (n, 4, H, W) physical units, float32
    static: np.ndarray      # (n, S, H, W) float32
    time_feats: np.ndarray  # (n, F) float32
    times: list
    grids: list = field(default_factory=list)  # the crops' grids (the demo stream only)


class TrainingStream:
    """Random demo-world crops for training (``batch(n)``) and normalisation statistics (``stats``)."""

    def __init__(self, world: DemoWorld | None = None, crop: int = 64, seed: int = 0,
                 statics=None, cyclone_fraction: float = 0.15, years: tuple[int, ...] = TRAIN_YEARS,
                 max_abs_lat: float = 78.0) -> None:
        self.world = world if world is not None else DemoWorld(0, statics)
        self.statics = self.world.statics
        self.crop = int(crop)
        self.rng = np.random.default_rng(seed)
        self.cyclone_fraction = cyclone_fraction
        self.years = tuple(years)
        for y in self.years:
            check_training_time(pd.Timestamp(year=y, month=6, day=1))
        self.max_abs_lat = max_abs_lat
        self._era5 = era5_grid()
        #: (crops containing an active cyclone core, all crops) drawn so far
        self.cyclone_counts = [0, 0]

    # ------------------------------------------------------------ sampling
    def _random_time(self) -> pd.Timestamp:
        """A uniformly drawn 6-hourly time of the training years."""
        y = int(self.rng.choice(self.years))
        d = int(self.rng.integers(0, 365))
        h = int(self.rng.choice([0, 6, 12, 18]))
        return pd.Timestamp(year=y, month=1, day=1) + pd.Timedelta(days=d, hours=h)

    def _region_at(self, lat_c: float, lon_c: float) -> LatLonGrid:
        """The ``crop x crop`` ERA5 sub-grid centred near ``(lat_c, lon_c)`` (clipped to ±``max_abs_lat``)."""
        size = self.crop * 0.25
        s = np.clip(np.floor((lat_c - size / 2) / 0.25) * 0.25, -self.max_abs_lat, self.max_abs_lat - size)
        w = float(np.floor(wrap_lon(lon_c - size / 2) / 0.25) * 0.25)
        return self._era5.select(Region(float(s), float(s) + size, w, float(wrap_lon(w + size))))[0]

    def sample(self) -> tuple[dict[str, np.ndarray], np.ndarray, pd.Timestamp, LatLonGrid]:
        """One crop: ``(fields by variable, static channels, time, grid)``; ``cyclone_fraction`` on a cyclone."""
        t = self._random_time()
        grid = None
        if self.rng.random() < self.cyclone_fraction:
            active = self.world.active_cyclones(t)
            if not active:  # look for a time with a cyclone
                for _ in range(200):
                    t = self._random_time()
                    active = self.world.active_cyclones(t)
                    if active:
                        break
            if active:
                _, st = active[int(self.rng.integers(len(active)))]
                off = self.rng.uniform(-0.35, 0.35, 2) * self.crop * 0.25
                grid = self._region_at(st[0] + off[0], st[1] + off[1])
                self.cyclone_counts[0] += 1
        if grid is None:
            lim = np.sin(np.deg2rad(self.max_abs_lat - self.crop * 0.125))
            lat_c = float(np.rad2deg(np.arcsin(self.rng.uniform(-lim, lim))))
            grid = self._region_at(lat_c, float(self.rng.uniform(0, 360)))
        check_training_time(t)
        self.cyclone_counts[1] += 1
        f = self.world.fields(t, grid)
        dem, land = self.statics.region(grid)
        return f, static_channels(grid, dem, land, t), t, grid

    def batch(self, n: int) -> Batch:
        """``n`` random crops (physical units) with their grids."""
        xs, ss, ts, gs = [], [], [], []
        for _ in range(n):
            f, st, t, g = self.sample()
            xs.append(np.stack([f[v] for v in VARIABLES]))
            ss.append(st)
            ts.append(t)
            gs.append(g)
        return Batch(np.stack(xs).astype(np.float32), np.stack(ss), time_features(ts), ts, gs)

    def stats(self, n_samples: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Per-variable mean and standard deviation over ``n_samples`` crops."""
        b = self.batch(n_samples)
        return b.x.mean(axis=(0, 2, 3)).astype(np.float32), b.x.std(axis=(0, 2, 3)).astype(np.float32)


# ---------------------------------------------------------------------- ERA5 files
class Era5CropStream:
    """Random ``crop × crop`` windows of an ERA5 dataset opened by :func:`zssd_engine.readers.open_era5`.

    Same interface as :class:`TrainingStream` (``batch``,
    ``stats``, ``rng``, ``years``).  Held-out years are excluded.  The dataset
    must hold all four variables on the 0.25° ERA5 grid (global or regional);
    statics come from :func:`zssd_engine.statics.load_statics`.
    """

    def __init__(self, path: str | os.PathLike, crop: int = 64, seed: int = 0, statics=None,
                 years: tuple[int, ...] | None = None) -> None:
        from .errors import DataError
        from .operators import grid_from_xarray
        from .readers import open_era5

        self.ds = open_era5(path)
        missing = [v for v in VARIABLES if v not in self.ds.data_vars]
        if missing:
            raise DataError(f"ERA5 training data {str(path)!r} lacks variables {missing}")
        self.grid = grid_from_xarray(self.ds)
        if abs(self.grid.dlat - 0.25) > 1e-6 or abs(self.grid.dlon - 0.25) > 1e-6:
            raise DataError(f"ERA5 training data {str(path)!r} must be on the 0.25° grid, "
                            f"got {self.grid.dlat:g}°x{self.grid.dlon:g}°")
        self.crop = int(crop)
        if self.grid.shape[0] < self.crop or (self.grid.shape[1] < self.crop and not self.grid.is_global_lon):
            raise DataError(f"ERA5 training data {str(path)!r} ({self.grid.shape[0]}x{self.grid.shape[1]}) "
                            f"is smaller than the {crop}x{crop} crop")
        tidx = self.ds.indexes["time"]
        yrs = np.asarray([t.year for t in tidx])
        self.heldout_years = tuple(HELDOUT_YEARS)
        ok = ~np.isin(yrs, self.heldout_years)
        if years is not None:
            ok &= np.isin(yrs, list(years))
        self.time_index = np.nonzero(ok)[0]
        if self.time_index.size == 0:
            raise DataError(f"ERA5 training data {str(path)!r} has no time outside the held-out years "
                            f"{self.heldout_years}")
        self.years = tuple(sorted({int(y) for y in yrs[self.time_index]}))
        if statics is None:
            from .statics import load_statics
            statics = load_statics()
        self.statics = statics
        self.rng = np.random.default_rng(seed)

    def sample(self) -> tuple[np.ndarray, np.ndarray, pd.Timestamp]:
        """One random window: ``(x (4, crop, crop) float32, static channels, time)``."""
        c = self.crop
        ti = int(self.rng.choice(self.time_index))
        i0 = int(self.rng.integers(0, self.grid.shape[0] - c + 1))
        nlon = self.grid.shape[1]
        j0 = int(self.rng.integers(0, nlon if self.grid.is_global_lon else nlon - c + 1))
        lat_idx = np.arange(i0, i0 + c)
        lon_idx = (j0 + np.arange(c)) % nlon
        shift = 360.0 * ((j0 + np.arange(c)) // nlon)
        sub = self.grid.subset(lat_idx, lon_idx, lon_shift=shift)
        win = self.ds.isel(time=ti, lat=xr_index(lat_idx), lon=xr_index(lon_idx))
        x = np.stack([np.asarray(win[v].values, dtype=np.float32) for v in VARIABLES])
        t = self.ds.indexes["time"][ti]
        dem, land = self.statics.region(sub)
        return x, static_channels(sub, dem, land, t), t

    def batch(self, n: int) -> Batch:
        """``n`` random windows (physical units); ``grids`` is left empty."""
        xs, ss, ts = [], [], []
        for _ in range(n):
            x, s, t = self.sample()
            xs.append(x)
            ss.append(s)
            ts.append(t)
        return Batch(np.stack(xs), np.stack(ss), time_features(ts), ts)

    def stats(self, n_samples: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Per-variable mean and standard deviation over ``n_samples`` windows."""
        b = self.batch(n_samples)
        return b.x.mean(axis=(0, 2, 3)).astype(np.float32), b.x.std(axis=(0, 2, 3)).astype(np.float32)


def xr_index(idx: np.ndarray) -> Any:
    """Index array for ``Dataset.isel`` (a contiguous slice when possible, for lazy stores)."""
    if idx.size and np.all(np.diff(idx) == 1):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


def make_stream(cfg, seed: int = 0) -> "TrainingStream | Era5CropStream":
    """The training stream named by ``cfg.data`` (``"demo"`` or an ERA5 path).

    ``cfg`` is a :class:`zssd_engine.prior.config.TrainConfig` (``data``, ``crop``, ``world_seed``,
    ``cyclone_fraction``).
    """
    if cfg.data == "demo":
        return TrainingStream(world=DemoWorld(cfg.world_seed), crop=cfg.crop, seed=seed,
                              cyclone_fraction=cfg.cyclone_fraction)
    return Era5CropStream(cfg.data, crop=cfg.crop, seed=seed)


# ---------------------------------------------------------------------- batch schedule
def step_seed(*key: int) -> int:
    """A 63-bit seed derived from ``key`` (NumPy SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in key]).generate_state(2, np.uint32)
               .astype(np.uint64).dot(np.array([1, 1 << 32], dtype=np.uint64)) & ((1 << 63) - 1))


def reseed(stream, seed: int) -> None:
    """Make the stream's next draws a function of ``seed`` (``reseed()`` or its ``rng`` attribute)."""
    if hasattr(stream, "reseed"):
        stream.reseed(seed)
    elif hasattr(stream, "rng"):
        stream.rng = np.random.default_rng(seed)


#: The stream of a data worker process (set by :func:`_worker_init`).
_WORKER: dict[str, Any] = {}


def _worker_init(stream, n: int, seed: int, rank: int) -> None:
    """Set up a data worker process: its copy of the stream and the batch recipe; one BLAS/OpenMP thread."""
    import sys

    from threadpoolctl import threadpool_limits

    os.environ["OMP_NUM_THREADS"] = "1"  # for libraries that start their pools later
    if "torch" in sys.modules:  # forked from the trainer: its intra-op pool would oversubscribe the cores
        sys.modules["torch"].set_num_threads(1)
    # BLAS pools already loaded in the parent keep its thread count in a forked child (an environment variable
    # set now comes too late).  Two workers with 16-thread OpenBLAS pools on 2 cores: 1.05 steps/s, limited: 4.5
    threadpool_limits(limits=1)
    _WORKER.update(stream=stream, n=n, seed=seed, rank=rank)


def _worker_batch(k: int) -> tuple[Any, list[int] | None]:
    """Batch ``k`` in a worker process (the same function of ``(seed, rank, k)`` as in the parent), and what it
    added to the stream's ``cyclone_counts`` (``None`` for a stream that keeps none), for the parent's count."""
    w = _WORKER
    st = w["stream"]
    reseed(st, step_seed(w["seed"], w["rank"], k, 1))
    counts = getattr(st, "cyclone_counts", None)
    before = None if counts is None else list(counts)
    b = st.batch(w["n"])
    return b, (None if before is None else [int(a) - int(x) for a, x in zip(st.cyclone_counts, before)])


def _worker_batches(stream, n: int, seed: int, rank: int, start: int, workers: int) -> Iterator[Any]:
    """Batches ``start, start+1, …`` made by ``workers`` processes, ``2·workers`` ahead, yielded in order."""
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    pool = ctx.Pool(workers, initializer=_worker_init, initargs=(stream, n, seed, rank))
    try:
        pending: collections.deque = collections.deque()
        k = start
        while True:
            while len(pending) < 2 * workers:
                pending.append(pool.apply_async(_worker_batch, (k,)))
                k += 1
            b, drawn = pending.popleft().get()
            counts = getattr(stream, "cyclone_counts", None)
            if drawn is not None and counts is not None:  # the crops drawn in the workers count as the parent's
                for i, d in enumerate(drawn):
                    counts[i] += d
            yield b
    finally:
        pool.terminate()
        pool.join()


def fresh_batches(stream, n: int, seed: int, rank: int, start: int, prefetch: int,
                  workers: int = 0) -> Iterator[Any]:
    """Fresh batches ``start, start+1, …``; batch ``k`` depends only on ``(seed, rank, k)``.

    ``workers > 0``: made by that many worker processes (each with its own copy of the stream), the
    same batches in the same order as in one process; else in a ``prefetch`` thread or synchronously.
    """

    def make(k: int) -> Any:
        reseed(stream, step_seed(seed, rank, k, 1))
        return stream.batch(n)

    if workers > 0:
        yield from _worker_batches(stream, n, seed, rank, start, workers)
        return
    if prefetch <= 0:
        k = start
        while True:
            yield make(k)
            k += 1
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def work() -> None:
        k = start
        while not stop.is_set():
            try:
                item: Any = ("ok", make(k))
            except BaseException as exc:  # handed to the consumer
                item = ("error", exc)
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.2)
                    break
                except queue.Full:
                    continue
            if item[0] == "error":
                return
            k += 1

    th = threading.Thread(target=work, daemon=True, name="zssd-train-data")
    th.start()
    try:
        while True:
            kind, val = q.get()
            if kind == "error":
                raise val
            yield val
    finally:
        stop.set()


def training_batches(stream, cfg, rank: int, start: int) -> Iterator[Any]:
    """Training batches for steps ``start, start+1, …`` (deterministic in ``(seed, rank, step)``).

    ``cfg`` is a :class:`zssd_engine.prior.config.TrainConfig` (``batch``, ``seed``, ``prefetch``,
    ``data_workers``, ``data_reuse``, ``data_pool``).  With ``data_reuse = R > 1`` step ``s`` samples ``batch`` crops
    from the fresh batches ``k(s)-data_pool+1 … k(s)``, ``k(s) = s // R`` (a sliding pool).
    """
    R, P = cfg.data_reuse, cfg.data_pool
    if R == 1:
        yield from fresh_batches(stream, cfg.batch, cfg.seed, rank, start, cfg.prefetch, cfg.data_workers)
        return
    k_first = max(0, start // R - P + 1)
    fresh = fresh_batches(stream, cfg.batch, cfg.seed, rank, k_first, cfg.prefetch, cfg.data_workers)
    pool: dict[int, Any] = {}
    try:
        s = start
        while True:
            k = s // R
            while not pool or max(pool) < k:
                pool[k_first + len(pool) if not pool else max(pool) + 1] = next(fresh)
            for old in [j for j in pool if j <= k - P]:
                del pool[old]
            keys = sorted(pool)
            rng = np.random.default_rng(step_seed(cfg.seed, rank, s, 5))
            pick = rng.choice(len(keys) * cfg.batch, cfg.batch, replace=False)  # distinct crops
            src = [(pool[keys[j // cfg.batch]], j % cfg.batch) for j in pick]
            yield Batch(np.stack([np.asarray(b.x)[i] for b, i in src]),
                        np.stack([np.asarray(b.static)[i] for b, i in src]),
                        np.stack([np.asarray(b.time_feats)[i] for b, i in src]), [])
            s += 1
    finally:
        fresh.close()
