"""Per-case scores of an evaluation run beyond MAE/RMSE/P99: ensemble scores and cyclone metrics.

:func:`engine.evaluate.evaluate` calls these once per (case, method) and once at the end: the
accumulators hold per-case lists, :func:`summarise` turns them into the table's numbers.
"""

from __future__ import annotations

import numpy as np

__all__ = ["add_probabilistic", "summarise", "cyclone_scores", "cyclone_summary"]


def add_probabilistic(d: dict, rank_v: dict, method: str, members: "xarray.DataArray", ref: "xarray.DataArray") -> None:
    """Append one case's CRPS, energy score (and spread; rank counts summed) to the accumulators."""
    from .probabilistic import ensemble_scores

    es = ensemble_scores(members, ref)
    d.setdefault("crps", []).append(es["crps"])
    d.setdefault("energy", []).append(es["energy"])
    if "spread_skill" in es:
        d.setdefault("spread", []).append(es["spread_skill"]["spread"])
        counts = np.asarray(es["rank_hist"])
        rank_v[method] = rank_v.get(method, 0) + counts


def summarise(d: dict[str, list[float]], members: int) -> dict[str, float]:
    """Means over cases; the spread as an RMS over cases and the spread–skill ratio from the pooled
    spread and ensemble-mean RMSE, with the finite-ensemble factor sqrt((m+1)/m)."""
    out = {k: float(np.mean(x)) for k, x in d.items() if k != "spread"}
    if "spread" in d and members > 1:
        spread = float(np.sqrt(np.mean(np.square(d["spread"]))))
        rmse = float(np.sqrt(np.mean(np.square(d["rmse"]))))
        out["spread"] = spread
        out["spread_skill"] = float(np.sqrt((members + 1) / members) * spread / rmse) if rmse > 0 else float("nan")
    return out


def cyclone_scores(ds, ref, near: tuple[float, float]) -> dict:
    """Cyclone metrics of every member and of the ensemble mean, at the reference's points."""
    from .cyclones import cyclone_metrics
    from .metrics import at_reference_points

    def at(name, member=None):
        da = ds[f"{name}_members"].isel(time=0)
        da = da.mean("member") if member is None else da.isel(member=member)
        return at_reference_points(da, ref[name]).transpose("lat", "lon").values

    if "time" in ref.dims:  # the demo world's reference carries a time axis of one
        ref = ref.isel(time=0)
    lat, lon = ref["lat"].values, ref["lon"].values
    has_uv = all(v in ds and v in ref for v in ("u10", "v10"))
    ref_uv = (ref["u10"].transpose("lat", "lon").values, ref["v10"].transpose("lat", "lon").values) if has_uv else None

    def one(member):
        uv = (at("u10", member), at("v10", member)) if has_uv else None
        return cyclone_metrics(at("msl", member), ref["msl"].transpose("lat", "lon").values, lat, lon, uv, ref_uv,
                               near=near)
    n = ds.sizes["member"]
    return {"members": [one(k) for k in range(n)], "ensemble_mean": one(None)}


def cyclone_summary(cyclones: dict[str, dict[str, dict]]) -> dict[str, dict[str, float]]:
    """Per method over every cyclone case and member: mean errors, detection and hit rates."""
    acc: dict[str, list[dict]] = {}
    for per_method in cyclones.values():
        for m, r in per_method.items():
            acc.setdefault(m, []).extend(r["members"])
    out = {}
    for m, rows in acc.items():
        def mean(k, f=abs):
            vals = [f(r[k]) for r in rows if np.isfinite(r[k])]
            return float(np.mean(vals)) if vals else float("nan")
        out[m] = {"samples": len(rows), "position_error_km": mean("position_error_km"),
                  "abs_pressure_error_hpa": mean("pressure_error_hpa"),
                  "pressure_error_hpa": mean("pressure_error_hpa", float),
                  "abs_max_wind_error": mean("max_wind_error"),
                  "detection_rate": float(np.mean([r["detected"] for r in rows])),
                  "hit_rate": float(np.mean([r["hit"] for r in rows]))}
    return out
