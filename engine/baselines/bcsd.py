"""BCSD — Bias Correction and Spatial Disaggregation — with xsdba's API: ``train(ref, hist)``, then ``adjust(sim)``.

Wood et al. 2004; Maurer & Hidalgo 2008; Thrasher et al. 2012, as implemented by
scikit-downscale's ``BcsdTemperature`` and xsdba's ``EmpiricalQuantileMapping``: empirical
quantile mapping per calendar month and per coarse cell, then spatial disaggregation of the
bias-corrected anomaly onto the fine grid.  This module is the xarray API (checks, grids,
provenance); the array numerics are :mod:`zssd_engine.baselines.quantile_mapping`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from ..errors import DataError
from ..grids import LatLonGrid
from ..operators import bilinear_matrices, conservative_matrices, grid_from_xarray
from ..variables import VARIABLE_INFO, VARIABLES
from .quantile_mapping import (
    coarsen_and_climatology, detrend, disaggregate, fit_monthly, map_monthly, nanmean0, quantile_nodes, retrend,
    running_trend,
)

__all__ = ["BCSD"]


@dataclass
class _VarFit:
    """One variable's trained mapping: quantiles, climatologies and sample counts per calendar month."""

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
    """Calendar month (1–12) of each time step."""
    return np.asarray(da["time"].dt.month.values, dtype=int)


def _years(da: xr.DataArray | xr.Dataset) -> np.ndarray:
    """Year of each time step."""
    return np.asarray(da["time"].dt.year.values, dtype=int)


def _time_text(ds: xr.Dataset) -> str:
    """``first/last`` dates (ISO) of the time axis, for provenance and messages."""
    t = np.asarray(ds["time"].values)
    if t.size == 0:
        return "(empty)"
    if t.dtype.kind == "M":
        return f"{np.datetime_as_string(t.min(), 'D')}/{np.datetime_as_string(t.max(), 'D')}"
    return f"{min(t).isoformat()[:10]}/{max(t).isoformat()[:10]}"


