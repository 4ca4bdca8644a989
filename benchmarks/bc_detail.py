"""How much of a bias-corrected GCM field's 2.5°-scale detail is real, per pseudo-GCM (training-year cases).

Guiding ``zssd-bc`` on 2.5° instead of 5° unified cells (``bc_guidance.py``) pulls x̂0 toward the corrected
field's *2.5° detail*: each 2.5° cell mean minus the mean of its 5° cell.  That helps where the model resolves
that detail and hurts where it is mostly the model's own smoothing.  This script measures it without sampling:
the detail of the corrected field Ŷ against the same detail of the reference, pooled over training-year cases
(the cases of ``bc_guidance.py``, none a correction training time): their correlation and rms ratio.

    python benchmarks/bc_detail.py --cases 12
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, md_header, write  # noqa: E402
from bc_grid import is_correction_training_time  # noqa: E402
from tune_guidance import training_cases  # noqa: E402

from zssd_engine import pipeline as P  # noqa: E402
from zssd_engine.bias_correction import bias_corrected_case  # noqa: E402
from zssd_engine.gcm import PSEUDO_GCMS  # noqa: E402
from zssd_engine.operators import regrid  # noqa: E402
from zssd_engine.samplers.observation import ucg_coarse_grid  # noqa: E402

VARIABLES = ("t2m", "msl", "u10", "v10")


def detail_2p5(da, g25, g5) -> np.ndarray:
    """2.5° cell means (cells ``g25``) minus their 5° cell's mean (cells ``g5``, nested in them), flattened."""
    a25 = np.asarray(regrid(da, g25).values).squeeze()
    parent = np.asarray(regrid(regrid(da, g5), g25).values).squeeze()  # each 2.5° cell lies in one 5° cell
    return (a25 - parent).ravel()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=12)
    ap.add_argument("--region-px", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    world = P.get_world(0)
    cases = [c for c in training_cases(args.cases + 4, args.seed + 2, args.region_px, world)
             if not is_correction_training_time(c.time)][:args.cases]
    summary = {}
    for col, spec in PSEUDO_GCMS.items():
        pairs = {v: ([], []) for v in VARIABLES}
        for c in cases:
            case = P.prepare_case(col, c.time, c.region, world=world)
            fixed = bias_corrected_case(case).gcm
            cells = ucg_coarse_grid(case.fine, 2.5), ucg_coarse_grid(case.fine, 5.0)
            for v in VARIABLES:
                pairs[v][0].append(detail_2p5(fixed[v], *cells))
                pairs[v][1].append(detail_2p5(case.reference[v].squeeze(drop=True), *cells))
        summary[col] = {"smooth_cells": spec.smooth_cells}
        for v, (g, r) in pairs.items():
            g, r = np.concatenate(g), np.concatenate(r)
            ok = np.isfinite(g) & np.isfinite(r)
            summary[col][v] = {"corr": float(np.corrcoef(g[ok], r[ok])[0, 1]),
                               "rms_ratio": float(g[ok].std() / r[ok].std())}
        print(col, summary[col], file=sys.stderr, flush=True)
    payload = {**header(), "settings": vars(args), "cases": [f"{c.name} {c.time:%Y-%m-%dT%H:%M}" for c in cases],
               "summary": summary}
    lines = ["# zssd-bc: how real is the corrected GCM field's 2.5° detail (training-year cases)\n", md_header(payload),
             f"{len(cases)} training-year cases, {args.region_px}x{args.region_px} px.  Detail = 2.5° cell mean minus its "
             "5° cell's mean; the corrected field Ŷ (quantile-mapped on the GCM's cells) against the demo-world "
             "reference: correlation / rms ratio (Ŷ over reference), pooled over cases and cells.  No sampling; "
             "nothing here is a held-out score.\n",
             "| GCM | smoothing (cells) | " + " | ".join(f"{v} corr / rms" for v in VARIABLES) + " |",
             "|---|---|" + "---|" * len(VARIABLES)]
    for col, s in summary.items():
        lines.append(f"| {col} | {s['smooth_cells']:g} | "
                     + " | ".join(f"{s[v]['corr']:.2f} / {s[v]['rms_ratio']:.2f}" for v in VARIABLES) + " |")
    write("bc_detail", payload, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
