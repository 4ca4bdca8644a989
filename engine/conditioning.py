"""Conditioning inputs of the prior, shared by training and sampling.

* Static/spatial channels (input channels of the U-Net): normalised elevation,
  land fraction, sin/cos latitude, sin/cos longitude and sin/cos local solar
  hour (the last pair lets a fully convolutional network place the diurnal
  cycle without knowing where its crop lies).
* Cyclic time features (tokens for cross-attention): sin/cos of month, day of
  year and UTC hour — the paper's month/day/hour embeddings.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .grids import LatLonGrid

__all__ = ["STATIC_CHANNELS", "TIME_FEATURES", "static_channels", "time_features", "to_timestamp"]

STATIC_CHANNELS: tuple[str, ...] = (
    "elevation_km", "land_fraction", "sin_lat", "cos_lat", "sin_lon", "cos_lon", "sin_lst", "cos_lst")
TIME_FEATURES: tuple[str, ...] = ("sin_month", "cos_month", "sin_doy", "cos_doy", "sin_hour", "cos_hour")


def to_timestamp(t) -> pd.Timestamp:
    """Any time-like (ISO string, datetime, numpy datetime64, cftime) → naive UTC ``pd.Timestamp``."""
    if hasattr(t, "strftime") and type(t).__module__.startswith("cftime"):
        t = t.strftime("%Y-%m-%dT%H:%M:%S")
    ts = pd.Timestamp(t)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts


def _hour(ts: pd.Timestamp) -> float:
    return ts.hour + ts.minute / 60.0 + ts.second / 3600.0


def static_channels(grid: LatLonGrid, dem_m: np.ndarray, land: np.ndarray, time) -> np.ndarray:
    """Spatial conditioning channels, float32 ``(len(STATIC_CHANNELS), nlat, nlon)``."""
    ts = to_timestamp(time)
    lat = np.deg2rad(grid.lat)[:, None] * np.ones((1, grid.lon.size))
    lon = np.deg2rad(grid.lon)[None, :] * np.ones((grid.lat.size, 1))
    lst = 2 * np.pi * ((_hour(ts) + np.rad2deg(lon) / 15.0) % 24.0) / 24.0
    ch = [np.asarray(dem_m, dtype=np.float64) / 1000.0, np.asarray(land, dtype=np.float64),
          np.sin(lat), np.cos(lat), np.sin(lon), np.cos(lon), np.sin(lst), np.cos(lst)]
    return np.stack(ch).astype(np.float32)


def time_features(times: Sequence | object) -> np.ndarray:
    """Cyclic time embedding, float32 ``(n, len(TIME_FEATURES))``."""
    if isinstance(times, (str, pd.Timestamp)) or not isinstance(times, Sequence):
        times = [times]
    out = []
    for t in times:
        ts = to_timestamp(t)
        m = 2 * np.pi * (ts.month - 1 + (ts.day - 1) / ts.days_in_month) / 12.0
        d = 2 * np.pi * (ts.day_of_year - 1 + _hour(ts) / 24.0) / 365.25
        h = 2 * np.pi * _hour(ts) / 24.0
        out.append([np.sin(m), np.cos(m), np.sin(d), np.cos(d), np.sin(h), np.cos(h)])
    return np.asarray(out, dtype=np.float32)
