"""``zssd batch``: downscale many time steps on a Dask cluster into one resumable Zarr store.

One task per ``(time, region)`` case.  The same code runs on a
:class:`distributed.LocalCluster` started here (``processes=True``, sized to
the machine) or on an existing cluster (``--scheduler tcp://host:8786``), or
in-process without Dask (``--scheduler inline``, for debugging).  The command
line is :mod:`zssd_engine.cli.batch`.

Where things are
----------------
* :mod:`~zssd_engine.batch.spec` — :class:`BatchSpec` (what to compute), :class:`BatchPlan`,
  :class:`CaseResult`, :class:`BatchReport`, :class:`PriorRef`, the seed rule :func:`case_seed`.
* :mod:`~zssd_engine.batch.plan` — **validation first**: :func:`plan_batch` checks every argument
  (time range and frequency, GCM, method, region, the GCM's data coverage, members, steps,
  checkpoint, output location, and — for an existing store — that the stored run parameters
  equal the requested ones) and prepares the first case as a dry run, all before a cluster is
  started or a store is created.
* :mod:`~zssd_engine.batch.store` — **the store**, created up front, atomically (written in a
  temporary directory next to it and renamed): every time from ``start`` to ``end`` at
  ``freq``, arrays filled with NaN, *one chunk per time step*, plus ``done(time)`` (uint8 0/1)
  and ``case_seed(time)``; Zarr format 2 with consolidated metadata, CF-1.10 attributes,
  provenance and the run parameters (JSON in ``zssd_batch_params``) in the global attributes.
  A lock file in the store stops two runs from writing it at once; Ctrl-C is deferred while
  one case is being written.
* :mod:`~zssd_engine.batch.worker` — **model once per worker**: the prior is loaded on first use in
  each worker process and cached by checkpoint kind, path and SHA-256 (:func:`get_prior`);
  :func:`compute_case` downscales one case.
* :mod:`~zssd_engine.batch.cluster` — the Dask side: :func:`start_client`, the :class:`TorchThreads`
  worker plugin (``torch.set_num_threads(cores // (workers on the host × threads per worker))``),
  windowed submission.
* :mod:`~zssd_engine.batch.runner` — :func:`run_batch`: **workers compute, the client writes** the
  case's chunks and only then sets ``done[t] = 1``, so a crash, a killed worker or Ctrl-C loses
  only the cases in flight; a second run with the same arguments skips the done steps.

**Determinism.**  The seed of a case depends only on ``(seed, time)`` (:func:`case_seed`), so
results do not depend on scheduling order, on the number of workers, or on where the range starts.

Library API: :class:`BatchSpec`, :func:`plan_batch`, :func:`run_batch`,
:func:`compute_case`, :func:`case_seed`, :func:`open_store`, :func:`start_client`.
"""

from __future__ import annotations

from .cluster import TorchThreads, start_client
from .plan import plan_batch
from .runner import run_batch
from .spec import (DETERMINISTIC_METHODS, METHODS, SAMPLER_METHODS, BatchError, BatchPlan, BatchReport, BatchSpec,
                   CaseResult, PriorRef, case_seed)
from .store import open_store
from .worker import compute_case, get_prior, prior_loads

# importable here but not part of the API: the store constants, and the worker probe that
# benchmarks/batch_scaling.py runs with ``client.run``
from .cluster import _torch_threads  # noqa: F401,E402
from .spec import (ABORT_AFTER_FAILURES, DEFAULT_STEPS, LAYOUT_VERSION, LOCK_NAME,  # noqa: F401,E402
                   PARAMS_ATTR)

__all__ = [
    "BatchError",
    "BatchSpec",
    "BatchPlan",
    "BatchReport",
    "CaseResult",
    "PriorRef",
    "METHODS",
    "SAMPLER_METHODS",
    "DETERMINISTIC_METHODS",
    "plan_batch",
    "run_batch",
    "compute_case",
    "case_seed",
    "get_prior",
    "prior_loads",
    "open_store",
    "start_client",
    "TorchThreads",
]
