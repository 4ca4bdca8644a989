"""Reference downscaling baselines: bilinear interpolation, bilinear + lapse rate, and BCSD.

* :func:`bilinear_downscale` — NaN-aware bilinear interpolation of the coarse
  field onto the fine grid (what every downscaling method must beat).
* :func:`lapse_rate_downscale` — bilinear plus, for ``t2m``, a fixed lapse rate
  (−6.5 K/km) times the fine elevation detail: the first physical baseline a
  climate scientist tries.
* :class:`BCSD` — Bias Correction and Spatial Disaggregation (Wood et al.
  2004; Maurer & Hidalgo 2008; Thrasher et al. 2012), as implemented by
  scikit-downscale's ``BcsdTemperature`` and xsdba's
  ``EmpiricalQuantileMapping``: empirical quantile mapping per calendar month
  and per coarse cell, then spatial disaggregation of the bias-corrected
  anomaly onto the fine grid.

Both are pure numpy (vectorised over cells) at the core with xarray at the edge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from .errors import DataError
from .grids import LatLonGrid
from .operators import bilinear_matrices, conservative_matrices, grid_from_xarray, regrid
from .variables import VARIABLE_INFO, VARIABLES

__all__ = ["bilinear_downscale", "lapse_rate_downscale", "STANDARD_LAPSE_RATE", "BCSD", "cunnane_quantiles", "quantile_nodes"]


# ----------------------------------------------------------------- bilinear
def bilinear_downscale(coarse: xr.Dataset, fine_grid: LatLonGrid) -> xr.Dataset:
    """Bilinearly interpolate every (…, lat, lon) variable of ``coarse`` onto ``fine_grid``.

    NaN-aware (:meth:`engine.operators.SeparableOperator.masked`): masked
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


# ------------------------------------------------------------ lapse rate
#: The ICAO standard-atmosphere lapse rate, K per metre.
STANDARD_LAPSE_RATE = -6.5e-3


def lapse_rate_downscale(coarse: xr.Dataset, fine_grid: LatLonGrid, fine_elevation: np.ndarray,
                         coarse_elevation: np.ndarray, lapse_rate: float = STANDARD_LAPSE_RATE) -> xr.Dataset:
    """Bilinear interpolation plus a lapse-rate correction of ``t2m`` for the sub-grid elevation.

    ``t2m_fine = bilinear(t2m) + Γ · (z_fine − bilinear(z_coarse))`` with ``Γ = lapse_rate``
    (K/m), where ``z_coarse`` is the elevation averaged onto the coarse cells *exactly as the
    input was averaged* (the caller supplies it; :func:`engine.pipeline.coarse_elevation`) and
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


# -------------------------------------------------------- quantile helpers
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


def _interp_columns(x: np.ndarray, xp: np.ndarray, fp: np.ndarray, chunk_values: int = 8_000_000) -> np.ndarray:
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


# ---------------------------------------------------------------------- BCSD
@dataclass
class _VarFit:
    kind: str
    hist_q: np.ndarray      # (12, nq, ncell) NaN where untrained
    ref_q: np.ndarray       # (12, nq, ncell)
    clim_coarse: np.ndarray  # (12, ncell)
    clim_fine: np.ndarray    # (12, nfine)
    n_ref: np.ndarray       # (12,)
    n_hist: np.ndarray      # (12,)
    baseline: np.ndarray | None = None  # (ncell,) mean of hist annual means (detrending)
    attrs: dict = field(default_factory=dict)


def _months(da: xr.DataArray | xr.Dataset) -> np.ndarray:
    return np.asarray(da["time"].dt.month.values, dtype=int)


def _years(da: xr.DataArray | xr.Dataset) -> np.ndarray:
    return np.asarray(da["time"].dt.year.values, dtype=int)


def _time_text(ds: xr.Dataset) -> str:
    """``first/last`` dates (ISO) of the time axis, for provenance and messages."""
    t = np.asarray(ds["time"].values)
    if t.size == 0:
        return "(empty)"
    if t.dtype.kind == "M":
        return f"{np.datetime_as_string(t.min(), 'D')}/{np.datetime_as_string(t.max(), 'D')}"
    return f"{min(t).isoformat()[:10]}/{max(t).isoformat()[:10]}"


def _nanmean0(x: np.ndarray) -> np.ndarray:
    ok = np.isfinite(x)
    n = ok.sum(axis=0)
    s = np.where(ok, x, 0.0).sum(axis=0)
    return np.where(n > 0, s / np.where(n > 0, n, 1), np.nan)


def _masked_apply(ml: np.ndarray, mo: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``ml @ x @ mo.T`` over the last two axes, normalised by the weight of finite inputs."""
    ok = np.isfinite(x)
    num = ml @ np.where(ok, x, 0.0) @ mo.T
    den = ml @ ok.astype(np.float64) @ mo.T
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-6, num / np.where(den > 1e-6, den, 1.0), np.nan)


