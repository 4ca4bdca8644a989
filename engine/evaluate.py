"""Benchmark the downscaling methods on held-out demo cases (``zssd evaluate``, :mod:`zssd_engine.cli.evaluate`).

Protocol
--------
* **Held-out only**: every case time lies in :data:`zssd_engine.demo_world.HELDOUT_YEARS`
  (asserted); the prior, BCSD and the guidance-scale tuning never see these years.
* **Cases**: the first ``ceil(N/2)`` tropical cyclones of the held-out catalog
  (:meth:`DemoWorld.catalog`, sorted by time; a square region of ``size_px`` 0.25°
  pixels around the peak position), then ``floor(N/2)`` seeded random cases:
  year uniform in the held-out years, day of year uniform, UTC hour in {0, 6, 12, 18},
  centre latitude uniform in sin φ over ±60°, centre longitude uniform.
* **Tasks**: ``x6``, ``x10``, ``x20`` (perfect-model averaging to 1.5°/2.5°/5°) or
  ``gcm:NAME`` for a pseudo-GCM (paired with its demo-world reference).  The real
  file cannot be scored (unpaired).
* **Real weather**: ``era5-x20``, ``era5-x10`` — the real ERA5 week averaged to 5°/2.5°
  (:mod:`zssd_engine.real_sources`); the reference is real ERA5 at its 1° points, and the 0.25°
  output is scored at exactly those points.  Cases (:func:`real_evaluation_cases`): the real
  cyclone at its three deepest times, then a fixed list of :data:`REAL_REGIONS` (mountains,
  coasts, plains, ocean) at times spread over the week.  :data:`REAL_TUNING_TIMES` (4 of the
  24 times) are reserved for tuning and never scored.  BCSD cannot be trained on one week:
  it is reported as unavailable, not faked.
* **Ensembles**: with ``members > 1`` the ensemble means of the first 1, 4, 8 … members are
  also scored (``results_by_members``), so one run gives the 1/4/8-member figures.
* **Scores** per variable and method: cos φ weighted MAE, RMSE and P99 (the weighted
  0.99 quantile of the absolute error, :func:`zssd_engine.metrics.p99_error`) of the
  *ensemble mean* against the reference, averaged over cases; ``seconds_per_sample``
  is the wall time of one case divided by the members (BCSD: the adjustment only —
  the per-case training time is reported at the top level as ``bcsd_train_seconds``).
"""

from __future__ import annotations

import math
import os
import platform
import time as _time
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from .demo_world import HELDOUT_YEARS, DemoWorld
from .gcm import PSEUDO_GCMS, REAL_FILES
from .grids import PAIRED_TASKS, Region
from .methods import CLASSICAL, get_method, method_names
from .case_scores import ScoreBook
from .real_sources import PAIRED_REAL, REAL_SOURCES, era5_week
from .variables import VARIABLES

__all__ = ["EvalCase", "parse_task", "evaluation_cases", "real_evaluation_cases", "REAL_REGIONS",
           "REAL_TUNING_TIMES", "REAL_TASKS", "real_tuning_cases", "evaluate", "markdown_table", "machine_info"]


class EvalCase(tuple):
    """``(name, time, region, cyclone)``: ``cyclone`` marks a case centred on a cyclone of the reference."""

    __slots__ = ()

    def __new__(cls, name: str, time: pd.Timestamp, region: Region, cyclone: bool = False):
        return super().__new__(cls, (name, time, region, bool(cyclone)))

    name = property(lambda self: self[0])
    time = property(lambda self: self[1])
    region = property(lambda self: self[2])
    cyclone = property(lambda self: self[3])


#: Real-weather tasks -> source id.
REAL_TASKS: dict[str, str] = {"era5-x20": "ERA5-x20", "era5-x10": "ERA5-x10"}

