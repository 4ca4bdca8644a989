"""Static boundary fields of the prior: elevation and land fraction on the ERA5 0.25° grid.

Loaded from the shipped demo pack ``assets/static_0p25.npz`` (:data:`zssd_engine.paths.ASSETS`; rebuilt by
``scripts/build_assets.py`` from pvlib's DEM and the GLOBE land mask).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .grids import LatLonGrid, Region, era5_grid
from .paths import ASSETS

__all__ = ["ASSETS", "Statics", "load_statics"]


@dataclass(frozen=True, eq=False)
class Statics:
    """Global static fields on :func:`zssd_engine.grids.era5_grid` (lat 90 → −90, lon 0 → 359.75)."""

    dem: np.ndarray   # m above sea level, ocean = 0, float32 (721, 1440)
    land: np.ndarray  # land fraction 0..1, float32 (721, 1440)
    grid: LatLonGrid

    def region(self, where: Region | LatLonGrid) -> tuple[np.ndarray, np.ndarray]:
        """``(dem, land)`` on a region of the ERA5 grid (a :class:`Region` or a sub-grid from ``era5_grid().select``)."""
        sub = self.subgrid(where)
        li = np.rint((90.0 - sub.lat) / 0.25).astype(int)
        lo = np.rint(np.mod(sub.lon, 360.0) / 0.25).astype(int) % 1440
        return self.dem[np.ix_(li, lo)], self.land[np.ix_(li, lo)]

    def subgrid(self, where: Region | LatLonGrid) -> LatLonGrid:
        if isinstance(where, Region):
            return self.grid.select(where)[0]
        return where


@lru_cache(maxsize=4)
def load_statics(path: str | None = None) -> Statics:
    p = Path(path) if path else ASSETS / "static_0p25.npz"
    if not p.exists():
        raise FileNotFoundError(f"static fields {p} not found; rebuild with `python scripts/build_assets.py`")
    with np.load(p) as d:
        dem = d["dem"].astype(np.float32)
        land = (d["land"].astype(np.float32) / float(d["land_scale"])).clip(0.0, 1.0)
    g = era5_grid()
    if dem.shape != g.shape or land.shape != g.shape:
        raise ValueError(f"{p}: static fields have shape {dem.shape}, expected {g.shape}")
    return Statics(dem, land, g)
