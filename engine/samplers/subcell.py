"""A climatological constraint on the sub-cell contrast: where the samples put a cell's heat.

UCG constrains the *mean* of x̂0 over every unified cell.  How that mean is shared among the cell's
pixels — land against sea, ridge against valley — is left to the prior, and with a biased or coarse GCM
the guided samples often share it wrongly (``benchmarks/results/bc_guidance_experiments_prior_v4.md``:
land 0.4–1.6 K too warm beside a coast at night, a warm strip along the Andes' slope).  The reference's
fine climatology of the same calendar month and UTC hour knows the usual split.  This term adds it as
one more, weaker observation:

.. math::

    m_{sc}(\\hat x_0) = \\big\\| W_c^{1/2} \\big( Q \\hat x_0 - Q\\, \\bar x^{clim} \\big) \\big\\|,
    \\qquad
    \\text{misfit} = \\sqrt{ m_{UCG}^2 + \\lambda^2 m_{sc}^2 }

where the rows of ``Q`` are, per unified cell, an orthonormal basis (over the cell's pixels) of the
cell-centred land fraction and elevation.  ``Q x`` is then the part of ``x``'s within-cell pattern that
a regression on land and elevation explains: the land–sea and lapse contrast of that cell.  Everything
else — the cell mean (UCG's), the day's fronts, storms and sub-cell detail not aligned with land or
terrain — stays the prior's.  ``λ`` (``subcell_weight``) sets how far a day may depart from its
climatological contrast; ``W_c`` is cos φ of the cell, mean 1.

Only variables with a climatology are constrained (``zssd-bc`` passes t2m's, see
:func:`zssd_engine.bias_correction.subcell_climatology`); the climatology comes from the same training
pairs as the bias correction, so no held-out time is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..grids import LatLonGrid, lat_weights
from .observation import Observation

__all__ = ["MIN_LAND_STD", "MIN_ELEV_STD_M", "cell_labels", "subcell_basis", "SubcellTerm", "SubcellObservation"]

#: A cell's land fraction varying less than this (std over its pixels) gives no land–sea row.
MIN_LAND_STD = 0.05
#: A cell's elevation varying less than this (m, std over its pixels) gives no elevation row.
MIN_ELEV_STD_M = 25.0


def cell_labels(fine: LatLonGrid, coarse: LatLonGrid) -> np.ndarray:
    """Index (row-major over ``coarse``) of the coarse cell holding each fine pixel's centre, ``(H, W)``.

    A centre on a cell edge (0.25° centres fall on every 2.5° and 5° edge) goes to the cell north / east of
    it; a clipped sliver of a cell at the region's edge may then hold no pixel.
    """
    latb = np.asarray(coarse.lat_bounds, dtype=np.float64)
    desc = latb[0] > latb[-1]
    lb = latb[::-1] if desc else latb
    ilat = np.clip(np.searchsorted(lb, fine.lat, side="right") - 1, 0, coarse.shape[0] - 1)
    if desc:
        ilat = coarse.shape[0] - 1 - ilat
    ilon = np.clip(np.searchsorted(coarse.lon_bounds, fine.lon, side="right") - 1, 0, coarse.shape[1] - 1)
    return ilat[:, None] * coarse.shape[1] + ilon[None, :]


def subcell_basis(fine: LatLonGrid, coarse: LatLonGrid, dem: np.ndarray,
                  land: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``Q`` ``(K, H·W)`` and the cos φ weight of each row's cell ``(K,)`` (mean 1).

    Per cell: the land fraction and the elevation, centred on the cell's pixels, each kept only if it
    varies (:data:`MIN_LAND_STD`, :data:`MIN_ELEV_STD_M`), then orthonormalised (QR).  The rows of one
    cell are orthonormal and orthogonal to the constant, and cells do not overlap, so ``Qᵀ Q`` is the
    orthogonal projection onto the land/terrain-aligned part of every cell's pattern.
    """
    labels = cell_labels(fine, coarse).ravel()
    feats = np.stack([np.asarray(land, np.float64).ravel(), np.asarray(dem, np.float64).ravel() / 1000.0], 1)
    mins = np.array([MIN_LAND_STD, MIN_ELEV_STD_M / 1000.0])
    cos = np.broadcast_to(lat_weights(fine.lat)[:, None], fine.shape).ravel()
    rows, weights = [], []
    npx = labels.size
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        f = feats[idx] - feats[idx].mean(0)
        keep = f.std(0) >= mins
        if not keep.any() or idx.size < 3:
            continue
        q, r = np.linalg.qr(f[:, keep])
        ok = np.abs(np.diag(r)) > 1e-6 * np.sqrt(idx.size)
        for k in np.flatnonzero(ok):
            row = np.zeros(npx)
            row[idx] = q[:, k]
            rows.append(row)
            weights.append(cos[idx].mean())
    if not rows:
        return np.zeros((0, npx)), np.zeros(0)
    w = np.asarray(weights)
    return np.stack(rows), w / max(float(w.mean()), 1e-12)


