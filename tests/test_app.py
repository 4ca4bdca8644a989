"""Component tests of the dashboard (no browser): factory, state handlers, runner, views, exports, config."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("panel")

import holoviews as hv  # noqa: E402
import panel as pn  # noqa: E402
import xarray as xr  # noqa: E402

from zssd_engine.grids import GridError, Region  # noqa: E402
from zssd_app.config import ServerConfig, load_config, parse_gcm_files  # noqa: E402
from zssd_app.runner import JobCancelled, RunJob, RunQueue  # noqa: E402
from zssd_app.cases import snap_region  # noqa: E402
from zssd_app.state import AppState  # noqa: E402
from zssd_app.views.scores import metrics_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> ServerConfig:
    # the tiny untrained prior keeps sampling fast; BCSD off (it trains ~20 s per case)
    return ServerConfig(prior="tiny", bcsd=False, export_dir=tmp_path_factory.mktemp("exports"))


@pytest.fixture()
def state(config) -> AppState:
    """A session on the default storm, over a 16° box (64x64 cells) to keep the tiny runs quick."""
    s = AppState(config=config, queue=RunQueue(1))
    c = max((c for c in s.catalog.values() if not c.real), key=lambda c: c.peak_wind)  # a demo storm
    s.param.update(gcm="MPI-ESM1-2-HR", time=c.peak_time.to_pydatetime(),
                   region_text=Region.around(c.peak_lat, c.peak_lon, 16.0).as_text())
    assert s.case is not None and s.case_error == "", s.notifications
    return s


def _levels(state: AppState) -> list[str]:
    return [lvl for lvl, _ in state.notifications]


# ------------------------------------------------------------------ factory
def test_create_app_builds(config):
    from zssd_app.app import TAB_NAMES, create_app

    s = AppState(config=config, queue=RunQueue(1))
    app = create_app(s)
    assert isinstance(app, pn.template.FastListTemplate)
    assert app.title == "ZSSD Explorer"
    tabs = app.zssd_views["tabs"]
    assert tuple(tabs._names) == TAB_NAMES
    assert s.case is not None and s.case.paired
    # untrained network → visible warning banner
    assert app.zssd_views["banner"].visible and "Untrained" in app.zssd_views["banner"].object
    # every tab's content serialises to Bokeh models without errors
    for name, view in app.zssd_views.items():
        if name not in ("tabs",):
            assert pn.panel(view).get_root() is not None, name


def test_reference_is_never_called_era5(state):
    from zssd_app.views.about import ABOUT_TEXT
    from zssd_app.views.maps import MapsView

    m = MapsView(state=state)
    title = m._data("ref")["title"]
    assert title == "Demo world (synthetic stand-in for ERA5)"
    assert "synthetic stand-in for ERA5" in ABOUT_TEXT


def test_default_case_is_the_real_era5_cyclone(config):
    """The app opens on the real cyclone of the ERA5 week: real reference, lapse panel, no fake BCSD."""
    from zssd_app.views.maps import MapsView

    s = AppState(config=config, queue=RunQueue(1))
    name = s.default_case_name()
    assert name.startswith("ERA5-TC") and s.catalog[name].real
    assert s.pick_case(name), s.notifications
    assert s.gcm == "ERA5-x20" and s.case.real_reference and s.case.paired
    m = MapsView(state=s)
    assert m._data("ref")["title"] == "ERA5 (real, 1° points)"
    assert "real ERA5" in m._caption.object
    lapse = m._data("lapse")
    assert lapse["values"] is not None and lapse["values"].shape == s.case.fine.shape
    assert "not available" in m._data("bcsd")["message"]
    s.variable = "t2m"
    table = metrics_table(s, "t2m").set_index("Method")
    bil, lap = (float(table.loc[k].iloc[0]) for k in ("Bilinear", "Bilinear + lapse"))
    # scored at the 1° points: the same figures as the engine's evaluation of this case
    from zssd_engine import metrics

    ref = s.case.reference["t2m"]
    want = float(metrics.mae(metrics.at_reference_points(s.baselines["lapse"]["t2m"], ref), ref))
    assert lap == pytest.approx(want, rel=1e-2) and lap != bil
    assert table.loc["BCSD"].iloc[0] == "n/a" and "one week" in table.loc["BCSD", "Note"]


# ------------------------------------------------------------------ selection
def test_pick_case_sets_gcm_time_region(state):
    name = sorted(state.catalog)[3]
    c = state.catalog[name]
    state.gcm = "MPI-ESM-LR"  # real file (2005): cannot show a 2021–2023 storm → switched to a demo GCM
    assert state.pick_case(name)
    assert state.gcm in state.demo_sources()
    assert state.time == c.peak_time.to_pydatetime()
    assert state.region_text == c.region.as_text()
    assert state.case.region == c.region and state.case_name == name
    assert state.case.fine.shape == (128, 128)  # the catalog's 32° box
    assert "bilinear" in state.baselines
    assert state.case_error == ""


def test_invalid_region_notifies_and_keeps_case(state):
    before = state.case
    for bad in ("10,12,0,5", "0,80,0,100", "not a region", "95,100,0,30"):
        state.notifications.clear()
        state.region_text = bad
        assert state.case_error, bad
        assert state.case_error_field == "region", bad  # shown beside the region field, not as a toast
        assert state.case is before  # the previous case is still shown
    state.region_text = "10,42,-80,-48"
    assert state.case_error == "" and state.case is not before
    assert state.case.region.as_text() == "10,42,-80,-48"


def test_date_outside_data_notifies(state):
    state.notifications.clear()
    state.gcm = "MPI-ESM-LR"  # the real file covers 2005 only: the date moves there, with a note
    assert state.case_error == "" and state.time.year == 2005
    assert "info" in _levels(state) and "2005" in state.notifications[-1][1]
    import datetime as dt

    state.time = dt.datetime(2022, 8, 15)  # typed outside the file: refused, naming its range
    assert state.case_error and "2005" in state.case_error and state.case_error_field == "time"
    state.time = dt.datetime(2005, 8, 15)
    assert state.case_error == "" and not state.case.paired
    table = metrics_table(state)
    assert table["Method"].tolist() == ["unpaired"]


def test_draw_region_snaps(state):
    assert state.set_region(10.1, 41.9, -79.9, -48.3)
    r = state.case.region
    assert (r.south, r.west) == (10.0, -80.0)
    assert r.height % 0.25 == 0 and r.width % 0.25 == 0
    state.notifications.clear()
    assert not state.set_region(10, 14, 0, 5)  # too small → message, no change
    assert "at least 16" in state.case_error


def test_snap_region_limits():
    r = snap_region(Region(10.1, 40.0, 170.3, -160.2), cell_multiple=8)
    assert r.south == 10.0 and r.west == 170.25 and r.height % 2 == 0 and r.width % 2 == 0
    with pytest.raises(GridError, match="at least 16"):
        snap_region(Region(0, 10, 0, 30))
    with pytest.raises(GridError, match="at most 64"):
        snap_region(Region(-40, 40, 0, 30))


def test_find_cyclones_offers_candidates(config):
    s = AppState(config=config, queue=RunQueue(1))
    # a clear storm on the ×10 task (2.5° averages keep the low visible)
    c = max(s.catalog.values(), key=lambda k: k.peak_wind)
    s.pick_case(c.name)
    s.gcm = "x10"
    cands = s.find_cyclones()
    assert cands, s.notifications
    best = cands[0]
    assert abs(best.lat - c.peak_lat) < 3.0
    assert abs((best.lon - c.peak_lon + 180) % 360 - 180) < 3.0
    assert s.centre_on(0)
    assert s.case.region.height == c.region.height


# ------------------------------------------------------------------ running
def test_run_sync_tiny_prior(state, tmp_path):
    state.steps = 3
    state.members = 2
    job = state.run(sync=True)
    assert job.status == "done", job.traceback
    assert state.status == "done" and state.step == 3 and state.n_steps == 3
    assert state.live is not None and state.live.shape == (4, 64, 64) and state.live_final
    assert np.isfinite(state.live).all()
    assert len(state.trace.frames) == 3 and len(state.trace.misfit) == 3
    assert isinstance(state.result, xr.Dataset) and state.result["t2m_members"].sizes["member"] == 2
    table = metrics_table(state)
    assert table["Method"].tolist()[:1] == ["Bilinear"] and any("ensemble mean" in m for m in table["Method"])
    # exports: NetCDF atomically into the export dir, PNG drawn by matplotlib
    path = state.export_netcdf()
    assert path.exists() and path.parent == Path(state.config.export_dir)
    assert not list(path.parent.glob("*.tmp"))
    with xr.open_dataset(path) as ds:
        assert "t2m" in ds and ds.attrs["method"] == "zssd"
    png = state.export_png().getvalue()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    state.cancel_all()  # session end removes its export files
    assert not path.exists()


def test_run_each_method(state):
    state.steps = 2
    for m in ("DPS", "DDRM"):
        state.method = m
        job = state.run(sync=True)
        assert job.status == "done", job.traceback
        assert state.result.attrs["method"] == m.lower()


def test_stop_mid_run(state):
    state.steps = 200
    job = state.run()
    t0 = time.monotonic()
    while state.step < 2:
        state.poll()
        assert time.monotonic() - t0 < 60, "run did not start"
        time.sleep(0.05)
    state.stop()
    assert job.wait(30)
    state.poll()
    assert job.status == "cancelled"
    assert state.status == "cancelled" and 2 <= state.step < 200
    assert state.result is None  # nothing half-written
    assert "Stopped" in state.status_text
    # the session keeps working: a new short run completes
    state.steps = 2
    assert state.run(sync=True).status == "done"


def test_session_destroyed_cancels_queued_and_running(config):
    q = RunQueue(1)
    gate = threading.Event()
    blocker = q.submit(RunJob(lambda j: gate.wait(10), owner="other"))
    s = AppState(config=config, queue=q)
    s.pick_case(s.default_case_name())
    s.steps = 5
    job = s.run()
    time.sleep(0.3)
    s.poll()
    assert job.status == "queued" and s.queue_position == 1 and "position 1" in s.status_text
    s.cancel_all()
    assert job.wait(5) and job.status == "cancelled"
    gate.set()
    assert blocker.wait(5) and blocker.status == "done"


def test_run_queue_fifo_positions_and_errors():
    q = RunQueue(1)
    gate = threading.Event()
    order = []

    def work(name):
        def fn(job):
            if name == "a":
                gate.wait(10)
            if name == "bad":
                raise RuntimeError("boom")
            order.append(name)
        return fn

    a = q.submit(RunJob(work("a")))
    time.sleep(0.1)
    b = q.submit(RunJob(work("b")))
    c = q.submit(RunJob(work("bad")))
    time.sleep(0.3)
    assert (a.position, b.position, c.position) == (0, 1, 2)
    assert q.snapshot() == (1, 2)
    gate.set()
    for j in (a, b, c):
        assert j.wait(5)
    assert order == ["a", "b"] and c.status == "error" and "boom" in str(c.error)
    cancelled = q.run_inline(RunJob(lambda j: (_ for _ in ()).throw(JobCancelled())))
    assert cancelled.status == "cancelled"


def test_compare_zssd_dps_x20(state):
    state.steps = 2
    job = state.run_compare(sync=True)
    assert job.status == "done", job.traceback
    assert set(state.compare) == {"ZSSD", "DPS"}
    for tr in state.compare.values():
        assert tr.source_id == "x20" and len(tr.frames) == 2 and len(tr.misfit) == 2
    assert state.compare_status == "done"


def test_teaching_comparison_with_a_trace_without_frames_renders(state):
    """Defect (server log): a comparison whose DPS run had no frame yet raised IndexError in the teaching view."""
    import dataclasses

    from zssd_app.views.teaching import TeachingView

    state.steps = 2
    assert state.run_compare(sync=True).status == "done"
    state.compare = {**state.compare, "DPS": dataclasses.replace(state.compare["DPS"], frames=[])}
    view = TeachingView(state=state)
    view.mode.value = "ZSSD vs DPS at ×20"
    view.active = True
    view.refresh()
    view._render(1)  # renders the ZSSD trace; the empty one is skipped


# ------------------------------------------------------------------ views
def _glyph_types(model) -> set[str]:
    from bokeh.models import GlyphRenderer

    return {type(r.glyph).__name__ for r in model.select({"type": GlyphRenderer})}


def test_map_renders_with_coastlines(state):
    from zssd_app.views.maps import MapsView

    m = MapsView(state=state)
    plot = hv.render(m._pane.object, backend="bokeh")
    kinds = _glyph_types(plot)
    assert "MultiLine" in kinds  # coastlines (Natural Earth, offline)
    assert "Image" in kinds
    # wind: arrows
    state.variable = "wind"
    kinds = _glyph_types(hv.render(m._pane.object, backend="bokeh"))
    assert "Segment" in kinds or "Arrow" in kinds or len(kinds) > 2
    # colour range fixed per case, same for all field panels
    assert m._data("ref")["clim"] == m._data("bilinear")["clim"] == m._data("gcm")["clim"]


def test_live_update_goes_through_pipe(state):
    from zssd_app.views.maps import MapsView

    m = MapsView(state=state)
    pipe = m._pipes["live"]
    assert pipe.data["message"] == "press Run"
    state.steps = 2
    state.run(sync=True)
    assert m._pipes["live"] is pipe  # same stream: zoom survives updates
    assert pipe.data["values"] is not None and "result" in pipe.data["title"]


def _map_models(m) -> list[dict]:
    """What the browser is sent of each panel: image, colours, title, labels, arrows, message."""
    out = []
    for ov, (img, _coast, arrows, text) in m._overlay_plots()[0][1]:
        cm = img.handles["color_mapper"]
        out.append({"title": ov.handles["plot"].title.text, "image": np.asarray(img.handles["source"].data["image"][0]),
                    "palette": list(cm.palette), "clim": (cm.low, cm.high), "alpha": img.handles["glyph"].global_alpha,
                    "colorbar": img.handles["colorbar"].title, "hover": list(img.handles["hover"].tooltips),
                    "arrows": {k: np.asarray(v) for k, v in arrows.handles["source"].data.items()},
                    "message": list(text.handles["source"].data["text"])})
    return out


def _assert_same_models(a: list[dict], b: list[dict]) -> None:
    from zssd_app.views.maps import PANELS

    for p, x, y in zip(PANELS, a, b, strict=True):
        for k in x:
            if k == "image":
                np.testing.assert_array_equal(x[k], y[k], err_msg=p)
            elif k == "arrows":
                assert set(x[k]) == set(y[k]), p
                for c in x[k]:
                    np.testing.assert_allclose(x[k][c], y[k][c], err_msg=f"{p} arrows {c}")
            else:
                assert x[k] == y[k], (p, k, x[k], y[k])


def test_updates_in_place_give_the_models_a_re_render_gives(state, monkeypatch):
    """The fast path of a variable switch and of live frames writes into the Bokeh models exactly what a
    full re-render through the pipes writes (fields, missing panels, wind arrows, spread view)."""
    from bokeh.document import Document

    from zssd_app.views.maps import PANELS, MapsView

    m = MapsView(state=state)
    doc = Document()
    doc.add_root(m.__panel__().get_root(doc))
    taken = []
    real = m._update_in_place
    monkeypatch.setattr(m, "_update_in_place", lambda datas: taken.append(real(datas)) or taken[-1])

    def check():
        fast = _map_models(m)
        with m._frozen():
            for p in PANELS:
                m._pipes[p].send(m._data(p))  # the slow path, from the same state
        _assert_same_models(fast, _map_models(m))

    for var in ("wind", "t2m", "msl", "wind"):  # before any run: live and diff panels are placeholders
        state.variable = var
        check()
    state.steps = 2
    state.members = 2
    state.run(sync=True)
    state.poll()
    for var in ("t2m", "wind"):
        state.variable = var
        check()
    state.result_view = "spread"
    check()
    assert taken and all(taken) and m.fallbacks == 0, (taken, m.fallbacks)  # every update went in place


def test_coastlines_across_dateline():
    from zssd_app.views.common import coastlines_for

    pieces = coastlines_for(160.0, 200.0, -30.0, 0.0)  # Fiji / Samoa across 180°
    assert pieces
    lon = np.concatenate([p[:, 0] for p in pieces])
    assert lon.max() > 180.0 and lon.min() >= 158.0


def test_spectra_and_teaching_views(state):
    from zssd_app.views.spectra import SpectraView, spectra_of
    from zssd_app.views.teaching import TeachingView, guidance_pull, stage_text

    state.steps = 3
    state.run(sync=True)
    sp = spectra_of(state)
    assert {"Reference (demo world)", "GCM input", "Bilinear", "ZSSD result"} <= set(sp)
    for wl, p in sp.values():
        assert wl.shape == p.shape and np.all(wl > 0)
    view = SpectraView(state=state)
    assert len(view._table.value) >= 2
    tv = TeachingView(state=state)
    assert tv.player.end == 2 and tv.player.value == 2
    assert hv.render(tv._maps.object, backend="bokeh") is not None
    tv.player.value = 0  # scrub back
    assert "Early" in tv.stage.object or "Middle" in tv.stage.object
    assert "Late" in stage_text(0.01, 9, 10)
    f = state.case.fine
    from zssd_app.views.common import display_field

    pull = guidance_pull(state.case, display_field(state.case.reference, "msl")[0],
                         display_field(state.case.gcm, "msl")[0])
    assert pull.shape == f.shape and np.isfinite(pull).mean() > 0.9


def test_export_buttons(state):
    from zssd_app.views.export import export_widgets

    row = export_widgets(state)
    nc, png = row.objects
    assert nc.disabled  # nothing to export before a run
    assert png.callback() is not None
    state.steps = 2
    state.run(sync=True)
    assert not nc.disabled
    path = nc.callback()
    assert Path(path).exists() and nc.filename.endswith(".nc")


# ------------------------------------------------------------------ config / serve
def test_config_env_and_toml(tmp_path):
    f = tmp_path / "tas.nc"
    f.write_bytes(b"")
    files, problems = parse_gcm_files(f"MINE={f};BROKEN")
    assert files == {"MINE": [f]} and problems
    toml = tmp_path / "zssd.toml"
    toml.write_text(f'max_concurrent_runs = 2\nprior = "tiny"\n[gcm_files]\nOTHER = ["{f}"]\nMISSING = ["/nope.nc"]\n')
    cfg = load_config({"ZSSD_CONFIG": str(toml), "ZSSD_GCM_FILES": f"MINE={f};MIROC6={f}", "ZSSD_BCSD": "0"})
    assert set(cfg.gcm_files) == {"OTHER", "MINE"}
    assert cfg.max_concurrent_runs == 2 and cfg.prior == "tiny" and not cfg.bcsd
    assert any("MISSING" in p for p in cfg.problems) and any("MIROC6" in p for p in cfg.problems)


def test_configured_gcm_file_is_offered_and_bad_file_reported(tmp_path):
    good = sorted((ROOT / "assets" / "gcm").glob("*.nc"))
    bad = tmp_path / "broken.nc"
    bad.write_text("not netcdf")
    cfg = ServerConfig(prior="tiny", bcsd=False, export_dir=tmp_path,
                       gcm_files={"MYMODEL": good, "BROKEN": [bad]})
    s = AppState(config=cfg, queue=RunQueue(1))
    assert "MYMODEL" in s.param.gcm.objects and "BROKEN" in s.param.gcm.objects
    import datetime as dt

    s.param.update(time=dt.datetime(2005, 3, 16), region_text="-30,2,30,62")
    s.gcm = "MYMODEL"
    assert s.case_error == "" and s.case.source_id == "MYMODEL" and not s.case.paired
    s.notifications.clear()
    s.gcm = "BROKEN"
    assert s.case_error and s.case_error_field == "gcm"
    assert s.case.source_id == "MYMODEL"


def test_serve_command_line():
    import argparse

    from zssd_engine.cli import serve as serve_cmd

    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers()
    serve_cmd.add_parser(sub)
    args = ap.parse_args(["serve", "--port", "5123", "--address", "0.0.0.0", "--allow-websocket-origin",
                          "example.org:5123", "--prior", "tiny", "--max-runs", "2"])
    cmd, env = serve_cmd.build_command(args)
    assert cmd[1:4] == ["-m", "panel", "serve"] and cmd[4].endswith("zssd_app/app.py")
    assert cmd[cmd.index("--port") + 1] == "5123" and "example.org:5123" in cmd
    assert env["ZSSD_PRIOR"] == "tiny" and env["ZSSD_MAX_RUNS"] == "2"
    with pytest.raises(ValueError):
        serve_cmd.build_command(ap.parse_args(["serve", "--port", "0"]))


def test_engine_never_imports_panel():
    code = ("import sys, zssd_engine.cli.serve, zssd_engine.pipeline, zssd_engine.cyclones; "
            "assert 'panel' not in sys.modules and 'bokeh' not in sys.modules, 'panel imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


def test_ensemble_run_shows_members_mean_spread_and_the_cyclone_panel(config):
    """An ensemble run on the real cyclone case: member/mean/spread views, CRPS and spread-skill, cyclone tab."""
    from zssd_app.views.cyclone import CycloneView, cyclone_analysis
    from zssd_app.views.maps import MapsView

    s = AppState(config=config, queue=RunQueue(1))
    assert s.pick_case(s.default_case_name())
    s.param.update(members=3, steps=3)
    assert s.run(sync=True).status == "done"
    s.poll()
    assert s.live_final and s.result_meta["members"] == 3
    m = MapsView(state=s)
    s.result_member = 2
    assert m._data("live")["title"].endswith("member 2 of 3")
    s.result_view = "mean"
    assert "ensemble mean of 3" in m._data("live")["title"]
    s.result_view = "spread"
    spread = m._data("live")
    assert "spread" in spread["title"] and spread["cmap"] == "viridis"
    assert np.nanmin(spread["values"]) >= 0 and np.nanmax(spread["values"]) > 0
    table = metrics_table(s, "t2m")
    assert "Spread–skill" in table.columns and any("(ensemble)" in str(x) for x in table.iloc[:, 4])
    mae = table.set_index("Method").loc["Bilinear"].iloc[0]
    assert table.set_index("Method").loc["Bilinear"].iloc[3] == mae  # a deterministic field: CRPS = MAE
    a = cyclone_analysis(s)
    assert a is not None and a["real"]
    assert {"Reference", "Bilinear", "Bilinear + lapse"} <= set(a["curves"]["msl"])
    assert sum("member" in k for k in a["curves"]["msl"]) == 3
    assert len(a["table"]) == 2 + 3 and set(a["table"]["Hit (2°, 8 hPa)"]) <= {"yes", "no"}
    # the reference's own profile: the pressure rises away from the centre
    r, p = a["curves"]["msl"]["Reference"]
    assert p[0] < p[np.isfinite(p)][-1] - 10
    view = CycloneView(state=s)
    assert "ERA5-TC" in view._title.object and view._profiles.object is not None
    assert pn.panel(view).get_root() is not None


def test_cyclone_panel_on_a_demo_cyclone_case(config):
    """The demo world's reference carries a time axis: the cyclone analysis must work there too."""
    from zssd_app.views.cyclone import cyclone_analysis

    s = AppState(config=config, queue=RunQueue(1))
    name = next(n for n, c in s.catalog.items() if not c.real)
    assert s.pick_case(name), s.notifications
    a = cyclone_analysis(s)
    assert a is not None and not a["real"] and "Reference" in a["curves"]["msl"]
    r, p = a["curves"]["msl"]["Reference"]
    assert np.isfinite(p[:3]).all() and p[0] < np.nanmax(p)


