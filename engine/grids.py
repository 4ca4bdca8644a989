"""Regular latitude/longitude grids, regions and latitude weights.

A pure-numpy core: a :class:`LatLonGrid` holds cell centres (and derives cell
bounds), a :class:`Region` is a ``S,N,W,E`` box that may cross the dateline and
may be written in either longitude convention.  The GCM native grids of the
paper's five models are named by their CMIP ``source_id``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

__all__ = [
    "LatLonGrid",
    "Region",
    "era5_grid",
    "regular_grid",
    "gaussian_latitudes",
    "gaussian_grid",
    "gcm_grid",
    "GCM_GRID_SPECS",
    "PAIRED_TASKS",
    "UNIFIED_RES",
    "unified_grid",
    "lat_weights",
    "wrap_lon",
    "GridError",
]

ERA5_RES = 0.25
#: Resolution (degrees) of the Unified Coordinate Guidance grid (paper: 5°).
UNIFIED_RES = 5.0


class GridError(ValueError):
    """A region or grid request that cannot be satisfied (message says why)."""


def wrap_lon(lon: np.ndarray | float, west: float = 0.0) -> np.ndarray:
    """Map longitudes into ``[west, west + 360)``."""
    return (np.asarray(lon, dtype=np.float64) - west) % 360.0 + west


def _edges_from_centres(c: np.ndarray, clip: tuple[float, float] | None) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    if c.size == 1:
        e = np.array([c[0] - 0.5, c[0] + 0.5])
    else:
        mid = 0.5 * (c[1:] + c[:-1])
        e = np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])
    if clip is not None:
        e = np.clip(e, *clip)
    return e


@dataclass(frozen=True, eq=False)
class LatLonGrid:
    """A rectilinear grid given by its cell centres (degrees).

    ``lat`` may be descending (ERA5) or ascending (most CMIP files); ``lon``
    must be strictly increasing but may run past 360 (a region across the
    dateline is stored as e.g. 170 … 190).  Bounds default to mid-points
    between centres (clipped to ±90° in latitude); Gaussian grids pass theirs.
    """

    lat: np.ndarray
    lon: np.ndarray
    name: str = "grid"
    lat_bounds: np.ndarray | None = field(default=None, repr=False)
    lon_bounds: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        lat = np.asarray(self.lat, dtype=np.float64)
        lon = np.asarray(self.lon, dtype=np.float64)
        if lat.ndim != 1 or lon.ndim != 1 or lat.size == 0 or lon.size == 0:
            raise GridError(f"grid {self.name!r}: lat/lon must be non-empty 1-D arrays")
        if lat.size > 1 and not (np.all(np.diff(lat) > 0) or np.all(np.diff(lat) < 0)):
            raise GridError(f"grid {self.name!r}: latitudes must be strictly monotonic")
        if lon.size > 1 and not np.all(np.diff(lon) > 0):
            raise GridError(f"grid {self.name!r}: longitudes must be strictly increasing")
        if np.any(np.abs(lat) > 90 + 1e-9):
            raise GridError(f"grid {self.name!r}: latitude outside [-90, 90]")
        object.__setattr__(self, "lat", lat)
        object.__setattr__(self, "lon", lon)
        if self.lat_bounds is None:
            object.__setattr__(self, "lat_bounds", _edges_from_centres(lat, (-90.0, 90.0)))
        else:
            object.__setattr__(self, "lat_bounds", np.asarray(self.lat_bounds, dtype=np.float64))
        if self.lon_bounds is None:
            object.__setattr__(self, "lon_bounds", _edges_from_centres(lon, None))
        else:
            object.__setattr__(self, "lon_bounds", np.asarray(self.lon_bounds, dtype=np.float64))

    # ------------------------------------------------------------------ basics
    @property
    def shape(self) -> tuple[int, int]:
        return (self.lat.size, self.lon.size)

    @property
    def descending(self) -> bool:
        return self.lat.size > 1 and self.lat[0] > self.lat[-1]

    @property
    def is_global_lon(self) -> bool:
        span = self.lon_bounds[-1] - self.lon_bounds[0]
        return abs(span - 360.0) < 1e-6

    @property
    def dlat(self) -> float:
        return float(np.median(np.abs(np.diff(self.lat)))) if self.lat.size > 1 else 1.0

    @property
    def dlon(self) -> float:
        return float(np.median(np.diff(self.lon))) if self.lon.size > 1 else 1.0

    def weights(self) -> np.ndarray:
        """cos φ latitude weights, shape ``(nlat,)`` (not normalised)."""
        return lat_weights(self.lat)

    def cell_area(self) -> np.ndarray:
        """Cell areas on the unit sphere, shape ``(nlat, nlon)`` (steradians)."""
        s = np.abs(np.diff(np.sin(np.deg2rad(self.lat_bounds))))
        w = np.deg2rad(np.diff(self.lon_bounds))
        return np.outer(s, w)

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return (f"LatLonGrid({self.name!r}, {self.lat.size}x{self.lon.size}, "
                f"lat {self.lat[0]:g}..{self.lat[-1]:g}, lon {self.lon[0]:g}..{self.lon[-1]:g})")

    # ----------------------------------------------------------------- subsets
    def subset(self, lat_idx: np.ndarray, lon_idx: np.ndarray, name: str | None = None,
               lon_shift: np.ndarray | None = None) -> "LatLonGrid":
        """A sub-grid from index arrays (``lon_shift`` adds 360s to keep lon increasing)."""
        lat_idx = np.asarray(lat_idx)
        lon_idx = np.asarray(lon_idx)
        lon = self.lon[lon_idx] + (0.0 if lon_shift is None else lon_shift)
        lb = self.lat_bounds
        latb = np.concatenate([lb[lat_idx], [lb[lat_idx[-1] + 1]]])
        lob = self.lon_bounds
        lonb_lo = lob[lon_idx] + (0.0 if lon_shift is None else lon_shift)
        lonb = np.concatenate([lonb_lo, [lonb_lo[-1] + (lob[lon_idx[-1] + 1] - lob[lon_idx[-1]])]])
        return LatLonGrid(self.lat[lat_idx], lon, name or self.name, latb, lonb)

    def select(self, region: "Region", min_cells: int = 1, what: str = "region") -> tuple["LatLonGrid", np.ndarray, np.ndarray]:
        """Cells whose *centres* lie in the half-open box ``[S, N) x [W, E)``.

        Returns ``(subgrid, lat_index, lon_index)``.  Latitude order follows the
        parent grid; longitudes are made increasing (a dateline crossing yields
        e.g. 170 … 189.75).  Raises :class:`GridError` if fewer than
        ``min_cells`` cells fall in either direction.
        """
        lat_idx = np.nonzero((self.lat >= region.south) & (self.lat < region.north))[0]
        rel = wrap_lon(self.lon - region.west)  # [0, 360)
        width = region.width
        lon_sel = np.nonzero(rel < width - 1e-9)[0]
        if lat_idx.size < min_cells or lon_sel.size < min_cells:
            raise GridError(
                f"{what} {region} holds {lat_idx.size}x{lon_sel.size} cells of grid {self.name!r} "
                f"(resolution {self.dlat:g}°x{self.dlon:g}°); at least {min_cells}x{min_cells} needed")
        order = np.argsort(rel[lon_sel], kind="stable")
        lon_idx = lon_sel[order]
        lon_vals = region.west + rel[lon_idx]
        shift = lon_vals - self.lon[lon_idx]
        return self.subset(lat_idx, lon_idx, name=f"{self.name}[{region}]", lon_shift=shift), lat_idx, lon_idx

    def covering(self, region: "Region", margin_cells: int = 0) -> tuple["LatLonGrid", np.ndarray, np.ndarray]:
        """Cells whose *bounds* overlap the region, plus ``margin_cells`` on each side."""
        lb = self.lat_bounds
        lo = np.minimum(lb[:-1], lb[1:])
        hi = np.maximum(lb[:-1], lb[1:])
        lat_hit = np.nonzero((hi > region.south) & (lo < region.north))[0]
        if lat_hit.size == 0:
            raise GridError(f"region {region} lies outside grid {self.name!r} in latitude")
        i0 = max(int(lat_hit.min()) - margin_cells, 0)
        i1 = min(int(lat_hit.max()) + margin_cells, self.lat.size - 1)
        lat_idx = np.arange(i0, i1 + 1)
        # longitude: cells whose interval overlaps [W, E) on the circle
        lob = self.lon_bounds
        west_rel = wrap_lon(lob[:-1] - region.west, -180.0)  # in [-180,180)
        east_rel = west_rel + np.diff(lob)
        hit = (east_rel > 0) & (west_rel < region.width)
        if not self.is_global_lon:
            lon_idx = np.nonzero(hit)[0]
            if lon_idx.size == 0:
                raise GridError(f"region {region} lies outside grid {self.name!r} in longitude")
            j0 = max(int(lon_idx.min()) - margin_cells, 0)
            j1 = min(int(lon_idx.max()) + margin_cells, self.lon.size - 1)
            lon_idx = np.arange(j0, j1 + 1)
            return self.subset(lat_idx, lon_idx, name=f"{self.name}~[{region}]"), lat_idx, lon_idx
        n = self.lon.size
        # order hits by their relative position, extend by margin cyclically
        first = int(np.argmin(np.where(hit, west_rel, np.inf)))
        count = int(hit.sum()) + 2 * margin_cells
        count = min(count, n)
        start = first - margin_cells
        lon_idx = (start + np.arange(count)) % n
        base = region.west + west_rel[lon_idx[0]] + 0.5 * (lob[lon_idx[0] + 1] - lob[lon_idx[0]])
        lon_vals = base + np.concatenate([[0.0], np.cumsum(wrap_lon(np.diff(self.lon[lon_idx]), -180.0))])
        shift = lon_vals - self.lon[lon_idx]
        return self.subset(lat_idx, lon_idx, name=f"{self.name}~[{region}]", lon_shift=shift), lat_idx, lon_idx


def lat_weights(lat: np.ndarray) -> np.ndarray:
    """cos φ weights for latitudes in degrees (WeatherBench2 convention, unnormalised)."""
    return np.cos(np.deg2rad(np.asarray(lat, dtype=np.float64))).clip(min=0.0)


@dataclass(frozen=True)
class Region:
    """A ``S,N,W,E`` box in degrees.  ``west > east`` (after wrapping) crosses the dateline."""

    south: float
    north: float
    west: float
    east: float

    def __post_init__(self) -> None:
        for name in ("south", "north", "west", "east"):
            v = getattr(self, name)
            if not np.isfinite(v):
                raise GridError(f"region {name} is not a finite number: {v!r}")
        if not (-90.0 <= self.south < self.north <= 90.0):
            raise GridError(f"region south/north must satisfy -90 <= S < N <= 90, got S={self.south:g}, N={self.north:g}")
        if not (-180.0 <= self.west <= 360.0 and -180.0 <= self.east <= 360.0):
            raise GridError(f"region west/east must lie in [-180, 360], got W={self.west:g}, E={self.east:g}")
        if self.width <= 0 or self.width > 360:
            raise GridError(f"region width must be in (0, 360], got W={self.west:g}, E={self.east:g}")

    @property
    def width(self) -> float:
        w = (self.east - self.west) % 360.0
        return 360.0 if (w == 0 and self.east != self.west) else w

    @property
    def height(self) -> float:
        return self.north - self.south

    @property
    def centre(self) -> tuple[float, float]:
        return (0.5 * (self.south + self.north), float(wrap_lon(self.west + 0.5 * self.width, -180.0)))

    @classmethod
    def parse(cls, text: str) -> "Region":
        """Parse ``"S,N,W,E"`` (degrees)."""
        parts = [p.strip() for p in str(text).split(",")]
        if len(parts) != 4:
            raise GridError(f"region must be 'S,N,W,E' (four numbers in degrees), got {text!r}")
        try:
            s, n, w, e = (float(p) for p in parts)
        except ValueError:
            raise GridError(f"region must be 'S,N,W,E' (four numbers in degrees), got {text!r}") from None
        return cls(s, n, w, e)

    @classmethod
    def around(cls, lat: float, lon: float, size_deg: float, res: float = ERA5_RES) -> "Region":
        """A square box of ``size_deg`` centred near (lat, lon), snapped to ``res``."""
        half = size_deg / 2.0
        s = np.floor((lat - half) / res) * res
        s = float(np.clip(s, -90.0 + res, 90.0 - size_deg))
        w = float(wrap_lon(np.floor((lon - half) / res) * res, -180.0))
        return cls(s, s + size_deg, w, float(wrap_lon(w + size_deg, -180.0)))

    def as_text(self) -> str:
        return f"{self.south:g},{self.north:g},{self.west:g},{self.east:g}"

    def __str__(self) -> str:
        return f"(S={self.south:g}, N={self.north:g}, W={self.west:g}, E={self.east:g})"


# ---------------------------------------------------------------------- grids
@lru_cache(maxsize=None)
def era5_grid() -> LatLonGrid:
    """ERA5 0.25°: lat 90 → −90 (721), lon 0 → 359.75 (1440)."""
    lat = np.linspace(90.0, -90.0, 721)
    lon = np.arange(1440) * ERA5_RES
    return LatLonGrid(lat, lon, "ERA5-0.25")


@lru_cache(maxsize=None)
def regular_grid(res: float, name: str | None = None) -> LatLonGrid:
    """Global cell-centred grid of ``res`` degrees (lat descending, lon from 0)."""
    nlat = int(round(180.0 / res))
    nlon = int(round(360.0 / res))
    lat = 90.0 - res * (np.arange(nlat) + 0.5)
    lon = res * (np.arange(nlon) + 0.5)
    return LatLonGrid(lat, lon, name or f"regular-{res:g}deg")


def unified_grid(res: float = UNIFIED_RES) -> LatLonGrid:
    """The Unified Coordinate Guidance grid (paper: 5°)."""
    return regular_grid(res, f"unified-{res:g}deg")


def gaussian_latitudes(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian latitudes (degrees, north → south) and their cell bounds.

    The bounds follow the Gauss weights: ``sin`` of the bound latitudes are
    the cumulative Gauss–Legendre weights, so each cell's area equals its
    quadrature weight.  (CMOR-written files such as the shipped MPI-ESM-LR one
    store mid-point bounds instead, up to 0.065° away; readers use a file's
    own ``lat_bnds`` when it has them.)
    """
    x, w = np.polynomial.legendre.leggauss(n)  # ascending in x = sin φ
    lat = np.rad2deg(np.arcsin(x))[::-1]
    w = w[::-1]
    sb = 1.0 - np.concatenate([[0.0], np.cumsum(w)])
    sb = np.clip(sb, -1.0, 1.0)
    bounds = np.rad2deg(np.arcsin(sb))
    bounds[0], bounds[-1] = 90.0, -90.0
    return lat, bounds


