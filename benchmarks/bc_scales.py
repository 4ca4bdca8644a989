"""Where `zssd-bc` loses to BCSD: the t2m error split into what the unified 5° cells see and the detail below.

Issue 14's target is a `zssd-bc` ensemble mean below BCSD's MAE on every pseudo-GCM column.  This
script measures, on held-out demo cases (the first ``--cases`` of ``paper_table.py``'s list), which part of
the error keeps it above BCSD:

* ``large``: MAE of ``A_high(e)``, the error seen at the unified 5° cells (``A_high``: the UCG operator,
  conservative to the 5° cells and bilinear back, :func:`zssd_engine.operators.ucg_operator`);
* ``detail``: MAE of ``e − A_high(e)``, the error below them;
* ``target``: for `zssd-bc`, the MAE of what guidance aims at against the reference's 5°-resolved part,
  ``y_high − A_high(ref)`` with ``y_high`` the corrected field's UCG observation (``QM(A₅ Y)`` re-projected to
  0.25°): the large-scale error a sampler that met its target exactly would keep.

Rows: BCSD, bilinear + lapse rate, `zssd-bc` (``--members``, ensemble mean), and the *perfect-correction
yardstick* `zssd` at ×20 on the same case — guidance toward the reference's own 5° means, i.e. what
`zssd-bc` would give if the bias correction were exact.  It is a yardstick (it uses the reference's
coarse means), not a method.  Nothing is tuned here.

Writes ``benchmarks/results/bc_scales.{json,md}``::

    python benchmarks/bc_scales.py --columns MIROC6,MPI-ESM1-2-LR --cases 6 --members 8 --steps 50
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

from _common import add_case_study_args, finish_report, header, md_header  # noqa: E402

from zssd_engine import pipeline as P  # noqa: E402
from zssd_engine.bias_correction import bias_corrected_case  # noqa: E402
from zssd_engine.evaluate import evaluation_cases  # noqa: E402
from zssd_engine.grids import lat_weights  # noqa: E402
from zssd_engine.operators import ucg_operator  # noqa: E402
from zssd_engine.samplers.observation import ucg_coarse_grid  # noqa: E402
from zssd_engine.samplers.zssd import zssd_observation  # noqa: E402


def _field(ds, name: str = "t2m") -> np.ndarray:
    return np.asarray(ds[name].values, dtype=np.float64).reshape(ds[name].shape[-2:])


def large_scale_operator(fine):
    """``A_high``: the UCG operator of ``fine`` (conservative to the unified 5° cells, bilinear back) on numpy fields."""
    op = ucg_operator(fine, ucg_coarse_grid(fine))

    def a_high(f: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return op(torch.as_tensor(f, dtype=op.m_lat.dtype)[None, None])[0, 0].double().numpy()

    return a_high


def area_mae(x: np.ndarray, w: np.ndarray) -> float:
    """cos φ weighted mean of ``|x|`` (``w``: the weights on the same grid)."""
    return float((np.abs(x) * w).sum() / w.sum())


def split(pred: np.ndarray, ref: np.ndarray, a_high, w: np.ndarray) -> dict[str, float]:
    """MAE of the error ``pred − ref``, of its 5°-resolved part and of the detail below (cos φ weights)."""
    e = pred - ref
    large = a_high(e)
    return {"mae": area_mae(e, w), "large": area_mae(large, w), "detail": area_mae(e - large, w)}


def one_case(column: str, c, world, prior, members: int, steps: int, seed: int, x20_cache: dict) -> dict:
    case = P.prepare_case(column.removeprefix("gcm:"), c.time, c.region, world=world)
    fine = case.fine
    a_high = large_scale_operator(fine)
    ref = _field(case.reference)
    w = lat_weights(fine.lat)[:, None] * np.ones(fine.shape)
    rows = {}
    for m in ("bcsd", "lapse"):
        rows[m] = split(_field(P.run_method(case, m)), ref, a_high, w)
    ds = P.run_method(case, "zssd-bc", prior=prior, steps=steps, members=members, seed=seed)
    rows["zssd-bc"] = split(_field(ds), ref, a_high, w)
    # what guidance aims at: y_high of the corrected field (the observation zssd-bc builds), against A_high(ref)
    obs = zssd_observation(prior, bias_corrected_case(case).gcm, fine)
    vi = list(prior.variables).index("t2m")
    y_high = (obs.y[vi] * prior.std[vi] + prior.mean[vi]).double().cpu().numpy()
    rows["zssd-bc"]["target"] = area_mae(y_high - a_high(ref), w)
    key = (c.time, c.region.as_text())
    if key not in x20_cache:  # the same case at x20: guidance toward the reference's own 5° means
        c20 = P.prepare_case("x20", c.time, c.region, world=world)
        x20_cache[key] = split(_field(P.run_method(c20, "zssd", prior=prior, steps=steps, members=members,
                                                   seed=seed)), ref, a_high, w)
    rows["zssd@x20 (yardstick)"] = x20_cache[key]
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_case_study_args(ap, columns="MIROC6,MPI-ESM1-2-LR", members=8, name="bc_scales")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    world = P.get_world(0)
    cases = evaluation_cases(args.cases, args.seed, args.region_px, world)
    prior = P.load_prior(args.checkpoint)
    t0, per, x20 = time.time(), {}, {}
    for col in args.columns.split(","):
        for i, c in enumerate(cases):
            r = one_case(col, c, world, prior, args.members, args.steps, args.seed + i, x20)
            per.setdefault(col, []).append({"case": f"{c.name} {c.time:%Y-%m-%dT%H:%M} {c.region.as_text()}", **r})
            print(f"[{col} {i + 1}/{len(cases)}] " + ", ".join(f"{m}={v['mae']:.3f}" for m, v in r.items()),
                  file=sys.stderr, flush=True)
    summary = {col: {m: {k: float(np.mean([row[m][k] for row in rows])) for k in rows[0][m]}
                     for m in rows[0] if m != "case"} for col, rows in per.items()}
    payload = {**header(), "settings": vars(args), "checkpoint_sha256": P.prior_sha256(prior),
               "summary": summary, "cases": per, "seconds": round(time.time() - t0, 1)}
    lines = ["# zssd-bc vs BCSD: t2m error by scale (held-out demo cases)\n", md_header(payload),
             f"{len(cases)} held-out cases per column, {args.region_px}x{args.region_px} px, {args.members} members, "
             f"{args.steps} steps.  `large` = MAE of the error's 5°-resolved part (A_high e), `detail` = MAE of "
             "the rest; `target` = large-scale MAE of the corrected field zssd-bc is guided toward.  The ×20 row "
             "is guided by the reference's own 5° means: a yardstick for an exact bias correction, not a method.\n"]
    for col, sm in summary.items():
        lines += [f"\n### {col}\n", "| method | t2m MAE (K) | large | detail | target |", "|---|---|---|---|---|"]
        for m, v in sm.items():
            lines.append(f"| {m} | {v['mae']:.3f} | {v['large']:.3f} | {v['detail']:.3f} | "
                         f"{v['target']:.3f} |" if "target" in v else
                         f"| {m} | {v['mae']:.3f} | {v['large']:.3f} | {v['detail']:.3f} | – |")
    return finish_report(args.name, payload, lines)


if __name__ == "__main__":
    raise SystemExit(main())
