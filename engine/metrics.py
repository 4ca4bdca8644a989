"""Verification metrics (WeatherBench2 style): pure functions, xarray in, xarray out.

All spatial averages are weighted by cos φ (:func:`zssd_engine.grids.lat_weights`),
normalised over the cells that are finite in *both* fields (NaNs are
ignored).  ``dims`` defaults to ``("lat", "lon")``; any other dimension
(``time``, ``member`` …) is kept, so a score per time step comes back as a
DataArray over ``time``.

Spectra: :func:`power_spectrum` gives the radially averaged 2-D power
spectrum of a regional field in cycles per km.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr
from scipy.signal import windows

from .errors import DataError
from .grids import lat_weights

__all__ = [
    "EARTH_RADIUS_KM",
    "at_reference_points",
    "lat_weight_da",
    "weighted_mean",
    "mae",
    "rmse",
    "bias",
    "p99_error",
    "weighted_quantile",
    "Scores",
    "score",
    "power_spectrum",
    "octave_bands",
    "spectrum_ratio_by_band",
]

EARTH_RADIUS_KM = 6371.0

XrObj = xr.DataArray | xr.Dataset


# ------------------------------------------------------------------ helpers
def _lat_name(obj: XrObj) -> str:
    for n in ("lat", "latitude"):
        if n in obj.dims or n in obj.coords:
            return n
    raise DataError(f"no latitude coordinate ('lat' or 'latitude') among {list(obj.coords)}")


def _dims(obj: XrObj, dims: str | Sequence[Hashable] | None) -> list[Hashable]:
    if dims is None:
        la = _lat_name(obj)
        lo = "lon" if la == "lat" else "longitude"
        return [la, lo]
    if isinstance(dims, str):
        return [dims]
    return list(dims)


def lat_weight_da(obj: XrObj) -> xr.DataArray:
    """cos φ weights as a DataArray over the latitude dimension of ``obj`` (unnormalised)."""
    la = _lat_name(obj)
    return xr.DataArray(lat_weights(obj[la].values), dims=obj[la].dims, coords={la: obj[la]})


def weighted_mean(x: XrObj, dims: str | Sequence[Hashable] | None = None) -> XrObj:
    """cos φ weighted mean of ``x`` over ``dims`` (default lat, lon), ignoring NaNs.

    A slice with no finite value gives NaN.
    """
    d = _dims(x, dims)
    w = lat_weight_da(x)
    num = (x * w).sum(d, skipna=True)
    den = (x.notnull() * w).sum(d)
    return num / den.where(den > 0)


def at_reference_points(pred: XrObj, ref: XrObj) -> XrObj:
    """``pred`` at the reference's own points when the reference is a subset of its grid.

    A reference on coarser points that lie on the prediction's grid (the real ERA5 week: its 1°
    points are every 4th 0.25° point) is scored at exactly those points, without interpolation.
    A reference marked ``attrs["score_at"] = "interpolated points"`` (a user's reference off the
    0.25° lattice) gets ``pred`` interpolated bilinearly to its points.  Otherwise ``pred`` is
    returned unchanged (and :func:`_err` demands identical coordinates).
    """
    la = _lat_name(ref)
    lo = "lon" if la == "lat" else "longitude"
    if la not in pred.dims or lo not in pred.dims or la not in ref.dims or lo not in ref.dims:
        return pred
    if pred.sizes[la] == ref.sizes[la] and pred.sizes[lo] == ref.sizes[lo]:
        return pred
    try:
        return pred.sel({la: ref[la].values, lo: ref[lo].values}, method="nearest", tolerance=1e-6)
    except KeyError as exc:
        if ref.attrs.get("score_at") == "interpolated points":  # a user's off-lattice reference (documented)
            return pred.interp({la: ref[la].values, lo: ref[lo].values}, method="linear")
        raise DataError(f"the reference points are not on the prediction's grid: {exc}") from exc


def _err(pred: XrObj, ref: XrObj) -> XrObj:
    try:
        pred, ref = xr.align(pred, ref, join="exact")
    except ValueError as exc:
        raise DataError(f"prediction and reference are on different coordinates: {exc}") from exc
    return pred - ref


def mae(pred: XrObj, ref: XrObj, dims: str | Sequence[Hashable] | None = None) -> XrObj:
    """Latitude-weighted mean absolute error ``Σ w|p−r| / Σ w`` over ``dims``."""
    return weighted_mean(abs(_err(pred, ref)), dims)


def rmse(pred: XrObj, ref: XrObj, dims: str | Sequence[Hashable] | None = None) -> XrObj:
    """Latitude-weighted root-mean-square error ``sqrt(Σ w (p−r)² / Σ w)`` over ``dims``."""
    e = _err(pred, ref)
    return np.sqrt(weighted_mean(e * e, dims))


def bias(pred: XrObj, ref: XrObj, dims: str | Sequence[Hashable] | None = None) -> XrObj:
    """Latitude-weighted mean error ``Σ w (p−r) / Σ w`` (positive: prediction too high)."""
    return weighted_mean(_err(pred, ref), dims)


def _wquantile_1d(v: np.ndarray, w: np.ndarray, q: float) -> float:
    ok = np.isfinite(v) & (w > 0)
    if not ok.any():
        return np.nan
    v = v[ok]
    w = w[ok]
    order = np.argsort(v, kind="stable")
    v = v[order]
    w = w[order]
    cw = np.cumsum(w)
    total = cw[-1]
    p = (cw - 0.5 * w) / total  # weighted Hazen plotting positions
    return float(np.interp(q, p, v))  # constant beyond the first/last position


def weighted_quantile(x: xr.DataArray, q: float, dims: str | Sequence[Hashable] | None = None) -> xr.DataArray:
    """cos φ weighted ``q``-quantile of ``x`` over ``dims`` (default lat, lon), ignoring NaNs.

    Definition: sort the finite values ``v_1 ≤ … ≤ v_n`` with weights ``w_i``
    (cos φ of their row), give each the plotting position
    ``p_i = (Σ_{j≤i} w_j − w_i/2) / Σ_j w_j`` (the weighted Hazen rule: each
    value sits at the middle of its share of the total weight) and interpolate
    ``v`` linearly in ``p`` at ``q``; below ``p_1``/above ``p_n`` the
    smallest/largest value is returned.  With equal weights this is
    ``numpy.quantile(..., method="hazen")``.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q must be in [0, 1], got {q}")
    d = _dims(x, dims)
    w = lat_weight_da(x).broadcast_like(x)

    def _fn(arr: np.ndarray, wt: np.ndarray) -> np.ndarray:
        lead = arr.shape[: arr.ndim - len(d)]
        flat = arr.reshape((int(np.prod(lead)), -1))
        wf = wt.reshape(flat.shape)
        out = np.array([_wquantile_1d(flat[i], wf[i], q) for i in range(flat.shape[0])])
        return out.reshape(lead)

    return xr.apply_ufunc(_fn, x, w, input_core_dims=[d, d], output_core_dims=[[]], keep_attrs=False)


