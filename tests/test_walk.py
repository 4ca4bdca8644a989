"""A scripted walk through every source the server offers and every control, at component level (no browser).

After every action: no exception, no error logged by the app, the maps' caption and the status line describe
the case that is shown, the case is the selection unless the selection was refused, and a refused selection
is shown beside the field that caused it (and nowhere else).  The tiny untrained network and 2 steps keep it
fast; the browser pass is in ``test_e2e.py``.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("panel")

from zssd_engine.grids import Region  # noqa: E402
from zssd_engine.real_sources import REAL_SOURCES, source_dataset  # noqa: E402
from zssd_app.config import ServerConfig  # noqa: E402
from zssd_app.runner import RunQueue  # noqa: E402
from zssd_app.state import METHOD_LABELS, AppState  # noqa: E402
from zssd_app.views.common import DISPLAY  # noqa: E402
from zssd_app.views.maps import PANELS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
USER = "MY-FILE"  # a configured user file (the CMIP5 tas/uas/vas file under another name)


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record) -> None:
        self.records.append(self.format(record))


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from zssd_app.app import create_app

    files = {USER: sorted((ROOT / "assets" / "gcm").glob("*.nc"))}
    cfg = ServerConfig(prior="tiny", bcsd=False, export_dir=tmp_path_factory.mktemp("exports"), gcm_files=files)
    state = AppState(config=cfg, queue=RunQueue(1))
    return create_app(state, initial_case=None)


@pytest.fixture()
def errors():
    h = _Errors()
    loggers = [logging.getLogger(n) for n in ("zssd_app", "panel", "bokeh", "param")]
    for lg in loggers:
        lg.addHandler(h)
    yield h
    for lg in loggers:
        lg.removeHandler(h)


def _valid_region(source: str) -> str:
    """A 16° box with data for the source (the middle of a regional source's domain)."""
    if source in REAL_SOURCES and not REAL_SOURCES[source].paired:
        ds = source_dataset(source)
        lat = float(ds.lat.mean())
        lon = float(ds.lon.mean())
        return Region.around(lat, ((lon + 180) % 360) - 180, 16.0).as_text()
    return "10,26,-80,-64"


def check(app, errors, expect_error: str | None = None) -> None:
    """The invariants after an action (``expect_error``: the field a refusal must be shown beside)."""
    s, v = app.zssd_state, app.zssd_views
    assert not errors.records, errors.records
    c = s.case
    assert c is not None, s.case_error
    if expect_error is not None:
        assert s.case_error, f"expected a refusal beside {expect_error!r}"
        assert s.case_error_field == expect_error, (s.case_error_field, s.case_error)
    for f, alert in v["controls"].errors.items():  # shown beside its field, and only there
        on = bool(s.case_error) and f == s.case_error_field
        assert alert.visible == on and (alert.object == s.case_error if on else True), f
    if s.case_error:
        assert s.status_text.startswith("Not ready") and s.case_error in s.status_text
    else:
        assert (c.source_id, f"{c.time:%Y-%m-%d %H:%M}", c.region.as_text()) == \
            (s.gcm, f"{s.time:%Y-%m-%d %H:%M}", s.region_text)
        if s.status == "idle":
            assert s.status_text.startswith("Ready: ") and c.source_id in s.status_text
            assert f"{c.time:%Y-%m-%d %H:%M}" in s.status_text
    cap = v["maps"]._caption.object
    assert c.source_id in cap and f"{c.time:%Y-%m-%d %H:%M}" in cap and c.region.as_text() in cap, cap
    assert DISPLAY[s.variable].label in cap
    for p in PANELS:  # every panel can be drawn from what the state holds
        d = v["maps"]._data(p)
        assert d["key"] == s.variable and d["title"]


SOURCES = ['IPSL-CM6A-LR', 'MIROC6', 'AWI-CM-1-1-MR', 'MPI-ESM1-2-LR', 'MPI-ESM1-2-HR', 'MPI-ESM-LR', 'x6', 'x10',
           'x20', 'ERA5-x20', 'ERA5-x10', 'NCEP-storm-1996', 'GFS-2.5deg', USER]


def test_the_walk_covers_every_source_the_server_offers(app):
    assert sorted(app.zssd_state.param.gcm.objects) == sorted(SOURCES)


@pytest.mark.parametrize("source", SOURCES)
def test_walk(app, errors, source):
    s, v = app.zssd_state, app.zssd_views
    s.param.update(steps=2, members=1, method="ZSSD")
    # ---- select the source (the date moves into its range), then a region with data
    v["controls"].gcm.value = source
    s.region_text = _valid_region(source)
    check(app, errors)
    assert s.case.source_id == source
    start_time, good_region = s.time, s.region_text
    # ---- every variable (a variable the source lacks is said so in the panel, never a crash)
    for var in ("t2m", "msl", "wind"):
        s.variable = var
        check(app, errors)
    # ---- every method: the ζ field shows what a Run will use
    for label in METHOD_LABELS:
        s.method = label
        g = s.effective_guidance()
        assert (g is None) == (label == "DDRM")
        if g is not None:
            assert s.guidance_scale == pytest.approx(g, rel=1e-3)
    s.method = "ZSSD"
    # ---- regions: too small, off the globe, across the dateline, then back
    s.region_text = "0,4,0,4"
    check(app, errors, expect_error="region")
    s.region_text = "not a region"
    check(app, errors, expect_error="region")
    v["controls"]._on_bounds(bounds=(-10.0, 85.0, 10.0, 110.0))  # a box drawn beyond the pole
    check(app, errors, expect_error="region")
    s.region_text = "10,26,172,-172"
    global_source = not (source in REAL_SOURCES and not REAL_SOURCES[source].paired and source != "GFS-2.5deg")
    check(app, errors, expect_error=None if global_source else "region")
    s.region_text = good_region
    check(app, errors)
    # ---- a time outside the data, then inside again
    s.time = dt.datetime(1850, 1, 1)
    check(app, errors, expect_error="time")
    s.time = start_time
    check(app, errors)
    # ---- Run then Stop (threaded through the queue), then a short run to the end
    job = s.run()
    assert job is not None and s.status in ("queued", "running")
    s.stop()
    job.wait(60)
    s.poll()
    assert s.status in ("cancelled", "done"), s.status_text
    check(app, errors)
    s.run(sync=True)
    assert s.status == "done", s.status_text
    assert s.live is not None and np.isfinite(s.live).any()
    check(app, errors)
    # ---- exports
    path = s.export_netcdf()
    assert path.exists() and path.stat().st_size > 0
    assert s.export_png().getbuffer().nbytes > 1000
    # ---- the teaching scrubber, end to start
    tv = v["teaching"]
    tv.active = True
    tv.refresh()
    for k in range(tv.player.end, -1, -1):
        tv.player.value = k
    tv.active = False
    check(app, errors)
    # ---- zssd-bc: refused with its reason where it cannot be trained (never a silent fallback)
    s.method = "ZSSD-BC"
    if s.run(sync=True) is None:
        assert s.status == "error" and "zssd-bc" in s.status_text.lower()
    s.method = "ZSSD"


def test_walk_cyclone_cases(app, errors):
    s, v = app.zssd_state, app.zssd_views
    real = [n for n, c in s.catalog.items() if c.real]
    demo = [n for n, c in s.catalog.items() if not c.real]
    for name in real[:1] + demo[:2]:
        v["controls"].case_select.value = name
        check(app, errors)
        c = s.catalog[name]
        assert s.case_name == name and s.case.region == c.region
        r = s.case.region  # the storm is inside the box, near its middle
        assert r.south < c.peak_lat < r.north
        assert abs(c.peak_lat - 0.5 * (r.south + r.north)) < 0.25 * r.height
    cands = s.find_cyclones()
    check(app, errors)
    if cands:
        s.centre_on(0)
        check(app, errors)
