"""The array numerics of BCSD: quantiles, quantile mapping, detrending and disaggregation.

Pure NumPy, vectorised over cells; the xarray API is :class:`zssd_engine.baselines.bcsd.BCSD`.
Arrays are ``(n_times, n_cells)`` unless stated; NaN marks a missing value throughout.

* :func:`quantile_nodes`, :func:`cunnane_quantiles` — the empirical quantile functions
  (xsdba's nodes; Cunnane plotting positions by default).
* :func:`interp_columns` — per-column linear interpolation, constant beyond the nodes
  (xsdba's ``extrapolation="constant"``).
* :func:`fit_monthly` / :func:`map_monthly` — the per-month, per-cell quantile mapping
  (additive ``"+"`` or multiplicative ``"*"``).
* :func:`running_trend` — the per-cell running mean of annual means (BCSD's detrending).
* :func:`masked_apply`, :func:`coarsen_and_climatology`, :func:`disaggregate` — NaN-aware
  separable averaging/interpolation and the monthly climatologies.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

__all__ = ["quantile_nodes", "cunnane_quantiles", "interp_columns", "nanmean0", "masked_apply", "running_trend",
           "coarsen_and_climatology", "detrend", "retrend", "fit_monthly", "map_monthly", "disaggregate"]


# -------------------------------------------------------- quantiles
def quantile_nodes(n: int) -> np.ndarray:
    """``n`` equally spaced probabilities at the middles of ``n`` equal bins (xsdba's nodes)."""
    dq = 0.5 / n
    return np.linspace(dq, 1.0 - dq, n)


def cunnane_quantiles(x: np.ndarray, nodes: np.ndarray, alpha: float = 0.4, min_count: int = 1) -> np.ndarray:
    """Empirical quantiles along axis 0 with plotting positions ``(i − α)/(n + 1 − 2α)``.

    ``α = 0.4`` is Cunnane's ``(i − 0.4)/(n + 0.2)``; ``α = 1`` reproduces
    numpy's default (Hyndman–Fan type 7, xsdba's ``nbutils.quantile``).
    Linear interpolation between order statistics, clipped to the sample
    minimum/maximum beyond the outermost plotting positions.  NaNs are
    ignored per column; columns with fewer than ``min_count`` finite values
    give NaN.

    Parameters
    ----------
    x
        ``(n_samples, n_cells)`` values.
    nodes
        Probabilities in [0, 1], shape ``(nq,)``.

    Returns
    -------
    numpy.ndarray
        ``(nq, n_cells)`` quantiles.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    s = np.sort(x, axis=0)  # NaNs last
    n = np.isfinite(x).sum(axis=0)  # (ncell,)
    q = np.asarray(nodes, dtype=np.float64)[:, None]
    # 0-based virtual index of probability q: q (n + 1 − 2α) + α − 1
    vi = q * (n[None, :] + 1.0 - 2.0 * alpha) + alpha - 1.0
    vi = np.clip(vi, 0.0, np.maximum(n - 1, 0)[None, :])
    lo = np.floor(vi).astype(np.intp)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0)[None, :])
    g = vi - lo
    vlo = np.take_along_axis(s, lo, axis=0)
    vhi = np.take_along_axis(s, hi, axis=0)
    out = vlo + g * (vhi - vlo)
    out[:, n < max(min_count, 1)] = np.nan
    return out


def interp_columns(x: np.ndarray, xp: np.ndarray, fp: np.ndarray, chunk_values: int = 8_000_000) -> np.ndarray:
    """Per-column linear interpolation of ``x (nt, ncell)`` on ``xp, fp (nq, ncell)``, constant beyond.

    ``xp`` must be non-decreasing along axis 0 in each column (ties allowed).
    Vectorised over columns; rows processed in chunks to bound memory.
    """
    nt, nc = x.shape
    nq = xp.shape[0]
    out = np.empty_like(x)
    step = max(1, chunk_values // max(nq * nc, 1))
    for a in range(0, nt, step):
        xs = x[a:a + step]  # (k, nc)
        j = (xp[None, :, :] <= xs[:, None, :]).sum(axis=1) - 1  # index of the node at or below x
        j = np.clip(j, 0, nq - 2) if nq > 1 else np.zeros_like(j)
        j1 = np.minimum(j + 1, nq - 1)
        cols = np.arange(nc)[None, :]
        x0, x1 = xp[j, cols], xp[j1, cols]
        f0, f1 = fp[j, cols], fp[j1, cols]
        den = x1 - x0
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.where(den > 0, (xs - x0) / np.where(den > 0, den, 1.0), 0.0)
        t = np.clip(t, 0.0, 1.0)
        r = f0 + t * (f1 - f0)
        r[~np.isfinite(xs)] = np.nan
        out[a:a + step] = r
    return out


# -------------------------------------------------------- averaging, trend, climatology
def nanmean0(x: np.ndarray) -> np.ndarray:
    """Mean over axis 0 ignoring NaNs (NaN where a column has no finite value), without warnings."""
    ok = np.isfinite(x)
    n = ok.sum(axis=0)
    s = np.where(ok, x, 0.0).sum(axis=0)
    return np.where(n > 0, s / np.where(n > 0, n, 1), np.nan)


def masked_apply(ml: np.ndarray, mo: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``ml @ x @ mo.T`` over the last two axes, normalised by the weight of finite inputs."""
    ok = np.isfinite(x)
    num = ml @ np.where(ok, x, 0.0) @ mo.T
    den = ml @ ok.astype(np.float64) @ mo.T
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-6, num / np.where(den > 1e-6, den, 1.0), np.nan)


