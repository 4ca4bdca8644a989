"""On which grid `zssd-bc` should quantile-map each variable: the GCM's native cells or the unified 5° cells.

`zssd-bc` guides the samples' 5° means toward a bias-corrected GCM field, and guidance meets its target
(``bc_scales.md``: the samples' large-scale error equals the target's).  So the choice of correction grid
is judged without sampling, by the error of the guidance target itself: the UCG observation ``y_high``
built from the corrected field, against the reference's own 5°-resolved part ``A_high(ref)`` (cos φ
weighted MAE), per variable and pseudo-GCM column.

* ``native``: ``QM(Y)`` on the GCM's own cells (BCSD's BC step), then UCG averages it to 5°;
* ``unified``: ``QM(A₅ Y)`` on the unified 5° cells.

**The choice is made on training-year cases only** (:func:`tune_guidance.training_cases`, times that are
not among the correction's own training times); it is written into the engine by hand as
:data:`zssd_engine.bias_correction.DEFAULT_BIAS_GRID`.  ``--held-out N`` adds the same figures on the
first N held-out cases of the paper table for information: they play no part in the choice.

    python benchmarks/bc_grid.py --cases 8 --held-out 8
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import finish_report, header, md_header  # noqa: E402
from bc_scales import area_mae, large_scale_operator  # noqa: E402
from tune_guidance import training_cases  # noqa: E402

from zssd_engine import pipeline as P  # noqa: E402
from zssd_engine.bias_correction import BIAS_GRIDS, bias_corrected_case  # noqa: E402
from zssd_engine.evaluate import evaluation_cases  # noqa: E402
from zssd_engine.gcm import PSEUDO_GCMS  # noqa: E402
from zssd_engine.grids import lat_weights  # noqa: E402
from zssd_engine.pipeline import BCSD_DAYS, BCSD_YEARS  # noqa: E402
from zssd_engine.samplers.zssd import zssd_observation  # noqa: E402

VARIABLES = ("t2m", "msl", "u10", "v10")


def target_errors(case, prior) -> dict[str, dict[str, float]]:
    """``{variable: {grid | "uncorrected": MAE of y_high − A_high(ref)}}`` for one case."""
    fine = case.fine
    a_high = large_scale_operator(fine)
    w = lat_weights(fine.lat)[:, None] * np.ones(fine.shape)

    def y_high(gcm) -> np.ndarray:
        obs = zssd_observation(prior, gcm, fine)
        return (obs.y * prior.std[:, None, None] + prior.mean[:, None, None]).double().cpu().numpy()

    vi = {v: list(prior.variables).index(v) for v in VARIABLES}
    targets = {"uncorrected": y_high(case.gcm)}
    for g in BIAS_GRIDS:
        targets[g] = y_high(bias_corrected_case(case, {v: g for v in VARIABLES}).gcm)
    out = {}
    for v in VARIABLES:
        ah = a_high(np.asarray(case.reference[v].values, dtype=np.float64))
        out[v] = {k: area_mae(y[vi[v]] - ah, w) for k, y in targets.items()}
    return out


def is_correction_training_time(t) -> bool:
    return t.year in BCSD_YEARS and t.day in BCSD_DAYS


def correction_free_training_cases(n: int, seed: int, region_px: int, world) -> list:
    """``n`` training-year cases (:func:`tune_guidance.training_cases`, seed ``seed + 2``) none of which is a
    time the bias correction trains on — the cases the ``bc_*`` case studies choose defaults on."""
    return [c for c in training_cases(n + 4, seed + 2, region_px, world)
            if not is_correction_training_time(c.time)][:n]


def run(cases, columns, prior, world, tag: str) -> dict:
    per: dict[str, list] = {}
    for col in columns:
        for i, c in enumerate(cases):
            case = P.prepare_case(col, c.time, c.region, world=world)
            e = target_errors(case, prior)
            per.setdefault(col, []).append({"case": f"{c.name} {c.time:%Y-%m-%dT%H:%M} {c.region.as_text()}", **e})
            print(f"[{tag} {col} {i + 1}/{len(cases)}] " + " ".join(
                f"{v}: {e[v]['native']:.3g}/{e[v]['unified']:.3g}" for v in VARIABLES), file=sys.stderr, flush=True)
    return {col: {v: {k: float(np.mean([r[v][k] for r in rows])) for k in rows[0][v]} for v in VARIABLES}
            for col, rows in per.items()} | {"_cases": per}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--columns", default=",".join(PSEUDO_GCMS))
    ap.add_argument("--cases", type=int, default=8, help="training-year cases (the choice is made on these)")
    ap.add_argument("--held-out", type=int, default=0, help="held-out cases, reported for information only")
    ap.add_argument("--region-px", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="bc_grid")
    args = ap.parse_args(argv)
    world = P.get_world(0)
    prior = P.load_prior(None)  # only its normalisation and variable order are used
    columns = args.columns.split(",")
    t0 = time.time()
    val = [c for c in training_cases(args.cases + 4, args.seed + 1, args.region_px, world)
           if not is_correction_training_time(c.time)][:args.cases]
    results = {"validation (training years)": run(val, columns, prior, world, "val")}
    if args.held_out:
        results["held-out (information only)"] = run(evaluation_cases(args.held_out, args.seed, args.region_px, world),
                                                     columns, prior, world, "held-out")
    v_res = results["validation (training years)"]
    choice = {v: min(BIAS_GRIDS, key=lambda g: float(np.mean([v_res[c][v][g] for c in columns]))) for v in VARIABLES}
    payload = {**header(), "settings": vars(args), "choice": choice, "results": results,
               "seconds": round(time.time() - t0, 1)}
    lines = ["# zssd-bc: which grid to quantile-map each variable on\n", md_header(payload),
             "MAE of the guidance target's 5°-resolved part against the reference's (`y_high − A_high(ref)`, "
             "cos φ weighted, mean over cases): what the samples' large-scale error will be, since guidance meets "
             f"its target.  {args.region_px}x{args.region_px} px.  `native`: QM on the GCM's cells (BCSD's BC step); "
             "`unified`: QM of the 5° means.  **The choice uses the training-year cases only.**\n",
             "Chosen: " + ", ".join(f"{v} → **{g}**" for v, g in choice.items()) + "\n"]
    for tag, res in results.items():
        n = len(next(iter(res["_cases"].values())))
        lines += [f"\n## {tag}: {n} cases per column\n", "| column | variable | uncorrected | native | unified |",
                  "|---|---|---|---|---|"]
        for col in columns:
            for v in VARIABLES:
                r = res[col][v]
                best = min(BIAS_GRIDS, key=lambda g: r[g])
                lines.append(f"| {col} | {v} | {r['uncorrected']:.3g} | " + " | ".join(
                    (f"**{r[g]:.3g}**" if g == best else f"{r[g]:.3g}") for g in BIAS_GRIDS) + " |")
        lines.append("\nMean over columns: " + "; ".join(
            f"{v} native {np.mean([res[c][v]['native'] for c in columns]):.3g} / unified "
            f"{np.mean([res[c][v]['unified'] for c in columns]):.3g}" for v in VARIABLES) + "\n")
    return finish_report(args.name, payload, lines)


if __name__ == "__main__":
    raise SystemExit(main())
