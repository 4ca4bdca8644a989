"""The "demo world": a seeded, physically motivated stand-in for ERA5 at 0.25°.

No reanalysis can be had in this project's sandbox, so the embedded demo's
reference fields come from this generator.  Every view that shows them must
label them as synthetic (:data:`SOURCE_LABEL`).  Real ERA5 goes through
:mod:`engine.readers` instead.

The fields are pure functions of ``(seed, time, lat, lon)``: the same point
gets the same value whichever region it is evaluated in, and 6-hourly steps
are coherent because every ingredient evolves continuously in time.

Ingredients
-----------
* **Climatology** by latitude and day of year with hemispheric seasons; the
  seasonal amplitude grows with continentality (a smoothed real land
  fraction) and lags over the ocean; a diurnal cycle in *local solar time*
  whose amplitude follows the real 0.25° land fraction (sharp coastal
  gradients); lapse-rate cooling of −6.5 K/km on the real DEM; zonal-mean
  sea-level pressure belts and thermal lows/highs over land.
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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd

from .conditioning import to_timestamp
from .grids import LatLonGrid, Region, era5_grid, wrap_lon
from .statics import Statics, load_statics
from .variables import VARIABLE_INFO, VARIABLES

__all__ = [
    "DemoWorld", "Cyclone", "CycloneCase", "HELDOUT_YEARS", "TRAIN_YEARS", "SOURCE_LABEL",
    "check_training_time", "LAPSE_RATE",
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


def check_training_time(t) -> pd.Timestamp:
    """Raise ``ValueError`` if ``t`` falls in a held-out year (the train/test split, enforced)."""
    ts = to_timestamp(t)
    if ts.year in HELDOUT_YEARS:
        raise ValueError(f"time {ts.isoformat()} is in a held-out demo year {HELDOUT_YEARS}; training must never see it")
    return ts


# --------------------------------------------------------------------- helpers
def _gauss(x: np.ndarray, mu: float, sd: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mu) / sd) ** 2)


def _smooth_sign(lat_deg: np.ndarray, width: float = 8.0) -> np.ndarray:
    return np.tanh(np.asarray(lat_deg) / width)


@dataclass(frozen=True)
class _Modes:
    """Travelling plane waves on (λ, φ): field = Σ a_k(t) cos(m_k λ + l_k φ − ω_k t + θ_k)."""

    m: np.ndarray      # integer zonal wavenumber
    l: np.ndarray      # meridional wavenumber (per radian)
    amp: np.ndarray    # amplitude
    omega: np.ndarray  # rad/day (propagation)
    nu: np.ndarray     # rad/day (amplitude modulation → temporal decorrelation)
    theta: np.ndarray
    chi: np.ndarray

    def coefficients(self, t_days: float) -> np.ndarray:
        a = self.amp * np.sqrt(2.0) * np.cos(self.nu * t_days + self.chi)
        return a * np.exp(1j * (self.theta - self.omega * t_days))

    def evaluate(self, lat_rad: np.ndarray, lon_rad: np.ndarray, t_days: float,
                 derivatives: bool = False) -> tuple[np.ndarray, ...]:
        """Field (and ∂/∂φ, ∂/∂λ) on the grid lat × lon via two small complex matmuls."""
        c = self.coefficients(t_days)
        e_lat = np.exp(1j * np.outer(lat_rad, self.l))            # (nlat, K)
        e_lon = np.exp(1j * np.outer(self.m, lon_rad))            # (K, nlon)
        f = ((e_lat * c) @ e_lon).real
        if not derivatives:
            return (f,)
        d_lat = ((e_lat * (1j * self.l * c)) @ e_lon).real
        d_lon = ((e_lat * c) @ (1j * self.m[:, None] * e_lon)).real
        return f, d_lat, d_lon


def _make_modes(rng: np.random.Generator, n: int, lmin_km: float, lmax_km: float, spectrum,
                speed: float, beta_drift: bool, tau_days: float) -> _Modes:
    """Modes with wavelengths log-uniform in [lmin, lmax]; ``spectrum(k)`` gives amplitude² per log-k."""
    lam = np.exp(rng.uniform(np.log(lmin_km), np.log(lmax_km), n)) * 1e3   # m
    k = 2 * np.pi / lam
    ang = rng.uniform(0, 2 * np.pi, n)
    cos_ref = np.cos(np.deg2rad(40.0))
    m = np.round(k * np.cos(ang) * R_EARTH * cos_ref)
    l = k * np.sin(ang) * R_EARTH
    amp = np.sqrt(spectrum(k))
    amp = amp / np.sqrt(np.sum(amp ** 2))  # unit variance overall
    kx = m / (R_EARTH * cos_ref)
    c = speed - (1.6e-11 / k ** 2 if beta_drift else 0.0)          # phase speed, m/s
    omega = c * kx * 86400.0                                      # rad/day
    tau = np.clip(tau_days * (lam / 3.0e6) ** (2.0 / 3.0), 0.4, 8.0)
    nu = 2 * np.pi / tau / 4.0
    return _Modes(m, l, amp, omega, nu, rng.uniform(0, 2 * np.pi, n), rng.uniform(0, 2 * np.pi, n))


def _pressure_spectrum(k: np.ndarray) -> np.ndarray:
    """Amplitude² per log-k interval of the pressure field.

    KE spectrum E(k): ∝ k² at planetary scales, k⁻³ at synoptic scales, k^(−5/3)
    in the mesoscale; pressure variance per log-k is E(k)·k / k² (geostrophy: v ∝ k p).
    """
    k0 = 2 * np.pi / 4.5e6
    km = 2 * np.pi / 6.0e5
    e = (k / k0) ** 2 / (1 + (k / k0) ** 2) ** 2.5 + 0.006 * (k / km) ** (-5.0 / 3.0) * (k > k0)
    return e / k


def _meso_spectrum(k: np.ndarray) -> np.ndarray:
    return (k / (2 * np.pi / 1.5e6)) ** (-2.0 / 3.0) / (1 + (2 * np.pi / 1.5e6 / k) ** 2)


def _meso_pressure_spectrum(k: np.ndarray) -> np.ndarray:
    """Amplitude² per log-k of the mesoscale pressure field: ∝ k^(−1.5) below ~2000 km."""
    k1 = 2 * np.pi / 2.0e6
    return (k / k1) ** (-1.5) / (1 + (k1 / k) ** 2)


# ------------------------------------------------------------------- cyclones
@dataclass(frozen=True)
class Cyclone:
    """A seeded tropical-cyclone track (6-hourly points)."""

    name: str
    basin: str
    times: pd.DatetimeIndex
    lat: np.ndarray
    lon: np.ndarray          # continuous (unwrapped) degrees east
    dp: np.ndarray           # central pressure deficit (Pa)
    rmax_km: np.ndarray
    b: float

    @property
    def peak_index(self) -> int:
        return int(np.argmax(self.dp))

    def state(self, t: pd.Timestamp) -> tuple[float, float, float, float, float, float] | None:
        """(lat, lon, dp, rmax_km, u_move, v_move) at time t, or None if not active."""
        if t < self.times[0] or t > self.times[-1]:
            return None
        x = (t - self.times[0]) / pd.Timedelta(hours=6)
        i = min(int(np.floor(x)), len(self.times) - 2)
        f = x - i
        lat = (1 - f) * self.lat[i] + f * self.lat[i + 1]
        lon = (1 - f) * self.lon[i] + f * self.lon[i + 1]
        dp = (1 - f) * self.dp[i] + f * self.dp[i + 1]
        rm = (1 - f) * self.rmax_km[i] + f * self.rmax_km[i + 1]
        dt = 6 * 3600.0
        u = (self.lon[i + 1] - self.lon[i]) * np.pi / 180 * R_EARTH * np.cos(np.deg2rad(lat)) / dt
        v = (self.lat[i + 1] - self.lat[i]) * np.pi / 180 * R_EARTH / dt
        return lat, lon, dp, rm, u, v

    def max_wind(self, i: int) -> float:
        """Holland gradient-wind maximum at track point i (m/s), before the surface reduction."""
        return float(np.sqrt(self.b * self.dp[i] / (RHO_AIR * np.e)))


@dataclass(frozen=True)
class CycloneCase:
    """A case study: a cyclone at its peak, with a 128×128 (32°) region around it."""

    name: str
    basin: str
    peak_time: pd.Timestamp
    peak_lat: float
    peak_lon: float
    peak_wind: float      # m/s, 10 m
    min_pressure: float   # Pa
    region: Region
    #: the source to open the case with: "" = any demo source (synthetic), else e.g. "ERA5-x20" (real)
    source: str = ""

    @property
    def real(self) -> bool:
        return bool(self.source) and self.source.startswith(("ERA5", "GFS", "NCEP"))

    def line(self) -> str:
        kind = f"real ({self.source})" if self.real else "demo world (synthetic)"
        return (f"{self.name}\t{self.basin}\t{self.peak_time.strftime('%Y-%m-%dT%H:%M')}\t"
                f"{self.region.as_text()}\t{self.min_pressure / 100:.0f} hPa\t{self.peak_wind:.0f} m/s\t{kind}")


# basin: (lat range of genesis, lon range (deg E), peak month, season half-width in months, storms/yr)
_BASINS = {
    "NA": ((10.0, 20.0), (300.0, 340.0), 9.0, 1.6, 6),
    "EP": ((10.0, 17.0), (240.0, 262.0), 8.0, 1.6, 6),
    "WP": ((8.0, 20.0), (128.0, 165.0), 8.5, 2.4, 9),
    "NI": ((9.0, 17.0), (84.0, 92.0), 10.5, 1.2, 2),
    "SI": ((-16.0, -8.0), (55.0, 100.0), 1.8, 1.5, 5),
    "SP": ((-17.0, -10.0), (150.0, 185.0), 2.0, 1.4, 4),
}
_NAMES = ["Amara", "Bodhi", "Calla", "Dario", "Esme", "Falk", "Greta", "Hiro", "Ines", "Joss", "Kaia", "Lenz",
          "Mira", "Nilo", "Oona", "Pavo", "Quill", "Rhea", "Sora", "Tarn", "Ulla", "Vito", "Wren", "Xeno",
          "Yara", "Zeno"]


def _generate_cyclones(seed: int, year: int, land: np.ndarray) -> list[Cyclone]:
    rng = np.random.default_rng([seed, year, 7919])
    out: list[Cyclone] = []
    for b_i, (basin, ((la0, la1), (lo0, lo1), peak_month, width, n_mean)) in enumerate(_BASINS.items()):
        n = rng.poisson(n_mean)
        for j in range(n):
            month = peak_month + width * rng.standard_normal()
            doy = (month - 0.5) * 30.44
            if basin in ("SI", "SP") and doy < 0:
                doy += 365.0
            t0 = pd.Timestamp(year=year, month=1, day=1) + pd.Timedelta(days=float(np.clip(doy, 0, 364)))
            t0 = t0.floor("6h")
            lat = rng.uniform(la0, la1)
            lon = rng.uniform(lo0, lo1)
            hemi = 1.0 if lat > 0 else -1.0
            n_pts = int(rng.integers(24, 44))  # 6–11 days
            peak_dp = rng.uniform(2500.0, 9000.0)
            t_peak = rng.uniform(0.35, 0.65) * n_pts
            rec = rng.uniform(0.45, 0.8) * n_pts
            b = rng.uniform(1.2, 1.8)
            lats, lons, dps, rms = [], [], [], []
            u, v = -rng.uniform(3.5, 6.5), hemi * rng.uniform(0.8, 2.0)
            dp = 800.0
            for k in range(n_pts):
                lats.append(lat)
                lons.append(lon)
                # intensity: logistic growth toward the seeded peak, then decay
                target = peak_dp * np.exp(-0.5 * ((k - t_peak) / (0.35 * n_pts)) ** 2)
                i = int(np.clip(round((90.0 - lat) / 0.25), 0, 720))
                jj = int(round(wrap_lon(lon) / 0.25)) % 1440
                over_land = land[i, jj] > 0.5
                if over_land:
                    dp *= np.exp(-6.0 / 14.0)
                elif abs(lat) > 28.0:
                    dp *= np.exp(-6.0 / 40.0)
                else:
                    dp = dp + 0.35 * (target - dp)
                dp = max(dp, 300.0)
                dps.append(dp)
                rms.append(float(np.clip(95.0 - 6.0e-3 * dp + rng.normal(0, 6), 35.0, 95.0)))
                # motion: westward/poleward, recurving east after `rec`
                if k > rec:
                    u = u + 0.9
                    v = v + hemi * 0.25
                u_noise, v_noise = rng.normal(0, 0.6, 2)
                dt = 6 * 3600.0
                lat = lat + (v + v_noise) * dt / R_EARTH * 180 / np.pi
                lon = lon + (u + u_noise) * dt / (R_EARTH * np.cos(np.deg2rad(lat))) * 180 / np.pi
                if abs(lat) > 48.0:
                    break
            name = f"{_NAMES[(j * 7 + b_i * 3 + year) % len(_NAMES)]}-{basin}{year % 100:02d}{j + 1:02d}"
            times = pd.date_range(t0, periods=len(lats), freq="6h")
            out.append(Cyclone(name, basin, times, np.array(lats), np.array(lons), np.array(dps),
                               np.array(rms), float(b)))
    return out


# ---------------------------------------------------------------------- world
@dataclass(eq=False)
class DemoWorld:
    """Seeded synthetic reanalysis on the ERA5 0.25° grid (see module docstring)."""

    seed: int = 0
    statics: Statics | None = None
    n_pressure_modes: int = 640
    n_meso_modes: int = 256
    _cont: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.statics is None:
            self.statics = load_statics()
        rng = np.random.default_rng([self.seed, 1])
        self._p_modes = _make_modes(rng, self.n_pressure_modes, 90.0, 14000.0, _pressure_spectrum,
                                    speed=8.0, beta_drift=True, tau_days=4.0)
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
        t_days = (ts - EPOCH) / pd.Timedelta(days=1)
        lat_d = grid.lat
        lat = np.deg2rad(lat_d)
        lon = np.deg2rad(grid.lon)
        lat2 = lat_d[:, None] * np.ones((1, lon.size))
        dem, land = self.statics.region(grid)
        li = np.rint((90.0 - lat_d) / 0.25).astype(int)
        lo = np.rint(np.mod(grid.lon, 360.0) / 0.25).astype(int) % 1440
        cont = self._cont[np.ix_(li, lo)]
        s = np.sin(lat)[:, None]
        sgn = _smooth_sign(lat2)
        absl = np.abs(lat2)
        doy = ts.day_of_year - 1 + (ts.hour + ts.minute / 60) / 24.0
        year_phase = 2 * np.pi * doy / 365.25

        # ---- temperature climatology (K)
        t_annual = 299.5 - 44.0 * s ** 2 - 6.0 * s ** 4 * (lat2 < 0)
        amp_ocean = 1.0 + 6.5 * np.abs(s) ** 1.5
        amp_land = 2.0 + 19.0 * np.abs(s) ** 1.2
        season_land = np.cos(year_phase - 2 * np.pi * 200 / 365.25)
        season_ocean = np.cos(year_phase - 2 * np.pi * 228 / 365.25)
        t_season = sgn * ((1 - cont) * amp_ocean * season_ocean + cont * amp_land * season_land)
        lst = (ts.hour + ts.minute / 60.0 + np.rad2deg(lon)[None, :] / 15.0) % 24.0
        diurnal_amp = (0.3 + 4.8 * land) * (0.55 + 0.45 * np.cos(lat))[:, None] * (1 + 0.25 * sgn * season_land)
        t_diurnal = diurnal_amp * np.cos(2 * np.pi * (lst - 15.0) / 24.0)
        t_lapse = LAPSE_RATE * dem

        # ---- sea-level pressure climatology (Pa)
        sh = lat2 < 0
        p_clim = (101100.0 + 900.0 * _gauss(absl, 32.0, 9.0) + 500 * sgn * np.cos(year_phase - 0.2) * _gauss(absl, 32, 9)
                  - np.where(sh, 1800.0, 700.0) * _gauss(absl, 62.0, 9.0) - 300.0 * _gauss(lat2, 5.0, 10.0))
        p_thermal = -55.0 * cont * (t_season - sgn * amp_ocean * season_ocean)  # thermal lows/highs over continents

        # ---- synoptic weather: travelling waves in pressure (Pa)
        # amplitude envelope: weak in the tropics, strongest in the storm tracks, tapered toward the poles
        # (where the zonal plane waves would otherwise shrink to grid scale)
        polar = np.exp(-np.clip(np.abs(lat_d) - 62.0, 0.0, None) ** 2 / (2 * 9.0 ** 2))
        d_polar = -np.clip(np.abs(lat_d) - 62.0, 0.0, None) / 9.0 ** 2 * np.sign(lat_d) * polar * 180 / np.pi
        env_p = SYNOPTIC_SCALE * (250.0 + 1250.0 * np.sin(lat) ** 2) * polar
        d_env_p = SYNOPTIC_SCALE * (2500.0 * np.sin(lat) * np.cos(lat) * polar
                                    + (250.0 + 1250.0 * np.sin(lat) ** 2) * d_polar)
        f0, f_lat, f_lon = self._p_modes.evaluate(lat, lon, t_days, derivatives=True)
        p_syn = env_p[:, None] * f0
        # mesoscale pressure (fronts, troughs, convective systems): realism.py measured the demo world's
        # msl power at 100-1000 km at 3-17 % of ERA5/TIGGE; this field adds it, and its geostrophic wind
        env_m = MESO_MSL_PA * (0.6 + 0.4 * np.abs(np.sin(lat)))[:, None] * (0.8 + 0.4 * land)
        pm, pm_lat, pm_lon = self._pm_modes.evaluate(lat, lon, t_days, derivatives=True)
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
        alpha = np.deg2rad(18.0 + 17.0 * land) * sgn
        red = 0.76 - 0.30 * land
        ua = red * (ug * np.cos(alpha) - vg * np.sin(alpha))
        va = red * (ug * np.sin(alpha) + vg * np.cos(alpha))

        # ---- mean circulation (trades, westerlies, polar easterlies)
        u_mean = (-6.5 * _gauss(absl, 14.0, 8.0) + 7.5 * _gauss(absl, 48.0, 10.0) - 3.0 * _gauss(absl, 70.0, 6.0))
        v_mean = -2.0 * sgn * _gauss(absl, 14.0, 7.0)
        red_mean = 0.95 - 0.40 * land - 0.10 * np.clip(dem / 2000.0, 0, 1)
        m0, = self._w_modes.evaluate(lat, lon, t_days)
        m1, = self._w_modes.evaluate(lat + 0.37, lon + 0.61, t_days + 3.3)
        noise_amp = 0.2 + 0.2 * land
        u10 = red_mean * u_mean + ua + noise_amp * m0
        v10 = red_mean * v_mean + va + noise_amp * m1

        # ---- temperature weather: thermal advection ∝ meridional geostrophic wind, plus mesoscale noise
        adv = np.clip(0.26 * sgn * vg_syn * (0.3 + 0.7 * np.abs(s)) * (1 + 0.5 * cont), -14.0, 14.0)
        tn, = self._t_modes.evaluate(lat, lon, t_days)
        t2m = t_annual + t_season + t_diurnal + t_lapse + adv + (0.35 + 1.4 * land) * tn
        # reduction to sea level over terrain: msl = p_s exp(g z / (R T_col)) makes msl over high ground
        # depend on the column temperature; relative to a standard column, cold columns raise msl
        t_col = t_annual + t_season + 0.5 * t_lapse  # mean of the fictitious column below the surface
        p_terrain = TERRAIN_MSL_FACTOR * 101325.0 * 9.80665 * dem / (287.0 * t_col ** 2) * (288.0 - 0.00325 * dem - t_col)
        msl = p_clim + p_thermal + p_syn + p_meso + p_terrain

        # ---- tropical cyclones (Holland 1980)
        for cyc, (clat, clon, dp, rmax_km, umove, vmove) in self.active_cyclones(ts):
            dp = dp * cyclone_scale
            dlon = wrap_lon(grid.lon - clon, -180.0)
            if np.min(np.abs(dlon)) > 25 or np.min(np.abs(lat_d - clat)) > 22:
                continue
            x = np.deg2rad(dlon)[None, :] * R_EARTH * np.cos(np.deg2rad(clat))
            y = np.deg2rad(lat_d - clat)[:, None] * R_EARTH
            r = np.sqrt(x ** 2 + y ** 2) + 1.0
            rm = rmax_km * 1e3
            ratio = (rm / r) ** cyc.b
            taper_r = np.exp(-(r / 1.5e6) ** 4)
            # real cyclones are wider than a bare Holland vortex (realism.py: ERA5's deficit at 300/500 km is
            # 22/14 % of the central one): a broad outer low carries OUTER_LOW of the deficit
            outer = np.exp(-(r / OUTER_LOW_RADIUS_M) ** 2)
            msl = msl - dp * ((1.0 - OUTER_LOW) * (1.0 - np.exp(-ratio)) + OUTER_LOW * outer) * taper_r
            fc = 2 * OMEGA * abs(np.sin(np.deg2rad(clat)))
            # gradient wind of both parts: r dp/dr of the Holland part plus OUTER_WIND of the outer low's
            # (the broad low's surface flow is far below gradient balance: ERA5's wind at 500-800 km)
            rdpdr = (1.0 - OUTER_LOW) * cyc.b * ratio * dp * np.exp(-ratio) + OUTER_WIND * OUTER_LOW * dp * 2 * (r / OUTER_LOW_RADIUS_M) ** 2 * outer
            vgr = np.sqrt(rdpdr / RHO_AIR + (r * fc / 2) ** 2) - r * fc / 2
            hemi = 1.0 if clat >= 0 else -1.0
            inflow = np.deg2rad(20.0)
            # tangential unit vector (cyclonic), rotated inward by the inflow angle
            tx, ty = -hemi * y / r, hemi * x / r
            ix, iy = -x / r, -y / r
            surf = (0.72 - 0.25 * land) * taper_r
            vx = surf * vgr * (np.cos(inflow) * tx + np.sin(inflow) * ix)
            vy = surf * vgr * (np.cos(inflow) * ty + np.sin(inflow) * iy)
            asym = 0.5 * np.exp(-r / (6 * rm)) * taper_r
            u10 = u10 + vx + asym * umove
            v10 = v10 + vy + asym * vmove
            t2m = t2m - 1.8 * (dp / 6000.0) * np.exp(-r / 1.5e5)
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


def _continentality(statics: Statics) -> np.ndarray:
    """Land fraction smoothed over ~4° (periodic in longitude): the seasonal-amplitude weight.

    A function of the land fraction alone (no seed), cached by a hash of its content — not by
    ``id(statics)``, which Python may reuse for another object once the first is collected.
    """
    import hashlib

    land = np.ascontiguousarray(statics.land)
    key = hashlib.sha1(land.view(np.uint8)).hexdigest() + str(land.shape)
    if key not in _CONT_CACHE:
        from scipy.ndimage import gaussian_filter

        _CONT_CACHE[key] = np.clip(gaussian_filter(land.astype(np.float64), sigma=(10.0, 14.0),
                                                   mode=("nearest", "wrap")), 0.0, 1.0).astype(np.float32)
    return _CONT_CACHE[key]
