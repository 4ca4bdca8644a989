"""Bias-aware ZSSD (zssd-bc): the quantile mapping (native or unified grid), refusals and provenance."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from zssd_engine import pipeline as P
from zssd_engine.bias_correction import bias_corrected_case, train_bias_correction, unified_field
from zssd_engine.errors import DataError

REGION = "20,36,-100,-84"  # 64x64 at 0.25°: a small box keeps the training quick
TIME = "2022-08-10T12:00"


@pytest.fixture(scope="module")
def biased_case():
    return P.prepare_case("MPI-ESM1-2-LR", TIME, REGION)


def _training_pairs(case, grid: str):
    """(hist, reference) of the correction's training times, both on the grid the correction works on."""
    from zssd_engine.bias_correction import _unified_cells
    from zssd_engine.gcm import fine_region_for, gcm_field
    from zssd_engine.grids import era5_grid
    from zssd_engine.operators import grid_from_xarray, regrid
    from zssd_engine.pipeline import bcsd_training_times, get_world

    world = get_world(0)
    times = bcsd_training_times(case.time.month, case.time.hour)
    cells = _unified_cells(case.fine) if grid == "unified" else grid_from_xarray(case.gcm)
    cover = era5_grid().select(fine_region_for(cells, pad_deg=0.25))[0]

    def on_grid(ds):
        return unified_field(ds, case.fine) if grid == "unified" else xr.Dataset(
            {v: regrid(ds[v], cells, "conservative") for v in ("t2m", "msl", "u10", "v10")})

    hist = xr.concat([on_grid(gcm_field(case.source_id, t, case.region, world)) for t in times], dim="time")
    ref = xr.concat([on_grid(world.dataset(t, cover).isel(time=0)) for t in times], dim="time")
    return hist.assign_coords(time=np.asarray(times, dtype="datetime64[ns]")), ref


@pytest.mark.parametrize("grid", ["native", "unified"])
def test_corrected_training_field_matches_the_reference_quantiles(biased_case, grid):
    """On the training period, QM(hist) has the quantiles of the reference per cell (hist does not), on the
    native GCM cells (the default) and on the unified 5° cells alike."""
    case = biased_case
    model = train_bias_correction(case, grid)
    hist, ref = _training_pairs(case, grid)
    corrected = model.bias_correct(hist[list(model.fits)])
    q = [0.1, 0.5, 0.9]
    for v, min_bias in (("t2m", 0.5), ("msl", 50.0)):
        qr = ref[v].quantile(q, "time").values
        err_h = float(np.abs(hist[v].quantile(q, "time").values - qr).max())
        err_c = float(np.abs(corrected[v].quantile(q, "time").values - qr).max())
        assert err_h > min_bias  # the pseudo-GCM is biased (t2m -0.7 K, land -1.0 K)
        assert err_c < 0.35 * err_h, (v, err_c, err_h)


def test_unbiased_input_is_left_unchanged():
    """×20 is the reference averaged to 5°: no bias by construction, so every cell the guidance sees (those
    overlapping the region) maps onto itself, on either grid."""
    from zssd_engine.grids import Region
    from zssd_engine.operators import grid_from_xarray

    case = P.prepare_case("x20", TIME, REGION)  # the reference averaged to 5°: no bias by construction
    for grid in ("native", "unified"):
        fixed = bias_corrected_case(case, {v: grid for v in ("t2m", "msl", "u10", "v10")}).gcm
        before = case.gcm if grid == "native" else unified_field(case.gcm, case.fine)
        _, li, lo = grid_from_xarray(before).covering(Region.parse(REGION))
        for v in ("t2m", "msl", "u10", "v10"):
            np.testing.assert_allclose(fixed[v].values[np.ix_(li, lo)], before[v].values[np.ix_(li, lo)],
                                       atol=1e-3, rtol=1e-6, err_msg=f"{grid} {v}")


