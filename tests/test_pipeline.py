"""The pipeline facade: cases, baselines, result datasets (CF attrs), atomic writes."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from zssd_engine import pipeline as P
from zssd_engine.demo_world import HELDOUT_YEARS, TRAIN_YEARS
from zssd_engine.errors import DataError
from zssd_engine.grids import GridError
from zssd_engine.variables import VARIABLES

from conftest import DEMO_REGION as REGION, DEMO_TIME as TIME  # 16x16 px


@pytest.fixture(scope="module")
def case():
    return P.prepare_case("x6", TIME, REGION)


def test_prepare_case(case):
    assert case.shape == (16, 16) and case.paired
    assert set(VARIABLES) <= set(case.reference.data_vars)
    assert case.reference["t2m"].shape == (1, 16, 16)
    assert case.static.shape[1:] == (16, 16) and case.time_feats.shape[0] == 1
    assert case.gcm_variables == VARIABLES
    prov = case.provenance()
    assert prov["gcm"] == "x6" and prov["paired"] is True and "synthetic" in prov["reference"]


def test_real_file_case_is_unpaired_and_bcsd_refused():
    c = P.prepare_case("MPI-ESM-LR", "2005-08-01T00:00", REGION)
    assert not c.paired and "msl" not in c.gcm.data_vars
    out = P.baseline(c, "bilinear")
    assert "t2m" in out and out["t2m"].shape == (16, 16)
    with pytest.raises(DataError, match="BCSD cannot be trained"):
        P.baseline(c, "bcsd")


@pytest.mark.parametrize("src,time,region,err,match", [
    ("NOPE", TIME, REGION, GridError, "unknown GCM"),
    ("MPI-ESM-LR", "2021-08-01", REGION, DataError, "outside the time range"),
    ("x20", TIME, REGION, GridError, "smaller than one x20 cell"),
    ("x6", "not-a-time", REGION, ValueError, "cannot read time"),
    ("x6", TIME, "1,2,3", GridError, "S,N,W,E"),
])
def test_prepare_case_errors(src, time, region, err, match):
    with pytest.raises(err, match=match):
        P.prepare_case(src, time, region)


def test_baselines(case):
    b = P.baseline(case, "bilinear")
    assert all(b[v].shape == (16, 16) for v in VARIABLES)
    s = P.baseline(case, "bcsd")
    assert all(s[v].shape == (16, 16) and np.isfinite(s[v]).all() for v in VARIABLES)
    assert "1991" in s.attrs["bcsd_training_years"]
    with pytest.raises(ValueError, match="unknown baseline"):
        P.baseline(case, "zssd")


def test_bcsd_training_times_are_training_years():
    ts = P.bcsd_training_times(8, 6)
    assert len(ts) >= 10 and all(t.year in TRAIN_YEARS and t.month == 8 and t.hour == 6 for t in ts)
    with pytest.raises(ValueError, match="held-out"):
        P.bcsd_training_times(8, 6, years=(HELDOUT_YEARS[0],))


def test_result_dataset_cf(case, tiny, tmp_path):
    gen = P.sampler(case, tiny, "zssd", steps=3, members=2, seed=5, guidance_scale=1.0)
    final = list(gen)[-1]
    ds = P.result_dataset(case, final, tiny, "zssd", 3, 5, 1.0, seconds=0.1)
    for v in VARIABLES:
        assert ds[v].dims == ("time", "lat", "lon")
        assert ds[f"{v}_members"].dims == ("time", "member", "lat", "lon")
        assert ds[f"{v}_spread"].dims == ("time", "lat", "lon")
        assert ds[v].attrs["units"] and ds[v].attrs["standard_name"]
    assert ds.sizes["member"] == 2 and float(ds["t2m_spread"].max()) > 0
    np.testing.assert_allclose(ds["t2m"].values[0], ds["t2m_members"].values[0].mean(0), rtol=1e-6)
    a = ds.attrs
    assert a["method"] == "zssd" and a["seed"] == 5 and a["steps"] == 3 and a["guidance_scale"] == 1.0
    assert a["Conventions"].startswith("CF") and a["region"] == "12,16,122,126"
    assert "checkpoint_sha256" in a and "synthetic" in a["reference"] and a["source"].startswith("x6")
    assert json.loads(a["provenance"])["gcm"] == "x6"
    assert ds["lat"].attrs["standard_name"] == "latitude" and "lat_bnds" in ds
    out = P.write_netcdf_atomic(ds, tmp_path / "r.nc")
    back = xr.open_dataset(out)
    assert back["t2m_members"].shape == (1, 2, 16, 16) and back.attrs["method"] == "zssd"
    back.close()
    assert os.listdir(tmp_path) == ["r.nc"]
    with pytest.raises(ValueError, match="final"):
        P.result_dataset(case, list(P.sampler(case, tiny, "ddrm", steps=2))[0], tiny, "ddrm", 2, 0)


def test_write_atomic_leaves_nothing_on_failure(case, tmp_path, monkeypatch):
    ds = P.baseline_result(case, P.baseline(case, "bilinear"), "bilinear")
    target = tmp_path / "x.nc"

    def boom(self, path, *a, **k):
        with open(path, "wb") as f:  # a partial file exists when the interrupt arrives
            f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(xr.Dataset, "to_netcdf", boom)
    with pytest.raises(KeyboardInterrupt):
        P.write_netcdf_atomic(ds, target)
    assert os.listdir(tmp_path) == []


def test_run_method_and_bad_methods(case, tiny):
    ds = P.run_method(case, "ddrm", prior=tiny, steps=2, members=1)
    assert ds.attrs["method"] == "ddrm" and ds.attrs["guidance_scale"] == "n/a"
    with pytest.raises(ValueError, match="unknown method"):
        P.run_method(case, "magic")
    with pytest.raises(ValueError, match="baseline"):
        P.sampler(case, tiny, "bilinear")
    with pytest.raises(ValueError, match="guidance"):
        P.sampler(case, tiny, "ddrm", guidance_scale=2.0)
    with pytest.raises(ValueError, match="at least 1"):
        P.sampler(case, tiny, "zssd", steps=0)


def test_real_file_zssd_leaves_msl_unguided(tiny):
    c = P.prepare_case("MPI-ESM-LR", "2005-08-01T00:00", REGION)
    ds = P.run_method(c, "zssd", prior=tiny, steps=2, guidance_scale=1.0)
    assert ds.attrs["unguided_variables"] == "msl" and ds.attrs["paired"] == 0
    assert json.loads(ds.attrs["provenance"])["paired"] is False


def test_load_prior_from_checkpoint(tiny, tmp_path):
    from zssd_engine.prior.model import Prior

    card = tiny.save(tmp_path / "p.safetensors")
    prior = P.load_prior(tmp_path / "p.safetensors")
    sha = json.loads(card.read_text())["weights"]["sha256"]
    assert P.prior_sha256(prior) == sha and P.prior_sha256(Prior.tiny(0)) == "untrained"
    with pytest.raises(FileNotFoundError, match="not found"):
        P.load_prior(tmp_path / "missing.safetensors")


def test_prior_cache_loads_once_and_reloads_a_rewritten_checkpoint(tmp_path):
    """One cache per process: the same checkpoint is loaded once; a checkpoint rewritten on disk afresh."""
    from zssd_engine.prior.model import Prior

    path = Prior.tiny(3).save(tmp_path / "p")
    before = len(P.prior_loads())
    a = P.load_prior(path)
    assert P.load_prior(path) is a and P.load_prior(tmp_path / "p") is a  # the card, the directory: one entry
    assert len(P.prior_loads()) == before + 1
    Prior.tiny(4).save(tmp_path / "p")  # new weights, new card
    b = P.load_prior(path)
    assert b is not a and len(P.prior_loads()) == before + 2
    wa = next(iter(a.net.state_dict().values()))
    wb = next(iter(b.net.state_dict().values()))
    assert not bool((wa == wb).all())
    assert P.load_prior("tiny", tiny_seed=5) is P.load_prior("tiny", tiny_seed=5)


def test_a_monthly_mean_input_is_said_so_in_every_guided_output(tiny, case):
    """A monthly-mean file (MPI-ESM-LR) is not an instantaneous state: the members are drawn through the month
    (``member_time``), the result says so; DDRM is refused; an instantaneous input's result carries no note."""
    c = P.prepare_case("MPI-ESM-LR", "2005-08-01T00:00", REGION)
    assert c.gcm.attrs["time_mean"] == "month"
    ds = P.run_method(c, "zssd", prior=tiny, steps=2, members=4)
    note = ds.attrs["input_time_mean"]
    assert "monthly means" in note and "members' MEAN" in note and "4 member(s)" in note
    times = pd.to_datetime(ds["member_time"].values)
    # August: 744 h in four equal parts, each member at its part's middle (93 h, 279 h, 465 h, 651 h)
    assert list(times) == [pd.Timestamp("2005-08-04T21:00"), pd.Timestamp("2005-08-12T15:00"),
                           pd.Timestamp("2005-08-20T09:00"), pd.Timestamp("2005-08-28T03:00")]
    assert "single instant" not in note
    assert "single instant" in P.run_method(c, "dps", prior=tiny, steps=2).attrs["input_time_mean"]
    with pytest.raises(DataError, match="ddrm cannot downscale MPI-ESM-LR: the file holds monthly means"):
        P.run_method(c, "ddrm", prior=tiny, steps=2)
    plain = P.run_method(case, "zssd", prior=tiny, steps=2)
    assert "input_time_mean" not in plain.attrs and "member_time" not in plain.coords