def test_zssd_bc_in_the_app_runs_on_a_pseudo_gcm_and_is_refused_on_real_weather(state, config):
    state.param.update(method="ZSSD-BC", steps=2)
    job = state.run(sync=True)
    assert job.status == "done", job.traceback
    state.poll()
    assert state.result.attrs["method"] == "zssd-bc" and "month" in state.result.attrs["bias_correction_training"]
    s = AppState(config=config, queue=RunQueue(1))
    assert s.pick_case(s.default_case_name())  # the real ERA5 cyclone: no history to train on
    s.param.update(method="ZSSD-BC", steps=2)
    assert s.run(sync=True) is None and s.status == "error"
    assert "zssd-bc cannot correct ERA5-x20" in s.status_text


def test_picking_a_source_moves_the_date_into_its_range_and_drops_a_foreign_case(state):
    """Defect: MPI-ESM-LR kept a 2022 date and failed; the case picker kept the old cyclone."""
    assert state.case_name == "" or state.catalog[state.case_name]
    state.pick_case(next(n for n, c in state.catalog.items() if not c.real))
    assert state.case_name
    state.gcm = "MPI-ESM-LR"
    assert state.time.year == 2005 and state.case_error == "", state.case_error
    assert state.case_name == "" and state.case is not None and state.case.source_id == "MPI-ESM-LR"
    assert "MPI-ESM-LR" in state.status_text and state.status_text.startswith("Ready")
    state.gcm = "ERA5-x20"
    assert (state.time.year, state.time.month) == (2026, 3) and state.case.source_id == "ERA5-x20"
    state.gcm = "MPI-ESM1-2-HR"  # back to the demo world: a date inside its years
    assert 1991 <= state.time.year <= 2023 and state.case_error == ""


