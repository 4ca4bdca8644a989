"""``zssd downscale``: one GCM field, one time, one region → a CF NetCDF file (through :mod:`zssd_engine.pipeline`).

Everything is validated before any computation; the file is written atomically, so an error or
Ctrl-C leaves nothing behind.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time as _time
from pathlib import Path
from typing import Any

import xarray as xr

from .. import pipeline as P
from ..errors import DataError
from ..gcm import GCM_SOURCES
from ..variables import VARIABLES

__all__ = ["add_parser", "run", "source_of"]


def add_parser(sub) -> None:
    """Register ``zssd downscale`` on an argparse sub-parser collection."""
    p = sub.add_parser("downscale", help="downscale one GCM field to 0.25 deg and write a CF NetCDF file",
                       description="Downscale a GCM field (pseudo-GCM, paired task x6/x10/x20 or the real "
                                   "MPI-ESM-LR file) over a region with a baseline or a diffusion sampler.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--gcm", help=f"GCM source id ({', '.join(GCM_SOURCES)})")
    src.add_argument("--gcm-file", nargs="+", metavar="FILE",
                     help="your own GCM/reanalysis files instead of --gcm: CF NetCDF, GRIB or Zarr; one per "
                          "variable or one with several; CMIP (tas, psl, uas, vas) or ERA5 (t2m/2t, msl, u10/10u, "
                          "v10/10v) names; any calendar")
    p.add_argument("--time", required=True, help="ISO time, e.g. 2021-08-28T12:00 (the nearest step within "
                                                 "--time-tolerance is used and recorded)")
    p.add_argument("--time-tolerance", default=None,
                   help="largest distance to the nearest time step of --gcm-file, e.g. 3h (default: half the "
                        "file's median step; monthly files match by month)")
    p.add_argument("--region", required=True, help="S,N,W,E in degrees, e.g. 10,42,120,152")
    p.add_argument("--method", required=True, help=f"one of {', '.join(P.METHODS)}")
    p.add_argument("--steps", type=int, default=100, help="sampler steps (1-1000; default 100)")
    p.add_argument("--members", type=int, default=1, help="ensemble members (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--guidance-scale", type=float, default=None,
                   help="guidance scale zeta for zssd/dps (default: the tuned value for the step count)")
    p.add_argument("--guidance-schedule", default="constant", help="constant|noise (zssd/dps)")
    p.add_argument("--eta", type=float, default=None, help="DDIM eta (zssd/dps default 1 = DDPM; ddrm default 0.85)")
    p.add_argument("--sigma-y", type=float, default=0.0, help="ddrm observation noise (normalised units; 0 = exact)")
    p.add_argument("--variables", default=None, help=f"comma-separated subset of {','.join(VARIABLES)} to write")
    p.add_argument("--checkpoint", default=None, help="prior checkpoint (.safetensors; default: the demo prior)")
    p.add_argument("--world-seed", type=int, default=0, help="demo world seed")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--out", required=True, help="output NetCDF file")
    p.set_defaults(_run=run)


def _validate_args(args: argparse.Namespace) -> tuple[list[str] | None, Path]:
    """Check the arguments that need no data; return ``(variables to write or None, output path)``."""
    P.check_method(args.method)
    from ..samplers.guidance import GUIDANCE_SCHEDULES
    from ..samplers.respacing import check_steps

    check_steps(args.steps)
    if args.members < 1:
        raise ValueError(f"--members must be at least 1, got {args.members}")
    if args.guidance_schedule not in GUIDANCE_SCHEDULES:
        raise ValueError(f"unknown --guidance-schedule {args.guidance_schedule!r}; choose from "
                         f"{', '.join(GUIDANCE_SCHEDULES)}")
    if args.guidance_scale is not None and args.method not in P.GUIDED_METHODS:
        raise ValueError(f"--guidance-scale applies to zssd, zssd-bc and dps only, not {args.method}")
    variables = None
    if args.variables:
        variables = [v.strip() for v in args.variables.split(",") if v.strip()]
        bad = [v for v in variables if v not in VARIABLES]
        if bad or not variables:
            raise ValueError(f"unknown variable(s) {bad}; choose from {', '.join(VARIABLES)}")
    out = Path(args.out)
    if out.suffix not in (".nc", ".nc4"):
        raise ValueError(f"--out must be a NetCDF file name ending in .nc, got {args.out!r}")
    if not (out.parent if str(out.parent) else Path(".")).is_dir():
        raise FileNotFoundError(f"output directory {out.parent} does not exist")
    if args.checkpoint and args.checkpoint != "tiny" and not Path(args.checkpoint).exists():
        raise FileNotFoundError(f"checkpoint {args.checkpoint} not found")
    return variables, out


def source_of(args: argparse.Namespace) -> tuple[str, dict | None]:
    """``(source id, files)`` for ``--gcm NAME`` or ``--gcm-file FILE …`` (a file set named ``file:<stem>``)."""
    paths = getattr(args, "gcm_file", None)
    if not paths:
        return args.gcm, None
    from ..user_files import user_source_name

    for f in paths:
        if not Path(f).exists():
            raise FileNotFoundError(f"--gcm-file {f} not found")
    name = user_source_name(paths)
    return name, {name: [Path(f) for f in paths]}


def run(args: argparse.Namespace) -> int:
    """``zssd downscale``: validate everything, run the method (tqdm progress), write atomically."""
    variables, out = _validate_args(args)
    gcm, files = source_of(args)
    case = P.prepare_case(gcm, args.time, args.region, world_seed=args.world_seed, files=files,
                          time_tolerance=args.time_tolerance)
    unguided = [v for v in VARIABLES if v not in case.gcm.data_vars]
    if files and unguided:
        print(f"zssd: note: {gcm} has no {', '.join(unguided)}: "
              + ("the prior draws them unguided" if args.method in P.DIFFUSION_METHODS else "they are not written"),
              file=sys.stderr)
    if variables is not None and args.method in P.BASELINES:
        missing = [v for v in variables if v not in case.gcm.data_vars]
        if missing:
            raise DataError(f"{gcm} has no {', '.join(missing)} (it has {', '.join(case.gcm_variables)}); "
                            f"{args.method} cannot produce it")
    t0 = _time.perf_counter()
    if args.method in P.BASELINES:
        ds = P.baseline_result(case, P.baseline(case, args.method), args.method, None, variables)
    else:
        ds = _sample(args, case, gcm, variables, t0)
    ds.attrs["history"] = f"{P._now()} zssd downscale " + " ".join(_argv_of(args))
    ds.attrs["machine"] = f"{platform.node()} ({platform.machine()}, {platform.system()})"
    P.write_netcdf_atomic(ds, out)
    print(f"wrote {out} ({args.method}, {case.label()})")
    return 0


def _sampler_options(args: argparse.Namespace, prior, case: P.Case) -> tuple[float | None, dict[str, Any]]:
    """``(guidance scale, keyword options)`` of the diffusion sampler named by ``--method`` (ζ by default: the
    prior's tuned value for the case's kind of input, :func:`zssd_engine.pipeline.guidance_default`)."""
    kw: dict[str, Any] = {}
    gs = args.guidance_scale
    if args.method in P.GUIDED_METHODS:
        gs = P.guidance_default(args.method, args.steps, prior, case) if gs is None else gs
        kw["guidance_schedule"] = args.guidance_schedule
        if args.eta is not None:
            kw["eta"] = args.eta
    else:
        kw["sigma_y"] = args.sigma_y
        if args.eta is not None:
            kw["eta"] = args.eta
    return gs, kw


def _sample(args: argparse.Namespace, case: P.Case, gcm: str, variables: list[str] | None,
            t0: float) -> xr.Dataset:
    """Run the diffusion sampler with a progress bar; the result dataset with its provenance."""
    from tqdm.auto import tqdm

    from ..bias_correction import BC_METHODS, bias_attrs

    prior = P.load_prior(args.checkpoint, args.device)
    gs, kw = _sampler_options(args, prior, case)
    gen = P.sampler(case, prior, args.method, args.steps, args.members, args.seed, gs, **kw)
    final = None
    bar = tqdm(total=args.steps, desc=f"{args.method} {gcm}", unit="step", file=sys.stderr, dynamic_ncols=True)
    try:
        for st in gen:
            final = st
            bar.update(1)
            if st.misfit == st.misfit:
                bar.set_postfix(misfit=f"{st.misfit_rms:.3g}", refresh=False)
    finally:
        bar.close()
        gen.close()
    return P.result_dataset(case, final, prior, args.method, args.steps, args.seed, gs,
                            _time.perf_counter() - t0, variables, extra_attrs={
                                **{k: v for k, v in kw.items() if isinstance(v, (int, float, str))},
                                **(bias_attrs(case) if args.method in BC_METHODS else {})})


def _argv_of(args: argparse.Namespace) -> list[str]:
    """The arguments recorded in the file's ``history`` attribute."""
    parts = []
    if getattr(args, "gcm_file", None):
        parts += ["--gcm-file", *map(str, args.gcm_file)]
    for k in ("gcm", "time", "time_tolerance", "region", "method", "steps", "members", "seed", "guidance_scale",
              "checkpoint", "out"):
        v = getattr(args, k, None)
        if v is not None:
            parts += [f"--{k.replace('_', '-')}", str(v)]
    return parts
