"""Baselines: bilinear downscaling and BCSD (checked against xsdba's EmpiricalQuantileMapping)."""

from __future__ import annotations

import warnings

import cftime
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from zssd_engine.baselines import BCSD, bilinear_downscale, cunnane_quantiles, quantile_nodes
from zssd_engine.errors import DataError
from zssd_engine.grids import LatLonGrid
from zssd_engine.operators import regrid


def _ds(values: np.ndarray, times, lat, lon, var="t2m", units="K") -> xr.Dataset:
    return xr.Dataset({var: (("time", "lat", "lon"), np.asarray(values, dtype=np.float64), {"units": units})},
                      coords={"time": times, "lat": np.asarray(lat, float), "lon": np.asarray(lon, float)})


# ------------------------------------------------------------------ bilinear
def test_bilinear_downscale_linear_field_and_nans():
    clat = np.array([30.0, 32.0, 34.0, 36.0])
    clon = np.array([100.0, 102.0, 104.0])
    field = 280 + 0.5 * clat[:, None] - 0.2 * clon[None, :]
    coarse = _ds(field[None], pd.date_range("2021-01-01", periods=1), clat, clon)
    coarse["u10"] = coarse["t2m"] * 0 + 1.0
    coarse["u10"].attrs["units"] = "m s-1"
    coarse["lat_bnds"] = (("lat", "bnds"), np.stack([clat - 1, clat + 1], 1))
    coarse.attrs["source_id"] = "TOY"
    flat = np.arange(30.125, 36.0, 0.25)
    flon = np.arange(100.125, 104.0, 0.25)
    fine = LatLonGrid(flat[::-1], flon, "fine")
    out = bilinear_downscale(coarse, fine)
    assert set(out.data_vars) == {"t2m", "u10"}  # bounds dropped
    assert out["t2m"].shape == (1, flat.size, flon.size)
    expect = 280 + 0.5 * fine.lat[:, None] - 0.2 * fine.lon[None, :]
    np.testing.assert_allclose(out["t2m"].values[0], expect, atol=1e-9)
    assert out.attrs["downscaling_method"] == "bilinear" and "TOY" in out.attrs["downscaling"]
    assert out.attrs["source_id"] == "TOY"
    # NaN-aware: a masked coarse cell only removes its own weight
    masked = coarse.copy(deep=True)
    masked["u10"][0, 1, 1] = np.nan
    out2 = bilinear_downscale(masked, fine)
    assert np.isfinite(out2["u10"]).all()
    np.testing.assert_allclose(out2["u10"].values, 1.0)


# ------------------------------------------------------------ QM primitives
def test_cunnane_quantiles_match_definition_and_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(37, 3))
    x[:5, 2] = np.nan
    nodes = np.array([0.0, 0.1, 0.5, 0.9, 1.0])
    q7 = cunnane_quantiles(x, nodes, alpha=1.0)
    np.testing.assert_allclose(q7[:, :2], np.quantile(x[:, :2], nodes, axis=0), rtol=1e-12)
    np.testing.assert_allclose(q7[:, 2], np.nanquantile(x[:, 2], nodes), rtol=1e-12)
    qc = cunnane_quantiles(x[:, 0], nodes)  # Cunnane = Hyndman-Fan with alpha = beta = 0.4
    np.testing.assert_allclose(qc[:, 0], _hf(x[:, 0], nodes, 0.4), rtol=1e-12)
    # outside the plotting positions: sample min / max
    assert qc[0, 0] == x[:, 0].min() and qc[-1, 0] == x[:, 0].max()
    few = cunnane_quantiles(x[:4], nodes, min_count=10)
    assert np.isnan(few).all()
    np.testing.assert_allclose(quantile_nodes(4), [0.125, 0.375, 0.625, 0.875])


def _hf(v: np.ndarray, q: np.ndarray, a: float) -> np.ndarray:
    """Reference: interpolate the sorted sample at plotting positions (i − a)/(n + 1 − 2a)."""
    s = np.sort(v)
    n = s.size
    p = (np.arange(1, n + 1) - a) / (n + 1 - 2 * a)
    return np.interp(q, p, s)


