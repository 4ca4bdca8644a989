"""Training data stream for the prior: random crops of the demo world (or of ERA5 files).

Crops are drawn uniformly over the sphere's area (latitude ∝ cos φ) at 6-hourly
times of :data:`engine.demo_world.TRAIN_YEARS` only; a fraction is centred on
active tropical cyclones so the prior sees their (rare) structure.  The
held-out years are refused by :func:`engine.demo_world.check_training_time`.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import pandas as pd

from .conditioning import static_channels, time_features
from .demo_world import TRAIN_YEARS, DemoWorld, check_training_time
from .grids import LatLonGrid, Region, era5_grid, wrap_lon
from .variables import VARIABLES

__all__ = ["Batch", "TrainingStream"]


@dataclass(frozen=True)
class Batch:
    x: np.ndarray           # (n, 4, H, W) physical units, float32
    static: np.ndarray      # (n, S, H, W) float32
    time_feats: np.ndarray  # (n, F) float32
    times: list
    grids: list


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
        y = int(self.rng.choice(self.years))
        d = int(self.rng.integers(0, 365))
        h = int(self.rng.choice([0, 6, 12, 18]))
        return pd.Timestamp(year=y, month=1, day=1) + pd.Timedelta(days=d, hours=h)

    def _region_at(self, lat_c: float, lon_c: float) -> LatLonGrid:
        size = self.crop * 0.25
        s = np.clip(np.floor((lat_c - size / 2) / 0.25) * 0.25, -self.max_abs_lat, self.max_abs_lat - size)
        w = float(np.floor(wrap_lon(lon_c - size / 2) / 0.25) * 0.25)
        return self._era5.select(Region(float(s), float(s) + size, w, float(wrap_lon(w + size))))[0]

    def sample(self) -> tuple[dict[str, np.ndarray], np.ndarray, pd.Timestamp, LatLonGrid]:
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