def p99_error(pred: XrObj, ref: XrObj, dims: str | Sequence[Hashable] | None = None, q: float = 0.99) -> XrObj:
    """The cos φ weighted ``q`` quantile (default 0.99) of ``|pred − ref|`` over ``dims``.

    This measures the worst errors (e.g. in a cyclone's core) that MAE/RMSE
    average away.  See :func:`weighted_quantile` for the exact definition:
    each cell counts with its cos φ area weight, so the result is the error
    that 1 − q of the *area* exceeds.  NaNs are ignored.
    """
    e = abs(_err(pred, ref))
    if isinstance(e, xr.Dataset):
        return e.map(lambda da: weighted_quantile(da, q, dims))
    return weighted_quantile(e, q, dims)


# ------------------------------------------------------------------- scores
@dataclass(frozen=True)
class Scores:
    """Latitude-weighted scores of one variable (floats, or DataArrays over kept dims)."""

    mae: float | xr.DataArray
    rmse: float | xr.DataArray
    bias: float | xr.DataArray
    p99: float | xr.DataArray

    def as_dict(self) -> dict[str, float | xr.DataArray]:
        return {"mae": self.mae, "rmse": self.rmse, "bias": self.bias, "p99": self.p99}


def _scalar(x: xr.DataArray) -> float | xr.DataArray:
    return float(x) if x.ndim == 0 else x


def score(pred: xr.Dataset, ref: xr.Dataset, dims: str | Sequence[Hashable] | None = "all",
          q: float = 0.99) -> dict[str, Scores]:
    """:class:`Scores` for every data variable the two datasets share.

    ``dims="all"`` (default) reduces over every dimension of each variable in
    either dataset (so each score is a float, also when only one side carries
    a size-1 ``time``); pass ``("lat", "lon")`` to keep e.g. ``time``.
    Variables only in one of the datasets are skipped; none in common raises
    :class:`DataError`.
    """
    common = [v for v in pred.data_vars if v in ref.data_vars]
    if not common:
        raise DataError(f"no variable in common: prediction has {list(pred.data_vars)}, "
                        f"reference {list(ref.data_vars)}")
    out: dict[str, Scores] = {}
    for v in common:
        p, r = at_reference_points(pred[v], ref[v]), ref[v]
        d = list(dict.fromkeys(p.dims + r.dims)) if dims == "all" else dims  # union: e.g. a size-1 time
        out[str(v)] = Scores(mae=_scalar(mae(p, r, d)), rmse=_scalar(rmse(p, r, d)), bias=_scalar(bias(p, r, d)),
                             p99=_scalar(p99_error(p, r, d, q=q)))
    return out


