"""CF readers: ERA5 (CDS NetCDF, ARCO/WB2 zarr), CMIP5/6 NetCDF, time selection."""

from __future__ import annotations

from pathlib import Path

import cftime
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from zssd_engine.errors import DataError
from zssd_engine.operators import grid_from_xarray
from zssd_engine.readers import open_cmip, open_era5, open_mpi_esm_lr, select_time

from conftest import GCM_DIR, REAL_GCM_FILES, needs_real_gcm


REAL = REAL_GCM_FILES
needs_real = needs_real_gcm

LAT_DESC = np.array([40.0, 39.75, 39.5, 39.25])
LON = np.array([10.0, 10.25, 10.5])


# ----------------------------------------------------------------- fixtures
def _era5_cds(path: Path, *, t_name="t2m", msl_units="Pa", msl_scale=1.0, time_name="valid_time",
              t_units="K", t_offset=0.0) -> Path:
    times = pd.date_range("2021-08-28", periods=4, freq="6h")
    shape = (times.size, LAT_DESC.size, LON.size)
    rng = np.random.default_rng(0)
    ds = xr.Dataset(
        {
            t_name: ((time_name, "latitude", "longitude"), (295 + rng.normal(0, 2, shape) + t_offset).astype("f4"),
                     {"units": t_units, "long_name": "2 metre temperature"}),
            "msl": ((time_name, "latitude", "longitude"), ((101000 + rng.normal(0, 300, shape)) * msl_scale).astype("f4"),
                    {"units": msl_units}),
            "u10": ((time_name, "latitude", "longitude"), rng.normal(0, 5, shape).astype("f4"), {"units": "m s**-1"}),
            "v10": ((time_name, "latitude", "longitude"), rng.normal(0, 5, shape).astype("f4"), {"units": "m s**-1"}),
        },
        coords={time_name: times, "latitude": LAT_DESC, "longitude": LON, "number": 0,
                "expver": (time_name, np.array(["0001"] * times.size))},
        attrs={"Conventions": "CF-1.7", "institution": "ECMWF"},
    )
    ds.to_netcdf(path)
    return path


def _cmip_file(path: Path, var: str, values: np.ndarray, times, *, units: str, cmip6: bool = True,
               height: float | None = 2.0, lat=None, lon=None) -> Path:
    lat = np.array([-1.0, 1.0, 3.0]) if lat is None else lat
    lon = np.array([0.0, 2.0, 4.0, 6.0]) if lon is None else lon
    lat_b = np.stack([lat - 1, lat + 1], axis=1)
    lon_b = np.stack([lon - 1, lon + 1], axis=1)
    coords = {"time": times, "lat": lat, "lon": lon}
    if height is not None:
        coords["height"] = xr.DataArray(height, attrs={"units": "m", "axis": "Z"})
    ds = xr.Dataset({var: (("time", "lat", "lon"), values.astype("f4"), {"units": units}),
                     "lat_bnds": (("lat", "bnds"), lat_b), "lon_bnds": (("lon", "bnds"), lon_b)},
                    coords=coords)
    ds["lat"].attrs.update(bounds="lat_bnds", units="degrees_north")
    ds["lon"].attrs.update(bounds="lon_bnds", units="degrees_east")
    ds.attrs = ({"source_id": "TOY-ESM", "mip_era": "CMIP6", "frequency": "6hr", "tracking_id": path.name}
                if cmip6 else {"model_id": "TOY-ESM5", "project_id": "CMIP5", "frequency": "mon"})
    ds.to_netcdf(path)
    return path


def _times(calendar: str, start=(2005, 1, 1), n=8, hours=6):
    t0 = cftime.datetime(*start, calendar=calendar)
    return xr.DataArray([t0 + pd.Timedelta(hours=hours * i).to_pytimedelta() for i in range(n)], dims="time")