# ------------------------------------------------- peer check against xsdba
def _single_cell_world(calendar: str = "360_day", years=(1981, 2000), seed=0):
    """Daily ref/hist series, one per coarse cell, as a 2x2 GCM grid with a nested 0.25° reference.

    The fine reference is constant inside each coarse cell, so its conservative
    average is exactly the cell's series: BCSD's mapping can be compared with
    a single-series quantile mapping.
    """
    rng = np.random.default_rng(seed)
    t = xr.date_range(f"{years[0]}-01-01", f"{years[1]}-12-30", freq="D", calendar=calendar, use_cftime=True)
    doy = np.asarray(t.dayofyear)
    seas = 10 * np.sin(2 * np.pi * doy / 360.0)
    ref = 280 + seas + rng.gamma(4.0, 1.5, t.size)  # skewed
    hist = 282 + 1.3 * seas + rng.normal(0, 2.8, t.size)
    ts = xr.date_range("2001-01-15", "2010-12-15", freq="MS", calendar=calendar, use_cftime=True)
    ts = xr.CFTimeIndex([cftime.datetime(d.year, d.month, 15, calendar=calendar) for d in ts])
    sim = 283 + 13 * np.sin(2 * np.pi * np.asarray(ts.dayofyear) / 360.0) + rng.normal(0, 3.5, ts.size)
    clat, clon = np.array([1.0, 3.0]), np.array([1.0, 3.0])
    flat = np.arange(0.125, 4.0, 0.25)
    b = np.ones((1, 2, 2))
    ref_f = _ds(ref[:, None, None] * np.ones((1, flat.size, flat.size)), t, flat, flat)
    return (ref, hist, sim, t, ts, ref_f, _ds(hist[:, None, None] * b, t, clat, clon),
            _ds(sim[:, None, None] * b, ts, clat, clon))


def _xsdba_eqm(ref, hist, sim, t, ts, nq):
    import xsdba

    da = lambda v, tt: xr.DataArray(v, dims="time", coords={"time": tt}, attrs={"units": "K"})  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eqm = xsdba.EmpiricalQuantileMapping.train(da(ref, t), da(hist, t), nquantiles=nq, group="time.month", kind="+")
        return eqm.adjust(da(sim, ts), interp="linear", extrapolation="constant").values


def test_bcsd_mapping_matches_xsdba_empirical_quantile_mapping():
    pytest.importorskip("xsdba")
    ref, hist, sim, t, ts, ref_f, hist_c, sim_c = _single_cell_world()
    expected = _xsdba_eqm(ref, hist, sim, t, ts, nq=40)
    # 1) same plotting positions as xsdba (Hyndman-Fan type 7, alpha = 1): identical up to round-off.
    #    The simulation is sampled on the 15th of 30-day months, where xsdba's linear interpolation of
    #    the adjustment factors *between* months (group index month − 0.5 + day/30) hits a month exactly.
    b7 = BCSD(n_quantiles=40, plotting_alpha=1.0, detrend_years=0).train(ref_f, hist_c)
    got7 = b7.bias_correct(sim_c)["t2m"].values[:, 0, 0]
    np.testing.assert_allclose(got7, expected, atol=1e-8)
    # 2) our default, Cunnane plotting positions (i − 0.4)/(n + 0.2): the quantile functions differ by
    #    < 1 sample spacing, noticeably only in the tails → small differences relative to the spread.
    bc = BCSD(n_quantiles=40, detrend_years=0).train(ref_f, hist_c)
    got = bc.bias_correct(sim_c)["t2m"].values[:, 0, 0]
    spread = np.std(ref)
    d = np.abs(got - expected)
    assert d.mean() < 0.01 * spread and d.max() < 0.1 * spread
    # both cells are identical by construction
    np.testing.assert_allclose(bc.bias_correct(sim_c)["t2m"].values[:, 1, 1], got)