# ----------------------------------------------------------------- spectra
def _window_1d(n: int, window: str | None) -> np.ndarray:
    if window in (None, "none", "boxcar"):
        return np.ones(n)
    if window == "hann":
        return windows.hann(n, sym=False) if n > 1 else np.ones(n)
    if window == "tukey":
        return windows.tukey(n, alpha=0.25, sym=False) if n > 1 else np.ones(n)
    raise ValueError(f"unknown window {window!r} (hann|tukey|none)")


def _spacing_km(da: xr.DataArray) -> tuple[float, float, float]:
    la = _lat_name(da)
    lo = "lon" if la == "lat" else "longitude"
    lat = np.asarray(da[la].values, dtype=np.float64)
    lon = np.asarray(da[lo].values, dtype=np.float64)
    if lat.size < 4 or lon.size < 4:
        raise DataError(f"field of {lat.size}x{lon.size} cells is too small for a spectrum (need at least 4x4)")
    phi0 = 0.5 * (lat.max() + lat.min())
    dlat = float(np.median(np.abs(np.diff(lat))))
    dlon = float(np.median(np.abs(np.diff(lon))))
    dy = EARTH_RADIUS_KM * np.deg2rad(dlat)
    dx = EARTH_RADIUS_KM * np.cos(np.deg2rad(phi0)) * np.deg2rad(dlon)
    return dx, dy, phi0


def power_spectrum(da: xr.DataArray, window: str | None = "hann") -> xr.DataArray:
    """Radially averaged 2-D power spectrum of a regional field (cycles per km).

    Steps: subtract the field's mean, multiply by a separable 2-D window
    (``"hann"``, ``"tukey"`` with α = 0.25, or ``"none"``), FFT, and average
    the periodogram over annuli of width ``Δk = max(1/(nx·dx), 1/(ny·dy))``
    centred on ``k_j = j·Δk`` for ``j = 1 … ⌊k_max/Δk⌋`` with
    ``k_max = min(1/(2dx), 1/(2dy))`` (the smaller Nyquist wavenumber).  The
    grid spacing is taken at the region's central latitude φ0:
    ``dx = R cos φ0 dλ``, ``dy = R dφ`` (R = 6371 km).

    Normalisation: the periodogram is ``|F|² / Σ w²`` (``w`` the window), so
    the mean of the periodogram over *all* modes equals the window-weighted
    variance ``Σ (w x')² / Σ w²``; white noise of variance σ² has a flat
    spectrum at σ².  ``Σ_j P_j · n_modes_j / (nx·ny)`` recovers that variance
    up to the modes outside ``k_max`` (corners) and at ``k = 0`` (Parseval).

    Parameters
    ----------
    da
        DataArray with ``lat``, ``lon`` dims (last two after transposing);
        other dims are kept (one spectrum each).  NaNs are not allowed.
    window
        Taper against leakage from the non-periodic region edges.

    Returns
    -------
    xarray.DataArray
        Over ``wavenumber`` (cycles/km), coords ``wavelength_km`` (= 1/k) and
        ``n_modes`` (Fourier modes in each annulus); units ``(field units)²``.
    """
    la = _lat_name(da)
    lo = "lon" if la == "lat" else "longitude"
    if np.isnan(np.asarray(da.values, dtype=np.float64)).any():
        raise DataError(f"power_spectrum: field {da.name!r} contains NaNs; fill or crop masked cells first")
    dx, dy, phi0 = _spacing_km(da)
    x = da.transpose(..., la, lo)
    ny, nx = x.shape[-2:]
    arr = np.asarray(x.values, dtype=np.float64)
    arr = arr - arr.mean(axis=(-2, -1), keepdims=True)
    w2 = np.outer(_window_1d(ny, window), _window_1d(nx, window))
    f = np.fft.fft2(arr * w2)
    per = (np.abs(f) ** 2) / np.sum(w2 ** 2)
    ky = np.fft.fftfreq(ny, d=dy)
    kx = np.fft.fftfreq(nx, d=dx)
    kr = np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    dk = max(1.0 / (nx * dx), 1.0 / (ny * dy))
    kmax = min(0.5 / dx, 0.5 / dy)
    nb = int(np.floor(kmax / dk + 1e-9))
    if nb < 1:
        raise DataError("power_spectrum: region too small for a single wavenumber bin")
    idx = np.rint(kr / dk).astype(int)  # annulus j holds [(j-1/2)Δk, (j+1/2)Δk)
    sel = (idx >= 1) & (idx <= nb)
    counts = np.bincount(idx[sel], minlength=nb + 1)[1:]
    lead = arr.shape[:-2]
    flat = per.reshape((-1,) + per.shape[-2:])
    spec = np.stack([np.bincount(idx[sel], weights=p[sel], minlength=nb + 1)[1:] for p in flat])
    spec = spec / np.where(counts > 0, counts, 1)
    spec[:, counts == 0] = np.nan
    spec = spec.reshape(lead + (nb,))
    k = dk * np.arange(1, nb + 1)
    coords = {c: v for c, v in x.coords.items() if la not in v.dims and lo not in v.dims}
    coords["wavenumber"] = ("wavenumber", k, {"units": "cycles km-1", "long_name": "wavenumber"})
    coords["wavelength_km"] = ("wavenumber", 1.0 / k, {"units": "km"})
    coords["n_modes"] = ("wavenumber", counts)
    units = da.attrs.get("units", "")
    out = xr.DataArray(spec, dims=x.dims[:-2] + ("wavenumber",), coords=coords, name=f"{da.name or 'field'}_spectrum",
                       attrs={"units": f"({units})2" if units else "", "window": str(window),
                              "dx_km": dx, "dy_km": dy, "central_lat": phi0, "n_total_modes": nx * ny,
                              "long_name": "radially averaged power spectrum"})
    return out


