"""The real-weather table: every method on the real ERA5 week (``era5-x20``, ``era5-x10``).

Runs :func:`zssd_engine.evaluate.evaluate` on the real-weather tasks (the ERA5 week of
2026-03-25..31 averaged to 5° / 2.5°; reference: real ERA5 at its 1° points, the 0.25°
output scored at exactly those points) and writes ``benchmarks/results/real_table.json``
and ``.md`` with the command, machine and date.  With ``--members N`` the diffusion methods'
ensemble means of the first 1, 4, 8 … members are scored from the same run.  BCSD cannot be
trained on one week and is listed as unavailable.  The four times of
:data:`zssd_engine.evaluate.REAL_TUNING_TIMES` are never scored.

ERA5: Contains modified Copernicus Climate Change Service information, CC-BY 4.0 (ECMWF).

    python benchmarks/real_table.py --tasks era5-x20 --cases 24 --members 8 --steps 50

A long run can be split over cores: ``--shard K/N`` runs the K-th of N contiguous parts of the case
list (each case keeps the seed of its position) and writes ``--name``; ``--merge-shards A,B`` then
combines the parts (their JSON names under ``benchmarks/results/`` or paths) into ``--name``, seed for
seed the table a single run gives (:func:`benchmarks.paper_table.merge_task_shards`)::

    python benchmarks/real_table.py --tasks era5-x20 --shard 1/2 --name /tmp/rt_s1 --threads 1 &
    python benchmarks/real_table.py --tasks era5-x20 --shard 2/2 --name /tmp/rt_s2 --threads 1
    python benchmarks/real_table.py --merge-shards /tmp/rt_s1,/tmp/rt_s2 --name real_table
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._common import header, md_header, write  # noqa: E402
from zssd_engine.evaluate import REAL_TASKS, evaluate, markdown_table  # noqa: E402
from zssd_engine.variables import VARIABLES  # noqa: E402


def summary(results: dict[str, dict]) -> str:
    """MAE of every method relative to ``lapse`` and ``bilinear``, per task and variable."""
    rows = ["| task | method | " + " | ".join(f"{v} MAE (x lapse / x bilinear)" for v in VARIABLES) + " |",
            "|---|---|" + "---|" * len(VARIABLES)]
    for task, res in results.items():
        r = res["results"]
        methods = list(dict.fromkeys(m for v in r for m in r[v]))
        for m in methods:
            cells = []
            for v in VARIABLES:
                x = r.get(v, {}).get(m, {}).get("mae")
                la = r.get(v, {}).get("lapse", {}).get("mae")
                bi = r.get(v, {}).get("bilinear", {}).get("mae")
                cells.append("–" if x is None else f"{x:.3g}" + (f" ({x / la:.2f} / {x / bi:.2f})" if la and bi else ""))
            rows.append(f"| {task} | {m} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def rank_hist_png(res: dict, path: Path) -> None:
    """One rank histogram per (diffusion method, variable): relative frequency of each rank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rh = res.get("rank_hist", {})
    vs = [v for v in VARIABLES if v in rh]
    methods = list(dict.fromkeys(m for v in vs for m in rh[v]))
    if not vs or not methods:
        return
    fig, axes = plt.subplots(len(methods), len(vs), figsize=(3 * len(vs), 2.2 * len(methods)), squeeze=False)
    for i, m in enumerate(methods):
        for j, v in enumerate(vs):
            c = np.asarray(rh[v].get(m, {}).get("counts", []), dtype=float)
            ax = axes[i, j]
            if c.size:
                ax.bar(np.arange(c.size), c / c.sum(), color="#4477aa")
                ax.axhline(1 / c.size, color="k", lw=0.8, ls="--")
                ax.set_title(f"{m} {v} (RI {rh[v][m]['reliability_index']:.2f})", fontsize=9)
            ax.set_xlabel("rank of the reference", fontsize=8)
    fig.suptitle(f"{res['task']}: rank histograms vs ERA5 (real, 1° points); dashed = flat", fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="era5-x20,era5-x10")
    ap.add_argument("--methods", default="bilinear,lapse,bcsd,ddrm,dps,zssd")
    ap.add_argument("--cases", type=int, default=24)
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--name", default="real_table")
    ap.add_argument("--guidance-scale", type=float, default=None,
                    help="ζ of the guided methods (default: the tuned table's, samplers.default_guidance_scale)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--shard", default=None, metavar="K/N", help="run only the K-th of N contiguous parts of the cases")
    ap.add_argument("--merge-shards", default=None, metavar="NAME[,NAME...]",
                    help="combine the JSON of every shard of one run (names under benchmarks/results/ or paths)")
    a = ap.parse_args(argv)
    if a.merge_shards:
        return merge(a)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]
    for t in tasks:
        if t not in REAL_TASKS:
            ap.error(f"unknown real task {t!r}; choose from {', '.join(REAL_TASKS)}")
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    from zssd_engine import pipeline as P

    scales = None if a.guidance_scale is None else {m: a.guidance_scale for m in P.GUIDED_METHODS}
    from benchmarks.paper_table import shard_indices

    results = {}
    for t in tasks:
        results[t] = evaluate(t, methods, a.cases, a.steps, a.members, checkpoint=a.checkpoint,
                              guidance_scales=scales, progress=lambda msg: print(msg, file=sys.stderr, flush=True),
                              case_indices=shard_indices(a.shard, a.cases) if a.shard else None)
    payload = {**header(), "settings": vars(a), "results": results}
    report(a, payload)
    return 0


