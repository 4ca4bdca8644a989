"""Cyclone-centre detection in coarse fields (engine/cyclones.py, pure numpy)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from zssd_engine.cyclones import detect_cyclones, detect_cyclones_arrays


def _field(centres, res=1.5, lat0=0.0, lat1=40.0, lon0=100.0, lon1=160.0):
    lat = np.arange(lat1, lat0, -res)
    lon = np.arange(lon0, lon1, res)
    LA, LO = np.meshgrid(lat, lon, indexing="ij")
    p = 101200.0 + 50.0 * np.sin(np.deg2rad(LO) * 3)  # gentle background
    u = np.zeros_like(p)
    v = np.zeros_like(p)
    for clat, clon, dp in centres:
        r2 = (LA - clat) ** 2 + (LO - clon) ** 2
        p = p - dp * np.exp(-r2 / (2 * 2.0 ** 2))
        r = np.sqrt(r2) + 1e-6
        speed = 25.0 * (dp / 3000.0) * (r / 2.0) * np.exp(0.5 * (1 - (r / 2.0) ** 2))
        u += -speed * (LA - clat) / r
        v += speed * (LO - clon) / r
    return lat, lon, p, u, v


def test_finds_two_lows_deepest_first():
    lat, lon, p, u, v = _field([(20.0, 130.0, 1500.0), (12.0, 145.0, 3000.0)])
    c = detect_cyclones_arrays(lat, lon, p, u, v)
    assert len(c) == 2
    assert abs(c[0].lat - 12.0) <= 1.5 and abs(c[0].lon - 145.0) <= 1.5
    assert abs(c[1].lat - 20.0) <= 1.5 and abs(c[1].lon - 130.0) <= 1.5
    assert c[0].depth > c[1].depth > 500 and c[0].max_wind > 10
    assert "hPa" in c[0].label() and "N" in c[0].label()


def test_rejects_weak_calm_and_edge_minima():
    lat, lon, p, u, v = _field([(20.0, 130.0, 30.0)])  # 0.3 hPa dent: too shallow
    assert detect_cyclones_arrays(lat, lon, p, u, v) == []
    lat, lon, p, u, v = _field([(20.0, 130.0, 1500.0)])
    assert detect_cyclones_arrays(lat, lon, p, u * 0.0, v * 0.0) == []  # no wind → not a cyclone
    lat, lon, p, u, v = _field([(20.0, 100.0, 3000.0)])  # centre on the western edge
    assert detect_cyclones_arrays(lat, lon, p, u, v) == []
    assert detect_cyclones_arrays(lat, lon, p) == []  # without winds too
    lat, lon, p, u, v = _field([(20.0, 106.0, 3000.0)])  # the same low four cells inside: found
    assert len(detect_cyclones_arrays(lat, lon, p, u, v)) == 1


def _cell_means(lat, lon, f, k):
    """Block means of ``k`` x ``k`` fine cells: the field as a coarse grid sees it (a vortex's winds cancel)."""
    H, W = (lat.size // k) * k, (lon.size // k) * k
    blocks = f[:H, :W].reshape(H // k, k, W // k, k).mean(axis=(1, 3))
    return lat[:H].reshape(-1, k).mean(1), lon[:W].reshape(-1, k).mean(1), blocks


def test_a_storm_on_a_5_degree_grid_is_found_near_its_centre():
    """At 5° the cell holding a vortex averages its winds to ~0: the wind test must look at the neighbours,
    and the centre is placed between grid points (a parabola through the minimum and its neighbours)."""
    lat, lon, p, u, v = _field([(23.0, 132.1, 3000.0)], res=0.25, lat0=-5.0, lat1=50.0, lon0=105.0, lon1=160.0)
    clat, clon, cp = _cell_means(lat, lon, p, 20)
    _, _, cu = _cell_means(lat, lon, u, 20)
    _, _, cv = _cell_means(lat, lon, v, 20)
    i, j = np.unravel_index(np.argmin(cp), cp.shape)
    own = float(np.hypot(cu[i, j], cv[i, j]))  # the storm's own 5° cell: its winds largely cancel
    c = detect_cyclones_arrays(clat, clon, cp, cu, cv, min_wind=own + 1.0)  # only the neighbours pass
    assert len(c) == 1 and c[0].max_wind >= own + 1.0
    grid_error = np.hypot(clat[i] - 23.0, clon[j] - 132.1)
    assert np.hypot(c[0].lat - 23.0, c[0].lon - 132.1) < 0.7 * grid_error  # closer than the grid point
    assert abs(c[0].lat - clat[i]) <= 2.5 and abs(c[0].lon - clon[j]) <= 2.5  # within half a cell of it


def test_nan_and_shape_checks():
    lat, lon, p, u, v = _field([(20.0, 130.0, 2000.0)])
    p[0:3, 0:3] = np.nan
    assert len(detect_cyclones_arrays(lat, lon, p, u, v)) == 1
    with pytest.raises(ValueError, match="shape"):
        detect_cyclones_arrays(lat, lon, p[:-1], u, v)


def test_dataset_interface_and_missing_msl():
    lat, lon, p, u, v = _field([(20.0, 130.0, 2000.0)])
    ds = xr.Dataset({"msl": (("lat", "lon"), p), "u10": (("lat", "lon"), u), "v10": (("lat", "lon"), v)},
                    coords={"lat": lat, "lon": lon}, attrs={"source_id": "TEST"})
    assert len(detect_cyclones(ds)) == 1
    assert len(detect_cyclones(ds.expand_dims("time"))) == 1
    with pytest.raises(ValueError, match="no sea-level pressure"):
        detect_cyclones(ds.drop_vars("msl"))


def test_finds_demo_cyclone_in_paired_task():
    from zssd_engine.demo_world import DemoWorld
    from zssd_engine.gcm import gcm_field

    w = DemoWorld(0)
    case = max(w.catalog(), key=lambda c: c.peak_wind)
    g = gcm_field("x10", case.peak_time, case.region, w)
    c = detect_cyclones(g)
    assert c and abs(c[0].lat - case.peak_lat) < 3 and abs((c[0].lon - case.peak_lon + 180) % 360 - 180) < 3


def test_a_shallow_storm_on_a_background_gradient_is_found_at_its_centre():
    """A 2 hPa dent on a 1.27° x 2.5° grid (IPSL-like) lying on a 6 hPa / 10° pressure gradient: the raw field has
    no local minimum near the storm (the gradient swamps it); the anomaly against the 15° background has one
    within a cell of the centre."""
    from zssd_engine.cyclones import R_EARTH_KM, _great_circle_km, detect_cyclones_arrays

    lat = np.arange(-5.0, 35.0, 1.27)
    lon = np.arange(100.0, 160.0, 2.5)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    c_lat, c_lon = 15.3, 131.2
    r = _great_circle_km(c_lat, c_lon, la, lo) / R_EARTH_KM * 180 / np.pi  # degrees
    p = 101000.0 - 60.0 * (lo - 130.0) - 200.0 * np.exp(-0.5 * (r / 2.5) ** 2)
    speed = 12.0 * (r / 2.5) * np.exp(0.5 * (1 - (r / 2.5) ** 2))
    u, v = speed, np.zeros_like(speed)

    def nearest_km(cands):
        return min((float(_great_circle_km(c_lat, c_lon, np.array(k.lat), np.array(k.lon))) for k in cands),
                   default=np.inf)

    assert nearest_km(detect_cyclones_arrays(lat, lon, p, u, v, background_deg=0.0)) > 300.0
    found = detect_cyclones_arrays(lat, lon, p, u, v)
    assert nearest_km(found) < 150.0
    best = min(found, key=lambda k: float(_great_circle_km(c_lat, c_lon, np.array(k.lat), np.array(k.lon))))
    # the dent's ring depth alone (2 hPa minus its own 0.6 hPa at the 4° ring) is 1.4 hPa; the smoothing takes a
    # little: above the 1 hPa threshold, below the full dent
    assert 100.0 < best.depth < 200.0


def test_a_deep_low_with_damped_winds_passes_but_a_shallow_calm_one_does_not():
    """A coarse model over land damps a storm's 10 m wind below the 3 m/s test: a closed low 4 hPa deep with
    2 m/s is kept (from ``strong_depth`` half the wind suffices), a 1.5 hPa low as calm (a heat low) is not,
    and neither is a deep low with no wind at all."""
    from zssd_engine.cyclones import R_EARTH_KM, _great_circle_km, detect_cyclones_arrays

    lat = np.arange(-40.0, -2.0, 1.4)
    lon = np.arange(18.0, 57.0, 1.4)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    calm = np.full(la.shape, 2.0)  # m/s everywhere: below min_wind
    for dent, kept in ((500.0, True), (200.0, False)):
        r = _great_circle_km(-20.6, 37.4, la, lo) / R_EARTH_KM * 180 / np.pi
        p = 101000.0 - dent * np.exp(-0.5 * (r / 2.0) ** 2)
        found = detect_cyclones_arrays(lat, lon, p, calm, calm)
        assert bool(found) is kept, (dent, found)
        if kept:
            assert found[0].depth >= 250.0
            assert not detect_cyclones_arrays(lat, lon, p, calm, calm, strong_depth=np.inf)  # the rule is what finds it
            assert not detect_cyclones_arrays(lat, lon, p, 0 * calm, 0 * calm)