# --------------------------------------------------------------------- ERA5
def test_open_era5_cds_netcdf(tmp_path):
    ds = open_era5(_era5_cds(tmp_path / "era5.nc"))
    assert list(ds.data_vars) == ["t2m", "msl", "u10", "v10"]
    assert set(ds.dims) == {"time", "lat", "lon"}
    assert "number" not in ds.coords and "expver" not in ds.coords
    np.testing.assert_allclose(ds["lat"], LAT_DESC)  # order kept (ERA5 is north → south)
    assert ds["u10"].attrs["units"] == "m s-1" and ds["msl"].attrs["units"] == "Pa"
    assert ds.attrs["source_file"].endswith("era5.nc")
    grid = grid_from_xarray(ds)
    assert grid.descending and grid.shape == (4, 3)


def test_open_era5_old_names_and_hpa(tmp_path):
    p = _era5_cds(tmp_path / "old.nc", t_name="2t", time_name="time", msl_units="hPa", msl_scale=0.01)
    ds = open_era5(p)
    assert "t2m" in ds and "2t" not in ds
    assert float(ds["msl"].mean()) == pytest.approx(101000, rel=0.01)
    assert ds["msl"].attrs["units"] == "Pa" and "hPa" in ds["msl"].attrs["units_note"]


def test_open_era5_degc_is_converted(tmp_path):
    ds = open_era5(_era5_cds(tmp_path / "c.nc", t_units="degC", t_offset=-273.15))
    assert 280 < float(ds["t2m"].mean()) < 310
    assert ds["t2m"].attrs["units"] == "K"


def test_open_era5_zarr_weatherbench_names(tmp_path):
    times = pd.date_range("2020-01-01", periods=3, freq="6h")
    lat = np.linspace(90, -90, 5)
    lon = np.arange(8) * 45.0
    shape = (3, 5, 8)
    ds = xr.Dataset({
        "2m_temperature": (("time", "latitude", "longitude"), np.full(shape, 280.0, "f4"), {"units": "K"}),
        "mean_sea_level_pressure": (("time", "latitude", "longitude"), np.full(shape, 1.0e5, "f4"), {"units": "Pa"}),
        "10m_u_component_of_wind": (("time", "latitude", "longitude"), np.ones(shape, "f4"), {"units": "m s-1"}),
        "10m_v_component_of_wind": (("time", "latitude", "longitude"), -np.ones(shape, "f4"), {"units": "m s-1"}),
        "geopotential": (("time", "latitude", "longitude"), np.ones(shape, "f4"), {"units": "m2 s-2"}),
    }, coords={"time": times, "latitude": lat, "longitude": lon})
    store = tmp_path / "wb2.zarr"
    ds.to_zarr(store, zarr_format=2)  # ARCO/WB2 stores are zarr v2, consolidated
    out = open_era5(store)
    assert list(out.data_vars) == ["t2m", "msl", "u10", "v10"]
    assert out.sizes == {"time": 3, "lat": 5, "lon": 8}
    assert float(out["v10"].min()) == -1.0


def test_open_era5_bad_unit_names_file_variable_unit(tmp_path):
    p = _era5_cds(tmp_path / "bad.nc", msl_units="psi")
    with pytest.raises(DataError) as ei:
        open_era5(p)
    msg = str(ei.value)
    assert "bad.nc" in msg and "'msl'" in msg and "psi" in msg and "Pa" in msg


def test_open_era5_out_of_range_names_range(tmp_path):
    # Kelvin label on Celsius numbers: 20 K is not a plausible 2 m temperature
    p = _era5_cds(tmp_path / "range.nc", t_offset=-273.15)
    with pytest.raises(DataError) as ei:
        open_era5(p)
    msg = str(ei.value)
    assert "range.nc" in msg and "t2m" in msg and "150 to 350 K" in msg and "physical range" in msg


def test_open_era5_no_variables_and_missing_file(tmp_path):
    p = tmp_path / "other.nc"
    xr.Dataset({"sst": (("latitude", "longitude"), np.zeros((2, 2)))},
               coords={"latitude": [1.0, 0.0], "longitude": [0.0, 1.0]}).to_netcdf(p)
    with pytest.raises(DataError, match="no ERA5 variable.*sst"):
        open_era5(p)
    with pytest.raises(DataError, match="not found"):
        open_era5(tmp_path / "nope.nc")


