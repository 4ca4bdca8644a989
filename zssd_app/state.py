"""Per-session state of the dashboard: one :class:`AppState` per browser session.

The state owns the user's choices (GCM, time, region, method, …), the prepared
:class:`engine.pipeline.Case`, the baselines, the live sampling run and its
recorded trajectory.  It never touches widgets; views watch its parameters.

Threading model
---------------
* Case preparation (≈0.3–2 s) runs on the session's event loop when the
  selection changes; BCSD (≈20 s the first time for a case, then cached) is
  trained on a server-wide background thread.
* A sampling run is a :class:`zssd_app.runner.RunJob` in the server-wide
  queue; its worker thread only writes into this state's *mailbox* (under a
  lock).  :meth:`AppState.poll` — a periodic callback on the event loop every
  250 ms (≤ 4 map updates per second) — moves mailbox contents into
  parameters, which the views render.  Tests call :meth:`poll` directly and run
  jobs synchronously with ``run(sync=True)``.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import math
import threading
import time as _time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import param

from engine.grids import GridError, Region, wrap_lon
from engine.real_sources import REAL_LABEL, REAL_SOURCES

from .config import ServerConfig, server_config
from .runner import RunJob, RunQueue, get_queue

log = logging.getLogger("zssd_app")


def time_since(t0: float) -> float:
    return _time.perf_counter() - t0


__all__ = ["AppState", "Frame", "get_prior", "snap_region", "METHOD_LABELS", "source_label", "DEFAULT_SOURCE"]

#: Method names shown in the app -> pipeline method ids.
METHOD_LABELS: dict[str, str] = {"ZSSD": "zssd", "ZSSD-BC": "zssd-bc", "DPS": "dps", "DDRM": "ddrm"}
DEFAULT_SOURCE = "MPI-ESM1-2-HR"
DEMO_TIME_RANGE = (dt.datetime(1991, 1, 1), dt.datetime(2023, 12, 31, 18))
MAX_FRAMES = 50
POLL_MS = 250


# ----------------------------------------------------------------- the prior
_PRIOR_LOCK = threading.Lock()
_PRIOR: tuple[Any, str] | None = None


def get_prior(cfg: ServerConfig | None = None) -> tuple[Any, str]:
    """The server's prior and a warning text ("" for a trained checkpoint), loaded once per process.

    ``ZSSD_PRIOR=tiny`` (or ``prior = "tiny"`` in the TOML config) forces the
    untrained tiny network; otherwise the configured checkpoint, else the
    shipped default; if that is missing, the tiny network with a warning.
    """
    global _PRIOR
    with _PRIOR_LOCK:
        if _PRIOR is not None:
            return _PRIOR
        from engine import pipeline

        cfg = cfg or server_config()
        untrained = ("**Untrained demo network**: the maps show the sampling machinery, not a skilful "
                     "downscaling {why}.")
        if cfg.prior == "tiny":
            _PRIOR = (pipeline.load_prior("tiny"), untrained.format(why="(this server runs with ZSSD_PRIOR=tiny)"))
        elif cfg.prior:
            _PRIOR = (pipeline.load_prior(cfg.prior), "")
        else:
            try:
                _PRIOR = (pipeline.default_prior(), "")
            except (FileNotFoundError, OSError, ValueError) as e:
                _PRIOR = (pipeline.load_prior("tiny"),
                          untrained.format(why=f"(no trained checkpoint could be loaded: {e})"))
        return _PRIOR


def reset_prior() -> None:
    """Forget the loaded prior (tests)."""
    global _PRIOR
    with _PRIOR_LOCK:
        _PRIOR = None


def prior_cell_multiple(prior) -> int:
    """Grid-cell multiple the prior's U-Net needs for the field size (8 if unknown)."""
    for obj in (prior, getattr(prior, "net", None), getattr(prior, "model", None)):
        m = getattr(obj, "min_size", None)
        if isinstance(m, (int, np.integer)) and m > 0:
            return int(m)
    return 8