def _running_trend(x: np.ndarray, years: np.ndarray, window: int) -> np.ndarray:
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


class BCSD:
    """Bias Correction and Spatial Disaggregation (Wood et al. 2004), per calendar month.

    Training (:meth:`train`)

    1. The fine reference (e.g. ERA5 0.25°) is averaged conservatively onto
       the GCM grid (:func:`engine.operators.conservative_matrices`, NaN-aware;
       GCM cells covered less than ``min_coverage`` by the reference are left
       out).
    2. For every calendar month and every coarse cell an empirical quantile
       mapping hist → coarse reference is fitted: quantiles at
       ``n_quantiles`` equally spaced probabilities (the middles of equal
       bins, as xsdba), each sample's quantile function built from Cunnane
       plotting positions ``(i − 0.4)/(n + 0.2)``.
    3. The monthly climatologies of the coarse and of the fine reference are
       stored.

    Adjustment (:meth:`adjust`)

    1. Quantile mapping, additive: ``y = x + af(x)`` where the adjustment
       factor ``af = Q_ref − Q_hist`` is interpolated linearly between the
       hist quantiles and held constant beyond the outermost ones (xsdba's
       ``extrapolation="constant"``; new extremes keep the shift of the
       nearest trained quantile instead of being clipped).
    2. Anomaly against the coarse monthly reference climatology, bilinear
       interpolation of the anomaly to the fine grid (NaN-aware), plus the
       fine monthly climatology: the fine-scale climatological structure
       (orography, coasts) is restored.

    All four variables are handled additively.  For the wind components we
    use additive anomalies of ``u10``/``v10`` rather than the multiplicative
    anomalies on wind speed used for precipitation-like variables, because
    components change sign (a ratio to a near-zero climatology explodes).
    ``"*"`` is accepted for strictly positive variables.

    Detrending: BCSD removes the GCM's 9-year running-mean trend before the
    mapping and adds it back afterwards so that the climate-change signal is
    not mapped away.  Here the trend (running mean of annual means, relative
    to the training-period mean of hist) is removed from hist at training and
    from the simulation at adjustment — but only when the training period
    (distinct years of hist) and the simulation both span at least
    ``detrend_years``; otherwise the step is skipped (a running mean that is
    longer than the record is just the record's mean) and the provenance
    says so.

    Parameters
    ----------
    kind_per_var
        ``{variable: "+" | "*"}``; default additive for ``t2m, msl, u10, v10``
        (variables missing from the data are skipped unless given explicitly).
    n_quantiles
        Number of quantile nodes, or an explicit array of probabilities.
    detrend_years
        Running-mean window of the detrending (0 disables it).
    min_samples
        Minimum training samples per calendar month (hist and reference).
    min_coverage
        Smallest fraction of a GCM cell the reference must cover for the cell to be trained.
    plotting_alpha
        Plotting-position parameter α in ``(i − α)/(n + 1 − 2α)``; 0.4 = Cunnane.
    """

    def __init__(self, kind_per_var: Mapping[str, str] | None = None, n_quantiles: int | Sequence[float] = 50,
                 detrend_years: int = 9, min_samples: int = 10, min_coverage: float = 0.5,
                 plotting_alpha: float = 0.4) -> None:
        self._explicit = kind_per_var is not None
        self.kind_per_var = dict(kind_per_var) if kind_per_var is not None else {v: "+" for v in VARIABLES}
        for v, k in self.kind_per_var.items():
            if k not in ("+", "*"):
                raise ValueError(f"kind for {v!r} must be '+' or '*', got {k!r}")
        if np.isscalar(n_quantiles):
            if int(n_quantiles) < 2:
                raise ValueError("n_quantiles must be at least 2")
            self.nodes = quantile_nodes(int(n_quantiles))
        else:
            self.nodes = np.sort(np.asarray(n_quantiles, dtype=np.float64))
            if self.nodes.size < 2 or self.nodes.min() < 0 or self.nodes.max() > 1:
                raise ValueError("quantile nodes must be at least two probabilities in [0, 1]")
        self.detrend_years = int(detrend_years)
        self.min_samples = int(min_samples)
        self.min_coverage = float(min_coverage)
        self.alpha = float(plotting_alpha)
        self.fits: dict[str, _VarFit] = {}
        self.fine_grid: LatLonGrid | None = None
        self.coarse_grid: LatLonGrid | None = None
        self.attrs: dict[str, object] = {}
        self._detrend = False
        self._fine_coords: dict[str, xr.DataArray] = {}

    # ------------------------------------------------------------ training
    def _variables(self, ref: xr.Dataset, hist: xr.Dataset) -> list[str]:
        vs = [v for v in self.kind_per_var if v in ref.data_vars and v in hist.data_vars]
        if self._explicit:
            missing = [v for v in self.kind_per_var if v not in vs]
            if missing:
                raise DataError(f"BCSD: variable(s) {missing} requested but missing from the "
                                f"{'reference' if any(m not in ref for m in missing) else 'historical run'} "
                                f"(reference has {list(ref.data_vars)}, hist has {list(hist.data_vars)})")
        if not vs:
            raise DataError(f"BCSD: no variable in common among {list(self.kind_per_var)}: reference has "
                            f"{list(ref.data_vars)}, hist has {list(hist.data_vars)}")
        return vs

    @staticmethod
    def _coarsen_and_climatology(da: xr.DataArray, ml: np.ndarray, mo: np.ndarray, months: np.ndarray,
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
            coarse[a:a + x.shape[0]] = _masked_apply(ml, mo, x).reshape(x.shape[0], -1)
            xf = x.reshape(x.shape[0], nfine)
            ok = np.isfinite(xf)
            mi = months[a:a + x.shape[0]] - 1
            for m in np.unique(mi):
                sel = mi == m
                sums[m] += np.where(ok[sel], xf[sel], 0.0).sum(axis=0)
                counts[m] += ok[sel].sum(axis=0)
        clim = np.where(counts > 0, sums / np.where(counts > 0, counts, 1), np.nan)
        return coarse, clim

    def train(self, ref_fine: xr.Dataset, hist_coarse: xr.Dataset) -> "BCSD":
        """Fit the monthly quantile mappings and climatologies.

        Parameters
        ----------
        ref_fine
            Reference (``time, lat, lon`` on the fine grid, e.g. ERA5 0.25°).
        hist_coarse
            The GCM's historical run (``time, lat, lon`` on its native grid)
            covering the reference region.  The two need not share time
            steps (the mapping is distributional) but should cover the same
            climate period.

        Returns
        -------
        BCSD
            ``self`` (trained).

        Raises
        ------
        DataError
            Missing variables or time axis, grids that do not overlap or a
            "fine" grid that is not finer, fewer than ``min_samples`` samples
            in a calendar month that either dataset has.
        """
        for name, ds in (("reference", ref_fine), ("hist", hist_coarse)):
            if "time" not in ds.dims:
                raise DataError(f"BCSD.train: {name} has no time dimension")
        vs = self._variables(ref_fine, hist_coarse)
        fine = grid_from_xarray(ref_fine, name=str(ref_fine.attrs.get("grid_name", "reference")))
        coarse = grid_from_xarray(hist_coarse, name=str(hist_coarse.attrs.get("source_id", "gcm")))
        if fine.dlat >= coarse.dlat or fine.dlon >= coarse.dlon:
            raise DataError(f"BCSD.train: reference grid ({fine.dlat:g}°x{fine.dlon:g}°) is not finer than the "
                            f"GCM grid ({coarse.dlat:g}°x{coarse.dlon:g}°); pass (ref_fine, hist_coarse)")
        ml, mo, cov = conservative_matrices(fine, coarse)
        trained_cells = cov >= self.min_coverage
        if not trained_cells.any():
            raise DataError(f"BCSD.train: the reference grid {fine.name} ({fine.lat.min():g}..{fine.lat.max():g}N, "
                            f"{fine.lon.min():g}..{fine.lon.max():g}E) covers no GCM cell of {coarse.name} by at "
                            f"least {self.min_coverage:.0%}; the grids do not overlap")
        m_ref = _months(ref_fine)
        m_hist = _months(hist_coarse)
        y_hist = _years(hist_coarse)
        n_years = int(np.unique(y_hist).size)
        self._detrend = self.detrend_years > 0 and n_years >= self.detrend_years
        ncell = coarse.shape[0] * coarse.shape[1]
        nfine = fine.shape[0] * fine.shape[1]
        n_ref = np.bincount(m_ref, minlength=13)[1:]
        n_hist = np.bincount(m_hist, minlength=13)[1:]
        for m in range(12):
            if (n_ref[m] or n_hist[m]) and min(n_ref[m], n_hist[m]) < self.min_samples:
                raise DataError(f"BCSD.train: calendar month {m + 1} has {n_ref[m]} reference and {n_hist[m]} "
                                f"hist samples; at least {self.min_samples} of each are needed "
                                f"(reference {_time_text(ref_fine)}, hist {_time_text(hist_coarse)})")
        self.fits = {}
        nq = self.nodes.size
        for v in vs:
            kind = self.kind_per_var[v]
            xr_c, cf = self._coarsen_and_climatology(ref_fine[v], ml, mo, m_ref, nfine)
            xr_c[:, ~trained_cells.ravel()] = np.nan
            xh = np.asarray(hist_coarse[v].transpose("time", "lat", "lon").values, dtype=np.float64)
            xh = xh.reshape(xh.shape[0], ncell)
            baseline = None
            if self._detrend:
                trend = _running_trend(xh, y_hist, self.detrend_years)
                baseline = _nanmean0(trend)
                xh = xh - (trend - baseline) if kind == "+" else xh / (trend / baseline)
            if kind == "*" and (np.nanmin(xh) <= 0 or np.nanmin(xr_c) <= 0):
                raise DataError(f"BCSD.train: multiplicative kind for {v!r} needs strictly positive values")
            hq = np.full((12, nq, ncell), np.nan)
            rq = np.full((12, nq, ncell), np.nan)
            cc = np.full((12, ncell), np.nan)
            for m in range(12):  # 12 calendar months; cells are vectorised
                if n_ref[m] == 0:
                    continue
                sel_r = m_ref == m + 1
                sel_h = m_hist == m + 1
                hq[m] = cunnane_quantiles(xh[sel_h], self.nodes, self.alpha, self.min_samples)
                rq[m] = cunnane_quantiles(xr_c[sel_r], self.nodes, self.alpha, self.min_samples)
                cc[m] = _nanmean0(xr_c[sel_r])
            self.fits[v] = _VarFit(kind, hq, rq, cc, cf, n_ref, n_hist, baseline)
        self.fine_grid = fine
        self.coarse_grid = coarse
        self._fine_coords = {"lat": ref_fine["lat"].copy(), "lon": ref_fine["lon"].copy()}
        self._coarse_latlon = (coarse.lat.copy(), coarse.lon.copy())
        self._bl = bilinear_matrices(coarse, fine)
        detrend_note = (f"{self.detrend_years}-year running-mean trend removed before and restored after mapping"
                        if self._detrend else
                        (f"skipped: training period spans {n_years} year(s) < {self.detrend_years}"
                         if self.detrend_years > 0 else "disabled"))
        self.attrs = {
            "downscaling_method": "BCSD",
            "downscaling": ("BCSD (Wood et al. 2004): monthly empirical quantile mapping per GCM cell "
                            "(Cunnane plotting positions, linear interpolation, constant extrapolation of the "
                            "adjustment factor), then bilinear disaggregation of the anomaly to the fine grid "
                            "plus the fine monthly reference climatology"),
            "bcsd_kind": ", ".join(f"{v}:{self.fits[v].kind}" for v in vs),
            "bcsd_training_reference": _time_text(ref_fine),
            "bcsd_training_hist": _time_text(hist_coarse),
            "bcsd_samples_per_month_reference": " ".join(str(int(n)) for n in n_ref),
            "bcsd_samples_per_month_hist": " ".join(str(int(n)) for n in n_hist),
            "bcsd_n_quantiles": int(nq),
            "bcsd_plotting_positions": f"(i - {self.alpha:g})/(n + {1 - 2 * self.alpha:g})",
            "bcsd_detrend": detrend_note,
            "coarse_grid": coarse.name,
            "fine_grid": fine.name,
            "bcsd_min_coverage": self.min_coverage,
        }
        return self

    # ---------------------------------------------------------- adjustment
    def _check_sim(self, sim_coarse: xr.Dataset, what: str) -> None:
        if not self.fits or self.coarse_grid is None or self.fine_grid is None:
            raise DataError(f"BCSD.{what}: call train(ref_fine, hist_coarse) first")
        if "time" not in sim_coarse.dims:
            raise DataError(f"BCSD.{what}: simulation has no time dimension")
        lat = np.asarray(sim_coarse["lat"].values, dtype=np.float64)
        lon = np.asarray(sim_coarse["lon"].values, dtype=np.float64)
        clat, clon = self._coarse_latlon
        if lat.shape != clat.shape or lon.shape != clon.shape or not (
                np.allclose(lat, clat, atol=1e-5) and np.allclose(lon, clon, atol=1e-5)):
            raise DataError(f"BCSD.{what}: simulation grid ({lat.size}x{lon.size}, lat {lat[0]:g}..{lat[-1]:g}, "
                            f"lon {lon[0]:g}..{lon[-1]:g}) differs from the training grid {self.coarse_grid.name} "
                            f"({clat.size}x{clon.size}, lat {clat[0]:g}..{clat[-1]:g}, lon {clon[0]:g}..{clon[-1]:g})")
        missing = [v for v in self.fits if v not in sim_coarse.data_vars]
        if missing:
            raise DataError(f"BCSD.{what}: simulation lacks trained variable(s) {missing} "
                            f"(has {list(sim_coarse.data_vars)})")
        months = np.unique(_months(sim_coarse))
        some = next(iter(self.fits.values()))
        untrained = [int(m) for m in months if np.all(np.isnan(some.clim_coarse[m - 1]))]
        if untrained:
            raise DataError(f"BCSD.{what}: calendar month(s) {untrained} of the simulation were not in the "
                            f"training data ({self.attrs.get('bcsd_training_reference')})")

    def _map(self, sim_coarse: xr.Dataset) -> tuple[dict[str, np.ndarray], bool, int]:
        """Quantile-mapped coarse values ``(nt, ncell)`` per variable (trend restored)."""
        months = _months(sim_coarse)
        years = _years(sim_coarse)
        n_years = int(np.unique(years).size)
        detrend = self._detrend and n_years >= self.detrend_years
        nt = months.size
        out: dict[str, np.ndarray] = {}
        for v, fit in self.fits.items():
            x = np.asarray(sim_coarse[v].transpose("time", "lat", "lon").values, dtype=np.float64).reshape(nt, -1)
            trend = None
            if detrend:
                trend = _running_trend(x, years, self.detrend_years)
                x = x - (trend - fit.baseline) if fit.kind == "+" else x / (trend / fit.baseline)
            y = np.empty_like(x)
            for m in np.unique(months):  # ≤ 12 calendar months; cells vectorised
                sel = months == m
                hq, rq = fit.hist_q[m - 1], fit.ref_q[m - 1]
                if fit.kind == "+":
                    y[sel] = x[sel] + _interp_columns(x[sel], hq, rq - hq)
                else:
                    with np.errstate(invalid="ignore", divide="ignore"):
                        y[sel] = x[sel] * _interp_columns(x[sel], hq, rq / hq)
            if trend is not None:
                y = y + (trend - fit.baseline) if fit.kind == "+" else y * (trend / fit.baseline)
            out[v] = y
        return out, detrend, n_years

    def _attrs_for(self, sim_coarse: xr.Dataset, detrend: bool, n_years: int) -> dict:
        attrs = {k: a for k, a in sim_coarse.attrs.items() if k in ("source_id", "model_id", "source_file")}
        attrs.update(self.attrs)
        if self._detrend and not detrend:
            attrs["bcsd_detrend"] = f"skipped: simulation spans {n_years} year(s) < {self.detrend_years}"
        return attrs

    @staticmethod
    def _var_attrs(sim_coarse: xr.Dataset, v: str) -> dict:
        attrs = {k: a for k, a in sim_coarse[v].attrs.items() if k in ("units", "long_name", "standard_name")}
        attrs.setdefault("units", VARIABLE_INFO[v].units if v in VARIABLE_INFO else "")
        return attrs

    def bias_correct(self, sim_coarse: xr.Dataset) -> xr.Dataset:
        """Step 1 only: the quantile-mapped simulation on the GCM grid (float64).

        Useful for diagnostics and for comparing the mapping with other
        implementations; :meth:`adjust` runs this and the disaggregation.
        """
        self._check_sim(sim_coarse, "bias_correct")
        mapped, detrend, n_years = self._map(sim_coarse)
        nt = sim_coarse.sizes["time"]
        clat, clon = self._coarse_latlon
        out = {v: (("time", "lat", "lon"), y.reshape(nt, clat.size, clon.size), self._var_attrs(sim_coarse, v))
               for v, y in mapped.items()}
        ds = xr.Dataset(out, coords={"time": sim_coarse["time"], "lat": sim_coarse["lat"], "lon": sim_coarse["lon"]})
        ds.attrs = self._attrs_for(sim_coarse, detrend, n_years)
        ds.attrs["downscaling_method"] = "BCSD bias correction (coarse grid, no disaggregation)"
        return ds

    def adjust(self, sim_coarse: xr.Dataset) -> xr.Dataset:
        """Bias-correct ``sim_coarse`` per month and cell and disaggregate it to the fine grid.

        Parameters
        ----------
        sim_coarse
            GCM output (``time, lat, lon``) on the same grid as the training hist.

        Returns
        -------
        xarray.Dataset
            The trained variables on the fine grid (``time`` from ``sim_coarse``),
            float32, attrs with the provenance (method, training period,
            samples per month, grids, detrending).

        Raises
        ------
        DataError
            Not trained, a different grid, a missing variable or a calendar
            month absent from the training data.
        """
        self._check_sim(sim_coarse, "adjust")
        mapped, detrend, n_years = self._map(sim_coarse)
        months = _months(sim_coarse)
        nt = months.size
        clat, clon = self._coarse_latlon
        nfl, nfo = self.fine_grid.shape
        ml, mo = self._bl
        out = {}
        for v, y in mapped.items():
            fit = self.fits[v]
            anom = np.empty_like(y)
            for m in np.unique(months):
                sel = months == m
                anom[sel] = y[sel] - fit.clim_coarse[m - 1] if fit.kind == "+" else y[sel] / fit.clim_coarse[m - 1]
            fine_anom = _masked_apply(ml, mo, anom.reshape(nt, clat.size, clon.size)).reshape(nt, nfl * nfo)
            res = np.empty_like(fine_anom)
            for m in np.unique(months):
                sel = months == m
                res[sel] = (fine_anom[sel] + fit.clim_fine[m - 1] if fit.kind == "+"
                            else fine_anom[sel] * fit.clim_fine[m - 1])
            out[v] = (("time", "lat", "lon"), res.reshape(nt, nfl, nfo).astype(np.float32),
                      self._var_attrs(sim_coarse, v))
        coords = {"time": sim_coarse["time"], "lat": self._fine_coords["lat"], "lon": self._fine_coords["lon"]}
        ds = xr.Dataset(out, coords=coords)
        ds.attrs = self._attrs_for(sim_coarse, detrend, n_years)
        return ds