def gaussian_grid(nlat: int, nlon: int, name: str) -> LatLonGrid:
    lat, lb = gaussian_latitudes(nlat)
    d = 360.0 / nlon
    lon = np.arange(nlon) * d
    lonb = np.concatenate([lon - d / 2, [lon[-1] + d / 2]])
    return LatLonGrid(lat, lon, name, lb, lonb)


@dataclass(frozen=True)
class GridSpec:
    """How a model's native atmosphere grid is laid out (nlon × nlat)."""

    nlon: int
    nlat: int
    kind: str  # "gaussian" | "regular-poles" (IPSL LMDZ: includes both poles)
    note: str = ""


#: Native atmospheric grids of the paper's five CMIP6 models (and the CMIP5 file we ship).
GCM_GRID_SPECS: dict[str, GridSpec] = {
    "IPSL-CM6A-LR": GridSpec(144, 143, "regular-poles", "LMDZ 2.5° x 1.27°, poles included"),
    "MIROC6": GridSpec(256, 128, "gaussian", "T85 Gaussian (1.4°)"),
    "AWI-CM-1-1-MR": GridSpec(384, 192, "gaussian", "ECHAM6 T127 Gaussian (0.94°)"),
    "MPI-ESM1-2-LR": GridSpec(192, 96, "gaussian", "ECHAM6 T63 Gaussian (1.875°)"),
    "MPI-ESM1-2-HR": GridSpec(384, 192, "gaussian", "ECHAM6 T127 Gaussian (0.94°)"),
    "MPI-ESM-LR": GridSpec(192, 96, "gaussian", "CMIP5 ECHAM6 T63 Gaussian (1.875°)"),
}

#: Paired (perfect-model) tasks: name -> coarse resolution in degrees.
PAIRED_TASKS: dict[str, float] = {"x6": 1.5, "x10": 2.5, "x20": 5.0}


@lru_cache(maxsize=None)
def gcm_grid(source_id: str) -> LatLonGrid:
    """Native grid of a GCM by CMIP ``source_id`` or of a paired task (``x6``, ``x10``, ``x20``)."""
    if source_id in PAIRED_TASKS:
        return regular_grid(PAIRED_TASKS[source_id], source_id)
    spec = GCM_GRID_SPECS.get(source_id)
    if spec is None:
        known = ", ".join(list(GCM_GRID_SPECS) + list(PAIRED_TASKS))
        raise GridError(f"unknown GCM {source_id!r}; known: {known}")
    if spec.kind == "gaussian":
        return gaussian_grid(spec.nlat, spec.nlon, source_id)
    lat = np.linspace(90.0, -90.0, spec.nlat)
    d = 360.0 / spec.nlon
    lon = np.arange(spec.nlon) * d
    return LatLonGrid(lat, lon, source_id)
