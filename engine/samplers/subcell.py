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

__all__ = ["MIN_LAND_STD", "MIN_ELEV_STD_M", "MIN_RELIEF_STD_M", "cell_labels", "SubcellBasis", "subcell_basis",
           "SubcellTerm", "SubcellObservation"]

#: A cell's land fraction varying less than this (std over its pixels) gives no land–sea row.
MIN_LAND_STD = 0.05
#: A cell's elevation varying less than this (m, std over its pixels) gives no elevation row.
MIN_ELEV_STD_M = 25.0
#: With ``terrain_order`` 2, a cell's elevation varying at least this much (m) also gives a curvature row.
MIN_RELIEF_STD_M = 150.0


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


@dataclass(frozen=True, eq=False)
class SubcellBasis:
    """``Q`` stored per pixel: every pixel belongs to one cell, and each cell has at most ``K`` rows (2 or 3).

    ``labels`` ``(H·W,)``: the pixel's cell (``0..n−1``); ``values`` ``(K, H·W)``: the pixel's entry in its
    cell's rows (0 where the cell has no such row); ``weights`` ``(K, n)``: cos φ of the
    cell for every row that exists (0 otherwise), mean 1 over the rows.  Memory grows with the pixels, not
    with pixels × rows as a dense ``Q`` would (a 64° box at 2.5°: hundreds of rows of 65 536 pixels).
    """

    labels: np.ndarray
    values: np.ndarray
    weights: np.ndarray

    @property
    def n_rows(self) -> int:
        return int(np.count_nonzero(self.weights))

    def coefficients(self, x: np.ndarray) -> np.ndarray:
        """``Q x`` as ``(K, n)`` (0 where a cell has no such row) for one field ``x`` ``(H·W,)``."""
        n = self.weights.shape[1]
        return np.stack([np.bincount(self.labels, v * x, minlength=n) for v in self.values])

    def dense(self) -> tuple[np.ndarray, np.ndarray]:
        """The rows of ``Q`` ``(K, H·W)`` and each row's weight ``(K,)`` (for inspection and tests)."""
        k, c = np.nonzero(self.weights)
        rows = np.where(self.labels[None, :] == c[:, None], self.values[k], 0.0)
        return rows, self.weights[k, c]


def subcell_basis(fine: LatLonGrid, coarse: LatLonGrid, dem: np.ndarray, land: np.ndarray,
                  terrain_order: int = 1) -> SubcellBasis:
    """``Q`` for ``fine``'s pixels grouped by ``coarse``'s cells, with the cos φ weight of each row (mean 1).

    Per cell: the land fraction and the elevation, centred on the cell's pixels, each kept only if it
    varies (:data:`MIN_LAND_STD`, :data:`MIN_ELEV_STD_M`), then orthonormalised (QR).  The rows of one
    cell are orthonormal and orthogonal to the constant, and cells do not overlap, so ``Qᵀ Q`` is the
    orthogonal projection onto the land/terrain-aligned part of every cell's pattern.

    ``terrain_order`` 2 adds, in cells whose elevation varies by at least :data:`MIN_RELIEF_STD_M`, the
    square of the cell-centred elevation: a temperature that is not linear in height (a warm slope above a
    cool marine layer, a cold valley floor under a night-time inversion).
    """
    if terrain_order not in (1, 2):
        raise ValueError(f"terrain_order must be 1 (land, elevation) or 2 (also elevation²), got {terrain_order!r}")
    cells, labels = np.unique(cell_labels(fine, coarse).ravel(), return_inverse=True)
    elev = np.asarray(dem, np.float64).ravel() / 1000.0
    feats = [np.asarray(land, np.float64).ravel(), elev]
    mins = [MIN_LAND_STD, MIN_ELEV_STD_M / 1000.0]
    if terrain_order == 2:  # the elevation again: centred and squared per cell below
        feats.append(elev)
        mins.append(MIN_RELIEF_STD_M / 1000.0)
    feats, mins = np.stack(feats, 1), np.asarray(mins)
    cos = np.broadcast_to(lat_weights(fine.lat)[:, None], fine.shape).ravel()
    values = np.zeros((len(mins), labels.size))
    weights = np.zeros((len(mins), cells.size))
    for c in range(cells.size):
        idx = np.flatnonzero(labels == c)
        f = feats[idx] - feats[idx].mean(0)
        keep = f.std(0) >= mins
        if terrain_order == 2:  # (h − h̄)², centred: the cell's curvature in height
            f[:, 2] = f[:, 2] ** 2 - (f[:, 2] ** 2).mean()
        if not keep.any() or idx.size < 3:
            continue
        q, r = np.linalg.qr(f[:, keep])
        ok = np.flatnonzero(np.abs(np.diag(r)) > 1e-6 * np.sqrt(idx.size))
        for row, k in enumerate(ok):  # a cell's rows fill slots 0, 1, … in order
            values[row, idx] = q[:, k]
            weights[row, c] = cos[idx].mean()
    if weights.any():
        weights /= max(float(weights[weights > 0].mean()), 1e-12)
    return SubcellBasis(labels, values, weights)


