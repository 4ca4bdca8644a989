"""Classical interpolation: the NaN-aware bilinear baseline every downscaling method must beat."""

from __future__ import annotations

import xarray as xr

from ..errors import DataError
from ..grids import LatLonGrid
from ..operators import grid_from_xarray, regrid

__all__ = ["bilinear_downscale"]


def bilinear_downscale(coarse: xr.Dataset, fine_grid: LatLonGrid) -> xr.Dataset:
    """Bilinearly interpolate every (…, lat, lon) variable of ``coarse`` onto ``fine_grid``.

    NaN-aware (:meth:`zssd_engine.operators.SeparableOperator.masked`): masked
    coarse cells do not contaminate their neighbours; a fine cell whose
    surrounding coarse cells are all NaN is NaN.  Constant beyond the
    outermost coarse centres, periodic in longitude for global coarse grids.

    Returns
    -------
    xarray.Dataset
        Same variables (bounds variables dropped) on the fine grid's
        ``lat``/``lon``; attrs record the method and both grids.
    """
    src = grid_from_xarray(coarse)
    out = {}
    for v, da in coarse.data_vars.items():
        if "lat" not in da.dims or "lon" not in da.dims or str(v).endswith(("_bnds", "_bounds")):
            continue
        out[v] = regrid(da, fine_grid, "bilinear")
    if not out:
        raise DataError(f"bilinear_downscale: no (lat, lon) variable in {list(coarse.data_vars)}")
    res = xr.Dataset(out)
    res.attrs = {k: v for k, v in coarse.attrs.items() if k in ("source_id", "model_id", "source_file", "source")}
    res.attrs.update({
        "downscaling_method": "bilinear",
        "downscaling": (f"NaN-aware bilinear interpolation from {src.name} ({src.shape[0]}x{src.shape[1]}) "
                        f"to {fine_grid.name} ({fine_grid.shape[0]}x{fine_grid.shape[1]})"),
        "coarse_grid": src.name,
        "fine_grid": fine_grid.name,
    })
    return res