def merge(a) -> int:
    """``--merge-shards``: one table from the shards' JSON files (see the module docstring)."""
    import json

    from benchmarks._common import RESULTS
    from benchmarks.paper_table import merge_task_shards

    docs = []
    for name in (x.strip() for x in a.merge_shards.split(",") if x.strip()):
        f = Path(name) if Path(name).suffix == ".json" else RESULTS / f"{name}.json"
        if not f.exists():
            raise SystemExit(f"--merge-shards: {f} not found")
        docs.append(json.loads(f.read_text()))
    command = header()["command"]
    results = {t: merge_task_shards(t, [d["results"][t] for d in docs if t in d["results"]], command)
               for t in dict.fromkeys(t for d in docs for t in d["results"])}
    settings = dict(docs[0]["settings"], shard=None, merge_shards=a.merge_shards, name=a.name,
                    cases=max(r["cases"] for r in results.values()),
                    merged_shards=[{"command": d["command"], "date": d["date"]} for d in docs])
    payload = {**header(), "settings": settings, "results": results}
    report(argparse.Namespace(**settings), payload)
    return 0


def report(a, payload: dict) -> None:
    """Write ``a.name``'s JSON, Markdown and rank histograms, and print the Markdown."""
    results = payload["results"]
    tasks = list(results)
    md = [f"# Real weather: the ERA5 week (real), {a.cases} cases per task\n", md_header(payload),
          "Reference: **real ERA5 at its 1° points** (every 4th point of the 0.25° grid; the 0.25° outputs "
          "are scored at exactly those points). Input: the same week averaged to 5° (era5-x20) or 2.5° "
          "(era5-x10). Cases: the real tropical cyclone off north-west Australia at its three deepest times, "
          "then fixed mountain, coast, plain and ocean regions (see `engine/evaluate.py`, `REAL_REGIONS`); the "
          f"tuning times {results[tasks[0]].get('tuning_times_excluded')} are never scored. "
          "Contains modified Copernicus Climate Change Service information (ERA5), CC-BY 4.0.\n",
          "## Summary\n", summary(results), ""]
    for t, r in results.items():
        md += [f"## {t}\n", markdown_table(r), "", "Cases: " + "; ".join(r["case_list"]), ""]
    from benchmarks._common import RESULTS

    for t, r in results.items():
        rank_hist_png(r, RESULTS / f"{a.name}_{t}_rank_hist.png")
    write(a.name, payload, "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    raise SystemExit(main())
