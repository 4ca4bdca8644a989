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

Real weather (``--real era5-x20``): the cases are :func:`zssd_engine.evaluate.real_tuning_cases` —
each real region once at one of the real week's four tuning times
(:data:`zssd_engine.evaluate.REAL_TUNING_TIMES`), which no real-weather score ever uses — scored
like ``zssd evaluate --task era5-x20`` (real ERA5 at its 1° points), with the same objective.
``--install`` adds it as the checkpoint's *real* table, which the pipeline uses for real inputs
(the ERA5 sources, real GCM files, a user's files); the demo table stays for demo-world inputs.

Output: ``--out`` JSON with every score and the chosen scales; ``--install`` also adds them
to ``engine/samplers/guidance_defaults.json`` as the table of this checkpoint and domain, which
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
from zssd_engine.evaluate import REAL_TASKS, EvalCase, machine_info, parse_task, real_tuning_cases  # noqa: E402
from zssd_engine.grids import Region  # noqa: E402
from zssd_engine.metrics import score  # noqa: E402
from zssd_engine.samplers.guidance_table import TUNED_GUIDANCE_FILE, install_tuned_table  # noqa: E402

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
    """Mean over ``variables`` of the ensemble mean's cos φ weighted MAE (at the reference's own points,
    :func:`zssd_engine.metrics.score`) divided by the prior's std of the variable."""
    std = {v: float(s) for v, s in zip(prior.variables, prior.std.cpu())}
    sc = score(ds[list(variables)], ref[list(variables)])
    return float(np.mean([sc[v].mae / std[v] for v in variables]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="zssd,dps")
    ap.add_argument("--steps", default="20,50,100", help="comma-separated step counts")
    ap.add_argument("--grid", default="0.3,1,3,10,30,100", help="comma-separated zeta values (log grid)")
    ap.add_argument("--tasks", default="x20,gcm:MPI-ESM1-2-LR")
    ap.add_argument("--real", default=None, choices=sorted(REAL_TASKS),
                    help="tune on the real week's tuning cases of this task instead (replaces --tasks, --cases, "
                         "--region-px; --install makes it the checkpoint's real table)")
    ap.add_argument("--skip-references", action="store_true",
                    help="do not compute the DDRM and unguided reference objectives (bilinear and lapse still are)")
    ap.add_argument("--cases", type=int, default=4, help="cases per task")
    ap.add_argument("--members", type=int, default=1)
    ap.add_argument("--region-px", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--no-refine", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "guidance_scales.json"))
    ap.add_argument("--install", action="store_true",
                    help=f"also add the chosen scales to {TUNED_GUIDANCE_FILE.name}, in this checkpoint's demo "
                         "table (its real table with --real), replacing the scales of the methods tuned here")
    ap.add_argument("--default-prior", action="store_true",
                    help="with --install: also record this checkpoint as the shipped prior's (the fallback)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--install-from", default=None, metavar="JSON",
                    help="install the scales of an earlier run's --out file (its checkpoint and domain) and exit")
    args = ap.parse_args(argv)
    if args.install_from:
        install(json.loads(Path(args.install_from).read_text()), default=args.default_prior)
        return 0
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
    if args.real:
        tasks = [args.real]
        cases = real_tuning_cases()
        args.region_px = int(round((cases[0].region.north - cases[0].region.south) / 0.25))
    else:
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

    reference_scores: dict[str, float] = {m: run_one(m, 1, None) for m in ("bilinear", "lapse")}
    for steps in () if args.skip_references else steps_list:
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
        "protocol": (("the real week's tuning times only (never scored); " if args.real
                      else "training-year cases only; ")
                     + "objective = mean MAE/std over guided variables, cases, tasks; "
                     "zeta quoted for a 128x128 region (rescaled by sqrt(H*W)/128)"),
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
        "real": args.real,
        "seconds": round(time.time() - t0, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    P.write_json_atomic(res, out)
    print(json.dumps(chosen, indent=1))
    if args.install:
        install(res, default=args.default_prior)
    return 0


def _domain_of(res: dict) -> str:
    return "real" if res.get("real") or str(res.get("protocol", "")).startswith("the real week") else "demo"


def fill_steps(scales: dict, demo: dict) -> tuple[dict, dict]:
    """A real table tuned at a few step counts, extended to the demo table's other step counts.

    ζ's dependence on the step count is the prior's sampler, not the domain, so at an untuned step
    count ``s`` the real ζ is the demo ζ at ``s`` times the real/demo ratio at the nearest tuned step
    count.  Returns the extended table and, per method, the filled step counts with their ratio.
    """
    out, filled = {m: dict(tab) for m, tab in scales.items()}, {}
    for m, tab in scales.items():
        dtab = {int(k): float(v) for k, v in demo.get(m, {}).items()}
        tuned = sorted(int(k) for k in tab)
        for st in sorted(set(dtab) - set(tuned)):
            near = min(tuned, key=lambda t: abs(math.log(t / st)))
            if near not in dtab:
                continue
            ratio = float(tab[str(near)] if str(near) in tab else tab[near]) / dtab[near]
            out[m][str(st)] = dtab[st] * ratio
            filled.setdefault(m, {})[str(st)] = f"demo {dtab[st]:.4g} x {ratio:.4g} (real/demo at {near} steps)"
    return out, filled


def install(res: dict, default: bool = False) -> None:
    """Add a tuning result (this run's, or one read back with ``--install-from``) to the tuned tables."""
    from zssd_engine.samplers.guidance_table import tuned_tables

    domain = _domain_of(res)
    table = {k: res[k] for k in ("checkpoint_sha256", "scales", "date", "protocol", "command", "tasks",
                                 "region_px", "members") if k in res}
    if domain == "real":  # steps not tuned on real cases: the same prior's demo table times the real/demo ratio
        demo = [t for t in tuned_tables()[0] if t.get("checkpoint_sha256") == res["checkpoint_sha256"]
                and t["domain"] == "demo"]
        if demo:
            table["scales"], filled = fill_steps(res["scales"], demo[0]["scales"])
            if filled:
                table["filled_steps"] = filled
    install_tuned_table({**table, "domain": domain}, default=default)
    print(f"installed the {domain} table of checkpoint {res['checkpoint_sha256'][:12]} in {TUNED_GUIDANCE_FILE}",
          file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
