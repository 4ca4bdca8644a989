"""``zssd batch``: store layout, resume, skip, refusal of bad arguments, Dask cluster runs.

Fast tests run in-process (``scheduler="inline"``); tests that start a LocalCluster or a
subprocess are marked ``slow``.  Cases are cheap: a 16x16 degree region (64x64 cells), a few
6-hourly steps, bilinear or ZSSD with the tiny untrained prior and 3 steps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from zssd_engine import batch
from zssd_engine.batch import BatchError, BatchSpec, case_seed, open_store, plan_batch, run_batch, runner
from zssd_engine.batch.store import Store
from zssd_engine.variables import VARIABLES

ROOT = Path(__file__).resolve().parents[1]
REGION = "20,36,120,136"  # 16x16 deg -> 64x64 cells of 0.25 deg
GCM = "MPI-ESM1-2-LR"


def bil(**kw) -> BatchSpec:
    d = dict(gcm=GCM, start="2022-08-01T00", end="2022-08-01T18", region=REGION, method="bilinear")
    d.update(kw)
    return BatchSpec(**d)


def zs(**kw) -> BatchSpec:
    d = dict(gcm=GCM, start="2022-08-01T00", end="2022-08-01T18", region=REGION, method="zssd", members=2,
             steps=3, seed=7, checkpoint="tiny")
    d.update(kw)
    return BatchSpec(**d)


def _data(path) -> xr.Dataset:
    """The store's values without the attributes that legitimately differ between runs."""
    ds = open_store(path).load()
    ds.attrs = {}
    return ds


class Counter:
    """Wrap ``runner.compute_case`` (in-process runs) to count the cases computed."""

    def __init__(self, monkeypatch):
        self.calls: list[int] = []
        real = runner.compute_case

        def counted(task, index):
            self.calls.append(index)
            return real(task, index)

        monkeypatch.setattr(runner, "compute_case", counted)


@pytest.fixture(scope="module")
def bil_ref(tmp_path_factory) -> Path:
    """Uninterrupted in-process bilinear run (4 times)."""
    out = tmp_path_factory.mktemp("ref") / "bil.zarr"
    rep = run_batch(bil(), out, scheduler="inline", log=None)
    assert rep.computed == 4 and not rep.failed
    return out


