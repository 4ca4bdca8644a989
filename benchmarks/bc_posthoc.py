"""Where zssd-bc's ensemble mean loses to BCSD, and what a correction after sampling would buy (training-year cases).

On the 32 held-out cases zssd-bc ties BCSD on IPSL-CM6A-LR's t2m MAE and loses on its P99; the worst
cases are land at night and steep terrain, where the samples' 2.5° means miss the reference by more than
BCSD's do.  This script asks, **on training-year cases only** (it informs a method, so nothing it sees may
be scored), how the ensemble mean's scores change when, after sampling,

* ``proj<λ>``: its means on the guidance cells are moved a fraction λ of the way onto the corrected
  field Ŷ's (``x ← x + λ B (C B)⁺ (C Ŷ − C x)``, ``C`` the conservative average onto the unified cells,
  ``B`` the bilinear re-projection: λ = 1 makes ``C x = C Ŷ`` exactly — hard data consistency);
* ``part<λ>``: its means over the land part and over the sea part of every guidance cell are moved a
  fraction λ of the way onto BCSD's (BCSD's fine monthly climatology knows the land–sea and terrain
  contrast of the month and hour; each pixel keeps its own deviation from its part's mean);
* ``blend<λ>``: ``(1 − λ) x + λ BCSD`` (the plain average of the two estimators, for scale).

    python benchmarks/bc_posthoc.py --columns IPSL-CM6A-LR --cases 6 --members 4 --steps 50

Scores: cos φ weighted MAE and P99 (0.99 area quantile of |error|) against the demo-world reference, per
variable, mean over cases.  Cases: :func:`tune_guidance.training_cases` minus the correction's training
times (as ``bc_guidance.py``).
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
from bc_grid import correction_free_training_cases  # noqa: E402

from zssd_engine import pipeline as P  # noqa: E402
from zssd_engine.bias_correction import bias_corrected_case, guidance_res  # noqa: E402
from zssd_engine.metrics import mae, p99_error  # noqa: E402
from zssd_engine.operators import bilinear, conservative  # noqa: E402
from zssd_engine.samplers.observation import gcm_grid_of, ucg_coarse_grid  # noqa: E402

VARIABLES = ("t2m", "msl", "u10", "v10")


def cell_projector(fine, coarse):
    """``project(x, y, λ) = x + λ B (C B)⁺ (y − C x)``: λ = 1 gives ``C x = y`` on the coarse cells.

    The operators and the (separable) pseudo-inverse are built once per grid pair, then applied to every
    variable and λ.
    """
    c = conservative(fine, coarse, dtype=torch.float64)
    b = bilinear(coarse, fine, dtype=torch.float64)
    inv_lat = torch.linalg.pinv(c.m_lat @ b.m_lat, rtol=1e-6)
    inv_lon = torch.linalg.pinv(c.m_lon @ b.m_lon, rtol=1e-6)

    def project(x: np.ndarray, y_coarse: torch.Tensor, lam: float) -> np.ndarray:
        xt = torch.as_tensor(x, dtype=torch.float64)
        d = inv_lat @ (y_coarse - c(xt)) @ inv_lon.T
        return (xt + lam * b(d)).numpy()

    return project


def land_sea_parts(fine, coarse, land: np.ndarray) -> np.ndarray:
    """Label of every fine pixel: (the coarse cell holding its centre, land or sea), as 0..n−1."""
    ilat = np.searchsorted(np.sort(coarse.lat_bounds), fine.lat)
    ilon = np.searchsorted(coarse.lon_bounds, fine.lon)
    key = (ilat[:, None] * (coarse.shape[1] + 2) + ilon[None, :]) * 2 + (land > 0.5)
    return np.unique(key, return_inverse=True)[1].reshape(key.shape)


def part_shift(x: np.ndarray, target: np.ndarray, parts: np.ndarray, lam: float) -> np.ndarray:
    """``x`` with each part's mean moved a fraction ``lam`` onto ``target``'s (pixel deviations kept)."""
    n = np.bincount(parts.ravel())
    mx = np.bincount(parts.ravel(), x.ravel()) / n
    mt = np.bincount(parts.ravel(), target.ravel()) / n
    return x + lam * (mt - mx)[parts]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_case_study_args(ap, columns="IPSL-CM6A-LR", members=4, name="bc_posthoc")
    ap.add_argument("--lambdas", default="0.5,1", help="fractions λ of each correction, comma-separated")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    lams = [float(v) for v in args.lambdas.split(",") if v.strip()]
    world = P.get_world(0)
    prior = P.load_prior(args.checkpoint)
    cases = correction_free_training_cases(args.cases, args.seed, args.region_px, world)
    t0, per = time.time(), {}
    for col in args.columns.split(","):
        for i, c in enumerate(cases):
            case = P.prepare_case(col, c.time, c.region, world=world)
            corrected = bias_corrected_case(case)
            coarse = ucg_coarse_grid(case.fine, guidance_res(case))
            to_coarse = conservative(gcm_grid_of(corrected.gcm), coarse, dtype=torch.float64)
            parts = land_sea_parts(case.fine, coarse, world.statics.region(case.fine)[1])
            project = cell_projector(case.fine, coarse)
            zs = P.run_method(case, "zssd-bc", prior=prior, steps=args.steps, members=args.members,
                              seed=args.seed + i)
            bc = P.run_method(case, "bcsd")
            row = {"case": f"{c.name} {c.time:%Y-%m-%dT%H:%M} {c.region.as_text()}"}
            for v in VARIABLES:
                ref = case.reference[v].squeeze(drop=True)
                x = zs[v].isel(time=0, drop=True).astype(np.float64)
                b = bc[v].squeeze(drop=True).astype(np.float64)
                y_c = to_coarse.masked(torch.as_tensor(np.asarray(corrected.gcm[v], dtype=np.float64)))
                out = {"bcsd": b, "zssd-bc": x}
                for lam in lams:
                    out[f"proj{lam:g}"] = x.copy(data=project(x.values, y_c, lam))
                    out[f"part{lam:g}"] = x.copy(data=part_shift(x.values, b.values, parts, lam))
                    out[f"blend{lam:g}"] = x.copy(data=(1 - lam) * x.values + lam * b.values)
                row[v] = {k: {"mae": float(mae(f, ref)), "p99": float(p99_error(f, ref))} for k, f in out.items()}
            per.setdefault(col, []).append(row)
            t2m = ", ".join(f"{k}={s['mae']:.3f}" for k, s in row["t2m"].items())
            print(f"[{col} {i + 1}/{len(cases)}] t2m MAE {t2m}", file=sys.stderr, flush=True)
    variants = list(per[next(iter(per))][0]["t2m"])
    summary = {col: {v: {k: {s: float(np.mean([r[v][k][s] for r in rows])) for s in ("mae", "p99")} for k in variants}
                     for v in VARIABLES} for col, rows in per.items()}
    payload = {**header(), "settings": vars(args), "checkpoint_sha256": P.prior_sha256(prior),
               "summary": summary, "cases": per, "seconds": round(time.time() - t0, 1)}
    lines = ["# zssd-bc: corrections after sampling (training-year cases)\n", md_header(payload),
             f"{len(cases)} training-year cases per column (none a correction training time), {args.region_px}x"
             f"{args.region_px} px, {args.members} members, {args.steps} steps, default zssd-bc (tuned ζ, guidance "
             "cells of the GCM); scores of the ensemble mean after each correction (see the script's docstring). "
             "Nothing here is a held-out score; on training years BCSD's climatology is in-sample.\n"]
    for col, sm in summary.items():
        lines += [f"\n### {col}\n", "| variant | " + " | ".join(f"{v} MAE | {v} P99" for v in VARIABLES) + " |",
                  "|---" * (1 + 2 * len(VARIABLES)) + "|"]
        for k in variants:
            lines.append(f"| {k} | " + " | ".join(f"{sm[v][k]['mae']:.3g} | {sm[v][k]['p99']:.3g}" for v in VARIABLES)
                         + " |")
    return finish_report(args.name, payload, lines)


if __name__ == "__main__":
    raise SystemExit(main())
