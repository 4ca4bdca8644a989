"""The observation a sampler conditions on: grids, the GCM values and :class:`Observation`.

A linear observation ``y ≈ A(x)`` in the prior's normalised space.  The averaging and
interpolation operators have rows that sum to one, so ``A(normalize(x)) = normalize(A(x))``
and a misfit measured between normalised fields equals the physical misfit divided by each
variable's std — the variables are commensurate.

* Grids: :func:`fine_bounds_region`, :func:`clip_grid` (coarse cells clipped to the fine
  grid's outer bounds), :func:`ucg_coarse_grid` (the unified 5° cells, for ZSSD),
  :func:`native_clipped_grid` (the GCM's own cells, for DPS/DDRM), :func:`gcm_grid_of`,
  :func:`check_covers`.
* Values: :func:`gcm_tensor`, :func:`gcm_values` (with the all-NaN check and the unguided
  variables), :func:`normalize_obs`, :func:`obs_weights` (cos φ, mean 1).
* :class:`Observation`: ``(A, y, W)`` and the misfit ``‖W^{1/2}(A(x̂0) − y)‖``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..grids import GridError, LatLonGrid, Region, lat_weights, unified_grid, wrap_lon
from ..operators import SeparableOperator, conservative, grid_from_xarray
from .contract import Denoiser

__all__ = ["Observation", "fine_bounds_region", "clip_grid", "ucg_coarse_grid", "native_clipped_grid",
           "gcm_grid_of", "check_covers", "gcm_tensor", "gcm_values", "coarse_means", "normalize_obs", "obs_weights"]


# ---------------------------------------------------------------- grids
def fine_bounds_region(fine: LatLonGrid) -> Region:
    """The box spanned by the fine grid's outer cell bounds (longitudes wrapped to [-180, 180))."""
    lb = fine.lat_bounds
    s, n = float(min(lb[0], lb[-1])), float(max(lb[0], lb[-1]))
    w, e = float(fine.lon_bounds[0]), float(fine.lon_bounds[-1])
    if e - w >= 360.0 - 1e-9:
        return Region(max(s, -90.0), min(n, 90.0), 0.0, 360.0)
    return Region(max(s, -90.0), min(n, 90.0), float(wrap_lon(w, -180.0)), float(wrap_lon(e, -180.0)))


def _align_lon(grid: LatLonGrid, ref_lon0: float) -> LatLonGrid:
    """Shift a grid's longitudes by a multiple of 360 so its first bound is next to ``ref_lon0``."""
    k = 360.0 * round((ref_lon0 - grid.lon_bounds[0]) / 360.0)
    if k == 0.0:
        return grid
    return LatLonGrid(grid.lat, grid.lon + k, grid.name, grid.lat_bounds, grid.lon_bounds + k)


def clip_grid(coarse: LatLonGrid, fine: LatLonGrid, name: str | None = None) -> LatLonGrid:
    """``coarse`` with its cell bounds clipped to the fine grid's outer bounds.

    Centres move to the middle of the clipped cells (the point a clipped-cell mean
    represents, which is where bilinear interpolation places it).
    """
    coarse = _align_lon(coarse, float(fine.lon_bounds[0]))
    flb = fine.lat_bounds
    lat_lo, lat_hi = float(min(flb[0], flb[-1])), float(max(flb[0], flb[-1]))
    lon_lo, lon_hi = float(fine.lon_bounds[0]), float(fine.lon_bounds[-1])
    latb = np.clip(coarse.lat_bounds, lat_lo, lat_hi)
    lonb = np.clip(coarse.lon_bounds, lon_lo, lon_hi)
    if np.any(np.abs(np.diff(latb)) <= 0) or np.any(np.diff(lonb) <= 0):
        raise GridError(f"grid {coarse.name!r} has cells outside the fine region {fine_bounds_region(fine)}")
    lat = 0.5 * (latb[:-1] + latb[1:])
    lon = 0.5 * (lonb[:-1] + lonb[1:])
    return LatLonGrid(lat, lon, name or f"{coarse.name}|clipped", latb, lonb)


def ucg_coarse_grid(fine: LatLonGrid, res: float | None = None) -> LatLonGrid:
    """The unified (5°) cells covering the fine grid, clipped to its outer bounds.

    Raises :class:`GridError` if fewer than 2×2 unified cells cover the region
    (the guidance would then constrain a single area mean).
    """
    ug = unified_grid() if res is None else unified_grid(res)
    cov, _, _ = ug.covering(fine_bounds_region(fine))
    if cov.shape[0] < 2 or cov.shape[1] < 2:
        region = fine_bounds_region(fine)
        raise GridError(
            f"the {ug.dlat:g}° unified grid has only {cov.shape[0]}x{cov.shape[1]} cells over region {region}; "
            f"Unified Coordinate Guidance needs at least 2x2 — use a larger region or one that crosses "
            f"{ug.dlat:g}° cell boundaries in both directions")
    return clip_grid(cov, fine, name=f"{ug.name}|clipped")


