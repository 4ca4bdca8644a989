"""Per-session state of the dashboard: one :class:`AppState` per browser session.

The state owns the user's choices (source, time, region, method, …), the prepared case (from the
server-wide :class:`zssd_app.cases.CaseStore`), the live sampling run and its recorded trajectory.
It never touches widgets; views watch its parameters and its events (``case_loaded``,
``frame_ready``, ``baselines_changed``, ``history_changed``, ``compare_changed``).

Threading model
---------------
* In a server session (``background = True``) a selection is checked on the event loop (instant),
  and the case is built on the store's worker threads; ``status`` is ``"loading"`` meanwhile and the
  maps say so.  A case another session already built is served at once.  BCSD is trained once per
  case on the store's BCSD thread.  Tests leave ``background`` False: everything happens in the call.
* A sampling run is a :class:`zssd_app.runner.RunJob` in the server-wide queue; its worker thread
  only writes into this state's *mailbox* (under a lock).  :meth:`AppState.poll` — a periodic
  callback on the event loop every 250 ms (≤ 4 map updates per second) — moves mailbox contents
  into parameters, which the views render.  Tests call :meth:`poll` directly and run jobs
  synchronously with ``run(sync=True)``.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import threading
import time as _time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import param

from engine.grids import GridError, Region, wrap_lon
from engine.real_sources import REAL_SOURCES

from .cases import (DEMO_TIME_RANGE, CaseStore, PreparedCase, build_case, case_key, get_prior, get_store,
                    snap_region, source_label)
from .config import ServerConfig, server_config
from .records import Frame, Trace
from .runner import RunJob, RunQueue, get_queue

log = logging.getLogger("zssd_app")

__all__ = ["AppState", "Frame", "Trace", "get_prior", "snap_region", "METHOD_LABELS", "source_label",
           "DEFAULT_SOURCE", "POLL_MS"]

#: Method names shown in the app -> pipeline method ids.
METHOD_LABELS: dict[str, str] = {"ZSSD": "zssd", "ZSSD-BC": "zssd-bc", "DPS": "dps", "DDRM": "ddrm"}
DEFAULT_SOURCE = "MPI-ESM1-2-HR"
POLL_MS = 250
#: Seconds a toast stays (errors a little longer); the same text is not shown again while it is up.
TOAST_MS = {"info": 4000, "success": 3000, "warning": 6000, "error": 9000}


def _to_datetime(t) -> dt.datetime:
    """A valid time as a naive ``datetime`` (cftime dates keep their calendar fields)."""
    if hasattr(t, "year") and not isinstance(t, np.datetime64):
        try:
            return dt.datetime(t.year, t.month, t.day, t.hour)
        except ValueError:  # e.g. 30 February of a 360-day calendar: the month's last real day
            return dt.datetime(t.year, t.month, 28, t.hour)
    import pandas as pd

    return pd.Timestamp(t).to_pydatetime()


class AppState(param.Parameterized):
    """Everything one browser session knows."""

    # ---- the user's choices
    gcm = param.Selector(default=DEFAULT_SOURCE, objects=[DEFAULT_SOURCE], doc="GCM source id")
    time = param.Date(default=dt.datetime(2021, 8, 28, 12), doc="valid time (UTC)")
    region_text = param.String(default="", doc="region 'S,N,W,E' in degrees")
    case_name = param.String(default="", doc="the catalog cyclone picked last ('' = custom)")
    variable = param.Selector(default="msl", objects=["t2m", "msl", "wind"])
    method = param.Selector(default="ZSSD", objects=list(METHOD_LABELS))
    steps = param.Integer(default=50, bounds=(2, 250))
    guidance_auto = param.Boolean(default=True, doc="use the tuned guidance scale for the method and steps")
    guidance_scale = param.Number(default=1.0, bounds=(0.0, None), softbounds=(0.0, 20.0))
    members = param.Integer(default=1, bounds=(1, 8))
    result_view = param.Selector(default="member", objects=["member", "mean", "spread"],
                                 doc="what the result panel shows after an ensemble run")
    result_member = param.Integer(default=1, bounds=(1, 8), doc="which member the result panel shows")
    seed = param.Integer(default=0, bounds=(0, 2 ** 31 - 1))

    # ---- what the views show (set by the state only)
    status = param.Selector(default="idle",
                            objects=["idle", "loading", "queued", "running", "done", "cancelled", "error"])
    status_text = param.String(default="")
    step = param.Integer(default=0)
    n_steps = param.Integer(default=0)
    sec_per_step = param.Number(default=float("nan"))
    misfit = param.Number(default=float("nan"))
    queue_position = param.Integer(default=0)
    queue_wait_s = param.Number(default=float("nan"), doc="estimated wait before this session's run starts")
    case_error = param.String(default="")
    case_error_field = param.Selector(default="", objects=["", "gcm", "time", "region"],
                                      doc="the sidebar field the selection error belongs to")
    prior_warning = param.String(default="")
    detections = param.List(default=[])
    case_loaded = param.Event(doc="a new case is in place")
    frame_ready = param.Event(doc="a new x̂0 (or the final sample) is in `live`")
    baselines_changed = param.Event(doc="a baseline (BCSD) arrived or failed")
    history_changed = param.Event(doc="the run's trace (teaching view) changed")
    compare_changed = param.Event(doc="the ZSSD-vs-DPS comparison changed")
    compare_status = param.String(default="")

    def __init__(self, config: ServerConfig | None = None, queue: RunQueue | None = None,
                 store: CaseStore | None = None, background: bool = False, **params) -> None:
        self.config = config or server_config()
        self._queue = queue
        self._store = store
        self.background = bool(background)
        self.session_id = uuid.uuid4().hex[:12]
        super().__init__(**params)
        from engine import pipeline
        from engine.gcm import GCM_SOURCES

        self.pipeline = pipeline
        self.world = pipeline.get_world(0)
        self.catalog = {c.name: c for c in self._real_cases() + self.world.catalog()}
        sources = list(GCM_SOURCES) + [s for s in self.config.gcm_files if s not in GCM_SOURCES]
        self.param.gcm.objects = sources
        self.param.steps.bounds = (2, self.config.max_steps)
        self.param.members.bounds = (1, self.config.max_members)
        self.notifications: list[tuple[str, str]] = []
        self._toasts: dict[str, tuple[float, Any]] = {}
        self.case = None
        self.case_key: tuple | None = None
        self.baselines: dict[str, Any] = {}
        self.baseline_errors: dict[str, str] = {}
        self.clims: dict[str, tuple[float, float]] = {}
        self.live: np.ndarray | None = None      # (C, H, W) physical, member 1
        self.live_final = False
        self.result = None                         # xr.Dataset of the last finished run
        self.result_meta: dict[str, Any] = {}
        self.trace: Trace | None = None
        self.compare: dict[str, Trace] = {}
        self.job: RunJob | None = None
        self.compare_job: RunJob | None = None
        self._lock = threading.Lock()
        self._mail: dict[str, Any] = {}
        self._exports: list[Path] = []
        self._prior = None
        self._suspend = False
        self._pending: tuple | None = None         # the case key being prepared
        self._run_when_ready = False
        self._t_run: float | None = None
        self.param.watch(self._on_selection, ["gcm", "time", "region_text"])
        self.param.watch(self._sync_guidance, ["method", "steps", "guidance_auto"])
        self._sync_guidance()
        for p in self.config.problems:
            self.notify("warning", f"Server configuration: {p}")

    # ================================================================ helpers
    @property
    def queue(self) -> RunQueue:
        return self._queue or get_queue()

    @property
    def store(self) -> CaseStore:
        return self._store or get_store()

    @property
    def configured_files(self) -> dict[str, list[Path]]:
        return dict(self.config.gcm_files)

    def prior(self):
        if self._prior is None:
            self._prior, warning = get_prior(self.config)
            if warning:
                self.prior_warning = warning
        return self._prior

    def notify(self, level: str, text: str, duration: int | None = None) -> None:
        """Record a message and show it as a toast (which times out) when a Panel server session is attached.

        The same text is not shown twice while its toast is still up.
        """
        self.notifications.append((level, text))
        now = _time.monotonic()
        ms = duration if duration is not None else TOAST_MS.get(level, 5000)
        shown = self._toasts.get(text)
        if shown is not None and now - shown[0] < shown[2] / 1000.0:
            return
        try:
            import panel as pn

            n = pn.state.notifications
            if n is not None:
                handle = getattr(n, level if level in TOAST_MS else "info")(text, duration=ms)
                self._toasts[text] = (now, handle, ms)
        except Exception:  # pragma: no cover - a toast must never break a handler
            pass

    def _clear_toasts(self, prefix: str) -> None:
        """Take down the toasts whose text starts with ``prefix`` (their cause is fixed)."""
        for text in [t for t in self._toasts if t.startswith(prefix)]:
            _, handle, _ = self._toasts.pop(text)
            try:
                handle.destroy()
            except Exception:  # pragma: no cover - already gone
                pass

    @staticmethod
    def _real_cases() -> list:
        """The real ERA5 cyclone cases (none if the data pack lacks the week)."""
        from engine.errors import DataError
        from engine.real_sources import real_cyclones

        try:
            return real_cyclones()
        except DataError:
            return []

    def default_case_name(self) -> str:
        """The case to open with: the real ERA5 cyclone, else a strong demo cyclone of the held-out years."""
        real = [c for c in self.catalog.values() if getattr(c, "real", False)]
        if real:
            return real[0].name
        cases = sorted(self.catalog.values(), key=lambda c: -c.peak_wind)
        nh = [c for c in cases if c.basin in ("NA", "WP", "EP")]
        return (nh or cases)[0].name

    def demo_sources(self) -> list[str]:
        from engine.gcm import PSEUDO_GCMS
        from engine.grids import PAIRED_TASKS

        return list(PSEUDO_GCMS) + list(PAIRED_TASKS)

    # ================================================================ selection
    def pick_case(self, name: str) -> bool:
        """Load a catalog cyclone: sets the source (if the current one cannot show it), time and region."""
        c = self.catalog.get(name)
        if c is None:
            self.notify("error", f"No cyclone case named {name!r}")
            return False
        gcm = self.gcm
        if getattr(c, "source", ""):
            gcm = c.source  # a real case opens on its own source
        elif gcm not in self.demo_sources():
            gcm = DEFAULT_SOURCE
        self._set_quietly(gcm=gcm, time=c.peak_time.to_pydatetime(), region_text=c.region.as_text(), case_name=name)
        return self.prepare()

    def set_region(self, south: float, north: float, west: float, east: float) -> bool:
        """Apply a box drawn on the map (snapped and checked)."""
        try:
            reg = Region(float(south), float(north), float(wrap_lon(west, -180.0)), float(wrap_lon(east, -180.0)))
        except GridError as e:
            self._fail_selection(str(e), "region")
            return False
        self.region_text = reg.as_text()
        return self.case_error == ""

    def source_times(self, gcm: str | None = None) -> list[dt.datetime] | None:
        """The valid times of a source with a finite time axis (real files and sources), else None."""
        from engine.gcm import REAL_FILES, open_files
        from engine.real_sources import source_dataset

        gcm = gcm or self.gcm
        files = {**REAL_FILES, **self.configured_files}
        if gcm in files:
            tv = open_files(files[gcm])["time"].values
        elif gcm in REAL_SOURCES:
            tv = source_dataset(gcm)["time"].values
        else:
            return None
        return [_to_datetime(t) for t in np.atleast_1d(tv)]

    def _on_selection(self, *events) -> None:
        if self._suspend:
            return
        if any(e.name == "gcm" for e in events):
            self._fit_time_to_source()
        if self.case_name and any(e.name in ("time", "region_text") for e in events):
            self.case_name = ""
        self.prepare()

    def _fit_time_to_source(self) -> None:
        """Picking a source moves the date to its nearest valid time and drops a case it cannot show."""
        c = self.catalog.get(self.case_name) if self.case_name else None
        if c is not None and getattr(c, "source", "") and c.source != self.gcm:
            self.case_name = ""
        elif c is not None and not getattr(c, "source", "") and self.gcm not in self.demo_sources():
            self.case_name = ""
        try:
            times = self.source_times()
        except (ValueError, OSError):  # an unreadable file: prepare() reports it beside the selection
            return
        if not times or self.time is None:
            if times is None and self.gcm in self.demo_sources() and self.time is not None:
                lo, hi = DEMO_TIME_RANGE
                if not (lo <= self.time <= hi):
                    self._set_quietly(time=dt.datetime(2022, self.time.month, min(self.time.day, 28), self.time.hour))
            return
        if self.time in times:
            return
        near = min(times, key=lambda t: abs((t - self.time).total_seconds()))
        self._set_quietly(time=near)
        self.notify("info", f"{self.gcm} covers {times[0]:%Y-%m-%d %H:%M} … {times[-1]:%Y-%m-%d %H:%M}: "
                            f"the date moved to its nearest time, {near:%Y-%m-%d %H:%M}")

    def _set_quietly(self, **values) -> None:
        self._suspend = True
        try:
            self.param.update(**values)
        finally:
            self._suspend = False

    def _fail_selection(self, msg: str, where: str = "") -> None:
        """A selection error is shown beside its field in the sidebar (not as a toast); the old case stays."""
        self.notifications.append(("error", msg))
        self.param.update(case_error=msg, case_error_field=where)
        if self.status not in ("running", "queued"):  # the status line says what a Run would do: nothing yet
            self.status_text = f"Not ready — {msg}"

    def parsed_region(self) -> Region:
        """The typed region, snapped and checked (``GridError`` with a clear message otherwise)."""
        text = (self.region_text or "").strip()
        if not text:
            raise GridError("no region given: type S,N,W,E (degrees), draw a box on the map or pick a cyclone")
        reg = Region.parse(text)
        return snap_region(reg, self.config.min_region_deg, self.config.max_region_deg, int(self.prior().min_size))

    def check_time(self) -> dt.datetime:
        t = self.time
        if t is None:
            raise ValueError("no date/time given")
        if self.gcm in self.demo_sources():
            lo, hi = DEMO_TIME_RANGE
            if not (lo <= t <= hi):
                raise ValueError(f"{t:%Y-%m-%d %H:%M} is outside the demo world's years "
                                 f"{lo:%Y}–{hi:%Y}; pick a date in that range "
                                 "(2021–2023 are held out from training)")
        return t

    def prepare(self) -> bool:
        """Build (or fetch) the case for the current selection.

        Returns False if the selection is refused at once (the error is in :attr:`case_error`).  In the
        background mode the case may still be loading when this returns True (``status == "loading"``).
        """
        if self.status in ("running", "queued"):
            self._fail_selection("A run is in progress: press Stop before changing the case")
            return False
        try:
            reg = self.parsed_region()
        except (GridError, ValueError) as e:
            self._fail_selection(f"Region: {e}", "region")
            return False
        try:
            t = self.check_time()
        except ValueError as e:
            self._fail_selection(f"Date: {e}", "time")
            return False
        if reg.as_text() != self.region_text.replace(" ", ""):
            self._set_quietly(region_text=reg.as_text())
        gcm, files = self.gcm, self.configured_files
        key = case_key(gcm, t, reg, files)
        self._pending = key
        fut = self.store.request(key, lambda: build_case(self.pipeline, gcm, t, reg, self.world, files))
        if not self.background or fut.done():
            return self._take_case(key, fut)
        self.param.update(status="loading", status_text=f"Loading {gcm} · {t:%Y-%m-%d %H:%M} UTC · "
                                                        f"{reg.as_text()} (S,N,W,E)…")

        def arrived(f, k=key):
            with self._lock:
                self._mail["case"] = (k, f)
        fut.add_done_callback(arrived)
        return True

    def _take_case(self, key: tuple, fut) -> bool:
        """Put a finished build in place, or report why it failed (beside the field it belongs to)."""
        if key != self._pending:
            return False  # superseded by a newer selection
        self._pending = None
        try:
            pc: PreparedCase = fut.result()
        except Exception as e:  # noqa: BLE001 - any failure is shown, never a crashed session
            msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            if not isinstance(e, (ValueError, FileNotFoundError, KeyError, OSError)):
                log.exception("session %s: case preparation failed", self.session_id)
            where = "region" if isinstance(e, GridError) else "time" if "time" in msg.lower() else "gcm"
            if self.status == "loading":
                self.param.update(status="idle", status_text=f"Cannot load this case: {msg}")
            self._run_when_ready = False
            self._fail_selection(f"Cannot load this case: {msg}", where)
            return False
        self._apply_case(key, pc)
        if self._run_when_ready:
            self._run_when_ready = False
            self.run()
        return True

    def _apply_case(self, key: tuple, pc: PreparedCase) -> None:
        case = pc.case
        self.case, self.case_key = case, key
        have = {"t2m": "t2m" in case.gcm, "msl": "msl" in case.gcm, "wind": "u10" in case.gcm and "v10" in case.gcm}
        if not have.get(self.variable, True) and any(have.values()):  # start on a variable the source has
            self.variable = next(k for k in ("msl", "t2m", "wind") if have[k])
        self.baselines = dict(pc.baselines)
        self.baseline_errors = {}
        self.clims = dict(pc.clims)
        self.live, self.live_final, self.result, self.trace = None, False, None, None
        self.detections = []
        self.param.update(case_error="", case_error_field="", status="idle", step=0, n_steps=0,
                          status_text=f"Ready: {case.source_id} · {case.time:%Y-%m-%d %H:%M} UTC · "
                                      f"{case.fine.shape[0]}×{case.fine.shape[1]} cells at 0.25° — press Run")
        self._clear_toasts("Cannot")
        if case.source_id in REAL_SOURCES and case.paired:
            self.baseline_errors["bcsd"] = ("BCSD needs years of paired training data; the real ERA5 week has one "
                                            "week, so BCSD is not available here")
        elif not self.config.bcsd:
            self.baseline_errors["bcsd"] = "BCSD is turned off on this server (ZSSD_BCSD=0)"
        elif case.paired:
            self._start_bcsd(key, case)
        else:
            self.baseline_errors["bcsd"] = "BCSD needs a paired historical run; not available for a real GCM file"
        self.param.trigger("case_loaded")

    def _start_bcsd(self, key: tuple, case) -> None:
        def train():
            return self.pipeline.baseline(case, "bcsd")

        def done(f):
            err = None if f.exception() is None else str(f.exception())
            with self._lock:
                self._mail["bcsd"] = (case, None if err else f.result(), err)
        self.store.bcsd(key, train).add_done_callback(done)

    def wait_for_baselines(self, timeout: float = 120.0) -> None:
        """Block until the background BCSD of the current case is in (tests)."""
        t0 = _time.monotonic()
        while "bcsd" not in self.baselines and "bcsd" not in self.baseline_errors:
            self.poll()
            if _time.monotonic() - t0 > timeout:
                raise TimeoutError("BCSD did not finish")
            _time.sleep(0.1)

    def wait_until_ready(self, timeout: float = 120.0) -> None:
        """Block until a case being loaded in the background is in place or refused (tests, benchmarks)."""
        t0 = _time.monotonic()
        while self._pending is not None:
            self.poll()
            if _time.monotonic() - t0 > timeout:
                raise TimeoutError("the case did not load")
            _time.sleep(0.05)

    # ================================================================ cyclones
    def find_cyclones(self) -> list:
        """Detect candidate cyclone centres in the current GCM field (offered in the sidebar)."""
        from engine.cyclones import detect_cyclones

        if self.case is None:
            self.notify("error", "Load a case first")
            return []
        try:
            cands = detect_cyclones(self.case.gcm)
        except ValueError as e:
            self.notify("warning", str(e))
            self.detections = []
            return []
        self.detections = cands
        if not cands:
            self.notify("info", f"No cyclone-like pressure minimum found in the {self.case.source_id} field "
                                "over this region (coarse GCMs smooth storms strongly)")
        else:
            self.notify("success", f"{len(cands)} candidate centre(s) found in the {self.case.source_id} field")
        return cands

    def centre_on(self, index: int, size_deg: float | None = None) -> bool:
        """Re-centre the region on a detected candidate."""
        if not (0 <= index < len(self.detections)):
            return False
        c = self.detections[index]
        size = size_deg or (self.case.region.height if self.case is not None else 32.0)
        reg = Region.around(c.lat, float(wrap_lon(c.lon, -180.0)), size)
        self.region_text = reg.as_text()
        return self.case_error == ""

    # ================================================================ running
    @property
    def method_id(self) -> str:
        return METHOD_LABELS[self.method]

    def _sync_guidance(self, *_) -> None:
        """With the tuned ζ on, the ζ field shows the value a Run will use (not a stale default)."""
        if self.guidance_auto and self.method_id != "ddrm":
            self.guidance_scale = round(float(self.pipeline.guidance_default(self.method_id, self.steps)), 4)

    def effective_guidance(self) -> float | None:
        if self.method_id == "ddrm":
            return None
        if self.guidance_auto:
            return float(self.pipeline.guidance_default(self.method_id, self.steps))
        return float(self.guidance_scale)

    def run(self, sync: bool = False) -> RunJob | None:
        """Queue a sampling run with the current settings (``sync=True`` runs it in this thread)."""
        from .running import start_run

        return start_run(self, sync)

    def _dispatch(self, job: RunJob, sync: bool) -> RunJob:
        """Run ``job`` in this thread (tests) or hand it to the server-wide queue."""
        if sync:
            self.queue.run_inline(job)
            self.poll()
        else:
            self.queue.submit(job)
        return job

    def stop_compare(self) -> None:
        """Stop a running ZSSD-vs-DPS comparison."""
        if self.compare_job is not None and not self.compare_job.finished_flag:
            self.compare_job.cancel()

    def stop(self) -> None:
        """Stop the current run (and a comparison run) at the next step."""
        self._run_when_ready = False
        for j in (self.job, self.compare_job):
            if j is not None and not j.finished_flag:
                j.cancel()

    def cancel_all(self) -> None:
        """Cancel everything this session queued (session destroyed)."""
        self.stop()
        self.queue.cancel_all(self.session_id)
        for p in self._exports:
            try:
                p.unlink()
            except OSError:
                pass

    def run_compare(self, sync: bool = False) -> RunJob | None:
        """ZSSD vs vanilla DPS on the ×20 task at the current time and region (same seed and steps)."""
        from .running import start_compare

        return start_compare(self, sync)

    # ================================================================ polling
    def poll(self) -> None:
        """Move what worker threads produced into parameters (runs on the event loop)."""
        from .running import take_run_mail

        job = self.job
        cj = self.compare_job
        # finished before the mail is taken ⇒ everything the job posted is in this mail
        job_done = job is not None and job.finished_flag
        cj_done = cj is not None and cj.finished_flag
        with self._lock:
            mail, self._mail = self._mail, {}
        if "case" in mail:
            self._take_case(*mail["case"])
        if "bcsd" in mail:
            case, ds, err = mail["bcsd"]
            if case is self.case:
                if ds is not None:
                    self.baselines["bcsd"] = ds
                else:
                    self.baseline_errors["bcsd"] = err or "BCSD failed"
                    self.notify("warning", f"BCSD baseline unavailable: {err}")
                self.param.trigger("baselines_changed")
        take_run_mail(self, mail, job, job_done, cj, cj_done)

    # ================================================================ results
    def live_dataset(self):
        """The current x̂0 (or final sample) as an ``xr.Dataset`` on the fine grid, or None."""
        if self.live is None or self.case is None:
            return None
        import xarray as xr

        f = self.case.fine
        prior = self.prior()
        names = list(getattr(prior, "variables", ("t2m", "msl", "u10", "v10")))
        return xr.Dataset({v: (("lat", "lon"), self.live[i]) for i, v in enumerate(names)},
                          coords={"lat": f.lat, "lon": f.lon})

    def result_display(self):
        """``(dataset, title)`` for the result panel of a finished ensemble run, per :attr:`result_view`.

        ``None`` while running, for one member or before a run: the panel then shows x̂0 / the sample.
        """
        r = self.result
        n = int(self.result_meta.get("members", 1))
        if r is None or not self.live_final or n < 2:
            return None
        import xarray as xr

        names = [v for v in ("t2m", "msl", "u10", "v10") if v in r]
        meth = self.result_meta.get("method", self.method)
        if self.result_view == "mean":
            return xr.Dataset({v: r[v].isel(time=0) for v in names}), f"{meth} ensemble mean of {n}"
        if self.result_view == "spread":
            ds = xr.Dataset({v: r[f"{v}_spread"].isel(time=0) for v in names})
            if "u10" in ds and "v10" in ds:  # the spread of the wind speed, shown as the 'wind' field
                sp = np.hypot(r["u10_members"], r["v10_members"]).isel(time=0).std("member", ddof=1)
                ds["u10"], ds["v10"] = sp, xr.zeros_like(sp)
            return ds, f"{meth} ensemble spread (std over {n} members)"
        k = min(max(int(self.result_member), 1), n)
        return (xr.Dataset({v: r[f"{v}_members"].isel(time=0, member=k - 1) for v in names}),
                f"{meth} result, member {k} of {n}")

    def export_netcdf(self) -> Path:
        """Write the last finished run to the server's export directory (atomic); returns the path."""
        if self.result is None:
            raise ValueError("Nothing to export yet: run a downscaling to the end first")
        d = Path(self.config.export_dir)
        d.mkdir(parents=True, exist_ok=True)
        c = self.case
        name = (f"zssd_{self.result_meta.get('method', 'run').lower()}_{c.source_id}_"
                f"{c.time:%Y%m%dT%H%M}_{uuid.uuid4().hex[:6]}.nc")
        path = self.pipeline.write_netcdf_atomic(self.result, d / name)
        self._exports.append(path)
        return path

    def export_png(self) -> io.BytesIO:
        """A PNG of the current maps (drawn with matplotlib from the current arrays)."""
        from .views.export import render_png

        return render_png(self)
