"""The realism benchmark's numpy cores on tiny synthetic fields (and one check on the real data pack)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import realism as R  # noqa: E402

from zssd_engine.grids import Region  # noqa: E402


@pytest.fixture(scope="module")
def box():
    """A 32°x32° box of 1° points (cells ±0.5°) and its 5° smoothing matrices."""
    pts = R.box_points(Region(10, 42, 350, 22))  # crosses 0° E: lon 350 … 381 (the box's frame)
    return pts, R.smoothing_matrices(pts)


def test_box_points_and_coarse_cells(box):
    pts, (sl, so) = box
    assert pts.shape == (32, 32) and pts.lat[0] == 41 and pts.lat[-1] == 10
    assert pts.lon[0] == 350 and pts.lon[-1] == 381
    c = R.coarse_cells(pts)
    # 1° cells from 9.5 to 41.5 N and 349.5 to 381.5 E -> 5° cells 5..45 N, 345..385 E
    assert c.shape == (8, 8) and c.lat_bounds[0] == 45 and c.lat_bounds[-1] == 5 and c.lon_bounds[0] == 345
    # the smoothing keeps constants: rows sum to one
    assert np.allclose(sl.sum(1), 1) and np.allclose(so.sum(1), 1)


def test_detail_of_constant_and_smooth_fields(box):
    pts, sm = box
    assert np.abs(R.detail(np.full(pts.shape, 280.0), sm)).max() < 1e-9
    # a plane in latitude/longitude: bilinear of the 5° means reproduces it away from the box edges
    lat2, lon2 = np.meshgrid(pts.lat, pts.lon, indexing="ij")
    plane = 2.0 * lat2 - 1.0 * lon2
    d = R.detail(plane, sm)
    assert np.abs(d[4:-4, 4:-4]).max() < 0.1  # slopes 1-2 per degree: < 0.05° of position error
    # a 2° checkerboard is all sub-5° detail: the detail keeps nearly all its variance
    checker = np.where((np.arange(32)[:, None] // 1 + np.arange(32)[None, :] // 1) % 2 == 0, 1.0, -1.0)
    assert R.weighted_std(R.detail(checker, sm), 1.0) > 0.95 * R.weighted_std(checker, 1.0)
    # a wave 60° long is almost no detail
    wave = np.cos(2 * np.pi * lon2 / 60.0)
    assert R.weighted_std(R.detail(wave, sm)[4:-4, 4:-4], 1.0) < 0.05 * R.weighted_std(wave, 1.0)


def test_explained_fraction_of_linear_in_elevation_field(box):
    pts, sm = box
    rng = np.random.default_rng(0)
    dem = np.clip(rng.gamma(1.0, 400.0, pts.shape), 0, None)
    land = (rng.random(pts.shape) > 0.4).astype(float)
    dd, ld = R.detail(dem, sm), R.detail(land, sm)
    field = 288.0 - 6.5e-3 * dem + 1.5 * land + 0.02 * lat_ramp(pts)
    res, tot = R.regression_ss(R.detail(field, sm), [dd, ld])
    assert tot > 0 and 1 - res / tot > 0.999
    noise = rng.standard_normal(pts.shape)
    res, tot = R.regression_ss(R.detail(noise, sm), [dd, ld])
    assert 1 - res / tot < 0.1


def lat_ramp(pts):
    return np.broadcast_to(pts.lat[:, None], pts.shape)


def test_band_ratio_self_and_scaled():
    rng = np.random.default_rng(1)
    lat = 30.0 - 0.5 * np.arange(64)
    lon = 0.5 * np.arange(64)
    x = rng.standard_normal((3, 64, 64))
    bands = ((200.0, 100.0), (400.0, 200.0), (800.0, 400.0), (1600.0, 800.0))
    p = R.field_band_powers(x, lat, lon, bands)
    assert p.shape == (3, 4) and np.all(p > 0)
    assert np.allclose(R.power_ratio(p, p), 1.0)
    assert np.allclose(R.power_ratio(R.field_band_powers(2 * x, lat, lon, bands), p), 4.0)
    # a 300 km wave puts its power in the 200-400 km band
    ykm = 6371.0 * np.deg2rad(lat)
    wave = np.cos(2 * np.pi * ykm / 300.0)[:, None] * np.ones(64)[None, :]
    pw = R.field_band_powers(wave, lat, lon, bands)
    assert pw[1] > 20 * max(pw[0], pw[2], pw[3])
    # white noise: band variances sum to (about) the windowed variance of the bands' share of modes
    assert 0.3 < p.sum(-1).mean() < 1.0


def test_great_circle_and_radial_profile():
    assert abs(R.great_circle_km(0.0, 0.0, 1.0, 0.0) - 111.195) < 0.01
    assert abs(R.great_circle_km(60.0, 10.0, 60.0, 370.0)) < 1e-6
    r, m, n = R.radial_profile(np.array([1.0, 2.0, 3.0, 5.0]), np.array([10.0, 50.0, 150.0, 2000.0]))
    assert n[0] == 2 and n[1] == 1 and n[2:].sum() == 0  # 2000 km is outside 0-1500
    assert m[0] == 1.5 and r[0] == 30.0 and m[1] == 3.0 and np.isnan(m[2])


def test_half_radius_of_axisymmetric_vortex():
    """A Gaussian deficit of 40 hPa, e-folding 300 km, on a 0.25° grid: r½ = 300·√ln2 = 250 km."""
    lat = -5.0 - 0.25 * np.arange(128)
    lon = 98.0 + 0.25 * np.arange(128)
    c = (-21.0, 114.0)
    lat2, lon2 = np.meshgrid(lat, lon, indexing="ij")
    d = R.great_circle_km(c[0], c[1], lat2, lon2)
    msl = 1010.0 - 40.0 * np.exp(-(d / 300.0) ** 2)
    wind = 30.0 * (d / 100.0) * np.exp(1.0 - d / 100.0)  # peak 30 m/s at 100 km
    s = R.cyclone_structure(msl, wind, lat, lon, c)
    assert abs(s["central_deficit_hpa"] - 40.0) < 0.01 and abs(s["p_env_hpa"] - 1010.0) < 0.01
    assert abs(s["r_half_km"] - 300.0 * np.sqrt(np.log(2))) < 50.0  # within half a bin
    assert abs(s["deficit_300km_norm"] - np.exp(-1.0)) < 0.05
    assert s["deficit_800km_norm"] < 0.01
    assert abs(s["max_wind_500km"] - 30.0) < 0.2
    assert abs(s["wind_500km"] - 30.0 * 5 * np.exp(-4.0)) < 0.3
    # a wider vortex has a larger half radius
    wide = R.cyclone_structure(1010.0 - 40.0 * np.exp(-(d / 600.0) ** 2), wind, lat, lon, c)
    assert wide["r_half_km"] > 1.8 * s["r_half_km"]


def test_first_harmonic_in_local_solar_time():
    times = pd.date_range("2026-03-25", periods=24, freq="7h")
    lon = np.array([0.0, 45.0, 114.0, 250.0])
    lst = R.local_solar_hours(times, lon)
    assert lst.shape == (24, 4) and abs(lst[1, 2] - (7 + 114 / 15.0)) < 1e-9
    amp = np.array([1.0, 3.0, 5.0, 0.5])
    y = 280.0 + amp * np.cos(2 * np.pi * (lst - 15.0) / 24.0)
    assert np.allclose(R.first_harmonic_amplitude(y, lst), amp, atol=1e-9)
    # the same cycle in UTC instead of local time is not a cycle in local time at 114° E... but at 0° E it is
    y_utc = 280.0 + 3.0 * np.cos(2 * np.pi * (R.local_solar_hours(times, np.zeros(4)) - 15.0) / 24.0)
    got = R.first_harmonic_amplitude(y_utc, lst)
    assert abs(got[0] - 3.0) < 1e-9 and np.all(got[1:] < 3.0 + 1e-9)


def test_land_sea_contrast_and_defect_flag():
    lat = np.array([10.0, 9.0, 8.0])
    land = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=float)
    t = np.where(land > 0.5, 300.0, 295.0)[None] + np.array([0.0, 1.0])[:, None, None]
    assert np.allclose(R.land_sea_contrast(t, land, lat), 5.0)
    assert [R.is_defect(x) for x in (0.79, 0.8, 1.0, 1.25, 1.26, float("nan"), None)] == \
        ["yes", "no", "no", "no", "yes", "n/a", "n/a"]
    assert R.ratio(2.0, 4.0) == 0.5 and np.isnan(R.ratio(1.0, 0.0))


def test_rows_flag_defects():
    res = {"week": {"detail_std": {f"{k}/{v}": {"demo": 1.0, "real": 2.0} for k in ("land", "ocean") for v in R.VARS},
                    "explained": {v: {"demo": 0.5, "real": 0.5} for v in R.VARS},
                    "era5_bands": {v: [{"band_km": [500, 250], "demo": 1.0, "real": 1.1, "ratio": 1 / 1.1}]
                                   for v in R.VARS},
                    "contrast": {}, "diurnal": {}},
           "tigge": {v: [{"band_km": [200, 100], "demo": 3.0, "real": 1.0, "ratio": 3.0}] for v in R.VARS},
           "cyclone": {"keys": ["r_half_km"], "demo_mean": {"r_half_km": 100.0}, "real": {"r_half_km": 120.0}}}
    rows = R.build_rows(res)
    by = {(r["measure"].split(",")[0], r["variable"]): r for r in rows}
    assert by[("sub-5° detail std", "t2m")]["defect"] == "yes" and by[("sub-5° detail std", "t2m")]["ratio"] == 0.5
    assert by[("detail variance explained by elevation+land detail", "msl")]["defect"] == "no"
    assert by[("TC radius of half msl deficit (km)", "msl")]["defect"] == "no"
    assert all(r["defect"] == "yes" for r in rows if "TIGGE" in r["measure"])


@pytest.mark.skipif(not __import__("zssd_engine.real_sources", fromlist=["ERA5_WEEK"]).ERA5_WEEK.exists(),
                    reason="real data pack (ERA5 week) not built")
def test_demo_at_points_equals_subsampled_box_and_real_tc_is_sane():
    from zssd_engine.demo_world import DemoWorld

    world = DemoWorld(seed=0)
    assert R.check_points(world, "2026-03-26T19:00", Region(-20, -12, 176, 184)) < 1e-4  # across the dateline
    out = R.measure_cyclones(world, 1)
    real = out["real"]
    assert 25.0 < real["central_deficit_hpa"] < 70.0 and abs(real["centre"][0] + 21) < 3
    assert 0 < real["r_half_km"] < 600 and len(out["demo_cases"]) == 1


def test_open_ocean_rows_are_counted():
    """The open-ocean boxes' ERA5-week ratios are realism rows of their own (TIGGE's stay a diagnostic)."""
    res = {"week": {"detail_std": {f"{k}/{v}": {"demo": 1.0, "real": 1.0} for k in ("land", "ocean") for v in R.VARS},
                    "explained": {v: {"demo": 0.5, "real": 0.5} for v in R.VARS},
                    "era5_bands": {v: [] for v in R.VARS}, "contrast": {}, "diurnal": {}},
           "tigge": {v: [] for v in R.VARS},
           "cyclone": {"keys": [], "demo_mean": {}, "real": {}},
           "ocean_only": {"boxes": ["North Pacific"],
                          "detail_std_ocean": {v: {"demo": 1.0, "real": 1.0} for v in R.VARS},
                          "era5_bands": {v: [{"band_km": [500, 250], "demo": 11.0, "real": 1.0, "ratio": 11.0}]
                                         for v in R.VARS}, "tigge": {}}}
    rows = [r for r in R.build_rows(res) if r["measure"].startswith("open-ocean boxes")]
    assert len(rows) == 8
    assert sum(r["defect"] == "yes" for r in rows) == 4 and all(r["ratio"] == 11.0 for r in rows if "power" in r["measure"])


def test_prior_source_reads_its_box_at_the_points(tiny):
    """Prior-only samples in the demo world's place: the 1° points and the 0.25° box of one (time, box) are one
    sample (so the detail and spectra of a box agree), drawn once; a new time is a new sample."""
    src = R.PriorSource(tiny, steps=2, seed=0)
    reg = Region(10, 26, 20, 36)
    assert R.check_points(src, "2022-05-01T06:00", reg) < 1e-9
    assert src.n_samples == 1
    pts = R.box_points(reg)
    a = src.fields("2022-05-01T06:00", pts)
    b = src.fields("2022-05-01T12:00", pts)
    assert src.n_samples == 2 and a["t2m"].shape == pts.shape and not np.allclose(a["t2m"], b["t2m"])
    assert all(np.isfinite(a[v]).all() for v in R.VARS)


def test_calibration_loss_steps_and_constants_reach_the_world():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import calibrate_demo_world as C

    from zssd_engine.demo_world import DemoWorld

    rows = [{"ratio": 1.0, "defect": "no"}, {"ratio": 1.12 * np.e, "defect": "yes"}, {"ratio": None, "defect": "n/a"}]
    assert C.loss(rows) == pytest.approx(1.0)
    for name, p in C.PARAMS.items():  # steps stay in bounds
        for v in C.candidates(name, p.hi, 0.5) + C.candidates(name, p.lo, 0.5):
            assert p.lo <= v <= p.hi
    before = C.current_values(["MESO_MSL_SEA"])
    reg = Region(20, 28, -160, -152)  # open Pacific
    w = DemoWorld(0)
    a = w.fields("2019-03-01T00:00", reg)["msl"]
    try:
        C.apply({"MESO_MSL_SEA": before["MESO_MSL_SEA"] + 0.5})
        b = w.fields("2019-03-01T00:00", reg)["msl"]
    finally:
        C.apply(before)
    assert np.abs(b - a).max() > 10.0
    np.testing.assert_array_equal(w.fields("2019-03-01T00:00", reg)["msl"], a)


def test_plot_of_prior_only_samples_has_no_demo_cyclone_profile(tmp_path):
    """Prior-only runs carry NaN scalars for the demo cyclone profile (no cyclone at the real one's place): the
    figure draws the real profile alone instead of failing on the shapes (it raised ValueError before)."""
    pytest.importorskip("matplotlib")
    bands = [{"band_km": [400, 200], "ratio": 1.0}, {"band_km": [200, 100], "ratio": 0.9}]
    r = [50.0, 150.0, 250.0]
    real = {"profile_r_km": r, "profile_deficit_hpa": [30.0, 10.0, 5.0], "central_deficit_hpa": 40.0,
            "profile_wind": [20.0, 15.0, 10.0]}
    payload = {"prior": {"checkpoint": "x"},
               "results": {"tigge": {v: bands for v in R.VARS}, "week": {"era5_bands": {v: bands for v in R.VARS}},
                           "cyclone": {"real": real, "demo_mean": {"profile_deficit_norm": float("nan"),
                                                                   "profile_wind": float("nan")}}}}
    png = tmp_path / "p.png"
    assert R.plot(payload, png) and png.stat().st_size > 0
    payload["results"]["cyclone"]["demo_mean"] = {"profile_deficit_norm": [0.7, 0.3, 0.1], "profile_wind": [18, 14, 9]}
    assert R.plot(payload, tmp_path / "d.png")


def test_terrain_slope_holds_land_fraction_fixed():
    """The elevation slope of a detail field, with the land-fraction detail (correlated with the relief) partialled
    out: recovers the true coefficient where a plain fit on the elevation alone would be pulled by the land term."""
    rng = np.random.default_rng(3)
    land = rng.normal(size=500)
    elev = 0.8 * land + 0.6 * rng.normal(size=500)           # km, correlated with land
    y = 2.0 * elev - 3.0 * land + 0.05 * rng.normal(size=500) + 7.0
    num, den = R.elevation_slope_parts(y, elev, land)
    assert num / den == pytest.approx(2.0, abs=0.02)
    assert abs(np.polyfit(elev, y, 1)[0] - 2.0) > 1.0           # the naive slope is far off
    # pooling: the parts of two halves add up to the whole's slope
    a, b = R.elevation_slope_parts(y[:250], elev[:250], land[:250]), R.elevation_slope_parts(y[250:], elev[250:],
                                                                                                land[250:])
    assert (a[0] + b[0]) / (a[1] + b[1]) == pytest.approx(2.0, abs=0.03)


def test_terrain_slope_rows_are_counted():
    res = {"week": {"detail_std": {f"{k}/{v}": {"demo": 1.0, "real": 1.0} for k in ("land", "ocean") for v in R.VARS},
                    "explained": {v: {"demo": 0.5, "real": 0.5} for v in R.VARS},
                    "era5_bands": {v: [] for v in R.VARS}, "contrast": {}, "diurnal": {},
                    "terrain_slope": {"t2m": {"demo": -6.5, "real": -5.7}, "msl": {"demo": 0.5, "real": 1.8}}},
           "tigge": {v: [] for v in R.VARS}, "cyclone": {"keys": [], "demo_mean": {}, "real": {}}}
    rows = {r["variable"]: r for r in R.build_rows(res) if r["measure"].startswith("detail per km of elevation")}
    assert rows["t2m"]["defect"] == "no" and rows["msl"]["defect"] == "yes"
    assert rows["msl"]["ratio"] == pytest.approx(0.5 / 1.8)