# ----------------------------------------------------------------- regions
def snap_region(region: Region, min_deg: float = 16.0, max_deg: float = 64.0, cell_multiple: int = 8) -> Region:
    """Snap a box to the 0.25° grid with sides a multiple of ``cell_multiple`` cells; enforce size limits.

    Raises :class:`GridError` with a message that says what to change.
    """
    h, w = region.height, region.width
    for name, size in (("height (north − south)", h), ("width (east − west)", w)):
        if size < min_deg - 1e-9:
            raise GridError(f"region {name} is {size:g}°; it must be at least {min_deg:g}° "
                            f"(the GCM needs several cells across the box)")
        if size > max_deg + 1e-9:
            raise GridError(f"region {name} is {size:g}°; it must be at most {max_deg:g}° "
                            f"(sampling cost grows with the area)")
    step = 0.25 * cell_multiple
    h2 = max(step, round(h / step) * step)
    w2 = max(step, round(w / step) * step)
    h2 = min(max(h2, math.ceil(min_deg / step) * step), math.floor(max_deg / step) * step)
    w2 = min(max(w2, math.ceil(min_deg / step) * step), math.floor(max_deg / step) * step)
    s = math.floor(region.south / 0.25) * 0.25
    s = min(max(s, -89.75), 90.0 - h2)  # keep whole cells inside [-90, 90)
    west = float(wrap_lon(math.floor(region.west / 0.25) * 0.25, -180.0))
    east = float(wrap_lon(west + w2, -180.0))
    return Region(float(s), float(s + h2), west, east)


def pd_timestamp(t):
    import pandas as pd

    return pd.Timestamp(t)


def source_label(source_id: str, configured: dict | None = None) -> str:
    """A menu label for a GCM source id."""
    from engine.gcm import PSEUDO_GCMS, REAL_FILES
    from engine.grids import GCM_GRID_SPECS, PAIRED_TASKS
    from engine.real_sources import REAL_SOURCES

    if source_id in REAL_SOURCES:
        r = REAL_SOURCES[source_id]
        if r.paired:
            return f"{source_id} — real ERA5 week averaged to {r.coarse_res:g}° (paired, real)"
        return f"{source_id} — real {'GFS forecast' if source_id.startswith('GFS') else 'analysis'} (unpaired)"

    if source_id in PSEUDO_GCMS:
        return f"{source_id} — pseudo-GCM ({GCM_GRID_SPECS[source_id].note.split(' (')[0].split(',')[0]})"
    if source_id in PAIRED_TASKS:
        res = PAIRED_TASKS[source_id]
        return f"×{source_id[1:]} paired task ({res:g}° average of the demo world)"
    if source_id in REAL_FILES:
        return f"{source_id} — real CMIP5 file (2005 monthly means)"
    return f"{source_id} — configured CF file"


# ----------------------------------------------------------------- records
@dataclass
class Frame:
    """One recorded step of a run (member 1), stored compactly as float16 in the prior's normalised space.

    ``x0`` (physical units) is the denoiser's estimate x̂0 — on the final step, the sample itself.
    """

    step: int
    t: int
    sigma: float
    misfit: float
    guidance_norm: float
    x_t: np.ndarray                      # (C, H, W) normalised, float16
    x0n: np.ndarray                      # (C, H, W) normalised, float16
    denormalize: Any = field(default=None, repr=False)

    @property
    def x0(self) -> np.ndarray:
        """x̂0 in physical units, float32 ``(C, H, W)``."""
        import torch

        x = torch.from_numpy(self.x0n.astype(np.float32))[None]
        if self.denormalize is None:
            return x[0].numpy()
        with torch.no_grad():
            return self.denormalize(x)[0].numpy().astype(np.float32)


def _f16(x) -> np.ndarray:
    return np.clip(x.detach().to("cpu").float().numpy(), -6.0e4, 6.0e4).astype(np.float16)


