"""Shared helpers for benchmark scripts: machine description and atomic JSON/Markdown output."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def timed(fn, repeats: int) -> dict:
    """Call ``fn`` once to warm up, then ``repeats`` times; median and p90 wall seconds."""
    import time

    import numpy as np

    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return {"median_s": float(np.median(ts)), "p90_s": float(np.percentile(ts, 90)), "repeats": repeats}


def machine() -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": sys.version.split()[0],
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def header() -> dict:
    return {"command": " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine()}


def write(name: str, payload: dict, markdown: str) -> tuple[Path, Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    js, md = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    for path, text in ((js, json.dumps(payload, indent=2, default=float)), (md, markdown)):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return js, md


def md_header(payload: dict) -> str:
    m = payload["machine"]
    return (f"Command: `{payload['command']}`  \nDate: {payload['date']}  \n"
            f"Machine: {m.get('cpu_model', m['processor'])}, {m['cpu_count']} cores, torch {m['torch']} "
            f"({m['torch_threads']} threads){', GPU ' + m['cuda'] if m.get('cuda') else ', no GPU'}\n\n")


def add_case_study_args(ap, *, columns: str, members: int, name: str) -> None:
    """The options every ``bc_*`` case study shares: columns, cases, members, steps, box size, seed,
    checkpoint, torch threads and the result files' base name."""
    ap.add_argument("--columns", default=columns, help="GCM columns, comma-separated")
    ap.add_argument("--cases", type=int, default=6)
    ap.add_argument("--members", type=int, default=members)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--region-px", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--name", default=name, help="base name of the result files")


def finish_report(name: str, payload: dict, lines: list[str]) -> int:
    """Append the total time, write JSON + Markdown atomically (:func:`write`), print the Markdown; returns 0."""
    lines.append(f"\nTotal time {payload['seconds']} s.\n")
    write(name, payload, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0