# --------------------------------------------------------------------- CMIP
@needs_real
def test_real_mpi_esm_lr_opens_unchanged():
    ds = open_cmip(REAL)
    assert list(ds.data_vars)[:3] == ["t2m", "u10", "v10"]
    assert ds.sizes["time"] == 12 and ds.sizes["lat"] == 96 and ds.sizes["lon"] == 192
    assert "lat_bnds" in ds and "lon_bnds" in ds
    assert ds.attrs["model_id"] == "MPI-ESM-LR" and ds.attrs["source_id"] == "MPI-ESM-LR"
    assert "tas_rectilinear_grid_2D.nc" in ds.attrs["source_file"]
    assert ds.attrs["calendar"] == "proleptic_gregorian" and ds.attrs["frequency"] == "mon"
    assert isinstance(ds["time"].values[0], cftime.datetime)
    assert 200 < float(ds["t2m"].min()) and float(ds["t2m"].max()) < 330
    assert ds["t2m"].attrs["units"] == "K" and ds["u10"].attrs["units"] == "m s-1"
    raw = xr.open_dataset(REAL[0])  # values unchanged
    np.testing.assert_array_equal(ds["t2m"].values, raw["tas"].values)
    raw.close()
    g = grid_from_xarray(ds)
    assert g.shape == (96, 192) and g.is_global_lon
    np.testing.assert_allclose(g.lat_bounds[[0, -1]], [-90, 90])
    # select a month; the helper returns the same dataset from assets/gcm
    jul = select_time(ds, "2005-07-01T00")
    assert jul["time"].item().month == 7 and jul["t2m"].dims == ("lat", "lon")
    helper = open_mpi_esm_lr(GCM_DIR)
    xr.testing.assert_identical(helper["t2m"], ds["t2m"])


@needs_real
def test_open_mpi_esm_lr_default_assets():
    """Without a folder, the reader opens the demo pack's copy (zssd_engine.paths.ASSETS), the same data."""
    from zssd_engine.paths import ASSETS

    if not (ASSETS / "gcm" / "tas_rectilinear_grid_2D.nc").exists():
        pytest.skip("the demo pack's gcm/ is not populated")
    ds = open_mpi_esm_lr()
    assert set(ds.data_vars) >= {"t2m", "u10", "v10"} and "msl" not in ds and ds.sizes["time"] == 12
    np.testing.assert_array_equal(ds["t2m"].values, open_cmip(REAL)["t2m"].values)


@pytest.mark.parametrize("calendar", ["noleap", "360_day", "proleptic_gregorian", "standard"])
def test_open_cmip_any_calendar_merges_files_and_drops_height(tmp_path, calendar):
    t = _times(calendar)
    rng = np.random.default_rng(1)
    files = [
        _cmip_file(tmp_path / "tas.nc", "tas", 290 + rng.normal(0, 3, (8, 3, 4)), t, units="K", height=2.0),
        _cmip_file(tmp_path / "psl.nc", "psl", 101000 + rng.normal(0, 500, (8, 3, 4)), t, units="Pa", height=None),
        _cmip_file(tmp_path / "uas.nc", "uas", rng.normal(0, 5, (8, 3, 4)), t, units="m s-1", height=10.0),
        _cmip_file(tmp_path / "vas.nc", "vas", rng.normal(0, 5, (8, 3, 4)), t, units="m s-1", height=10.0),
    ]
    ds = open_cmip([str(f) for f in files])
    assert list(ds.data_vars)[:4] == ["t2m", "msl", "u10", "v10"]
    assert "height" not in ds.coords and "height" not in ds.variables
    assert ds.attrs["source_id"] == "TOY-ESM" and ds.attrs["calendar"] == t.values[0].calendar
    assert ds.attrs["source_file"] == "tas.nc, psl.nc, uas.nc, vas.nc"
    assert "tracking_id" not in ds.attrs  # differs between files
    assert ds["t2m"].attrs["source_file"] == "tas.nc"
    assert "lat_bnds" in ds and grid_from_xarray(ds).lat_bounds[0] == -2.0
    # only some variables
    sub = open_cmip(files, variables=["tas", "u10"])
    assert list(sub.data_vars)[:2] == ["t2m", "u10"] and "msl" not in sub


