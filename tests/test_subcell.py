"""The sub-cell climatology term of zssd-bc: its basis, its misfit and where its climatology comes from."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zssd_engine import pipeline as P
from zssd_engine.demo_world import HELDOUT_YEARS
from zssd_engine.grids import era5_grid
from zssd_engine.pipeline.case import parse_region
from zssd_engine.samplers.observation import ucg_coarse_grid
from zssd_engine.samplers.subcell import (
    MIN_ELEV_STD_M, MIN_LAND_STD, MIN_RELIEF_STD_M, SubcellObservation, SubcellTerm, cell_labels, subcell_basis,
)
from zssd_engine.samplers.zssd import zssd_observation
from zssd_engine.statics import load_statics

REGION = "20,36,-100,-84"  # 64x64 px over Mexico's coasts and the Sierra Madre: land, sea and terrain
TIME = "2022-08-10T12:00"


@pytest.fixture(scope="module")
def grids():
    fine = era5_grid().select(parse_region(REGION))[0]
    coarse = ucg_coarse_grid(fine, 2.5)
    dem, land = load_statics().region(fine)
    return fine, coarse, dem, land


def test_cell_labels_follow_the_coarse_cells(grids):
    fine, coarse, _, _ = grids
    lab = cell_labels(fine, coarse)
    assert lab.shape == fine.shape and np.unique(lab).size >= (coarse.shape[0] - 1) * (coarse.shape[1] - 1)
    for c in np.unique(lab):
        i, j = divmod(int(c), coarse.shape[1])
        lat_lo, lat_hi = sorted(coarse.lat_bounds[i:i + 2])
        rows, cols = np.nonzero(lab == c)
        assert np.all((fine.lat[rows] >= lat_lo) & (fine.lat[rows] < lat_hi))
        assert np.all((fine.lon[cols] >= coarse.lon_bounds[j]) & (fine.lon[cols] < coarse.lon_bounds[j + 1]))


def test_the_basis_projects_onto_each_cells_land_and_terrain_pattern(grids):
    """Rows are orthonormal and blind to each cell's mean; a field made of per-cell constants plus land and
    elevation terms is exactly the part Q sees, and a field of cell constants alone is invisible."""
    fine, coarse, dem, land = grids
    q, w = subcell_basis(fine, coarse, dem, land).dense()
    assert q.shape[1] == fine.shape[0] * fine.shape[1] and 0 < q.shape[0] <= 2 * coarse.shape[0] * coarse.shape[1]
    np.testing.assert_allclose(q @ q.T, np.eye(q.shape[0]), atol=1e-10)
    assert w.shape == (q.shape[0],) and w.mean() == pytest.approx(1.0)
    lab = cell_labels(fine, coarse)
    rng = np.random.default_rng(0)
    const = rng.normal(size=lab.max() + 1)[lab]
    assert np.abs(q @ const.ravel()).max() < 1e-9
    a, b = rng.normal(size=(2, lab.max() + 1))
    pattern = (a[lab] * land + b[lab] * dem / 1000.0)
    proj = (q.T @ (q @ (const + pattern).ravel())).reshape(fine.shape)
    n_full = n_none = 0
    for c in np.unique(lab):
        m = lab == c
        varies = (land[m].std() >= MIN_LAND_STD, dem[m].std() >= MIN_ELEV_STD_M)
        if all(varies):  # both rows: the cell's centred pattern is reproduced exactly
            np.testing.assert_allclose(proj[m], pattern[m] - pattern[m].mean(), atol=1e-9)
            n_full += 1
        elif not any(varies):  # no row: Q does not see the cell
            assert np.abs(proj[m]).max() < 1e-12
            n_none += 1
    assert n_full >= 3 and n_none >= 3


def test_the_second_order_row_adds_the_curvature_in_height_only_over_relief(grids):
    """``terrain_order`` 2: in cells of enough relief a per-cell quadratic in height is reproduced exactly; in
    flatter cells the basis is the first-order one; orders other than 1 and 2 are refused."""
    fine, coarse, dem, land = grids
    b1, b2 = subcell_basis(fine, coarse, dem, land), subcell_basis(fine, coarse, dem, land, terrain_order=2)
    q1, _ = b1.dense()
    q, w = b2.dense()
    np.testing.assert_allclose(q @ q.T, np.eye(q.shape[0]), atol=1e-10)
    assert w.mean() == pytest.approx(1.0) and q.shape[0] > q1.shape[0]
    lab = cell_labels(fine, coarse)
    rng = np.random.default_rng(2)
    a, b, c = rng.normal(size=(3, lab.max() + 1))
    h = np.asarray(dem, np.float64) / 1000.0  # as the basis computes it (the DEM is float32)
    hc = h - np.bincount(lab.ravel(), h.ravel())[lab] / np.bincount(lab.ravel())[lab]  # height above the cell mean
    pattern = a[lab] * land + b[lab] * h + c[lab] * hc ** 2
    proj2 = (q.T @ (q @ pattern.ravel())).reshape(fine.shape)
    proj1 = (q1.T @ (q1 @ pattern.ravel())).reshape(fine.shape)
    n_curved = n_flat = 0
    for k in np.unique(lab):
        m = lab == k
        if land[m].std() >= MIN_LAND_STD and dem[m].std() >= MIN_RELIEF_STD_M:
            np.testing.assert_allclose(proj2[m], pattern[m] - pattern[m].mean(), atol=1e-9)
            assert np.abs(proj1[m] - proj2[m]).max() > 1e-3  # the first-order basis misses the curvature
            n_curved += 1
        elif dem[m].std() < MIN_RELIEF_STD_M:  # no third row: the same projection as order 1
            np.testing.assert_allclose(proj2[m], proj1[m], atol=1e-9)
            n_flat += 1
    assert n_curved >= 2 and n_flat >= 3
    with pytest.raises(ValueError, match="terrain_order"):
        subcell_basis(fine, coarse, dem, land, terrain_order=3)


def test_the_term_is_zero_at_the_climatology_and_its_gradient_keeps_cell_means(grids):
    fine, coarse, dem, land = grids
    prior = P.load_prior("tiny")
    rng = np.random.default_rng(1)
    clim = 290.0 + 5.0 * land - 6.5 * dem / 1000.0 + rng.normal(size=fine.shape)
    term = SubcellTerm.build(prior, fine, coarse, {"t2m": clim}, dem, land, weight=1.0)
    c = prior.variables.index("t2m")
    x = torch.zeros((2, len(prior.variables), *fine.shape))
    x[:, c] = prior.normalize(torch.as_tensor(clim, dtype=torch.float32)[None, None].expand(1, len(prior.variables),
                                                                                         *fine.shape))[0, c]
    assert float(term.misfit(x).max()) < 1e-6 * float(term.target.pow(2).sum())
    x = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    x.requires_grad_(True)
    (g,) = torch.autograd.grad(term.misfit(x).sum(), x)
    lab = torch.as_tensor(cell_labels(fine, coarse)).ravel()
    sums = torch.zeros(int(lab.max()) + 1).index_add_(0, lab, g[0, c].flatten())
    assert float(sums.abs().max()) < 1e-4 * float(g[0, c].abs().sum())  # no pull on any cell's mean
    others = [i for i in range(len(prior.variables)) if i != c]
    assert float(g[:, others].abs().max()) == 0.0  # only the variables with a climatology


def test_the_sampler_adds_the_term_only_when_weighted():
    case = P.prepare_case("MPI-ESM1-2-LR", TIME, REGION)
    prior = P.load_prior("tiny")
    from zssd_engine.bias_correction import subcell_climatology

    clim = subcell_climatology(case)
    assert set(clim) == {"t2m"} and clim["t2m"].shape == case.fine.shape
    plain = zssd_observation(prior, case.gcm, case.fine, 2.5)
    assert not isinstance(zssd_observation(prior, case.gcm, case.fine, 2.5, clim, 0.0), SubcellObservation)
    obs = zssd_observation(prior, case.gcm, case.fine, 2.5, clim, 0.5)
    assert isinstance(obs, SubcellObservation)
    x = torch.randn((2, len(prior.variables), *case.fine.shape), generator=torch.Generator().manual_seed(0))
    m0, m = plain.misfit(x), obs.misfit(x)
    np.testing.assert_allclose(m.pow(2) - m0.pow(2), 0.25 * obs.subcell.misfit(x), rtol=1e-4)
    assert bool((m > m0).all())


def test_the_climatology_is_the_training_pairs_mean():
    """zssd-bc's sub-cell climatology is the mean of the reference over the correction's training times (same
    calendar month and UTC hour, training years only) — no held-out time enters it."""
    from zssd_engine.bias_correction import subcell_climatology

    case = P.prepare_case("MPI-ESM1-2-LR", TIME, REGION)
    world = P.get_world(0)
    times = P.bcsd_training_times(case.time.month, case.time.hour)
    assert all(t.year not in HELDOUT_YEARS for t in times) and {t.month for t in times} == {8}
    mean = np.mean([world.dataset(t, case.fine)["t2m"].values.squeeze() for t in times], axis=0)
    np.testing.assert_allclose(subcell_climatology(case)["t2m"], mean, atol=1e-3)


def test_zssd_bc_records_the_weight_it_sampled_with():
    case = P.prepare_case("MPI-ESM1-2-LR", TIME, REGION)
    ds = P.run_method(case, "zssd-bc", prior=P.load_prior("tiny"), steps=2, members=2, subcell_weight=0.5)
    assert float(ds.attrs["subcell_weight"]) == 0.5


def test_zssd_bc_passes_the_terrain_order_to_the_basis_and_records_it(monkeypatch):
    """``subcell_terrain_order`` (default 1) reaches the basis the sampler builds, and the attributes."""
    import zssd_engine.samplers.subcell as sc

    seen = []

    def spy(*a, **k):
        seen.append(a[4] if len(a) > 4 else k.get("terrain_order", 1))
        return subcell_basis(*a, **k)

    monkeypatch.setattr(sc, "subcell_basis", spy)
    case = P.prepare_case("MPI-ESM1-2-LR", TIME, REGION)
    prior = P.load_prior("tiny")
    ds = P.run_method(case, "zssd-bc", prior=prior, steps=2, members=1)
    assert seen == [1] and int(ds.attrs["subcell_terrain_order"]) == 1
    assert "curvature" not in ds.attrs["bias_correction"]
    ds = P.run_method(case, "zssd-bc", prior=prior, steps=2, members=1, subcell_terrain_order=2)
    assert seen == [1, 2] and int(ds.attrs["subcell_terrain_order"]) == 2
    assert "curvature" in ds.attrs["bias_correction"]
    ds = P.run_method(case, "zssd-bc", prior=prior, steps=2, members=1, subcell_weight=0.0)
    assert seen == [1, 2] and int(ds.attrs["subcell_terrain_order"]) == 0  # no term, no basis


def test_the_term_on_finer_nested_cells_keeps_the_guidance_cell_means():
    """``subcell_res`` 1.25° under 2.5° guidance: more rows, still no pull on any guidance cell's mean; a size
    that does not divide the guidance cells is refused; the cells used reach the attributes."""
    import zssd_engine.bias_correction as bc

    case = P.prepare_case("MPI-ESM1-2-LR", TIME, REGION)
    prior = P.load_prior("tiny")
    clim = bc.subcell_climatology(case)
    on_guidance = zssd_observation(prior, case.gcm, case.fine, 2.5, clim, 1.0)
    finer = zssd_observation(prior, case.gcm, case.fine, 2.5, clim, 1.0, subcell_res=1.25)
    for obs, res in ((on_guidance, 2.5), (finer, 1.25)):  # the term's rows live on the cells of res
        cells = np.unique(cell_labels(case.fine, ucg_coarse_grid(case.fine, res))).size
        assert int(obs.subcell.labels.max()) + 1 == cells
    assert finer.subcell.n_rows > on_guidance.subcell.n_rows
    x = torch.randn((1, len(prior.variables), *case.fine.shape), generator=torch.Generator().manual_seed(2))
    x.requires_grad_(True)
    (g,) = torch.autograd.grad(finer.subcell.misfit(x).sum(), x)
    c = prior.variables.index("t2m")
    for res in (2.5, 1.25):  # the guidance cells, and the term's own
        lab = torch.as_tensor(cell_labels(case.fine, ucg_coarse_grid(case.fine, res))).ravel()
        sums = torch.zeros(int(lab.max()) + 1).index_add_(0, lab, g[0, c].flatten())
        assert float(sums.abs().max()) < 1e-4 * float(g[0, c].abs().sum())
    with pytest.raises(ValueError, match="must divide the guidance cells' 2.5°"):
        zssd_observation(prior, case.gcm, case.fine, 2.5, clim, 1.0, subcell_res=2.0)
    ds = P.run_method(case, "zssd-bc", prior=prior, steps=2, members=1, subcell_res=1.25)
    assert float(ds.attrs["subcell_res"]) == 1.25 and "on 1.25° cells" in ds.attrs["bias_correction"]
    ds = P.run_method(case, "zssd-bc", prior=prior, steps=2, members=1)
    assert float(ds.attrs["subcell_res"]) == float(ds.attrs["unified_res"])


def test_zssd_bc_regrids_its_target_as_an_anomaly_and_records_it(monkeypatch):
    """By default zssd-bc's t2m target reaches the unified cells as an anomaly from the same climatology as the
    sub-cell term (:data:`ANOMALY_TARGET`); ``target_climatology=None`` turns it off; both are recorded."""
    import zssd_engine.samplers.zssd as zs

    seen = []

    def spy(Y, native, coarse, fine, variables, climatology=None):
        seen.append(climatology)
        return coarse_means(Y, native, coarse, fine, variables, climatology)

    from zssd_engine.bias_correction import subcell_climatology
    from zssd_engine.samplers.observation import coarse_means

    monkeypatch.setattr(zs, "coarse_means", spy)
    case = P.prepare_case("MPI-ESM1-2-LR", TIME, REGION)
    prior = P.load_prior("tiny")
    ds = P.run_method(case, "zssd-bc", prior=prior, steps=2, members=1)
    assert set(seen[0]) == {"t2m"} and np.array_equal(seen[0]["t2m"], subcell_climatology(case)["t2m"])
    assert int(ds.attrs["anomaly_target"]) == 1 and "as an anomaly" in ds.attrs["bias_correction"]
    ds = P.run_method(case, "zssd-bc", prior=prior, steps=2, members=1, target_climatology=None)
    assert seen[1] is None and int(ds.attrs["anomaly_target"]) == 0 and "anomaly" not in ds.attrs["bias_correction"]
    ds = P.run_method(case, "zssd-bc", prior=prior, steps=2, members=1, subcell_weight=0.0)  # independent of λ
    assert set(seen[2]) == {"t2m"} and int(ds.attrs["anomaly_target"]) == 1
