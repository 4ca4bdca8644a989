"""Server-wide run queue: at most ``max_concurrent`` sampling runs at once, FIFO, cancellable.

Sampling is CPU-heavy, so every browser session shares one :class:`RunQueue`
(:func:`get_queue`).  A session submits a :class:`RunJob` wrapping a function
``fn(job)``; the job waits in line in its own daemon thread (so the server's
event loop never blocks), runs when a slot is free, and exposes its state as
plain attributes (``status``, ``position``, ``error``) that the session polls
from its periodic callback.  ``fn`` must check ``job.cancelled`` between steps.

Tests call :meth:`RunQueue.run_inline` to execute a job synchronously in the
calling thread with exactly the same bookkeeping.
"""

from __future__ import annotations

import math
import threading
import time
import traceback
from typing import Callable

__all__ = ["RunJob", "RunQueue", "get_queue", "reset_queue", "JobCancelled"]


class JobCancelled(Exception):
    """Raised inside a job function to abandon the run (the queue records ``cancelled``)."""


class RunJob:
    """One unit of work in the queue.

    Attributes
    ----------
    status
        ``"queued"``, ``"running"``, ``"done"``, ``"cancelled"`` or ``"error"``.
    position
        Place in line while queued (1 = next), 0 while running, ``None`` when finished.
    error
        The exception a failed job raised.
    """

    _ids = 0

    def __init__(self, fn: Callable[["RunJob"], object], label: str = "run", owner: str = "", *,
                 steps: int = 0, units_per_step: float = 1.0) -> None:
        RunJob._ids += 1
        self.id = RunJob._ids
        self.fn = fn
        self.label = label
        self.owner = owner
        self.status = "queued"
        self.position: int | None = None
        self.error: BaseException | None = None
        self.traceback = ""
        self.result: object = None
        self.submitted = time.monotonic()
        self.started: float | None = None
        self.finished: float | None = None
        self._cancel = threading.Event()
        self._done = threading.Event()
        self.thread: threading.Thread | None = None
        # progress, for the queue's wait estimates: the job function calls progress() after every step
        self.steps = int(steps)
        self.units_per_step = float(units_per_step)  # cost of one step (members × cells): scales s/step
        self.done_steps = 0
        self.sec_per_step = float("nan")

    def progress(self, done_steps: int, sec_per_step: float) -> None:
        """Record the job's progress (called from its own thread)."""
        self.done_steps = int(done_steps)
        self.sec_per_step = float(sec_per_step)

    # ---------------------------------------------------------------- control
    def cancel(self) -> None:
        """Ask the job to stop (waiting jobs leave the line; running ones stop at their next check)."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        """Raise :class:`JobCancelled` if a stop was requested."""
        if self._cancel.is_set():
            raise JobCancelled()

    @property
    def finished_flag(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return f"RunJob(#{self.id} {self.label!r} {self.status} pos={self.position})"


class RunQueue:
    """FIFO queue with ``max_concurrent`` slots shared by all sessions of the server."""

    def __init__(self, max_concurrent: int = 1) -> None:
        self.max_concurrent = max(1, int(max_concurrent))
        self._cond = threading.Condition()
        self._waiting: list[RunJob] = []
        self._running: list[RunJob] = []

    # ---------------------------------------------------------------- info
    def snapshot(self) -> tuple[int, int]:
        """``(running, waiting)`` counts."""
        with self._cond:
            return len(self._running), len(self._waiting)

    def wait_estimate(self, job: RunJob) -> float:
        """Seconds until a waiting ``job`` starts, from the running jobs' measured seconds per step.

        The running jobs' remaining steps plus the steps of every job ahead in line, each scaled by its
        cost per step (members × cells) relative to the running job's; ``nan`` until a running job has
        measured its speed.  With several slots, the total is shared between them.
        """
        with self._cond:
            running = list(self._running)
            ahead = self._waiting[:self._waiting.index(job)] if job in self._waiting else []
        rates = [j.sec_per_step / max(j.units_per_step, 1e-9) for j in running if math.isfinite(j.sec_per_step)]
        if not running:
            return 0.0 if not ahead else float("nan")
        if not rates:
            return float("nan")
        rate = sum(rates) / len(rates)  # seconds per unit of work
        left = sum(max(j.steps - j.done_steps, 0) * j.units_per_step for j in running)
        left += sum(j.steps * j.units_per_step for j in ahead)
        return rate * left / self.max_concurrent

    def _renumber(self) -> None:
        for i, j in enumerate(self._waiting):
            j.position = i + 1
        for j in self._running:
            j.position = 0

    # ---------------------------------------------------------------- running
    def submit(self, job: RunJob) -> RunJob:
        """Queue ``job`` and return at once; it runs in its own daemon thread."""
        with self._cond:
            self._waiting.append(job)
            self._renumber()
        job.thread = threading.Thread(target=self._execute, args=(job, True), name=f"zssd-run-{job.id}",
                                      daemon=True)
        job.thread.start()
        return job

    def run_inline(self, job: RunJob) -> RunJob:
        """Queue ``job`` and run it in the calling thread (blocks until it is finished)."""
        with self._cond:
            self._waiting.append(job)
            self._renumber()
        self._execute(job, False)
        return job

    def cancel_all(self, owner: str) -> None:
        """Cancel every job of ``owner`` (a session id)."""
        with self._cond:
            for j in self._waiting + self._running:
                if j.owner == owner:
                    j.cancel()
            self._cond.notify_all()

    def _execute(self, job: RunJob, _threaded: bool) -> None:
        with self._cond:
            while True:
                if job.cancelled:
                    self._waiting.remove(job)
                    self._renumber()
                    self._finish(job, "cancelled")
                    self._cond.notify_all()
                    return
                if self._waiting and self._waiting[0] is job and len(self._running) < self.max_concurrent:
                    break
                self._cond.wait(0.2)
            self._waiting.pop(0)
            self._running.append(job)
            job.status = "running"
            job.started = time.monotonic()
            self._renumber()
        status = "done"
        try:
            job.result = job.fn(job)
            if job.cancelled:
                status = "cancelled"
        except JobCancelled:
            status = "cancelled"
        except BaseException as e:  # noqa: BLE001 - reported to the session, never kills the server
            job.error = e
            job.traceback = traceback.format_exc()
            status = "error"
        finally:
            with self._cond:
                if job in self._running:
                    self._running.remove(job)
                self._renumber()
                self._finish(job, status)
                self._cond.notify_all()

    @staticmethod
    def _finish(job: RunJob, status: str) -> None:
        job.status = status
        job.position = None
        job.finished = time.monotonic()
        job._done.set()


_QUEUE: RunQueue | None = None
_QLOCK = threading.Lock()


def get_queue() -> RunQueue:
    """The server-wide queue (created on first use with the configured number of slots)."""
    global _QUEUE
    with _QLOCK:
        if _QUEUE is None:
            from .config import server_config

            _QUEUE = RunQueue(server_config().max_concurrent_runs)
        return _QUEUE


def reset_queue(max_concurrent: int = 1) -> RunQueue:
    """Replace the server-wide queue (tests)."""
    global _QUEUE
    with _QLOCK:
        _QUEUE = RunQueue(max_concurrent)
        return _QUEUE