def test_guidance_field_shows_the_value_a_run_uses(state):
    state.param.update(method="ZSSD", steps=50, guidance_auto=True)
    assert state.guidance_scale == pytest.approx(state.effective_guidance(), rel=1e-3) and state.guidance_scale > 1
    state.method = "DPS"
    assert state.guidance_scale == pytest.approx(state.effective_guidance(), rel=1e-3) and state.guidance_scale > 10


def test_guidance_follows_the_source_kind_and_says_where_it_was_tuned(state, tmp_path, monkeypatch):
    """A real source takes the prior's real-weather ζ table, a pseudo-GCM its demo one; the note says which."""
    import zssd_engine.samplers.guidance_table as C
    from zssd_app.views.controls import Controls

    monkeypatch.setattr(C, "TUNED_GUIDANCE_FILE", tmp_path / "guidance_defaults.json")
    sha = state.prior().sha256
    C.install_tuned_table({"checkpoint_sha256": sha, "domain": "demo", "scales": {"zssd": {"50": 2.0}}})
    C.install_tuned_table({"checkpoint_sha256": sha, "domain": "real", "scales": {"zssd": {"50": 6.0}}})
    state.param.update(method="ZSSD", steps=20, guidance_auto=True)
    state.steps = 50  # a change of steps re-reads the (patched) table
    controls = Controls(state=state)
    assert state.guidance_scale == pytest.approx(2.0) and "demo-world cases" in controls.g_note.object
    state.gcm = "ERA5-x20"
    assert state.guidance_scale == pytest.approx(6.0) and state.effective_guidance() == pytest.approx(6.0)
    assert "real-weather cases" in controls.g_note.object
    state.gcm = "MPI-ESM1-2-HR"
    assert state.guidance_scale == pytest.approx(2.0)


