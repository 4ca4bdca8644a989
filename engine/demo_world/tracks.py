"""Tropical cyclones of the demo world: seeded tracks (:class:`Cyclone`), case studies (:class:`CycloneCase`)
and the Holland (1980) vortex each active cyclone adds to the fields (:func:`add_cyclone`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..grids import Region, wrap_lon
from .constants import OMEGA, OUTER_LOW, OUTER_LOW_RADIUS_M, OUTER_WIND, R_EARTH, RHO_AIR

__all__ = ["Cyclone", "CycloneCase", "add_cyclone"]


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


def add_cyclone(cyc: Cyclone, state: tuple, lat_d: np.ndarray, lon_d: np.ndarray, land: np.ndarray,
                t2m: np.ndarray, msl: np.ndarray, u10: np.ndarray, v10: np.ndarray,
                cyclone_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(t2m, msl, u10, v10)`` with one active cyclone's Holland (1980) vortex added.

    ``state`` is :meth:`Cyclone.state` at the fields' time; ``lat_d``/``lon_d`` the grid's
    centres in degrees, ``land`` its land fraction.  The pressure deficit is scaled by
    ``cyclone_scale``; a cyclone more than 25° of longitude or 22° of latitude away from every
    cell leaves the fields unchanged.
    """
    clat, clon, dp, rmax_km, umove, vmove = state
    dp = dp * cyclone_scale
    dlon = wrap_lon(lon_d - clon, -180.0)
    if np.min(np.abs(dlon)) > 25 or np.min(np.abs(lat_d - clat)) > 22:
        return t2m, msl, u10, v10
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
    rdpdr = ((1.0 - OUTER_LOW) * cyc.b * ratio * dp * np.exp(-ratio)
             + OUTER_WIND * OUTER_LOW * dp * 2 * (r / OUTER_LOW_RADIUS_M) ** 2 * outer)
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
    return t2m, msl, u10, v10
