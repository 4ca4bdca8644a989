"""Differentiable regridding operators between rectilinear lat/lon grids.

Both operators are *separable*: a 2-D field ``X`` (``nlat x nlon``) maps to
``M_lat @ X @ M_lon.T``.  For rectangular lat/lon cells this is exact for the
conservative (area-weighted) average, whose weight between a fine cell and a
coarse cell is (overlap in sin φ) x (overlap in longitude); bilinear
interpolation is separable by construction.

* :func:`conservative` — area-weighted average of a source field onto the
  cells of a destination grid (normalised by the covered area, so partly
  covered destination cells hold the mean of the source cells they overlap).
* :func:`bilinear` — bilinear interpolation from source cell centres to
  destination cell centres, constant beyond the outermost source centres,
  periodic in longitude for global source grids.

The torch :class:`SeparableOperator` is what the guidance differentiates
through; :func:`regrid` is the xarray wrapper at the edge.
"""

from __future__ import annotations

import numpy as np
import torch

from .grids import GridError, LatLonGrid, lat_weights, wrap_lon

__all__ = [
    "SeparableOperator",
    "conservative",
    "conservative_matrices",
    "bilinear",
    "bilinear_matrices",
    "ucg_operator",
    "regrid",
    "grid_from_xarray",
]


# --------------------------------------------------------------- 1-D weights
def _overlap_lat(src_b: np.ndarray, dst_b: np.ndarray) -> np.ndarray:
    """Overlap of latitude bands measured in sin φ (∝ area), shape (ndst, nsrc)."""
    s_lo = np.sin(np.deg2rad(np.minimum(src_b[:-1], src_b[1:])))
    s_hi = np.sin(np.deg2rad(np.maximum(src_b[:-1], src_b[1:])))
    d_lo = np.sin(np.deg2rad(np.minimum(dst_b[:-1], dst_b[1:])))
    d_hi = np.sin(np.deg2rad(np.maximum(dst_b[:-1], dst_b[1:])))
    lo = np.maximum(d_lo[:, None], s_lo[None, :])
    hi = np.minimum(d_hi[:, None], s_hi[None, :])
    return np.clip(hi - lo, 0.0, None)


def _overlap_lon(src_b: np.ndarray, dst_b: np.ndarray) -> np.ndarray:
    """Overlap of longitude intervals on the circle (degrees), shape (ndst, nsrc)."""
    s_lo, s_hi = src_b[:-1], src_b[1:]
    d_lo, d_hi = dst_b[:-1], dst_b[1:]
    # bring each source interval next to the destination range before shifting by ±360
    ref = 0.5 * (d_lo[0] + d_hi[-1])
    shift0 = wrap_lon(s_lo - ref, -180.0) - (s_lo - ref)
    out = np.zeros((d_lo.size, s_lo.size))
    for k in (-360.0, 0.0, 360.0):
        a = s_lo + shift0 + k
        b = s_hi + shift0 + k
        lo = np.maximum(d_lo[:, None], a[None, :])
        hi = np.minimum(d_hi[:, None], b[None, :])
        out += np.clip(hi - lo, 0.0, None)
    return out