def test_the_correction_grid_is_chosen_per_variable_and_checked(biased_case):
    mixed = bias_corrected_case(biased_case, {"msl": "unified"}).gcm
    assert mixed.attrs["bias_correction_grid"] == "t2m:native, msl:unified, u10:native, v10:native"
    assert mixed.sizes["lat"] == 5  # a mixed correction is expressed on the unified cells
    native = bias_corrected_case(biased_case).gcm
    assert native.sizes == biased_case.gcm[["t2m"]].sizes  # all native: the GCM's own cells
    with pytest.raises(ValueError, match="unknown bias-correction grid 'coarse'; choose from native, unified"):
        bias_corrected_case(biased_case, {"t2m": "coarse"})


def test_sources_without_history_are_refused():
    for src, t, reg in (("ERA5-x20", "2026-03-26T05:00", "-35,-3,100,132"), ("MPI-ESM-LR", "2005-07", "30,62,0,32")):
        case = P.prepare_case(src, t, reg)
        with pytest.raises(DataError, match=f"zssd-bc cannot correct {src}.*no such paired history"):
            P.run_method(case, "zssd-bc", prior=P.load_prior("tiny"), steps=2)


def test_zssd_bc_output_carries_the_training_period(biased_case):
    ds = P.run_method(biased_case, "zssd-bc", prior=P.load_prior("tiny"), steps=2, members=2)
    assert ds.attrs["method"] == "zssd-bc"
    assert ds.attrs["bias_correction_training"] == "1991-2018, month 08, 12 UTC"
    assert "t2m: native GCM grid" in ds.attrs["bias_correction"]
    assert ds.attrs["bias_correction_grid"] == "t2m:native, msl:native, u10:native, v10:native"
    assert float(ds.attrs["guidance_scale"]) == pytest.approx(P.guidance_default("zssd", 2))


def test_zssd_bc_guides_on_its_gcms_grid_but_never_finer_than_its_field(biased_case, monkeypatch):
    """zssd-bc guides on the unified grid chosen for its GCM (BC_GUIDANCE_RES), but never on cells finer than
    the corrected field's: the paper's 5° for ×20 (5° cells: zssd-bc then guides exactly like zssd), for a
    GCM not in the table, and whenever a variable is corrected on the unified 5° cells."""
    import zssd_engine.bias_correction as B
    from zssd_engine.gcm import PSEUDO_GCMS

    assert set(B.BC_GUIDANCE_RES) <= set(PSEUDO_GCMS) and set(B.BC_GUIDANCE_RES.values()) <= {2.5, 5.0}
    monkeypatch.setattr(B, "BC_GUIDANCE_RES", {"MPI-ESM1-2-LR": 2.5, "x20": 2.5})
    assert B.guidance_res(biased_case) == 2.5  # 1.875° cells: 2.5° is coarser, allowed
    assert B.guidance_res(biased_case, {"msl": "unified"}) == 5.0
    assert B.guidance_res(P.prepare_case("x20", TIME, REGION)) == 5.0
    monkeypatch.setattr(B, "BC_GUIDANCE_RES", {})
    assert B.guidance_res(biased_case) == 5.0


def test_the_guidance_grid_reaches_the_sampler_and_the_attributes(biased_case, monkeypatch):
    import zssd_engine.bias_correction as B
    import zssd_engine.samplers.zssd as Z

    seen = []
    real = Z.zssd_observation

    def spy(prior, gcm, fine, unified_res=None, *rest):
        seen.append(unified_res)
        return real(prior, gcm, fine, unified_res, *rest)

    monkeypatch.setattr(Z, "zssd_observation", spy)
    monkeypatch.setattr(B, "BC_GUIDANCE_RES", {"MPI-ESM1-2-LR": 2.5})
    tiny = P.load_prior("tiny")
    ds = P.run_method(biased_case, "zssd-bc", prior=tiny, steps=2)
    assert seen == [2.5] and ds.attrs["unified_res"] == 2.5
    assert "UCG guidance on the unified 2.5° grid" in ds.attrs["bias_correction"]
    ds = P.run_method(biased_case, "zssd-bc", prior=tiny, steps=2, unified_res=5.0)  # an explicit choice wins
    assert seen[-1] == 5.0 and ds.attrs["unified_res"] == 5.0
    assert "unified 5° grid" in ds.attrs["bias_correction"]
    P.run_method(biased_case, "zssd", prior=tiny, steps=2)  # plain zssd keeps the paper's 5°
    assert seen[-1] is None