#: Fixed 32° x 32° regions of the real-weather tasks: (name, kind, S, N, W, E).
REAL_REGIONS: tuple[tuple[str, str, float, float, float, float], ...] = (
    ("Alps", "mountains", 30.0, 62.0, -5.0, 27.0),
    ("Himalaya-Tibet", "mountains", 15.0, 47.0, 70.0, 102.0),
    ("Andes", "mountains", -40.0, -8.0, -85.0, -53.0),
    ("Rockies", "mountains", 25.0, 57.0, -125.0, -93.0),
    ("East-Africa", "mountains", -14.0, 18.0, 22.0, 54.0),
    ("Norway-North-Sea", "coast", 42.0, 74.0, -8.0, 24.0),
    ("Maritime-Continent", "coast", -14.0, 18.0, 95.0, 127.0),
    ("Eurasian-plains", "plains", 38.0, 70.0, 40.0, 72.0),
    ("Amazon", "plains", -20.0, 12.0, -70.0, -38.0),
    ("North-Atlantic", "ocean", 20.0, 52.0, -50.0, -18.0),
    ("South-Pacific", "ocean", -60.0, -28.0, -150.0, -118.0),
)
#: Indices of the week's 24 times reserved for tuning (guidance scales): never scored.
REAL_TUNING_TIMES: tuple[int, ...] = (3, 9, 15, 21)


def parse_task(task: str) -> str:
    """``x6|x10|x20|gcm:NAME|era5-x20|era5-x10`` → the source id (paired sources only)."""
    if task in PAIRED_TASKS:
        return task
    if task in REAL_TASKS:
        return REAL_TASKS[task]
    if task.startswith("gcm:"):
        name = task[4:]
        if name in PSEUDO_GCMS:
            return name
        if name in REAL_FILES:
            raise ValueError(f"{name} is a real GCM file with no paired reference; evaluate needs a paired "
                             f"source (x6, x10, x20 or gcm:{'|'.join(PSEUDO_GCMS)})")
        raise ValueError(f"unknown GCM {name!r} in task {task!r}; known: {', '.join(PSEUDO_GCMS)}")
    raise ValueError(f"unknown task {task!r}; use x6, x10, x20, era5-x20, era5-x10 or gcm:NAME "
                     f"({', '.join(PSEUDO_GCMS)})")


def evaluation_cases(n: int, seed: int = 0, size_px: int = 128, world: DemoWorld | None = None,
                     n_cyclones: int | None = None) -> list[EvalCase]:
    """Held-out cases: ``ceil(n/2)`` catalog cyclones, then seeded random (time, region) boxes."""
    if n < 1:
        raise ValueError(f"--cases must be at least 1, got {n}")
    if size_px < 8:
        raise ValueError(f"region size must be at least 8 pixels, got {size_px}")
    world = world or DemoWorld(0)
    size = size_px * 0.25
    n_cyc = math.ceil(n / 2) if n_cyclones is None else min(int(n_cyclones), n)
    out: list[EvalCase] = []
    for c in world.catalog()[:n_cyc]:
        out.append(EvalCase(c.name, c.peak_time, Region.around(c.peak_lat, c.peak_lon, size), cyclone=True))
    rng = np.random.default_rng([seed, 2024])
    k = 0
    while len(out) < n:
        y = int(rng.choice(HELDOUT_YEARS))
        d = int(rng.integers(0, 365))
        h = int(rng.choice([0, 6, 12, 18]))
        t = pd.Timestamp(year=y, month=1, day=1) + pd.Timedelta(days=d, hours=h)
        lat = float(np.rad2deg(np.arcsin(rng.uniform(-1, 1) * np.sin(np.deg2rad(60.0)))))
        lon = float(rng.uniform(-180, 180))
        k += 1
        out.append(EvalCase(f"random-{k:02d}", t, Region.around(lat, lon, size)))
    for c in out:
        assert c.time.year in HELDOUT_YEARS, f"evaluation case {c.name} at {c.time} is not in a held-out year"
    return out


