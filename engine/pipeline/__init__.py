"""The downscaling pipeline: one facade shared by the CLI, the app and batch jobs.

* :func:`prepare_case` — everything a method needs for one (GCM, time, region):
  the 0.25° grid, the GCM field on its native cells, the reference, the
  prior's conditioning.  All input checks happen here (or in the sampler
  constructors), before any expensive computation.  (:mod:`.case`)
* :func:`baseline` — bilinear interpolation, bilinear + lapse rate (``lapse``) or
  BCSD (trained on training-year samples only, cached per process).  (:mod:`.classical`)
* :func:`load_prior` / :func:`default_prior` — checkpoints, through the process's one prior cache.  (:mod:`.priors`)
* :func:`sampler` — a generator of :class:`zssd_engine.samplers.StepState` for
  ``zssd``/``zssd-bc``/``dps``/``ddrm``; :func:`run_method` runs any method to the end.  (:mod:`.running`)
* :func:`result_dataset` / :func:`baseline_result` — CF-style ``xr.Dataset``
  with the ensemble mean, spread and members plus provenance attributes;
  :func:`write_netcdf_atomic` — write to a temporary name in the same
  directory and ``os.replace`` it; nothing is left behind on failure.  (:mod:`.results`)

Every name is importable from ``zssd_engine.pipeline``; callers use ``pipeline.<name>``.  The
``zssd downscale`` sub-command is :mod:`zssd_engine.cli.downscale`.
"""

from __future__ import annotations

from .case import (BASELINES, DIFFUSION_METHODS, GUIDED_METHODS, METHODS, REFERENCE_LABEL, Case, check_method,
                   check_source, get_world, input_domain, parse_region, parse_time, prepare_case, reference_label)
from .classical import (BCSD_DAYS, BCSD_YEARS, _train_bcsd, baseline, bcsd_training_times,  # noqa: F401
                        coarse_elevation, train_paired_bcsd)
from .priors import DEFAULT_CHECKPOINT, checkpoint_identity, default_prior, load_prior, prior_loads, prior_sha256
# _train_bcsd, _now and _write_atomic: for zssd_engine.evaluate and zssd_engine.cli (warming BCSD, history stamps, the .md)
from .results import (_now, _write_atomic, baseline_result, result_dataset, write_json_atomic,  # noqa: F401
                      write_netcdf_atomic)
from .running import guidance_default, run_method, sampler

__all__ = [
    "Case", "METHODS", "BASELINES", "DIFFUSION_METHODS", "prepare_case", "baseline", "sampler", "result_dataset",
    "baseline_result", "write_netcdf_atomic", "write_json_atomic", "default_prior", "load_prior", "prior_loads", "checkpoint_identity",
    "DEFAULT_CHECKPOINT", "get_world", "prior_sha256", "check_source",
    "bcsd_training_times", "parse_time", "parse_region", "check_method", "run_method",
    "REFERENCE_LABEL", "coarse_elevation", "reference_label",
    "GUIDED_METHODS", "BCSD_YEARS", "BCSD_DAYS", "train_paired_bcsd", "guidance_default", "input_domain",
]
