"""CF readers for ERA5 and CMIP5/CMIP6 files (xarray in, xarray out).

Every reader returns an :class:`xarray.Dataset` with

* our variable names ``t2m, msl, u10, v10`` (:data:`zssd_engine.variables.VARIABLES`),
* coordinates named ``time``, ``lat``, ``lon`` (latitude order as in the file),
* canonical units ``K``, ``Pa``, ``m s-1`` (convertible units are converted and
  the conversion is recorded in the variable's ``units_note`` attribute),
* values checked against a physical range,

and raises :class:`zssd_engine.errors.DataError` with a message naming the file,
the variable, the unit and the range when something is wrong.

CMIP times are decoded with cftime for every calendar (``noleap``,
``360_day``, ``proleptic_gregorian``, ``standard`` …), so
:func:`select_time` accepts dates such as ``2005-02-30`` in a 360-day file.

Modules: :mod:`~zssd_engine.readers.era5` (:func:`open_era5`), :mod:`~zssd_engine.readers.cmip`
(:func:`open_cmip`, :func:`open_mpi_esm_lr`), :mod:`~zssd_engine.readers.times` (:func:`select_time`)
and :mod:`~zssd_engine.readers.checks` (units, physical ranges, coordinates).
"""

from __future__ import annotations

from .checks import PHYSICAL_RANGES, check_range, standardize_units
from .cmip import MPI_ESM_LR_FILES, assets_gcm_dir, open_cmip, open_mpi_esm_lr
from .era5 import open_era5
from .times import select_time

__all__ = [
    "PHYSICAL_RANGES",
    "open_era5",
    "open_cmip",
    "open_mpi_esm_lr",
    "select_time",
    "standardize_units",
    "check_range",
    "MPI_ESM_LR_FILES",
    "assets_gcm_dir",
]
