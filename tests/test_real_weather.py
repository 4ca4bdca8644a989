"""Real weather: the ERA5 week, TIGGE/GFS GRIB, the 1996 storm, the lapse baseline and the era5 tasks."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from zssd_engine import pipeline as P
from zssd_engine.errors import DataError
from zssd_engine.grids import GridError, LatLonGrid, Region
from zssd_engine.real_sources import (ERA5_WEEK, GFS_FILE, TIGGE_FILE, era5_coarse, era5_week, open_storm_1996,
                                 real_cyclones)

from conftest import TC_REGION, TC_TIME, needs_real_weather

pytestmark = needs_real_weather


# ------------------------------------------------------------------ readers
def test_era5_week_opens_unchanged_with_time_index():
    from zssd_engine.readers import open_era5

    ds = open_era5(ERA5_WEEK)
    assert list(ds.data_vars) == ["t2m", "msl", "u10", "v10"]
    assert ds.sizes == {"time": 24, "lat": 181, "lon": 360}
    assert pd.Timestamp(ds.time.values[0]) == pd.Timestamp("2026-03-25T00:00")
    assert pd.Timestamp(ds.time.values[-1]) == pd.Timestamp("2026-03-31T23:00")
    # time_index (hours since 1940-01-01) kept beside the decoded time
    hours = (pd.Timestamp(ds.time.values[5]) - pd.Timestamp("1940-01-01")) / pd.Timedelta("1h")
    assert int(ds["time_index"].values[5]) == hours
    assert float(ds.lat[0]) == 90 and float(ds.lon[-1]) == 359
    assert ds.u10.attrs["units"] == "m s-1"  # m s**-1 in the store, canonical here


def test_era5_store_with_a_missing_variable_is_named(tmp_path):
    from zssd_engine.readers import open_era5

    store = tmp_path / "week.zarr"
    shutil.copytree(ERA5_WEEK, store)
    shutil.rmtree(store / "msl")
    ds = open_era5(store)
    assert "msl" not in ds and "t2m" in ds
    with pytest.raises(DataError, match=r"week\.zarr.*msl"):
        open_era5(store, require=("t2m", "msl"))


def test_bad_time_index_units_are_refused(tmp_path):
    from zssd_engine.readers import open_era5

    ds = xr.Dataset({"t2m": (("time_index", "latitude", "longitude"), np.full((2, 2, 3), 280.0, np.float32),
                             {"units": "K"})},
                    coords={"time_index": [0, 6], "latitude": [1.0, 0.0], "longitude": [0.0, 1.0, 2.0]},
                    attrs={"time_units": "days after the flood"})
    ds.to_zarr(tmp_path / "bad.zarr", zarr_format=3)
    with pytest.raises(DataError, match="time_index"):
        open_era5(tmp_path / "bad.zarr")


def test_reduced_gaussian_rows_interpolate_per_row():
    from zssd_engine.grib import reduced_to_rectilinear

    # three rows with their own numbers of longitudes; the field is cos(lon) on every row
    counts, lats = (4, 8, 16), (45.0, 0.0, -45.0)
    lon = np.concatenate([np.arange(n) * 360.0 / n for n in counts])
    lat = np.concatenate([[la] * n for la, n in zip(lats, counts)])
    val = np.cos(np.deg2rad(lon)) + lat / 100
    out, rlat, rlon = reduced_to_rectilinear(val, lat, lon)
    assert out.shape == (3, 16) and list(rlat) == [45.0, 0.0, -45.0] and rlon[1] == pytest.approx(22.5)
    np.testing.assert_allclose(out[2], np.cos(np.deg2rad(rlon)) - 0.45, atol=1e-12)  # the 16-point row: exact
    # the 4-point row is linear between its own points 90° apart (not the 16-point row's)
    assert out[0, 2] == pytest.approx(0.5 * (1 + 0) + 0.45)


def test_tigge_reduced_gaussian_opens_on_its_rows():
    from zssd_engine.grib import open_grib
    from zssd_engine.grids import gaussian_latitudes

    ds = open_grib(TIGGE_FILE, statics=True)
    assert ds.sizes == {"time": 1, "lat": 400, "lon": 800}
    np.testing.assert_allclose(ds.lat.values, gaussian_latitudes(400)[0], atol=1e-3)  # N200 rows kept
    assert pd.Timestamp(ds.time.values[0]) == pd.Timestamp("2007-05-10T00:00")  # the valid time
    assert {"orog", "lsm"} <= set(ds.data_vars) and float(ds.orog.max()) > 5000
    assert 94000 < float(ds.msl.min()) < 100000


def test_gfs_grib2_opens_with_our_names():
    from zssd_engine.readers import open_era5

    ds = open_era5(GFS_FILE)  # any GRIB goes through the same reader
    assert list(ds.data_vars) == ["t2m", "msl", "u10", "v10"]
    assert ds.sizes == {"time": 1, "lat": 73, "lon": 144}


def _grib(path, messages):
    import eccodes

    with open(path, "wb") as f:
        for sample, keys in messages:
            h = eccodes.codes_grib_new_from_samples(sample)
            for k, v in keys.items():
                if k == "values":  # a constant field of the sample's size
                    eccodes.codes_set_values(h, np.full(eccodes.codes_get_size(h, "values"), float(v)))
                else:
                    eccodes.codes_set(h, k, v)
            f.write(eccodes.codes_get_message(h))
            eccodes.codes_release(h)


def test_grib_unknown_grid_type_and_several_levels_are_refused(tmp_path):
    from zssd_engine.grib import open_grib

    rot = tmp_path / "rotated.grib2"
    _grib(rot, [("rotated_ll_sfc_grib2", {"shortName": "2t"})])
    with pytest.raises(DataError, match=r"unsupported GRIB grid type 'rotated_ll'.*rotated\.grib2"):
        open_grib(rot)
    # in GRIB, 2t exists at 2 m only (ecCodes calls the same parameter at 10 m "t"): several forecast steps of
    # one variable are the case a user meets
    lev = tmp_path / "steps.grib2"
    _grib(lev, [("regular_ll_sfc_grib2", {"shortName": "2t", "typeOfLevel": "heightAboveGround", "level": 2,
                                           "step": st, "values": 280.0}) for st in (0, 6)])
    with pytest.raises(DataError, match=r"2t has several step.*steps\.grib2"):
        open_grib(lev)


def test_storm_1996_reader():
    ds = open_storm_1996()
    assert ds.sizes == {"time": 64, "lat": 33, "lon": 36}
    assert pd.Timestamp(ds.time.values[0]) == pd.Timestamp("1996-01-05T00:00")
    assert pd.Timestamp(ds.time.values[-1]) == pd.Timestamp("1996-01-20T18:00")
    assert 95000 < float(ds.msl.min()) < 97000 and "inferred" in ds.msl.attrs["units_note"]


# ------------------------------------------------------------------ sources
def test_era5_x20_is_the_mean_of_the_1deg_points():
    week = era5_week()
    coarse = era5_coarse(5.0)
    # the 5° cell 0..5°E x 10..5°N: 1° points at lat 6..9 and lon 1..4 lie inside; points on the edges count half
    lat = week.lat.values
    lon = week.lon.values
    w_lat = np.where(np.isin(lat, [5.0, 10.0]), 0.5, np.where((lat > 5) & (lat < 10), 1.0, 0.0))
    w_lat = w_lat * np.cos(np.deg2rad(lat))  # cos φ area weights (per point, at its own latitude)
    w_lon = np.where(np.isin(lon, [0.0, 5.0]), 0.5, np.where((lon > 0) & (lon < 5), 1.0, 0.0))
    x = week.t2m.values[4]
    want = (w_lat[:, None] * w_lon[None, :] * x).sum() / (w_lat.sum() * w_lon.sum())
    got = coarse.t2m.sel(lat=7.5, lon=2.5).values[4]
    assert got == pytest.approx(want, abs=0.02)  # exact up to the cells' sin-φ vs cos-φ weights


def test_paired_real_case_scores_at_the_1deg_points():
    case = P.prepare_case("ERA5-x20", TC_TIME, TC_REGION)
    assert case.paired and case.real_reference
    ref = case.reference
    assert ref.sizes == {"lat": 32, "lon": 32} and "ERA5 (real, 1° points)" in ref.attrs["source"]
    step = era5_week().sel(time=TC_TIME)
    np.testing.assert_array_equal(ref.msl.values, step.msl.sel(lat=ref.lat, lon=ref.lon).values)
    out = P.run_method(case, "bilinear")
    from zssd_engine.metrics import at_reference_points, score

    picked = at_reference_points(out["t2m"].isel(time=0), ref["t2m"])
    assert picked.shape == (32, 32)
    np.testing.assert_array_equal(picked.lat.values, ref.lat.values)
    s = score(out[["t2m"]], ref[["t2m"]])["t2m"]
    assert s.mae == pytest.approx(float(np.abs(picked.values - ref.t2m.values).mean()), rel=0.05)
    assert "credit" in out.attrs and "CC-BY 4.0" in out.attrs["credit"]


def test_real_sources_bad_input():
    with pytest.raises(DataError, match=r"outside the time range.*era5_week\.zarr.*2026-03-25"):
        P.prepare_case("ERA5-x20", "2026-04-05T00:00", TC_REGION)
    with pytest.raises(GridError, match="not inside the NCEP-storm-1996 domain"):
        P.prepare_case("NCEP-storm-1996", "1996-01-07T12:00", "0,30,100,130")
    case = P.prepare_case("ERA5-x20", TC_TIME, TC_REGION)
    with pytest.raises(DataError, match="BCSD cannot be trained for ERA5-x20"):
        P.baseline(case, "bcsd")


@pytest.mark.parametrize("source,time,region", [("NCEP-storm-1996", "1996-01-07T12:00", "30,50,-100,-70"),
                                                ("GFS-2.5deg", "2011-01-15T12:00", "30,62,-5,27")])
def test_unpaired_real_sources_downscale(source, time, region):
    case = P.prepare_case(source, time, region)
    assert not case.paired and case.gcm.attrs["kind"] == "real"
    out, bil = P.run_method(case, "lapse"), P.run_method(case, "bilinear")
    assert np.isfinite(out["t2m"].values).all() and out.attrs["paired"] == 0
    # the lapse rate changes t2m only, by the elevation detail: zero mean over the region, non-zero on land
    xr.testing.assert_identical(out["msl"], bil["msl"])
    detail = (out["t2m"] - bil["t2m"]).values
    assert np.abs(detail).max() > 0.5 and abs(float(detail.mean())) < 0.5 * float(np.abs(detail).mean())


def test_real_cyclone_is_found():
    cases = real_cyclones()
    assert cases, "the real cyclone of the ERA5 week was not found"
    c = cases[0]
    assert c.real and c.source == "ERA5-x20" and c.name.startswith("ERA5-TC")
    assert -23 < c.peak_lat < -17 and 111 < c.peak_lon < 118  # off north-west Australia
    assert c.min_pressure < 97500 and "2026-03-26" <= f"{c.peak_time:%Y-%m-%d}" <= "2026-03-27"


# ------------------------------------------------------------------ lapse baseline
def test_lapse_rate_downscale_adds_the_elevation_detail():
    from zssd_engine.baselines import lapse_rate_downscale

    fine = LatLonGrid(np.arange(9.875, 0, -0.25), np.arange(0.125, 10, 0.25), "fine")
    coarse = xr.Dataset({"t2m": (("lat", "lon"), np.full((2, 2), 280.0)), "msl": (("lat", "lon"), np.full((2, 2), 1e5))},
                        coords={"lat": [7.5, 2.5], "lon": [2.5, 7.5]})
    z = np.zeros(fine.shape)
    z[:20, :20] = 1000.0  # a 1 km plateau filling the north-west coarse cell
    zc = np.array([[1000.0, 0.0], [0.0, 0.0]])
    out = lapse_rate_downscale(coarse, fine, z, zc)
    from zssd_engine.operators import bilinear

    import torch

    back = bilinear(LatLonGrid(np.array([7.5, 2.5]), np.array([2.5, 7.5])), fine, dtype=torch.float64)(
        torch.as_tensor(zc)).numpy()
    np.testing.assert_allclose(out["t2m"].values, 280.0 - 6.5e-3 * (z - back), atol=1e-4)
    np.testing.assert_allclose(out["msl"].values, 1e5)  # other variables: bilinear
    assert out.attrs["downscaling_method"] == "lapse"


def test_lapse_beats_bilinear_on_mountain_t2m():
    case = P.prepare_case("ERA5-x20", "2026-03-26T05:00", "15,47,70,102")  # Himalaya / Tibet
    from zssd_engine.metrics import score

    s = {m: score(P.run_method(case, m)[["t2m"]], case.reference[["t2m"]])["t2m"].mae for m in ("bilinear", "lapse")}
    assert s["lapse"] < 0.8 * s["bilinear"]


# ------------------------------------------------------------------ evaluation and CLI
def test_real_evaluation_cases_are_fixed_and_skip_tuning_times():
    from zssd_engine.evaluate import REAL_REGIONS, REAL_TUNING_TIMES, real_evaluation_cases

    cases = real_evaluation_cases(24)
    assert len(cases) == 24 and cases == real_evaluation_cases(24)
    times = [pd.Timestamp(t) for t in era5_week().time.values]
    assert not {times.index(c.time) for c in cases} & set(REAL_TUNING_TIMES)
    assert sum(c.name.startswith("ERA5-TC") for c in cases) == 3
    kinds = {r[1] for r in REAL_REGIONS}
    assert kinds == {"mountains", "coast", "plains", "ocean"}
    assert len({c.name for c in cases if not c.name.startswith("ERA5-TC")}) == len(REAL_REGIONS)


def test_real_tuning_cases_use_only_tuning_times_and_every_region():
    from zssd_engine.evaluate import REAL_REGIONS, REAL_TUNING_TIMES, real_evaluation_cases, real_tuning_cases

    tuning = real_tuning_cases()
    times = [pd.Timestamp(t) for t in era5_week().time.values]
    assert {times.index(c.time) for c in tuning} == set(REAL_TUNING_TIMES)
    assert [c.region.as_text() for c in tuning] == [Region(*r[2:]).as_text() for r in REAL_REGIONS]
    scored = real_evaluation_cases(48)
    assert not {c.time for c in tuning} & {c.time for c in scored}
    assert not any(c.cyclone for c in tuning)


def test_evaluate_era5_task_reports_bcsd_unavailable(tmp_path):
    from zssd_engine.cli import main

    out = tmp_path / "e.json"
    assert main(["evaluate", "--task", "era5-x20", "--methods", "bilinear,lapse,bcsd", "--cases", "4",
                 "--json", str(out), "--quiet"]) == 0
    import json

    res = json.loads(out.read_text())
    assert res["cases"] == 4 and set(res["results"]["t2m"]) == {"bilinear", "lapse"}
    assert "not faked" in res["unavailable"]["bcsd"] and "1° points" in res["score_definition"]
    assert len(res["tuning_times_excluded"]) == 4


def test_downscale_cli_on_era5_x20_with_a_southern_region(tmp_path):
    from zssd_engine.cli import main

    out = tmp_path / "F.nc"
    assert main(["downscale", "--gcm", "ERA5-x20", "--time", TC_TIME, "--region", TC_REGION, "--method", "lapse",
                 "--out", str(out)]) == 0
    ds = xr.open_dataset(out)
    assert ds.attrs["Conventions"].startswith("CF") and "ERA5 (real, 1° points)" in ds.attrs["reference"]
    assert "Copernicus" in ds.attrs["credit"] and ds.sizes["lat"] == 128
    bad = tmp_path / "G.nc"
    assert main(["downscale", "--gcm", "ERA5-x20", "--time", "2026-04-05", "--region", TC_REGION, "--method",
                 "lapse", "--out", str(bad)]) == 2
    assert not bad.exists()


def test_real_inputs_take_the_priors_real_guidance_table(tmp_path, monkeypatch):
    """ζ is looked up per prior and per kind of input: a real source gets the prior's real table, the demo
    world its demo table; an explicit ζ still wins."""
    import zssd_engine.samplers.guidance_table as C

    monkeypatch.setattr(C, "TUNED_GUIDANCE_FILE", tmp_path / "guidance_defaults.json")
    prior = P.load_prior("tiny")
    C.install_tuned_table({"checkpoint_sha256": prior.sha256, "domain": "demo", "scales": {"zssd": {"2": 1.5}}})
    C.install_tuned_table({"checkpoint_sha256": prior.sha256, "domain": "real", "scales": {"zssd": {"2": 7.0}}})
    real = P.prepare_case("ERA5-x20", TC_TIME, "-25,-9,100,116")
    demo = P.prepare_case("x20", "2021-06-01T00:00", "-25,-9,100,116")
    assert (real.domain, demo.domain) == ("real", "demo")
    assert P.input_domain("MPI-ESM-LR") == "real" and P.input_domain("MIROC6") == "demo"
    zeta = {c.domain: float(P.run_method(c, "zssd", prior=prior, steps=2).attrs["guidance_scale"])
            for c in (real, demo)}
    assert zeta == {"real": 7.0, "demo": 1.5}
    assert float(P.run_method(real, "zssd", prior=prior, steps=2, guidance_scale=0.5).attrs["guidance_scale"]) == 0.5
