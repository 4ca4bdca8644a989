"""Constants of the demo world: the train/held-out split, the source label, physics and realism calibration."""

from __future__ import annotations

import pandas as pd

__all__ = [
    "HELDOUT_YEARS", "TRAIN_YEARS", "SOURCE_LABEL", "LAPSE_RATE", "MESO_MSL_PA", "OUTER_LOW", "OUTER_LOW_RADIUS_M",
    "OUTER_WIND", "MESO_WIND_FACTOR", "SYNOPTIC_SCALE", "TERRAIN_MSL_FACTOR", "R_EARTH", "OMEGA", "RHO_AIR", "EPOCH",
]

#: Years the prior never trains on (evaluation and demo cases only).
HELDOUT_YEARS: tuple[int, ...] = (2021, 2022, 2023)
#: Years the prior's training stream draws from.
TRAIN_YEARS: tuple[int, ...] = tuple(range(1991, 2021))
SOURCE_LABEL = "ZSSD demo world (synthetic stand-in for ERA5, seeded)"
LAPSE_RATE = -6.5e-3  # K per m
#: Amplitude (Pa) of the mesoscale sea-level pressure field (realism calibration, see benchmarks/realism.py).
MESO_MSL_PA = 300.0
#: Share of a cyclone's central pressure deficit in its broad outer low, and that low's e-folding radius.
OUTER_LOW = 0.17
OUTER_LOW_RADIUS_M = 7.0e5
OUTER_WIND = 0.45
#: Fraction of the mesoscale pressure field's geostrophic wind that the 10 m wind carries.
MESO_WIND_FACTOR = 0.11
#: Amplitude factor of the synoptic pressure waves (1.0 before the realism calibration).
SYNOPTIC_SCALE = 1.4
#: Fraction of the sea-level reduction's temperature dependence kept over terrain.
TERRAIN_MSL_FACTOR = 0.5

R_EARTH = 6.371e6
OMEGA = 7.292e-5
RHO_AIR = 1.15
EPOCH = pd.Timestamp("2000-01-01")
