"""Calibrate the demo world's weather parameters against real-weather statistics, on tuning times only.

The realism benchmark (:mod:`benchmarks.realism`) compares the demo world (synthetic) with REAL ERA5 and
TIGGE statistics: sub-5° detail, power by wavelength band, land–sea contrast, diurnal amplitude, cyclone
structure, also on the open-ocean boxes alone.  This script searches the demo world's free amplitudes
(:data:`PARAMS`: constants of :mod:`zssd_engine.demo_world.constants`) for the values that bring those
ratios closest to 1, by coordinate descent on

    loss = Σ_rows max(0, |ln(demo/real)| − ln TOLERANCE)²

measured with ``realism.py --tuning-times``: the real week's four tuning times
(:data:`zssd_engine.evaluate.REAL_TUNING_TIMES`), which no real-weather score ever uses, and the real
cyclone at the deepest of them.  It changes nothing itself: it writes the values it found (and the search)
to ``benchmarks/results/demo_world_calibration.{json,md}``; they are then written into ``constants.py``
by hand, and ``realism.py`` (all times) reports the result.

    python benchmarks/calibrate_demo_world.py                 # 3 passes over all parameters
    python benchmarks/calibrate_demo_world.py --passes 1 --params SYNOPTIC_OCEAN,PRESSURE_TAIL

ERA5: Contains modified Copernicus Climate Change Service information, CC-BY 4.0 (ECMWF).
"""

from __future__ import annotations

import argparse
import math
import sys
import time as _time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import realism  # noqa: E402
from benchmarks._common import header, md_header, write  # noqa: E402

TOLERANCE = 1.12


@dataclass(frozen=True)
class Param:
    """A tunable constant: the module that reads it, how it is stepped, and its bounds."""

    module: str      # "world" or "waves": where the constant is read
    kind: str        # "mult" (step ×(1 ± s)) or "add" (step ± s·(hi − lo))
    lo: float
    hi: float
    doc: str


PARAMS: dict[str, Param] = {
    "SYNOPTIC_SCALE": Param("world", "mult", 0.8, 2.2, "amplitude of the synoptic pressure waves"),
    "SYNOPTIC_OCEAN": Param("world", "add", 0.0, 1.2, "extra amplitude of the long waves far from land"),
    "PRESSURE_TAIL": Param("waves", "mult", 3e-4, 0.012, "mesoscale tail of the pressure-wave spectrum"),
    "MESO_MSL_PA": Param("world", "mult", 50.0, 800.0, "amplitude of the mesoscale pressure field (Pa)"),
    "MESO_MSL_SEA": Param("world", "add", 0.0, 1.5, "its weight far from land"),
    "MESO_MSL_LAND": Param("world", "add", 0.2, 2.5, "its weight inland"),
    "MESO_WIND_FACTOR": Param("world", "mult", 0.01, 0.4, "share of its geostrophic wind in the 10 m wind"),
    "FRICTION_SEA": Param("world", "add", 0.5, 0.95, "10 m / geostrophic wind over sea"),
    "FRICTION_LAND": Param("world", "add", 0.05, 0.45, "its reduction over land"),
    "ROUGH_WIND": Param("world", "add", 0.0, 0.35, "its further reduction over high ground (1500 m)"),
    "W_NOISE_SEA": Param("world", "add", 0.0, 1.5, "10 m wind noise over sea (m/s)"),
    "W_NOISE_LAND": Param("world", "add", 0.0, 2.5, "10 m wind noise over land (m/s)"),
    "T_ADVECTION": Param("world", "mult", 0.05, 0.8, "thermal advection (K per m/s)"),
    "T_NOISE_SEA": Param("world", "add", 0.05, 1.5, "t2m noise over sea (K)"),
    "T_NOISE_LAND": Param("world", "add", 0.3, 3.5, "t2m noise over land (K)"),
    "TERRAIN_MSL_FACTOR": Param("world", "add", 0.0, 1.5, "scale of the sea-level reduction's capped-column term"),
    "TERRAIN_MSL_SLOPE": Param("world", "add", 0.0, 0.3, "sea-level reduction's slope common to all terrain (Pa/m)"),
}


