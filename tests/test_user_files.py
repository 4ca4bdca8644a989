"""A scientist's own files: zssd downscale / evaluate / batch --gcm-file (NetCDF, GRIB, Zarr)."""

from __future__ import annotations

import json

import cftime
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from zssd_engine.cli import main
from zssd_engine.real_sources import GFS_FILE, era5_coarse, era5_week

from conftest import TC_REGION as REGION, TC_TIME as TIME, needs_real_weather

pytestmark = needs_real_weather


@pytest.fixture(scope="module")
def x20_nc(tmp_path_factory):
    """The shipped real ERA5 week averaged to 5°, written as an ordinary NetCDF (ERA5 names)."""
    p = tmp_path_factory.mktemp("files") / "era5_x20.nc"
    era5_coarse(5.0).to_netcdf(p)
    return p


def _down(out, *src, method="bilinear", time=TIME, region=REGION, extra=()):
    return main(["downscale", *src, "--time", time, "--region", region, "--method", method, "--out", str(out),
                 "--checkpoint", "tiny", "--steps", "3", *extra])


@pytest.mark.parametrize("method", ["bilinear", "zssd"])
def test_gcm_file_reproduces_the_builtin_source_exactly(tmp_path, x20_nc, method):
    a, b = tmp_path / "a.nc", tmp_path / "b.nc"
    assert _down(a, "--gcm", "ERA5-x20", method=method) == 0
    assert _down(b, "--gcm-file", str(x20_nc), method=method) == 0
    da, db = xr.open_dataset(a), xr.open_dataset(b)
    for v in ("t2m", "msl", "u10", "v10"):
        np.testing.assert_array_equal(da[v].values, db[v].values)
    prov = json.loads(db.attrs["provenance"])
    assert prov["gcm"] == "file:era5_x20" and prov["gcm_selected_time"] == "2026-03-26T05:00:00"


def test_cmip_names_any_calendar_and_partial_variables(tmp_path, capsys):
    """A CMIP ``tas``-only file in a noleap calendar, in degC: mapped, converted, the rest left unguided."""
    c = era5_coarse(5.0).isel(time=slice(0, 3))
    times = [cftime.DatetimeNoLeap(2026, 3, 25, h) for h in (0, 7, 14)]
    tas = xr.Dataset({"tas": (("time", "lat", "lon"), c["t2m"].values - 273.15, {"units": "degC"})},
                     coords={"time": ("time", times), "lat": c.lat.values, "lon": c.lon.values})
    f = tmp_path / "tas_day_MYMODEL.nc"
    tas.to_netcdf(f)
    out = tmp_path / "o.nc"
    assert _down(out, "--gcm-file", str(f), method="zssd", time="2026-03-25T06:00", extra=["--time-tolerance", "2h"]) == 0
    err = capsys.readouterr().err
    assert "has no msl, u10, v10" in err and "unguided" in err
    ds = xr.open_dataset(out)
    assert ds.attrs["unguided_variables"] == "msl,u10,v10"
    assert json.loads(ds.attrs["provenance"])["gcm_selected_time"].startswith("2026-03-25 07:00")
    # the nearest step must lie within the tolerance, and the file's range is named when outside
    bad = tmp_path / "bad.nc"
    assert _down(bad, "--gcm-file", str(f), time="2026-03-25T03:00", extra=["--time-tolerance", "1h"]) == 2
    assert _down(bad, "--gcm-file", str(f), time="2026-04-02T00:00") == 2
    err = capsys.readouterr().err
    assert "no time step" in err and "outside the time range" in err and "2026-03-25" in err
    assert not bad.exists()


def test_grib_and_zarr_and_era5_short_names(tmp_path):
    out = tmp_path / "g.nc"
    assert _down(out, "--gcm-file", str(GFS_FILE), time="2011-01-15T12:00", region="30,62,-5,27") == 0
    assert set(xr.open_dataset(out).data_vars) >= {"t2m", "msl", "u10", "v10"}
    z = tmp_path / "x20.zarr"
    era5_coarse(5.0).rename({"t2m": "2t", "u10": "10u", "v10": "10v"}).to_zarr(z)  # ERA5 GRIB-style short names
    out2 = tmp_path / "z.nc"
    assert _down(out2, "--gcm-file", str(z)) == 0
    assert set(xr.open_dataset(out2).data_vars) >= {"t2m", "u10", "v10", "msl"}


def _bad_file(tmp_path, kind: str):
    lat, lon = np.arange(-40.0, 1.0, 5.0), np.arange(95.0, 140.0, 5.0)
    t = pd.DatetimeIndex(["2026-03-26T05:00"])
    field = np.full((1, lat.size, lon.size), 290.0, np.float32)
    if kind == "no-latlon":
        ds = xr.Dataset({"tas": (("time", "y", "x"), field, {"units": "K"})}, coords={"time": t})
    elif kind == "curvilinear":
        la, lo = np.meshgrid(lat, lon, indexing="ij")
        ds = xr.Dataset({"tas": (("time", "y", "x"), field, {"units": "K"})},
                        coords={"time": t, "lat": (("y", "x"), la), "lon": (("y", "x"), lo)})
    elif kind == "nan":
        ds = xr.Dataset({"tas": (("time", "lat", "lon"), np.full_like(field, np.nan), {"units": "K"})},
                        coords={"time": t, "lat": lat, "lon": lon})
        ds["tas"].values[0, 0, 0] = 290.0  # finite somewhere, but not over the region
    elif kind == "units":
        ds = xr.Dataset({"tas": (("time", "lat", "lon"), field, {"units": "furlongs"})},
                        coords={"time": t, "lat": lat, "lon": lon})
    p = tmp_path / f"{kind}.nc"
    ds.to_netcdf(p)
    return p


