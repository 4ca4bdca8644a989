"""How `zssd-bc` should guide toward the bias-corrected field: unified 5° cells, finer unified cells, or the GCM's own.

Once the GCM field is quantile-mapped on its own cells (``bc_grid.md``), the corrected field Ŷ holds
information at the native resolution (0.94°–2.5° for the five pseudo-GCMs) that UCG's 5° average
discards.  This script compares, **on training-year cases only** (it informs a default, so nothing it
sees may be scored), the ensemble-mean MAE of:

* ``zssd-bc@5°``: UCG toward ``A₅ Ŷ`` (the paper's 5° unified grid);
* ``zssd-bc@<r>°``: UCG with a finer unified grid (``--unified-res``, default 2.5°);
* ``dps-bc``: vanilla DPS toward Ŷ on the GCM's own cells (ζ of DPS);

beside BCSD, trained on the same pairs.  Cases: :func:`tune_guidance.training_cases`, minus any time
that is one of the correction's own training times.

    python benchmarks/bc_guidance.py --columns MIROC6,MPI-ESM1-2-HR --cases 6 --members 4 --steps 50

The per-GCM guidance grid of ``zssd-bc`` (:data:`zssd_engine.bias_correction.BC_GUIDANCE_RES`) is the
one with the lower t2m MAE here.  The sub-cell term's options are chosen the same way: ``--subcell λ…``
(its weight), ``--subcell-order 1,2`` (terrain order) and ``--subcell-res`` (its cells), on the usual cases,
on training-year boxes over relief (``--relief-cells K``) or at training-year times in given boxes
(``--boxes``, e.g. where a column loses on held-out cases: the times differ, the place does not, and a
report says so).  (Results written before that table existed call the 5° row
``zssd-bc``.)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_case_study_args, finish_report, header, md_header  # noqa: E402
from bc_grid import correction_free_training_cases, is_correction_training_time  # noqa: E402
from tune_guidance import training_cases  # noqa: E402

from zssd_engine import pipeline as P  # noqa: E402
from zssd_engine.bias_correction import SUBCELL_VARIABLES, bias_corrected_case, subcell_climatology  # noqa: E402
from zssd_engine.metrics import mae, p99_error  # noqa: E402

VARIABLES = ("t2m", "msl", "u10", "v10")


def scores(ds, case) -> dict[str, float]:
    """cos φ weighted MAE of the ensemble mean against the case's reference, per variable, and t2m's P99."""
    def pair(v):
        return ds[v].isel(time=0, drop=True).astype(np.float64), case.reference[v].squeeze(drop=True)

    return {**{v: float(mae(*pair(v))) for v in VARIABLES}, "t2m_p99": float(p99_error(*pair("t2m")))}


def relief_training_cases(n: int, seed: int, region_px: int, world, min_cells: int, res: float) -> list:
    """``n`` training-year random boxes (:func:`tune_guidance.training_cases`, seed ``seed + 5``, none a time the
    correction trains on) with at least ``min_cells`` cells of the ``res``° unified grid whose elevation std
    reaches :data:`~zssd_engine.samplers.subcell.MIN_RELIEF_STD_M`: the cases on which a terrain-order choice
    can be judged, since elsewhere both orders give the same basis."""
    from zssd_engine.grids import era5_grid
    from zssd_engine.samplers.observation import ucg_coarse_grid
    from zssd_engine.samplers.subcell import MIN_RELIEF_STD_M, cell_labels
    from zssd_engine.statics import load_statics

    out = []
    for c in training_cases(400, seed + 5, region_px, world):
        if not c.name.startswith("train-random") or is_correction_training_time(c.time):
            continue
        fine = era5_grid().select(c.region)[0]
        lab = cell_labels(fine, ucg_coarse_grid(fine, res)).ravel()
        dem = np.asarray(load_statics().region(fine)[0], np.float64).ravel()
        cnt = np.bincount(lab)
        mean = np.bincount(lab, dem) / np.maximum(cnt, 1)
        std = np.sqrt(np.maximum(np.bincount(lab, dem ** 2) / np.maximum(cnt, 1) - mean ** 2, 0.0))
        if np.count_nonzero((std >= MIN_RELIEF_STD_M) & (cnt >= 3)) >= min_cells:
            out.append(c)
        if len(out) == n:
            return out
    raise RuntimeError(f"only {len(out)} of {n} training-year boxes with {min_cells} relief cells found")


def box_training_cases(boxes: str, n: int, seed: int) -> list:
    """``n`` training-year times per box (``"lat0,lat1,lon0,lon1;…"``; seeded, hours 00/06/12/18, none a time the
    correction trains on): a lever judged where a column loses, at times that are never scored."""
    import pandas as pd

    from zssd_engine.demo_world import TRAIN_YEARS
    from zssd_engine.evaluate import EvalCase
    from zssd_engine.pipeline.case import parse_region

    rng = np.random.default_rng([seed, 91])
    out = []
    for b, box in enumerate(x.strip() for x in boxes.split(";") if x.strip()):
        region, k = parse_region(box), 0
        while k < n:
            t = pd.Timestamp(year=int(rng.choice(TRAIN_YEARS)), month=1, day=1) + pd.Timedelta(
                days=int(rng.integers(0, 365)), hours=int(rng.choice([0, 6, 12, 18])))
            if not is_correction_training_time(t):
                k += 1
                out.append(EvalCase(f"train-box{b + 1}-{k:02d}", t, region))
    return out


def add_case_set_args(ap) -> None:
    """``--relief-cells`` and ``--boxes``: the case sets besides the usual training-year ones."""
    ap.add_argument("--relief-cells", type=int, default=0,
                    help="instead of the usual cases, training-year random boxes with at least this many unified "
                         "cells of relief (elevation std >= MIN_RELIEF_STD_M): where --subcell-order 2 acts")
    ap.add_argument("--boxes", default="",
                    help="instead of the usual cases, --cases training-year times in each of these boxes "
                         "(lat0,lat1,lon0,lon1;…; pass as --boxes=…), e.g. where a column loses on held-out cases")


def study_cases(args, world, res: float) -> list:
    """The cases of :func:`add_case_set_args`'s choice (relief cells counted on ``res``° cells), else the usual."""
    if args.boxes:
        return box_training_cases(args.boxes, args.cases, args.seed)
    if args.relief_cells:
        return relief_training_cases(args.cases, args.seed, args.region_px, world, args.relief_cells, res)
    return correction_free_training_cases(args.cases, args.seed, args.region_px, world)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_case_study_args(ap, columns="MIROC6,MPI-ESM1-2-HR", members=4, name="bc_guidance")
    ap.add_argument("--unified-res", type=float, default=2.5)
    ap.add_argument("--no-dps", action="store_true", help="skip dps-bc (a quarter of the time)")
    ap.add_argument("--scale-factors", default="",
                    help="also run the fine grid with ζ times each of these factors, e.g. 0.5,2 (comma-separated)")
    ap.add_argument("--no-coarse", action="store_true", help="skip the 5° row")
    ap.add_argument("--subcell", default="",
                    help="also run the fine grid with the sub-cell climatology term at each of these weights λ, "
                         "e.g. 0.5,1 (comma-separated; zssd_engine.samplers.subcell)")
    ap.add_argument("--subcell-order", default="1",
                    help="terrain orders of the sub-cell basis to run at each λ: 1 (land, elevation), 2 (also "
                         "elevation², zssd_engine.samplers.subcell.subcell_basis); comma-separated")
    ap.add_argument("--subcell-res", default="",
                    help="cells of the sub-cell term to run at each λ and order: resolutions (°) dividing the "
                         "guidance cells', e.g. 2.5,1.25 (comma-separated; default: the guidance cells)")
    ap.add_argument("--anomaly-target", action="store_true",
                    help="run each sub-cell row twice: t2m reaching the unified cells as is, then as an anomaly "
                         "from the training climatology (zssd_engine.samplers.observation.coarse_means; without "
                         "this flag every row takes zssd-bc's default, ANOMALY_TARGET)")
    ap.add_argument("--no-fine", action="store_true",
                    help="skip the fine-grid row without the sub-cell term (only the --subcell rows)")
    add_case_set_args(ap)
    ap.add_argument("--subcell-vars", default=",".join(SUBCELL_VARIABLES),
                    help="variables the sub-cell term constrains (comma-separated)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    world = P.get_world(0)
    prior = P.load_prior(args.checkpoint)
    cases = study_cases(args, world, args.unified_res)
    fine_tag = f"zssd-bc@{args.unified_res:g}°"
    factors = [float(f) for f in args.scale_factors.split(",") if f.strip()]
    subcell = [float(f) for f in args.subcell.split(",") if f.strip()]
    sc_vars = tuple(v.strip() for v in args.subcell_vars.split(",") if v.strip())
    orders = [int(o) for o in args.subcell_order.split(",") if o.strip()]
    cell_res = [float(r) for r in args.subcell_res.split(",") if r.strip()] or [args.unified_res]
    run = dict(prior=prior, steps=args.steps, members=args.members)
    t0, per = time.time(), {}
    for col in args.columns.split(","):
        for i, c in enumerate(cases):
            case = P.prepare_case(col, c.time, c.region, world=world)
            rows = {"bcsd": scores(P.run_method(case, "bcsd"), case)}
            if not args.no_coarse:
                rows["zssd-bc@5°"] = scores(P.run_method(case, "zssd-bc", seed=args.seed + i, unified_res=5.0, **run),
                                            case)
            if not args.no_fine:
                rows[fine_tag] = scores(P.run_method(case, "zssd-bc", seed=args.seed + i, unified_res=args.unified_res,
                                                     subcell_weight=0.0, **run), case)
            for f in factors:  # the guidance scale: ζ of zssd times f
                zeta = f * P.guidance_default("zssd-bc", args.steps)
                rows[f"{fine_tag} ζ×{f:g}"] = scores(P.run_method(case, "zssd-bc", seed=args.seed + i,
                                                                 guidance_scale=zeta, unified_res=args.unified_res,
                                                                 **run), case)
            for lam in subcell:  # the month's land/terrain contrast as a second, weaker observation
                for order in orders:
                    for res in cell_res:
                        tag = (f"{fine_tag} sub-cell({args.subcell_vars}) λ{lam:g}"
                               + (" +elev²" if order == 2 else "")
                               + (f" on {res:g}° cells" if res != args.unified_res else ""))
                        clim = subcell_climatology(case, sc_vars)
                        # --anomaly-target: the target regridded as is, then as an anomaly; else zssd-bc's default
                        for anom in (False, True) if args.anomaly_target else (None,):
                            target = {} if anom is None else {"target_climatology": clim if anom else None}
                            rows[tag + (" anomaly target" if anom else "")] = scores(P.run_method(
                                case, "zssd-bc", seed=args.seed + i, unified_res=args.unified_res, subcell_weight=lam,
                                subcell_climatology=clim, subcell_terrain_order=order, subcell_res=res, **target,
                                **run), case)
            if not args.no_dps:
                rows["dps-bc"] = scores(P.run_method(bias_corrected_case(case), "dps", seed=args.seed + i, **run),
                                        case)
            per.setdefault(col, []).append({"case": f"{c.name} {c.time:%Y-%m-%dT%H:%M} {c.region.as_text()}", **rows})
            print(f"[{col} {i + 1}/{len(cases)}] " + ", ".join(f"{m}={r['t2m']:.3f}" for m, r in rows.items()),
                  file=sys.stderr, flush=True)
    methods = list(per[next(iter(per))][0])[1:]
    keys = (*VARIABLES, "t2m_p99")
    summary = {col: {m: {v: float(np.mean([r[m].get(v, np.nan) for r in rows])) for v in keys} for m in methods}
               for col, rows in per.items()}
    payload = {**header(), "settings": vars(args), "checkpoint_sha256": P.prior_sha256(prior),
               "summary": summary, "cases": per, "seconds": round(time.time() - t0, 1)}
    lines = ["# zssd-bc: guiding toward the corrected field on which cells (training-year cases)\n", md_header(payload),
             f"{len(cases)} training-year cases per column (none of them a correction training time"
             + (f"; {args.cases} per box of --boxes" if args.boxes else "") + "), "
             f"{args.region_px}x{args.region_px} px, {args.members} members, {args.steps} steps, tuned ζ of each "
             "sampler; ensemble-mean MAE (cos φ weighted) against the demo-world reference.  Nothing here is a "
             "held-out score.\n"]
    for col, sm in summary.items():
        lines += [f"\n### {col}\n",
                  "| method | t2m MAE (K) | t2m P99 (K) | msl MAE (Pa) | u10 MAE (m/s) | v10 MAE (m/s) |",
                  "|---|---|---|---|---|---|"]
        for m, r in sm.items():
            lines.append(f"| {m} | {r['t2m']:.3f} | {r['t2m_p99']:.2f} | {r['msl']:.1f} | {r['u10']:.3f} "
                         f"| {r['v10']:.3f} |")
    return finish_report(args.name, payload, lines)


if __name__ == "__main__":
    raise SystemExit(main())
