"""How deep each catalog cyclone is in each GCM field, and whether "Find cyclones in this GCM field" finds it.

    python benchmarks/cyclone_finder.py [--storms held-out|training] [--max-cases N]

For every cyclone case the app offers (the real ERA5 storm and the demo world's held-out storms) and every
demo source (the five pseudo-GCMs and the ×20 task; the real storm on its own ERA5-x20 source), the GCM
field at the storm's peak over the case's region is built exactly as the app builds it, and:

* the storm's depth *as that GCM sees it*: the lowest closed low (a grid point lower than its 8
  neighbours) within 3° of the true centre, against the mean on a ring 4° from it (nan: no closed low) (the detector's own depth definition,
  :func:`zssd_engine.cyclones.detect_cyclones_arrays`);
* whether the finder, with its default thresholds, offers a candidate at the storm: within 300 km (or
  1.5 GCM cells, if larger) of the true centre, or within 1.5 GCM cells of the closed low the GCM field
  itself shows (on a 2.5° grid a storm's low may sit a few hundred km from the truth: the finder is asked
  to find the storm as the field shows it).  Both counts are reported.

The table justifies the thresholds from the fields' actual depths (the detector's ``min_depth`` against
the distribution of depths) and says, per source, how many storms that show a closed low of at least
0.6 hPa the finder finds.  The threshold study sweeps the background scale, ``min_depth`` and ``min_wind``.
The defaults are chosen with ``--storms training`` (storms of training years, never shown by the app)
and scored with ``--storms held-out`` (the app's cases).  Writes ``cyclone_finder[_training].json`` /
``.md`` to benchmarks/results.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, md_header, write  # noqa: E402

from zssd_engine import pipeline  # noqa: E402
from zssd_engine.cyclones import (R_EARTH_KM, _great_circle_km, detect_cyclones, detect_cyclones_arrays,  # noqa: E402
                             max_wind_within, passes_wind_test, ring_mean_pressure)
from zssd_engine.gcm import PSEUDO_GCMS  # noqa: E402
from zssd_engine.real_sources import real_cyclones  # noqa: E402

SEARCH_DEG, RING_DEG, HIT_KM = 3.0, 4.0, 300.0
TRAINING_STORM_YEARS = range(2017, 2021)  # training years with about as many storms as the held-out years
BACKGROUNDS_DEG = (0.0, 10.0, 15.0, 20.0)  # background scales of the threshold study (0: none removed)
CLOSED_LOW_PA = 60.0  # Pa: a storm "shows" in a field as a closed low at least this deep (the study's class)
_DEFAULTS = {k: v.default for k, v in inspect.signature(detect_cyclones_arrays).parameters.items()
             if v.default is not inspect.Parameter.empty}


def storm_depth(gcm, lat0: float, lon0: float) -> tuple[float, float, float]:
    """``(depth Pa, lat, lon)`` of the storm near (lat0, lon0) in a GCM field (nan if no msl)."""
    if "msl" not in gcm:
        return float("nan"), float("nan"), float("nan")
    msl = np.asarray(gcm["msl"].values, dtype=np.float64)
    lat = np.asarray(gcm["lat"].values, dtype=np.float64)
    lon = np.asarray(gcm["lon"].values, dtype=np.float64)
    lon0 = (lon0 - lon[0] + 180.0) % 360.0 - 180.0 + lon[0]  # the field's own longitude frame
    la2, lo2 = np.meshgrid(lat, lon, indexing="ij")
    d = _great_circle_km(lat0, lon0, la2, lo2)
    near = (d <= np.deg2rad(SEARCH_DEG) * R_EARTH_KM) & np.isfinite(msl)
    if not near.any():
        return float("nan"), float("nan"), float("nan")
    # a closed low at grid scale: lower than its 8 neighbours (a point on a pressure gradient is not a low)
    pad = np.pad(np.where(np.isfinite(msl), msl, np.inf), 1, constant_values=np.inf)
    nb = np.lib.stride_tricks.sliding_window_view(pad, (3, 3)).reshape(*msl.shape, 9)
    is_low = msl <= np.delete(nb, 4, axis=-1).min(axis=-1)
    is_low[0, :] = is_low[-1, :] = is_low[:, 0] = is_low[:, -1] = False
    near &= is_low
    if not near.any():
        return float("nan"), float("nan"), float("nan")
    k = np.argmin(np.where(near, msl, np.inf))
    i, j = np.unravel_index(k, msl.shape)
    dc = _great_circle_km(lat[i], lon[j], la2, lo2)
    half = 0.75 * np.deg2rad(max(np.median(np.abs(np.diff(lat))), np.median(np.abs(np.diff(lon))))) * R_EARTH_KM
    ring = ring_mean_pressure(msl, dc, np.deg2rad(RING_DEG) * R_EARTH_KM, half)  # the detector's own ring
    return float(ring - msl[i, j]), float(lat[i]), float(lon[j])


def cell_km(gcm, lat0: float) -> float:
    """The larger side (km) of a GCM cell at latitude ``lat0`` (its latitude spacing where lat0 is nan)."""
    dlat = float(np.median(np.abs(np.diff(gcm["lat"].values))))
    dlon = float(np.median(np.abs(np.diff(gcm["lon"].values))))
    coslat = float(np.cos(np.deg2rad(lat0))) if np.isfinite(lat0) else 0.0
    return float(np.deg2rad(max(dlat, dlon * coslat)) * R_EARTH_KM)


def storm_wind(gcm, lat0: float, lon0: float, radius_deg: float = 4.0) -> float:
    """The largest 10 m wind speed (m/s) within ``radius_deg`` of the GCM's low (the finder's wind test)."""
    if not np.isfinite(lat0) or "u10" not in gcm or "v10" not in gcm:
        return float("nan")
    sp = np.hypot(np.asarray(gcm["u10"].values, dtype=np.float64), np.asarray(gcm["v10"].values, dtype=np.float64))
    la2, lo2 = np.meshgrid(gcm["lat"].values, gcm["lon"].values, indexing="ij")
    return max_wind_within(sp, _great_circle_km(lat0, lon0, la2, lo2), np.deg2rad(radius_deg) * R_EARTH_KM)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--max-cases", type=int, default=0, help="demo cases to use (0: all)")
    p.add_argument("--storms", choices=("held-out", "training"), default="held-out",
                   help="held-out: the app's cases (score); training: storms of training years (choose thresholds)")
    a = p.parse_args(argv)
    world = pipeline.get_world(0)
    training = a.storms == "training"
    demo = world.catalog(years=TRAINING_STORM_YEARS) if training else world.catalog()
    if a.max_cases:
        demo = demo[:a.max_cases]
    rows = []
    real = [] if training else [(c, "ERA5-x20") for c in real_cyclones()]
    jobs = real + [(c, s) for c in demo for s in [*PSEUDO_GCMS, "x20"] if s != "MPI-ESM-LR"]
    for c, src in jobs:
        try:
            case = pipeline.prepare_case(src, c.peak_time, c.region, world=world)
        except ValueError as e:
            rows.append({"case": c.name, "source": src, "error": str(e)})
            continue
        depth, la, lo = storm_depth(case.gcm, c.peak_lat, c.peak_lon)
        wind = storm_wind(case.gcm, la, lo)
        cell = float(np.median(np.abs(np.diff(case.gcm["lat"].values))))
        hit_km = max(HIT_KM, 1.5 * np.deg2rad(cell) * R_EARTH_KM)  # within a cell and a half on a coarse grid
        low_km = 1.5 * cell_km(case.gcm, la)  # ... or of the GCM's own closed low

        def miss(k) -> float:
            """Distance to the storm in units where HIT_KM is the hit radius (the nearer of the two tests)."""
            d_true = float(_great_circle_km(c.peak_lat, c.peak_lon, np.array(k.lat), np.array(k.lon))) / hit_km
            d_low = (float(_great_circle_km(la, lo, np.array(k.lat), np.array(k.lon))) / low_km
                     if np.isfinite(la) else np.inf)
            return HIT_KM * min(d_true, d_low)

        cands = detect_cyclones(case.gcm)
        dist = [float(_great_circle_km(c.peak_lat, c.peak_lon, np.array(k.lat), np.array(k.lon))) for k in cands]
        loose = {bg: [(k.depth, k.max_wind, miss(k)) for k in  # for the threshold study
                      detect_cyclones(case.gcm, min_depth=0.0, min_wind=0.0, max_candidates=100, background_deg=bg)]
                 for bg in BACKGROUNDS_DEG}
        rows.append({"case": c.name, "source": src, "true_min_hpa": c.min_pressure / 100.0,
                     "gcm_depth_hpa": depth / 100.0, "gcm_max_wind": wind,
                     "found_at_true_centre": bool(dist) and min(dist) <= hit_km,
                     "found": any(miss(k) <= HIT_KM for k in cands), "hit_km": hit_km, "gcm_low_hit_km": low_km,
                     "nearest_candidate_km": min(dist) if dist else None, "candidates": len(cands),
                     "loose": loose})
    payload = {**header(), "settings": {"storms": a.storms, "search_deg": SEARCH_DEG, "ring_deg": RING_DEG,
                                        "hit_km": HIT_KM, "backgrounds_deg": list(BACKGROUNDS_DEG),
                                        "closed_low_pa": CLOSED_LOW_PA,
                                        "finder_defaults": _DEFAULTS}, "rows": rows}
    sources = list(dict.fromkeys(r["source"] for r in rows))
    which = ("storms of training years " + f"{TRAINING_STORM_YEARS[0]}–{TRAINING_STORM_YEARS[-1]}"
             " (for choosing the defaults; the app never shows them)" if training
             else "the app's cyclone cases (held-out years and the real storm)")
    lines = ["# Cyclone finder: storm depth as each GCM sees it, and what the finder finds", "", md_header(payload),
             f"Storms: {which}.", "",
             f"Depth: lowest msl within {SEARCH_DEG:g}° of the true centre vs the mean on a {RING_DEG:g}° ring. "
             f"Found: a candidate of `detect_cyclones` with its defaults (background {_DEFAULTS['background_deg']:g}° "
             f"removed, min_depth {_DEFAULTS['min_depth'] / 100:g} hPa, "
             f"wind ≥ {_DEFAULTS['min_wind']:g} m/s within {_DEFAULTS['wind_radius_deg']:g}° or 1.5 cells "
             f"(half of it for a low at least {_DEFAULTS['strong_depth'] / 100:g} hPa deep), "
             f"{_DEFAULTS['window_deg']:g}° window, |lat| ≤ {_DEFAULTS['max_abs_lat']:g}°) within {HIT_KM:g} km of "
             "the true centre (or 1.5 GCM cells, if larger) or within 1.5 GCM cells of the field's own closed low; "
             "'at true centre' counts only the first test.", "",
             "| Source | cases | true central pressure, median (hPa) | GCM depth p10 / median / p90 (hPa) | "
             f"closed low ≥ {CLOSED_LOW_PA / 100:g} hPa | GCM wind near the low p10 / median (m/s) | found (of those) "
             "| at true centre (of those) | found (all) | candidates per field |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    summary = {}
    for src in sources:
        rs = [r for r in rows if r["source"] == src and "error" not in r]
        if not rs:
            continue
        dep = np.array([r["gcm_depth_hpa"] for r in rs], dtype=float)
        has = [r for r in rs if np.isfinite(r["gcm_depth_hpa"]) and r["gcm_depth_hpa"] * 100 >= CLOSED_LOW_PA]
        found_has = sum(r["found"] for r in has)
        true_has = sum(r["found_at_true_centre"] for r in has)
        found = sum(r["found"] for r in rs)
        q = np.nanpercentile(dep, [10, 50, 90]) if np.isfinite(dep).any() else [np.nan] * 3
        wind = np.array([r["gcm_max_wind"] for r in has], dtype=float)
        qw = np.nanpercentile(wind, [10, 50]) if np.isfinite(wind).any() else [np.nan] * 2
        summary[src] = {"cases": len(rs), "depth_p10_p50_p90_hpa": [float(x) for x in q], "closed_low": len(has),
                        "found_of_closed_low": found_has,
                        "found_at_true_centre_of_closed_low": true_has, "found": found,
                        "wind_p10_p50": [float(x) for x in qw]}
        lines.append(f"| {src} | {len(rs)} | {np.median([r['true_min_hpa'] for r in rs]):.0f} | "
                     f"{q[0]:.1f} / {q[1]:.1f} / {q[2]:.1f} | {len(has)} | {qw[0]:.1f} / {qw[1]:.1f} | {found_has} | "
                     f"{true_has} | "
                     f"{found} | "
                     f"{np.mean([r['candidates'] for r in rs]):.1f} |")
    # threshold study: per (min_depth, min_wind), the share of closed-low storms found and the false candidates
    ok = [r for r in rows if "error" not in r]
    lines += ["", "Thresholds (candidates filtered from a permissive run; false = candidates that are not at the "
              "storm by either test, per field):", "",
              "| background (°) | min_depth (hPa) | min_wind (m/s) | half the wind from (hPa) | "
              "found, closed-low storms (all sources) | false per field |",
              "|---|---|---|---|---|---|"]
    study = []
    closed = [r for r in ok if np.isfinite(r["gcm_depth_hpa"]) and r["gcm_depth_hpa"] * 100 >= CLOSED_LOW_PA]
    for bg in BACKGROUNDS_DEG:
        for dmin in (60.0, 100.0, 150.0):
            for wmin in (5.0, 3.0):
                for strong in (np.inf, _DEFAULTS["strong_depth"]):
                    def keep(k):  # no winds in the field: the detector skips the wind test
                        return k[0] >= dmin and (not np.isfinite(k[1]) or passes_wind_test(k[1], k[0], wmin, strong))
                    found_c = sum(any(keep(k) and k[2] <= HIT_KM for k in r["loose"][bg]) for r in closed)
                    false = np.mean([sum(keep(k) and k[2] > HIT_KM for k in r["loose"][bg]) for r in ok])
                    study.append({"background_deg": bg, "min_depth_pa": dmin, "min_wind": wmin,
                                  "wind_waived_from_pa": None if np.isinf(strong) else strong, "found": found_c,
                                  "of": len(closed), "false_per_field": float(false)})
                    lines.append(f"| {bg:g} | {dmin / 100:g} | {wmin:g} | "
                                 f"{'never' if np.isinf(strong) else f'{strong / 100:g}'} | "
                                 f"{found_c} / {len(closed)} | {false:.2f} |")
    payload["threshold_study"] = study
    for r in rows:
        r.pop("loose", None)
    missed = [r for r in rows if "error" not in r and not r["found"] and np.isfinite(r["gcm_depth_hpa"])
              and r["gcm_depth_hpa"] * 100 >= CLOSED_LOW_PA]
    deep = [r for r in ok if np.isfinite(r["gcm_depth_hpa"]) and r["gcm_depth_hpa"] * 100 >= _DEFAULTS["min_depth"]]
    payload["found_of_threshold_deep"] = n_deep = [sum(r["found"] for r in deep), len(deep)]
    lines += ["", "Storms whose closed low in the GCM field is at least the finder's "
              f"{_DEFAULTS['min_depth'] / 100:g} hPa deep: **{n_deep[0]} of {n_deep[1]} found** (all sources).",
              "", f"Storms with a closed low the finder missed: {len(missed)}."]
    for r in missed[:20]:
        lines.append(f"- {r['case']} in {r['source']}: depth {r['gcm_depth_hpa']:.1f} hPa, nearest candidate "
                     + (f"{r['nearest_candidate_km']:.0f} km" if r["nearest_candidate_km"] is not None else "none"))
    errors = [r for r in rows if "error" in r]
    if errors:
        lines += ["", f"Fields that could not be built: {len(errors)} (first: {errors[0]['error']})."]
    payload["summary"] = summary
    write("cyclone_finder_training" if training else "cyclone_finder", payload, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
