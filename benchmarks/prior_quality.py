#!/usr/bin/env python
"""Prior-only (unconditional) samples on held-out times vs the demo-world reference.

For each held-out (time, region) case the prior samples without guidance, conditioned only on the
static fields and the time embedding; the samples are compared with the reference *statistically*
(they are not expected to match the weather of the day):

* per-variable mean and standard deviation (pooled over cases and pixels);
* power-spectrum ratio sample/reference per octave band of wavelength;
* dependence on the static fields: t2m-elevation regression slope over land (row-demeaned, so the
  latitude gradient does not enter) against the reference's, and the land-minus-sea t2m contrast;
* a PNG panel of reference vs samples.

Usage: python benchmarks/prior_quality.py [--checkpoint PATH] [--cases 12] [--steps 100] [--size 128]
Writes benchmarks/results/prior_quality.{json,md,png} (``--name`` changes the base name).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import RESULTS, header, md_header, write  # noqa: E402


#: fixed wavelength octaves (long_km, short_km) so cases at different latitudes pool
BANDS = [(3200.0, 1600.0), (1600.0, 800.0), (800.0, 400.0), (400.0, 200.0), (200.0, 100.0), (100.0, 50.0)]


def held_out_cases(n: int, size: int, seed: int = 123):
    import pandas as pd

    from zssd_engine.demo_world import HELDOUT_YEARS
    from zssd_engine.grids import Region

    rng = np.random.default_rng(seed)
    # a fixed mix of regions with terrain, coasts and open ocean
    anchors = [(30, 90), (38, -105), (45, 8), (-25, 135), (-15, -60), (35, 140), (20, -150), (-45, 170),
               (55, 100), (5, 20), (60, -40), (15, 80)]
    out = []
    for i in range(n):
        lat, lon = anchors[i % len(anchors)]
        y = int(HELDOUT_YEARS[i % len(HELDOUT_YEARS)])
        t = pd.Timestamp(year=y, month=1, day=1) + pd.Timedelta(days=int(rng.integers(0, 365)),
                                                                 hours=int(rng.choice([0, 6, 12, 18])))
        out.append((t, Region.around(lat, lon, size * 0.25)))
    return out


def t2m_elevation_slope(t2m: np.ndarray, dem: np.ndarray, land: np.ndarray) -> float:
    """Regression slope (K/km) of row-demeaned t2m on row-demeaned elevation over land pixels."""
    m = land > 0.9
    xs, ys = [], []
    for i in range(t2m.shape[0]):
        mi = m[i]
        if mi.sum() > 8 and np.ptp(dem[i][mi]) > 300:
            xs.append(dem[i][mi] / 1000.0 - (dem[i][mi] / 1000.0).mean())
            ys.append(t2m[i][mi] - t2m[i][mi].mean())
    if not xs:
        return float("nan")
    x, y = np.concatenate(xs), np.concatenate(ys)
    return float(np.sum(x * y) / np.sum(x * x))


def main() -> None:
    import torch
    import xarray as xr

    from zssd_engine.conditioning import static_channels, time_features
    from zssd_engine.demo_world import DemoWorld
    from zssd_engine.grids import era5_grid
    from zssd_engine.metrics import spectrum_ratio_by_band
    from zssd_engine.pipeline import default_prior, prior_sha256
    from zssd_engine.prior.model import Prior
    from zssd_engine.samplers import sample_unconditional
    from zssd_engine.variables import VARIABLES, VARIABLE_INFO

    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--cases", type=int, default=12)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="prior_quality", help="base name of the result files")
    a = ap.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    prior = Prior.load(a.checkpoint) if a.checkpoint else default_prior()
    world = DemoWorld(0)
    refs, sams, statics, grids = [], [], [], []
    t_start = time.perf_counter()
    for k, (t, region) in enumerate(held_out_cases(a.cases, a.size)):
        g = era5_grid().select(region)[0]
        f = world.fields(t, g)
        dem, land = world.statics.region(g)
        st = static_channels(g, dem, land, t)
        tf = time_features([t])
        last = None
        for last in sample_unconditional(prior, None, g, st, tf, steps=a.steps, members=1, seed=a.seed + k):
            pass
        x = prior.denormalize(last.x_t).detach().cpu().numpy()[0]
        refs.append(np.stack([f[v] for v in VARIABLES]))
        sams.append(x)
        statics.append((dem, land))
        grids.append((t, g))
    seconds = (time.perf_counter() - t_start) / a.cases
    ref, sam = np.stack(refs), np.stack(sams)
    res: dict = {"cases": a.cases, "steps": a.steps, "size": a.size, "seconds_per_sample": seconds,
                 "checkpoint": str(getattr(prior, "source", a.checkpoint or "default")),
                 "checkpoint_sha256": prior_sha256(prior), "parameterization": prior.parameterization,
                 "variables": {}}
    for i, v in enumerate(VARIABLES):
        bands_acc: dict[str, list[float]] = {}
        for k, (t, g) in enumerate(grids):
            coords = {"lat": g.lat, "lon": g.lon}
            pr = xr.DataArray(sam[k, i], dims=("lat", "lon"), coords=coords)
            rf = xr.DataArray(ref[k, i], dims=("lat", "lon"), coords=coords)
            ratio = spectrum_ratio_by_band(pr, rf, bands=BANDS)
            for (lo_km, hi_km), val in zip(BANDS, ratio.values):
                if np.isfinite(val):
                    bands_acc.setdefault(f"{lo_km:.0f}-{hi_km:.0f} km", []).append(float(val))
        res["variables"][v] = {
            "units": VARIABLE_INFO[v].units,
            "mean_ref": float(ref[:, i].mean()), "mean_prior": float(sam[:, i].mean()),
            "std_ref": float(ref[:, i].std()), "std_prior": float(sam[:, i].std()),
            "within_case_std_ref": float(ref[:, i].std(axis=(1, 2)).mean()),
            "within_case_std_prior": float(sam[:, i].std(axis=(1, 2)).mean()),
            # does the prior know each case's climate (latitude, season, terrain)? its area means vs the reference's
            "case_mean_std_ref": float(ref[:, i].mean(axis=(1, 2)).std()),
            "case_mean_std_prior": float(sam[:, i].mean(axis=(1, 2)).std()),
            "case_mean_corr": float(np.corrcoef(ref[:, i].mean(axis=(1, 2)), sam[:, i].mean(axis=(1, 2)))[0, 1]),
            "spectrum_ratio_by_band": {b: float(np.exp(np.mean(np.log(np.maximum(vals, 1e-12))))) for b, vals in bands_acc.items()},
        }
    sl_ref = [t2m_elevation_slope(ref[k, 0], *statics[k]) for k in range(a.cases)]
    sl_pri = [t2m_elevation_slope(sam[k, 0], *statics[k]) for k in range(a.cases)]
    lsc_ref, lsc_pri = [], []
    for k in range(a.cases):
        dem, land = statics[k]
        if (land > 0.9).sum() > 50 and (land < 0.1).sum() > 50:
            lsc_ref.append(float(ref[k, 0][land > 0.9].mean() - ref[k, 0][land < 0.1].mean()))
            lsc_pri.append(float(sam[k, 0][land > 0.9].mean() - sam[k, 0][land < 0.1].mean()))
    res["static_dependence"] = {
        "t2m_elevation_slope_K_per_km": {"reference": float(np.nanmedian(sl_ref)), "prior": float(np.nanmedian(sl_pri)),
                                         "demo_world_lapse_rate": -6.5},
        "land_minus_sea_t2m_K": {"cases": len(lsc_ref), "reference": lsc_ref, "prior": lsc_pri,
                                 "corr": float(np.corrcoef(lsc_ref, lsc_pri)[0, 1]) if len(lsc_ref) > 2 else None},
    }
    # ---- PNG panel
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    show = min(3, a.cases)
    fig, axes = plt.subplots(2 * show, 4, figsize=(15, 3.6 * 2 * show))
    for k in range(show):
        for i, v in enumerate(VARIABLES):
            lo, hi = np.percentile(ref[k, i], [1, 99])
            for j, (name, arr) in enumerate((("reference (demo world)", ref), ("prior sample", sam))):
                ax = axes[2 * k + j, i]
                im = ax.imshow(arr[k, i], vmin=lo, vmax=hi, cmap=VARIABLE_INFO[v].cmap)
                ax.set_title(f"{name}\n{v} [{VARIABLE_INFO[v].units}] {grids[k][0]:%Y-%m-%d %HZ}", fontsize=8)
                ax.set_xticks([]), ax.set_yticks([])
                fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS / f"{a.name}.tmp.png"
    fig.savefig(tmp, dpi=70)
    tmp.replace(RESULTS / f"{a.name}.png")
    payload = {**header(), **res}
    md = "# Prior-only samples vs reference (held-out demo years)\n\n" + md_header(payload)
    md += (f"Checkpoint sha256 `{res['checkpoint_sha256'][:16]}…` ({res['parameterization']}-prediction).  \n"
           f"{a.cases} cases, {a.size}x{a.size}, {a.steps} ancestral steps, {seconds:.1f} s/sample.\n\n")
    md += "| variable | mean ref | mean prior | std ref | std prior | in-case std ref | in-case std prior | spectrum ratio by band (long -> short) |\n|---|---|---|---|---|---|---|---|\n"
    for v, r in res["variables"].items():
        bands = ", ".join(f"{b}: {x:.2f}" for b, x in r["spectrum_ratio_by_band"].items())
        md += (f"| {v} [{r['units']}] | {r['mean_ref']:.2f} | {r['mean_prior']:.2f} | {r['std_ref']:.2f} | {r['std_prior']:.2f} | "
               f"{r['within_case_std_ref']:.2f} | {r['within_case_std_prior']:.2f} | {bands} |\n")
    md += "\nCase (area) means, prior vs reference: " + "; ".join(
        f"{v} corr {r['case_mean_corr']:.2f}, std {r['case_mean_std_prior']:.3g} vs {r['case_mean_std_ref']:.3g}"
        for v, r in res["variables"].items()) + ".  \n"
    sd = res["static_dependence"]
    md += (f"t2m-elevation slope over land (row-demeaned): reference {sd['t2m_elevation_slope_K_per_km']['reference']:.2f} K/km, "
           f"prior {sd['t2m_elevation_slope_K_per_km']['prior']:.2f} K/km (demo-world lapse rate -6.5 K/km).  \n")
    if sd["land_minus_sea_t2m_K"]["corr"] is not None:
        md += (f"Land-minus-sea t2m over {sd['land_minus_sea_t2m_K']['cases']} coastal cases: correlation prior vs reference "
               f"{sd['land_minus_sea_t2m_K']['corr']:.2f}.\n")
    md += f"\n![reference vs prior samples]({a.name}.png)\n"
    write(a.name, payload, md)
    print(md)


if __name__ == "__main__":
    main()
