"""Latitude-weighted scores and spectra (zssd_engine.metrics) on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from zssd_engine.errors import DataError
from zssd_engine.metrics import (
    EARTH_RADIUS_KM,
    Scores,
    bias,
    mae,
    octave_bands,
    p99_error,
    power_spectrum,
    rmse,
    score,
    spectrum_ratio_by_band,
    weighted_quantile,
)


def _da(values, lat, lon=None, name="t2m", **extra_coords) -> xr.DataArray:
    values = np.asarray(values, dtype=np.float64)
    lon = np.arange(values.shape[-1], dtype=np.float64) if lon is None else lon
    dims = tuple(extra_coords) + ("lat", "lon")
    coords = {**{k: v for k, v in extra_coords.items()}, "lat": lat, "lon": lon}
    return xr.DataArray(values, dims=dims, coords=coords, name=name)


def test_constant_offset():
    rng = np.random.default_rng(0)
    ref = _da(rng.normal(280, 5, (6, 8)), np.linspace(-50, 50, 6))
    pred = ref - 1.5
    assert float(mae(pred, ref)) == pytest.approx(1.5)
    assert float(rmse(pred, ref)) == pytest.approx(1.5)
    assert float(bias(pred, ref)) == pytest.approx(-1.5)
    assert float(p99_error(pred, ref)) == pytest.approx(1.5)


def test_known_weighted_means_two_rows():
    lat = np.array([0.0, 60.0])  # weights 1 and 1/2
    ref = _da(np.zeros((2, 3)), lat)
    pred = _da([[1.0, 1.0, 1.0], [-4.0, -4.0, -4.0]], lat)
    # bias = (3*1*1 + 3*0.5*(-4)) / (3*1 + 3*0.5) = (3 - 6)/4.5
    assert float(bias(pred, ref)) == pytest.approx(-3 / 4.5)
    assert float(mae(pred, ref)) == pytest.approx((3 + 6) / 4.5)
    assert float(rmse(pred, ref)) == pytest.approx(np.sqrt((3 * 1 + 1.5 * 16) / 4.5))
    # reducing over lon only keeps a per-row value (weights cancel)
    np.testing.assert_allclose(bias(pred, ref, dims="lon"), [1.0, -4.0])


def test_nans_are_ignored_and_extra_dims_kept():
    lat = np.array([0.0, 60.0])
    ref = _da(np.zeros((2, 2, 2)), lat, time=[0, 1])
    p = np.ones((2, 2, 2))
    p[0, 1, :] = np.nan  # time 0: only the equatorial row
    p[1, 0, :] = 3.0
    pred = _da(p, lat, time=[0, 1])
    m = mae(pred, ref)
    assert m.dims == ("time",)
    np.testing.assert_allclose(m, [1.0, (2 * 3 + 2 * 0.5 * 1) / 3])
    allnan = pred.where(False)
    assert np.isnan(float(mae(allnan, ref).isel(time=0)))


def test_p99_exact_tail_equal_weights():
    # two rows at ±30° share a weight; 2 % of the cells carry error 5, the rest 0
    lat = np.array([-30.0, 30.0])
    err = np.zeros((2, 500))
    err[1, :20] = 5.0
    ref = _da(np.zeros_like(err), lat)
    pred = _da(err, lat)
    assert float(p99_error(pred, ref)) == pytest.approx(5.0)
    assert float(p99_error(pred, ref, q=0.9)) == pytest.approx(0.0)
    # equal weights: the weighted Hazen quantile equals numpy's "hazen" method
    rng = np.random.default_rng(3)
    x = rng.gamma(2.0, 1.0, (2, 301))
    for q in (0.5, 0.9, 0.99):
        got = float(weighted_quantile(_da(x, lat), q))
        assert got == pytest.approx(np.quantile(x.ravel(), q, method="hazen"), rel=1e-12)


def test_p99_uses_area_weights():
    # equator row (w=1) error 0, 60° row (w=0.5) error 10 → 1/3 of the area has error 10
    lat = np.array([0.0, 60.0])
    err = np.vstack([np.zeros(400), np.full(400, 10.0)])
    ref = _da(np.zeros_like(err), lat)
    pred = _da(err, lat)
    assert float(p99_error(pred, ref, q=0.6)) == pytest.approx(0.0)  # unweighted would say 10
    assert float(p99_error(pred, ref, q=0.7)) == pytest.approx(10.0)
    assert float(p99_error(pred, ref)) == pytest.approx(10.0)


def test_score_dataset():
    lat = np.array([0.0, 60.0])
    ref = xr.Dataset({"t2m": _da(np.full((2, 4), 280.0), lat), "u10": _da(np.zeros((2, 4)), lat)})
    pred = xr.Dataset({"t2m": _da(np.full((2, 4), 281.0), lat), "u10": _da(np.zeros((2, 4)), lat),
                       "extra": _da(np.zeros((2, 4)), lat)})
    s = score(pred, ref)
    assert set(s) == {"t2m", "u10"}
    assert isinstance(s["t2m"], Scores)
    assert s["t2m"] == Scores(mae=1.0, rmse=1.0, bias=1.0, p99=1.0)
    assert s["u10"].as_dict() == {"mae": 0.0, "rmse": 0.0, "bias": 0.0, "p99": 0.0}
    with pytest.raises(AttributeError):
        s["t2m"].mae = 2.0  # frozen
    with pytest.raises(DataError, match="no variable in common"):
        score(pred[["extra"]], ref)
    # a size-1 time dimension on one side only still gives floats
    s1 = score(pred.expand_dims(time=[0]), ref)
    assert s1["t2m"] == Scores(mae=1.0, rmse=1.0, bias=1.0, p99=1.0)
    # datasets also work with the plain functions
    assert float(mae(pred[["t2m"]], ref[["t2m"]])["t2m"]) == 1.0
    with pytest.raises(DataError, match="different coordinates"):
        mae(pred["t2m"], ref["t2m"].assign_coords(lat=[1.0, 61.0]))


# ------------------------------------------------------------------ spectra
def _regional(nlat=48, nlon=64, res=0.25, lat0=30.0):
    lat = lat0 + res * (np.arange(nlat) - (nlat - 1) / 2)
    lon = 100.0 + res * np.arange(nlon)
    return lat, lon


def test_sinusoid_peaks_at_its_wavenumber():
    lat, lon = _regional()
    phi0 = 0.5 * (lat.max() + lat.min())
    dx = EARTH_RADIUS_KM * np.cos(np.deg2rad(phi0)) * np.deg2rad(0.25)
    wavelength = 8 * dx  # 8 wavelengths across 64 cells
    x = np.arange(lon.size) * dx
    field = np.sin(2 * np.pi * x / wavelength)[None, :] * np.ones((lat.size, 1)) + 5.0
    sp = power_spectrum(_da(field, lat, lon))
    assert sp.dims == ("wavenumber",)
    assert sp.attrs["dx_km"] == pytest.approx(dx)
    k_peak = float(sp["wavenumber"][int(np.argmax(sp.values))])
    dk = float(sp["wavenumber"][1] - sp["wavenumber"][0])
    assert abs(k_peak - 1 / wavelength) <= 0.5 * dk
    assert float(sp["wavelength_km"][int(np.argmax(sp.values))]) == pytest.approx(wavelength, rel=0.15)
    # meridional wave: dy = R dφ
    dy = EARTH_RADIUS_KM * np.deg2rad(0.25)
    y = np.arange(lat.size) * dy
    fy = np.cos(2 * np.pi * y / (6 * dy))[:, None] * np.ones((1, lon.size))
    spy = power_spectrum(_da(fy, lat, lon))
    assert abs(float(spy["wavenumber"][int(np.argmax(spy.values))]) - 1 / (6 * dy)) <= 0.5 * dk


def test_white_noise_is_flat_and_parseval():
    rng = np.random.default_rng(7)
    lat, lon = _regional(64, 64)
    noise = rng.normal(0, 2.0, (20, lat.size, lon.size))
    sp = power_spectrum(_da(noise, lat, lon, time=np.arange(20))).mean("time")
    inner = sp.isel(wavenumber=slice(2, None))  # the lowest bins feel the window/mean removal
    assert float(inner.std() / inner.mean()) < 0.1
    assert float(inner.mean()) == pytest.approx(4.0, rel=0.1)  # flat at the variance σ²
    # Parseval: for white noise each mode carries σ²/N, so the binned modes carry σ²·(their share)
    share = float(sp["n_modes"].sum()) / sp.attrs["n_total_modes"]
    assert 0.5 < share < 0.85  # the disc inside k_max (dx < dy here, so k_max = 1/(2 dy))
    total = float((sp * sp["n_modes"]).sum()) / sp.attrs["n_total_modes"]
    assert total == pytest.approx(4.0 * share, rel=0.05)


def test_parseval_smooth_field_no_window():
    # a smooth periodic field: all power sits inside k_max, no window → exact variance
    lat, lon = _regional(32, 32)
    i = np.arange(32)
    f = (np.sin(2 * np.pi * 3 * i / 32)[None, :] + 0.5 * np.cos(2 * np.pi * 2 * i / 32)[:, None]
         + 0.3 * np.sin(2 * np.pi * (2 * i[:, None] + 5 * i[None, :]) / 32))
    sp = power_spectrum(_da(f, lat, lon), window="none")
    total = float((sp * sp["n_modes"]).sum()) / sp.attrs["n_total_modes"]
    assert total == pytest.approx(float(np.var(f)), rel=1e-9)


def test_spectrum_ratio_by_band():
    rng = np.random.default_rng(11)
    lat, lon = _regional(64, 64)
    ref = _da(rng.normal(size=(lat.size, lon.size)), lat, lon)
    r = spectrum_ratio_by_band(ref * 0.5, ref)
    np.testing.assert_allclose(r, 0.25, rtol=1e-12)  # power scales with the square
    assert (r["long_km"] == 2 * r["short_km"]).all()
    bands = octave_bands(power_spectrum(ref))
    assert bands[-1][1] == pytest.approx(float(power_spectrum(ref)["wavelength_km"].min()))
    # smoothing removes small-scale power: ratio < 1 in the shortest band, ≈ 1 in the longest
    smooth = ref.rolling(lon=3, center=True, min_periods=1).mean().rolling(lat=3, center=True, min_periods=1).mean()
    rs = spectrum_ratio_by_band(smooth, ref)
    assert float(rs.isel(band=-1)) < 0.2
    assert float(rs.isel(band=0)) > 0.6
    custom = spectrum_ratio_by_band(ref, ref, bands=[(1e9, 0.0)])
    assert float(custom[0]) == pytest.approx(1.0)


def test_power_spectrum_rejects_nans_and_tiny_fields():
    lat, lon = _regional(8, 8)
    f = np.zeros((8, 8))
    f[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        power_spectrum(_da(f, lat, lon))
    with pytest.raises(DataError, match="too small"):
        power_spectrum(_da(np.zeros((3, 8)), lat[:3], lon))