def running_trend(x: np.ndarray, years: np.ndarray, window: int) -> np.ndarray:
    """Per-cell centred running mean (``window`` years) of annual means, at each time step.

    ``x`` is ``(nt, ncell)``; returns ``(nt, ncell)``.  Windows shrink at the
    ends of the record (as pandas ``rolling(center=True, min_periods=1)``).
    """
    uy, inv = np.unique(years, return_inverse=True)
    annual = np.zeros((uy.size, x.shape[1]))
    cnt = np.zeros((uy.size, x.shape[1]))
    ok = np.isfinite(x)
    np.add.at(annual, inv, np.where(ok, x, 0.0))
    np.add.at(cnt, inv, ok)
    annual = np.where(cnt > 0, annual / np.where(cnt > 0, cnt, 1), np.nan)
    half = window // 2
    w = (np.abs(uy[:, None] - uy[None, :]) <= half).astype(np.float64)  # (ny, ny)
    fin = np.isfinite(annual)
    rm = (w @ np.where(fin, annual, 0.0)) / np.maximum(w @ fin, 1)
    return rm[inv]


def coarsen_and_climatology(da: xr.DataArray, ml: np.ndarray, mo: np.ndarray, months: np.ndarray,
                             nfine: int, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Conservative coarse series ``(nt, ncell)`` and fine monthly means ``(12, nfine)``, in time chunks.

    Chunking keeps memory at a few hundred fine fields however long the
    reference record is (a lazily opened archive is read chunk by chunk).
    """
    da = da.transpose("time", "lat", "lon")
    nt = da.sizes["time"]
    coarse = np.empty((nt, ml.shape[0] * mo.shape[0]))
    sums = np.zeros((12, nfine))
    counts = np.zeros((12, nfine))
    for a in range(0, nt, chunk):
        x = np.asarray(da.isel(time=slice(a, a + chunk)).values, dtype=np.float64)
        coarse[a:a + x.shape[0]] = masked_apply(ml, mo, x).reshape(x.shape[0], -1)
        xf = x.reshape(x.shape[0], nfine)
        ok = np.isfinite(xf)
        mi = months[a:a + x.shape[0]] - 1
        for m in np.unique(mi):
            sel = mi == m
            sums[m] += np.where(ok[sel], xf[sel], 0.0).sum(axis=0)
            counts[m] += ok[sel].sum(axis=0)
    clim = np.where(counts > 0, sums / np.where(counts > 0, counts, 1), np.nan)
    return coarse, clim


# -------------------------------------------------------- mapping
def detrend(x: np.ndarray, trend: np.ndarray, baseline: np.ndarray, kind: str) -> np.ndarray:
    """``x`` with its trend relative to ``baseline`` removed: ``x − (trend − baseline)`` or ``x / (trend/baseline)``."""
    return x - (trend - baseline) if kind == "+" else x / (trend / baseline)


def retrend(y: np.ndarray, trend: np.ndarray, baseline: np.ndarray, kind: str) -> np.ndarray:
    """Inverse of :func:`detrend`: the trend restored after the mapping."""
    return y + (trend - baseline) if kind == "+" else y * (trend / baseline)


def fit_monthly(xh: np.ndarray, xr_c: np.ndarray, m_hist: np.ndarray, m_ref: np.ndarray, n_ref: np.ndarray,
                nodes: np.ndarray, alpha: float, min_samples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per calendar month and cell: hist and reference quantiles and the coarse reference climatology.

    Parameters
    ----------
    xh, xr_c
        Hist and coarsened reference ``(n_times, n_cells)`` (their own time axes).
    m_hist, m_ref
        Calendar month (1–12) of each of their time steps.
    n_ref
        Reference samples per month ``(12,)``; months without any are left NaN.
    nodes, alpha, min_samples
        As :func:`cunnane_quantiles`.

    Returns
    -------
    tuple of numpy.ndarray
        ``hist_q, ref_q`` ``(12, nq, n_cells)`` and ``clim_coarse`` ``(12, n_cells)``.
    """
    nq, ncell = nodes.size, xh.shape[1]
    hq = np.full((12, nq, ncell), np.nan)
    rq = np.full((12, nq, ncell), np.nan)
    cc = np.full((12, ncell), np.nan)
    for m in range(12):  # 12 calendar months; cells are vectorised
        if n_ref[m] == 0:
            continue
        sel_r = m_ref == m + 1
        sel_h = m_hist == m + 1
        hq[m] = cunnane_quantiles(xh[sel_h], nodes, alpha, min_samples)
        rq[m] = cunnane_quantiles(xr_c[sel_r], nodes, alpha, min_samples)
        cc[m] = nanmean0(xr_c[sel_r])
    return hq, rq, cc


def map_monthly(x: np.ndarray, months: np.ndarray, hist_q: np.ndarray, ref_q: np.ndarray, kind: str) -> np.ndarray:
    """Quantile mapping of ``x`` ``(n_times, n_cells)`` with each time step's calendar-month fit.

    Additive: ``y = x + af(x)``, ``af = Q_ref − Q_hist`` interpolated between the hist quantiles
    and constant beyond them (:func:`interp_columns`); multiplicative: ``y = x · (Q_ref/Q_hist)(x)``.
    """
    y = np.empty_like(x)
    for m in np.unique(months):  # ≤ 12 calendar months; cells vectorised
        sel = months == m
        hq, rq = hist_q[m - 1], ref_q[m - 1]
        if kind == "+":
            y[sel] = x[sel] + interp_columns(x[sel], hq, rq - hq)
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                y[sel] = x[sel] * interp_columns(x[sel], hq, rq / hq)
    return y


def disaggregate(y: np.ndarray, months: np.ndarray, clim_coarse: np.ndarray, clim_fine: np.ndarray,
                 ml: np.ndarray, mo: np.ndarray, kind: str, coarse_shape: tuple[int, int]) -> np.ndarray:
    """Spatial disaggregation: the anomaly against the coarse monthly climatology, interpolated with
    the separable matrices ``(ml, mo)`` (NaN-aware), plus the fine monthly climatology.

    ``y`` is ``(n_times, n_cells)`` on the coarse grid of shape ``coarse_shape``; returns
    ``(n_times, n_fine)``.  Multiplicative kind: ratios instead of differences.
    """
    nt = months.size
    anom = np.empty_like(y)
    for m in np.unique(months):
        sel = months == m
        anom[sel] = y[sel] - clim_coarse[m - 1] if kind == "+" else y[sel] / clim_coarse[m - 1]
    fine_anom = masked_apply(ml, mo, anom.reshape(nt, *coarse_shape)).reshape(nt, -1)
    res = np.empty_like(fine_anom)
    for m in np.unique(months):
        sel = months == m
        res[sel] = fine_anom[sel] + clim_fine[m - 1] if kind == "+" else fine_anom[sel] * clim_fine[m - 1]
    return res