def test_variable_the_gcm_lacks_after_a_run_never_crashes(state):
    """Defect: MPI-ESM-LR (no psl) after a run, switching to sea-level pressure raised a TypeError in the maps."""
    import datetime as dt

    from zssd_app.views.maps import PANELS, MapsView

    state.param.update(gcm="MPI-ESM-LR", time=dt.datetime(2005, 8, 16), variable="wind", steps=2)
    assert state.run(sync=True).status == "done"
    state.poll()
    m = MapsView(state=state)
    state.variable = "msl"
    for p in PANELS:
        d = m._data(p)
        if p in ("gcm", "bilinear", "lapse", "diff"):
            assert d["values"] is None and "not" in (d["message"] or ""), p
    assert "Sea-level pressure" in m._caption.object or "sea-level" in m._caption.object.lower()


def test_colour_scale_includes_the_cyclone_core(config):
    """Defect: the msl scale stopped at ~980 hPa over a 963 hPa core (and wind below the peak)."""
    from zssd_app.views.common import display_field

    s = AppState(config=config, queue=RunQueue(1))
    assert s.pick_case(s.default_case_name())
    ref_msl = display_field(s.case.reference_display, "msl")[0]
    ref_wind = display_field(s.case.reference_display, "wind")[0]
    assert s.clims["msl"][0] <= np.nanmin(ref_msl) and s.clims["wind"][1] >= np.nanmax(ref_wind)


