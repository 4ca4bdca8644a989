"""The demo world's generator: :class:`DemoWorld` and the ingredients of its fields.

:meth:`DemoWorld.fields` composes, on a sub-grid of the ERA5 0.25° grid at one time, the
climatology (:func:`_climatology`), the synoptic and mesoscale weather with its geostrophic,
friction-turned wind (:func:`_synoptic`), the mean circulation (:func:`_surface_wind`), the
temperature weather and the sea-level reduction (:func:`_temperature_and_msl`) and the active
cyclones (:func:`zssd_engine.demo_world.tracks.add_cyclone`).  See :mod:`zssd_engine.demo_world`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd

from ..conditioning import to_timestamp
from ..grids import LatLonGrid, Region, era5_grid, wrap_lon
from ..statics import Statics, load_statics
from ..variables import VARIABLE_INFO, VARIABLES
from .constants import (EPOCH, FRICTION_LAND, FRICTION_SEA, HELDOUT_YEARS, LAPSE_RATE, MESO_MSL_LAND, MESO_MSL_PA,
                        MESO_MSL_SEA, MESO_WIND_FACTOR, OMEGA, R_EARTH, RHO_AIR, ROUGH_WIND, SOURCE_LABEL,
                        STORM_TRACK_KM, SYNOPTIC_OCEAN, SYNOPTIC_SCALE, T_ADVECTION, T_NOISE_LAND, T_NOISE_SEA,
                        TERRAIN_MSL_FACTOR, TERRAIN_MSL_SLOPE, TRAIN_YEARS, W_NOISE_LAND, W_NOISE_SEA)
from .tracks import Cyclone, CycloneCase, _generate_cyclones, add_cyclone
from .waves import _make_modes, _meso_pressure_spectrum, _meso_spectrum, _pressure_spectrum

__all__ = ["DemoWorld", "check_training_time"]


def check_training_time(t) -> pd.Timestamp:
    """Raise ``ValueError`` if ``t`` falls in a held-out year (the train/test split, enforced)."""
    ts = to_timestamp(t)
    if ts.year in HELDOUT_YEARS:
        raise ValueError(f"time {ts.isoformat()} is in a held-out demo year {HELDOUT_YEARS}; training must never see it")
    return ts


# --------------------------------------------------------------------- ingredients
def _gauss(x: np.ndarray, mu: float, sd: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mu) / sd) ** 2)


def _smooth_sign(lat_deg: np.ndarray, width: float = 8.0) -> np.ndarray:
    return np.tanh(np.asarray(lat_deg) / width)


@dataclass(frozen=True, eq=False)
class _Frame:
    """What every ingredient needs of the grid and the time (angles in radians unless ``_d``)."""

    t_days: float           # days since EPOCH
    hour: float             # UTC hour of day (with minutes)
    lat_d: np.ndarray       # (nlat,) degrees
    lat: np.ndarray         # (nlat,)
    lon: np.ndarray         # (nlon,)
    lat2: np.ndarray        # (nlat, nlon) degrees
    dem: np.ndarray
    land: np.ndarray
    cont: np.ndarray        # continentality (smoothed land fraction)
    cont_dlat: np.ndarray   # ∂cont/∂φ (per radian)
    cont_dlon: np.ndarray   # ∂cont/∂λ (per radian)
    s: np.ndarray           # sin φ, (nlat, 1)
    sgn: np.ndarray         # smooth hemisphere sign
    absl: np.ndarray        # |latitude| in degrees
    year_phase: float       # 2π x day of year / 365.25


def _frame(grid: LatLonGrid, ts: pd.Timestamp, statics: Statics,
           cont_global: tuple[np.ndarray, np.ndarray, np.ndarray]) -> _Frame:
    lat_d = grid.lat
    lat = np.deg2rad(lat_d)
    lon = np.deg2rad(grid.lon)
    lat2 = lat_d[:, None] * np.ones((1, lon.size))
    dem, land = statics.region(grid)
    li = np.rint((90.0 - lat_d) / 0.25).astype(int)
    lo = np.rint(np.mod(grid.lon, 360.0) / 0.25).astype(int) % 1440
    doy = ts.day_of_year - 1 + (ts.hour + ts.minute / 60) / 24.0
    ix = np.ix_(li, lo)
    return _Frame(t_days=(ts - EPOCH) / pd.Timedelta(days=1), hour=ts.hour + ts.minute / 60.0, lat_d=lat_d,
                  lat=lat, lon=lon, lat2=lat2, dem=dem, land=land, cont=cont_global[0][ix],
                  cont_dlat=cont_global[1][ix], cont_dlon=cont_global[2][ix],
                  s=np.sin(lat)[:, None], sgn=_smooth_sign(lat2), absl=np.abs(lat2),
                  year_phase=2 * np.pi * doy / 365.25)


@dataclass(frozen=True, eq=False)
class _Climate:
    t_annual: np.ndarray
    t_season: np.ndarray
    t_diurnal: np.ndarray
    t_lapse: np.ndarray
    p_clim: np.ndarray
    p_thermal: np.ndarray


def _climatology(f: _Frame) -> _Climate:
    """Temperature (K) and sea-level pressure (Pa) climatology: seasons, diurnal cycle, lapse rate, belts."""
    s, sgn, cont, land, lat2, absl = f.s, f.sgn, f.cont, f.land, f.lat2, f.absl
    t_annual = 299.5 - 44.0 * s ** 2 - 6.0 * s ** 4 * (lat2 < 0)
    amp_ocean = 1.0 + 6.5 * np.abs(s) ** 1.5
    amp_land = 2.0 + 19.0 * np.abs(s) ** 1.2
    season_land = np.cos(f.year_phase - 2 * np.pi * 200 / 365.25)
    season_ocean = np.cos(f.year_phase - 2 * np.pi * 228 / 365.25)
    t_season = sgn * ((1 - cont) * amp_ocean * season_ocean + cont * amp_land * season_land)
    lst = (f.hour + np.rad2deg(f.lon)[None, :] / 15.0) % 24.0
    diurnal_amp = (0.3 + 4.8 * land) * (0.55 + 0.45 * np.cos(f.lat))[:, None] * (1 + 0.25 * sgn * season_land)
    t_diurnal = diurnal_amp * np.cos(2 * np.pi * (lst - 15.0) / 24.0)
    t_lapse = LAPSE_RATE * f.dem
    sh = lat2 < 0
    p_clim = (101100.0 + 900.0 * _gauss(absl, 32.0, 9.0)
              + 500 * sgn * np.cos(f.year_phase - 0.2) * _gauss(absl, 32, 9)
              - np.where(sh, 1800.0, 700.0) * _gauss(absl, 62.0, 9.0) - 300.0 * _gauss(lat2, 5.0, 10.0))
    p_thermal = -55.0 * cont * (t_season - sgn * amp_ocean * season_ocean)  # thermal lows/highs over continents
    return _Climate(t_annual, t_season, t_diurnal, t_lapse, p_clim, p_thermal)


def _synoptic(f: _Frame, p_modes: tuple, pm_modes) -> tuple[np.ndarray, ...]:
    """``(p_syn, p_meso, ua, va, vg_syn)``: travelling pressure waves (Pa), their friction-turned
    geostrophic 10 m wind, and the synoptic meridional geostrophic wind that drives thermal advection."""
    lat, lat_d, land = f.lat, f.lat_d, f.land
    # amplitude envelope: weak in the tropics, strongest in the storm tracks, tapered toward the poles
    # (where the zonal plane waves would otherwise shrink to grid scale)
    polar = np.exp(-np.clip(np.abs(lat_d) - 62.0, 0.0, None) ** 2 / (2 * 9.0 ** 2))
    d_polar = -np.clip(np.abs(lat_d) - 62.0, 0.0, None) / 9.0 ** 2 * np.sign(lat_d) * polar * 180 / np.pi
    env_p = SYNOPTIC_SCALE * (250.0 + 1250.0 * np.sin(lat) ** 2) * polar
    d_env_p = SYNOPTIC_SCALE * (2500.0 * np.sin(lat) * np.cos(lat) * polar
                                + (250.0 + 1250.0 * np.sin(lat) ** 2) * d_polar)
    # the storm tracks are oceanic: waves longer than STORM_TRACK_KM are (1 + SYNOPTIC_OCEAN) times
    # stronger far from land (realism.py: open-ocean msl power at 1000-2000 km 0.54 of ERA5's)
    ocean_f = 1.0 + SYNOPTIC_OCEAN * (1.0 - f.cont)
    g0, g_lat, g_lon = p_modes[0].evaluate(lat, f.lon, f.t_days, derivatives=True)   # long waves
    h0, h_lat, h_lon = p_modes[1].evaluate(lat, f.lon, f.t_days, derivatives=True)   # short waves
    # the field and its derivatives (product rule on ocean_f: ∂ocean_f = −SYNOPTIC_OCEAN ∂cont)
    f0 = ocean_f * g0 + h0
    f_lat = ocean_f * g_lat + h_lat - SYNOPTIC_OCEAN * f.cont_dlat * g0
    f_lon = ocean_f * g_lon + h_lon - SYNOPTIC_OCEAN * f.cont_dlon * g0
    p_syn = env_p[:, None] * f0
    # mesoscale pressure (fronts, troughs, convective systems): realism.py measured the demo world's
    # msl power at 100-1000 km at 3-17 % of ERA5/TIGGE; this field adds it, and its geostrophic wind
    env_m = (MESO_MSL_PA * (0.6 + 0.4 * np.abs(np.sin(lat)))[:, None]
             * (MESO_MSL_SEA + (MESO_MSL_LAND - MESO_MSL_SEA) * f.cont))
    pm, pm_lat, pm_lon = pm_modes.evaluate(lat, f.lon, f.t_days, derivatives=True)
    p_meso = env_m * pm
    # mesoscale flow is far from geostrophic: only MESO_WIND_FACTOR of its geostrophic wind is added
    dp_dlat = d_env_p[:, None] * f0 + env_p[:, None] * f_lat + MESO_WIND_FACTOR * env_m * pm_lat
    dp_dlon = env_p[:, None] * f_lon + MESO_WIND_FACTOR * env_m * pm_lon
    # geostrophic wind with a tropical taper: u = -(1/ρf) ∂p/∂y, v = (1/ρf) ∂p/∂x, 1/f → g(φ)/f
    f_cor = 2 * OMEGA * np.sin(lat)[:, None]
    taper = np.sin(lat)[:, None] ** 2 / (np.sin(lat)[:, None] ** 2 + np.sin(np.deg2rad(14.0)) ** 2)
    inv_f = np.where(np.abs(f_cor) > 1e-12, taper / np.where(np.abs(f_cor) > 1e-12, f_cor, 1.0), 0.0)
    coslat = np.maximum(np.cos(lat), 0.25)[:, None]
    ug = -inv_f / RHO_AIR * dp_dlat / R_EARTH
    vg = inv_f / RHO_AIR * dp_dlon / (R_EARTH * coslat)
    vg_syn = vg - inv_f / RHO_AIR * MESO_WIND_FACTOR * env_m * pm_lon / (R_EARTH * coslat)  # drives advection
    # surface friction: turn toward low pressure (anticlockwise in NH) and weaken, more over land
    alpha = np.deg2rad(18.0 + 17.0 * land) * f.sgn
    # weaker over land and, by the drag of sub-grid orography, over high ground (ERA5's 10 m wind
    # detail over mountains follows the terrain: realism.py, "explained by elevation")
    red = FRICTION_SEA - FRICTION_LAND * land - ROUGH_WIND * np.clip(f.dem / 1500.0, 0.0, 1.0)
    ua = red * (ug * np.cos(alpha) - vg * np.sin(alpha))
    va = red * (ug * np.sin(alpha) + vg * np.cos(alpha))
    return p_syn, p_meso, ua, va, vg_syn


def _surface_wind(f: _Frame, w_modes, ua: np.ndarray, va: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """10 m wind (m/s): the mean circulation (trades, westerlies, polar easterlies) + ``ua, va`` + noise."""
    absl, sgn, land = f.absl, f.sgn, f.land
    u_mean = (-6.5 * _gauss(absl, 14.0, 8.0) + 7.5 * _gauss(absl, 48.0, 10.0) - 3.0 * _gauss(absl, 70.0, 6.0))
    v_mean = -2.0 * sgn * _gauss(absl, 14.0, 7.0)
    red_mean = 0.95 - 0.40 * land - 0.10 * np.clip(f.dem / 2000.0, 0, 1)
    m0, = w_modes.evaluate(f.lat, f.lon, f.t_days)
    m1, = w_modes.evaluate(f.lat + 0.37, f.lon + 0.61, f.t_days + 3.3)
    noise_amp = W_NOISE_SEA + (W_NOISE_LAND - W_NOISE_SEA) * land
    u10 = red_mean * u_mean + ua + noise_amp * m0
    v10 = red_mean * v_mean + va + noise_amp * m1
    return u10, v10


def _temperature_and_msl(f: _Frame, c: _Climate, t_modes, vg_syn: np.ndarray, p_syn: np.ndarray,
                         p_meso: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """t2m (K): climatology + thermal advection ∝ the meridional geostrophic wind + mesoscale noise;
    msl (Pa): climatology + weather + the sea-level reduction over terrain."""
    adv = np.clip(T_ADVECTION * f.sgn * vg_syn * (0.3 + 0.7 * np.abs(f.s)) * (1 + 0.5 * f.cont), -14.0, 14.0)
    tn, = t_modes.evaluate(f.lat, f.lon, f.t_days)
    t_noise = T_NOISE_SEA + (T_NOISE_LAND - T_NOISE_SEA) * f.land
    t2m = c.t_annual + c.t_season + c.t_diurnal + c.t_lapse + adv + t_noise * tn
    msl_terrain = _reduction_offset(f.dem, c.t_annual + c.t_season + c.t_lapse)
    msl = c.p_clim + c.p_thermal + p_syn + p_meso + msl_terrain
    return t2m, msl


def _reduction_offset(z: np.ndarray, t_star: np.ndarray) -> np.ndarray:
    """What reducing the surface pressure to sea level adds to msl over terrain (Pa).

    The world's true air below the surface warms downwards at the free atmosphere's 6.5 K/km from ``t_star``
    (the surface temperature; along the terrain it falls only by LAPSE_RATE, the weaker surface lapse rate).
    A reanalysis reduces with a fictitious column instead: ECMWF's rule
    (Trenberth, Berry & Buja 1993, NCAR TN-396) extrapolates at 6.5 K/km but caps the sea-level
    temperature at 290.5 K, so over warm terrain its column is colder than the true one and msl comes
    out higher.  realism-style regressions of ERA5's sub-5° msl detail on the elevation detail
    (real week's tuning times; ``benchmarks/results/demo_world_msl_terrain.md``) give +2.0 to +2.9 hPa
    per km where the sea-level extrapolated temperature T0 exceeds 300 K and +0.2 to +0.8 hPa per km
    where it is below 291 K; the previous term (a cold-column excess) gave −2.1 to −0.4 and +0.4 to +3.5.

    ``TERRAIN_MSL_FACTOR`` scales the capped-column term; ``TERRAIN_MSL_SLOPE`` (Pa per m) adds the
    part ERA5 shows over cool terrain as well.
    """
    z = np.maximum(z, 0.0)
    t_true = t_star + 3.25e-3 * z                      # mean of the true (free-air, 6.5 K/km) column
    t0 = t_star + 6.5e-3 * z                           # sea-level temperature at the standard lapse rate
    t_fict = np.where(t0 <= 290.5, t_true, 0.5 * (290.5 + t_star))  # the capped column's mean
    g_over_r = 9.80665 / 287.0
    capped = 101325.0 * np.expm1(g_over_r * z * (1.0 / t_fict - 1.0 / t_true))
    return TERRAIN_MSL_FACTOR * capped + TERRAIN_MSL_SLOPE * z


# ---------------------------------------------------------------------- world
@dataclass(eq=False)
class DemoWorld:
    """Seeded synthetic reanalysis on the ERA5 0.25° grid (see module docstring)."""

    seed: int = 0
    statics: Statics | None = None
    n_pressure_modes: int = 640
    n_meso_modes: int = 256
    _cont: tuple = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.statics is None:
            self.statics = load_statics()
        rng = np.random.default_rng([self.seed, 1])
        self._p_modes = _make_modes(rng, self.n_pressure_modes, 90.0, 14000.0, _pressure_spectrum,
                                    speed=8.0, beta_drift=True, tau_days=4.0).split(STORM_TRACK_KM)
        self._t_modes = _make_modes(rng, self.n_meso_modes, 60.0, 1500.0, _meso_spectrum,
                                    speed=6.0, beta_drift=False, tau_days=2.0)
        self._w_modes = _make_modes(rng, self.n_meso_modes, 200.0, 1200.0, _meso_spectrum,
                                    speed=6.0, beta_drift=False, tau_days=1.0)
        # drawn last, so the modes above are the same as before this ingredient was added
        self._pm_modes = _make_modes(np.random.default_rng([self.seed, 3]), self.n_meso_modes, 150.0, 3000.0,
                                     _meso_pressure_spectrum, speed=7.0, beta_drift=False, tau_days=2.0)
        self._cont = _continentality(self.statics)
        self._cyclone_cache: dict[int, list[Cyclone]] = {}

    # ------------------------------------------------------------- cyclones
    def cyclones(self, year: int) -> list[Cyclone]:
        if year not in self._cyclone_cache:
            self._cyclone_cache[year] = _generate_cyclones(self.seed, int(year), self.statics.land)
        return self._cyclone_cache[year]

    def active_cyclones(self, t) -> list[tuple[Cyclone, tuple]]:
        ts = to_timestamp(t)
        out = []
        for y in (ts.year - 1, ts.year):
            for c in self.cyclones(y):
                s = c.state(ts)
                if s is not None:
                    out.append((c, s))
        return out

    def catalog(self, years: Iterable[int] = HELDOUT_YEARS, min_wind: float = 25.0) -> list[CycloneCase]:
        """Case studies at each cyclone's peak (held-out years by default), sorted by time."""
        cases = []
        for y in years:
            for c in self.cyclones(y):
                i = c.peak_index
                v10 = 0.8 * c.max_wind(i)
                if v10 < min_wind or c.times[i].year != y:
                    continue
                lon = float(wrap_lon(c.lon[i], -180.0))
                cases.append(CycloneCase(c.name, c.basin, c.times[i], float(c.lat[i]), lon, v10,
                                         float(101000.0 - c.dp[i]), Region.around(float(c.lat[i]), lon, 32.0)))
        return sorted(cases, key=lambda k: k.peak_time)

    def case(self, name: str) -> CycloneCase:
        for y in HELDOUT_YEARS + TRAIN_YEARS:
            for c in self.catalog([y], min_wind=0.0):
                if c.name == name:
                    return c
        raise KeyError(f"no demo cyclone named {name!r}; `zssd cases` lists them")

    # --------------------------------------------------------------- fields
    def fields(self, time, where: Region | LatLonGrid, cyclone_scale: float = 1.0) -> dict[str, np.ndarray]:
        """t2m (K), msl (Pa), u10, v10 (m/s) as float32 ``(nlat, nlon)`` on the ERA5 sub-grid.

        ``cyclone_scale`` scales every cyclone's pressure deficit (pseudo-GCMs use < 1).
        """
        grid = where if isinstance(where, LatLonGrid) else era5_grid().select(where)[0]
        ts = to_timestamp(time)
        f = _frame(grid, ts, self.statics, self._cont)
        clim = _climatology(f)
        p_syn, p_meso, ua, va, vg_syn = _synoptic(f, self._p_modes, self._pm_modes)
        u10, v10 = _surface_wind(f, self._w_modes, ua, va)
        t2m, msl = _temperature_and_msl(f, clim, self._t_modes, vg_syn, p_syn, p_meso)
        for cyc, state in self.active_cyclones(ts):  # tropical cyclones (Holland 1980)
            t2m, msl, u10, v10 = add_cyclone(cyc, state, f.lat_d, grid.lon, f.land, t2m, msl, u10, v10,
                                             cyclone_scale)
        return {"t2m": t2m.astype(np.float32), "msl": msl.astype(np.float32),
                "u10": u10.astype(np.float32), "v10": v10.astype(np.float32)}

    def dataset(self, time, where: Region | LatLonGrid, variables: Iterable[str] = VARIABLES):
        """The fields as an ``xarray.Dataset`` with CF attributes and an honest source label."""
        import xarray as xr

        grid = where if isinstance(where, LatLonGrid) else era5_grid().select(where)[0]
        times = [to_timestamp(t) for t in (time if isinstance(time, (list, tuple, pd.DatetimeIndex)) else [time])]
        data = [self.fields(t, grid) for t in times]
        ds = xr.Dataset(
            {v: (("time", "lat", "lon"), np.stack([d[v] for d in data]),
                 {"units": VARIABLE_INFO[v].units, "long_name": VARIABLE_INFO[v].long_name,
                  "standard_name": VARIABLE_INFO[v].standard_name}) for v in variables},
            coords={"time": pd.DatetimeIndex(times),
                    "lat": ("lat", grid.lat, {"units": "degrees_north", "standard_name": "latitude"}),
                    "lon": ("lon", grid.lon, {"units": "degrees_east", "standard_name": "longitude"})},
            attrs={"source": SOURCE_LABEL, "demo_world_seed": self.seed, "grid": "ERA5 0.25deg sub-grid",
                   "heldout_years": ",".join(map(str, HELDOUT_YEARS))},
        )
        return ds


_CONT_CACHE: dict[str, np.ndarray] = {}


def _continentality(statics: Statics) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Land fraction smoothed over ~4° (periodic in longitude) and its derivatives ∂/∂φ, ∂/∂λ (per radian).

    The seasonal-amplitude weight, and the weight of the oceanic storm tracks (whose pressure
    gradient, and so geostrophic wind, needs the derivatives).

    A function of the land fraction alone (no seed), cached by a hash of its content — not by
    ``id(statics)``, which Python may reuse for another object once the first is collected.
    """
    import hashlib

    land = np.ascontiguousarray(statics.land)
    key = hashlib.sha1(land.view(np.uint8)).hexdigest() + str(land.shape)
    if key not in _CONT_CACHE:
        from scipy.ndimage import gaussian_filter

        cont = np.clip(gaussian_filter(land.astype(np.float64), sigma=(10.0, 14.0),
                                       mode=("nearest", "wrap")), 0.0, 1.0)
        step = np.deg2rad(0.25)
        d_lat = -np.gradient(cont, axis=0) / step  # rows run from 90°N southward
        d_lon = (np.roll(cont, -1, axis=1) - np.roll(cont, 1, axis=1)) / (2 * step)
        _CONT_CACHE[key] = tuple(a.astype(np.float32) for a in (cont, d_lat, d_lon))
    return _CONT_CACHE[key]
