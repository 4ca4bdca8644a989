"""Where zssd-bc's t2m error sits inside the guidance cells, beside BCSD's (training-year cases).

The ensemble mean's t2m error ``e = x̄ − ref`` splits, cell by cell of the guidance grid, into three
orthogonal parts:

* **cell mean**: ``ē`` per cell — what UCG's pull on the corrected cell means is meant to fix;
* **land/terrain**: the projection on the cell's land-fraction and elevation rows
  (:func:`zssd_engine.samplers.subcell.subcell_basis`, terrain order 1) — what the sub-cell term pulls
  toward the training climatology;
* **rest**: everything else within the cell (weather, coasts and terrain that are not linear in land fraction
  and elevation) — left to the prior.

Each part's cos φ weighted RMS (K; the squares add up to the total's), for ``zssd-bc`` at its default
configuration, for BCSD, and for zssd-bc's guidance target itself (the corrected GCM field's unified-cell
means, flat over each cell: its cell-mean part is the floor the guidance can reach, its other parts are the
reference's own within-cell detail), regridded from the GCM's cells as is (``target``) and as an anomaly from
the training climatology (``target (anomaly)``, :func:`zssd_engine.samplers.observation.coarse_means`), on the
same cases as :mod:`bc_guidance` (``--boxes``, ``--relief-cells`` or the usual training-year cases).  Nothing
here is a held-out score.

    python benchmarks/bc_error_parts.py --columns IPSL-CM6A-LR --boxes=<lat0,lat1,lon0,lon1;…> --cases 4
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
from bc_guidance import add_case_set_args, study_cases  # noqa: E402

from zssd_engine import pipeline as P  # noqa: E402
from zssd_engine.bias_correction import bias_corrected_case, guidance_res, subcell_climatology  # noqa: E402
from zssd_engine.grids import lat_weights  # noqa: E402
from zssd_engine.samplers.observation import ucg_coarse_grid  # noqa: E402
from zssd_engine.samplers.subcell import cell_labels, subcell_basis  # noqa: E402
from zssd_engine.samplers.zssd import zssd_observation  # noqa: E402
from zssd_engine.statics import load_statics  # noqa: E402

PARTS = ("total", "cell mean", "land/terrain", "rest")
METHODS = ("bcsd", "zssd-bc", "target", "target (anomaly)")


def error_parts(err: np.ndarray, fine, res: float) -> dict[str, float]:
    """cos φ weighted RMS of ``err`` ``(H, W)`` and of its three parts per ``res``° unified cell (see above)."""
    dem, land = load_statics().region(fine)
    basis = subcell_basis(fine, ucg_coarse_grid(fine, res), dem, land)
    e = np.asarray(err, np.float64).ravel()
    lab, n = basis.labels, basis.weights.shape[1]
    cnt = np.bincount(lab, minlength=n)
    mean = (np.bincount(lab, e, minlength=n) / np.maximum(cnt, 1))[lab]
    coeff = basis.coefficients(e - mean)                       # (K, n); rows are orthogonal to the constant
    terrain = (coeff[:, lab] * basis.values).sum(0)
    w = np.broadcast_to(lat_weights(fine.lat)[:, None], fine.shape).ravel()
    parts = {"total": e, "cell mean": mean, "land/terrain": terrain, "rest": e - mean - terrain}
    return {k: float(np.sqrt(np.sum(w * v ** 2) / np.sum(w))) for k, v in parts.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_case_study_args(ap, columns="IPSL-CM6A-LR", members=4, name="bc_error_parts")
    add_case_set_args(ap)
    ap.add_argument("--no-zssd", action="store_true", help="BCSD and the targets only (no sampling)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    world = P.get_world(0)
    prior = P.load_prior(args.checkpoint)
    cases = study_cases(args, world, 2.5)
    t0, per = time.time(), {}
    for col in args.columns.split(","):
        for i, c in enumerate(cases):
            case = P.prepare_case(col, c.time, c.region, world=world)
            res = guidance_res(case)
            ref = case.reference["t2m"].squeeze(drop=True).values
            row = {"case": f"{c.name} {c.time:%Y-%m-%dT%H:%M} {c.region.as_text()}", "res": res}
            runs = [("bcsd", lambda: P.run_method(case, "bcsd"))]
            if not args.no_zssd:
                runs.append(("zssd-bc", lambda: P.run_method(case, "zssd-bc", prior=prior, steps=args.steps,
                                                             members=args.members, seed=args.seed + i)))
            for m, run in runs:
                x = run()["t2m"].isel(time=0, drop=True)
                x = (x.mean("member") if "member" in x.dims else x).values
                row[m] = error_parts(x - ref, case.fine, res)
            for m, clim in (("target", None), ("target (anomaly)", subcell_climatology(case))):
                obs = zssd_observation(prior, bias_corrected_case(case).gcm, case.fine, res, target_climatology=clim)
                y = np.asarray(obs.extra["y_coarse"][prior.variables.index("t2m")], np.float64).ravel()
                y = y[cell_labels(case.fine, obs.coarse_grid)]  # each pixel: its cell's corrected mean
                row[m] = error_parts(y - ref, case.fine, res)
            per.setdefault(col, []).append(row)
            print(f"[{col} {i + 1}/{len(cases)}] " + "; ".join(
                f"{m}: " + " ".join(f"{row[m][k]:.3f}" for k in PARTS) for m in METHODS if m in row),
                file=sys.stderr, flush=True)
    summary = {col: {m: {k: float(np.sqrt(np.mean([r[m][k] ** 2 for r in rows]))) for k in PARTS}
                     for m in METHODS if m in rows[0]} for col, rows in per.items()}
    payload = {**header(), "settings": vars(args), "checkpoint_sha256": P.prior_sha256(prior),
               "summary": summary, "cases": per, "seconds": round(time.time() - t0, 1)}
    lines = ["# Where zssd-bc's t2m error sits inside the guidance cells (training-year cases)\n", md_header(payload),
             f"{len(cases)} training-year cases per column (none a correction training time), {args.members} "
             f"members, {args.steps} steps, zssd-bc at its default configuration.  cos φ weighted RMS (K) of the "
             "ensemble mean's t2m error and of its parts per guidance cell: the cell mean, the projection on the "
             "cell's land-fraction and elevation rows, and the rest (squares add up; RMS over cases).  `target`: "
             "zssd-bc's guidance target (the corrected cell means, flat over each cell; `(anomaly)`: regridded as an "
             "anomaly from the training climatology).  Nothing here is a "
             "held-out score.\n"]
    for col, sm in summary.items():
        lines += [f"\n### {col}\n", "| method | " + " | ".join(PARTS) + " |", "|---" * (len(PARTS) + 1) + "|"]
        lines += [f"| {m} | " + " | ".join(f"{r[k]:.3f}" for k in PARTS) + " |" for m, r in sm.items()]
    return finish_report(args.name, payload, lines)


if __name__ == "__main__":
    raise SystemExit(main())