def test_unpaired_source_starts_on_a_variable_it_has_and_plots_no_reference_spectrum(state):
    import datetime as dt

    from zssd_app.views.spectra import spectra_of

    state.variable = "msl"
    state.param.update(gcm="MPI-ESM-LR", time=dt.datetime(2005, 8, 16))
    assert state.variable != "msl" and not state.case.paired  # the file has no psl
    assert not any(k.startswith("Reference") for k in spectra_of(state))


# ------------------------------------------------------------------ issue 16/17: notifications, loading, store
class _FakeToasts:
    def __init__(self):
        self.shown = []

    def _add(self, level, text, duration):
        self.shown.append((level, text, duration))
        return self

    def info(self, text, duration):
        return self._add("info", text, duration)

    def success(self, text, duration):
        return self._add("success", text, duration)

    def warning(self, text, duration):
        return self._add("warning", text, duration)

    def error(self, text, duration):
        return self._add("error", text, duration)

    def destroy(self):
        self.shown.append(("destroyed", "", 0))


def test_toasts_time_out_do_not_repeat_and_selection_errors_stay_beside_their_field(state, monkeypatch):
    """Defect 4: notifications never dismissed, stacked duplicates and covered the maps."""
    from zssd_app.app import create_app

    fake = _FakeToasts()
    monkeypatch.setattr(type(pn.state), "notifications", property(lambda self: fake))
    for _ in range(3):
        state.notify("error", "Run failed: boom")
    assert [t for t in fake.shown if t[1] == "Run failed: boom"] == [("error", "Run failed: boom", 9000)]
    assert all(d > 0 for _, _, d in fake.shown)  # every toast times out, errors included
    views = create_app(state, initial_case=None).zssd_views
    fake.shown.clear()
    state.region_text = "0,4,0,4"  # a selection error: beside the region field, not a toast
    assert not fake.shown
    alert = views["controls"].errors["region"]
    assert alert.visible and "at least 16" in alert.object
    assert not views["controls"].errors["time"].visible and not views["controls"].errors["gcm"].visible
    assert state.status_text.startswith("Not ready")  # a Run would not start: the status line says so
    state.region_text = "10,42,-80,-48"
    assert not alert.visible and state.status_text.startswith("Ready")


