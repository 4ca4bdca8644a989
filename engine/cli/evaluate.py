"""``zssd evaluate``: score methods on held-out cases (:func:`zssd_engine.evaluate.evaluate`); JSON + Markdown table."""

from __future__ import annotations

import argparse
import os
import sys

from .. import evaluate as E
from .. import pipeline as P
from ..demo_world import HELDOUT_YEARS

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    """Register ``zssd evaluate`` on an argparse sub-parser collection."""
    p = sub.add_parser("evaluate", help="score downscaling methods on held-out demo cases",
                       description="Score methods on held-out demo cases (years " +
                                   ", ".join(map(str, HELDOUT_YEARS)) + "); prints a Markdown table.")
    p.add_argument("--task", default=None, help="x6 | x10 | x20 | gcm:NAME (a pseudo-GCM) | era5-x20 | era5-x10 "
                                                "(real ERA5 week, scored at its 1° points); or use --gcm-file")
    p.add_argument("--gcm-file", nargs="+", metavar="FILE", help="your own input files (NetCDF, GRIB or Zarr; as "
                   "zssd downscale --gcm-file) instead of --task; needs --reference-file and cases")
    p.add_argument("--reference-file", nargs="+", metavar="FILE",
                   help="the truth for --gcm-file (e.g. your ERA5 at 0.25° or 1°); scored at its own points")
    p.add_argument("--times", default=None, help="with --gcm-file: comma-separated ISO times")
    p.add_argument("--regions", default=None, help="with --gcm-file: 'S,N,W,E;S,N,W,E' (every time on every region)")
    p.add_argument("--cases-file", default=None, help="with --gcm-file: TOML with [[case]] time=…, region=…, name=…")
    p.add_argument("--time-tolerance", default=None, help="with --gcm-file: largest distance to the nearest step")
    p.add_argument("--methods", default="bilinear,lapse,bcsd,ddrm,dps,zssd", help="comma-separated methods")
    p.add_argument("--cases", type=int, default=8, help="number of cases (half catalog cyclones, half random)")
    p.add_argument("--steps", type=int, default=100, help="sampler steps")
    p.add_argument("--members", type=int, default=1, help="ensemble members (the ensemble mean is scored)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random cases and the samplers")
    p.add_argument("--region-px", type=int, default=128, help="region size in 0.25 deg pixels (default 128)")
    p.add_argument("--guidance-scale", default=None,
                   help="zeta, e.g. '3' for both or 'zssd=3,dps=10' (default: tuned values)")
    p.add_argument("--checkpoint", default=None, help="prior checkpoint (default: the demo prior)")
    p.add_argument("--json", required=True, help="output JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(_run=run)


def _parse_scales(text: str | None) -> dict[str, float] | None:
    """``--guidance-scale``: ``"3"`` (every guided method) or ``"zssd=3,dps=10"``; ``None`` when not given."""
    if not text:
        return None
    if "=" not in text:
        z = float(text)
        return {"zssd": z, "zssd-bc": z, "dps": z}
    out = {}
    for part in text.split(","):
        k, _, v = part.partition("=")
        if k.strip() not in ("zssd", "zssd-bc", "dps"):
            raise ValueError(f"--guidance-scale: unknown method {k.strip()!r} (zssd, zssd-bc, dps)")
        out[k.strip()] = float(v)
    return out


def _check_inputs(args: argparse.Namespace) -> list | None:
    """Check ``--task`` or ``--gcm-file``/``--reference-file``; return the user's cases (``None`` for a task)."""
    if args.gcm_file:
        from ..user_files import parse_cases

        if args.task:
            raise ValueError("give --task or --gcm-file, not both")
        if not args.reference_file:
            raise ValueError("--gcm-file needs --reference-file (the truth to score against)")
        for f in list(args.gcm_file) + list(args.reference_file):
            if not os.path.exists(f):
                raise FileNotFoundError(f"{f} not found")
        return parse_cases(args.times, args.regions, args.cases_file)
    if not args.task:
        raise ValueError("give --task NAME or --gcm-file FILE … --reference-file FILE …")
    E.parse_task(args.task)
    return None


def _command(args: argparse.Namespace) -> str:
    """The command line recorded in the JSON (``command``)."""
    cmd = "zssd evaluate " + " ".join(
        f"--{k.replace('_', '-')} {getattr(args, k)}" for k in ("task", "methods", "cases", "steps", "members",
                                                                 "seed", "region_px", "json", "times", "regions",
                                                                 "cases_file", "time_tolerance")
        if getattr(args, k, None) is not None
    ) + (f" --guidance-scale {args.guidance_scale}" if args.guidance_scale else "") + (
        f" --checkpoint {args.checkpoint}" if args.checkpoint else "")
    if args.gcm_file:
        cmd += " --gcm-file " + " ".join(args.gcm_file) + " --reference-file " + " ".join(args.reference_file)
    return cmd


def run(args: argparse.Namespace) -> int:
    """Run ``zssd evaluate``: validate, score, write the JSON and the Markdown table, print the table."""
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise ValueError("--methods is empty")
    for m in methods:
        P.check_method(m)
    user_cases = _check_inputs(args)
    scales = _parse_scales(args.guidance_scale)
    out_dir = os.path.dirname(os.path.abspath(args.json))
    if not os.path.isdir(out_dir):
        raise FileNotFoundError(f"output directory {out_dir} does not exist")
    prog = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    res = E.evaluate(args.task or "files", methods, args.cases, args.steps, args.members, args.seed,
                     args.checkpoint, scales, args.region_px, progress=prog, gcm_files=args.gcm_file,
                     reference_files=args.reference_file, user_cases=user_cases, time_tolerance=args.time_tolerance)
    res["command"] = _command(args)
    P.write_json_atomic(res, args.json)
    md = E.markdown_table(res)
    P._write_atomic(os.path.splitext(args.json)[0] + ".md", lambda tmp: tmp.write_text(md + "\n"))
    print(md)
    return 0
