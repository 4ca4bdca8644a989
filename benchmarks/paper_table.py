"""Reproduce the paper's benchmark table on the demo world (held-out years only).

Runs :func:`zssd_engine.evaluate.evaluate` for the paired tasks x6, x10, x20 and the five
pseudo-GCMs, draws the power spectra of one cyclone case per method against the
reference, and writes

* ``benchmarks/results/paper_table.json`` — every task's evaluate result plus the
  command, machine, date and settings;
* ``benchmarks/results/paper_table.md`` — summary tables (MAE per variable,
  methods x tasks; seconds per sample) and the per-task tables;
* ``benchmarks/results/paper_table_spectra.png``.

The CPU budget here is small (2 cores), so everything is configurable::

    python benchmarks/paper_table.py --cases 2 --steps 20 --region-px 64          # quick
    python benchmarks/paper_table.py --cases 8 --steps 100                        # full (GPU)

A long run can be split over cores or machines: ``--shard K/N`` runs the K-th of N contiguous parts
of the ``--cases`` list (every case keeps the seed of its position), and ``--merge-shards A,B,...``
recomputes the whole run's table exactly from the parts' per-case scores::

    python benchmarks/paper_table.py --tasks gcm:MIROC6 --cases 32 --shard 1/2 --out-dir out/s1   # core 1
    python benchmarks/paper_table.py --tasks gcm:MIROC6 --cases 32 --shard 2/2 --out-dir out/s2   # core 2
    python benchmarks/paper_table.py --merge-shards out/s1,out/s2 --out-dir out/all

Every table also compares each method with the strongest baseline run (BCSD, else bilinear + lapse
rate, else bilinear) case by case: mean difference ± standard error over cases.

Scores are the demo world's, not ERA5's: the paper's numbers (ZSSD MAE ×6 0.09,
×10 0.15, ×20 0.28; IPSL 0.87, MIROC6 1.08, AWI 1.28, MPI-LR 1.24, MPI-HR 1.05) are
listed for orientation only — their variable, region size, steps and ζ are not public.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from zssd_engine import pipeline as P  # noqa: E402
from zssd_engine.evaluate import evaluate, machine_info, markdown_table  # noqa: E402
from zssd_engine.gcm import PSEUDO_GCMS  # noqa: E402
from zssd_engine.variables import VARIABLE_INFO, VARIABLES  # noqa: E402

DEFAULT_TASKS = ["x6", "x10", "x20"] + [f"gcm:{g}" for g in PSEUDO_GCMS]
PAPER_ZSSD_MAE = {"x6": 0.09, "x10": 0.15, "x20": 0.28, "gcm:IPSL-CM6A-LR": 0.87, "gcm:MIROC6": 1.08,
                  "gcm:AWI-CM-1-1-MR": 1.28, "gcm:MPI-ESM1-2-LR": 1.24, "gcm:MPI-ESM1-2-HR": 1.05}


def spectra_png(outputs: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from zssd_engine.metrics import power_spectrum

    ref = outputs["reference"]
    methods = [k for k in outputs if k not in ("reference", "case")]
    fig, axes = plt.subplots(1, len(VARIABLES), figsize=(4.2 * len(VARIABLES), 3.8), constrained_layout=True)
    for ax, v in zip(np.atleast_1d(axes), VARIABLES):
        s = power_spectrum(ref[v].isel(time=0))
        ax.loglog(s["wavelength_km"], s.values, "k-", lw=2.2, label="reference (demo world)")
        for m in methods:
            ds = outputs[m]
            if v not in ds:
                continue
            sp = power_spectrum(ds[v].isel(time=0))
            ax.loglog(sp["wavelength_km"], sp.values, lw=1.3, label=m)
        ax.invert_xaxis()
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("wavelength (km)")
        ax.set_ylabel(f"power ({VARIABLE_INFO[v].units})²")
        ax.set_title(v)
        ax.grid(True, which="both", alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summary_md(all_res: dict, methods: list[str]) -> str:
    tasks = list(all_res)
    lines = []
    for v in VARIABLES:
        lines += [f"### {v} MAE ({VARIABLE_INFO[v].units})", "",
                  "| method | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
        for m in methods:
            cells = []
            for t in tasks:
                r = all_res[t]["results"].get(v, {}).get(m)
                cells.append("–" if r is None else f"{r['mae']:.3g}")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["### seconds per sample", "", "| method | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for m in methods:
        cells = []
        for t in tasks:
            r = all_res[t]["results"].get("t2m", {}).get(m)
            cells.append("–" if r is None else f"{r['seconds_per_sample']:.2f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "Paper (ZSSD, ERA5, definitions not public) MAE for orientation: "
              + ", ".join(f"{t} {PAPER_ZSSD_MAE[t]}" for t in tasks if t in PAPER_ZSSD_MAE), ""]
    return "\n".join(lines)


METHOD_ORDER = ["bilinear", "bcsd", "ddrm", "dps", "zssd"]


def write_outputs(all_res: dict, methods: list[str], doc: dict, out_dir: Path, spectra_file: Path | None) -> None:
    """Write ``paper_table.json`` and ``paper_table.md`` (atomically) into ``out_dir``."""
    P.write_json_atomic(doc, out_dir / "paper_table.json")
    md = ["# ZSSD Explorer benchmark (demo world, held-out years)", "",
          f"- command: `{doc['command']}`", f"- machine: {doc['machine']}", f"- date: {doc['date']}",
          f"- settings: {doc['settings']}", f"- total time: {doc['seconds_total']} s", "",
          "Scores: cos-φ weighted MAE / RMSE / P99 (0.99 area quantile of |error|) of the ensemble mean vs the "
          "synthetic reference, mean over cases (half catalog cyclones, half random boxes).", "",
          summary_md(all_res, methods), "## Per task", ""]
    for t, r in all_res.items():
        md += [markdown_table(r), ""]
    if spectra_file:
        md += [f"![spectra]({spectra_file.name})", ""]
    tmp = out_dir / ".paper_table.md.tmp"
    tmp.write_text("\n".join(md))
    tmp.replace(out_dir / "paper_table.md")
    print(f"wrote {out_dir / 'paper_table.json'} and {out_dir / 'paper_table.md'}", file=sys.stderr)


def read_parts(parts: list[Path], flag: str) -> list[dict]:
    """The ``paper_table.json`` of each part (a run's folder or the file itself)."""
    docs = []
    for d in parts:
        f = d / "paper_table.json" if d.is_dir() else d
        if not f.exists():
            raise SystemExit(f"{flag}: {f} not found")
        docs.append(json.loads(f.read_text()))
    return docs


def merge(parts: list[Path], out_dir: Path, command: str) -> int:
    """Combine the methods of several ``paper_table.json`` runs over the *same* cases into one table.

    Lets the prior-independent baselines run while the prior trains and the diffusion
    methods run afterwards.  Every task's case list, region size and seed must agree
    between parts; a method present in two parts must have identical scores (bilinear
    is deterministic, so including it in both parts checks that the cases match).
    """
    docs = read_parts(parts, "--merge")
    part_keys = ("command", "steps", "members", "checkpoint", "guidance_scale", "date", "machine")
    all_res: dict = {}
    for doc in docs:
        for task, res in doc["tasks"].items():
            info = {k: res.get(k) for k in part_keys}
            if task not in all_res:
                all_res[task] = copy.deepcopy(res)
                all_res[task]["parts"] = [info]
                continue
            cur = all_res[task]
            for k in ("case_list", "region_px", "seed", "cases"):
                if cur.get(k) != res.get(k):
                    raise SystemExit(f"--merge: task {task}: parts differ in {k!r}; they must use the same cases")
            cur["parts"].append(info)
            for v, by_method in res["results"].items():
                tgt = cur["results"].setdefault(v, {})
                for m, r in by_method.items():
                    if m in tgt and not np.isclose(tgt[m]["mae"], r["mae"], rtol=1e-6):
                        raise SystemExit(f"--merge: task {task}, {v}, {m}: parts disagree "
                                         f"({tgt[m]['mae']} vs {r['mae']}); not the same cases")
                    tgt.setdefault(m, r)
            if any(m in P.DIFFUSION_METHODS for m in res["results"].get("t2m", {})):  # the sampler settings
                for k in ("steps", "members", "checkpoint", "guidance_scale"):
                    if res.get(k) not in (None, {}, "n/a"):
                        cur[k] = res[k]
            cur["seconds_total"] = float(cur.get("seconds_total", 0)) + float(res.get("seconds_total", 0))
    for task, cur in all_res.items():  # recompute every section over all methods from the per-case lists
        reps = [d["tasks"][task] for d in docs if task in d["tasks"]]
        if len(reps) > 1 and all("per_case" in r for r in reps):
            from zssd_engine.case_scores import merge_methods

            try:
                report = merge_methods(reps, int(cur.get("members") or 1), P.DIFFUSION_METHODS)
            except ValueError as e:
                raise SystemExit(f"--merge: task {task}: {e}") from None
            for k in ("rank_hist", "cyclones", "results_by_members", "per_case_by_members", "paired"):
                cur.pop(k, None)
            cur.update(report)
    methods = [m for m in METHOD_ORDER if any(m in r["results"].get(v, {}) for r in all_res.values()
                                              for v in VARIABLES)]
    spectra = [d for d in docs if d.get("spectra_png")]
    spectra_file = None
    out_dir.mkdir(parents=True, exist_ok=True)
    if spectra:
        src = (parts[docs.index(spectra[-1])])
        src = (src if src.is_dir() else src.parent) / spectra[-1]["spectra_png"]
        spectra_file = out_dir / "paper_table_spectra.png"
        if src.resolve() != spectra_file.resolve():
            shutil.copyfile(src, spectra_file)
    settings = dict(docs[-1]["settings"])
    settings["methods"] = methods
    settings["merged_from"] = [{"command": d["command"], "date": d["date"], "settings": d["settings"]} for d in docs]
    doc = {"command": command, "machine": docs[-1]["machine"],
           "date": pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"), "settings": settings,
           "tasks": all_res, "paper_zssd_mae": PAPER_ZSSD_MAE,
           "spectra_png": spectra_file.name if spectra_file else None,
           "seconds_total": round(sum(float(d.get("seconds_total", 0)) for d in docs), 1)}
    write_outputs(all_res, methods, doc, out_dir, spectra_file)
    return 0


def shard_indices(spec: str, n: int) -> list[int]:
    """Positions of shard ``"K/N"`` (K = 1..N) of an ``n``-case list: the K-th of N contiguous, near-equal runs."""
    try:
        k, parts = (int(x) for x in spec.split("/"))
    except ValueError:
        raise SystemExit(f"--shard: expected K/N (e.g. 1/2), got {spec!r}") from None
    if not 1 <= k <= parts or parts > n:
        raise SystemExit(f"--shard {spec}: need 1 <= K <= N <= --cases ({n})")
    return list(range((k - 1) * n // parts, k * n // parts))


#: What every shard of one run must share (besides its task).
SHARD_KEYS = ("source_id", "steps", "members", "seed", "region_px", "guidance_scale", "case_list_of")


def merge_task_shards(task: str, shards: list[dict], command: str, flag: str = "--merge-shards") -> dict:
    """One task's result from its shards (:func:`zssd_engine.evaluate.evaluate` outputs with ``case_indices``).

    The shards must share the settings in :data:`SHARD_KEYS` and the prior, and together cover each
    position of the case list exactly once; the scores are recomputed from the per-case lists
    (:func:`zssd_engine.case_scores.merge_reports`), so the result is the one a single run gives, seed for seed.
    """
    from zssd_engine.case_scores import merge_reports

    shards = sorted(shards, key=lambda r: (r.get("case_indices") or [0])[0])
    first = shards[0]
    for r in shards:
        if "case_indices" not in r:
            raise SystemExit(f"{flag}: task {task}: a part is not a shard (run with --shard K/N)")
        for k in SHARD_KEYS:
            if r.get(k) != first.get(k):
                raise SystemExit(f"{flag}: task {task}: shards differ in {k!r} ({first.get(k)!r} vs {r.get(k)!r})")
        if (r.get("checkpoint") or {}).get("sha256") != (first.get("checkpoint") or {}).get("sha256"):
            raise SystemExit(f"{flag}: task {task}: shards used different priors")
    idx = [i for r in shards for i in r["case_indices"]]
    if sorted(idx) != list(range(first["case_list_of"])):
        raise SystemExit(f"{flag}: task {task}: the shards cover positions {sorted(idx)}, not each of "
                         f"0..{first['case_list_of'] - 1} exactly once")
    try:
        report = merge_reports(shards, first["members"], P.DIFFUSION_METHODS)
    except ValueError as e:
        raise SystemExit(f"{flag}: task {task}: {e}") from None
    derived = ("case_indices", "case_list_of", "rank_hist", "cyclones", "paired", "results_by_members",
               "per_case", "per_case_by_members")
    res = {k: v for k, v in first.items() if k not in derived}
    res.update(report)
    res["cases"] = len(idx)
    res["case_list"] = [c for r in shards for c in r["case_list"]]
    res["seconds_total"] = round(sum(float(r.get("seconds_total", 0)) for r in shards), 2)
    bt = [(r["bcsd_train_seconds"], r["cases"]) for r in shards if "bcsd_train_seconds" in r]
    if bt:
        res["bcsd_train_seconds"] = round(sum(s * n for s, n in bt) / sum(n for _, n in bt), 2)
    res["shards"] = [{"case_indices": r["case_indices"], "command": r.get("command"), "date": r.get("date"),
                      "machine": r.get("machine"), "seconds_total": r.get("seconds_total")} for r in shards]
    res["command"] = command
    return res


def merge_shards(parts: list[Path], out_dir: Path, command: str) -> int:
    """Combine runs over disjoint shards (``--shard K/N``) of one case list into the whole run's table.

    Every task's shards must share the settings in :data:`SHARD_KEYS` and the prior, and together
    cover each position of the case list exactly once; the scores are recomputed from the per-case
    lists (:func:`zssd_engine.case_scores.merge_reports`), so the table is the one a single
    ``--cases n`` run gives, seed for seed (:func:`merge_task_shards`).
    """
    docs = read_parts(parts, "--merge-shards")
    all_res = {task: merge_task_shards(task, [doc["tasks"][task] for doc in docs if task in doc["tasks"]], command)
               for task in dict.fromkeys(t for doc in docs for t in doc["tasks"])}
    methods = list(dict.fromkeys(m for d in docs for m in d["settings"].get("methods", [])
                                 if any(m in r["results"].get(v, {}) for r in all_res.values() for v in VARIABLES)))
    settings = dict(docs[0]["settings"])
    settings.update(methods=methods, cases=max(r["cases"] for r in all_res.values()),
                    merged_shards=[{"command": d["command"], "date": d["date"]} for d in docs])
    settings.pop("shard", None)
    doc = {"command": command, "machine": docs[-1]["machine"],
           "date": pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"), "settings": settings,
           "tasks": all_res, "paper_zssd_mae": PAPER_ZSSD_MAE, "spectra_png": None,
           "seconds_total": round(sum(float(d.get("seconds_total", 0)) for d in docs), 1)}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_outputs(all_res, methods, doc, out_dir, None)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Benchmark table on held-out demo cases (x6/x10/x20 + pseudo-GCMs)")
    ap.add_argument("--tasks", default=",".join(DEFAULT_TASKS))
    ap.add_argument("--methods", default="bilinear,bcsd,ddrm,dps,zssd")
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--members", type=int, default=1)
    ap.add_argument("--region-px", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", default=None,
                    help="prior checkpoint (default: the shipped demo prior)")
    ap.add_argument("--spectra-task", default="x20", help="task whose first (cyclone) case gets the spectra plot")
    ap.add_argument("--no-spectra", action="store_true")
    ap.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--merge", default=None, metavar="DIR[,DIR...]",
                    help="combine earlier runs over the same cases (their paper_table.json) into --out-dir; "
                         "runs nothing")
    ap.add_argument("--shard", default=None, metavar="K/N",
                    help="run only the K-th of N contiguous parts of the --cases list (seeds as in the whole run); "
                         "combine the parts with --merge-shards")
    ap.add_argument("--merge-shards", default=None, metavar="DIR[,DIR...]",
                    help="combine runs of every shard of one case list (their paper_table.json) into --out-dir; "
                         "runs nothing")
    args = ap.parse_args(argv)
    command = "python benchmarks/paper_table.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.merge_shards:
        return merge_shards([Path(d) for d in args.merge_shards.split(",") if d], Path(args.out_dir), command)
    if args.merge:
        return merge([Path(d) for d in args.merge.split(",") if d], Path(args.out_dir), command)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    tasks = [t for t in args.tasks.split(",") if t]
    methods = [m for m in args.methods.split(",") if m]
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prior = P.load_prior(args.checkpoint) if any(m in P.DIFFUSION_METHODS for m in methods) else None
    t0 = time.time()
    all_res = {}
    spectra_file = None
    shard = shard_indices(args.shard, args.cases) if args.shard else None
    for task in tasks:
        keep = 0 if (task == args.spectra_task and not args.no_spectra and (shard is None or 0 in shard)) else None
        res = evaluate(task, methods, args.cases, args.steps, args.members, args.seed, args.checkpoint,
                       size_px=args.region_px, prior=prior, keep_case=keep, case_indices=shard,
                       progress=lambda msg, t=task: print(f"[{t}] {msg}", file=sys.stderr, flush=True))
        outputs = res.pop("_outputs", None)
        res["command"] = command
        all_res[task] = res
        if outputs:
            spectra_file = out_dir / "paper_table_spectra.png"
            spectra_png(outputs, spectra_file, f"{task}: {res['case_list'][0]} — {args.steps} steps")
        print(markdown_table(res), flush=True)
    doc = {
        "command": command,
        "machine": machine_info(),
        "date": pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"),
        "settings": {"cases": args.cases, "shard": args.shard, "steps": args.steps, "members": args.members,
                     "region_px": args.region_px, "seed": args.seed, "methods": methods,
                     "checkpoint": args.checkpoint or str(P.DEFAULT_CHECKPOINT),
                     "checkpoint_sha256": P.prior_sha256(prior) if prior is not None else None},
        "tasks": all_res,
        "paper_zssd_mae": PAPER_ZSSD_MAE,
        "spectra_png": spectra_file.name if spectra_file else None,
        "seconds_total": round(time.time() - t0, 1),
    }
    write_outputs(all_res, methods, doc, out_dir, spectra_file)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
