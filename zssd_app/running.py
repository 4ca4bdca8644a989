"""Run control of a session: queue a sampling run (or the ZSSD-vs-DPS comparison), stream its steps into the
session's mailbox from the worker thread, and move the mail into the session's parameters on the event loop.

The worker thread never touches parameters or widgets: it records the trace (:meth:`Trace.record`) and
writes the latest x̂0, progress and result under the session's lock; :func:`take_run_mail` (called by
:meth:`AppState.poll`) does the rest.
"""

from __future__ import annotations

import logging
import math
import time as _time
from typing import TYPE_CHECKING, Any

import numpy as np

from .cases import DEMO_TIME_RANGE, build_case, case_key
from .records import Trace
from .runner import RunJob

if TYPE_CHECKING:  # pragma: no cover
    from .state import AppState

log = logging.getLogger("zssd_app")

__all__ = ["start_run", "start_compare", "take_run_mail"]


def start_run(state: "AppState", sync: bool = False) -> RunJob | None:
    """Queue a sampling run with the session's current settings (``sync=True`` runs it in this thread)."""
    from zssd_engine.bias_correction import BC_METHODS, check_trainable

    from .state import METHOD_LABELS

    if state.job is not None and not state.job.finished_flag:
        state.notify("warning", "A run is already in progress")
        return None
    if state.status == "loading":  # the run starts as soon as the case is in place
        state._run_when_ready = True
        state.status_text = state.status_text.rstrip("…") + "… — the run starts when the case is ready"
        return None
    if state.case is None or state.case_error:
        if not state.prepare() or state.case is None or state.status == "loading":
            if state.status == "loading":
                state._run_when_ready = True
            else:
                state.status_text = f"Cannot run — fix the selection first: {state.case_error}"
            return None
    case, method = state.case, METHOD_LABELS[state.method]
    steps, members, seed = int(state.steps), int(state.members), int(state.seed)
    gs = state.effective_guidance()
    prior = state.prior()
    try:  # validate now so errors show before queueing
        if method in BC_METHODS:  # refusal now; the correction is trained on the worker (seconds)
            check_trainable(case)
            gen = None
        else:
            gen = state.pipeline.sampler(case, prior, method, steps, members, seed, gs)
    except (ValueError, RuntimeError) as e:
        state.notify("error", f"Cannot run: {e}")
        state.status, state.status_text = "error", str(e)
        return None
    trace = Trace(method=state.method, source_id=case.source_id, n_steps=steps, case=case)
    state.trace = trace
    state.live, state.live_final, state.result = None, False, None
    state.result_meta = {"method": state.method, "steps": steps, "members": members, "seed": seed,
                         "guidance_scale": gs, "source": case.source_id}
    state.param.update(status="queued", step=0, n_steps=steps, misfit=float("nan"), sec_per_step=float("nan"),
                       queue_position=0, queue_wait_s=float("nan"),
                       status_text=f"Queued: {state.method}, {steps} steps")
    state.param.trigger("history_changed")

    def work(job: RunJob):
        return _sample(state, job, gen, case, prior, method, steps, members, seed, gs, trace)

    cells = float(np.prod(case.fine.shape))
    job = RunJob(work, label=f"{method} {case.label()}", owner=state.session_id, steps=steps,
                 units_per_step=members * cells)
    state.job = job
    state._t_run = _time.perf_counter()
    log.info("session %s: run %s queued (%d steps, %d members)", state.session_id, job.label, steps, members)
    return state._dispatch(job, sync)


def _sample(state: "AppState", job: RunJob, gen, case, prior, method: str, steps: int, members: int, seed: int,
            gs: float | None, trace: Trace):
    """The worker side of a run: step the sampler, record the trace, post x̂0 and progress to the mailbox,
    then the result dataset (runs in the queue's thread; never touches parameters)."""
    from zssd_engine.bias_correction import BC_METHODS, bias_attrs

    t_start = t_last = _time.perf_counter()
    final, sps = None, float("nan")
    if gen is None:  # zssd-bc: the correction is trained here, on the worker
        gen = state.pipeline.sampler(case, prior, method, steps, members, seed, gs)
    try:
        for st in gen:
            job.check()
            now = _time.perf_counter()
            dt_step, t_last = now - t_last, now
            sps = dt_step if not math.isfinite(sps) or st.step < 2 else 0.7 * sps + 0.3 * dt_step
            job.progress(st.step + 1, sps)
            trace.record(st)
            final = st
            shown = (st.sample_phys() if st.final else st.x0_phys())[0].detach().cpu().numpy()
            with state._lock:
                state._mail["live"] = (shown, st.final)
                state._mail["progress"] = (st.step + 1, st.n_steps, dt_step, float(st.misfit_rms))
                state._mail["frames"] = True
        job.check()
    finally:
        gen.close()
    if final is None:
        return None
    secs = _time.perf_counter() - t_start
    ds = state.pipeline.result_dataset(case, final, prior, method, steps, seed, gs, secs,
                                       extra_attrs=bias_attrs(case) if method in BC_METHODS else None)
    with state._lock:
        state._mail["result"] = (ds, secs)
    return ds