def make_frame(st) -> Frame:
    """A :class:`Frame` from a sampler :class:`StepState` (member 1)."""
    x0 = st.x_t if st.final else st.x0_hat
    return Frame(st.step, int(st.t), float(st.sigma), float(st.misfit_rms), float(st.guidance_norm),
                 _f16(st.x_t[0]), _f16(x0[0]), st.denormalize)


@dataclass
class Trace:
    """A run's trajectory for the teaching view."""

    method: str
    source_id: str
    n_steps: int = 0
    frames: list[Frame] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    sigma: list[float] = field(default_factory=list)
    misfit: list[float] = field(default_factory=list)
    guidance: list[float] = field(default_factory=list)
    case: Any = None


_BG = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zssd-baselines")

# Server-wide LRU of prepared cases (+ bilinear): switching back and forth between GCMs, sessions opening
# the same storm and the teaching comparison reuse them.  Cases are treated as read-only.
_CASES: "OrderedDict[tuple, tuple[Any, Any]]" = OrderedDict()
_CASES_LOCK = threading.Lock()
_CASES_MAX = 24


def cached_case(pipeline, source_id: str, time, region: Region, world, files: dict | None):
    """``(case, {"bilinear": …, "lapse": …})`` for a selection, prepared once per server process."""
    key = (source_id, str(time), region.as_text(), tuple(map(str, (files or {}).get(source_id, ()))))
    with _CASES_LOCK:
        hit = _CASES.get(key)
        if hit is not None:
            _CASES.move_to_end(key)
            return hit
    case = pipeline.prepare_case(source_id, time, region, world=world, files=files or None)
    bil = {m: pipeline.baseline(case, m) for m in ("bilinear", "lapse")}
    with _CASES_LOCK:
        _CASES[key] = (case, bil)
        while len(_CASES) > _CASES_MAX:
            _CASES.popitem(last=False)
    return case, bil


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
    status = param.Selector(default="idle", objects=["idle", "queued", "running", "done", "cancelled", "error"])
    status_text = param.String(default="")
    step = param.Integer(default=0)
    n_steps = param.Integer(default=0)
    sec_per_step = param.Number(default=float("nan"))
    misfit = param.Number(default=float("nan"))
    queue_position = param.Integer(default=0)
    case_error = param.String(default="")
    prior_warning = param.String(default="")
    detections = param.List(default=[])
    case_version = param.Integer(default=0)
    frame_version = param.Integer(default=0)
    baseline_version = param.Integer(default=0)
    history_version = param.Integer(default=0)
    compare_version = param.Integer(default=0)
    compare_status = param.String(default="")

    def __init__(self, config: ServerConfig | None = None, queue: RunQueue | None = None, **params) -> None:
        self.config = config or server_config()
        self._queue = queue
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
        self.case = None
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
    def configured_files(self) -> dict[str, list[Path]]:
        return dict(self.config.gcm_files)

    def prior(self):
        if self._prior is None:
            self._prior, warning = get_prior(self.config)
            if warning:
                self.prior_warning = warning
        return self._prior

    def notify(self, level: str, text: str, duration: int = 6000) -> None:
        """Record a message and show it as a toast when a Panel server session is attached."""
        self.notifications.append((level, text))
        try:
            import panel as pn

            n = pn.state.notifications
            if n is not None:
                getattr(n, level if level in ("info", "success", "warning", "error") else "info")(
                    text, duration=duration if level != "error" else 0)
        except Exception:  # pragma: no cover - a toast must never break a handler
            pass

    @staticmethod
    def _real_cases() -> list:
        """The real ERA5 cyclone cases (none, with a warning in the log, if the data pack lacks the week)."""
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

    # ================================================================ selection
    def pick_case(self, name: str) -> bool:
        """Load a catalog cyclone: sets GCM (if the current one cannot show it), time and region."""
        c = self.catalog.get(name)
        if c is None:
            self.notify("error", f"No demo cyclone named {name!r}")
            return False
        gcm = self.gcm
        if getattr(c, "source", ""):
            gcm = c.source  # a real case opens on its own source
        elif gcm not in self.demo_sources():
            gcm = DEFAULT_SOURCE
        self._suspend = True
        try:
            self.param.update(gcm=gcm, time=c.peak_time.to_pydatetime(), region_text=c.region.as_text(),
                              case_name=name)
        finally:
            self._suspend = False
        return self.prepare()

    def demo_sources(self) -> list[str]:
        from engine.gcm import PSEUDO_GCMS
        from engine.grids import PAIRED_TASKS

        return list(PSEUDO_GCMS) + list(PAIRED_TASKS)

    def set_region(self, south: float, north: float, west: float, east: float) -> bool:
        """Apply a box drawn on the map (snapped and checked)."""
        try:
            reg = Region(float(south), float(north), float(wrap_lon(west, -180.0)), float(wrap_lon(east, -180.0)))
        except GridError as e:
            self._fail_selection(str(e))
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
        out = []
        for t in np.atleast_1d(tv):
            if hasattr(t, "year") and not isinstance(t, np.datetime64):  # cftime: same calendar fields
                try:
                    out.append(dt.datetime(t.year, t.month, t.day, t.hour))
                except ValueError:  # e.g. 30 February of a 360-day calendar: the month's last real day
                    out.append(dt.datetime(t.year, t.month, 28, t.hour))
            else:
                out.append(pd_timestamp(t).to_pydatetime())
        return out

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
                            f"the date moved to its nearest time, {near:%Y-%m-%d %H:%M}", duration=4000)

    def _set_quietly(self, **values) -> None:
        self._suspend = True
        try:
            self.param.update(**values)
        finally:
            self._suspend = False

    def _fail_selection(self, msg: str) -> None:
        self.case_error = msg
        self.notify("error", msg)

    def parsed_region(self) -> Region:
        """The typed region, snapped and checked (``GridError`` with a clear message otherwise)."""
        text = (self.region_text or "").strip()
        if not text:
            raise GridError("no region given: type S,N,W,E (degrees), draw a box on the map or pick a cyclone")
        reg = Region.parse(text)
        mult = prior_cell_multiple(self.prior())
        return snap_region(reg, self.config.min_region_deg, self.config.max_region_deg, mult)

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
        """Build the case for the current selection (GCM field, reference, bilinear; BCSD in background)."""
        if self.status in ("running", "queued"):
            self._fail_selection("A run is in progress: press Stop before changing the case")
            return False
        try:
            reg = self.parsed_region()
            t = self.check_time()
            case, bil = cached_case(self.pipeline, self.gcm, t, reg, self.world, self.configured_files)
        except (ValueError, FileNotFoundError, KeyError, OSError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            self._fail_selection(f"Cannot load this case: {msg}")
            return False
        if reg.as_text() != self.region_text.replace(" ", ""):
            self._suspend = True
            try:
                self.region_text = reg.as_text()
            finally:
                self._suspend = False
        self.case = case
        self.case_error = ""
        have = {"t2m": "t2m" in case.gcm, "msl": "msl" in case.gcm, "wind": "u10" in case.gcm and "v10" in case.gcm}
        if not have.get(self.variable, True) and any(have.values()):  # start on a variable the source has
            self.variable = next(k for k in ("msl", "t2m", "wind") if have[k])
        self.baselines = dict(bil)
        self.baseline_errors = {}
        self.live = None
        self.live_final = False
        self.result = None
        self.trace = None
        self.detections = []
        self.status = "idle"
        self.step = 0
        self.n_steps = 0
        self.status_text = (f"Ready: {case.source_id} · {case.time:%Y-%m-%d %H:%M} UTC · "
                            f"{case.fine.shape[0]}×{case.fine.shape[1]} cells at 0.25° — press Run")
        self._compute_clims()
        if case.source_id in REAL_SOURCES and case.paired:
            self.baseline_errors["bcsd"] = ("BCSD needs years of paired training data; the real ERA5 week has one "
                                            "week, so BCSD is not available here")
        elif not self.config.bcsd:
            self.baseline_errors["bcsd"] = "BCSD is turned off on this server (ZSSD_BCSD=0)"
        elif case.paired:
            self._start_bcsd(case)
        else:
            self.baseline_errors["bcsd"] = "BCSD needs a paired historical run; not available for a real GCM file"
        self.case_version += 1
        return True

    def _compute_clims(self) -> None:
        from .views.common import display_field, robust_clim

        c = self.case
        self.clims = {}
        for key in ("t2m", "msl", "wind"):
            arrays = [display_field(c.reference_display, key)[0], display_field(c.gcm, key)[0],
                      display_field(self.baselines.get("bilinear"), key)[0]]
            ref_bil = None
            if arrays[0] is not None and arrays[2] is not None and key != "wind":
                ref_bil = arrays[0] - arrays[2]
            lo, hi = robust_clim(arrays, key)
            ref = arrays[0]
            if ref is not None and np.isfinite(ref).any():  # never clip the reference's extremes (a cyclone core)
                lo = min(lo, float(np.nanmin(ref))) if key == "msl" else lo
                hi = max(hi, float(np.nanmax(ref))) if key in ("msl", "wind") else hi
            self.clims[key] = (lo, hi)
            d = np.nanpercentile(np.abs(ref_bil), 99) if ref_bil is not None else None
            if key == "wind" and arrays[0] is not None and arrays[2] is not None:
                d = np.nanpercentile(np.abs(arrays[0] - arrays[2]), 99)
            self.clims[key + ":diff"] = (-float(d or 1.0) * 1.2, float(d or 1.0) * 1.2)

    def _start_bcsd(self, case) -> None:
        def work():
            try:
                return self.pipeline.baseline(case, "bcsd"), None
            except Exception as e:  # noqa: BLE001 - shown to the user
                return None, str(e)

        fut = _BG.submit(work)

        def done(f):
            ds, err = f.result()
            with self._lock:
                self._mail["bcsd"] = (case, ds, err)
        fut.add_done_callback(done)

    def wait_for_baselines(self, timeout: float = 120.0) -> None:
        """Block until the background BCSD of the current case is in (tests)."""
        t0 = _time.monotonic()
        while "bcsd" not in self.baselines and "bcsd" not in self.baseline_errors:
            self.poll()
            if _time.monotonic() - t0 > timeout:
                raise TimeoutError("BCSD did not finish")
            _time.sleep(0.1)

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
        if self.job is not None and not self.job.finished_flag:
            self.notify("warning", "A run is already in progress")
            return None
        if self.case is None or self.case_error:
            if not self.prepare():
                self.status_text = f"Cannot run — fix the selection first: {self.case_error}"
                return None
        case = self.case
        method = self.method_id
        steps, members, seed = int(self.steps), int(self.members), int(self.seed)
        gs = self.effective_guidance()
        prior = self.prior()
        from engine.bias_correction import BC_METHODS, bias_attrs, check_trainable

        try:  # validate now so errors show before queueing
            if method in BC_METHODS:  # refusal now; the correction is trained on the worker (seconds)
                check_trainable(case)
                gen = None
            else:
                gen = self.pipeline.sampler(case, prior, method, steps, members, seed, gs)
        except (ValueError, RuntimeError) as e:
            self.notify("error", f"Cannot run: {e}")
            self.status, self.status_text = "error", str(e)
            return None
        every = max(1, math.ceil(steps / MAX_FRAMES))
        trace = Trace(method=self.method, source_id=case.source_id, n_steps=steps, case=case)
        self.trace = trace
        self.live = None
        self.live_final = False
        self.result = None
        self.result_meta = {"method": self.method, "steps": steps, "members": members, "seed": seed,
                            "guidance_scale": gs, "source": case.source_id}
        self.param.update(status="queued", step=0, n_steps=steps, misfit=float("nan"),
                          sec_per_step=float("nan"), queue_position=0,
                          status_text=f"Queued: {self.method}, {steps} steps")
        self.history_version += 1

        def work(job: RunJob):
            nonlocal gen
            t_start = _time.perf_counter()
            t_last = t_start
            final = None
            if gen is None:
                gen = self.pipeline.sampler(case, prior, method, steps, members, seed, gs)
            try:
                for st in gen:
                    job.check()
                    now = _time.perf_counter()
                    dt_step = now - t_last
                    t_last = now
                    x0 = st.x0_phys()[0].detach().cpu().numpy()
                    trace.steps.append(st.step)
                    trace.sigma.append(float(st.sigma))
                    trace.misfit.append(float(st.misfit_rms))
                    trace.guidance.append(float(st.guidance_norm))
                    final = st
                    shown = x0
                    if st.final:
                        shown = st.sample_phys()[0].detach().cpu().numpy()
                    if st.step % every == 0 or st.final:
                        trace.frames.append(make_frame(st))
                    with self._lock:
                        self._mail["live"] = (shown, st.final)
                        self._mail["progress"] = (st.step + 1, st.n_steps, dt_step, float(st.misfit_rms))
                        self._mail["frames"] = True
                job.check()
            finally:
                gen.close()
            if final is None:
                return None
            secs = _time.perf_counter() - t_start
            ds = self.pipeline.result_dataset(case, final, prior, method, steps, seed, gs, secs,
                                              extra_attrs=bias_attrs(case) if method in BC_METHODS else None)
            with self._lock:
                self._mail["result"] = (ds, secs)
            return ds

        job = RunJob(work, label=f"{method} {case.label()}", owner=self.session_id)
        self.job = job
        self._t_run = _time.perf_counter()
        log.info("session %s: run %s queued (%d steps, %d members)", self.session_id, job.label, steps, members)
        return self._dispatch(job, sync)

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

    # ---------------------------------------------------------------- compare
    def run_compare(self, sync: bool = False) -> RunJob | None:
        """ZSSD vs vanilla DPS on the ×20 task at the current time and region (same seed and steps)."""
        if self.compare_job is not None and not self.compare_job.finished_flag:
            self.notify("warning", "A comparison is already running")
            return None
        try:
            reg = self.parsed_region()
            t = self.time
            lo, hi = DEMO_TIME_RANGE
            if t is None or not (lo <= t <= hi):
                raise ValueError(f"the ×20 task is built from the demo world: pick a date in {lo:%Y}–{hi:%Y}")
            case, _ = cached_case(self.pipeline, "x20", t, reg, self.world, None)
        except (ValueError, KeyError) as e:
            self.notify("error", f"Cannot prepare the ×20 comparison: {e}")
            return None
        steps, seed = int(self.steps), int(self.seed)
        prior = self.prior()
        every = max(1, math.ceil(steps / MAX_FRAMES))
        traces = {m: Trace(method=m, source_id="x20", n_steps=steps, case=case) for m in ("ZSSD", "DPS")}
        self.compare = traces
        self.compare_status = "queued"
        self.compare_version += 1

        def work(job: RunJob):
            from engine.samplers import default_guidance_scale

            for label in ("ZSSD", "DPS"):
                m = METHOD_LABELS[label]
                gen = self.pipeline.sampler(case, prior, m, steps, 1, seed, float(default_guidance_scale(m, steps)))
                tr = traces[label]
                try:
                    for st in gen:
                        job.check()
                        tr.steps.append(st.step)
                        tr.sigma.append(float(st.sigma))
                        tr.misfit.append(float(st.misfit_rms))
                        tr.guidance.append(float(st.guidance_norm))
                        if st.step % every == 0 or st.final:
                            tr.frames.append(make_frame(st))
                        with self._lock:
                            self._mail["compare"] = f"{label}: step {st.step + 1}/{st.n_steps}"
                finally:
                    gen.close()
            return True

        job = RunJob(work, label=f"compare x20 {case.label()}", owner=self.session_id)
        self.compare_job = job
        return self._dispatch(job, sync)

    # ================================================================ polling
    def poll(self) -> None:
        """Move what worker threads produced into parameters (runs on the event loop)."""
        job = self.job
        cj = self.compare_job
        # finished before the mail is taken ⇒ everything the job posted is in this mail
        job_done = job is not None and job.finished_flag
        cj_done = cj is not None and cj.finished_flag
        with self._lock:
            mail, self._mail = self._mail, {}
        if "bcsd" in mail:
            case, ds, err = mail["bcsd"]
            if case is self.case:
                if ds is not None:
                    self.baselines["bcsd"] = ds
                else:
                    self.baseline_errors["bcsd"] = err or "BCSD failed"
                    self.notify("warning", f"BCSD baseline unavailable: {err}")
                self.baseline_version += 1
        if job is not None and job.status == "queued" and self.status == "queued":
            pos = job.position or 0
            if pos != self.queue_position or not self.status_text.startswith("Waiting"):
                self.param.update(queue_position=pos,
                                  status_text=f"Waiting for a free slot: position {pos} in the queue")
        if "progress" in mail:
            k, n, dt_step, mis = mail["progress"]
            sps = dt_step if not np.isfinite(self.sec_per_step) or k <= 2 else 0.7 * self.sec_per_step + 0.3 * dt_step
            self.param.update(status="running", step=k, n_steps=n, sec_per_step=sps, misfit=mis, queue_position=0,
                              status_text=f"{self.result_meta.get('method', '')}: step {k}/{n}")
        if "live" in mail:
            _t_live = _time.perf_counter()
            self.live, self.live_final = mail["live"]
            if self._t_run is not None:
                log.info("session %s: first x̂0 shown %.2f s after Run", self.session_id, time_since(self._t_run))
                self._t_run = None
            self.frame_version += 1
            log.debug("live update rendered in %.3f s", time_since(_t_live))
        if mail.get("frames"):
            self.history_version += 1
        if "result" in mail:
            self.result, secs = mail["result"]
            self.result_meta["seconds"] = secs
        if job_done and self.status in ("queued", "running"):
            self._finish(job)
        if "compare" in mail:
            self.compare_status = mail["compare"]
            self.compare_version += 1
        if cj_done and self.compare_status not in ("done", "cancelled", "error"):
            if cj.status == "error":
                self.compare_status = "error"
                self.notify("error", f"Comparison failed: {cj.error}")
            else:
                self.compare_status = cj.status
            self.compare_version += 1

    def _finish(self, job: RunJob) -> None:
        if job.status == "done":
            secs = self.result_meta.get("seconds", float("nan"))
            self.param.update(status="done", status_text=f"Done: {self.result_meta.get('method')} "
                              f"{self.n_steps} steps in {secs:.1f} s")
            self.notify("success", f"Run finished ({self.n_steps} steps, {secs:.1f} s)", duration=3000)
        elif job.status == "cancelled":
            self.param.update(status="cancelled", status_text=f"Stopped at step {self.step}/{self.n_steps}; "
                              "nothing was saved")
            self.notify("info", f"Run stopped at step {self.step}/{self.n_steps}")
        else:
            self.param.update(status="error", status_text=f"Run failed: {job.error}")
            self.notify("error", f"Run failed: {job.error}")
            log.error("session %s: run failed\n%s", self.session_id, job.traceback)
        self.history_version += 1

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

    def ensemble_scores(self, key: str) -> dict | None:
        """CRPS and spread–skill of the finished ensemble against the reference (display units), or None."""
        r, c = self.result, self.case
        if r is None or c is None or not c.paired or int(self.result_meta.get("members", 1)) < 2:
            return None
        from engine.probabilistic import crps, spread_skill

        from .views.common import DISPLAY

        d = DISPLAY[key]
        if key == "wind":
            if not all(f"{v}_members" in r for v in ("u10", "v10")) or "u10" not in c.reference:
                return None
            mem = np.hypot(r["u10_members"], r["v10_members"]).isel(time=0)
            ref = np.hypot(c.reference["u10"], c.reference["v10"])
        else:
            if f"{key}_members" not in r or key not in c.reference:
                return None
            mem = r[f"{key}_members"].isel(time=0) * d.scale + d.offset
            ref = c.reference[key] * d.scale + d.offset
        ref = ref.assign_attrs(c.reference[key if key != "wind" else "u10"].attrs)
        return {"crps": crps(mem, ref), "spread_skill": spread_skill(mem, ref)["ratio"]}

    def metrics_table(self, key: str | None = None):
        """Rows of MAE/RMSE/P99 error vs the reference for the display variable (pandas DataFrame)."""
        import pandas as pd
        import xarray as xr

        from engine import metrics

        from .views.common import DISPLAY, display_field

        key = key or self.variable
        d = DISPLAY[key]
        cols = [f"MAE ({d.units})", f"RMSE ({d.units})", f"P99 abs. error ({d.units})"]
        if self.case is None:
            return pd.DataFrame(columns=["Method"] + cols)
        if not self.case.paired:
            return pd.DataFrame({"Method": ["unpaired"], cols[0]: ["—"], cols[1]: ["—"], cols[2]: ["—"],
                                 "Note": [f"{self.case.source_id} is a real GCM: no reference state exists for it, "
                                          "so errors cannot be computed"]})
        f = self.case.fine
        cref = self.case.reference  # its own points: the fine grid, or real ERA5's 1° points
        ref, _, _ = display_field(cref, key)

        def da(a, lat=f.lat, lon=f.lon):
            return xr.DataArray(a, dims=("lat", "lon"), coords={"lat": lat, "lon": lon})

        rows = []
        cands = [("Bilinear", self.baselines.get("bilinear")), ("Bilinear + lapse", self.baselines.get("lapse")),
                 ("BCSD", self.baselines.get("bcsd"))]
        live = self.live_dataset()
        if live is not None:
            lab = self.result_meta.get("method", self.method)
            lab += " (final, member 1)" if self.live_final else f" (x̂0 at step {self.step}/{self.n_steps})"
            cands.append((lab, live))
        ens = None
        if self.result is not None and self.result_meta.get("members", 1) > 1:
            cands.append((f"{self.result_meta.get('method')} ensemble mean", self.result))
            ens = self.ensemble_scores(key)
        for name, ds in cands:
            if ds is None:
                err = self.baseline_errors.get({"Bilinear + lapse": "lapse"}.get(name, name.lower()))
                txt = "n/a" if err else "computing…"
                rows.append({"Method": name + (f" ({err})" if err else ""), cols[0]: txt, cols[1]: txt, cols[2]: txt})
                continue
            a, _, _ = display_field(ds, key)
            if a is None or ref is None:
                rows.append({"Method": name, cols[0]: "n/a", cols[1]: "n/a", cols[2]: "n/a"})
                continue
            r = da(ref, cref["lat"].values, cref["lon"].values)
            p = metrics.at_reference_points(da(a), r)
            mae = float(metrics.mae(p, r))
            row = {"Method": name, cols[0]: f"{mae:.3g}", cols[1]: f"{float(metrics.rmse(p, r)):.3g}",
                   cols[2]: f"{float(metrics.p99_error(p, r)):.3g}"}
            if ens is not None:  # a deterministic field's CRPS is its MAE: one column for every row
                is_ens = name.endswith("ensemble mean")
                row[f"CRPS ({d.units})"] = f"{ens['crps']:.3g} (ensemble)" if is_ens else f"{mae:.3g}"
                row["Spread–skill"] = f"{ens['spread_skill']:.2f}" if is_ens else "–"
            rows.append(row)
        return pd.DataFrame(rows)

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
