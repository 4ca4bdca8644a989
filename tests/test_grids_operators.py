"""Grids, regions and the separable regridding operators (zssd_engine.grids, zssd_engine.operators)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from zssd_engine.grids import (
    GridError,
    LatLonGrid,
    Region,
    era5_grid,
    gaussian_latitudes,
    gcm_grid,
    lat_weights,
    regular_grid,
    unified_grid,
    wrap_lon,
)
from zssd_engine.operators import (
    bilinear,
    conservative,
    conservative_matrices,
    grid_from_xarray,
    regrid,
    ucg_operator,
    weighted_mean,
)

from conftest import GCM_DIR, needs_real_gcm

RNG = np.random.default_rng(1234)


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def _regional(res: float, s: float, n: float, w: float, e: float, descending: bool = True) -> LatLonGrid:
    lat = np.arange(s + res / 2, n, res)
    lon = np.arange(w + res / 2, e, res)
    return LatLonGrid(lat[::-1] if descending else lat, lon, f"r{res:g}")


def _smooth(grid: LatLonGrid) -> np.ndarray:
    la = np.deg2rad(grid.lat)[:, None]
    lo = np.deg2rad(grid.lon)[None, :]
    return 280.0 + 10.0 * np.cos(la) ** 2 + 3.0 * np.sin(2 * lo) * np.cos(la) + 2.0 * np.sin(la)


# ----------------------------------------------------------------- adjoints
PAIRS = [
    ("conservative 0.5°->5° regional", lambda: (conservative, _regional(0.5, 10, 40, 100, 140),
                                                 unified_grid().covering(Region(10, 40, 100, 140))[0])),
    ("bilinear 5°->0.5° regional", lambda: (bilinear, unified_grid().covering(Region(10, 40, 100, 140))[0],
                                             _regional(0.5, 10, 40, 100, 140))),
    ("conservative Gaussian T63 -> 5° global", lambda: (conservative, gcm_grid("MPI-ESM-LR"), unified_grid())),
    ("bilinear 5° global -> T63 (periodic)", lambda: (bilinear, unified_grid(), gcm_grid("MPI-ESM-LR"))),
]


@pytest.mark.parametrize("name,make", PAIRS, ids=[p[0] for p in PAIRS])
def test_adjoint_identity(name, make):
    fn, src, dst = make()
    op = fn(src, dst, dtype=torch.float64)
    x = _t(RNG.standard_normal(src.shape))
    y = _t(RNG.standard_normal(dst.shape))
    lhs = float(torch.sum(op(x) * y))
    rhs = float(torch.sum(x * op.adjoint(y)))
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))
    # and .adjoint agrees with the dense transpose on a small grid
    if src.shape[0] * src.shape[1] <= 5000:
        dense = op.to_dense()
        assert torch.allclose(op.adjoint(y).reshape(-1), dense.T @ y.reshape(-1), atol=1e-12)


def test_ucg_operator_adjoint_and_batch():
    fine = _regional(0.25, 20, 32, 120, 132)
    coarse = unified_grid().covering(Region(20, 32, 120, 132))[0]
    op = ucg_operator(fine, coarse, dtype=torch.float64)
    x = _t(RNG.standard_normal((3, 2) + fine.shape))
    y = _t(RNG.standard_normal((3, 2) + fine.shape))
    assert op(x).shape == x.shape
    lhs = float(torch.sum(op(x) * y))
    rhs = float(torch.sum(x * op.adjoint(y)))
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


def test_operator_is_differentiable():
    src = _regional(0.5, 0, 10, 0, 10)
    dst = _regional(2.5, 0, 10, 0, 10)
    op = conservative(src, dst, dtype=torch.float64)
    x = _t(RNG.standard_normal(src.shape)).requires_grad_(True)
    y = _t(RNG.standard_normal(dst.shape))
    (op(x) * y).sum().backward()
    assert torch.allclose(x.grad, op.adjoint(y))


# ------------------------------------------------------- consistency checks
def test_coarsening_a_constant_gives_the_constant():
    for src, dst in [(regular_grid(0.5), unified_grid()), (era5_grid(), gcm_grid("MPI-ESM-LR")),
                     (gcm_grid("MPI-ESM-LR"), unified_grid()), (gcm_grid("IPSL-CM6A-LR"), regular_grid(2.5))]:
        op = conservative(src, dst, dtype=torch.float64)
        y = op(torch.full(src.shape, 287.5, dtype=torch.float64))
        assert torch.allclose(y, torch.tensor(287.5, dtype=torch.float64), atol=1e-9)


def test_reproject_then_coarsen_returns_smooth_coarse_field():
    coarse = unified_grid().covering(Region(20, 50, 60, 100))[0]
    fine = _regional(0.5, coarse.lat_bounds.min(), coarse.lat_bounds.max(),
                     coarse.lon_bounds.min(), coarse.lon_bounds.max())
    c = _t(_smooth(coarse))
    back = conservative(fine, coarse, dtype=torch.float64)(bilinear(coarse, fine, dtype=torch.float64)(c))
    interior = (slice(1, -1), slice(1, -1))
    err = (back - c)[interior].abs().max().item()
    assert err < 0.05 * float(c.std())  # smooth field: only the curvature term survives
    # the mean is close too (area-weighted), also at the edges
    assert abs(weighted_mean(back.numpy(), coarse.lat) - weighted_mean(c.numpy(), coarse.lat)) < 0.05


def test_bilinear_exact_for_linear_in_lat_and_lon():
    src = gcm_grid("MPI-ESM-LR")  # Gaussian latitudes (non-uniform spacing)
    dst = _regional(0.25, -30, 30, 40, 80)
    f_src = 3.0 + 0.7 * src.lat[:, None] + 0.0 * src.lon[None, :]
    y = bilinear(src, dst, dtype=torch.float64)(_t(f_src)).numpy()
    np.testing.assert_allclose(y, 3.0 + 0.7 * dst.lat[:, None] * np.ones((1, dst.lon.size)), atol=1e-10)
    # linear in lon inside a regional (non-periodic) source grid
    src2 = _regional(2.0, -10, 10, 100, 130, descending=False)
    dst2 = _regional(0.5, -8, 8, 102, 128)
    f2 = 1.0 + 0.2 * src2.lon[None, :] + 0.1 * src2.lat[:, None]
    y2 = bilinear(src2, dst2, dtype=torch.float64)(_t(f2)).numpy()
    np.testing.assert_allclose(y2, 1.0 + 0.2 * dst2.lon[None, :] + 0.1 * dst2.lat[:, None], atol=1e-10)


def test_bilinear_periodic_across_greenwich():
    src = regular_grid(5.0)  # lon 2.5 … 357.5
    dst = LatLonGrid(np.array([0.0 + 2.5]), np.array([-1.0, 0.0, 1.0]), "pts")
    f = np.cos(np.deg2rad(src.lon))[None, :] * np.ones((src.lat.size, 1))
    y = bilinear(src, dst, dtype=torch.float64)(_t(f)).numpy()[0]
    # between 357.5 and 2.5 the interpolant is the mean of the two (cos is symmetric): cos(2.5°)
    np.testing.assert_allclose(y, np.cos(np.deg2rad(2.5)), atol=1e-12)


# ---------------------------------------------------------- conservation
def test_mass_conservation_nested_global():
    fine = regular_grid(0.5)
    coarse = unified_grid()
    x = RNG.standard_normal(fine.shape) * 5 + 280
    y = conservative(fine, coarse, dtype=torch.float64)(_t(x)).numpy()
    mass_f = np.sum(fine.cell_area() * x)
    mass_c = np.sum(coarse.cell_area() * y)
    assert abs(mass_f - mass_c) / abs(mass_f) < 1e-6
    np.testing.assert_allclose(fine.cell_area().sum(), 4 * np.pi, rtol=1e-12)


def test_mass_conservation_partial_coverage_uses_coverage():
    fine = _regional(0.5, 12.0, 33.5, 101.0, 127.5)  # not aligned with the 5° cells
    coarse = unified_grid().covering(Region(12.0, 33.5, 101.0, 127.5))[0]
    ml, mo, cov = conservative_matrices(fine, coarse)
    assert cov.min() > 0 and cov.max() <= 1.0
    assert np.isclose(cov[1:-1, 1:-1], 1.0).all()  # interior 5° cells fully covered
    assert (cov[0] < 1).all() and (cov[-1] < 1).all()  # partial rows at the region edges
    x = RNG.standard_normal(fine.shape) + 3.0
    y = ml @ x @ mo.T
    mass_f = np.sum(fine.cell_area() * x)
    mass_c = np.sum(coarse.cell_area() * cov * y)
    assert abs(mass_f - mass_c) / abs(mass_f) < 1e-6
    # the covered area itself is conserved
    np.testing.assert_allclose(np.sum(coarse.cell_area() * cov), fine.cell_area().sum(), rtol=1e-9)


def test_conservative_raises_when_not_covered():
    fine = _regional(0.5, 10, 20, 10, 20)
    with pytest.raises(GridError, match="not covered"):
        conservative(fine, unified_grid())


def test_masked_operator_ignores_nans():
    src = _regional(0.5, 0, 10, 0, 10)
    dst = _regional(5.0, 0, 10, 0, 10)
    x = np.full(src.shape, 2.0)
    x[:10, :10] = np.nan  # one full 5° cell masked, others untouched
    y = conservative(src, dst, dtype=torch.float64).masked(_t(x)).numpy()
    assert np.isnan(y).sum() == 1
    np.testing.assert_allclose(y[np.isfinite(y)], 2.0)


# ------------------------------------------------------ regions and grids
def test_region_across_dateline_either_convention():
    a = Region(10, 42, 170, -158)
    b = Region(10, 42, 170, 202)
    assert a.width == b.width == 32
    for grid in (era5_grid(), gcm_grid("MPI-ESM-LR"), regular_grid(1.5)):
        ga, la, oa = grid.select(a)
        gb, lb, ob = grid.select(b)
        np.testing.assert_array_equal(la, lb)
        np.testing.assert_array_equal(oa, ob)
        np.testing.assert_allclose(ga.lon, gb.lon)
        assert np.all(np.diff(ga.lon) > 0) and ga.lon[0] >= 170 and ga.lon[-1] < 202
        np.testing.assert_allclose(wrap_lon(ga.lon), grid.lon[oa])
    g, _, oi = era5_grid().select(a)
    assert g.shape == (128, 128) and g.lon[0] == 170.0 and g.lon[-1] == 201.75


def test_region_negative_west_convention():
    a = Region(-10, 10, -20, 20)
    b = Region(-10, 10, 340, 20)
    g1, _, o1 = regular_grid(2.5).select(a)
    g2, _, o2 = regular_grid(2.5).select(b)
    np.testing.assert_array_equal(o1, o2)
    # same cells; the sub-grid's longitudes follow the region's convention (continuous from `west`)
    np.testing.assert_allclose(wrap_lon(g1.lon), wrap_lon(g2.lon))
    assert g1.lon[0] == -18.75 and g2.lon[0] == 341.25 and g1.lon.size == 16
    assert np.all(np.diff(g1.lon) > 0) and np.all(np.diff(g2.lon) > 0)


def test_covering_across_dateline_and_operators_on_it():
    region = Region(10, 42, 170, -158)
    fine = era5_grid().select(region)[0]
    coarse, lat_idx, lon_idx = gcm_grid("MPI-ESM-LR").covering(region, margin_cells=2)
    assert np.all(np.diff(coarse.lon) > 0)
    assert coarse.lon_bounds[0] < 170 and coarse.lon_bounds[-1] > 202
    np.testing.assert_allclose(wrap_lon(coarse.lon), gcm_grid("MPI-ESM-LR").lon[lon_idx])
    # same cells for the other longitude convention
    c2, lat2, lon2 = gcm_grid("MPI-ESM-LR").covering(Region(10, 42, 170, 202), margin_cells=2)
    np.testing.assert_array_equal(lon_idx, lon2)
    np.testing.assert_array_equal(lat_idx, lat2)
    _, _, cov = conservative_matrices(fine, coarse)
    assert (cov[2:-2, 2:-2] > 0).all()  # cells overlapping the region
    assert (cov[:2] == 0).all() and (cov[:, -2:] == 0).all()  # the margin is outside the fine region
    with pytest.raises(GridError, match="not covered"):
        conservative(fine, coarse)
    # the coarse covering grid fully covers the fine region: constants are preserved both ways
    one = torch.ones(coarse.shape, dtype=torch.float64)
    for fn in (conservative, bilinear):
        np.testing.assert_allclose(fn(coarse, fine, dtype=torch.float64)(one).numpy(), 1.0, atol=1e-12)


def test_descending_and_ascending_latitudes_agree():
    asc = _regional(0.5, -20, 20, 0, 20, descending=False)
    desc = _regional(0.5, -20, 20, 0, 20, descending=True)
    dst = _regional(2.5, -20, 20, 0, 20, descending=False)
    x_asc = _smooth(asc)
    x_desc = x_asc[::-1].copy()
    np.testing.assert_allclose(_smooth(desc), x_desc)
    for fn in (conservative, bilinear):
        ya = fn(asc, dst, dtype=torch.float64)(_t(x_asc)).numpy()
        yd = fn(desc, dst, dtype=torch.float64)(_t(x_desc)).numpy()
        np.testing.assert_allclose(ya, yd, atol=1e-12)
    # selection keeps the parent's order
    g_a = asc.select(Region(-5, 5, 0, 10))[0]
    g_d = desc.select(Region(-5, 5, 0, 10))[0]
    assert g_a.lat[0] < g_a.lat[-1] and g_d.lat[0] > g_d.lat[-1]
    np.testing.assert_allclose(g_a.lat, g_d.lat[::-1])


def test_gaussian_bounds_cover_the_sphere():
    for n in (96, 128, 192):
        lat, bounds = gaussian_latitudes(n)
        assert lat.size == n and bounds.size == n + 1
        assert bounds[0] == 90.0 and bounds[-1] == -90.0 and np.all(np.diff(bounds) < 0)
        assert np.all((bounds[:-1] > lat) & (lat > bounds[1:]))
    for sid in ("MPI-ESM-LR", "MIROC6", "AWI-CM-1-1-MR", "IPSL-CM6A-LR"):
        g = gcm_grid(sid)
        np.testing.assert_allclose(g.cell_area().sum(), 4 * np.pi, rtol=1e-12)
        assert g.is_global_lon


@needs_real_gcm
def test_gaussian_latitudes_match_the_real_mpi_file():
    path = GCM_DIR / "tas_rectilinear_grid_2D.nc"
    ds = xr.open_dataset(path)
    g = gcm_grid("MPI-ESM-LR")
    np.testing.assert_allclose(np.sort(ds["lat"].values), np.sort(g.lat), atol=1e-5)
    fg = grid_from_xarray(ds)  # uses the file's CF bounds
    np.testing.assert_allclose(fg.cell_area().sum(), 4 * np.pi, rtol=1e-9)
    assert fg.is_global_lon
    ds.close()


def test_lat_weights_and_weighted_mean():
    np.testing.assert_allclose(lat_weights(np.array([0.0, 60.0, 90.0, -60.0])), [1.0, 0.5, 0.0, 0.5], atol=1e-15)
    x = np.array([[1.0, 1.0], [4.0, np.nan]])
    assert weighted_mean(x, np.array([0.0, 60.0])) == pytest.approx((1 + 1 + 0.5 * 4) / 2.5)


def test_regrid_xarray_edge():
    src = _regional(0.5, 0, 10, 0, 10)
    dst = _regional(2.5, 0, 10, 0, 10)
    da = xr.DataArray(np.ones((2,) + src.shape, dtype=np.float32), dims=("time", "lat", "lon"),
                      coords={"time": [0, 1], "lat": src.lat, "lon": src.lon}, name="t2m")
    out = regrid(da, dst, "conservative")
    assert out.dims == ("time", "lat", "lon") and out.shape == (2,) + dst.shape and out.dtype == np.float32
    np.testing.assert_allclose(out.values, 1.0)
    assert "regrid" in out.attrs
    with pytest.raises(ValueError, match="unknown regrid method"):
        regrid(da, dst, "nearest")


# ------------------------------------------------------------ GridErrors
def test_grid_errors_have_specific_messages():
    with pytest.raises(GridError, match="S < N"):
        Region(40, 10, 0, 10)
    with pytest.raises(GridError, match="west/east"):
        Region(0, 10, -200, 10)
    with pytest.raises(GridError, match="S,N,W,E"):
        Region.parse("1,2,3")
    with pytest.raises(GridError, match="S,N,W,E"):
        Region.parse("a,b,c,d")
    assert Region.parse(" 10, 42 ,170,-158") == Region(10, 42, 170, -158)
    # too small for the grid
    with pytest.raises(GridError, match=r"at least 4x4"):
        regular_grid(5.0).select(Region(10, 12, 10, 12), min_cells=4)
    with pytest.raises(GridError, match="holds 0x"):
        regular_grid(5.0).select(Region(10.5, 11, 10, 30))
    # outside a regional grid
    sub = _regional(0.5, 0, 10, 0, 10)
    with pytest.raises(GridError, match="outside grid .* in latitude"):
        sub.covering(Region(30, 40, 0, 10))
    with pytest.raises(GridError, match="outside grid .* in longitude"):
        sub.covering(Region(0, 10, 50, 60))
    with pytest.raises(GridError, match="unknown GCM"):
        gcm_grid("NOT-A-MODEL")
    with pytest.raises(GridError, match="monotonic"):
        LatLonGrid(np.array([0.0, 1.0, 0.5]), np.array([0.0, 1.0]))
    with pytest.raises(GridError, match="increasing"):
        LatLonGrid(np.array([0.0, 1.0]), np.array([1.0, 0.0]))


def test_region_around_and_text_roundtrip():
    r = Region.around(25.0, 179.0, 8.0)
    assert r.height == 8.0 and r.width == 8.0
    assert Region.parse(r.as_text()) == r
    g = era5_grid().select(r)[0]
    assert g.shape == (32, 32)