@dataclass(eq=False)
class SubcellTerm:
    """``λ ‖W_c^{1/2}(Q x̂0[c] − Q clim[c])‖`` over the constrained channels ``c`` (normalised units)."""

    q: torch.Tensor          # (K, H*W)
    target: torch.Tensor     # (len(channels), K): Q applied to each channel's normalised climatology
    channels: tuple[int, ...]
    weights: torch.Tensor    # (K,)
    weight: float            # λ

    @classmethod
    def build(cls, prior, fine: LatLonGrid, coarse: LatLonGrid, climatology: dict[str, np.ndarray],
              dem: np.ndarray, land: np.ndarray, weight: float) -> "SubcellTerm":
        """The term for ``climatology`` (variable → physical ``(H, W)`` field on ``fine``)."""
        q, w = subcell_basis(fine, coarse, dem, land)
        chans = tuple(prior.variables.index(v) for v in climatology if v in prior.variables)
        qt = torch.as_tensor(q, dtype=torch.float64)
        # Q is orthogonal to constants, so Q normalize(x) = Q x / std: only the scale matters.
        ones = torch.ones((1, len(prior.variables), 1, 1), device=prior.device)
        scale = (prior.normalize(ones) - prior.normalize(0 * ones))[0, :, 0, 0].detach().cpu().double().numpy()
        tgt = [qt @ torch.as_tensor(np.asarray(climatology[prior.variables[c]], np.float64).ravel() * scale[c])
               for c in chans]
        dev = prior.device
        target = torch.stack(tgt) if tgt else torch.zeros((0, q.shape[0]), dtype=torch.float64)
        return cls(qt.to(dev, torch.float32), target.to(dev, torch.float32), chans,
                   torch.as_tensor(w, dtype=torch.float32, device=dev), float(weight))

    def misfit(self, x0: torch.Tensor) -> torch.Tensor:
        """``‖W_c^{1/2}(Q x̂0[c] − target)‖`` per member ``(B,)`` (not yet multiplied by λ)."""
        if not self.channels or self.q.shape[0] == 0:
            return torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device)
        xs = x0[:, list(self.channels)].flatten(2)                 # (B, c, H*W)
        r = (xs @ self.q.T - self.target) * self.weights.sqrt()    # (B, c, K)
        return r.pow(2).flatten(1).sum(1)


class SubcellObservation(Observation):
    """UCG's observation plus a :class:`SubcellTerm`: ``misfit = sqrt(m_UCG² + λ² m_sc²)``."""

    def __init__(self, base: Observation, term: SubcellTerm) -> None:
        super().__init__(base.op, base.y, base.weights, base.description + f"; sub-cell climatology "
                         f"(λ {term.weight:g}, {len(term.channels)} variable(s), {term.q.shape[0]} rows)",
                         base.unguided, base.coarse_grid, dict(base.extra))
        self.subcell = term

    def misfit(self, x0: torch.Tensor) -> torch.Tensor:
        r = self.residual(x0)
        sc = self.subcell.misfit(x0) * self.subcell.weight ** 2
        return torch.sqrt(r.pow(2).flatten(1).sum(1) + sc + 1e-20)
