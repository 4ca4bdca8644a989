"""The lapse-rate baseline: bilinear interpolation plus a fixed lapse rate times the elevation detail.

The first physical baseline a climate scientist tries: ``t2m`` follows the fine orography with
the ICAO standard-atmosphere lapse rate (−6.5 K/km); the other variables are bilinear
(:func:`zssd_engine.baselines.interpolation.bilinear_downscale`).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..errors import DataError
from ..grids import LatLonGrid
from ..operators import regrid
from .interpolation import bilinear_downscale

__all__ = ["STANDARD_LAPSE_RATE", "lapse_rate_downscale"]

#: The ICAO standard-atmosphere lapse rate, K per metre.
STANDARD_LAPSE_RATE = -6.5e-3


def lapse_rate_downscale(coarse: xr.Dataset, fine_grid: LatLonGrid, fine_elevation: np.ndarray,
                         coarse_elevation: np.ndarray, lapse_rate: float = STANDARD_LAPSE_RATE) -> xr.Dataset:
    """Bilinear interpolation plus a lapse-rate correction of ``t2m`` for the sub-grid elevation.

    ``t2m_fine = bilinear(t2m) + Γ · (z_fine − bilinear(z_coarse))`` with ``Γ = lapse_rate``
    (K/m), where ``z_coarse`` is the elevation averaged onto the coarse cells *exactly as the
    input was averaged* (the caller supplies it; :func:`zssd_engine.pipeline.coarse_elevation`) and
    interpolated back the same way as the field.  Other variables: bilinear.

    Parameters
    ----------
    coarse
        Coarse field (``lat``, ``lon``) on its native cells.
    fine_grid
        Target grid; ``fine_elevation`` has its shape (m).
    coarse_elevation
        Elevation (m) on ``coarse``'s cells, shape ``(nlat, nlon)`` of ``coarse``.
    """
    out = bilinear_downscale(coarse, fine_grid)
    zc = xr.DataArray(np.asarray(coarse_elevation, dtype=np.float64), dims=("lat", "lon"),
                      coords={"lat": coarse["lat"].values, "lon": coarse["lon"].values})
    if zc.shape != (coarse.sizes["lat"], coarse.sizes["lon"]):
        raise DataError(f"coarse elevation has shape {zc.shape}, the field {coarse.sizes['lat']}x{coarse.sizes['lon']}")
    zf = np.asarray(fine_elevation, dtype=np.float64)
    if zf.shape != fine_grid.shape:
        raise DataError(f"fine elevation has shape {zf.shape}, the fine grid {fine_grid.shape}")
    if "t2m" in out:
        z_back = regrid(zc, fine_grid, "bilinear").values
        out["t2m"] = (out["t2m"] + (lapse_rate * (zf - z_back)).astype(np.float32)).assign_attrs(out["t2m"].attrs)
    out.attrs["downscaling_method"] = "lapse"
    out.attrs["downscaling"] = (out.attrs["downscaling"].replace("NaN-aware bilinear", "bilinear + lapse rate "
                                f"{lapse_rate * 1000:g} K/km on the elevation detail; NaN-aware bilinear"))
    out.attrs["lapse_rate_K_per_km"] = lapse_rate * 1000
    return out