@pytest.mark.parametrize("kind,message", [("no-latlon", "no 'lat' coordinate"),
                                          ("curvilinear", "only rectilinear lat/lon grids are supported"),
                                          ("nan", "no finite value over region"),
                                          ("units", "unsupported unit")])
def test_bad_files_get_one_clear_message_and_no_output(tmp_path, capsys, kind, message):
    f = _bad_file(tmp_path, kind)
    out = tmp_path / "out.nc"
    region = "-30,-10,110,130" if kind != "nan" else "-20,0,120,140"
    assert _down(out, "--gcm-file", str(f), region=region) == 2
    err = capsys.readouterr().err
    assert message in err and f.name in err
    assert not out.exists()


def test_grib_with_several_steps_is_refused(tmp_path, capsys):
    import eccodes

    f = tmp_path / "steps.grib2"
    with open(f, "wb") as fh:
        for st in (0, 6):
            h = eccodes.codes_grib_new_from_samples("regular_ll_sfc_grib2")
            eccodes.codes_set(h, "shortName", "2t")
            eccodes.codes_set(h, "step", st)
            eccodes.codes_set_values(h, np.full(eccodes.codes_get_size(h, "values"), 280.0))
            fh.write(eccodes.codes_get_message(h))
            eccodes.codes_release(h)
    out = tmp_path / "o.nc"
    assert _down(out, "--gcm-file", str(f), region="30,50,0,20") == 2
    assert "several step" in capsys.readouterr().err and not out.exists()


def test_evaluate_own_files_matches_the_builtin_real_task(tmp_path, x20_nc):
    ref = tmp_path / "era5_1deg.nc"
    era5_week().to_netcdf(ref)
    js = tmp_path / "mine.json"
    assert main(["evaluate", "--gcm-file", str(x20_nc), "--reference-file", str(ref), "--times", TIME,
                 "--regions", REGION, "--methods", "bilinear", "--json", str(js), "--quiet"]) == 0
    mine = json.loads(js.read_text())
    assert (tmp_path / "mine.md").exists() and "1° points" not in mine["score_definition"][:10]
    from zssd_engine import pipeline as P
    from zssd_engine.metrics import score

    case = P.prepare_case("ERA5-x20", TIME, REGION)
    want = score(P.run_method(case, "bilinear")[["t2m", "msl"]], case.reference[["t2m", "msl"]])
    assert mine["results"]["t2m"]["bilinear"]["mae"] == pytest.approx(want["t2m"].mae, rel=1e-6)
    assert mine["results"]["msl"]["bilinear"]["mae"] == pytest.approx(want["msl"].mae, rel=1e-6)
    # a reference that does not cover the region
    small = tmp_path / "small.nc"
    era5_week().sel(lat=slice(-10, -20), lon=slice(100, 115)).to_netcdf(small)
    bad = tmp_path / "bad.json"
    assert main(["evaluate", "--gcm-file", str(x20_nc), "--reference-file", str(small), "--times", TIME,
                 "--regions", REGION, "--methods", "bilinear", "--json", str(bad), "--quiet"]) == 2
    assert not bad.exists()


def test_off_lattice_reference_is_interpolated_to_its_points(tmp_path, x20_nc):
    ref = tmp_path / "shifted.nc"
    era5_week().assign_coords(lon=era5_week().lon + 0.1).to_netcdf(ref)  # not on the 0.25° lattice
    js = tmp_path / "s.json"
    assert main(["evaluate", "--gcm-file", str(x20_nc), "--reference-file", str(ref), "--times", TIME,
                 "--regions", REGION, "--methods", "bilinear", "--json", str(js), "--quiet"]) == 0
    assert "interpolated bilinearly" in json.loads(js.read_text())["score_definition"]


def test_cases_file_and_batch_with_own_files(tmp_path, x20_nc):
    from zssd_engine.user_files import parse_cases

    toml = tmp_path / "cases.toml"
    toml.write_text('[[case]]\nname = "tc"\ntime = "2026-03-26T05:00"\nregion = "-35,-3,100,132"\n')
    cases = parse_cases(None, None, str(toml))
    assert [c[0] for c in cases] == ["tc"] and cases[0][2].as_text() == REGION
    out = tmp_path / "b.zarr"
    assert main(["batch", "--gcm-file", str(x20_nc), "--start", "2026-03-26T05", "--end", "2026-03-26T12",
                 "--freq", "7h", "--region", REGION, "--method", "bilinear", "--out", str(out),
                 "--scheduler", "inline", "--no-progress"]) == 0
    ds = xr.open_zarr(out)
    assert ds.sizes["time"] == 2 and "file:era5_x20" in ds.attrs["source"]
