"""Bias-aware ZSSD (zssd-bc): the quantile mapping at the unified grid, refusals and provenance."""

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


def test_corrected_training_field_matches_the_reference_quantiles(biased_case):
    """On the training period, QM(A5 hist) has the quantiles of A5 ref per cell (hist does not)."""
    from zssd_engine.gcm import gcm_field
    from zssd_engine.pipeline import bcsd_training_times, get_world

    case = biased_case
    model = train_bias_correction(case)
    world = get_world(0)
    times = bcsd_training_times(case.time.month, case.time.hour)
    hist = xr.concat([unified_field(gcm_field(case.source_id, t, case.region, world), case.fine) for t in times],
                     dim="time")
    from zssd_engine.bias_correction import _unified_cells
    from zssd_engine.gcm import fine_region_for
    from zssd_engine.grids import era5_grid

    cover = era5_grid().select(fine_region_for(_unified_cells(case.fine), pad_deg=0.25))[0]
    ref = xr.concat([unified_field(world.dataset(t, cover).isel(time=0), case.fine) for t in times], dim="time")
    inner = {}
    corrected = model.bias_correct(hist.assign_coords(time=np.asarray(times, dtype="datetime64[ns]")))
    q = [0.1, 0.5, 0.9]
    qr = ref["t2m"].isel(**inner).quantile(q, "time")
    qh = hist["t2m"].isel(**inner).quantile(q, "time")
    qc = corrected["t2m"].isel(**inner).quantile(q, "time")
    err_c = float(np.abs(qc.values - qr.values).max())
    err_h = float(np.abs(qh.values - qr.values).max())
    assert err_h > 0.5  # the pseudo-GCM is biased (t2m -0.7 K, land -1.0 K)
    assert err_c < 0.35 * err_h, (err_c, err_h)


def test_unbiased_input_is_left_unchanged():
    case = P.prepare_case("x20", TIME, REGION)  # the reference averaged to 5°: no bias by construction
    fixed = bias_corrected_case(case)
    y5 = unified_field(case.gcm, case.fine)
    for v in ("t2m", "msl", "u10", "v10"):
        np.testing.assert_allclose(fixed.gcm[v].values, y5[v].values, atol=1e-3 * max(1.0, float(abs(y5[v]).mean())))


def test_sources_without_history_are_refused():
    for src, t, reg in (("ERA5-x20", "2026-03-26T05:00", "-35,-3,100,132"), ("MPI-ESM-LR", "2005-07", "30,62,0,32")):
        case = P.prepare_case(src, t, reg)
        with pytest.raises(DataError, match=f"zssd-bc cannot correct {src}.*no such paired history"):
            P.run_method(case, "zssd-bc", prior=P.load_prior("tiny"), steps=2)


def test_zssd_bc_output_carries_the_training_period(biased_case):
    ds = P.run_method(biased_case, "zssd-bc", prior=P.load_prior("tiny"), steps=2, members=2)
    assert ds.attrs["method"] == "zssd-bc"
    assert ds.attrs["bias_correction_training"] == "1991-2018, month 08, 12 UTC"
    assert "unified 5°" in ds.attrs["bias_correction"]
    assert float(ds.attrs["guidance_scale"]) == pytest.approx(P.guidance_default("zssd", 2))
