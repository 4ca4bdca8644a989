"""Selection of a session: source, valid time and region → the case the maps show (a mixin of
:class:`zssd_app.state.AppState`).

A selection is checked on the event loop at once; a refusal is shown beside the field that caused it
(``case_error`` + ``case_error_field``), the previous case stays on screen and the status line says that a
Run cannot start yet.  The case itself comes from the server-wide :class:`~zssd_app.cases.CaseStore`:
at once when another session prepared it, else built on the store's threads (``status == "loading"``).
"""

from __future__ import annotations

import datetime as dt
import logging
import time as _time

import numpy as np

from zssd_engine.grids import GridError, Region, wrap_lon
from zssd_engine.real_sources import REAL_SOURCES

from .cases import DEMO_TIME_RANGE, PreparedCase, build_case, case_key, snap_region

log = logging.getLogger("zssd_app")

__all__ = ["SelectionMixin", "to_datetime", "DEFAULT_SOURCE"]

#: The demo source a demo cyclone opens on when the current source cannot show it.
DEFAULT_SOURCE = "MPI-ESM1-2-HR"


def to_datetime(t) -> dt.datetime:
    """A valid time as a naive ``datetime`` (cftime dates keep their calendar fields)."""
    if hasattr(t, "year") and not isinstance(t, np.datetime64):
        try:
            return dt.datetime(t.year, t.month, t.day, t.hour)
        except ValueError:  # e.g. 30 February of a 360-day calendar: the month's last real day
            return dt.datetime(t.year, t.month, 28, t.hour)
    import pandas as pd

    return pd.Timestamp(t).to_pydatetime()


class SelectionMixin:
    """Selection handling of :class:`~zssd_app.state.AppState` (uses its parameters and helpers)."""

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
            reg = snap_region(reg, self.config.min_region_deg, self.config.max_region_deg,
                              int(self.prior().min_size))  # the box as it will be used, shown as such
        except GridError as e:
            self._fail_selection(f"Region: {e}", "region")
            return False
        self.region_text = reg.as_text()
        return self.case_error == ""

    def source_times(self, gcm: str | None = None) -> list[dt.datetime] | None:
        """The valid times of a source with a finite time axis (real files and sources), else None."""
        from zssd_engine.gcm import REAL_FILES, open_files
        from zssd_engine.real_sources import source_dataset

        gcm = gcm or self.gcm
        files = {**REAL_FILES, **self.configured_files}
        if gcm in files:
            tv = open_files(files[gcm])["time"].values
        elif gcm in REAL_SOURCES:
            tv = source_dataset(gcm)["time"].values
        else:
            return None
        return [to_datetime(t) for t in np.atleast_1d(tv)]

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
        from zssd_engine.cyclones import detect_cyclones

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