def real_evaluation_cases(n: int, n_cyclone: int = 3) -> list[EvalCase]:
    """Real-weather cases: the real cyclone at its ``n_cyclone`` deepest times, then :data:`REAL_REGIONS`.

    Region ``r`` takes the scored times ``k * 7 + r * 3`` (mod the 20 scored times) for its
    ``k``-th case, so the cases spread over the week and over local hours.  Deterministic; the
    times in :data:`REAL_TUNING_TIMES` are never used.
    """
    from .real_sources import real_cyclone_tracks

    if n < 1:
        raise ValueError(f"--cases must be at least 1, got {n}")
    times = [pd.Timestamp(t) for t in era5_week()["time"].values]
    scored = [t for i, t in enumerate(times) if i not in REAL_TUNING_TIMES]
    out: list[EvalCase] = []
    for tr in real_cyclone_tracks()[:1]:
        pts = sorted((p for p in tr if p.time in scored), key=lambda p: p.min_pressure)[:min(n_cyclone, n)]
        for p in sorted(pts, key=lambda p: p.time):
            out.append(EvalCase(f"ERA5-TC {p.min_pressure / 100:.0f} hPa", p.time, Region.around(p.lat, p.lon, 32.0),
                                cyclone=True))
    k = 0
    while len(out) < n:
        r = k % len(REAL_REGIONS)
        name, kind, s, nn, w, e = REAL_REGIONS[r]
        t = scored[((k // len(REAL_REGIONS)) * 7 + r * 3) % len(scored)]
        out.append(EvalCase(f"{name} ({kind})", t, Region(s, nn, w, e)))
        k += 1
    for c in out:
        assert times.index(c.time) not in REAL_TUNING_TIMES, f"{c.name} uses a tuning time"
    return out


def real_tuning_cases() -> list[EvalCase]:
    """The real week's tuning cases: each of :data:`REAL_REGIONS` once, at a time of :data:`REAL_TUNING_TIMES`.

    Region ``r`` takes tuning time ``REAL_TUNING_TIMES[r % 4]``, so the four times and the region kinds
    mix.  The real cyclone is left out: its scored cases (:func:`real_evaluation_cases`) are the same
    storm a few hours apart.  These cases may be used to tune (a guidance scale, the demo world's
    constants); :func:`real_evaluation_cases` never scores them.
    """
    times = [pd.Timestamp(t) for t in era5_week()["time"].values]
    out = []
    for r, (name, kind, s, nn, w, e) in enumerate(REAL_REGIONS):
        t = times[REAL_TUNING_TIMES[r % len(REAL_TUNING_TIMES)]]
        out.append(EvalCase(f"{name} ({kind}) [tuning]", t, Region(s, nn, w, e)))
    return out


def machine_info() -> str:
    import torch

    dev = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
    return (f"{platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__} on {dev}, python {platform.python_version()}")


def _inputs(task: str, cases: int, seed: int, size_px: int, world: DemoWorld,
            gcm_files: Sequence[str] | None, reference_files: Sequence[str] | None,
            user_cases: Sequence[tuple[str, str, Region]] | None) -> tuple:
    """The source, its files (a user's own), the cases, whether the truth is real, the user's reference."""
    if gcm_files is None:
        source = parse_task(task)
        real = source in PAIRED_REAL
        case_list = real_evaluation_cases(cases) if real else evaluation_cases(cases, seed, size_px, world)
        return source, None, case_list, real, False, None
    from pathlib import Path

    from .gcm import open_files
    from .user_files import user_source_name

    if not reference_files or not user_cases:
        raise ValueError("an evaluation of your own files needs --reference-file and cases (--times/--regions)")
    source = user_source_name(gcm_files)
    case_list = [EvalCase(n, pd.Timestamp(t), r) for n, t, r in user_cases]
    return (source, {source: [Path(f) for f in gcm_files]}, case_list, True, True,
            open_files([Path(f) for f in reference_files]))


def _not_trainable(methods: list[str], real: bool, user: bool) -> tuple[list[str], dict[str, str]]:
    """Drop the paired-training baselines (BCSD) where there are no training years; say why."""
    unavailable: dict[str, str] = {}
    for tm in (method_names(kind=CLASSICAL, paired_training=True) if real else ()):
        if tm in methods:
            methods = [m for m in methods if m != tm]
            unavailable[tm] = (f"{get_method(tm).label} needs years of input/reference pairs per calendar month to "
                               "train its quantile maps; " + ("your files are scored case by case" if user else
                                                              "the real ERA5 week has 24 times")
                               + ", so it is not run (not faked)")
    return methods, unavailable


def _score_definition(real: bool, user: bool) -> str:
    return ("cos-lat weighted MAE/RMSE/P99 (0.99 area quantile of |error|) of the ensemble mean "
            + ("vs the reference at its own points (the 0.25° output taken at exactly those points "
               "when they lie on the 0.25° lattice, else interpolated bilinearly to them)" if user else
               "vs real ERA5 at its 1° points (the 0.25° output taken at exactly those points)"
               if real else "vs the demo-world reference") + ", mean over cases")


def _header(task, source, case_list, real, user, reference_files, steps, members, seed, scales, size_px, prior,
            checkpoint, results, seconds) -> dict[str, Any]:
    """The result's settings, provenance and scores, in the order the JSON files have always had."""
    from . import pipeline as P

    return {
        "task": task, "cases": len(case_list), "results": results, "source_id": source,
        "steps": steps, "members": members, "seed": seed, "guidance_scale": scales, "region_px": size_px,
        "checkpoint": (None if prior is None else {"path": str(checkpoint or P.DEFAULT_CHECKPOINT),
                                                   "sha256": P.prior_sha256(prior)}),
        "case_list": [f"{c.name} {c.time:%Y-%m-%dT%H:%M} {c.region.as_text()}" for c in case_list],
        "heldout_years": list(HELDOUT_YEARS),
        "reference": (f"your reference file(s) {', '.join(map(str, reference_files))}" if user else
                      REAL_SOURCES[source].description if real else "demo world (synthetic), held-out years"),
        "score_definition": _score_definition(real, user),
        "machine": machine_info(),
        "date": pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds_total": round(seconds, 2),
    }


def evaluate(task: str, methods: Sequence[str], cases: int, steps: int = 100, members: int = 1,
             seed: int = 0, checkpoint: str | None = None, guidance_scales: dict[str, float] | None = None,
             size_px: int = 128, prior=None, world_seed: int = 0,
             progress: Callable[[str], Any] | None = None, keep_case: int | None = None,
             gcm_files: Sequence[str] | None = None, reference_files: Sequence[str] | None = None,
             user_cases: Sequence[tuple[str, str, Region]] | None = None, time_tolerance=None,
             case_indices: Sequence[int] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-able dict (plus ``"_outputs"`` if ``keep_case`` is set).

    ``progress(message)`` is called once per (case, method).  ``case_indices``: run only these positions
    of the ``cases``-long case list (a shard of a long run on several machines or cores); each case keeps
    the seed of its position, so the shards' per-case scores are those of the whole run, and
    :func:`zssd_engine.case_scores.merge_reports` combines them.  A user's own paired evaluation:
    ``gcm_files`` (the input), ``reference_files`` (the truth; scored at its own points, see
    :func:`zssd_engine.user_files.user_reference`) and ``user_cases`` ``(name, time, region)``; ``task``
    is then only a label.
    """
    from . import pipeline as P
    from .samplers.respacing import check_steps
    from .user_files import user_reference

    methods = list(methods)
    for m in methods:
        P.check_method(m)
    check_steps(steps)
    if members < 1:
        raise ValueError(f"--members must be at least 1, got {members}")
    world = P.get_world(world_seed)
    source, files, case_list, real, user, ref_all = _inputs(task, cases, seed, size_px, world, gcm_files,
                                                            reference_files, user_cases)
    methods, unavailable = _not_trainable(methods, real, user)
    n_all = len(case_list)
    positions = list(range(n_all)) if case_indices is None else _check_indices(case_indices, n_all)
    if prior is None and any(m in P.DIFFUSION_METHODS for m in methods):
        prior = P.load_prior(checkpoint)
    domain = P.input_domain(source, files)  # which tuned ζ table: demo-world or real inputs
    scales = {m: float((guidance_scales or {}).get(m, P.guidance_default(m, steps, prior, domain)))
              for m in P.GUIDED_METHODS if m in methods}
    book = ScoreBook(members, P.DIFFUSION_METHODS)
    trained = method_names(kind=CLASSICAL, paired_training=True)  # BCSD: trained per case on paired years
    bcsd_train: list[float] = []
    outputs: dict[str, Any] = {}
    t_all = _time.perf_counter()
    for ci in positions:
        ec = case_list[ci]
        case = P.prepare_case(source, ec.time, ec.region, world=world, files=files, time_tolerance=time_tolerance)
        if user:  # the user's truth, at its own points
            case.reference = user_reference(ref_all, ec.time, case.fine, tolerance=time_tolerance)
            case.paired = True
        if keep_case == ci:
            outputs.update(reference=case.reference, case=case)
        for m in methods:
            if progress is not None:
                progress(f"case {ci + 1}/{n_all} {ec.name} {ec.time:%Y-%m-%dT%H} {m}")
            if m in trained:  # its training time is reported apart (bcsd_train_seconds)
                t0 = _time.perf_counter()
                P._train_bcsd(case)
                bcsd_train.append(_time.perf_counter() - t0)
            t0 = _time.perf_counter()
            ds = P.run_method(case, m, prior=prior, steps=steps, members=members, seed=seed + ci,
                              guidance_scale=scales.get(m))
            secs = (_time.perf_counter() - t0) / (members if m in P.DIFFUSION_METHODS else 1)
            book.add(m, ds, case.reference, secs, ec.name if ec.cyclone else None, ec.region.centre)
            if keep_case == ci:
                outputs[m] = ds
    report = book.report()
    out = _header(task, source, [case_list[i] for i in positions], real, user, reference_files, steps, members,
                  seed, scales, size_px, prior, checkpoint, report.pop("results"), _time.perf_counter() - t_all)
    if case_indices is not None:
        out["case_indices"], out["case_list_of"] = positions, n_all
    if real and not user:
        out["tuning_times_excluded"] = [str(pd.Timestamp(t)) for i, t in enumerate(era5_week()["time"].values)
                                        if i in REAL_TUNING_TIMES]
        out["credit"] = REAL_SOURCES[source].credit
    if unavailable:
        out["unavailable"] = unavailable
    out.update(report)
    if bcsd_train:
        out["bcsd_train_seconds"] = round(float(np.mean(bcsd_train)), 2)
    if keep_case is not None:
        out["_outputs"] = outputs
    return out


def _check_indices(case_indices: Sequence[int], n: int) -> list[int]:
    """``case_indices`` as a sorted list, checked against a case list of ``n``."""
    idx = sorted(int(i) for i in case_indices)
    if not idx:
        raise ValueError("case_indices is empty: no case to run")
    if len(set(idx)) != len(idx):
        raise ValueError(f"case_indices repeats a case: {list(case_indices)}")
    if idx[0] < 0 or idx[-1] >= n:
        raise ValueError(f"case_indices must lie in 0..{n - 1} (a list of {n} cases), got {list(case_indices)}")
    return idx


def markdown_table(res: dict[str, Any]) -> str:
    """The results as a Markdown table: one row per method, MAE/RMSE/P99 per variable, s/sample."""
    results = res["results"]
    vs = [v for v in VARIABLES if v in results]
    methods: list[str] = []
    for v in vs:
        for m in results[v]:
            if m not in methods:
                methods.append(m)
    head = "| method | " + " | ".join(f"{v} MAE | {v} RMSE | {v} P99" for v in vs) + " | s/sample |"
    sep = "|---|" + "---|" * (3 * len(vs)) + "---|"
    what = ("real-weather cases (reference: ERA5 at its 1° points)" if res["task"] in REAL_TASKS else
            "cases of your files" if str(res.get("source_id", "")).startswith("file:") else "held-out cases")
    rows = [f"**{res['task']}** — {res['cases']} {what}, {res.get('steps')} steps, "
            f"{res.get('members', 1)} member(s); scores of the ensemble mean", "", head, sep]
    for m in methods:
        cells = []
        secs = float("nan")
        for v in vs:
            r = results[v].get(m)
            if r is None:
                cells += ["–"] * 3
                continue
            cells += [_fmt(r["mae"]), _fmt(r["rmse"]), _fmt(r["p99"])]
            secs = r["seconds_per_sample"]
        rows.append(f"| {m} | " + " | ".join(cells) + f" | {secs:.2f} |")
    for m, why in res.get("unavailable", {}).items():
        rows.append(f"| {m} | n/a: {why} |" + " |" * (3 * len(vs)))
    rows += ["", "Probabilistic scores (fair CRPS; a one-member method's CRPS is its MAE), spread–skill ratio "
                 "(1 = calibrated, <1 under-dispersive) and rank-histogram reliability index (0 = flat):", "",
             "| method | " + " | ".join(f"{v} CRPS | {v} spread–skill | {v} RI" for v in vs) + " |",
             "|---|" + "---|" * (3 * len(vs))]
    rh = res.get("rank_hist", {})
    for m in methods:
        cells = []
        for v in vs:
            r = results[v].get(m, {})
            ri = rh.get(v, {}).get(m, {}).get("reliability_index")
            cells += [_fmt(r["crps"]) if "crps" in r else "–",
                      _fmt(r["spread_skill"]) if "spread_skill" in r else "–", "–" if ri is None else f"{ri:.2f}"]
        rows.append(f"| {m} | " + " | ".join(cells) + " |")
    cyc = res.get("cyclones", {}).get("summary")
    if cyc:
        rows += ["", f"Cyclone cases ({len(res['cyclones']['cases'])}), every member: "
                     "centre error, |central pressure error|, |max 10 m wind error|, closed low within 300 km, "
                     "hit (closed low within 2° and 8 hPa):", "",
                 "| method | samples | centre error km | abs. dp hPa | mean dp hPa | abs. d wind m/s | detected | hit |",
                 "|---|---|---|---|---|---|---|---|"]
        for m, r in cyc.items():
            rows.append(f"| {m} | {r['samples']} | {r['position_error_km']:.0f} | {r['abs_pressure_error_hpa']:.1f} | "
                        f"{r['pressure_error_hpa']:+.1f} | {r['abs_max_wind_error']:.1f} | {r['detection_rate']:.2f} | "
                        f"{r['hit_rate']:.2f} |")
    paired = res.get("paired")
    if paired and paired.get("baseline"):
        rows += ["", "Case by case against the strongest baseline run: mean difference ± standard error over cases, "
                     "relative change, cases where lower (a difference under ~2 standard errors is not resolved):",
                 "", "| variable | method | vs | MAE | P99 | CRPS |", "|---|---|---|---|---|---|"]
        for v in vs:
            for m, qs in paired.get(v, {}).items():
                cells = [_paired_cell(qs.get(q)) for q in ("mae", "p99", "crps")]
                rows.append(f"| {v} | {m} | {paired['baseline'][v]} | " + " | ".join(cells) + " |")
    by = res.get("results_by_members")
    if by:
        rows += ["", "Ensemble means of the first k members (MAE per variable):", "",
                 "| method | k | " + " | ".join(f"{v} MAE" for v in vs) + " |", "|---|---|" + "---|" * len(vs)]
        for m in methods:
            for k, bv in by.items():
                if all(m in bv.get(v, {}) for v in vs):
                    rows.append(f"| {m} | {k} | " + " | ".join(_fmt(bv[v][m]["mae"]) for v in vs) + " |")
    return "\n".join(rows)


def _paired_cell(r: dict | None) -> str:
    """``mean ± se (relative %), lower/cases`` of one paired difference (:func:`case_scores.paired_differences`)."""
    if not r:
        return "–"
    return (f"{_fmt(r['mean_diff'])} ± {_fmt(r['se'])} ({100 * r['relative']:+.1f} %), "
            f"{r['lower_in']}/{r['cases']}")


def _fmt(x: float) -> str:
    if not np.isfinite(x):
        return "nan"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"