@dataclass(eq=False)
class SubcellTerm:
    """``λ ‖W_c^{1/2}(Q x̂0[c] − Q clim[c])‖`` over the constrained channels ``c`` (normalised units)."""

    labels: torch.Tensor     # (H*W,) cell of each pixel (:class:`SubcellBasis`)
    values: torch.Tensor     # (K, H*W) each pixel's entry in its cell's K rows
    target: torch.Tensor     # (len(channels), K, n): Q applied to each channel's normalised climatology
    channels: tuple[int, ...]
    weights: torch.Tensor    # (K, n), 0 where a cell has no such row
    weight: float            # λ

    @classmethod
    def build(cls, prior, fine: LatLonGrid, coarse: LatLonGrid, climatology: dict[str, np.ndarray],
              dem: np.ndarray, land: np.ndarray, weight: float, terrain_order: int = 1) -> "SubcellTerm":
        """The term for ``climatology`` (variable → physical ``(H, W)`` field on ``fine``)."""
        basis = subcell_basis(fine, coarse, dem, land, terrain_order)
        chans = tuple(prior.variables.index(v) for v in climatology if v in prior.variables)
        # Q is orthogonal to constants, so Q normalize(x) = Q x / std: only the scale matters.
        ones = torch.ones((1, len(prior.variables), 1, 1), device=prior.device)
        scale = (prior.normalize(ones) - prior.normalize(0 * ones))[0, :, 0, 0].detach().cpu().double().numpy()
        tgt = [basis.coefficients(np.asarray(climatology[prior.variables[c]], np.float64).ravel() * scale[c])
               for c in chans]
        target = np.stack(tgt) if tgt else np.zeros((0, *basis.weights.shape))
        dev = prior.device
        return cls(torch.as_tensor(basis.labels, dtype=torch.long, device=dev),
                   torch.as_tensor(basis.values, dtype=torch.float32, device=dev),
                   torch.as_tensor(target, dtype=torch.float32, device=dev), chans,
                   torch.as_tensor(basis.weights, dtype=torch.float32, device=dev), float(weight))

    @property
    def n_rows(self) -> int:
        return int(torch.count_nonzero(self.weights))

    def misfit(self, x0: torch.Tensor) -> torch.Tensor:
        """``‖W_c^{1/2}(Q x̂0[c] − target)‖²`` per member ``(B,)`` (not yet multiplied by λ²)."""
        if not self.channels or self.n_rows == 0:
            return torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device)
        xs = x0[:, list(self.channels)].flatten(2)[:, :, None, :] * self.values  # (B, c, K, H*W)
        coeff = xs.new_zeros((*xs.shape[:3], self.weights.shape[1])).index_add_(3, self.labels, xs)
        r = (coeff - self.target) * self.weights.sqrt()                          # (B, c, K, n)
        return r.pow(2).flatten(1).sum(1)


class SubcellObservation(Observation):
    """UCG's observation plus a :class:`SubcellTerm`: ``misfit = sqrt(m_UCG² + λ² m_sc²)``."""

    def __init__(self, base: Observation, term: SubcellTerm) -> None:
        super().__init__(base.op, base.y, base.weights, base.description + f"; sub-cell climatology "
                         f"(λ {term.weight:g}, {len(term.channels)} variable(s), {term.n_rows} rows)",
                         base.unguided, base.coarse_grid, dict(base.extra))
        self.subcell = term

    def misfit(self, x0: torch.Tensor) -> torch.Tensor:
        r = self.residual(x0)
        sc = self.subcell.misfit(x0) * self.subcell.weight ** 2
        return torch.sqrt(r.pow(2).flatten(1).sum(1) + sc + 1e-20)