def native_clipped_grid(native: LatLonGrid, fine: LatLonGrid) -> tuple[LatLonGrid, np.ndarray, np.ndarray]:
    """The cells of a (sub-)grid that overlap the fine grid, clipped to it, with their indices."""
    sub, li, lo = native.covering(fine_bounds_region(fine))
    return clip_grid(sub, fine, name=f"{native.name}|clipped"), li, lo


def gcm_grid_of(gcm) -> LatLonGrid:
    """The (sub-)grid of a GCM dataset (uses its CF bounds)."""
    return grid_from_xarray(gcm, name=str(gcm.attrs.get("source_id", "gcm")))


def check_covers(native: LatLonGrid, fine: LatLonGrid, what: str = "the GCM field") -> None:
    """Raise :class:`GridError` unless ``native``'s cells span the fine grid's area."""
    nlb, flb = native.lat_bounds, fine.lat_bounds
    n_lo, n_hi = min(nlb[0], nlb[-1]), max(nlb[0], nlb[-1])
    f_lo, f_hi = min(flb[0], flb[-1]), max(flb[0], flb[-1])
    ok_lat = n_lo <= f_lo + 1e-6 and n_hi >= f_hi - 1e-6
    span = native.lon_bounds[-1] - native.lon_bounds[0]
    if native.is_global_lon:
        ok_lon = True
    else:
        off = 360.0 * round((fine.lon_bounds[0] - native.lon_bounds[0]) / 360.0)
        w = native.lon_bounds[0] + off
        ok_lon = (w <= fine.lon_bounds[0] + 1e-6 and w + span >= fine.lon_bounds[-1] - 1e-6) or (
            w - 360.0 <= fine.lon_bounds[0] + 1e-6 and w - 360.0 + span >= fine.lon_bounds[-1] - 1e-6)
    if not (ok_lat and ok_lon):
        raise GridError(f"{what} ({native.name}, lat {n_lo:g}..{n_hi:g}, lon {native.lon_bounds[0]:g}.."
                        f"{native.lon_bounds[-1]:g}) does not cover region {fine_bounds_region(fine)}")


# ---------------------------------------------------------------- values
def gcm_tensor(gcm, variables: Sequence[str], li: np.ndarray | None = None,
               lo: np.ndarray | None = None) -> torch.Tensor:
    """GCM variables as a float64 tensor ``(C, nlat, nlon)``; variables absent from ``gcm`` are all-NaN."""
    grid_shape = (gcm.sizes["lat"], gcm.sizes["lon"])
    chans = []
    for v in variables:
        if v in gcm.data_vars:
            a = np.asarray(gcm[v].transpose(..., "lat", "lon").values, dtype=np.float64)
            a = a.reshape(a.shape[-2:]) if a.ndim > 2 and int(np.prod(a.shape[:-2])) == 1 else a
            if a.ndim != 2:
                raise ValueError(f"GCM variable {v!r} must be a single (lat, lon) field, got shape {a.shape}")
        else:
            a = np.full(grid_shape, np.nan)
        chans.append(a)
    x = np.stack(chans)
    if li is not None:
        x = x[:, li][:, :, lo]
    return torch.as_tensor(x)


def gcm_values(prior: Denoiser, gcm, native: LatLonGrid, fine: LatLonGrid, li: np.ndarray | None = None,
               lo: np.ndarray | None = None) -> tuple[torch.Tensor, tuple[str, ...]]:
    """The GCM's values of the prior's variables (:func:`gcm_tensor`) and the variables it lacks.

    Raises ``ValueError`` when the field is all NaN over the region; the second item names the
    variables with no finite value (left unguided).
    """
    Y = gcm_tensor(gcm, prior.variables, li, lo)
    if not bool(torch.isfinite(Y).any()):
        raise ValueError(f"the GCM field {native.name} is all NaN over region {fine_bounds_region(fine)}")
    unguided = tuple(v for c, v in enumerate(prior.variables) if not bool(torch.isfinite(Y[c]).any()))
    return Y, unguided


