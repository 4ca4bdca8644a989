"""The Dask side of a batch: connecting or starting a cluster, worker plugins, windowed submission.

* :func:`start_client` connects to a scheduler or starts a :class:`distributed.LocalCluster`
  sized to this machine (:func:`host_cores` worker processes of one thread by default).
* :class:`TorchThreads` sets ``torch.set_num_threads(cores // (workers on the host × threads per
  worker))`` on every worker; :class:`IgnoreSigint` lets the client alone handle Ctrl-C.
* :func:`dask_results` keeps a bounded window of tasks in flight and yields results as they
  complete.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from typing import Callable, Iterator

from .spec import BatchError, CaseResult

__all__ = ["TorchThreads", "IgnoreSigint", "start_client", "setup_workers", "workers_info", "dask_results",
           "host_cores", "DASHBOARD_ADDRESS"]

#: Dashboard address of the LocalCluster started here.
DASHBOARD_ADDRESS = ":8787"

try:  # the plugin base class is optional at import time (inline runs need no Dask)
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPluginBase
except ImportError:  # pragma: no cover
    _WorkerPluginBase = object


def host_cores() -> int:
    """CPU cores this process may run on (its affinity set where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


class TorchThreads(_WorkerPluginBase):
    """Worker plugin: ``torch.set_num_threads`` so the workers of a host share its cores.

    ``threads`` fixes the number; otherwise ``cores // (workers on this host × worker threads)``
    (at least 1), where the host's worker count is taken from ``per_host`` (host → workers).
    """

    name = "zssd-torch-threads"

    def __init__(self, per_host: dict[str, int], threads: int | None) -> None:
        self.per_host = dict(per_host)
        self.threads = threads

    def setup(self, worker) -> None:
        """Set the worker's torch (and OpenMP) thread count."""
        import torch

        n = self.threads
        if not n:
            from urllib.parse import urlparse

            host = urlparse(worker.address).hostname
            nw = self.per_host.get(host, 1)
            n = max(1, host_cores() // max(1, nw * int(getattr(worker.state, "nthreads", 1) or 1)))
        torch.set_num_threads(int(n))
        os.environ["OMP_NUM_THREADS"] = str(int(n))


class IgnoreSigint(_WorkerPluginBase):
    """Worker plugin for the LocalCluster started here: Ctrl-C in the terminal reaches the whole
    process group; the client handles it (cancels, closes the cluster), so its worker processes
    ignore it instead of dying with tracebacks mid-task."""

    name = "zssd-ignore-sigint"

    def setup(self, worker) -> None:
        """Ignore SIGINT in the worker process."""
        with contextlib.suppress(ValueError):  # not the process's main thread: nothing to do
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _torch_threads() -> int:
    """``torch.get_num_threads()`` (run on the workers with ``client.run`` to check the plugin)."""
    import torch

    return torch.get_num_threads()


def start_client(scheduler: str | None = None, workers: int | None = None, threads_per_worker: int | None = None):
    """Connect to ``scheduler`` or start a :class:`LocalCluster` sized to this machine.

    Returns ``(client, cluster)``; ``cluster`` is ``None`` for an external scheduler (the caller
    closes what it got).
    """
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as e:
            raise BatchError(f"--scheduler {scheduler}: cannot connect ({e})") from None
        return client, None
    tpw = int(threads_per_worker or 1)
    nw = int(workers or max(1, host_cores() // tpw))
    cluster = LocalCluster(n_workers=nw, threads_per_worker=tpw, processes=True,
                           dashboard_address=DASHBOARD_ADDRESS, silence_logs=40)
    try:
        client = Client(cluster)
        client.register_plugin(IgnoreSigint(), name=IgnoreSigint.name)
    except BaseException:
        cluster.close()
        raise
    return client, cluster


def setup_workers(client, torch_threads: int | None) -> int:
    """Register the torch-threads plugin; return the number of worker threads."""
    ws = workers_info(client)
    per_host: dict[str, int] = {}
    for w in ws.values():
        per_host[w.get("host")] = per_host.get(w.get("host"), 0) + 1
    client.register_plugin(TorchThreads(per_host, torch_threads), name=TorchThreads.name)
    return sum(int(w.get("nthreads", 1)) for w in ws.values()) or 1


def workers_info(client) -> dict:
    """All workers of the scheduler (recent ``distributed`` lists only 5 unless asked for all)."""
    try:
        info = client.scheduler_info(n_workers=-1)
    except TypeError:  # older distributed: no n_workers argument, lists every worker
        info = client.scheduler_info()
    return info.get("workers", {})


def dask_results(client, compute: Callable[..., CaseResult], task, todo: list[int], window: int
                 ) -> Iterator[tuple[int, CaseResult | None, str | None]]:
    """Submit ``compute(task, i)`` for ``i`` in ``todo``, at most ``window`` at a time; yield as they complete.

    Yields ``(i, result, None)`` or ``(i, None, "ErrorType: message")``; closing the generator
    cancels what is still queued or running.
    """
    from distributed import as_completed

    nonce = uuid.uuid4().hex[:8]
    it = iter(todo)
    index: dict = {}
    ac = as_completed()

    def submit() -> None:
        """Submit the next pending case, if any."""
        i = next(it, None)
        if i is None:
            return
        # the task (spec, times, lat/lon) travels with each submission: a few kB, and unlike scattered
        # data it cannot be lost with a worker
        f = client.submit(compute, task, i, key=f"zssd-case-{i}-{nonce}", pure=False, retries=0)
        index[f.key] = i
        ac.add(f)

    try:
        for _ in range(max(1, window)):
            submit()
        for f in ac:
            i = index.pop(f.key)
            if f.status == "error":
                exc = f.exception()
                yield i, None, f"{type(exc).__name__}: {exc}"
            else:
                yield i, f.result(), None
            f.release()
            submit()
    finally:
        pending = [f for f in ac.futures] if hasattr(ac, "futures") else []
        with contextlib.suppress(Exception):
            if pending:
                client.cancel(pending)