def test_case_loads_off_the_event_loop_and_the_old_maps_are_marked(config):
    """Defect 3 / issue 17: a new case builds on the store's threads; the maps keep the old case under its own
    caption with a loading mark; a Run pressed meanwhile starts when the case is in place."""
    import threading as th

    from zssd_app.app import create_app
    from zssd_app.cases import CaseStore

    store = CaseStore(max_items=4)
    s = AppState(config=config, queue=RunQueue(1), store=store)
    s.param.update(gcm="x20", time=__import__("datetime").datetime(2022, 8, 28, 12), region_text="10,26,-80,-64")
    views = create_app(s, initial_case=None).zssd_views
    maps = views["maps"]
    old = s.case
    assert old is not None and "10,26,-80,-64" in maps._caption.object
    s.background = True
    gate = th.Event()
    real_build = __import__("zssd_app.cases", fromlist=["build_case"]).build_case

    def slow_build(*a, **k):
        gate.wait(30)
        return real_build(*a, **k)
    import zssd_app.selection as sel
    orig = sel.build_case
    sel.build_case = slow_build
    try:
        s.region_text = "12,28,-80,-64"
        assert s.status == "loading" and s.case is old and maps._pane.loading
        assert "10,26,-80,-64" in maps._caption.object  # never the new selection over the old maps
        assert s.run() is None and s._run_when_ready  # Run while loading: it will start when ready
        gate.set()
        s.wait_until_ready(60)
    finally:
        sel.build_case = orig
    assert s.case is not old and s.case.region.as_text() == "12,28,-80,-64"
    assert not maps._pane.loading and "12,28,-80,-64" in maps._caption.object
    assert s.job is not None  # the Run pressed while loading was queued
    s.job.wait(120)
    s.poll()
    assert s.status == "done", s.status_text