def test_open_cmip_360day_select_feb30(tmp_path):
    t = _times("360_day", start=(2005, 2, 29), n=8, hours=6)
    p = _cmip_file(tmp_path / "tas_360.nc", "tas", np.full((8, 3, 4), 280.0), t, units="K")
    ds = open_cmip(p)
    step = select_time(ds, "2005-02-30T06:00")
    tt = step["time"].item()
    assert (tt.month, tt.day, tt.hour) == (2, 30, 6)
    # nearest within the default tolerance (half the 6-hour step)
    assert select_time(ds, "2005-02-30T07:30")["time"].item().hour == 6
    with pytest.raises(DataError, match="within"):
        select_time(ds, "2005-02-30T07:30", tolerance="1h")
    with pytest.raises(DataError, match=r"outside the time range of tas_360.nc: 2005-02-29T00:00:00 … "
                                        r"2005-02-30T18:00:00 \(8 steps, calendar 360_day\)"):
        select_time(ds, "2005-03-05")
    with pytest.raises(DataError, match="not a valid date in the 360_day calendar"):
        select_time(ds, "2005-02-31")


def test_select_time_noleap_rejects_feb29_and_datetime64_data(tmp_path):
    t = _times("noleap", start=(2004, 2, 28), n=8, hours=6)
    ds = open_cmip(_cmip_file(tmp_path / "tas_nl.nc", "tas", np.full((8, 3, 4), 280.0), t, units="K"))
    with pytest.raises(DataError, match="noleap"):
        select_time(ds, "2004-02-29")
    assert select_time(ds, "2004-03-01T00")["time"].item().month == 3
    era = xr.Dataset({"t2m": ("time", np.arange(4.0))},
                     coords={"time": pd.date_range("2021-08-28", periods=4, freq="6h")})
    assert float(select_time(era, pd.Timestamp("2021-08-28T13:00"))["t2m"]) == 2.0
    assert float(select_time(era, np.datetime64("2021-08-28T18:00"))["t2m"]) == 3.0
    with pytest.raises(DataError, match="outside the time range"):
        select_time(era, "2021-09-01")


def test_select_time_monthly_picks_the_month(tmp_path):
    t = xr.DataArray([cftime.datetime(2005, m, 16, 12, calendar="noleap") for m in range(1, 13)], dims="time")
    ds = open_cmip(_cmip_file(tmp_path / "tas_mon.nc", "tas", 280 + np.arange(12)[:, None, None] * np.ones((12, 3, 4)),
                              t, units="K", cmip6=False))
    assert ds.attrs["model_id"] == "TOY-ESM5" and ds.attrs["source_id"] == "TOY-ESM5"
    assert float(select_time(ds, "2005-03-01")["t2m"].mean()) == 282.0
    assert float(select_time(ds, "2005-03-31T23:00")["t2m"].mean()) == 282.0
    assert float(select_time(ds, "2005-12")["t2m"].mean()) == 291.0
    with pytest.raises(DataError, match=r"2006-01 is outside the time range of tas_mon.nc"):
        select_time(ds, "2006-01-15")
    with pytest.raises(DataError, match="cannot parse"):
        select_time(ds, "March 2005")


def test_open_cmip_concatenates_time_chunks(tmp_path):
    t = _times("noleap", n=8)
    vals = 280 + np.arange(8)[:, None, None] * np.ones((8, 3, 4))
    a = _cmip_file(tmp_path / "tas_a.nc", "tas", vals[:4], t[:4], units="K")
    b = _cmip_file(tmp_path / "tas_b.nc", "tas", vals[4:], t[4:], units="K")
    ds = open_cmip([b, a])  # order of the list does not matter
    assert ds.sizes["time"] == 8
    np.testing.assert_allclose(ds["t2m"].mean(("lat", "lon")), 280 + np.arange(8))