def _modules():
    from zssd_engine.demo_world import constants, waves, world

    return {"world": world, "waves": waves, "constants": constants}


def current_values(names) -> dict[str, float]:
    """The values the engine reads now (the constants as imported by the modules that use them)."""
    mods = _modules()
    return {n: float(getattr(mods[PARAMS[n].module], n)) for n in names}


def apply(values: dict[str, float]) -> None:
    """Set the constants where they are read (this process only; ``constants.py`` is not touched)."""
    mods = _modules()
    for n, v in values.items():
        setattr(mods[PARAMS[n].module], n, float(v))


class Evaluator:
    """Realism rows of the demo world with the given constants, on the tuning times (cached statics)."""

    def __init__(self, boxes=realism.BOXES, tc_cases: int = 5):
        import pandas as pd

        from zssd_engine.evaluate import REAL_TUNING_TIMES
        from zssd_engine.real_sources import era5_week
        from zssd_engine.statics import load_statics

        self.statics = load_statics()
        self.boxes = boxes
        self.tc_cases = tc_cases
        wk = era5_week()
        self.time_idx = np.asarray(REAL_TUNING_TIMES)
        self.times = list(pd.DatetimeIndex(wk["time"].values[self.time_idx]))
        self.n_evals = 0

    def rows(self, values: dict[str, float]) -> list[dict]:
        from zssd_engine.demo_world import DemoWorld

        apply(values)
        world = DemoWorld(seed=0, statics=self.statics)
        week = realism.measure_detail_and_spectra(world, self.boxes, self.times, self.time_idx)
        tigge = realism.measure_tigge_spectra(world, self.boxes)
        cyc = realism.measure_cyclones(world, self.tc_cases, self.time_idx)
        oo = realism.measure_ocean_only(world, self.boxes, self.times, self.time_idx, tigge=False)
        self.n_evals += 1
        return realism.build_rows({"week": week, "tigge": tigge, "cyclone": cyc, "ocean_only": oo})


def loss(rows: list[dict], tol: float = TOLERANCE) -> float:
    """Σ max(0, |ln r| − ln tol)² over the rows with a ratio."""
    out = 0.0
    for r in rows:
        x = r.get("ratio")
        if x is None or not np.isfinite(x) or x <= 0 or r["defect"] == "n/a":
            continue
        out += max(0.0, abs(math.log(x)) - math.log(tol)) ** 2
    return out


def n_defects(rows: list[dict]) -> int:
    return sum(r["defect"] == "yes" for r in rows)


def candidates(name: str, value: float, step: float) -> list[float]:
    p = PARAMS[name]
    if p.kind == "mult":
        c = [value * (1 + step), value / (1 + step)]
    else:
        c = [value + step * (p.hi - p.lo), value - step * (p.hi - p.lo)]
    return [float(np.clip(x, p.lo, p.hi)) for x in c if abs(float(np.clip(x, p.lo, p.hi)) - value) > 1e-12]


def search(ev: Evaluator, start: dict[str, float], passes: int, step: float, shrink: float, log=print):
    """Coordinate descent: each pass tries each parameter one step up and down and keeps the best."""
    best = dict(start)
    best_rows = ev.rows(best)
    best_loss = loss(best_rows)
    trace = [{"pass": 0, "param": None, "value": None, "loss": best_loss, "defects": n_defects(best_rows)}]
    log(f"start: loss {best_loss:.3f}, {n_defects(best_rows)} defects")
    for k in range(1, passes + 1):
        for name in start:
            for v in candidates(name, best[name], step):
                trial = dict(best, **{name: v})
                rows = ev.rows(trial)
                lo_ = loss(rows)
                if lo_ < best_loss - 1e-9:
                    best, best_rows, best_loss = trial, rows, lo_
                    trace.append({"pass": k, "param": name, "value": v, "loss": lo_, "defects": n_defects(rows)})
                    log(f"pass {k}: {name} = {v:.4g}: loss {lo_:.3f}, {n_defects(rows)} defects")
        step *= shrink
    return best, best_rows, best_loss, trace


