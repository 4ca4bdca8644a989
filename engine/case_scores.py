"""Per-case scores of an evaluation run: the :class:`ScoreBook` accumulator, ensemble scores, cyclone metrics.

:func:`zssd_engine.evaluate.evaluate` adds one (case, method) result at a time to a :class:`ScoreBook`
(:meth:`ScoreBook.add`); :meth:`ScoreBook.report` turns the per-case lists into the table's numbers
(:func:`summarise`, :func:`cyclone_summary`) and keeps the lists themselves (``per_case``), so that
runs over disjoint parts of one case list combine exactly (:func:`merge_reports`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["ScoreBook", "add_probabilistic", "summarise", "cyclone_scores", "cyclone_summary", "merge_reports",
           "merge_methods", "paired_differences", "PAIRED_BASELINES"]

CYCLONE_DEFINITION = ("centre = lowest msl within 600 km (reference: of the region centre; prediction: of the "
                      "reference centre), at the reference's points; detected = closed low (ring depth >= 2 hPa) "
                      "within 300 km; hit = closed low within 2 deg and 8 hPa of the reference's central pressure")


class ScoreBook:
    """Per-case scores of every (variable, method), collected case by case.

    Parameters
    ----------
    members : int
        Ensemble size of the diffusion methods (the baselines have one member).
    diffusion_methods : sequence of str
        The methods that draw ``members`` samples; their ensemble means of the first 1, 4, 8 …
        members are scored too (``results_by_members``).
    """

    def __init__(self, members: int, diffusion_methods: Sequence[str]) -> None:
        self.members = members
        self.diffusion = set(diffusion_methods)
        self.ens_sizes = sorted({k for k in (1, 4, 8) if k < members} | {members})
        self.per: dict[str, dict[str, dict[str, list[float]]]] = {}
        self.by_members: dict[int, dict[str, dict[str, dict[str, list[float]]]]] = {}
        self.rank: dict[str, dict[str, np.ndarray]] = {}
        self.cyclones: dict[str, dict[str, dict]] = {}

    def add(self, method: str, ds, ref, seconds_per_sample: float,
            cyclone_case: str | None = None, centre: tuple[float, float] | None = None) -> None:
        """Score one method's output ``ds`` on one case against ``ref`` (its ensemble mean, its members as
        an ensemble, its cyclone if ``cyclone_case`` names one, and its first-k-member means)."""
        from .metrics import score
        from .variables import VARIABLES

        vs = [v for v in VARIABLES if v in ds.data_vars and v in ref.data_vars]
        for v, s in score(ds[vs], ref[vs]).items():
            d = self.per.setdefault(v, {}).setdefault(method, {"mae": [], "rmse": [], "p99": [],
                                                               "seconds_per_sample": []})
            _append(d, s)
            d["seconds_per_sample"].append(seconds_per_sample)
        for v in vs:  # the ensemble as an ensemble (a baseline's one member: CRPS = MAE)
            add_probabilistic(self.per[v][method], self.rank.setdefault(v, {}), method,
                              ds[f"{v}_members"].isel(time=0), ref[v])
        if cyclone_case is not None and "msl" in vs:
            self.cyclones.setdefault(cyclone_case, {})[method] = cyclone_scores(ds, ref, centre)
        if method in self.diffusion and self.members > 1:
            for k in self.ens_sizes:
                mean_k = ds[[f"{v}_members" for v in vs]].isel(member=slice(0, k)).mean("member")
                for v, s in score(mean_k.rename({f"{v}_members": v for v in vs}), ref[vs]).items():
                    _append(self.by_members.setdefault(k, {}).setdefault(v, {}).setdefault(
                        method, {"mae": [], "rmse": [], "p99": []}), s)

    def report(self) -> dict[str, Any]:
        """The JSON-able summary: ``results``, ``per_case`` (the lists behind them, case order) and, where
        collected, ``rank_hist``, ``cyclones``, ``results_by_members`` and ``per_case_by_members``."""
        from .probabilistic import reliability_index

        out: dict[str, Any] = {"results": {
            v: {m: summarise(d, self.members if m in self.diffusion else 1) for m, d in dm.items()}
            for v, dm in self.per.items()}}
        if self.rank:
            out["rank_hist"] = {v: {m: {"counts": c.tolist(), "reliability_index": reliability_index(c)}
                                    for m, c in dm.items()} for v, dm in self.rank.items()}
        if self.cyclones:
            out["cyclones"] = {"cases": self.cyclones, "summary": cyclone_summary(self.cyclones),
                               "definition": CYCLONE_DEFINITION}
        if self.by_members:
            out["results_by_members"] = {str(k): {v: {m: {q: float(np.mean(x)) for q, x in d.items()}
                                                      for m, d in dm.items()} for v, dm in bv.items()}
                                         for k, bv in sorted(self.by_members.items())}
        out["per_case"] = _lists(self.per)
        paired = paired_differences(out["per_case"])
        if paired:
            out["paired"] = paired
        if self.by_members:
            out["per_case_by_members"] = {str(k): _lists(bv) for k, bv in sorted(self.by_members.items())}
        return out


#: The baseline every other method is compared with case by case: the first of these that was run
#: (BCSD where it can be trained, else bilinear + lapse rate, else bilinear).
PAIRED_BASELINES: tuple[str, ...] = ("bcsd", "lapse", "bilinear")


def paired_differences(per_case: dict, metrics: Sequence[str] = ("mae", "p99", "crps")) -> dict[str, Any]:
    """Case-by-case differences of each method against the strongest baseline run (:data:`PAIRED_BASELINES`).

    For every variable, method and metric: the mean over cases of (method − baseline), its standard error
    (sample standard deviation / √n; NaN for one case), the relative change of the case means, and the
    number of cases where the method is lower.  A difference of less than about two standard errors is not
    resolved by the cases run.  Empty when no baseline or fewer than two methods were run.
    """
    out: dict[str, Any] = {}
    for v, dm in per_case.items():
        base = next((b for b in PAIRED_BASELINES if b in dm), None)
        if base is None:
            continue
        for m, d in dm.items():
            if m == base:
                continue
            for q in metrics:
                a, b = np.asarray(d.get(q, []), float), np.asarray(dm[base].get(q, []), float)
                if a.size == 0 or a.size != b.size:
                    continue
                diff = a - b
                se = float(np.std(diff, ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else float("nan")
                out.setdefault("baseline", {})[v] = base
                out.setdefault(v, {}).setdefault(m, {})[q] = {
                    "mean_diff": float(diff.mean()), "se": se, "relative": float(a.mean() / b.mean() - 1),
                    "lower_in": int((diff < 0).sum()), "cases": int(diff.size)}
    return out


def _lists(per: dict) -> dict:
    """A JSON-able copy of nested ``{variable: {method: {metric: [per-case values]}}}``."""
    return {v: {m: {q: [float(x) for x in xs] for q, xs in d.items()} for m, d in dm.items()} for v, dm in per.items()}


def _extend(dst: dict, src: dict) -> None:
    """Append the per-case lists of ``src`` to those of ``dst`` (both ``{variable: {method: {metric: list}}}``)."""
    for v, dm in src.items():
        for m, d in dm.items():
            tgt = dst.setdefault(v, {}).setdefault(m, {})
            for q, xs in d.items():
                tgt.setdefault(q, []).extend(xs)


def merge_reports(reports: Sequence[dict[str, Any]], members: int, diffusion_methods: Sequence[str]) -> dict[str, Any]:
    """One :meth:`ScoreBook.report` from reports of disjoint parts of one case list, in case order.

    The per-case lists are concatenated part after part (pass the parts in case order), the rank counts
    summed and the cyclone cases pooled; every summary is then recomputed exactly as one run over all
    cases would compute it.  Each part must carry ``per_case`` (reports written before it existed do not).
    """
    book = ScoreBook(members, diffusion_methods)
    for i, rep in enumerate(reports):
        if "per_case" not in rep:
            raise ValueError(f"part {i + 1} has no per-case scores (written before they were kept); run it again")
        _extend(book.per, rep["per_case"])
        for k, bv in rep.get("per_case_by_members", {}).items():
            _extend(book.by_members.setdefault(int(k), {}), bv)
        for v, dm in rep.get("rank_hist", {}).items():
            for m, r in dm.items():
                book.rank.setdefault(v, {})[m] = book.rank.get(v, {}).get(m, 0) + np.asarray(r["counts"])
        for name, by_method in rep.get("cyclones", {}).get("cases", {}).items():
            if name in book.cyclones:
                raise ValueError(f"cyclone case {name!r} is in two parts; the parts must not overlap")
            book.cyclones[name] = by_method
    return book.report()


def merge_methods(reports: Sequence[dict[str, Any]], members: int,
                  diffusion_methods: Sequence[str]) -> dict[str, Any]:
    """One :meth:`ScoreBook.report` from reports of *different methods* on the same case list.

    Each method's per-case lists, rank counts, cyclone scores and first-k-member scores are taken from the
    first report that has the method; a method in two reports must have the same per-case MAE there (the
    cases must match; a deterministic baseline run in both parts checks it).  Every summary, the paired
    differences against the strongest baseline and the cyclone summary are then recomputed over all methods.
    Each report must carry ``per_case``.
    """
    book = ScoreBook(members, diffusion_methods)
    for i, rep in enumerate(reports):
        if "per_case" not in rep:
            raise ValueError(f"part {i + 1} has no per-case scores (written before they were kept); run it again")
        new = set()
        for v, dm in rep["per_case"].items():
            for m, d in dm.items():
                have = book.per.get(v, {}).get(m)
                if have is not None:
                    if not np.allclose(have["mae"], d["mae"], rtol=1e-6):
                        raise ValueError(f"{v}, {m}: parts disagree case by case; not the same cases")
                    continue
                new.add(m)
                book.per.setdefault(v, {})[m] = {q: list(xs) for q, xs in d.items()}
        for k, bv in rep.get("per_case_by_members", {}).items():
            for v, dm in bv.items():
                for m, d in dm.items():
                    if m in new:
                        tgt = book.by_members.setdefault(int(k), {}).setdefault(v, {})
                        tgt[m] = {q: list(xs) for q, xs in d.items()}
        for v, dm in rep.get("rank_hist", {}).items():
            for m, r in dm.items():
                if m in new:
                    book.rank.setdefault(v, {})[m] = np.asarray(r["counts"])
        for name, by_method in rep.get("cyclones", {}).get("cases", {}).items():
            for m, sc in by_method.items():
                if m in new:
                    book.cyclones.setdefault(name, {})[m] = sc
    return book.report()


def _append(d: dict[str, list[float]], s) -> None:
    d["mae"].append(float(s.mae))
    d["rmse"].append(float(s.rmse))
    d["p99"].append(float(s.p99))


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
