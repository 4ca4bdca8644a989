"""The scores shown beside the maps: MAE/RMSE/P99 of every panel against the reference, and the
ensemble's CRPS and spread–skill (a view's formatting of :mod:`zssd_engine.metrics` and
:mod:`zssd_engine.probabilistic`, computed from a session's :class:`~zssd_app.state.AppState`)."""

from __future__ import annotations

import numpy as np

from zssd_engine.methods import CLASSICAL, METHODS, method_names

from .common import DISPLAY, display_field

__all__ = ["metrics_table", "ensemble_scores"]


def ensemble_scores(state, key: str) -> dict | None:
    """CRPS and spread–skill of the finished ensemble against the reference (display units), or None."""
    r, c = state.result, state.case
    if r is None or c is None or not c.paired or int(state.result_meta.get("members", 1)) < 2:
        return None
    from zssd_engine.probabilistic import crps, spread_skill

    d = DISPLAY[key]
    if key == "wind":
        if not all(f"{v}_members" in r for v in ("u10", "v10")) or "u10" not in c.reference:
            return None
        mem = np.hypot(r["u10_members"], r["v10_members"]).isel(time=0)
        ref = np.hypot(c.reference["u10"], c.reference["v10"])
    else:
        if f"{key}_members" not in r or key not in c.reference:
            return None
        mem = r[f"{key}_members"].isel(time=0) * d.scale + d.offset
        ref = c.reference[key] * d.scale + d.offset
    ref = ref.assign_attrs(c.reference[key if key != "wind" else "u10"].attrs)
    return {"crps": crps(mem, ref), "spread_skill": spread_skill(mem, ref)["ratio"]}


def metrics_table(state, key: str | None = None):
    """Rows of MAE/RMSE/P99 error vs the reference for the display variable (pandas DataFrame)."""
    import pandas as pd
    import xarray as xr

    from zssd_engine import metrics

    key = key or state.variable
    d = DISPLAY[key]
    cols = [f"MAE ({d.units})", f"RMSE ({d.units})", f"P99 abs. error ({d.units})"]
    if state.case is None:
        return pd.DataFrame(columns=["Method"] + cols)
    if not state.case.paired:
        return pd.DataFrame({"Method": ["unpaired"], cols[0]: ["—"], cols[1]: ["—"], cols[2]: ["—"],
                             "Note": [f"{state.case.source_id} is a real GCM: no reference state exists for it, "
                                      "so errors cannot be computed"]})
    f = state.case.fine
    cref = state.case.reference  # its own points: the fine grid, or real ERA5's 1° points
    ref, _, _ = display_field(cref, key)

    def da(a, lat=f.lat, lon=f.lon):
        return xr.DataArray(a, dims=("lat", "lon"), coords={"lat": lat, "lon": lon})

    rows = []
    classical = method_names(kind=CLASSICAL)  # bilinear, lapse, BCSD: the baselines of every case
    cands = [(METHODS[m].label, state.baselines.get(m), m) for m in classical]
    live = state.live_dataset()
    if live is not None:
        lab = state.result_meta.get("method", state.method)
        lab += " (final, member 1)" if state.live_final else f" (x̂0 at step {state.step}/{state.n_steps})"
        cands.append((lab, live, None))
    ens = None
    if state.result is not None and state.result_meta.get("members", 1) > 1:
        cands.append((f"{state.result_meta.get('method')} ensemble mean", state.result, None))
        ens = ensemble_scores(state, key)
    for name, ds, method in cands:
        if ds is None:
            err = state.baseline_errors.get(method or "")
            txt = "n/a" if err else "computing…"
            rows.append({"Method": name, cols[0]: txt, cols[1]: txt, cols[2]: txt, "Note": err or "training…"})
            continue
        a, _, _ = display_field(ds, key)
        if a is None or ref is None:
            rows.append({"Method": name, cols[0]: "n/a", cols[1]: "n/a", cols[2]: "n/a"})
            continue
        r = da(ref, cref["lat"].values, cref["lon"].values)
        p = metrics.at_reference_points(da(a), r)
        mae = float(metrics.mae(p, r))
        row = {"Method": name, cols[0]: f"{mae:.3g}", cols[1]: f"{float(metrics.rmse(p, r)):.3g}",
               cols[2]: f"{float(metrics.p99_error(p, r)):.3g}"}
        if ens is not None:  # a deterministic field's CRPS is its MAE: one column for every row
            is_ens = name.endswith("ensemble mean")
            row[f"CRPS ({d.units})"] = f"{ens['crps']:.3g} (ensemble)" if is_ens else f"{mae:.3g}"
            row["Spread–skill"] = f"{ens['spread_skill']:.2f}" if is_ens else "–"
        rows.append(row)
    return pd.DataFrame(rows)