def markdown(payload: dict) -> str:
    r = payload["results"]
    lines = [md_header(payload), "# Demo-world calibration against real-weather statistics (tuning times only)\n",
             f"Coordinate descent ({payload['settings']['passes']} passes, first step {payload['settings']['step']}, "
             f"×{payload['settings']['shrink']} per pass, {r['evaluations']} evaluations, "
             f"{payload['seconds_total'] / 60:.1f} min) on Σ max(0, |ln ratio| − ln {TOLERANCE})² over the rows of "
             "`realism.py --tuning-times`: the real ERA5 week's four tuning times (never scored), TIGGE, the real "
             "cyclone at the deepest tuning time.  The values found are then copied into "
             "`engine/demo_world/constants.py`; `realism.md` reports them on all 24 times.\n",
             f"Loss {r['loss_before']:.3f} → {r['loss_after']:.3f}; realism defects on the tuning times "
             f"{r['defects_before']} → {r['defects_after']} of {r['n_ratios']}.\n",
             "| constant | meaning | before | after |", "|---|---|---|---|"]
    for n, b in r["before"].items():
        lines.append(f"| `{n}` | {PARAMS[n].doc} | {b:.4g} | {r['after'][n]:.4g} |")
    lines += ["", "Rows still outside [0.8, 1.25] on the tuning times after the search:\n",
              "| measure | variable | ratio |", "|---|---|---|"]
    for row in r["rows_after"]:
        if row["defect"] == "yes":
            lines.append(f"| {row['measure']} | {row['variable']} | {row['ratio']:.3g} |")
    lines += ["", "Accepted steps:\n", "| pass | constant | value | loss | defects |", "|---|---|---|---|---|"]
    for t in r["trace"][1:]:
        lines.append(f"| {t['pass']} | `{t['param']}` | {t['value']:.4g} | {t['loss']:.3f} | {t['defects']} |")
    lines.append("\nERA5: Contains modified Copernicus Climate Change Service information, CC-BY 4.0 (ECMWF). "
                 "TIGGE: ECMWF, research use.\n")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--step", type=float, default=0.3, help="first relative step (×(1±s), or ±s of the range)")
    ap.add_argument("--shrink", type=float, default=0.5, help="step factor after each pass")
    ap.add_argument("--params", default=",".join(PARAMS), help="comma-separated constants to search")
    ap.add_argument("--name", default="demo_world_calibration")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.params.split(",") if n.strip()]
    unknown = [n for n in names if n not in PARAMS]
    if unknown:
        ap.error(f"unknown constants {unknown}; known: {', '.join(PARAMS)}")
    t0 = _time.perf_counter()
    payload = header()
    ev = Evaluator()
    start = current_values(names)
    best, rows, best_loss, trace = search(ev, start, args.passes, args.step, args.shrink,
                                         log=lambda m: print(f"[{_time.perf_counter() - t0:5.0f} s] {m}", flush=True))
    apply(start)  # leave the process as it was
    payload.update(settings={"passes": args.passes, "step": args.step, "shrink": args.shrink, "params": names,
                             "tolerance": TOLERANCE, "times": [str(t) for t in ev.times]},
                   results={"before": start, "after": best, "loss_before": trace[0]["loss"], "loss_after": best_loss,
                            "defects_before": trace[0]["defects"], "defects_after": n_defects(rows),
                            "n_ratios": sum(r["defect"] in ("yes", "no") for r in rows), "rows_after": rows,
                            "trace": trace, "evaluations": ev.n_evals})
    payload["seconds_total"] = _time.perf_counter() - t0
    js, md = write(args.name, payload, markdown(payload))
    print(f"wrote {js} and {md}")
    for n in names:
        print(f"{n} = {best[n]:.4g}  (was {start[n]:.4g})")
    return 0


if __name__ == "__main__":
    main()
