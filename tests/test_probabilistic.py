"""Ensemble scores (CRPS, energy score, spread–skill, rank histogram) and cyclone metrics."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from zssd_engine.cyclones import cyclone_metrics
from zssd_engine.probabilistic import (crps, energy_score, ensemble_scores, rank_histogram, reliability_index,
                                  spread_skill)

LAT = np.linspace(-10.0, 10.0, 41)
LON = np.linspace(100.0, 120.0, 41)


def _da(a, member=False):
    dims = ("member", "lat", "lon") if member else ("lat", "lon")
    return xr.DataArray(np.asarray(a, dtype=np.float64), dims=dims, coords={"lat": LAT, "lon": LON})


def test_fair_crps_matches_a_hand_computation():
    # at every point: members 0, 1, 3 and reference 2
    x = np.stack([np.zeros((41, 41)), np.ones((41, 41)), np.full((41, 41), 3.0)])
    y = np.full((41, 41), 2.0)
    m = 3
    mean_abs = (2 + 1 + 1) / 3
    pair_sum = 2 * (1 + 3 + 2)  # Σ_ij |x_i − x_j| over ordered pairs
    want = mean_abs - pair_sum / (2 * m * (m - 1))
    assert crps(_da(x, True), _da(y)) == pytest.approx(want, rel=1e-12)
    # one member: CRPS = MAE (cos φ weighted; here a constant error)
    assert crps(_da(x[:1], True), _da(y)) == pytest.approx(2.0)


def test_energy_score_of_one_member_is_the_area_rmse():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 41, 41))
    y = rng.normal(size=(41, 41))
    w = np.cos(np.deg2rad(LAT))[:, None] * np.ones((1, 41))
    rmse = np.sqrt((w * (x[0] - y) ** 2).sum() / w.sum())
    assert energy_score(_da(x, True), _da(y)) == pytest.approx(rmse, rel=1e-10)
    # a wider ensemble around the truth scores better than one far member
    many = y[None] + rng.normal(scale=0.3, size=(8, 41, 41))
    assert energy_score(_da(many, True), _da(y)) < energy_score(_da(x, True), _da(y))


def _calibrated(m: int, seed: int = 0):
    """Truth and members drawn from the same predictive distribution N(mu, 1) at each point."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(scale=3.0, size=(41, 41))
    y = mu + rng.normal(size=(41, 41))
    x = mu[None] + rng.normal(size=(m, 41, 41))
    return _da(x, True), _da(y)


def test_spread_skill_of_a_calibrated_ensemble_is_one_and_detects_dispersion():
    x, y = _calibrated(8)
    assert spread_skill(x, y)["ratio"] == pytest.approx(1.0, abs=0.06)
    mean = x.mean("member")
    narrow = mean + 0.3 * (x - mean)
    assert spread_skill(narrow, y)["ratio"] < 0.5  # under-dispersive
    with pytest.raises(ValueError, match="at least 2 members"):
        spread_skill(x.isel(member=[0]), y)


def test_rank_histogram_is_flat_for_calibrated_draws_and_u_shaped_when_narrow():
    x, y = _calibrated(8, seed=2)
    c = rank_histogram(x, y)
    assert c.sum() == 41 * 41 and c.size == 9
    assert reliability_index(c) < 0.12
    mean = x.mean("member")
    c2 = rank_histogram(mean + 0.2 * (x - mean), y)
    assert c2[0] + c2[-1] > 0.5 * c2.sum() and reliability_index(c2) > 0.6
    assert np.array_equal(c, rank_histogram(x, y))  # ties broken reproducibly


def test_ensemble_scores_of_a_baseline_have_no_spread():
    x, y = _calibrated(1)
    s = ensemble_scores(x, y)
    assert set(s) == {"crps", "energy"}


def _vortex(lat0, lon0, depth_pa=4000.0, r0_km=150.0):
    lat2, lon2 = np.meshgrid(LAT, LON, indexing="ij")
    d = 111.195 * np.hypot(lat2 - lat0, (lon2 - lon0) * np.cos(np.deg2rad(lat0)))
    p = 101000.0 - depth_pa * np.exp(-(d / (2 * r0_km)) ** 2)
    # tangential wind peaking at r0: speed = vmax * (d/r0) * exp(1 - d/r0)
    s = 40.0 * (d / r0_km) * np.exp(1 - d / r0_km)
    ang = np.arctan2(lat2 - lat0, (lon2 - lon0) * np.cos(np.deg2rad(lat0)))
    return p, (-s * np.sin(ang), s * np.cos(ang))


def test_cyclone_metrics_of_a_vortex_at_a_known_offset():
    p_ref, uv_ref = _vortex(0.0, 110.0)
    p_pred, uv_pred = _vortex(1.5, 111.0, depth_pa=3000.0)
    r = cyclone_metrics(p_pred, p_ref, LAT, LON, uv_pred, uv_ref, near=(0.0, 110.0))
    want_km = 111.195 * np.degrees(np.arccos(np.cos(np.radians(1.5)) * np.cos(np.radians(1.0))))
    assert r["position_error_km"] == pytest.approx(want_km, rel=0.01)
    assert r["pressure_error_hpa"] == pytest.approx(10.0, abs=0.01)
    assert r["rmw_ref_km"] == pytest.approx(150.0, abs=40.0)
    assert abs(r["max_wind_error"]) < 2.0
    assert r["detected"] and not r["hit"]  # within 300 km, but 10 hPa too shallow for a hit
    r2 = cyclone_metrics(_vortex(0.5, 110.5, depth_pa=3500.0)[0], p_ref, LAT, LON, near=(0.0, 110.0))
    assert r2["hit"] and r2["detected"] and np.isnan(r2["max_wind_error"])
    flat = np.full_like(p_ref, 101000.0) + 1e-3 * np.arange(p_ref.size).reshape(p_ref.shape)
    assert not cyclone_metrics(flat, p_ref, LAT, LON, near=(0.0, 110.0))["detected"]
