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

from zssd_engine.methods import METHODS

from .cases import CaseStore, get_prior, get_store
from .config import ServerConfig, server_config
from .records import Frame, Trace
from .runner import RunJob, RunQueue, get_queue
from .selection import DEFAULT_SOURCE, SelectionMixin

log = logging.getLogger("zssd_app")

__all__ = ["AppState", "Frame", "Trace", "METHOD_LABELS", "DEFAULT_SOURCE", "POLL_MS"]

#: The diffusion methods a session can run: label shown in the app -> method name (registry order).
METHOD_LABELS: dict[str, str] = {m.label: m.name for m in METHODS.values() if m.diffusion}
POLL_MS = 250
#: Seconds a toast stays (errors a little longer); the same text is not shown again while it is up.
TOAST_MS = {"info": 4000, "success": 3000, "warning": 6000, "error": 9000}


class AppState(SelectionMixin, param.Parameterized):
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
        from zssd_engine import pipeline
        from zssd_engine.gcm import GCM_SOURCES

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
        self.param.watch(self._sync_guidance, ["method", "steps", "guidance_auto", "gcm"])
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
        from zssd_engine.errors import DataError
        from zssd_engine.real_sources import real_cyclones

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
        from zssd_engine.gcm import PSEUDO_GCMS
        from zssd_engine.grids import PAIRED_TASKS

        return list(PSEUDO_GCMS) + list(PAIRED_TASKS)

    # ================================================================ running
    @property
    def method_id(self) -> str:
        return METHOD_LABELS[self.method]

    def tuned_guidance(self, method_id: str | None = None, with_source: bool = False) -> float | tuple[float, str]:
        """The prior's tuned ζ for ``method_id`` (default: the selected method) at the selected steps, from
        its table for the selected source's kind of input (demo world or real); ``with_source=True`` also
        returns where it was tuned, in words for the controls."""
        domain = self.pipeline.input_domain(self.gcm, self.configured_files)
        z, src = self.pipeline.guidance_default(method_id or self.method_id, self.steps, self.prior(), domain,
                                                with_source=True)
        if not with_source:
            return float(z)
        if src is None:
            where = "– no tuned table, a built-in default"
        else:
            where = "on real-weather cases" if src.domain == "real" else "on demo-world cases"
            if src.other_prior:
                where += ", for another prior, not this one"
            elif src.other_domain:
                where += f" (none tuned on {domain} cases for this prior)"
        return float(z), where

    def _sync_guidance(self, *_) -> None:
        """With the tuned ζ on, the ζ field shows the value a Run will use (not a stale default)."""
        if self.guidance_auto and METHODS[self.method_id].guided:
            self.guidance_scale = round(self.tuned_guidance(), 4)

    def effective_guidance(self) -> float | None:
        if not METHODS[self.method_id].guided:  # DDRM projects instead
            return None
        if self.guidance_auto:
            return self.tuned_guidance()
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
        monthly = "member_time" in r.coords  # members drawn through a month (a monthly-mean input)
        if self.result_view == "mean":
            return (xr.Dataset({v: r[v].isel(time=0) for v in names}),
                    f"{meth} ensemble mean of {n}" + (" = the downscaled monthly mean" if monthly else ""))
        if self.result_view == "spread":
            ds = xr.Dataset({v: r[f"{v}_spread"].isel(time=0) for v in names})
            if "u10" in ds and "v10" in ds:  # the spread of the wind speed, shown as the 'wind' field
                sp = np.hypot(r["u10_members"], r["v10_members"]).isel(time=0).std("member", ddof=1)
                ds["u10"], ds["v10"] = sp, xr.zeros_like(sp)
            return ds, f"{meth} ensemble spread (std over {n} members)"
        k = min(max(int(self.result_member), 1), n)
        when = (f", drawn at {np.datetime_as_string(r['member_time'].values[k - 1], 'h').replace('T', ' ')} UTC"
                if monthly else "")
        return (xr.Dataset({v: r[f"{v}_members"].isel(time=0, member=k - 1) for v in names}),
                f"{meth} result, member {k} of {n}{when}")

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