@pytest.fixture(scope="module")
def zssd_ref(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "zssd.zarr"
    # one torch thread, as on the 2-worker cluster below (and tiny nets run fastest that way)
    rep = run_batch(zs(), out, scheduler="inline", log=None, torch_threads=1)
    assert rep.computed == 4 and not rep.failed
    return out


def test_progress_callback_sees_every_case_and_the_resume(tmp_path):
    """run_batch reports through its callback: once the pending cases are counted, then after each case."""
    seen: list[tuple[int, int, int]] = []
    out = tmp_path / "p.zarr"

    def stop_after_two(res, report):
        if report.computed == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(bil(), out, scheduler="inline", log=None, on_case_written=stop_after_two,
                  progress=lambda r: seen.append((r.total, r.skipped, r.computed)))
    assert seen == [(4, 0, 0), (4, 0, 1)]  # the interrupt comes before the second tick
    seen.clear()
    run_batch(bil(), out, scheduler="inline", log=None, progress=lambda r: seen.append((r.total, r.skipped, r.computed)))
    assert seen == [(4, 2, 0), (4, 2, 1), (4, 2, 2)]


# ------------------------------------------------------------------ layout
def test_store_layout_is_cf_and_chunked_per_time(bil_ref):
    ds = open_store(bil_ref)
    assert dict(ds.sizes) == {"time": 4, "member": 1, "lat": 64, "lon": 64, "bnds": 2}
    assert list(ds.time.values) == list(pd.date_range("2022-08-01", periods=4, freq="6h").values)
    assert ds.done.dtype == np.uint8 and ds.done.values.tolist() == [1, 1, 1, 1]
    for v in VARIABLES:
        for name, dims in ((v, ("time", "lat", "lon")), (f"{v}_spread", ("time", "lat", "lon")),
                           (f"{v}_members", ("time", "member", "lat", "lon"))):
            da = ds[name]
            assert da.dims == dims and da.dtype == np.float32
            assert da.encoding["chunks"][0] == 1 and tuple(da.encoding["chunks"][1:]) == da.shape[1:]
            assert da.attrs["units"]
        assert ds[v].attrs["cell_methods"] == "member: mean"
        assert ds[v].attrs["standard_name"]
    assert np.isfinite(ds.t2m.values).all() and (ds.t2m_spread.values == 0).all()
    assert ds.lat.attrs["units"] == "degrees_north" and ds.lon.attrs["units"] == "degrees_east"
    assert ds.lat.attrs["standard_name"] == "latitude" and ds.time.attrs["standard_name"] == "time"
    assert "since" in ds.time.encoding["units"]
    a = ds.attrs
    assert a["Conventions"].startswith("CF-")
    for k in ("method", "gcm", "checkpoint_sha256", "seed", "steps", "command", "history", "region"):
        assert k in a, k
    assert a["method"] == "bilinear" and a["gcm"] == GCM


def test_inline_store_equals_cases_run_one_by_one(bil_ref):
    from zssd_engine import pipeline

    ds = open_store(bil_ref)
    for i, t in enumerate(ds.time.values):
        case = pipeline.prepare_case(GCM, t, REGION)
        one = pipeline.run_method(case, "bilinear")
        for v in VARIABLES:
            np.testing.assert_array_equal(ds[v].isel(time=i).values, one[v].isel(time=0).values)


# ------------------------------------------------------------------ resume
def test_interrupt_then_resume_equals_uninterrupted(tmp_path, bil_ref, monkeypatch):
    out = tmp_path / "b.zarr"

    def stop_after_two(res, rep):
        if rep.computed == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(bil(), out, scheduler="inline", log=None, on_case_written=stop_after_two)
    ds = open_store(out)
    assert ds.done.values.tolist() == [1, 1, 0, 0]
    assert np.isnan(ds.t2m.isel(time=2).values).all()
    counter = Counter(monkeypatch)
    rep = run_batch(bil(), out, scheduler="inline", log=None)
    assert (rep.skipped, rep.computed) == (2, 2) and sorted(counter.calls) == [2, 3]
    xr.testing.assert_identical(_data(out), _data(bil_ref))


def test_rerun_skips_done_steps(tmp_path, monkeypatch):
    out = tmp_path / "b.zarr"
    run_batch(bil(end="2022-08-01T06"), out, scheduler="inline", log=None)
    counter = Counter(monkeypatch)
    rep = run_batch(bil(end="2022-08-01T06"), out, scheduler="inline", log=None)
    assert (rep.total, rep.skipped, rep.computed) == (2, 2, 0) and counter.calls == []


def test_failed_case_stays_pending_and_is_retried(tmp_path, monkeypatch):
    from zssd_engine import pipeline

    out = tmp_path / "b.zarr"
    real = pipeline.run_method

    def flaky(case, method, *a, **k):
        if case.time == pd.Timestamp("2022-08-01T06"):
            raise RuntimeError("disk hiccup")
        return real(case, method, *a, **k)

    monkeypatch.setattr(pipeline, "run_method", flaky)
    rep = run_batch(bil(), out, scheduler="inline", log=None)
    assert rep.computed == 3 and list(rep.failed) == ["2022-08-01T06:00:00"]
    assert open_store(out).done.values.tolist() == [1, 0, 1, 1]
    monkeypatch.setattr(pipeline, "run_method", real)
    counter = Counter(monkeypatch)
    rep = run_batch(bil(), out, scheduler="inline", log=None)
    assert rep.computed == 1 and counter.calls == [1] and not rep.failed


def test_systematic_failure_stops_early(tmp_path, monkeypatch):
    from zssd_engine import pipeline

    def broken(*a, **k):
        raise RuntimeError("bug")

    monkeypatch.setattr(pipeline, "run_method", broken)
    counter = Counter(monkeypatch)
    spec = bil(end="2022-08-02T18")  # 8 steps
    with pytest.raises(BatchError, match="first 3 cases all failed.*bug"):
        run_batch(spec, tmp_path / "b.zarr", scheduler="inline", log=None)
    assert len(counter.calls) == 3 and not open_store(tmp_path / "b.zarr").done.values.any()


@pytest.mark.parametrize("change", [dict(method="bcsd"), dict(end="2022-08-01T06"), dict(freq="3h"),
                                    dict(region="20,36,120,140"), dict(gcm="MIROC6")])
def test_different_arguments_are_refused(tmp_path, change, monkeypatch):
    out = tmp_path / "b.zarr"
    run_batch(bil(end="2022-08-01T00"), out, scheduler="inline", log=None)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    counter = Counter(monkeypatch)
    with pytest.raises(BatchError, match="different parameters"):
        run_batch(bil(**{"end": "2022-08-01T00", **change}), out, scheduler="inline", log=None)
    assert counter.calls == [] and sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_second_writer_is_locked_out(tmp_path):
    out = tmp_path / "b.zarr"
    run_batch(bil(end="2022-08-01T00"), out, scheduler="inline", log=None)
    plan = plan_batch(bil(end="2022-08-01T00"), out)
    st = Store(plan)
    try:
        with pytest.raises(BatchError, match="another zssd batch"):
            Store(plan)
    finally:
        st.close()


# --------------------------------------------------------- bad arguments
BAD = {
    "end before start": (dict(start="2022-08-02", end="2022-08-01"), "before --start"),
    "unknown gcm": (dict(gcm="NOPE-GCM"), "unknown"),
    "unknown method": (dict(method="nearest"), "not one of"),
    "region invalid": (dict(region="30,20,120,136"), "south/north"),
    "region not 4 numbers": (dict(region="20,36,120"), "S,N,W,E"),
    "times outside the real file": (dict(gcm="MPI-ESM-LR", start="2005-12-01", end="2006-01-01T00",
                                         freq="1D"), "no data for 2006-01-01"),
    "members < 1": (dict(method="zssd", members=0, checkpoint="tiny"), "members must be at least 1"),
    "steps < 1": (dict(method="zssd", steps=0, checkpoint="tiny"), "steps must be in"),
    "bad freq": (dict(freq="sometimes"), "not a pandas frequency"),
    "bcsd on real file": (dict(gcm="MPI-ESM-LR", start="2005-03-01", end="2005-03-02", method="bcsd"),
                          "historical"),
    "missing checkpoint": (dict(method="zssd", checkpoint="/nonexistent/prior.safetensors"), "no such file"),
    "guidance for bilinear": (dict(guidance_scale=1.0), "zssd, zssd-bc and dps only"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_arguments_fail_before_any_work(tmp_path, name, monkeypatch):
    change, msg = BAD[name]
    out = tmp_path / "sub" / "b.zarr"
    counter = Counter(monkeypatch)
    monkeypatch.setattr(runner, "start_client", lambda *a, **k: pytest.fail("a cluster was started"))
    with pytest.raises(ValueError, match=msg):
        run_batch(bil(**change), out, log=None)
    assert counter.calls == [] and not out.exists() and not (tmp_path / "sub").exists()


@pytest.mark.parametrize("where", ["under a file", "unwritable"])
def test_unwritable_output_fails_before_any_work(tmp_path, where, monkeypatch):
    if where == "under a file":
        f = tmp_path / "plain.txt"
        f.write_text("x")
        out = f / "b.zarr"
    else:
        if not Path("/proc").is_dir():
            pytest.skip("needs /proc")
        out = Path("/proc") / f"zssd-test-{os.getpid()}" / "b.zarr"
    monkeypatch.setattr(runner, "start_client", lambda *a, **k: pytest.fail("a cluster was started"))
    with pytest.raises(BatchError, match="not a directory|not writable"):
        run_batch(bil(), out, log=None)
    assert not out.exists()


def test_out_that_is_not_a_batch_store_is_refused(tmp_path):
    out = tmp_path / "other.zarr"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(BatchError, match="not a Zarr store written by zssd batch"):
        run_batch(bil(), out, scheduler="inline", log=None)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


@pytest.fixture
def main(monkeypatch):
    """``zssd`` entry point with only the batch sub-command wired (independent of the other modules)."""
    from zssd_engine import cli

    monkeypatch.setattr(cli, "SUBCOMMANDS", {"batch": "zssd_engine.cli.batch"})
    return cli.main


def test_cli_bad_arguments_exit_2_and_leave_no_store(tmp_path, capsys, main):
    out = tmp_path / "b.zarr"
    rc = main(["batch", "--gcm", GCM, "--start", "2022-08-02", "--end", "2022-08-01", "--region", REGION,
               "--method", "bilinear", "--out", str(out), "--scheduler", "inline"])
    assert rc == 2 and not out.exists()
    assert "before --start" in capsys.readouterr().err
    rc = main(["batch", "--gcm", GCM, "--start", "2022-08-01", "--end", "2022-08-01", "--region", REGION,
               "--method", "bilinear", "--out", str(out), "--workers", "0"])
    assert rc == 2 and not out.exists()


def test_cli_inline_run_and_resume(tmp_path, capsys, main):
    out = tmp_path / "b.zarr"
    argv = ["batch", "--gcm", GCM, "--start", "2022-08-01T00", "--end", "2022-08-01T06", "--region", REGION,
            "--method", "bilinear", "--members", "1", "--out", str(out), "--scheduler", "inline", "--no-progress"]
    assert main(argv) == 0
    assert "2 computed, 0 skipped" in capsys.readouterr().out
    ds = open_store(out)
    assert ds.attrs["command"].startswith("zssd batch --gcm MPI-ESM1-2-LR")
    assert main(argv) == 0
    assert "all 2 time steps are already done" in capsys.readouterr().out


# ------------------------------------------------------------------ seeds
def test_case_seeds_depend_only_on_seed_and_time():
    t = pd.Timestamp("2022-08-01T06")
    assert case_seed(7, t) == case_seed(7, "2022-08-01T06:00")
    assert case_seed(7, t) != case_seed(8, t) and case_seed(7, t) != case_seed(7, t + pd.Timedelta("6h"))
    assert 0 <= case_seed(0, "1850-01-01") < 2 ** 32


# ------------------------------------------------------------------- zssd
@pytest.fixture
def one_torch_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_worker_checks_the_checkpoint_once_per_file_and_refuses_a_changed_one(tmp_path, monkeypatch):
    """A worker hashes the planned checkpoint once (not per case), and again when the file is rewritten:
    different weights than the batch was planned with are refused."""
    from zssd_engine.batch import spec as spec_mod
    from zssd_engine.prior.model import Prior

    card = Prior.tiny(1).save(tmp_path / "ck")
    w, c = spec_mod.checkpoint_hashes(card)
    ref = batch.PriorRef("file", str(card), 0, w, c)
    calls = []
    real = spec_mod.checkpoint_hashes
    monkeypatch.setattr(spec_mod, "checkpoint_hashes", lambda path: calls.append(path) or real(path))
    a = ref.load()
    assert ref.load() is a and len(calls) == 1  # the second case: no hashing, the cached prior
    Prior.tiny(2).save(tmp_path / "ck")  # rewritten with other weights
    with pytest.raises(BatchError, match="differs from the one the batch was started with"):
        ref.load()
    assert len(calls) == 2


def test_zssd_tiny_inline_store_equals_direct_runs(zssd_ref, one_torch_thread):
    from zssd_engine import pipeline

    ds = open_store(zssd_ref)
    assert ds.sizes["member"] == 2 and ds.done.values.all()
    assert ds.attrs["method"] == "zssd" and ds.attrs["steps"] == 3 and ds.attrs["seed"] == 7
    assert ds.attrs["checkpoint_sha256"] == "tiny-0"
    prior = batch.get_prior(batch.PriorRef("tiny", "", 0, "tiny-0"))
    gs = float(ds.attrs["guidance_scale"])
    for i in (0, 3):
        t = pd.Timestamp(ds.time.values[i])
        assert int(ds.case_seed.values[i]) == case_seed(7, t)
        case = pipeline.prepare_case(GCM, t, REGION)
        one = pipeline.run_method(case, "zssd", prior, 3, 2, case_seed(7, t), gs).isel(time=0)
        for v in VARIABLES:
            np.testing.assert_allclose(ds[f"{v}_members"].isel(time=i).values, one[f"{v}_members"].values,
                                       rtol=1e-5, atol=1e-4)
    m = ds.t2m_members.values
    assert np.isfinite(m).all() and (ds.t2m_spread.values > 0).any()
    assert not np.array_equal(m[0], m[1])  # different seeds per time


def test_checkpoint_file_provenance_and_changed_checkpoint_refused(tmp_path):
    import json

    from zssd_engine.prior.model import Prior

    ck = tmp_path / "ck" / "prior.safetensors"
    card = Prior.tiny(1).save(ck)
    spec = zs(end="2022-08-01T00", members=1, steps=2, checkpoint=str(ck))
    out = tmp_path / "z.zarr"
    rep = run_batch(spec, out, scheduler="inline", log=None)
    assert rep.computed == 1
    a = open_store(out).attrs
    assert a["checkpoint_sha256"] == json.loads(card.read_text())["weights"]["sha256"]
    assert a["checkpoint_kind"] == "file" and a["checkpoint"] == str(ck.resolve())
    Prior.tiny(2).save(ck)  # same path, different weights
    with pytest.raises(BatchError, match="checkpoint_sha256"):
        run_batch(spec, out, scheduler="inline", log=None)


def test_env_zssd_prior_selects_the_tiny_prior(tmp_path, monkeypatch):
    monkeypatch.setenv("ZSSD_PRIOR", "tiny")
    from zssd_engine.pipeline import guidance_default

    plan = plan_batch(zs(checkpoint=None), tmp_path / "z.zarr")
    assert plan.prior.kind == "tiny" and plan.prior.sha256 == "tiny-0"
    assert plan.guidance_scale == pytest.approx(guidance_default("zssd", 3))  # the tuned zeta for 3 steps
    assert not (tmp_path / "z.zarr").exists()


# ------------------------------------------------------------------ cluster
@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=40)
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bilinear", "zssd"])
def test_local_cluster_equals_in_process(tmp_path, client, kind, request):
    ref = request.getfixturevalue("bil_ref" if kind == "bilinear" else "zssd_ref")
    spec = bil() if kind == "bilinear" else zs()
    out = tmp_path / "c.zarr"
    rep = run_batch(spec, out, client=client, log=None)
    assert rep.computed == 4 and rep.workers == 2 and rep.dashboard
    a, b = _data(out), _data(ref)
    if kind == "bilinear":
        xr.testing.assert_identical(a, b)
    else:
        xr.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
        loads = client.run(batch.prior_loads)
        assert all(len(v) <= 1 for v in loads.values()), loads  # the model is loaded once per worker
        # the plugin shares the host's cores among its 2 one-thread workers
        from zssd_engine.batch.cluster import host_cores

        threads = client.run(batch._torch_threads)
        assert set(threads.values()) == {max(1, host_cores() // 2)}, threads


@pytest.mark.slow
def test_killed_worker_then_resume_equals_uninterrupted(tmp_path, client, zssd_ref):
    """A worker process is SIGKILLed while it holds cases; Dask reruns them; the store is the same."""
    out = tmp_path / "k.zarr"
    killed: list = []

    def kill_busy_worker(res, rep):
        if killed:
            return
        busy = {a: ks for a, ks in client.processing().items() if ks}
        if not busy:
            return
        addr = sorted(busy)[0]
        pid = client.run(os.getpid, workers=[addr])[addr]
        os.kill(pid, signal.SIGKILL)
        killed.append((addr, busy[addr]))

    rep = run_batch(zs(), out, client=client, log=None, on_case_written=kill_busy_worker)
    assert killed and killed[0][1], "no worker was killed while holding a case"
    # a case lost with the worker is re-run by Dask (or, after too many losses, left pending);
    # a second run completes the store without duplicating anything
    rep2 = run_batch(zs(), out, client=client, log=None)
    assert rep.computed + rep2.computed == 4 and rep2.skipped == rep.computed
    xr.testing.assert_allclose(_data(out), _data(zssd_ref), rtol=1e-5, atol=1e-4)
    client.wait_for_workers(2, timeout=60)  # the nanny restarts the killed worker


@pytest.mark.slow
def test_ctrl_c_of_the_cli_then_resume(tmp_path, bil_ref):
    """SIGINT to a real ``zssd batch`` (LocalCluster) after some cases; the same command resumes."""
    import zarr

    out = tmp_path / "s.zarr"
    # the real entry point, wired with the batch sub-command only (independent of the other modules)
    boot = ("import sys; from zssd_engine import cli; cli.SUBCOMMANDS = {'batch': 'zssd_engine.cli.batch'}; "
            "sys.exit(cli.main(sys.argv[1:]))")
    cmd = [sys.executable, "-c", boot, "batch", "--gcm", GCM, "--start", "2022-08-01T00", "--end",
           "2022-08-03T18", "--region", REGION, "--method", "bilinear", "--out", str(out), "--workers", "2",
           "--no-progress"]
    # SIGINT back to its default in the child: a test run started in the background (nohup, `&`) inherits
    # an ignored SIGINT, and Python then keeps ignoring it
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    t0 = time.time()
    n = 0
    while time.time() - t0 < 120 and p.poll() is None:
        time.sleep(0.2)
        try:
            n = int(np.asarray(zarr.open_group(str(out), mode="r")["done"][:]).sum())
        except Exception:  # noqa: BLE001 - not created yet
            n = 0
        if n >= 2:
            break
    assert p.poll() is None, p.communicate()
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "run the same command again to resume" in err
    done = np.asarray(zarr.open_group(str(out), mode="r")["done"][:]).astype(bool)
    assert 2 <= done.sum() < done.size
    ds = open_store(out).load()
    assert np.isfinite(ds.t2m.values[done]).all()  # every step marked done is complete
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"{int(done.size - done.sum())} computed, {int(done.sum())} skipped" in r.stdout
    xr.testing.assert_identical(_data(out).isel(time=slice(0, 4)), _data(bil_ref))
