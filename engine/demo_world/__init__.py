"""The "demo world": a seeded, physically motivated stand-in for ERA5 at 0.25°.

No reanalysis can be had in this project's sandbox, so the embedded demo's
reference fields come from this generator.  Every view that shows them must
label them as synthetic (:data:`SOURCE_LABEL`).  Real ERA5 goes through
:mod:`zssd_engine.readers` instead.

The fields are pure functions of ``(seed, time, lat, lon)``: the same point
gets the same value whichever region it is evaluated in, and 6-hourly steps
are coherent because every ingredient evolves continuously in time.

Ingredients
-----------
* **Climatology** by latitude and day of year with hemispheric seasons; the
  seasonal amplitude grows with continentality (a smoothed real land
  fraction) and lags over the ocean; a diurnal cycle in *local solar time*
  whose amplitude follows the real 0.25° land fraction (sharp coastal
  gradients); cooling of −5.6 K/km on the real DEM (the effective surface lapse
  rate of ERA5's detail, weaker than the free air's 6.5 K/km); zonal-mean
  sea-level pressure belts and thermal lows/highs over land; over terrain, the
  imprint of reducing pressure to sea level with ECMWF's capped fictitious column
  (higher msl over warm high ground, as in ERA5).
* **Synoptic weather**: a random pressure field built from travelling,
  amplitude-modulated plane waves whose variance follows a kinetic-energy
  spectrum ∝ k⁻³ at synoptic scales and ∝ k^(−5/3) in the mesoscale
  (Nastrom–Gage), with Rossby-type retrogression of the longest waves; the
  10 m wind is its geostrophic wind turned toward low pressure by surface
  friction and weakened over land; temperature anomalies follow the
  meridional (thermal-advection) wind plus a mesoscale noise field.
* **Tropical cyclones**: seeded seasonal tracks in the real basins with
  Holland (1980) pressure and wind profiles (radius of maximum wind 18–55
  km), inflow angle, translation asymmetry and decay over land and cold water.

Modules
-------
* :mod:`.constants` — the train/held-out split (:data:`HELDOUT_YEARS`, :data:`TRAIN_YEARS`), the
  source label, physical constants and the realism calibration;
* :mod:`.waves` — the travelling plane waves and their spectra;
* :mod:`.tracks` — cyclone tracks, case studies and the Holland vortex;
* :mod:`.world` — :class:`DemoWorld` (fields, datasets, catalog) and the ingredients of its fields.

Every public name is importable from ``zssd_engine.demo_world``.
"""

from __future__ import annotations

from .constants import (EPOCH, HELDOUT_YEARS, LAPSE_RATE, MESO_MSL_PA, MESO_WIND_FACTOR, OMEGA, OUTER_LOW,
                        OUTER_LOW_RADIUS_M, OUTER_WIND, R_EARTH, RHO_AIR, SOURCE_LABEL, SYNOPTIC_SCALE,
                        TERRAIN_MSL_FACTOR, TERRAIN_MSL_SLOPE, TRAIN_YEARS)
from .tracks import Cyclone, CycloneCase
from .world import DemoWorld, check_training_time

__all__ = [
    "DemoWorld", "Cyclone", "CycloneCase", "HELDOUT_YEARS", "TRAIN_YEARS", "SOURCE_LABEL",
    "check_training_time", "LAPSE_RATE",
    "MESO_MSL_PA", "OUTER_LOW", "OUTER_LOW_RADIUS_M", "OUTER_WIND", "MESO_WIND_FACTOR", "SYNOPTIC_SCALE",
    "TERRAIN_MSL_FACTOR", "TERRAIN_MSL_SLOPE", "R_EARTH", "OMEGA", "RHO_AIR", "EPOCH",
]