# ---------------------------------------------------------------- end to end
def _fabricated(years=2, seed=1):
    """A 0.25° reference with fine structure on a 6° box and a biased 1.5° "GCM" of it."""
    rng = np.random.default_rng(seed)
    t = pd.date_range("2001-01-01", periods=365 * years, freq="D")
    flat = np.arange(40.125, 46.0, 0.25)[::-1]  # descending like ERA5
    flon = np.arange(10.125, 16.0, 0.25)
    clat = np.arange(40.75, 46.0, 1.5)
    clon = np.arange(10.75, 16.0, 1.5)
    yy, xx = np.meshgrid(flat, flon, indexing="ij")
    topo = 3.0 * np.sin(yy * 2.1) * np.cos(xx * 1.7)  # sub-grid structure (K)
    seas = 8 * np.sin(2 * np.pi * (t.day_of_year.values - 100) / 365.25)
    large = rng.normal(0, 2.0, (t.size, 1, 1)) + rng.normal(0, 0.7, (t.size, clat.size, clon.size)).repeat(
        6, axis=1).repeat(6, axis=2)[:, :flat.size, :flon.size][:, ::-1]
    ref = 285 + seas[:, None, None] + topo[None] + large + rng.normal(0, 0.3, (t.size, flat.size, flon.size))
    ref_f = _ds(ref, t, flat, flon)
    ref_f["u10"] = (("time", "lat", "lon"), ref - 285.0, {"units": "m s-1"})
    coarse_grid = LatLonGrid(clat, clon, "toy-gcm")
    ref_c = xr.Dataset({v: regrid(ref_f[v], coarse_grid, "conservative") for v in ref_f.data_vars})
    clim = ref_c.groupby("time.month").mean()
    anom = ref_c.groupby("time.month") - clim
    hist = (clim.sel(month=ref_c["time.month"]).drop_vars("month") + 1.5 * anom.drop_vars("month") + 2.0)
    hist.attrs["source_id"] = "toy-gcm"
    return ref_f, ref_c, hist


def test_bcsd_end_to_end_removes_bias_and_keeps_fine_structure():
    ref_f, ref_c, hist = _fabricated()
    b = BCSD(n_quantiles=30).train(ref_f, hist)
    out = b.adjust(hist)
    assert set(out.data_vars) == {"t2m", "u10"}
    assert out["t2m"].shape == ref_f["t2m"].shape and out["t2m"].dtype == np.float32
    np.testing.assert_array_equal(out["lat"], ref_f["lat"])
    assert out.attrs["downscaling_method"] == "BCSD"
    assert "skipped: training period spans 2 year(s) < 9" in out.attrs["bcsd_detrend"]
    assert out.attrs["bcsd_training_hist"] == "2001-01-01/2002-12-31"
    assert out.attrs["bcsd_samples_per_month_reference"].split()[0] == "62"
    assert out.attrs["coarse_grid"] == "toy-gcm"
    coarse_grid = LatLonGrid(ref_c["lat"].values, ref_c["lon"].values, "c")
    back = regrid(out["t2m"].astype("f8"), coarse_grid, "conservative")
    raw_bias = float((hist["t2m"] - ref_c["t2m"]).mean())
    assert raw_bias == pytest.approx(2.0, abs=1e-6)
    assert abs(float((back - ref_c["t2m"]).mean())) < 0.05  # bias removed
    ratio = float(back.std("time").mean() / ref_c["t2m"].std("time").mean())
    assert 0.95 < ratio < 1.05  # scaled variability corrected
    # the fine climatological structure is restored (bilinear interpolation cannot do that)
    fine_clim_err = float(np.abs(out["t2m"].mean("time") - ref_f["t2m"].mean("time")).mean())
    bil = bilinear_downscale(hist, LatLonGrid(ref_f["lat"].values, ref_f["lon"].values, "f"))
    bil_err = float(np.abs(bil["t2m"].mean("time") - ref_f["t2m"].mean("time")).mean())
    assert fine_clim_err < 0.2 < bil_err
    # the wind component is additive too, and its bias is gone
    backu = regrid(out["u10"].astype("f8"), coarse_grid, "conservative")
    assert abs(float((backu - ref_c["u10"]).mean())) < 0.05