def test_open_cmip_unit_conversion(tmp_path):
    t = _times("standard", n=4)
    tas = open_cmip(_cmip_file(tmp_path / "tas_c.nc", "tas", np.full((4, 3, 4), 15.0), t, units="degC"))
    assert float(tas["t2m"].mean()) == pytest.approx(288.15) and tas["t2m"].attrs["units"] == "K"
    assert "degC" in tas["t2m"].attrs["units_note"]
    psl = open_cmip(_cmip_file(tmp_path / "psl_h.nc", "psl", np.full((4, 3, 4), 1013.0), t, units="hPa", height=None))
    assert float(psl["msl"].mean()) == pytest.approx(101300.0)
    with pytest.raises(DataError) as ei:
        open_cmip(_cmip_file(tmp_path / "uas_k.nc", "uas", np.ones((4, 3, 4)), t, units="knots"))
    assert "uas_k.nc" in str(ei.value) and "knots" in str(ei.value) and "m s-1" in str(ei.value)
    with pytest.raises(DataError, match=r"psl_pa.nc.*85000 to 110000 Pa"):
        open_cmip(_cmip_file(tmp_path / "psl_pa.nc", "psl", np.full((4, 3, 4), 1013.0), t, units="Pa", height=None))


def test_open_cmip_nan_handling(tmp_path):
    t = _times("noleap", n=4)
    part = np.full((4, 3, 4), 280.0)
    part[:, 0, 0] = np.nan  # a masked cell (e.g. a land-only variable over sea)
    ds = open_cmip(_cmip_file(tmp_path / "tas_part.nc", "tas", part, t, units="K"))
    assert int(ds["t2m"].isnull().sum()) == 4
    with pytest.raises(DataError) as ei:
        open_cmip(_cmip_file(tmp_path / "tas_nan.nc", "tas", np.full((4, 3, 4), np.nan), t, units="K"))
    assert "tas_nan.nc" in str(ei.value) and "no finite values" in str(ei.value)


def test_open_cmip_truncated_and_corrupt_files(tmp_path):
    t = _times("noleap", n=8)
    good = _cmip_file(tmp_path / "tas_good.nc", "tas", np.full((8, 3, 4), 280.0), t, units="K")
    for fmt in ("NETCDF3_CLASSIC", "NETCDF4"):
        p = tmp_path / f"tas_{fmt}.nc"
        open_cmip(good)  # sanity
        xr.open_dataset(good).load().to_netcdf(p, format=fmt)
        data = p.read_bytes()
        cut = tmp_path / f"tas_cut_{fmt}.nc"
        cut.write_bytes(data[: int(len(data) * 0.6)])
        with pytest.raises(DataError, match=f"tas_cut_{fmt}.nc") as ei:
            open_cmip(cut)
        assert ei.value.__cause__ is not None  # the backend error is chained
    junk = tmp_path / "junk.nc"
    junk.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 256)
    with pytest.raises(DataError, match="junk.nc"):
        open_cmip(junk)
    with pytest.raises(DataError, match="not found"):
        open_cmip(tmp_path / "missing.nc")


def test_open_cmip_rejects_mixed_grids_and_unknown_variables(tmp_path):
    t = _times("noleap", n=4)
    a = _cmip_file(tmp_path / "tas.nc", "tas", np.full((4, 3, 4), 280.0), t, units="K")
    b = _cmip_file(tmp_path / "uas.nc", "uas", np.zeros((4, 2, 4)), t, units="m s-1", lat=np.array([0.0, 2.0]))
    with pytest.raises(DataError, match="different grids"):
        open_cmip([a, b])
    with pytest.raises(DataError, match="unknown variable"):
        open_cmip(a, variables=["pr"])
    with pytest.raises(DataError, match=r"requested variable\(s\) \['psl'\] not found"):
        open_cmip(a, variables=["msl"])
    other = tmp_path / "pr.nc"
    xr.Dataset({"pr": (("lat", "lon"), np.zeros((2, 2)))}, coords={"lat": [0.0, 1.0], "lon": [0.0, 1.0]}).to_netcdf(other)
    with pytest.raises(DataError, match="no CMIP variable.*pr"):
        open_cmip(other)