def test_case_store_builds_once_for_concurrent_sessions_and_stays_bounded():
    import threading as th

    from zssd_app.cases import CaseStore, PreparedCase

    store = CaseStore(max_items=2, workers=2)
    calls, gate = [], th.Event()

    def build(k):
        def f():
            calls.append(k)
            gate.wait(10)
            return PreparedCase(case=k, baselines={}, clims={})
        return f
    futs = [store.request(("a",), build("a")) for _ in range(5)]  # five sessions, one case
    gate.set()
    assert {f.result(10).case for f in futs} == {"a"} and calls == ["a"]
    assert store.stats.misses == 1 and store.stats.joined == 4
    assert store.lookup(("a",)).case == "a" and store.stats.hits == 1
    for k in ("b", "c"):
        store.get((k,), build(k))
    assert len(store) == 2 and store.lookup(("a",)) is None  # least recently used dropped

    def broken():
        raise ValueError("bad file")
    with pytest.raises(ValueError, match="bad file"):
        store.get(("x",), broken)
    assert store.lookup(("x",)) is None  # failures are not cached: a fixed file loads next time


def test_queue_wait_estimate_from_the_running_jobs_speed():
    """Defect 13: the queue position comes with an estimated wait."""
    q = RunQueue(1)
    started = threading.Event()
    release = threading.Event()

    def work(job):
        job.progress(10, 0.5)  # 10 of 50 steps done at 0.5 s/step
        started.set()
        release.wait(10)

    a = q.submit(RunJob(work, steps=50, units_per_step=2.0))
    started.wait(10)
    b = q.submit(RunJob(lambda j: None, steps=20, units_per_step=1.0))
    c = RunJob(lambda j: None, steps=10, units_per_step=4.0)
    q.submit(c)
    time.sleep(0.3)
    assert q.wait_estimate(b) == pytest.approx(40 * 0.5)  # the running job's 40 steps left
    # c waits for a's 40 steps and b's 20 (half the cost per step of a's): 20 s + 5 s
    assert q.wait_estimate(c) == pytest.approx(40 * 0.5 + 20 * 0.25)
    release.set()
    for j in (a, b, c):
        j.wait(10)