def start_compare(state: "AppState", sync: bool = False) -> RunJob | None:
    """ZSSD vs vanilla DPS on the ×20 task at the session's time and region (same seed and steps)."""
    from .state import METHOD_LABELS

    if state.compare_job is not None and not state.compare_job.finished_flag:
        state.notify("warning", "A comparison is already running")
        return None
    try:
        reg = state.parsed_region()
        t = state.time
        lo, hi = DEMO_TIME_RANGE
        if t is None or not (lo <= t <= hi):
            raise ValueError(f"the ×20 task is built from the demo world: pick a date in {lo:%Y}–{hi:%Y}")
        case = state.store.get(case_key("x20", t, reg, None),
                               lambda: build_case(state.pipeline, "x20", t, reg, state.world, None)).case
    except (ValueError, KeyError) as e:
        state.notify("error", f"Cannot prepare the ×20 comparison: {e}")
        return None
    steps, seed = int(state.steps), int(state.seed)
    prior = state.prior()
    traces = {m: Trace(method=m, source_id="x20", n_steps=steps, case=case) for m in ("ZSSD", "DPS")}
    state.compare = traces
    state.compare_status = "queued"
    state.param.trigger("compare_changed")

    def work(job: RunJob):
        for i, label in enumerate(("ZSSD", "DPS")):
            m = METHOD_LABELS[label]
            gen = state.pipeline.sampler(case, prior, m, steps, 1, seed,
                                         float(state.pipeline.guidance_default(m, steps, prior, case)))
            t_last = _time.perf_counter()
            try:
                for st in gen:
                    job.check()
                    now = _time.perf_counter()
                    job.progress(i * steps + st.step + 1, now - t_last)
                    t_last = now
                    traces[label].record(st)
                    with state._lock:
                        state._mail["compare"] = f"{label}: step {st.step + 1}/{st.n_steps}"
            finally:
                gen.close()
        return True

    job = RunJob(work, label=f"compare x20 {case.label()}", owner=state.session_id, steps=2 * steps,
                 units_per_step=float(np.prod(case.fine.shape)))
    state.compare_job = job
    return state._dispatch(job, sync)


def take_run_mail(state: "AppState", mail: dict[str, Any], job: RunJob | None, job_done: bool,
                  cj: RunJob | None, cj_done: bool) -> None:
    """Move a run's mail (queue position, progress, x̂0, result, comparison) into the session's parameters."""
    if job is not None and job.status == "queued" and state.status == "queued":
        pos = job.position or 0
        wait = state.queue.wait_estimate(job)
        eta = f", about {wait:.0f} s to wait" if math.isfinite(wait) and wait > 0 else ""
        text = f"Waiting for a free slot: position {pos} in the queue{eta}"
        if text != state.status_text:
            state.param.update(queue_position=pos, queue_wait_s=wait, status_text=text)
    if "progress" in mail:
        k, n, dt_step, mis = mail["progress"]
        sps = dt_step if not np.isfinite(state.sec_per_step) or k <= 2 else 0.7 * state.sec_per_step + 0.3 * dt_step
        state.param.update(status="running", step=k, n_steps=n, sec_per_step=sps, misfit=mis, queue_position=0,
                           status_text=f"{state.result_meta.get('method', '')}: step {k}/{n}")
    if "live" in mail:
        state.live, state.live_final = mail["live"]
        if state._t_run is not None:
            log.info("session %s: first x̂0 shown %.2f s after Run", state.session_id,
                     _time.perf_counter() - state._t_run)
            state._t_run = None
        state.param.trigger("frame_ready")
    if mail.get("frames"):
        state.param.trigger("history_changed")
    if "result" in mail:
        state.result, secs = mail["result"]
        state.result_meta["seconds"] = secs
    if job_done and state.status in ("queued", "running"):
        _finish(state, job)
    if "compare" in mail:
        state.compare_status = mail["compare"]
        state.param.trigger("compare_changed")
    if cj_done and state.compare_status not in ("done", "cancelled", "error"):
        if cj.status == "error":
            state.compare_status = "error"
            state.notify("error", f"Comparison failed: {cj.error}")
        else:
            state.compare_status = cj.status
        state.param.trigger("compare_changed")


def _finish(state: "AppState", job: RunJob) -> None:
    if job.status == "done":
        secs = state.result_meta.get("seconds", float("nan"))
        state.param.update(status="done", status_text=f"Done: {state.result_meta.get('method')} "
                           f"{state.n_steps} steps in {secs:.1f} s")
        state.notify("success", f"Run finished ({state.n_steps} steps, {secs:.1f} s)")
    elif job.status == "cancelled":
        state.param.update(status="cancelled", status_text=f"Stopped at step {state.step}/{state.n_steps}; "
                           "nothing was saved")
        state.notify("info", f"Run stopped at step {state.step}/{state.n_steps}")
    else:
        state.param.update(status="error", status_text=f"Run failed: {job.error}")
        state.notify("error", f"Run failed: {job.error}")
        log.error("session %s: run failed\n%s", state.session_id, job.traceback)
    state.param.trigger("history_changed")
