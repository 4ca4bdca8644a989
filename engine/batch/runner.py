"""Running a planned batch: :func:`run_batch` (plan, store, cluster, the client's write loop).

Workers compute, the client writes: a task returns numpy arrays; the client writes the case's
chunks (they belong to that time step alone, so writes never share a chunk) and only then sets
``done[t] = 1``.  A crash, a killed worker or Ctrl-C therefore loses only the cases in flight;
a second run with the same arguments skips the done steps and rewrites the others in place.
"""

from __future__ import annotations

import contextlib
import os
import time as _time
from typing import Callable, Iterator

from .cluster import dask_results, setup_workers, start_client, workers_info
from .plan import plan_batch
from .spec import ABORT_AFTER_FAILURES, BatchError, BatchPlan, BatchReport, BatchSpec, CaseResult
from .store import Store, create_store
from .worker import CaseTask, compute_case

__all__ = ["run_batch"]

#: ``(case index, result or None, error text or None)`` as the compute loops yield them.
Outcome = tuple[int, CaseResult | None, str | None]


def run_batch(spec: BatchSpec, out: str | os.PathLike, *, client=None, scheduler: str | None = None,
              workers: int | None = None, threads_per_worker: int | None = None, torch_threads: int | None = None,
              progress: Callable[[BatchReport], None] | None = None, command: str | None = None,
              on_case_written: Callable[[CaseResult, BatchReport], None] | None = None,
              log: Callable[[str], None] | None = print) -> BatchReport:
    """Run (or resume) a batch into the store ``out``.

    Parameters
    ----------
    spec, out
        What to compute and where (see :class:`BatchSpec`).
    client
        An existing ``distributed.Client`` to use (not closed here).  Otherwise ``scheduler``:
        an address, ``"inline"`` (in-process, no Dask) or ``None`` (start a LocalCluster with
        ``workers`` processes of ``threads_per_worker`` threads, closed at the end).
    torch_threads
        Fix ``torch.set_num_threads`` on the workers (default: cores shared out); inline runs
        use it while computing and restore the process's setting afterwards.
    progress
        Called with the running :class:`BatchReport` once the pending cases are counted and after
        every case (written or failed); the command line draws its progress bar with it
        (:class:`zssd_engine.cli.batch.ProgressBar`).  ``None``: no progress.
    command
        The command line recorded in the store's provenance (default: a library call).
    on_case_written
        Called on the client after each case is in the store (tests use it to interrupt).
    log
        Where the progress lines go (``None``: nowhere).

    Returns
    -------
    BatchReport
        Counts of cases skipped (already done), computed and failed.  Failed cases stay
        ``done == 0`` and are retried by the next run.  ``KeyboardInterrupt`` propagates after
        the cluster is shut down (the store keeps every case written so far).
    """
    say = log or (lambda s: None)
    t_start = _time.perf_counter()
    plan = plan_batch(spec, out)
    report = BatchReport(plan.out, plan.n, 0, 0)
    if spec.deterministic and spec.members > 1:
        say(f"note: {spec.method} is deterministic; the store holds one member")
    if plan.exists and _all_done(plan):
        report.skipped = plan.n
        say(f"{plan.out}: all {plan.n} time steps are already done; nothing to compute")
        report.seconds = _time.perf_counter() - t_start
        return report
    own = None
    if client is None and scheduler != "inline":
        client, cluster = start_client(scheduler, workers, threads_per_worker)
        own = (client, cluster)
    try:
        _run_plan(plan, client, command or "zssd batch (library call)", torch_threads, progress, on_case_written,
                  report, say)
    finally:
        if own is not None:
            _close(*own)
    if report.failed:
        say(f"{len(report.failed)} case(s) failed and stay pending (first: "
            f"{next(iter(report.failed.items()))[0]}: {next(iter(report.failed.values()))})")
    return report


def _all_done(plan: BatchPlan) -> bool:
    """Whether every time step of the existing store is already written."""
    st = Store(plan)
    try:
        return bool(st.done().all())
    finally:
        st.close()


def _run_plan(plan: BatchPlan, client, command: str, torch_threads: int | None,
              progress: Callable[[BatchReport], None] | None,
              on_case_written: Callable[[CaseResult, BatchReport], None] | None, report: BatchReport,
              say: Callable[[str], None]) -> None:
    """Set up the workers, create or open the store, compute the pending cases and write them."""
    if client is not None:
        report.workers = len(workers_info(client))
        report.dashboard = client.dashboard_link
        say(f"Dask dashboard: {report.dashboard}  ({report.workers} workers)")
        nthreads = setup_workers(client, torch_threads)
    else:
        nthreads = 1
        report.workers = 0
    if not plan.exists:
        create_store(plan, command)
    store = Store(plan)
    try:
        done = store.done()
        todo = [i for i in range(plan.n) if not done[i]]
        report.skipped = plan.n - len(todo)
        say(f"{plan.n} time steps, {report.skipped} already done, {len(todo)} to compute -> {plan.out}")
        task = CaseTask(plan.spec, tuple(t.isoformat() for t in plan.times), plan.lat, plan.lon, plan.members,
                        plan.prior, plan.guidance_scale)
        tick = progress or (lambda report: None)
        tick(report)
        t_run = _time.perf_counter()
        if client is None:
            results = _inline_results(task, todo, torch_threads)
        else:  # 2 tasks per worker thread in flight: bounds the client's memory
            results = dask_results(client, compute_case, task, todo, 2 * nthreads)
        try:
            _write_results(results, plan, store, report, tick, on_case_written)
        except KeyboardInterrupt:
            report.interrupted = True
            raise
        finally:
            results.close()  # cancels what is still queued or running
            report.seconds = _time.perf_counter() - t_run
    finally:
        store.close()


def _write_results(results: Iterator[Outcome], plan: BatchPlan, store: Store, report: BatchReport,
                   tick: Callable[[BatchReport], None], on_case_written: Callable[[CaseResult, BatchReport], None] | None) -> None:
    """Write each result as it comes; record failures; stop when the first cases all fail."""
    for i, res, err in results:
        if err is not None:
            report.failed[plan.times[i].isoformat()] = err
            if report.computed == 0 and len(report.failed) >= ABORT_AFTER_FAILURES:
                raise BatchError(f"the first {len(report.failed)} cases all failed, stopping (nothing "
                                 f"was marked done); first error: {next(iter(report.failed.values()))}")
        else:
            store.write(res)
            report.computed += 1
            if on_case_written is not None:
                on_case_written(res, report)
        tick(report)


def _close(client, cluster) -> None:
    """Close a client and the cluster started for it, ignoring errors of a cluster already gone."""
    with contextlib.suppress(Exception):
        client.close(timeout=10)
    if cluster is not None:
        with contextlib.suppress(Exception):
            cluster.close(timeout=10)


def _inline_results(task: CaseTask, todo: list[int], torch_threads: int | None) -> Iterator[Outcome]:
    """Cases computed one by one in this process (``torch_threads``: set for the run, then restored)."""
    import torch

    before = torch.get_num_threads()
    try:
        for i in todo:
            if torch_threads:
                torch.set_num_threads(int(torch_threads))
            try:
                res = compute_case(task, i)
            except Exception as e:  # noqa: BLE001 - like a Dask task error: recorded, the case stays pending
                yield i, None, f"{type(e).__name__}: {e}"
                continue
            finally:
                torch.set_num_threads(before)
            yield i, res, None
    finally:
        torch.set_num_threads(before)