def test_legibility_selected_buttons_stop_button_and_west_longitudes(state):
    """Defect 6: navy-on-navy selected buttons, a half-active looking Stop, −130 under 'Longitude (°E)'."""
    from bokeh.models import CustomJSTickFormatter

    from zssd_app.app import create_app
    from zssd_app.views.common import BUTTON_CSS
    from zssd_app.views.maps import MapsView

    views = create_app(state, initial_case=None).zssd_views
    for w in (views["variable"], views["controls"].method, views["controls"].stop_btn):
        assert BUTTON_CSS in w.stylesheets
    assert "color: #ffffff" in BUTTON_CSS and "[disabled]" in BUTTON_CSS
    plot = hv.render(MapsView(state=state)._pane.object)
    axes = [ax for p in plot.children for ax in getattr(p[0] if isinstance(p, tuple) else p, "xaxis", [])]
    assert axes and all(isinstance(ax.formatter, CustomJSTickFormatter) and "°W" in ax.formatter.code
                        for ax in axes)
    assert all(ax.axis_label == "Longitude" for ax in axes)


def test_a_closed_session_is_cancelled_although_the_served_script_module_is_cleared(monkeypatch):
    """``panel serve zssd_app/app.py`` runs app.py as a fresh module per session and clears that module's globals
    before the end-of-session callbacks run: the callback must still drop the session from the shared registry
    and cancel its runs (it raised ``NameError: SESSIONS`` and cancelled nothing)."""
    import importlib.util
    import types

    from zssd_app.sessions import SESSIONS

    spec = importlib.util.spec_from_file_location("bokeh_app_zssd_test", ROOT / "zssd_app" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # __name__ is not "bokeh…": the page is not built on import
    ended = []
    monkeypatch.setattr(pn.state, "add_periodic_callback", lambda *a, **k: None)
    monkeypatch.setattr(pn.state, "on_session_destroyed", ended.append)
    monkeypatch.setattr(type(pn.state), "curdoc", property(
        lambda self: types.SimpleNamespace(session_context=types.SimpleNamespace(id="sid-closed"))))
    cancelled = []
    fake_state = types.SimpleNamespace(poll=lambda: None, cancel_all=lambda: cancelled.append(True))
    module._register_session(fake_state, template=None)
    assert SESSIONS["sid-closed"][0] is fake_state  # the one registry every session shares
    module.__dict__.clear()  # what the server does to the session's script module
    ended[0](None)
    assert cancelled == [True] and "sid-closed" not in SESSIONS
