#!/usr/bin/env python
"""Speed of the demo-world generator and the pseudo-GCM views (target: 128x128, one time, <= 0.2 s).

Usage: python benchmarks/demo_world_speed.py [--repeats 20]
Writes benchmarks/results/demo_world_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import header, md_header, timed, write  # noqa: E402

from zssd_engine.demo_world import DemoWorld  # noqa: E402
from zssd_engine.gcm import PSEUDO_GCMS, gcm_field  # noqa: E402
from zssd_engine.grids import Region  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args()
    w = DemoWorld(0)
    case = w.catalog()[0]
    rows = {
        "demo world 128x128 (cyclone case)": timed(lambda: w.fields(case.peak_time, case.region), a.repeats),
        "demo world 128x128 (mid-latitudes)": timed(lambda: w.fields("2022-01-20T12", Region(30, 62, -10, 22)), a.repeats),
        "demo world 256x256": timed(lambda: w.fields("2022-01-20T12", Region(20, 84, -30, 34)), max(a.repeats // 4, 3)),
    }
    for sid in PSEUDO_GCMS:
        rows[f"pseudo-GCM {sid} (32 deg region)"] = timed(lambda s=sid: gcm_field(s, case.peak_time, case.region, w),
                                                          max(a.repeats // 4, 3))
    payload = {**header(), "target": "128x128 one time <= 0.2 s", "results": rows}
    md = "# Demo world speed\n\n" + md_header(payload) + "| what | median (s) | p90 (s) |\n|---|---|---|\n"
    md += "".join(f"| {k} | {v['median_s']:.4f} | {v['p90_s']:.4f} |\n" for k, v in rows.items())
    write("demo_world_speed", payload, md)
    print(md)


if __name__ == "__main__":
    main()
