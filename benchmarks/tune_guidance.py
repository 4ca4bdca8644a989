"""Pick the guidance scale ζ per method and step count — on TRAINING-year cases only.

Protocol (identical for ZSSD and vanilla DPS, so neither is tuned more than the other)
------------------------------------------------------------------------------------
1. Cases: ``--cases`` per task, half demo cyclones at their peak (catalog of
   training years 2015–2020), half seeded random (time, region) boxes in
   training years (:data:`zssd_engine.demo_world.TRAIN_YEARS`); every time is checked
   with :func:`zssd_engine.demo_world.check_training_time` — held-out years are never
   touched.
2. Tasks: ``--tasks`` (default ``x20,gcm:MPI-ESM1-2-LR``: the hardest paired
   ratio and one pseudo-GCM).
3. For each method and step count, ζ runs over a log grid (``--grid``), then two
   refinement points at the geometric midpoints around the best value.
4. Objective: the mean over cases, tasks and guided variables of the cos φ
   weighted MAE of the ensemble mean divided by the prior's per-variable std
   (so variables are commensurate) — lower is better.
5. ζ is quoted for a 128x128 region (:func:`zssd_engine.samplers.guidance.effective_scale`
   rescales it by sqrt(H·W)/128), so tuning on smaller regions (``--region-px 64``)
   transfers.

Output: ``--out`` JSON with every score and the chosen scales; ``--install`` also
writes ``engine/samplers/guidance_defaults.json``, which
:func:`zssd_engine.samplers.default_guidance_scale` reads (log-interpolating in the step
count between tuned step counts).

Example (CPU, small)::

    python benchmarks/tune_guidance.py --steps 20,50 --cases 2 --region-px 64 --install
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from zssd_engine import pipeline as P  # noqa: E402
from zssd_engine.demo_world import TRAIN_YEARS, DemoWorld, check_training_time  # noqa: E402
from zssd_engine.evaluate import EvalCase, machine_info, parse_task  # noqa: E402
from zssd_engine.grids import Region  # noqa: E402
from zssd_engine.metrics import mae  # noqa: E402
from zssd_engine.samplers.guidance_table import TUNED_GUIDANCE_FILE  # noqa: E402

CYCLONE_YEARS = tuple(range(2015, 2021))


def training_cases(n: int, seed: int, size_px: int, world: DemoWorld) -> list[EvalCase]:
    """Half catalog cyclones of training years, half seeded random boxes; all in TRAIN_YEARS."""
    size = size_px * 0.25
    n_cyc = math.ceil(n / 2)
    cyc = world.catalog(years=CYCLONE_YEARS)
    rng = np.random.default_rng([seed, 77])
    out = []
    if cyc:
        for i in rng.choice(len(cyc), size=min(n_cyc, len(cyc)), replace=False):
            c = cyc[int(i)]
            out.append(EvalCase(c.name, c.peak_time, Region.around(c.peak_lat, c.peak_lon, size)))
    k = 0
    while len(out) < n:
        y = int(rng.choice(TRAIN_YEARS))
        t = pd.Timestamp(year=y, month=1, day=1) + pd.Timedelta(days=int(rng.integers(0, 365)),
                                                                 hours=int(rng.choice([0, 6, 12, 18])))
        lat = float(np.rad2deg(np.arcsin(rng.uniform(-1, 1) * np.sin(np.deg2rad(60.0)))))
        k += 1
        out.append(EvalCase(f"train-random-{k:02d}", t, Region.around(lat, float(rng.uniform(-180, 180)), size)))
    for c in out:
        check_training_time(c.time)  # raises for a held-out year
    return out


def objective(ds, ref, prior, variables) -> float:
    std = {v: float(s) for v, s in zip(prior.variables, prior.std.cpu())}
    return float(np.mean([float(mae(ds[v], ref[v], dims=list(ds[v].dims))) / std[v] for v in variables]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="zssd,dps")
    ap.add_argument("--steps", default="20,50,100", help="comma-separated step counts")
    ap.add_argument("--grid", default="0.3,1,3,10,30,100", help="comma-separated zeta values (log grid)")
    ap.add_argument("--tasks", default="x20,gcm:MPI-ESM1-2-LR")
    ap.add_argument("--cases", type=int, default=4, help="cases per task")
    ap.add_argument("--members", type=int, default=1)
    ap.add_argument("--region-px", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--no-refine", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "guidance_scales.json"))
    ap.add_argument("--install", action="store_true", help=f"also write {TUNED_GUIDANCE_FILE}")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        if m not in ("zssd", "dps"):
            ap.error(f"only zssd and dps take a guidance scale, not {m!r}")
    steps_list = [int(s) for s in args.steps.split(",")]
    grid = sorted(float(z) for z in args.grid.split(","))
    tasks = [t for t in args.tasks.split(",") if t]
    prior = P.load_prior(args.checkpoint)
    world = P.get_world(0)
    cases = training_cases(args.cases, args.seed, args.region_px, world)
    prepared = {}
    for task in tasks:
        src = parse_task(task)
        prepared[task] = [P.prepare_case(src, c.time, c.region, world=world) for c in cases]
    t0 = time.time()
    scores: dict[str, dict[str, dict[str, float]]] = {}
    chosen: dict[str, dict[str, float]] = {}

    def run_one(method, steps, zeta) -> float:
        vals = []
        for task, cs in prepared.items():
            for i, case in enumerate(cs):
                ds = P.run_method(case, method, prior=prior, steps=steps, members=args.members,
                                  seed=args.seed + i, guidance_scale=zeta)
                guided = [v for v in prior.variables if v in case.gcm.data_vars]
                vals.append(objective(ds, case.reference, prior, guided))
        return float(np.mean(vals))

    reference_scores: dict[str, float] = {"bilinear": run_one("bilinear", 1, None)}
    for steps in steps_list:
        reference_scores[f"ddrm@{steps}"] = run_one("ddrm", steps, None)
        reference_scores[f"unguided@{steps}"] = run_one("zssd", steps, 0.0)
    print(f"reference objectives: {reference_scores}", file=sys.stderr, flush=True)
    for method in methods:
        for steps in steps_list:
            tab = {}
            for z in grid:
                tab[z] = run_one(method, steps, z)
                print(f"{method} steps={steps} zeta={z:g}: {tab[z]:.4f}", file=sys.stderr, flush=True)
            if not args.no_refine and len(grid) > 1:
                best = min(tab, key=tab.get)
                j = grid.index(best)
                for nb in (grid[j - 1] if j > 0 else None, grid[j + 1] if j + 1 < len(grid) else None):
                    if nb is not None:
                        z = float(math.sqrt(best * nb)) if best > 0 and nb > 0 else 0.5 * (best + nb)
                        tab[z] = run_one(method, steps, z)
                        print(f"{method} steps={steps} zeta={z:.3g} (refine): {tab[z]:.4f}", file=sys.stderr,
                              flush=True)
            best = min(tab, key=tab.get)
            scores.setdefault(method, {})[str(steps)] = {f"{z:.6g}": v for z, v in sorted(tab.items())}
            chosen.setdefault(method, {})[str(steps)] = float(best)
    res = {
        "protocol": "training-year cases only; objective = mean MAE/std over guided variables, cases, tasks; "
                    "zeta quoted for a 128x128 region (rescaled by sqrt(H*W)/128)",
        "command": "python benchmarks/tune_guidance.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(),
        "date": pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"),
        "checkpoint": str(args.checkpoint or P.DEFAULT_CHECKPOINT),
        "checkpoint_sha256": P.prior_sha256(prior),
        "tasks": tasks,
        "cases": [f"{c.name} {c.time:%Y-%m-%dT%H:%M} {c.region.as_text()}" for c in cases],
        "region_px": args.region_px,
        "members": args.members,
        "scores": scores,
        "reference_scores": reference_scores,
        "scales": chosen,
        "seconds": round(time.time() - t0, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    P.write_json_atomic(res, out)
    print(json.dumps(chosen, indent=1))
    if args.install:
        P.write_json_atomic({k: res[k] for k in ("scales", "date", "checkpoint_sha256", "protocol", "command",
                                                 "tasks", "region_px")}, TUNED_GUIDANCE_FILE)
        print(f"installed {TUNED_GUIDANCE_FILE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