def coarse_means(Y: torch.Tensor, native: LatLonGrid, coarse: LatLonGrid, fine: LatLonGrid,
                 variables: Sequence[str], climatology: dict | None = None) -> torch.Tensor:
    """The unified-cell means of the GCM field ``Y`` ``(C, h, w)`` on ``native``: ``C_u Y`` (NaN-aware).

    With ``climatology`` (variable → physical ``(H, W)`` field on ``fine``) the variables it holds are
    regridded as anomalies: ``C_u (Y − C_n clim) + C_f clim``, where ``C_u`` averages native cells onto the
    unified ones by overlap, and ``C_n``/``C_f`` average the fine climatology onto the native/unified cells
    (``C_n`` over the part of each native cell inside the region: at the region's edge a cell's anomaly is
    taken against the climatology of that part).
    A native cell that straddles a steep climatological gradient (lowland and plateau, coast and sea) then
    passes on its departure from its own climatology rather than its absolute mean, which the overlap
    weights would smear onto the wrong side of a unified cell's edge — BCSD's reason for interpolating
    anomalies.  Without a climatology this is UCG's ``y_coarse`` (:mod:`zssd_engine.samplers.zssd`).
    """
    to_coarse = conservative(native, coarse, dtype=torch.float64)
    Y = Y.to(torch.float64)
    if not climatology:
        return to_coarse.masked(Y)
    clim = torch.zeros_like(Y)
    clim_c = torch.zeros((Y.shape[0], *coarse.shape), dtype=torch.float64)
    sub, li, lo = native_clipped_grid(native, fine)
    fine_to_native = conservative(fine, sub, dtype=torch.float64)
    fine_to_coarse = conservative(fine, coarse, dtype=torch.float64)
    ii, jj = np.asarray(li)[:, None], np.asarray(lo)[None, :]
    outside = torch.ones(native.shape, dtype=torch.bool)
    outside[ii, jj] = False
    for c, v in enumerate(variables):
        if v not in climatology:
            continue
        f = torch.as_tensor(np.asarray(climatology[v], np.float64))[None]
        clim[c][ii, jj] = fine_to_native(f)[0]
        clim[c][outside] = float("nan")  # a native cell outside the region has no climatology here: left out
        clim_c[c] = fine_to_coarse(f)[0]
    return to_coarse.masked(Y - clim) + clim_c


def normalize_obs(prior: Denoiser, y_phys: torch.Tensor) -> torch.Tensor:
    """Physical ``(C, h, w)`` → the prior's normalised units (NaN stays NaN), float32 on the prior's device."""
    y = y_phys.to(device=prior.device, dtype=torch.float32)
    with torch.no_grad():
        return prior.normalize(y[None])[0]


def obs_weights(grid: LatLonGrid, dtype=torch.float64) -> torch.Tensor:
    """cos φ weights of a grid's centres, ``(nlat, nlon)``, normalised to mean 1."""
    w = lat_weights(grid.lat)
    w = w / max(float(w.mean()), 1e-12)
    return torch.as_tensor(np.broadcast_to(w[:, None], grid.shape).copy(), dtype=dtype)


# ---------------------------------------------------------------- observation
@dataclass(eq=False)
class Observation:
    """A linear observation ``y ≈ A(x)`` in normalised space.

    ``op`` maps the fine grid to the observation grid (for ZSSD the fine grid
    itself, via the unified cells); ``y`` is ``(C, h, w)`` with NaN where nothing
    is observed (cells, or whole variables absent from the GCM); ``weights``
    ``(h, w)`` are cos φ of the observation grid, normalised to mean 1.
    """

    op: SeparableOperator
    y: torch.Tensor
    weights: torch.Tensor
    description: str = ""
    unguided: tuple[str, ...] = ()
    coarse_grid: LatLonGrid | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mask = torch.isfinite(self.y)
        if not bool(self.mask.any()):
            raise ValueError(f"the GCM field has no finite value over the region ({self.description}); "
                             "nothing to condition on")
        self.y0 = torch.where(self.mask, self.y, torch.zeros_like(self.y))
        self.w_mask = self.mask.to(self.y.dtype) * self.weights
        self.n_obs = int(self.mask.sum())

    def to(self, device: torch.device) -> "Observation":
        """Move the operator and every tensor to ``device`` (in place); returns ``self``."""
        self.op = self.op.to(device)
        for k in ("y", "weights", "mask", "y0", "w_mask"):
            setattr(self, k, getattr(self, k).to(device))
        return self

    def residual(self, x0: torch.Tensor) -> torch.Tensor:
        """``W^{1/2}(A(x0) − y)`` with unobserved entries zeroed, ``(B, C, h, w)``."""
        return (self.op(x0) - self.y0) * self.w_mask.sqrt()

    def misfit(self, x0: torch.Tensor) -> torch.Tensor:
        """``‖W^{1/2}(A(x0) − y)‖`` per member, shape ``(B,)`` (differentiable)."""
        r = self.residual(x0)
        return torch.sqrt(r.pow(2).flatten(1).sum(1) + 1e-20)