def test_bcsd_detrending_keeps_the_climate_signal():
    rng = np.random.default_rng(5)
    t = xr.date_range("1981-01-01", periods=12 * 12, freq="MS", calendar="noleap", use_cftime=True)
    clat, clon = np.array([1.0, 3.0]), np.array([1.0, 3.0])
    flat = np.arange(0.125, 4.0, 0.25)
    x = 280 + rng.normal(0, 1.0, t.size)
    h = 283 + 2.0 * (x - 280)  # biased and twice as variable: the mapping halves deviations
    ref_f = _ds(x[:, None, None] * np.ones((1, flat.size, flat.size)), t, flat, flat)
    hist_c = _ds(h[:, None, None] * np.ones((1, 2, 2)), t, clat, clon)
    with_dt = BCSD(n_quantiles=12).train(ref_f, hist_c)
    no_dt = BCSD(n_quantiles=12, detrend_years=0).train(ref_f, hist_c)
    assert "9-year running-mean trend removed" in with_dt.attrs["bcsd_detrend"]
    assert no_dt.attrs["bcsd_detrend"] == "disabled"
    ramp = np.linspace(0, 1.5, t.size)  # a warming trend in the simulation
    sim0 = hist_c.assign_coords(time=t)
    sim1 = hist_c.copy(data={"t2m": hist_c["t2m"].values + ramp[:, None, None]})
    mid = slice(48, 96)  # away from the shrinking running-mean windows at the ends
    d_dt = (with_dt.bias_correct(sim1) - with_dt.bias_correct(sim0))["t2m"].values[mid, 0, 0]
    d_no = (no_dt.bias_correct(sim1) - no_dt.bias_correct(sim0))["t2m"].values[mid, 0, 0]
    # the trend survives the mapping (annual means; within a year the trend estimate is constant)
    np.testing.assert_allclose(d_dt.reshape(4, 12).mean(1), ramp[mid].reshape(4, 12).mean(1), atol=0.08)
    assert np.mean(d_no) == pytest.approx(0.5 * np.mean(ramp[mid]), abs=0.2)  # without detrending it is halved
    short = with_dt.bias_correct(sim1.isel(time=slice(0, 48)))
    assert "skipped: simulation spans 4 year(s)" in short.attrs["bcsd_detrend"]


# --------------------------------------------------------------------- errors
def test_bcsd_errors():
    ref_f, ref_c, hist = _fabricated(years=1)
    with pytest.raises(DataError, match="not finer"):
        BCSD().train(hist, ref_f)
    with pytest.raises(DataError, match=r"variable\(s\) \['msl'\] requested but missing"):
        BCSD({"t2m": "+", "msl": "+"}).train(ref_f, hist)
    with pytest.raises(DataError, match="no variable in common"):
        BCSD().train(ref_f[["t2m"]], hist[["u10"]])
    few = ref_f.isel(time=slice(0, 40))  # January complete, February with 9 days
    with pytest.raises(DataError, match=r"calendar month 2 has 9 reference and 28 hist samples; at least 10"):
        BCSD().train(few, hist.isel(time=slice(0, 59)))
    b = BCSD(n_quantiles=20).train(ref_f.isel(time=slice(0, 59)), hist.isel(time=slice(0, 59)))
    with pytest.raises(DataError, match=r"calendar month\(s\) \[3\]"):
        b.adjust(hist.isel(time=slice(50, 70)))
    with pytest.raises(DataError, match="differs from the training grid"):
        b.adjust(hist.isel(lat=slice(0, 3)).isel(time=slice(0, 20)))
    with pytest.raises(DataError, match="lacks trained variable"):
        b.adjust(hist[["t2m"]].isel(time=slice(0, 20)))
    with pytest.raises(DataError, match="train"):
        BCSD().adjust(hist)
    far = ref_f.assign_coords(lon=ref_f["lon"] + 100.0)
    with pytest.raises(DataError, match="do not overlap"):
        BCSD().train(far, hist)
    with pytest.raises(ValueError, match="kind"):
        BCSD({"t2m": "x"})
