"""Reference downscaling baselines: bilinear interpolation, bilinear + lapse rate, and BCSD.

One module per method (the classical entries of :data:`zssd_engine.methods.METHODS`):

* :mod:`zssd_engine.baselines.interpolation` — :func:`bilinear_downscale`, NaN-aware bilinear
  interpolation of the coarse field onto the fine grid (what every downscaling method must beat).
* :mod:`zssd_engine.baselines.lapse` — :func:`lapse_rate_downscale`: bilinear plus, for ``t2m``, a
  fixed lapse rate (:data:`STANDARD_LAPSE_RATE`, −6.5 K/km) times the fine elevation detail.
* :mod:`zssd_engine.baselines.bcsd` — :class:`BCSD`, Bias Correction and Spatial Disaggregation
  (Wood et al. 2004; Maurer & Hidalgo 2008; Thrasher et al. 2012) with xsdba's API,
  ``BCSD().train(ref, hist)`` then ``.adjust(sim)``; its array numerics (empirical quantiles,
  quantile mapping, detrending, disaggregation) are :mod:`zssd_engine.baselines.quantile_mapping`.

All are pure NumPy (vectorised over cells) at the core with xarray at the edge.
"""

from __future__ import annotations

from .bcsd import BCSD
from .interpolation import bilinear_downscale
from .lapse import STANDARD_LAPSE_RATE, lapse_rate_downscale
from .quantile_mapping import cunnane_quantiles, quantile_nodes

__all__ = ["bilinear_downscale", "lapse_rate_downscale", "STANDARD_LAPSE_RATE", "BCSD", "cunnane_quantiles",
           "quantile_nodes"]