def octave_bands(spec: xr.DataArray) -> list[tuple[float, float]]:
    """Octave wavelength bands ``(long_km, short_km)`` from the Nyquist wavelength up to the domain size."""
    lam = np.asarray(spec["wavelength_km"].values)
    shortest = float(lam.min())
    longest = float(lam.max())
    bands = []
    lo = shortest
    while lo * 2 <= longest * (1 + 1e-9):
        bands.append((lo * 2, lo))
        lo *= 2
    if not bands:
        bands.append((longest, shortest))
    return bands[::-1]


def spectrum_ratio_by_band(pred: xr.DataArray, ref: xr.DataArray,
                           bands: Sequence[tuple[float, float]] | None = None,
                           window: str | None = "hann") -> xr.DataArray:
    """Ratio of spectral power, prediction over reference, per wavelength band.

    Each band ``(long_km, short_km)`` sums ``P(k)·n_modes(k)`` over the bins
    whose wavelength lies in ``[short_km, long_km)``; the ratio is 1 for a
    prediction with the right variance at those scales, < 1 when it is too
    smooth.  Default bands: octaves from the Nyquist wavelength up
    (:func:`octave_bands`).  Extra dims (e.g. ``time``) are averaged first.

    Returns
    -------
    xarray.DataArray
        Over ``band`` with coords ``long_km``, ``short_km``; NaN for an empty band.
    """
    sp = power_spectrum(pred, window)
    sr = power_spectrum(ref, window)
    if sp.sizes["wavenumber"] != sr.sizes["wavenumber"] or not np.allclose(sp.wavenumber, sr.wavenumber):
        raise DataError("prediction and reference have different grids; spectra cannot be compared")
    other = [d for d in sp.dims if d != "wavenumber"]
    if other:
        sp = sp.mean(other)
        sr = sr.mean(other)
    if bands is None:
        bands = octave_bands(sr)
    lam = np.asarray(sr["wavelength_km"].values)
    n = np.asarray(sr["n_modes"].values, dtype=np.float64)
    vals = []
    for long_km, short_km in bands:
        m = (lam >= short_km * (1 - 1e-9)) & (lam < long_km * (1 - 1e-9))
        if short_km > long_km:
            raise ValueError(f"band {(long_km, short_km)} must be (long_km, short_km)")
        num = float(np.nansum(sp.values[m] * n[m]))
        den = float(np.nansum(sr.values[m] * n[m]))
        vals.append(num / den if m.any() and den > 0 else np.nan)
    return xr.DataArray(np.array(vals), dims=("band",),
                        coords={"band": np.arange(len(bands)), "long_km": ("band", [b[0] for b in bands]),
                                "short_km": ("band", [b[1] for b in bands])},
                        name="spectral_power_ratio")
