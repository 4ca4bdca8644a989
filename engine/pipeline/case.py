"""The case: one (GCM, time, region) problem with its reference and conditioning, and its inputs' checks.

:func:`prepare_case` assembles a :class:`Case`; every input check happens here (or in the
sampler constructors), before any expensive computation.  Also the method-name tuples the
facade exposes (from the registry :data:`zssd_engine.methods.METHODS`) and the per-process demo
world (:func:`get_world`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ..conditioning import static_channels, time_features, to_timestamp
from ..demo_world import SOURCE_LABEL, DemoWorld
from ..gcm import GCM_SOURCES, REAL_FILES, gcm_field
from ..grids import GridError, LatLonGrid, Region, era5_grid
from ..methods import CLASSICAL, DIFFUSION, METHODS as METHOD_REGISTRY, method_names
from ..operators import grid_from_xarray
from ..real_sources import ERA5_CREDIT, REAL_LABEL, REAL_SOURCES, era5_reference
from ..variables import VARIABLES

__all__ = [
    "BASELINES", "DIFFUSION_METHODS", "GUIDED_METHODS", "METHODS", "REFERENCE_LABEL", "Case", "check_method",
    "check_source", "get_world", "input_domain", "parse_region", "parse_time", "prepare_case", "reference_label",
]

#: Method names by kind, from the registry :data:`zssd_engine.methods.METHODS`.
BASELINES: tuple[str, ...] = method_names(kind=CLASSICAL)
DIFFUSION_METHODS: tuple[str, ...] = method_names(kind=DIFFUSION)
#: Methods that take a guidance scale ζ (zssd-bc uses zssd's).
GUIDED_METHODS: tuple[str, ...] = method_names(guided=True)
METHODS: tuple[str, ...] = tuple(METHOD_REGISTRY)
REFERENCE_LABEL = "demo world (synthetic)"


# ---------------------------------------------------------------- inputs
def parse_time(time) -> pd.Timestamp:
    """An ISO time (or any time-like) → ``pd.Timestamp``; ``ValueError`` with the offending text."""
    try:
        return to_timestamp(time)
    except (ValueError, TypeError) as e:
        raise ValueError(f"cannot read time {time!r} (use ISO 8601, e.g. 2021-08-28T12:00): {e}") from None


def parse_region(region) -> Region:
    return region if isinstance(region, Region) else Region.parse(region)


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    return method


def check_source(source_id: str, files: dict | None = None) -> str:
    known = tuple(GCM_SOURCES) + tuple(files or {})
    if source_id not in known:
        raise GridError(f"unknown GCM {source_id!r}; known: {', '.join(known)}")
    return source_id


def input_domain(source_id: str, files: dict | None = None) -> str:
    """``"real"`` when ``source_id`` is real weather or a real model's output (an ERA5 source, a real GCM
    file, a user's files), ``"demo"`` for the demo world's tasks and pseudo-GCMs."""
    return "real" if source_id in REAL_SOURCES or source_id in REAL_FILES or source_id in (files or {}) else "demo"


_WORLDS: dict[int, DemoWorld] = {}


def get_world(seed: int = 0) -> DemoWorld:
    """A per-process demo world (its cyclone tracks are cached)."""
    if seed not in _WORLDS:
        _WORLDS[seed] = DemoWorld(seed)
    return _WORLDS[seed]


# ---------------------------------------------------------------- the case
@dataclass(eq=False)
class Case:
    """One downscaling problem: a GCM field at a time over a region, plus the reference and conditioning.

    ``paired`` is True for the pseudo-GCMs and the ×6/×10/×20 tasks (the reference is the
    same demo-world state the GCM field was derived from) and for the real ``ERA5-x20``/``ERA5-x10``
    tasks (the reference is real ERA5 at its 1° points, a subset of the fine grid: scores are taken
    at those points, :func:`zssd_engine.metrics.at_reference_points`); for a real GCM file or the
    unpaired real sources the reference is the demo world at that date — an *unpaired* comparison.
    """

    source_id: str
    time: pd.Timestamp
    region: Region
    fine: LatLonGrid
    reference: xr.Dataset
    gcm: xr.Dataset
    static: np.ndarray
    time_feats: np.ndarray
    paired: bool
    world_seed: int = 0
    files: dict | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return self.fine.shape

    @property
    def gcm_grid(self) -> LatLonGrid:
        return grid_from_xarray(self.gcm, name=self.source_id)

    @property
    def reference_display(self) -> xr.Dataset:
        """The reference on the fine grid, *for drawing only*.

        A demo-world reference is already on the fine grid.  Real ERA5 exists only at its 1°
        points: each 0.25° cell shows its nearest 1° point (blocks of 4x4 cells), so the map
        shows what is known and no more.  Scores never use this: they are taken at the points.
        """
        if not self.real_reference:
            return self.reference
        ref = self.reference
        f = self.fine
        li = np.abs(f.lat[:, None] - ref["lat"].values[None, :]).argmin(1)
        lo = np.abs(f.lon[:, None] - ref["lon"].values[None, :]).argmin(1)
        data = {v: (("lat", "lon"), ref[v].values[np.ix_(li, lo)], dict(ref[v].attrs)) for v in ref.data_vars}
        return xr.Dataset(data, coords={"lat": f.lat, "lon": f.lon}, attrs=dict(ref.attrs, display="nearest 1° point"))

    @property
    def domain(self) -> str:
        """``"real"`` for real inputs (the ERA5 sources, a real GCM file, a user's files), else ``"demo"``:
        which tuned guidance table applies (:func:`zssd_engine.samplers.default_guidance_scale`)."""
        return input_domain(self.source_id, self.files)

    @property
    def real_reference(self) -> bool:
        """True when the reference is real ERA5 (at its 1° points), not the demo world."""
        return bool(self.reference.attrs.get("real", 0))

    @property
    def gcm_variables(self) -> tuple[str, ...]:
        return tuple(v for v in VARIABLES if v in self.gcm.data_vars)

    def label(self) -> str:
        return f"{self.source_id} {self.time.strftime('%Y-%m-%dT%H:%M')} {self.region.as_text()}"

    def provenance(self) -> dict[str, Any]:
        return {
            "gcm": self.source_id,
            "gcm_description": str(self.gcm.attrs.get("description", self.source_id)),
            "gcm_kind": str(self.gcm.attrs.get("kind", "")),
            "gcm_native_cells": f"{self.gcm.sizes['lat']}x{self.gcm.sizes['lon']}",
            "gcm_selected_time": str(self.gcm.attrs.get("selected_time", self.time.isoformat())),
            "time": self.time.isoformat(),
            "region": self.region.as_text(),
            "fine_grid": f"ERA5 0.25deg sub-grid {self.fine.shape[0]}x{self.fine.shape[1]}",
            "reference": reference_label(self),
            "paired": self.paired,
            **({"credit": ERA5_CREDIT} if self.real_reference or self.source_id in REAL_SOURCES else {}),
        }


def reference_label(case: "Case") -> str:
    """What the case's reference is, for views, tables and file attributes."""
    if case.real_reference:
        return f"{REAL_LABEL}: {case.reference.attrs.get('points', '')}"
    return f"{REFERENCE_LABEL}: {SOURCE_LABEL}, seed {case.world_seed}"


def prepare_case(source_id: str, time, region, world: DemoWorld | None = None, files: dict | None = None,
                 world_seed: int = 0, time_tolerance=None) -> Case:
    """Assemble a :class:`Case`; raises ``ValueError`` (``GridError``/``DataError``) for bad input.

    Checks: known GCM, readable time, valid region with ERA5 cells, GCM data at that time
    (the real file only covers 2005), region at least one GCM cell in each direction.
    """
    check_source(source_id, files)
    ts = parse_time(time)
    reg = parse_region(region)
    fine, _, _ = era5_grid().select(reg, what="region")
    world = world if world is not None else get_world(world_seed)
    gcm = gcm_field(source_id, ts, reg, world, files=files, time_tolerance=time_tolerance)
    g = grid_from_xarray(gcm, name=source_id)
    if reg.height < g.dlat - 1e-6 or reg.width < g.dlon - 1e-6:
        raise GridError(f"region {reg} ({reg.height:g}°x{reg.width:g}°) is smaller than one {source_id} cell "
                        f"({g.dlat:.3g}°x{g.dlon:.3g}°); choose a larger region")
    real_src = REAL_SOURCES.get(source_id)
    real = source_id in REAL_FILES or source_id in (files or {}) or (real_src is not None and not real_src.paired)
    if real_src is not None and real_src.paired:
        reference = era5_reference(ts, fine)  # real ERA5 at its 1° points
    else:
        reference = world.dataset(ts, fine)
        reference.attrs["paired"] = int(not real)
    dem, land = world.statics.region(fine)
    static = static_channels(fine, dem, land, ts)
    tf = time_features([ts])
    return Case(source_id, ts, reg, fine, reference, gcm, static, tf, paired=not real,
                world_seed=world.seed, files=files)
