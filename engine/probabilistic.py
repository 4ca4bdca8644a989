"""Scores of an ensemble as an ensemble: CRPS, energy score, spread–skill and rank histograms.

xarray in, floats (or small arrays) out; cos φ area weights as everywhere in
:mod:`zssd_engine.metrics`.  The core formulas come from well-kept libraries:
`scoringrules <https://github.com/frazane/scoringrules>`_ (CRPS, energy score)
and `xskillscore <https://github.com/xarray-contrib/xskillscore>`_ (rank
histogram); this module only reduces over the map and documents the choices.

Definitions (``X_1..X_m`` the members at one point, ``y`` the reference):

* **CRPS** (fair, unbiased for a finite ensemble; Ferro 2014):
  ``E|X − y| − Σ_{i,j} |X_i − X_j| / (2 m (m − 1))``, per point, then the cos φ
  weighted mean over the map.  With one member it is ``|X − y|``: a deterministic
  method's CRPS equals its MAE, so every method shares one table.
* **Energy score** of each variable's whole map (fair estimator), with the points
  scaled by ``sqrt(w_i / Σw)`` so the Euclidean norm is an area-weighted RMS: the
  energy score then has the variable's unit and reduces to the area RMSE for one
  member.
* **Spread–skill ratio**: ``sqrt((m + 1) / m) · spread / RMSE(ensemble mean)``,
  ``spread = sqrt(weighted mean of the members' variance (ddof=1))`` (Fortin et
  al. 2014).  1 for a calibrated ensemble; < 1 under-dispersive, > 1 over-dispersive.
* **Rank histogram**: counts of the reference's rank among the members (ties
  broken at random), one bin per rank ``0..m``, over all points (unweighted).
  Flatness: the reliability index ``RI = Σ |f_k − 1/(m + 1)|`` of the relative
  frequencies ``f_k`` (Delle Monache et al. 2006): 0 for a flat histogram, up to
  ``2 m / (m + 1)`` when every rank falls in one bin.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .errors import DataError
from .grids import lat_weights
from .metrics import at_reference_points

__all__ = ["crps", "energy_score", "spread_skill", "rank_histogram", "reliability_index", "ensemble_scores"]

MEMBER = "member"


def _prepare(members: xr.DataArray, ref: xr.DataArray, member_dim: str = MEMBER):
    """Members at the reference's points as ``(points, m)``, the reference ``(points,)`` and weights."""
    if member_dim not in members.dims:
        members = members.expand_dims({member_dim: 1})
    members = members.squeeze([d for d in members.dims if d not in (member_dim, "lat", "lon")
                               and members.sizes[d] == 1], drop=True)
    ref = ref.squeeze([d for d in ref.dims if d not in ("lat", "lon") and ref.sizes[d] == 1], drop=True)
    members = at_reference_points(members, ref)
    try:
        members, ref = xr.align(members, ref, join="exact")
    except ValueError as exc:
        raise DataError(f"members and reference are on different coordinates: {exc}") from exc
    x = members.transpose("lat", "lon", member_dim).values.reshape(-1, members.sizes[member_dim])
    y = ref.transpose("lat", "lon").values.reshape(-1)
    w = np.broadcast_to(lat_weights(ref["lat"].values)[:, None], ref.transpose("lat", "lon").shape).reshape(-1)
    ok = np.isfinite(y) & np.isfinite(x).all(1)
    if not ok.any():
        raise DataError("no point where the reference and every member are finite")
    return x[ok].astype(np.float64), y[ok].astype(np.float64), w[ok]


def crps(members: xr.DataArray, ref: xr.DataArray, member_dim: str = MEMBER) -> float:
    """cos φ weighted mean of the fair CRPS (scoringrules); ``|x − y|`` for one member."""
    import scoringrules as sr

    x, y, w = _prepare(members, ref, member_dim)
    per = np.abs(x[:, 0] - y) if x.shape[1] == 1 else np.asarray(sr.crps_ensemble(y, x, m_axis=-1, estimator="fair"))
    return float(np.sum(w * per) / np.sum(w))


def energy_score(members: xr.DataArray, ref: xr.DataArray, member_dim: str = MEMBER) -> float:
    """Fair energy score of the whole map, points scaled by ``sqrt(w / Σw)`` (units of the variable)."""
    import scoringrules as sr

    x, y, w = _prepare(members, ref, member_dim)
    s = np.sqrt(w / w.sum())
    xs, ys = (x * s[:, None]).T, y * s  # (m, d), (d,)
    if xs.shape[0] == 1:
        return float(np.linalg.norm(xs[0] - ys))
    return float(np.asarray(sr.es_ensemble(ys[None], xs[None], m_axis=-2, v_axis=-1, estimator="fair"))[0])


def spread_skill(members: xr.DataArray, ref: xr.DataArray, member_dim: str = MEMBER) -> dict[str, float]:
    """``{"spread", "rmse", "ratio"}``: ensemble spread, RMSE of the ensemble mean and their corrected ratio."""
    x, y, w = _prepare(members, ref, member_dim)
    m = x.shape[1]
    if m < 2:
        raise DataError("spread–skill needs at least 2 members")
    wn = w / w.sum()
    spread = float(np.sqrt(np.sum(wn * x.var(axis=1, ddof=1))))
    rmse = float(np.sqrt(np.sum(wn * (x.mean(axis=1) - y) ** 2)))
    ratio = float(np.sqrt((m + 1) / m) * spread / rmse) if rmse > 0 else float("nan")
    return {"spread": spread, "rmse": rmse, "ratio": ratio}


def rank_histogram(members: xr.DataArray, ref: xr.DataArray, member_dim: str = MEMBER,
                   seed: int = 0) -> np.ndarray:
    """Counts of the reference's rank ``0..m`` among the members (xskillscore; ties broken at random)."""
    import xskillscore as xs

    x, y, _ = _prepare(members, ref, member_dim)
    fc = xr.DataArray(x, dims=("point", member_dim))
    ob = xr.DataArray(y, dims=("point",))
    state = np.random.get_state()
    np.random.seed(seed)  # xskillscore draws tie-breaks from numpy's global generator
    try:
        h = xs.rank_histogram(ob, fc, dim="point", member_dim=member_dim)
    finally:
        np.random.set_state(state)
    counts = np.zeros(x.shape[1] + 1, dtype=np.int64)
    ranks = np.asarray(h["rank"].values, dtype=int) - 1
    counts[ranks] = np.asarray(h.values, dtype=np.int64)
    return counts


def reliability_index(counts: np.ndarray) -> float:
    """Σ |f_k − 1/(m+1)| of a rank histogram's relative frequencies (0 = flat)."""
    c = np.asarray(counts, dtype=np.float64)
    if c.sum() <= 0:
        return float("nan")
    return float(np.abs(c / c.sum() - 1.0 / c.size).sum())


def ensemble_scores(members: xr.DataArray, ref: xr.DataArray, member_dim: str = MEMBER) -> dict:
    """Every probabilistic score of one variable: ``crps``, ``energy``, and for m ≥ 2 ``spread_skill``
    (dict) and ``rank_hist`` (counts as a list)."""
    out: dict = {"crps": crps(members, ref, member_dim), "energy": energy_score(members, ref, member_dim)}
    m = members.sizes.get(member_dim, 1)
    if m >= 2:
        out["spread_skill"] = spread_skill(members, ref, member_dim)
        out["rank_hist"] = rank_histogram(members, ref, member_dim).tolist()
    return out