def conservative_matrices(src: LatLonGrid, dst: LatLonGrid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-normalised area-overlap matrices and the covered fraction of each destination cell.

    Returns ``(M_lat (ndst_lat, nsrc_lat), M_lon (ndst_lon, nsrc_lon), coverage (ndst_lat, ndst_lon))``.
    Destination cells that no source cell overlaps get an all-zero row (coverage 0).
    """
    wl = _overlap_lat(src.lat_bounds, dst.lat_bounds)
    wo = _overlap_lon(src.lon_bounds, dst.lon_bounds)
    rl = wl.sum(1)
    ro = wo.sum(1)
    d_area_lat = np.abs(np.diff(np.sin(np.deg2rad(dst.lat_bounds))))
    d_area_lon = np.abs(np.diff(dst.lon_bounds))
    coverage = np.outer(rl / np.where(d_area_lat > 0, d_area_lat, 1.0),
                        ro / np.where(d_area_lon > 0, d_area_lon, 1.0))
    ml = wl / np.where(rl > 0, rl, 1.0)[:, None]
    mo = wo / np.where(ro > 0, ro, 1.0)[:, None]
    return ml, mo, np.clip(coverage, 0.0, 1.0)


def _interp_matrix(x_src: np.ndarray, x_dst: np.ndarray, periodic: float | None = None) -> np.ndarray:
    """Linear interpolation weights (ndst, nsrc) from increasing ``x_src`` to ``x_dst``."""
    n = x_src.size
    m = np.zeros((x_dst.size, n))
    if n == 1:
        m[:, 0] = 1.0
        return m
    if periodic is not None:
        xs = np.concatenate([x_src, [x_src[0] + periodic]])
        xd = x_src[0] + (x_dst - x_src[0]) % periodic
        j = np.clip(np.searchsorted(xs, xd, side="right") - 1, 0, n - 1)
        f = (xd - xs[j]) / (xs[j + 1] - xs[j])
        rows = np.arange(x_dst.size)
        m[rows, j] += 1.0 - f
        m[rows, (j + 1) % n] += f
        return m
    xd = np.clip(x_dst, x_src[0], x_src[-1])
    j = np.clip(np.searchsorted(x_src, xd, side="right") - 1, 0, n - 2)
    f = (xd - x_src[j]) / (x_src[j + 1] - x_src[j])
    rows = np.arange(x_dst.size)
    m[rows, j] = 1.0 - f
    m[rows, j + 1] = f
    return m


def bilinear_matrices(src: LatLonGrid, dst: LatLonGrid) -> tuple[np.ndarray, np.ndarray]:
    """Separable bilinear interpolation matrices from ``src`` centres to ``dst`` centres."""
    if src.descending:
        ml = _interp_matrix(src.lat[::-1], dst.lat)[:, ::-1]
    else:
        ml = _interp_matrix(src.lat, dst.lat)
    if src.is_global_lon:
        mo = _interp_matrix(src.lon, dst.lon, periodic=360.0)
    else:
        centre = 0.5 * (src.lon[0] + src.lon[-1])
        x = centre + wrap_lon(dst.lon - centre, -180.0)
        mo = _interp_matrix(src.lon, x)
    return np.ascontiguousarray(ml), mo


# --------------------------------------------------------------- the operator
class SeparableOperator(torch.nn.Module):
    """``X -> M_lat @ X @ M_lon.T`` on the last two dimensions (differentiable)."""

    def __init__(self, m_lat: np.ndarray | torch.Tensor, m_lon: np.ndarray | torch.Tensor,
                 src: LatLonGrid, dst: LatLonGrid, kind: str, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.register_buffer("m_lat", torch.as_tensor(np.asarray(m_lat), dtype=dtype))
        self.register_buffer("m_lon", torch.as_tensor(np.asarray(m_lon), dtype=dtype))
        self.src = src
        self.dst = dst
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m_lat @ x @ self.m_lon.transpose(0, 1)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``A^T y`` (the exact transpose; used in tests and DDRM)."""
        return self.m_lat.transpose(0, 1) @ y @ self.m_lon

    def masked(self, x: torch.Tensor) -> torch.Tensor:
        """Apply to a field with NaNs: normalise by the weight of finite inputs (NaN where none)."""
        finite = torch.isfinite(x)
        m = finite.to(x.dtype)
        num = self(torch.where(finite, x, torch.zeros_like(x)))
        den = self(m)
        return torch.where(den > 1e-6, num / den.clamp_min(1e-6), torch.full_like(num, float("nan")))

    def then(self, other: "SeparableOperator") -> "SeparableOperator":
        """Composition ``other ∘ self`` as one separable operator."""
        return SeparableOperator(other.m_lat @ self.m_lat, other.m_lon @ self.m_lon, self.src, other.dst,
                                 f"{self.kind}->{other.kind}", dtype=self.m_lat.dtype)

    def to_dense(self) -> torch.Tensor:
        """The full matrix (for small grids in tests): kron(M_lat, M_lon)."""
        return torch.kron(self.m_lat, self.m_lon)

    def extra_repr(self) -> str:
        return f"{self.kind}: {self.src.shape} -> {self.dst.shape}"


def conservative(src: LatLonGrid, dst: LatLonGrid, min_coverage: float = 0.0,
                 dtype: torch.dtype = torch.float32) -> SeparableOperator:
    """Area-weighted average of ``src`` cells onto ``dst`` cells.

    ``min_coverage`` (0–1) raises :class:`GridError` if any destination cell is
    covered less than that fraction by the source grid.
    """
    ml, mo, cov = conservative_matrices(src, dst)
    if cov.min() <= 0.0 or cov.min() < min_coverage:
        raise GridError(
            f"grid {dst.name!r} is not covered by {src.name!r}: smallest covered fraction "
            f"{cov.min():.3f} (need > {min_coverage:g})")
    return SeparableOperator(ml, mo, src, dst, "conservative", dtype)


def bilinear(src: LatLonGrid, dst: LatLonGrid, dtype: torch.dtype = torch.float32) -> SeparableOperator:
    """Bilinear interpolation from ``src`` cell centres to ``dst`` cell centres."""
    ml, mo = bilinear_matrices(src, dst)
    return SeparableOperator(ml, mo, src, dst, "bilinear", dtype)


def ucg_operator(fine: LatLonGrid, coarse: LatLonGrid, dtype: torch.dtype = torch.float32) -> SeparableOperator:
    """``A_high`` of Unified Coordinate Guidance: average ``fine`` onto ``coarse``, re-project to ``fine``.

    ``coarse`` is normally ``unified_grid().covering(region)[0]``; cells only
    partly inside the region hold the mean of the fine cells they cover.
    """
    return conservative(fine, coarse, dtype=dtype).then(bilinear(coarse, fine, dtype=dtype))


# ------------------------------------------------------------ xarray at edge
def _coord_name(obj, names: tuple[str, ...]) -> str:
    for n in names:
        if n in obj.coords or n in getattr(obj, "dims", ()):
            return n
    raise GridError(f"no coordinate among {names} in {list(obj.coords)}")


def grid_from_xarray(obj, name: str | None = None) -> LatLonGrid:
    """A :class:`LatLonGrid` from an xarray object's ``lat``/``lon`` (or ``latitude``/``longitude``) coords.

    Uses ``lat_bnds``/``lon_bnds`` (CF bounds) when the dataset has them.
    """
    la = _coord_name(obj, ("lat", "latitude"))
    lo = _coord_name(obj, ("lon", "longitude"))
    lat = np.asarray(obj[la].values, dtype=np.float64)
    lon = np.asarray(obj[lo].values, dtype=np.float64)
    latb = lonb = None
    if hasattr(obj, "data_vars"):
        for bn in (obj[la].attrs.get("bounds"), "lat_bnds", "lat_bounds"):
            if bn and bn in obj and obj[bn].ndim == 2:
                b = np.asarray(obj[bn].values, dtype=np.float64)
                latb = np.concatenate([b[:, 0], [b[-1, 1]]])
                break
        for bn in (obj[lo].attrs.get("bounds"), "lon_bnds", "lon_bounds"):
            if bn and bn in obj and obj[bn].ndim == 2:
                b = np.asarray(obj[bn].values, dtype=np.float64)
                lonb = np.concatenate([b[:, 0], [b[-1, 1]]])
                break
    if lon.size > 1 and np.any(np.diff(lon) <= 0):
        raise GridError("longitudes must be increasing; roll the data so they are (e.g. ds.roll or sortby)")
    return LatLonGrid(lat, lon, name or obj.attrs.get("source_id", "grid"), latb, lonb)


def regrid(da, dst: LatLonGrid, method: str = "conservative"):
    """Regrid an xarray DataArray (``..., lat, lon``) onto ``dst`` (NaN-aware); returns a DataArray."""
    import xarray as xr

    src = grid_from_xarray(da)
    la = _coord_name(da, ("lat", "latitude"))
    lo = _coord_name(da, ("lon", "longitude"))
    da = da.transpose(..., la, lo)
    if method == "conservative":
        op = conservative(src, dst, dtype=torch.float64)
    elif method == "bilinear":
        op = bilinear(src, dst, dtype=torch.float64)
    else:
        raise ValueError(f"unknown regrid method {method!r} (conservative|bilinear)")
    x = torch.as_tensor(np.asarray(da.values, dtype=np.float64))
    y = op.masked(x).numpy()
    dims = da.dims[:-2] + ("lat", "lon")
    coords = {k: v for k, v in da.coords.items() if la not in v.dims and lo not in v.dims}
    coords["lat"] = ("lat", dst.lat, {"units": "degrees_north", "standard_name": "latitude"})
    coords["lon"] = ("lon", dst.lon, {"units": "degrees_east", "standard_name": "longitude"})
    out = xr.DataArray(y.astype(da.dtype if da.dtype.kind == "f" else np.float64), dims=dims, coords=coords,
                       attrs=dict(da.attrs), name=da.name)
    out.attrs["regrid"] = f"{method} from {src.name} ({src.shape[0]}x{src.shape[1]}) to {dst.name} ({dst.shape[0]}x{dst.shape[1]})"
    return out


def weighted_mean(x: np.ndarray, lat: np.ndarray) -> float:
    """cos φ weighted mean over the last two axes (ignores NaN)."""
    w = np.broadcast_to(lat_weights(lat)[:, None], x.shape[-2:])
    m = np.isfinite(x)
    return float(np.sum(np.where(m, x, 0) * w) / np.sum(w * m))
