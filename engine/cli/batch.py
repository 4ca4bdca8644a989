"""``zssd batch``: the command line of :mod:`zssd_engine.batch` (arguments → :class:`BatchSpec` → :func:`run_batch`)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ..batch import METHODS, BatchError, BatchSpec, run_batch
from ..batch.spec import DEFAULT_STEPS
from ..batch.store import count_done

__all__ = ["add_parser", "run", "spec_from_args", "ProgressBar"]


class ProgressBar:
    """A tqdm bar on stderr fed by :func:`run_batch`'s ``progress`` callback (cases done of the store's)."""

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.bar = None

    def __call__(self, report) -> None:
        from tqdm.auto import tqdm

        if self.bar is None:  # the first call: the pending cases are counted
            self.bar = tqdm(total=report.total, initial=report.skipped, unit="case", desc=self.desc,
                            file=sys.stderr, dynamic_ncols=True)
            return
        self.bar.n = report.skipped + report.computed + len(report.failed)
        if report.failed:
            self.bar.set_postfix(failed=len(report.failed), refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def add_parser(sub) -> None:
    """Register ``zssd batch`` on an argparse sub-parser collection."""
    p = sub.add_parser(
        "batch", help="downscale a time range on a Dask cluster into one resumable CF Zarr store",
        description="Downscale every time from --start to --end (step --freq) over --region into one Zarr "
                    "store; one Dask task per time step.  Re-running the same command resumes.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--gcm", help="GCM source_id (pseudo-GCM, x6/x10/x20, MPI-ESM-LR, or a real source: "
                                   "ERA5-x20, ERA5-x10, NCEP-storm-1996, GFS-2.5deg)")
    src.add_argument("--gcm-file", nargs="+", metavar="FILE",
                     help="your own input files instead of --gcm (NetCDF, GRIB or Zarr; as zssd downscale)")
    p.add_argument("--start", required=True, help="first time, ISO (e.g. 2022-08-01T00)")
    p.add_argument("--end", required=True, help="last time, ISO (inclusive)")
    p.add_argument("--freq", default="6h", help="time step, pandas frequency (default 6h)")
    p.add_argument("--region", required=True, help="S,N,W,E in degrees")
    p.add_argument("--method", required=True, choices=None, help=f"one of {', '.join(METHODS)}")
    p.add_argument("--members", type=int, default=1, help="ensemble members (default 1; baselines: 1)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"sampler steps (default {DEFAULT_STEPS})")
    p.add_argument("--seed", type=int, default=0, help="base seed (per-case seeds derive from it and the time)")
    p.add_argument("--guidance-scale", type=float, default=None, help="guidance scale ζ (default: tuned)")
    p.add_argument("--checkpoint", default=None,
                   help="prior checkpoint (.safetensors/.json/directory), 'tiny' (untrained test network) or "
                        "'default'; default: $ZSSD_PRIOR, else the shipped demo prior")
    p.add_argument("--out", required=True, help="output Zarr store (created, or resumed if it exists)")
    p.add_argument("--scheduler", default=None,
                   help="Dask scheduler address; 'inline' runs in-process; default: a LocalCluster here")
    p.add_argument("--workers", type=int, default=None, help="LocalCluster worker processes (default: cores)")
    p.add_argument("--threads-per-worker", type=int, default=None, help="threads per worker (default 1)")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch threads per worker (default: cores // (workers x threads per worker))")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(_run=run)


def _command(args: argparse.Namespace) -> str:
    """The command line recorded in the store (shell-quoted, options in a fixed order)."""
    parts = ["zssd", "batch"] + (["--gcm-file", *map(str, args.gcm_file)] if getattr(args, "gcm_file", None) else [])
    for k in ("gcm", "start", "end", "freq", "region", "method", "members", "steps", "seed", "guidance_scale",
              "checkpoint", "out", "scheduler", "workers", "threads_per_worker", "torch_threads"):
        v = getattr(args, k, None)
        if v is not None:
            parts += [f"--{k.replace('_', '-')}", str(v)]
    return " ".join(shlex.quote(p) for p in parts)


def spec_from_args(args: argparse.Namespace) -> BatchSpec:
    """The :class:`BatchSpec` of parsed ``zssd batch`` arguments (``--gcm-file`` sets a ``file:<stem>`` source)."""
    files = tuple(str(f) for f in (getattr(args, "gcm_file", None) or ()))
    if files:
        from ..user_files import user_source_name

        gcm = user_source_name(files)
    else:
        gcm = args.gcm
    return BatchSpec(gcm=gcm, gcm_files=files, start=args.start, end=args.end, region=args.region, method=args.method,
                     freq=args.freq, members=args.members, steps=args.steps, seed=args.seed,
                     checkpoint=args.checkpoint, guidance_scale=args.guidance_scale)


def run(args: argparse.Namespace) -> int:
    """Run ``zssd batch``; exit code 0, 1 when some cases failed (they stay pending), 130 after Ctrl-C."""
    for name in ("workers", "threads_per_worker", "torch_threads"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise BatchError(f"--{name.replace('_', '-')} must be at least 1, got {v}")
    if args.scheduler and args.scheduler != "inline" and (args.workers or args.threads_per_worker):
        print("zssd: note: --workers/--threads-per-worker apply to a LocalCluster only; ignored with --scheduler",
              file=sys.stderr)
    spec = spec_from_args(args)
    out = Path(args.out)
    bar = None if args.no_progress else ProgressBar(f"{spec.method} {spec.gcm}")
    try:
        rep = run_batch(spec, out, scheduler=args.scheduler, workers=args.workers,
                        threads_per_worker=args.threads_per_worker, torch_threads=args.torch_threads,
                        progress=bar, command=_command(args))
    except KeyboardInterrupt:
        print(f"zssd: interrupted; {_done_text(out)} time steps are complete in {out}; run the same command again "
              f"to resume", file=sys.stderr)
        return 130
    finally:
        if bar is not None:
            bar.close()
    rate = f", {rep.cases_per_minute:.1f} cases/min" if rep.computed else ""
    print(f"{rep.store}: {rep.computed} computed, {rep.skipped} skipped, {len(rep.failed)} failed "
          f"in {rep.seconds:.1f} s{rate}")
    for t, err in list(rep.failed.items())[:10]:
        print(f"  failed {t}: {err}", file=sys.stderr)
    return 1 if rep.failed else 0


def _done_text(out: Path) -> str:
    """``"N of M"`` steps done in ``out``, or ``"no"`` when it cannot be read (reporting only)."""
    try:
        done, total = count_done(out)
    except Exception:  # noqa: BLE001 - reporting only
        return "no"
    return f"{done} of {total}"