class BCSD:
    """Bias Correction and Spatial Disaggregation (Wood et al. 2004), per calendar month.

    Training (:meth:`train`)

    1. The fine reference (e.g. ERA5 0.25°) is averaged conservatively onto
       the GCM grid (:func:`zssd_engine.operators.conservative_matrices`, NaN-aware;
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
        """The variables to train: those of ``kind_per_var`` in both datasets (all of them if given explicitly)."""
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
        vs, fine, coarse, (ml, mo, trained_cells) = self._training_grids(ref_fine, hist_coarse)
        m_ref = _months(ref_fine)
        m_hist = _months(hist_coarse)
        y_hist = _years(hist_coarse)
        n_years = int(np.unique(y_hist).size)
        self._detrend = self.detrend_years > 0 and n_years >= self.detrend_years
        n_ref = np.bincount(m_ref, minlength=13)[1:]
        n_hist = np.bincount(m_hist, minlength=13)[1:]
        for m in range(12):
            if (n_ref[m] or n_hist[m]) and min(n_ref[m], n_hist[m]) < self.min_samples:
                raise DataError(f"BCSD.train: calendar month {m + 1} has {n_ref[m]} reference and {n_hist[m]} "
                                f"hist samples; at least {self.min_samples} of each are needed "
                                f"(reference {_time_text(ref_fine)}, hist {_time_text(hist_coarse)})")
        self.fits = {}
        nfine = fine.shape[0] * fine.shape[1]
        for v in vs:
            kind = self.kind_per_var[v]
            xr_c, cf = coarsen_and_climatology(ref_fine[v], ml, mo, m_ref, nfine)
            xr_c[:, ~trained_cells.ravel()] = np.nan
            xh = np.asarray(hist_coarse[v].transpose("time", "lat", "lon").values, dtype=np.float64)
            xh = xh.reshape(xh.shape[0], coarse.shape[0] * coarse.shape[1])
            baseline = None
            if self._detrend:
                trend = running_trend(xh, y_hist, self.detrend_years)
                baseline = nanmean0(trend)
                xh = detrend(xh, trend, baseline, kind)
            if kind == "*" and (np.nanmin(xh) <= 0 or np.nanmin(xr_c) <= 0):
                raise DataError(f"BCSD.train: multiplicative kind for {v!r} needs strictly positive values")
            hq, rq, cc = fit_monthly(xh, xr_c, m_hist, m_ref, n_ref, self.nodes, self.alpha, self.min_samples)
            self.fits[v] = _VarFit(kind, hq, rq, cc, cf, n_ref, n_hist, baseline)
        self.fine_grid = fine
        self.coarse_grid = coarse
        self._fine_coords = {"lat": ref_fine["lat"].copy(), "lon": ref_fine["lon"].copy()}
        self._coarse_latlon = (coarse.lat.copy(), coarse.lon.copy())
        self._bl = bilinear_matrices(coarse, fine)
        self.attrs = self._training_attrs(ref_fine, hist_coarse, vs, n_ref, n_hist, n_years)
        return self

    def _training_grids(self, ref_fine: xr.Dataset, hist_coarse: xr.Dataset) -> tuple[
            list[str], LatLonGrid, LatLonGrid, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Checked inputs of :meth:`train`: the variables, both grids and ``(ml, mo, trained cells)``."""
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
        return vs, fine, coarse, (ml, mo, trained_cells)

    def _training_attrs(self, ref_fine: xr.Dataset, hist_coarse: xr.Dataset, vs: list[str], n_ref: np.ndarray,
                        n_hist: np.ndarray, n_years: int) -> dict[str, object]:
        """Provenance attributes of the trained model (copied onto every output)."""
        detrend_note = (f"{self.detrend_years}-year running-mean trend removed before and restored after mapping"
                        if self._detrend else
                        (f"skipped: training period spans {n_years} year(s) < {self.detrend_years}"
                         if self.detrend_years > 0 else "disabled"))
        return {
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
            "bcsd_n_quantiles": int(self.nodes.size),
            "bcsd_plotting_positions": f"(i - {self.alpha:g})/(n + {1 - 2 * self.alpha:g})",
            "bcsd_detrend": detrend_note,
            "coarse_grid": self.coarse_grid.name,
            "fine_grid": self.fine_grid.name,
            "bcsd_min_coverage": self.min_coverage,
        }

    # ---------------------------------------------------------- adjustment
    def _check_sim(self, sim_coarse: xr.Dataset, what: str) -> None:
        """``DataError`` unless the model is trained and ``sim_coarse`` matches its grid, variables and months."""
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
        do_detrend = self._detrend and n_years >= self.detrend_years
        nt = months.size
        out: dict[str, np.ndarray] = {}
        for v, fit in self.fits.items():
            x = np.asarray(sim_coarse[v].transpose("time", "lat", "lon").values, dtype=np.float64).reshape(nt, -1)
            trend = None
            if do_detrend:
                trend = running_trend(x, years, self.detrend_years)
                x = detrend(x, trend, fit.baseline, fit.kind)
            y = map_monthly(x, months, fit.hist_q, fit.ref_q, fit.kind)
            out[v] = y if trend is None else retrend(y, trend, fit.baseline, fit.kind)
        return out, do_detrend, n_years

    def _attrs_for(self, sim_coarse: xr.Dataset, detrended: bool, n_years: int) -> dict:
        """Output attributes: the simulation's source, the training provenance, a skipped detrending."""
        attrs = {k: a for k, a in sim_coarse.attrs.items() if k in ("source_id", "model_id", "source_file")}
        attrs.update(self.attrs)
        if self._detrend and not detrended:
            attrs["bcsd_detrend"] = f"skipped: simulation spans {n_years} year(s) < {self.detrend_years}"
        return attrs

    @staticmethod
    def _var_attrs(sim_coarse: xr.Dataset, v: str) -> dict:
        """A variable's CF attributes (units from :data:`zssd_engine.variables.VARIABLE_INFO` if absent)."""
        attrs = {k: a for k, a in sim_coarse[v].attrs.items() if k in ("units", "long_name", "standard_name")}
        attrs.setdefault("units", VARIABLE_INFO[v].units if v in VARIABLE_INFO else "")
        return attrs

    def bias_correct(self, sim_coarse: xr.Dataset) -> xr.Dataset:
        """Step 1 only: the quantile-mapped simulation on the GCM grid (float64).

        Useful for diagnostics and for comparing the mapping with other
        implementations; :meth:`adjust` runs this and the disaggregation.
        """
        self._check_sim(sim_coarse, "bias_correct")
        mapped, detrended, n_years = self._map(sim_coarse)
        nt = sim_coarse.sizes["time"]
        clat, clon = self._coarse_latlon
        out = {v: (("time", "lat", "lon"), y.reshape(nt, clat.size, clon.size), self._var_attrs(sim_coarse, v))
               for v, y in mapped.items()}
        ds = xr.Dataset(out, coords={"time": sim_coarse["time"], "lat": sim_coarse["lat"], "lon": sim_coarse["lon"]})
        ds.attrs = self._attrs_for(sim_coarse, detrended, n_years)
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
        mapped, detrended, n_years = self._map(sim_coarse)
        months = _months(sim_coarse)
        nt = months.size
        clat, clon = self._coarse_latlon
        nfl, nfo = self.fine_grid.shape
        ml, mo = self._bl
        out = {}
        for v, y in mapped.items():
            fit = self.fits[v]
            res = disaggregate(y, months, fit.clim_coarse, fit.clim_fine, ml, mo, fit.kind, (clat.size, clon.size))
            out[v] = (("time", "lat", "lon"), res.reshape(nt, nfl, nfo).astype(np.float32),
                      self._var_attrs(sim_coarse, v))
        coords = {"time": sim_coarse["time"], "lat": self._fine_coords["lat"], "lon": self._fine_coords["lon"]}
        ds = xr.Dataset(out, coords=coords)
        ds.attrs = self._attrs_for(sim_coarse, detrended, n_years)
        return ds
