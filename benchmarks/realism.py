"""How far is the demo world from real weather?  Demo/real ratios per variable, at the same points and dates.

The demo world (:class:`zssd_engine.demo_world.DemoWorld`, synthetic) is compared with REAL fields at the
same points and season: the ERA5 week 2026-03-25..31 at its 1° points (exact ERA5 0.25° grid points)
and the ECMWF TIGGE forecast valid 2007-05-10T00 (≈0.45°).  The demo world is evaluated at the same
dates, on the same 32°×32° boxes (:data:`BOXES`) and at the same 1° points.  Measures:

1. **Sub-5° detail** — detail = field − bilinear(5° cell means), the 5° means being the conservative
   (cos φ area) average of the box's 1° points (cells ±0.5°) onto the 5° cells that overlap them.
   Reported: the cos φ weighted standard deviation of the detail over land points (land fraction > 0.5)
   and over ocean points, pooled over boxes and times; and the fraction of the detail variance explained
   by a per-(box, time) least-squares fit on the elevation detail and the land-fraction detail (the same
   operator applied to the DEM and land fraction at the 1° points), pooled as 1 − ΣSS_res / ΣSS_tot.
2. **Power spectra by wavelength band** — :func:`zssd_engine.metrics.power_spectrum` (Hann window) of each box;
   band power = Σ P(k)·n_modes(k) / N over the bins with wavelength in [short, long) (the variance in the
   band, N = number of Fourier modes); mean over boxes (and
   times) first, then demo/real.  (a) TIGGE box vs the demo world at 2007-05-10T00 averaged
   (conservative) from 0.25° onto the same TIGGE cells, bands 100–1600 km; (b) ERA5 at the 1° points vs
   the demo world at the same points, all times, bands 250–2000 km.
3. **Land–sea contrast** of t2m (cos φ weighted land mean − ocean mean per coastal box and time): ratio of
   the mean |contrast| and the demo–real correlation; **diurnal amplitude**: the first harmonic of t2m in
   local solar time (least-squares fit of mean + cos + sin over the times, per land point), mean over
   land points, demo/real.
4. **Cyclone structure** — ring means (0–1500 km, 100 km bins, great-circle distance from the 1° point
   of lowest msl) of the msl deficit (environment = mean msl 1200–1500 km, minus the ring mean) and of the
   10 m wind speed, around the real tropical cyclone of the ERA5 week at its peak and around the demo
   catalog cyclones whose catalog minimum pressure is closest to the real one's (each at its own peak
   time, at its box's 1° points).  Demo values are means over those cyclones.

Every ratio outside [0.8, 1.25] is flagged as a realism defect.  It only measures (no engine change).
Writes ``benchmarks/results/realism.{json,md}`` (and ``realism.png``)::

    python benchmarks/realism.py                 # all 16 boxes, all 24 times, 5 demo cyclones
    python benchmarks/realism.py --boxes 4 --times 3   # quick: 4 boxes, every 3rd time

ERA5: Contains modified Copernicus Climate Change Service information, CC-BY 4.0 (ECMWF).
"""

from __future__ import annotations

import argparse
import sys
import time as _time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._common import header, md_header, write  # noqa: E402
from zssd_engine.grids import LatLonGrid, Region, gaussian_latitudes, lat_weights, wrap_lon  # noqa: E402
from zssd_engine.operators import bilinear_matrices, conservative_matrices  # noqa: E402

VARS = ("t2m", "msl", "u10", "v10")
#: Units as reported (msl is converted from Pa to hPa everywhere in this benchmark).
UNITS = {"t2m": "K", "msl": "hPa", "u10": "m/s", "v10": "m/s"}
LOW, HIGH = 0.8, 1.25
COARSE_RES = 5.0
#: Variables whose sub-5° detail is regressed on the elevation detail (the sea-level reduction, the lapse rate),
#: on the boxes whose elevation detail reaches SLOPE_MIN_RELIEF_M somewhere.
SLOPE_VARS = ("t2m", "msl")
SLOPE_MIN_RELIEF_M = 300.0
TIGGE_TIME = "2007-05-10T00:00"
TIGGE_BANDS: tuple[tuple[float, float], ...] = ((200.0, 100.0), (400.0, 200.0), (800.0, 400.0), (1600.0, 800.0))
ERA5_BANDS: tuple[tuple[float, float], ...] = ((500.0, 250.0), (1000.0, 500.0), (2000.0, 1000.0))
PROFILE_EDGES_KM = np.arange(0.0, 1501.0, 100.0)
ENV_KM = (1200.0, 1500.0)
R_EARTH_KM = 6371.0

#: The fixed boxes (32°×32°, |lat| ≤ 60, non-overlapping): (name, kind, Region(S, N, W, E)).
BOXES: tuple[tuple[str, str, Region], ...] = (
    ("Alps-Europe", "mountains/coast", Region(28, 60, -5, 27)),
    ("Himalaya-Tibet", "mountains", Region(18, 50, 70, 102)),
    ("Rockies-W US", "mountains/coast", Region(28, 60, -130, -98)),
    ("Andes", "mountains/coast", Region(-40, -8, -82, -50)),
    ("North Pacific", "ocean", Region(12, 44, -180, -148)),
    ("Sahara-W Africa", "plains/coast", Region(-4, 28, -20, 12)),
    ("Maritime Continent", "islands/coast", Region(-14, 18, 102, 134)),
    ("South Atlantic", "ocean", Region(-56, -24, -40, -8)),
    ("Great Plains-E US", "plains/coast", Region(24, 56, -98, -66)),
    ("Australia", "plains/coast", Region(-46, -14, 112, 144)),
    ("East Africa", "highlands/coast", Region(-20, 12, 25, 57)),
    ("East Asia-Japan", "coast/mountains", Region(20, 52, 110, 142)),
    ("Amazon-Caribbean", "plains/coast", Region(-8, 24, -80, -48)),
    ("Southern Africa", "mountains/coast", Region(-52, -20, 5, 37)),
    ("Tasman-New Zealand", "coast/dateline", Region(-52, -20, 150, -178)),
    ("South Indian Ocean", "ocean", Region(-56, -24, 60, 92)),
)


# ====================================================================== pure numpy cores
def coarse_cells(fine: LatLonGrid, res: float = COARSE_RES) -> LatLonGrid:
    """The ``res``° cells (edges at multiples of ``res``) that overlap the cells of ``fine``.

    Longitudes stay in ``fine``'s frame (they may run past 360 or below 0)."""
    lb, ob = fine.lat_bounds, fine.lon_bounds
    lo, hi = float(min(lb[0], lb[-1])), float(max(lb[0], lb[-1]))
    s = np.floor(lo / res + 1e-9) * res
    n = np.ceil(hi / res - 1e-9) * res
    w = np.floor(ob[0] / res + 1e-9) * res
    e = np.ceil(ob[-1] / res - 1e-9) * res
    latb = np.arange(s, n + 0.5 * res, res)
    lonb = np.arange(w, e + 0.5 * res, res)
    if fine.descending:
        latb = latb[::-1]
    latb = np.clip(latb, -90.0, 90.0)
    return LatLonGrid(0.5 * (latb[:-1] + latb[1:]), 0.5 * (lonb[:-1] + lonb[1:]), f"{res:g}deg-cells", latb, lonb)


def smoothing_matrices(fine: LatLonGrid, res: float = COARSE_RES) -> tuple[np.ndarray, np.ndarray]:
    """``(S_lat, S_lon)`` with ``S_lat @ X @ S_lon.T`` = bilinear interpolation back to ``fine`` of the
    conservative ``res``° cell means of ``X`` (the engine's own operator matrices)."""
    coarse = coarse_cells(fine, res)
    cl, co, cov = conservative_matrices(fine, coarse)
    if cov.min() <= 0:
        raise ValueError("a coarse cell has no fine cell")  # cannot happen with coarse_cells
    bl, bo = bilinear_matrices(coarse, fine)
    return bl @ cl, bo @ co


def detail(x: np.ndarray, smooth: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``x − S x`` on the last two axes (``[..., nlat, nlon]``): the sub-``res``° detail."""
    sl, so = smooth
    x = np.asarray(x, dtype=np.float64)
    return x - sl @ x @ so.T


def weighted_std(x: np.ndarray, w: np.ndarray) -> float:
    """Weighted standard deviation of the values ``x`` with weights ``w`` (same shape, NaNs ignored)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    w = np.broadcast_to(np.asarray(w, dtype=np.float64), np.shape(x)).ravel() if np.ndim(w) else np.full(x.size, w)
    ok = np.isfinite(x) & (w > 0)
    if not ok.any():
        return float("nan")
    x, w = x[ok], w[ok]
    m = np.sum(w * x) / np.sum(w)
    return float(np.sqrt(np.sum(w * (x - m) ** 2) / np.sum(w)))


def regression_ss(y: np.ndarray, predictors: list[np.ndarray]) -> tuple[float, float]:
    """Least-squares fit of ``y`` on ``[1, *predictors]`` (all flattened): ``(SS_residual, SS_total)``.

    ``1 − SS_res / SS_tot`` is the explained fraction of the variance of ``y``."""
    y = np.asarray(y, dtype=np.float64).ravel()
    a = np.column_stack([np.ones_like(y)] + [np.asarray(p, dtype=np.float64).ravel() for p in predictors])
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    res = y - a @ coef
    return float(np.sum(res ** 2)), float(np.sum((y - y.mean()) ** 2))


def elevation_slope_parts(y: np.ndarray, elev_detail_km: np.ndarray, land_detail: np.ndarray) -> tuple[float, float]:
    """``(Σ e·y, Σ e²)`` with ``e`` the elevation detail (km) after its least-squares fit on ``[1, land detail]``.

    Their ratio is the coefficient of the elevation detail in a fit of ``y`` on ``[1, elevation detail, land
    detail]`` (Frisch–Waugh), i.e. how much ``y`` changes per km of sub-5° relief at fixed land fraction;
    summing both parts over boxes and times pools the slope."""
    y = np.asarray(y, dtype=np.float64).ravel()
    z = np.asarray(elev_detail_km, dtype=np.float64).ravel()
    a = np.column_stack([np.ones_like(z), np.asarray(land_detail, dtype=np.float64).ravel()])
    coef, *_ = np.linalg.lstsq(a, z, rcond=None)
    e = z - a @ coef
    return float(np.dot(e, y)), float(np.dot(e, e))


def band_powers(spec: np.ndarray, wavelength_km: np.ndarray, n_modes: np.ndarray,
                bands: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Σ P·n_modes over the spectrum bins with wavelength in ``[short, long)`` per band ``(long, short)``
    (the convention of :func:`zssd_engine.metrics.spectrum_ratio_by_band`); ``spec`` is ``[..., nk]``."""
    spec = np.asarray(spec, dtype=np.float64)
    lam = np.asarray(wavelength_km, dtype=np.float64)
    n = np.asarray(n_modes, dtype=np.float64)
    out = []
    for long_km, short_km in bands:
        m = (lam >= short_km * (1 - 1e-9)) & (lam < long_km * (1 - 1e-9))
        out.append(np.nansum(spec[..., m] * n[m], axis=-1) if m.any() else np.full(spec.shape[:-1], np.nan))
    return np.stack(out, axis=-1)


def field_band_powers(values: np.ndarray, lat: np.ndarray, lon: np.ndarray,
                      bands: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Band variances of ``values [..., nlat, nlon]``: :func:`band_powers` of its Hann-windowed spectrum
    (:func:`zssd_engine.metrics.power_spectrum`) divided by the number of Fourier modes ``nlat·nlon``, so a band's
    value is the share of the windowed variance in it (units²; comparable between boxes of different size)."""
    import xarray as xr

    from zssd_engine.metrics import power_spectrum

    values = np.asarray(values, dtype=np.float64)
    dims = tuple(f"d{i}" for i in range(values.ndim - 2)) + ("lat", "lon")
    da = xr.DataArray(values, dims=dims, coords={"lat": np.asarray(lat, float), "lon": np.asarray(lon, float)})
    sp = power_spectrum(da, window="hann")
    # divided by the number of Fourier modes: the (windowed) variance each band contributes (Parseval)
    return band_powers(sp.values, sp["wavelength_km"].values, sp["n_modes"].values, bands) / sp.attrs["n_total_modes"]


def power_ratio(demo_powers: np.ndarray, real_powers: np.ndarray) -> np.ndarray:
    """Demo/real ratio per band of the band powers averaged over all leading axes (average, then ratio)."""
    d = np.nanmean(np.asarray(demo_powers, dtype=np.float64).reshape(-1, np.shape(demo_powers)[-1]), axis=0)
    r = np.nanmean(np.asarray(real_powers, dtype=np.float64).reshape(-1, np.shape(real_powers)[-1]), axis=0)
    return d / np.where(r > 0, r, np.nan)


def great_circle_km(lat0: float, lon0: float, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Great-circle distance (km, R = 6371 km) from (lat0, lon0) to each (lat, lon) (broadcast)."""
    p0, p = np.deg2rad(lat0), np.deg2rad(np.asarray(lat, dtype=np.float64))
    dl = np.deg2rad(np.asarray(lon, dtype=np.float64) - lon0)
    c = np.sin(p0) * np.sin(p) + np.cos(p0) * np.cos(p) * np.cos(dl)
    return R_EARTH_KM * np.arccos(np.clip(c, -1.0, 1.0))


def radial_profile(values: np.ndarray, dist_km: np.ndarray,
                   edges_km: np.ndarray = PROFILE_EDGES_KM) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ring means of ``values`` in the distance bins ``[edges[j], edges[j+1])``.

    Returns ``(mean distance of the points in each ring, ring mean, point count)``; NaN for empty rings."""
    v = np.asarray(values, dtype=np.float64).ravel()
    d = np.asarray(dist_km, dtype=np.float64).ravel()
    idx = np.searchsorted(edges_km, d, side="right") - 1
    nb = len(edges_km) - 1
    ok = (idx >= 0) & (idx < nb) & np.isfinite(v)
    cnt = np.bincount(idx[ok], minlength=nb)[:nb].astype(float)
    sv = np.bincount(idx[ok], weights=v[ok], minlength=nb)[:nb]
    sd = np.bincount(idx[ok], weights=d[ok], minlength=nb)[:nb]
    with np.errstate(invalid="ignore", divide="ignore"):
        return sd / np.where(cnt > 0, cnt, np.nan), sv / np.where(cnt > 0, cnt, np.nan), cnt


def half_radius(r: np.ndarray, deficit: np.ndarray, central: float) -> float:
    """The radius where the deficit profile first falls to half ``central`` (linear interpolation in r).

    ``r`` must be increasing (NaN rings are skipped); NaN if the profile never falls that far."""
    ok = np.isfinite(r) & np.isfinite(deficit)
    r, f = np.asarray(r, float)[ok], np.asarray(deficit, float)[ok] / central
    below = np.nonzero(f <= 0.5)[0]
    if below.size == 0:
        return float("nan")
    j = int(below[0])
    if j == 0:
        return float(r[0])
    return float(r[j - 1] + (0.5 - f[j - 1]) / (f[j] - f[j - 1]) * (r[j] - r[j - 1]))


def cyclone_structure(msl_hpa: np.ndarray, wind: np.ndarray, lat: np.ndarray, lon: np.ndarray,
                      centre: tuple[float, float], edges_km: np.ndarray = PROFILE_EDGES_KM,
                      env_km: tuple[float, float] = ENV_KM) -> dict:
    """Radial structure of a cyclone on a ``(nlat, nlon)`` grid around ``centre`` (lat, lon).

    The msl deficit profile is ``P_env − ring mean`` with ``P_env`` the mean msl at ``env_km``; the central
    deficit is ``P_env`` minus msl at the grid point nearest the centre (put in a ring at r = 0).  Returns
    the profiles and the scalar metrics (half-deficit radius, normalised deficit at 300/500/800 km, ring-
    mean wind at 200/500/800 km (interpolated in r), max wind within 500 km)."""
    lat2, lon2 = np.meshgrid(np.asarray(lat, float), np.asarray(lon, float), indexing="ij")
    d = great_circle_km(centre[0], centre[1], lat2, lon2)
    env = (d >= env_km[0]) & (d <= env_km[1])
    p_env = float(np.mean(np.asarray(msl_hpa, float)[env]))
    k = np.unravel_index(np.argmin(d), d.shape)
    central = p_env - float(np.asarray(msl_hpa)[k])
    r, ring_p, cnt = radial_profile(msl_hpa, d, edges_km)
    _, ring_w, _ = radial_profile(wind, d, edges_km)
    deficit = p_env - ring_p
    ok = np.isfinite(r)
    rr, dd, ww = r[ok], deficit[ok], ring_w[ok]
    if rr[0] > 1e-6:  # the centre point as the r = 0 ring
        rr, dd = np.concatenate([[0.0], rr]), np.concatenate([[central], dd])
        ww = np.concatenate([[float(np.asarray(wind)[k])], ww])
    out = {"p_env_hpa": p_env, "central_deficit_hpa": central, "r_half_km": half_radius(rr, dd, central),
           "max_wind_500km": float(np.max(np.asarray(wind, float)[d <= 500.0])),
           "profile_r_km": [float(x) for x in r], "profile_deficit_hpa": [float(x) for x in deficit],
           "profile_wind": [float(x) for x in ring_w], "profile_count": [int(x) for x in cnt]}
    for rk in (300, 500, 800):
        out[f"deficit_{rk}km_norm"] = float(np.interp(rk, rr, dd) / central)
    for rk in (200, 500, 800):
        out[f"wind_{rk}km"] = float(np.interp(rk, rr, ww))
    return out


def local_solar_hours(times, lon: np.ndarray) -> np.ndarray:
    """Local solar time (hours in [0, 24)) ``[ntime, nlon]`` = UTC hour + lon/15."""
    import pandas as pd

    t = pd.DatetimeIndex(times)
    utc = np.asarray(t.hour + t.minute / 60.0 + t.second / 3600.0, dtype=np.float64)
    return (utc[:, None] + np.asarray(lon, float)[None, :] / 15.0) % 24.0


def first_harmonic_amplitude(series: np.ndarray, lst_hours: np.ndarray) -> np.ndarray:
    """Amplitude of the 24 h harmonic per point: least-squares fit of ``c + a cos ωτ + b sin ωτ`` (τ = local
    solar time) to each column; ``series`` and ``lst_hours`` are ``[ntime, npoint]``; returns √(a²+b²)."""
    y = np.asarray(series, dtype=np.float64)
    ph = 2 * np.pi * np.asarray(lst_hours, dtype=np.float64) / 24.0
    a = np.stack([np.ones_like(ph), np.cos(ph), np.sin(ph)], axis=-1)  # [t, p, 3]
    ata = np.einsum("tpi,tpj->pij", a, a)
    aty = np.einsum("tpi,tp->pi", a, y)
    coef = np.linalg.solve(ata, aty[..., None])[..., 0]
    return np.hypot(coef[:, 1], coef[:, 2])


def land_sea_contrast(t2m: np.ndarray, land: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """cos φ weighted mean over land (fraction > 0.5) minus over ocean, per leading index of ``[..., nlat, nlon]``."""
    w = np.broadcast_to(lat_weights(lat)[:, None], np.shape(land))
    lm = (np.asarray(land) > 0.5) * w
    om = (np.asarray(land) <= 0.5) * w
    x = np.asarray(t2m, dtype=np.float64)
    return np.sum(x * lm, axis=(-2, -1)) / lm.sum() - np.sum(x * om, axis=(-2, -1)) / om.sum()


def ratio(demo: float, real: float) -> float:
    """demo / real (NaN when real is 0 or either is NaN)."""
    return float(demo) / float(real) if (np.isfinite(demo) and np.isfinite(real) and real != 0) else float("nan")


def is_defect(r: float, low: float = LOW, high: float = HIGH) -> str:
    """``"yes"`` for a ratio outside ``[low, high]``, ``"no"`` inside, ``"n/a"`` for NaN/None."""
    if r is None or not np.isfinite(r):
        return "n/a"
    return "yes" if (r < low or r > high) else "no"


# ====================================================================== data access
def box_points(region: Region) -> LatLonGrid:
    """The ERA5 1° points (cells ±0.5°) whose centres lie in the box (lon in the box's frame)."""
    from zssd_engine.real_sources import era5_points_grid

    return era5_points_grid().select(region)[0]


def era5_at(points: LatLonGrid, time_idx) -> dict[str, np.ndarray]:
    """ERA5 week values ``[ntime, nlat, nlon]`` at the 1° points (msl in hPa)."""
    from zssd_engine.real_sources import era5_week

    wk = era5_week()
    ri = np.rint(90.0 - points.lat).astype(int)
    rj = np.rint(points.lon).astype(int) % 360
    out = {}
    for v in VARS:
        a = np.asarray(wk[v].values)[np.asarray(time_idx)][:, ri][:, :, rj].astype(np.float64)
        out[v] = a / 100.0 if v == "msl" else a
    return out


def demo_at(world, times, points: LatLonGrid) -> dict[str, np.ndarray]:
    """Demo-world values ``[ntime, nlat, nlon]`` at the 1° points (msl in hPa).

    The demo world is a pure function of (time, lat, lon) (module docstring of :mod:`zssd_engine.demo_world`),
    so it is evaluated directly at the 1° points (a sub-grid of the 0.25° grid); :func:`check_points`
    verifies this equals the 0.25° box subsampled at every 4th point."""
    per = [world.fields(t, points) for t in times]
    return {v: np.stack([p[v] for p in per]).astype(np.float64) / (100.0 if v == "msl" else 1.0) for v in VARS}


def statics_at(world, points: LatLonGrid) -> tuple[np.ndarray, np.ndarray]:
    """(DEM m, land fraction) at the 1° points (the 0.25° statics sampled there)."""
    dem, land = world.statics.region(points)
    return np.asarray(dem, np.float64), np.asarray(land, np.float64)


def check_points(world, t, region: Region) -> float:
    """Max |demo at the 1° points − demo on the 0.25° box subsampled at the integer lat/lon rows/cols|."""
    from zssd_engine.grids import era5_grid

    sub = era5_grid().select(region)[0]
    full = world.fields(t, sub)
    li = np.nonzero(np.isclose(sub.lat % 1.0, 0.0) | np.isclose(sub.lat % 1.0, 1.0))[0]
    lo = np.nonzero(np.isclose(sub.lon % 1.0, 0.0) | np.isclose(sub.lon % 1.0, 1.0))[0]
    pts = world.fields(t, box_points(region))
    return max(float(np.max(np.abs(full[v][np.ix_(li, lo)].astype(np.float64) - pts[v]) / (100.0 if v == "msl" else 1.0)))
               for v in VARS)


def tigge_grid():
    """The TIGGE field's grid (Gaussian rows with Gauss-weight bounds × 800 regular longitudes)."""
    from zssd_engine.real_sources import tigge_field

    ds = tigge_field()
    lat, lb = gaussian_latitudes(ds.sizes["lat"])
    if np.abs(lat - ds["lat"].values).max() > 1e-6:
        raise ValueError("TIGGE latitudes are not the Gaussian rows")
    lon = ds["lon"].values.astype(np.float64)
    d = 360.0 / lon.size
    return ds, LatLonGrid(lat, lon, "TIGGE-N200", lb, np.concatenate([lon - d / 2, [lon[-1] + d / 2]]))


class PriorSource:
    """Prior-only (unguided) samples of a diffusion prior, in the demo world's place: ``fields(time, grid)``.

    The prior samples the 0.25° box around ``grid`` (rounded up to a multiple of 8 cells), conditioned only
    on the statics and the time; the values at ``grid``'s points are returned (msl etc. as the demo world
    returns them).  Samples are cached per (time, grid), seeded per call order of new (time, box), so the
    open-ocean diagnostic reuses the week's samples.  It has no cyclone catalog: the cyclone rows are n/a."""

    def __init__(self, checkpoint, steps: int = 50, seed: int = 0, statics=None):
        from zssd_engine.prior.model import Prior
        from zssd_engine.statics import load_statics

        self.prior = checkpoint if isinstance(checkpoint, Prior) else Prior.load(checkpoint)
        self.checkpoint = str(checkpoint) if not isinstance(checkpoint, Prior) else "(in memory)"
        self.steps = steps
        self.seed = seed
        self.statics = statics if statics is not None else load_statics()
        self._cache: dict = {}
        self.n_samples = 0
        self.seconds = 0.0

    def fields(self, time, grid: LatLonGrid) -> dict[str, np.ndarray]:
        import pandas as pd

        from zssd_engine.conditioning import static_channels, time_features
        from zssd_engine.grids import era5_grid
        from zssd_engine.samplers import sample_unconditional
        from zssd_engine.variables import VARIABLES

        t = pd.Timestamp(time)
        lat, lon = np.asarray(grid.lat, float), np.asarray(grid.lon, float)
        n_lat = int(np.ceil((lat.max() - lat.min()) / 0.25 + 1 - 1e-6))
        n_lon = int(np.ceil((lon[-1] - lon[0]) / 0.25 + 1 - 1e-6))
        n_lat, n_lon = (int(np.ceil(n / 8.0) * 8) for n in (n_lat, n_lon))
        s = float(np.clip(lat.min() - 0.125, -90.0, 90.0 - n_lat * 0.25))
        w = float(wrap_lon(lon[0] - 0.125, -180.0))
        key = (t, s, w, n_lat, n_lon)  # the sampled box: a box's 1° points and its 0.25° cells share it
        if key not in self._cache:
            box = era5_grid().select(Region(s, s + n_lat * 0.25, w, float(wrap_lon(w + n_lon * 0.25, -180.0))))[0]
            dem, land = self.statics.region(box)
            t0 = _time.perf_counter()
            last = None
            for last in sample_unconditional(self.prior, None, box, static_channels(box, dem, land, t),
                                             time_features([t]), steps=self.steps, members=1,
                                             seed=self.seed + len(self._cache)):
                pass
            x = self.prior.denormalize(last.x_t).detach().cpu().numpy()[0].astype(np.float64)
            self.seconds += _time.perf_counter() - t0
            self.n_samples += 1
            self._cache[key] = (box, {v: x[i] for i, v in enumerate(VARIABLES)})
        box, full = self._cache[key]
        li = np.array([int(np.argmin(np.abs(box.lat - a))) for a in lat])
        lo = np.array([int(np.argmin(np.abs(np.mod(box.lon - b + 180.0, 360.0) - 180.0))) for b in lon])
        if np.abs(box.lat[li] - lat).max() > 1e-6 or np.abs(np.mod(box.lon[lo] - lon + 180.0, 360.0) - 180.0).max() > 1e-6:
            raise ValueError("the prior source needs points on the ERA5 0.25° lattice")
        return {v: a[np.ix_(li, lo)] for v, a in full.items()}


# ====================================================================== the measures
def measure_detail_and_spectra(world, boxes, times, time_idx) -> dict:
    """Measures 1, 2b and 3 (everything at the ERA5 1° points over the week)."""
    std = {k: {v: {"demo": [], "real": [], "w": []} for v in VARS} for k in ("land", "ocean")}
    ss = {v: {"demo": [0.0, 0.0], "real": [0.0, 0.0]} for v in VARS}
    slope = {v: {"demo": [0.0, 0.0], "real": [0.0, 0.0]} for v in SLOPE_VARS}
    box_slopes = []
    powers = {v: {"demo": [], "real": []} for v in VARS}
    contrast = {"demo": [], "real": [], "boxes": []}
    diurnal = {"demo": [], "real": [], "w": []}
    box_info = []
    lst = None
    for name, kind, reg in boxes:
        pts = box_points(reg)
        sm = smoothing_matrices(pts)
        dem, land = statics_at(world, pts)
        dd, ld = detail(dem, sm), detail(land, sm)
        real = era5_at(pts, time_idx)
        demo = demo_at(world, times, pts)
        w2 = np.broadcast_to(lat_weights(pts.lat)[:, None], land.shape)
        is_land = land > 0.5
        lf = float(np.sum(w2 * is_land) / np.sum(w2))
        box_info.append({"name": name, "kind": kind, "region": reg.as_text(), "points": list(pts.shape),
                         "land_fraction": lf, "max_dem_m": float(dem.max())})
        relief = float(np.max(np.abs(dd))) >= SLOPE_MIN_RELIEF_M
        bs = {"name": name}
        for v in VARS:
            for src, fld in (("demo", demo[v]), ("real", real[v])):
                det = detail(fld, sm)  # [t, nlat, nlon]
                if v in SLOPE_VARS and relief:
                    parts = np.array([elevation_slope_parts(det[t], dd / 1000.0, ld) for t in range(det.shape[0])])
                    slope[v][src][0] += parts[:, 0].sum()
                    slope[v][src][1] += parts[:, 1].sum()
                    bs[f"{v}/{src}"] = float(parts[:, 0].sum() / parts[:, 1].sum())
                std["land"][v][src].append(det[:, is_land])
                std["ocean"][v][src].append(det[:, ~is_land])
                for t in range(det.shape[0]):
                    r_, t_ = regression_ss(det[t], [dd, ld])
                    ss[v][src][0] += r_
                    ss[v][src][1] += t_
                powers[v][src].append(field_band_powers(fld, pts.lat, pts.lon, ERA5_BANDS))
            std["land"][v]["w"].append(np.broadcast_to(w2[is_land], (len(times), int(is_land.sum()))))
            std["ocean"][v]["w"].append(np.broadcast_to(w2[~is_land], (len(times), int((~is_land).sum()))))
        if relief:
            box_slopes.append(bs)
        if 0.15 <= lf <= 0.85:  # coastal box
            contrast["demo"].append(land_sea_contrast(demo["t2m"], land, pts.lat))
            contrast["real"].append(land_sea_contrast(real["t2m"], land, pts.lat))
            contrast["boxes"].append(name)
        if is_land.any() and len(times) >= 4:
            lst = local_solar_hours(times, pts.lon)  # [t, nlon]
            jj = np.nonzero(is_land)[1]
            tau = lst[:, jj]
            diurnal["demo"].append(first_harmonic_amplitude(demo["t2m"][:, is_land], tau))
            diurnal["real"].append(first_harmonic_amplitude(real["t2m"][:, is_land], tau))
            diurnal["w"].append(w2[is_land])
    out = {"boxes": box_info, "detail_std": {}, "explained": {}, "era5_bands": {}, "contrast": {}, "diurnal": {},
           "terrain_slope": {v: {s_: (slope[v][s_][0] / slope[v][s_][1] if slope[v][s_][1] > 0 else float("nan"))
                                 for s_ in ("demo", "real")} for v in SLOPE_VARS},
           "terrain_slope_boxes": box_slopes}
    for k in ("land", "ocean"):
        for v in VARS:
            d = std[k][v]
            if not d["w"] or sum(x.size for x in d["w"]) == 0:
                out["detail_std"][f"{k}/{v}"] = {"demo": float("nan"), "real": float("nan")}
                continue
            wv = np.concatenate([x.ravel() for x in d["w"]])
            out["detail_std"][f"{k}/{v}"] = {s: weighted_std(np.concatenate([x.ravel() for x in d[s]]), wv)
                                            for s in ("demo", "real")}
    for v in VARS:
        out["explained"][v] = {s: 1.0 - ss[v][s][0] / ss[v][s][1] if ss[v][s][1] > 0 else float("nan")
                               for s in ("demo", "real")}
        pd_, pr_ = np.stack(powers[v]["demo"]), np.stack(powers[v]["real"])  # [box, t, band]
        rat = power_ratio(pd_, pr_)
        out["era5_bands"][v] = [{"band_km": [b[0], b[1]], "demo": float(np.nanmean(pd_[..., i])),
                                 "real": float(np.nanmean(pr_[..., i])), "ratio": float(rat[i])}
                                for i, b in enumerate(ERA5_BANDS)]
    if contrast["boxes"]:
        cd, cr = np.concatenate(contrast["demo"]), np.concatenate(contrast["real"])
        out["contrast"] = {"boxes": contrast["boxes"], "demo_mean_abs": float(np.mean(np.abs(cd))),
                           "real_mean_abs": float(np.mean(np.abs(cr))),
                           "correlation": float(np.corrcoef(cd, cr)[0, 1]) if cd.size > 2 else float("nan"),
                           "demo_mean": float(np.mean(cd)), "real_mean": float(np.mean(cr)), "samples": int(cd.size)}
    if diurnal["w"]:
        wv = np.concatenate(diurnal["w"])
        out["diurnal"] = {s: float(np.sum(np.concatenate(diurnal[s]) * wv) / np.sum(wv)) for s in ("demo", "real")}
        out["diurnal"]["land_points"] = int(wv.size)
    return out


def measure_tigge_spectra(world, boxes) -> dict:
    """Measure 2a: TIGGE (≈0.45°) vs the demo world averaged onto the same TIGGE cells, 2007-05-10T00."""
    import torch

    from zssd_engine.grids import era5_grid
    from zssd_engine.operators import conservative

    ds, tg = tigge_grid()
    powers = {v: {"demo": [], "real": []} for v in VARS}
    for name, _, reg in boxes:
        sub, li, lo = tg.select(reg)
        cover = Region(max(reg.south - 1.0, -90.0), min(reg.north + 1.0, 90.0),
                       float(wrap_lon(reg.west - 1.0, -180.0)), float(wrap_lon(reg.east + 1.0, -180.0)))
        fine = era5_grid().covering(cover, margin_cells=2)[0]  # 0.25° cells around the TIGGE box
        demo = world.fields(TIGGE_TIME, fine)
        op = conservative(fine, sub, dtype=torch.float64)
        for v in VARS:
            d = op(torch.as_tensor(demo[v].astype(np.float64))).numpy()
            r = np.asarray(ds[v].values[0], np.float64)[np.ix_(li, lo)]
            if v == "msl":
                d, r = d / 100.0, r / 100.0
            powers[v]["demo"].append(field_band_powers(d, sub.lat, sub.lon, TIGGE_BANDS))
            powers[v]["real"].append(field_band_powers(r, sub.lat, sub.lon, TIGGE_BANDS))
    out = {}
    for v in VARS:
        pd_, pr_ = np.stack(powers[v]["demo"]), np.stack(powers[v]["real"])
        rat = power_ratio(pd_, pr_)
        out[v] = [{"band_km": [b[0], b[1]], "demo": float(np.nanmean(pd_[..., i])), "real": float(np.nanmean(pr_[..., i])),
                   "ratio": float(rat[i])} for i, b in enumerate(TIGGE_BANDS)]
    return out


def _structure_at(msl, u, v, pts, lat0, lon0, search_km=300.0):
    """:func:`cyclone_structure` about the point of lowest msl within ``search_km`` of (lat0, lon0)."""
    lat2, lon2 = np.meshgrid(pts.lat, pts.lon, indexing="ij")
    near = great_circle_km(lat0, lon0, lat2, lon2) <= search_km
    k = np.unravel_index(np.argmin(np.where(near, msl, np.inf)), msl.shape)
    centre = (float(pts.lat[k[0]]), float(pts.lon[k[1]]))
    s = cyclone_structure(msl, np.hypot(u, v), pts.lat, pts.lon, centre)
    s["centre"] = list(centre)
    return s


def measure_ocean_only(world, boxes, times, time_idx, tigge: bool = True) -> dict | None:
    """Measures 1 and 3 on the open-ocean boxes of ``boxes`` alone (``None`` if there are none).

    Their ERA5-week rows are counted (:func:`build_rows`); the TIGGE band ratios are a diagnostic
    (``tigge=False`` skips them, as the calibration search does)."""
    ocean = [b for b in boxes if b[1] == "ocean"]
    if not ocean:
        return None
    ow = measure_detail_and_spectra(world, ocean, times, time_idx)
    return {"boxes": [b[0] for b in ocean], "detail_std_ocean": {v: ow["detail_std"][f"ocean/{v}"] for v in VARS},
            "era5_bands": ow["era5_bands"], "tigge": measure_tigge_spectra(world, ocean) if tigge else {}}


def measure_cyclones(world, n_cases: int, time_idx=None) -> dict:
    """Measure 4: the real ERA5 TC at its peak vs the ``n_cases`` demo catalog cyclones closest in depth.

    With ``time_idx`` (e.g. the tuning times only) the real TC is taken at the one of those times where
    it is deepest (searched within 800 km of its peak position) instead of at its peak."""
    from zssd_engine.real_sources import era5_week, real_cyclones

    tc = real_cyclones()[0]
    wk = era5_week()
    reg = Region.around(tc.peak_lat, tc.peak_lon, 32.0)
    pts = box_points(reg)
    if time_idx is None:
        ti = int(np.argmin(np.abs(wk["time"].values - np.datetime64(tc.peak_time))))
        search = 300.0
    else:
        lat2, lon2 = np.meshgrid(pts.lat, pts.lon, indexing="ij")
        near = great_circle_km(tc.peak_lat, tc.peak_lon, lat2, lon2) <= 800.0
        msl = era5_at(pts, list(time_idx))["msl"]
        ti = int(np.asarray(time_idx)[int(np.argmin(np.where(near, msl, np.inf).reshape(len(msl), -1).min(1)))])
        search = 800.0
    r = era5_at(pts, [ti])
    real = _structure_at(r["msl"][0], r["u10"][0], r["v10"][0], pts, tc.peak_lat, tc.peak_lon, search)
    real.update(name=tc.name, time=str(wk["time"].values[ti])[:19], min_pressure_hpa=float(r["msl"][0].min()))
    cat = sorted(world.catalog(), key=lambda c: abs(c.min_pressure - tc.min_pressure))[:n_cases]
    demo = []
    for c in cat:
        p = box_points(Region.around(c.peak_lat, c.peak_lon, 32.0))
        f = demo_at(world, [c.peak_time], p)
        s = _structure_at(f["msl"][0], f["u10"][0], f["v10"][0], p, c.peak_lat, c.peak_lon)
        s.update(name=c.name, time=str(c.peak_time), catalog_min_pressure_hpa=c.min_pressure / 100.0)
        demo.append(s)
    keys = ["central_deficit_hpa", "r_half_km", "deficit_300km_norm", "deficit_500km_norm", "deficit_800km_norm",
            "wind_200km", "wind_500km", "wind_800km", "max_wind_500km"]
    mean = {k: float(np.nanmean([d[k] for d in demo])) for k in keys}
    mean["profile_deficit_norm"] = [float(x) for x in np.nanmean(
        [np.asarray(d["profile_deficit_hpa"]) / d["central_deficit_hpa"] for d in demo], axis=0)]
    mean["profile_wind"] = [float(x) for x in np.nanmean([d["profile_wind"] for d in demo], axis=0)]
    return {"real": real, "demo_cases": demo, "demo_mean": mean, "keys": keys}


# ====================================================================== report
def build_rows(res: dict) -> list[dict]:
    """The table rows: measure, variable, demo, real, ratio, defect."""
    rows = []

    def add(measure, var, d, r, rat=None, defect=None):
        rat = ratio(d, r) if rat is None and r is not None else rat
        rows.append({"measure": measure, "variable": var, "demo": d, "real": r, "ratio": rat,
                     "defect": defect if defect is not None else is_defect(rat)})

    a = res["week"]
    for k in ("land", "ocean"):
        for v in VARS:
            x = a["detail_std"][f"{k}/{v}"]
            add(f"sub-5° detail std, {k} ({UNITS[v]})", v, x["demo"], x["real"])
    for v in VARS:
        add("detail variance explained by elevation+land detail", v, a["explained"][v]["demo"], a["explained"][v]["real"])
    for v in SLOPE_VARS:
        if v in a.get("terrain_slope", {}):
            x = a["terrain_slope"][v]
            add(f"detail per km of elevation detail, relief boxes ({UNITS[v]}/km)", v, x["demo"], x["real"])
    for v in VARS:
        for b in res["tigge"][v]:
            add(f"power {b['band_km'][1]:g}-{b['band_km'][0]:g} km, TIGGE 0.45° ({UNITS[v]}²)", v, b["demo"], b["real"],
                b["ratio"])
    for v in VARS:
        for b in a["era5_bands"][v]:
            add(f"power {b['band_km'][1]:g}-{b['band_km'][0]:g} km, ERA5 1° ({UNITS[v]}²)", v, b["demo"], b["real"],
                b["ratio"])
    if a["contrast"]:
        c = a["contrast"]
        add("land-sea contrast, mean |land − ocean| (K)", "t2m", c["demo_mean_abs"], c["real_mean_abs"])
        rows.append({"measure": "land-sea contrast, demo–real correlation (not a ratio)", "variable": "t2m",
                     "demo": c["correlation"], "real": None, "ratio": None, "defect": "n/a"})
    if a["diurnal"]:
        add("diurnal first-harmonic amplitude, land (K)", "t2m", a["diurnal"]["demo"], a["diurnal"]["real"])
    oo = res.get("ocean_only")
    if oo:  # the open-ocean boxes alone (ERA5 week): counted, since the prior's ocean noise hurts real cases
        for v in VARS:
            d = oo["detail_std_ocean"][v]
            add(f"open-ocean boxes: sub-5° detail std ({UNITS[v]})", v, d["demo"], d["real"])
        for v in VARS:
            for b in oo["era5_bands"][v]:
                add(f"open-ocean boxes: power {b['band_km'][1]:g}-{b['band_km'][0]:g} km, ERA5 1° ({UNITS[v]}²)", v,
                    b["demo"], b["real"], b["ratio"])
    cy = res["cyclone"]
    labels = {"central_deficit_hpa": ("TC central msl deficit at 1° (hPa)", "msl"),
              "r_half_km": ("TC radius of half msl deficit (km)", "msl"),
              "deficit_300km_norm": ("TC msl deficit at 300 km / central", "msl"),
              "deficit_500km_norm": ("TC msl deficit at 500 km / central", "msl"),
              "deficit_800km_norm": ("TC msl deficit at 800 km / central", "msl"),
              "wind_200km": ("TC ring-mean 10 m wind at 200 km (m/s)", "wind"),
              "wind_500km": ("TC ring-mean 10 m wind at 500 km (m/s)", "wind"),
              "wind_800km": ("TC ring-mean 10 m wind at 800 km (m/s)", "wind"),
              "max_wind_500km": ("TC max 10 m wind within 500 km (m/s)", "wind")}
    for k in cy["keys"]:
        add(labels[k][0], labels[k][1], cy["demo_mean"][k], cy["real"][k])
    return rows


def _fmt(x) -> str:
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    if not np.isfinite(x):
        return "nan"
    ax = abs(x)
    if ax != 0 and (ax >= 1e4 or ax < 1e-2):
        return f"{x:.3g}"
    return f"{x:.3f}" if ax < 10 else f"{x:.1f}"


def markdown(payload: dict) -> str:
    s = payload["settings"]
    cy = payload["results"]["cyclone"]
    real = cy["real"]
    pr = payload.get("prior")
    title = ("# Realism of the prior's unguided samples: sample/real ratios (column 'demo' = prior samples)\n"
             if pr else "# Realism of the demo world: demo/real ratios\n")
    lines = [md_header(payload), title]
    if pr:
        lines.append(f"**Prior-only samples** of `{pr['checkpoint']}` (sha256 `{pr['sha256'][:16]}…`, {pr['steps']} "
                     f"ancestral steps, no guidance, {pr['samples']} samples, {pr['seconds_per_sample']:.1f} s each) "
                     "take the demo world's place on the same boxes and dates: each 32° box is sampled at 0.25° "
                     "(conditioned on its statics and the time only) and read at the 1° points.  The cyclone rows "
                     "are n/a (an unguided sample puts no cyclone at the real one's place).\n")
    lines += [
             f"Demo world seed {s['seed']} (synthetic) vs REAL weather at the same points and dates: the ERA5 week "
             f"2026-03-25..31 at its 1° points ({s['n_times']} times) on {s['n_boxes']} boxes of 32°×32° "
             f"(|lat| ≤ 60, listed below), and the ECMWF TIGGE forecast valid {TIGGE_TIME} (≈0.45°) on the same "
             f"boxes.  msl is in hPa.  A ratio outside [{LOW}, {HIGH}] is a **realism defect**.  "
             f"Wall time {payload['seconds_total']:.0f} s.\n",
             "Measures:\n",
             "* **Sub-5° detail**: field minus the bilinear interpolation (back to the 1° points) of its conservative "
             "5° cell means; cos φ weighted std over land (land fraction > 0.5) and ocean points, pooled over boxes "
             "and times.  *Explained*: 1 − ΣSS_res/ΣSS_tot of a per-(box, time) least-squares fit of the detail on "
             "the elevation detail and land-fraction detail (same operator on the DEM and land fraction).",
             "* **Terrain slopes**: the coefficient of the elevation detail (km) in a least-squares fit of a "
             "variable's detail on [1, elevation detail, land-fraction detail], pooled over the relief boxes "
             f"(elevation detail ≥ {SLOPE_MIN_RELIEF_M:g} m somewhere) and times: msl's is the sea-level "
             "reduction's imprint on the terrain, t2m's the effective surface lapse rate.  Per box below.",
             "* **Power by band**: Hann-windowed radially averaged spectrum (`zssd_engine.metrics.power_spectrum`) per "
             "box; band power Σ P·n_modes / N_modes over wavelengths in [short, long) (the variance in the band), "
             "averaged over boxes (and times) before the ratio.  TIGGE rows: demo world conservatively averaged "
             "from 0.25° onto the TIGGE cells, same date; ERA5 rows: the 1° points, all times.",
             "* **Land–sea contrast**: t2m land mean minus ocean mean per coastal box (land fraction 0.15–0.85) and "
             "time; ratio of the mean |contrast|, and the demo–real correlation of the contrasts.",
             "* **Diurnal amplitude**: per land point, least-squares fit of mean + 24 h harmonic in local solar time "
             "to t2m over the week's times; mean amplitude over land points.",
             f"* **Cyclone structure**: ring means (100 km bins to 1500 km, great-circle distance from the 1° point "
             f"of lowest msl) of the msl deficit (environment = mean msl at 1200–1500 km, minus ring) and of the 10 m "
             f"wind speed, around the real TC {real['name']} at its peak ({real['time']}, centre {real['centre']}, "
             f"{real['min_pressure_hpa']:.0f} hPa) vs the mean over the {len(cy['demo_cases'])} demo catalog cyclones "
             f"whose catalog minimum pressure is closest ({', '.join(d['name'] for d in cy['demo_cases'])}), "
             f"each at its peak time on its box's 1° points.\n",
             "| measure | variable | demo | real | ratio | defect |", "|---|---|---|---|---|---|"]
    for r in payload["rows"]:
        d = f"**{r['defect']}**" if r["defect"] == "yes" else r["defect"]
        lines.append(f"| {r['measure']} | {r['variable']} | {_fmt(r['demo'])} | {_fmt(r['real'])} | "
                     f"{_fmt(r['ratio'])} | {d} |")
    n_def = sum(r["defect"] == "yes" for r in payload["rows"])
    n_rat = sum(r["defect"] in ("yes", "no") for r in payload["rows"])
    lines.append(f"\n**{n_def} of {n_rat} ratios are realism defects** (outside [{LOW}, {HIGH}]).\n")
    oo = payload["results"].get("ocean_only")
    if oo:
        lines.append(f"Diagnostic, not counted: TIGGE band ratios on the open-ocean boxes only ({', '.join(oo['boxes'])}; "
                     "one date and three boxes, too few to count; their ERA5-week ratios are counted above):\n")
        lines.append("| variable | " + " | ".join(f"TIGGE {b[1]:g}-{b[0]:g} km" for b in TIGGE_BANDS) + " |")
        lines.append("|---" * (1 + len(TIGGE_BANDS)) + "|")
        for v in VARS:
            lines.append(f"| {v} | " + " | ".join(_fmt(b["ratio"]) for b in oo["tigge"][v]) + " |")
        lines.append("")
    lines.append("Boxes (1° points; land fraction of the points; highest DEM point):\n")
    lines.append("| box | kind | S,N,W,E | land | max DEM (m) |")
    lines.append("|---|---|---|---|---|")
    for b in payload["results"]["week"]["boxes"]:
        lines.append(f"| {b['name']} | {b['kind']} | {b['region']} | {b['land_fraction']:.2f} | {b['max_dem_m']:.0f} |")
    tsb = payload["results"]["week"].get("terrain_slope_boxes")
    if tsb:
        lines.append("\nTerrain slopes per relief box (detail per km of elevation detail, land detail held fixed):\n")
        lines.append("| box | msl demo (hPa/km) | msl real | t2m demo (K/km) | t2m real |")
        lines.append("|---|---|---|---|---|")
        for b in tsb:
            lines.append(f"| {b['name']} | {b['msl/demo']:+.2f} | {b['msl/real']:+.2f} | {b['t2m/demo']:+.2f} | "
                         f"{b['t2m/real']:+.2f} |")
    lines.append("\nDemo cyclones (at the 1° points):\n")
    lines.append("| cyclone | peak time | catalog min p (hPa) | central deficit (hPa) | r½ (km) | max wind (m/s) |")
    lines.append("|---|---|---|---|---|---|")
    for d in cy["demo_cases"]:
        lines.append(f"| {d['name']} | {d['time']} | {d['catalog_min_pressure_hpa']:.0f} | {d['central_deficit_hpa']:.1f} | "
                     f"{d['r_half_km']:.0f} | {d['max_wind_500km']:.1f} |")
    lines.append(f"| real {real['name']} | {real['time']} | {real['min_pressure_hpa']:.0f} | "
                 f"{real['central_deficit_hpa']:.1f} | {real['r_half_km']:.0f} | {real['max_wind_500km']:.1f} |")
    lines.append(f"\nDemo world at the 1° points vs its 0.25° box subsampled at every 4th point: max |difference| "
                 f"{payload['results']['points_check_max_abs']:.2g} (K, hPa, m/s).\n")
    if payload.get("png"):
        lines.append(f"![realism]({payload['png']})\n")
    lines.append("ERA5: Contains modified Copernicus Climate Change Service information, CC-BY 4.0 (ECMWF). "
                 "TIGGE: ECMWF, research use.\n")
    return "\n".join(lines)


def plot(payload: dict, path: Path) -> bool:
    """Band ratios and the TC radial profiles (matplotlib, optional)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    res = payload["results"]
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    for v in VARS:
        bt = res["tigge"][v]
        be = res["week"]["era5_bands"][v]
        l, = ax[0].plot([np.sqrt(b["band_km"][0] * b["band_km"][1]) for b in bt], [b["ratio"] for b in bt], "o-", label=f"{v} TIGGE")
        ax[0].plot([np.sqrt(b["band_km"][0] * b["band_km"][1]) for b in be], [b["ratio"] for b in be], "s--",
                   color=l.get_color(), label=f"{v} ERA5 1°")
    ax[0].axhspan(LOW, HIGH, color="0.9")
    ax[0].set(xscale="log", yscale="log", xlabel="wavelength (km)",
              ylabel=("prior-sample" if payload.get("prior") else "demo") + " / real power", title="spectral power ratio")
    ax[0].legend(fontsize=7)
    cy = res["cyclone"]
    r = np.asarray(cy["real"]["profile_r_km"])
    ax[1].plot(r, np.asarray(cy["real"]["profile_deficit_hpa"]) / cy["real"]["central_deficit_hpa"], "k-o", label="real ERA5 TC")
    demo = cy["demo_mean"]
    has_demo = np.size(demo.get("profile_wind", [])) == r.size  # prior-only samples have no cyclone profile
    if has_demo:
        ax[1].plot(r, demo["profile_deficit_norm"], "r-s", label="demo mean")
    ax[1].set(xlabel="distance (km)", ylabel="msl deficit / central", title="TC msl deficit")
    ax[1].legend()
    ax[2].plot(r, cy["real"]["profile_wind"], "k-o", label="real ERA5 TC")
    if has_demo:
        ax[2].plot(r, demo["profile_wind"], "r-s", label="demo mean")
    ax[2].set(xlabel="distance (km)", ylabel="ring-mean 10 m wind (m/s)", title="TC wind")
    ax[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--boxes", type=int, default=len(BOXES), help=f"use the first N of the {len(BOXES)} boxes")
    ap.add_argument("--times", type=int, default=1, help="use every N-th of the ERA5 week's 24 times (default 1: all)")
    ap.add_argument("--tc-cases", type=int, default=5, help="demo cyclones closest in depth to the real one")
    ap.add_argument("--seed", type=int, default=0, help="demo world seed")
    ap.add_argument("--tuning-times", action="store_true",
                    help="use only the real week's tuning times (zssd_engine.evaluate.REAL_TUNING_TIMES, never scored), "
                         "the real TC at the deepest of them: the mode the demo world is calibrated in")
    ap.add_argument("--name", default="realism", help="output name under benchmarks/results/")
    ap.add_argument("--checkpoint", default=None,
                    help="measure prior-only samples of this checkpoint in the demo world's place (cyclone rows n/a)")
    ap.add_argument("--steps", type=int, default=50, help="sampling steps with --checkpoint")
    ap.add_argument("--no-png", action="store_true")
    args = ap.parse_args(argv)

    import pandas as pd

    from zssd_engine.demo_world import DemoWorld
    from zssd_engine.real_sources import era5_week

    t0 = _time.perf_counter()
    payload = header()
    world = DemoWorld(seed=args.seed)
    source = PriorSource(args.checkpoint, args.steps, args.seed, world.statics) if args.checkpoint else world
    boxes = BOXES[: max(1, args.boxes)]
    wk = era5_week()
    if args.tuning_times:
        from zssd_engine.evaluate import REAL_TUNING_TIMES

        time_idx = np.asarray(REAL_TUNING_TIMES)
    else:
        time_idx = np.arange(0, wk.sizes["time"], max(1, args.times))
    times = list(pd.DatetimeIndex(wk["time"].values[time_idx]))
    check = max(check_points(source, times[0], boxes[0][2]), check_points(source, times[-1], BOXES[14][2]))
    print(f"points check: max |diff| {check:.3g}", flush=True)
    week = measure_detail_and_spectra(source, boxes, times, time_idx)
    print(f"week measures done ({_time.perf_counter() - t0:.0f} s)", flush=True)
    tigge = measure_tigge_spectra(source, boxes)
    print(f"TIGGE spectra done ({_time.perf_counter() - t0:.0f} s)", flush=True)
    cyc = measure_cyclones(world, args.tc_cases, time_idx if args.tuning_times else None)
    if args.checkpoint:  # unguided samples put no cyclone anywhere in particular: no structure to compare
        cyc["demo_mean"] = {k: float("nan") for k in cyc["demo_mean"]}
        cyc["demo_cases"] = []
    print(f"cyclones done ({_time.perf_counter() - t0:.0f} s)", flush=True)
    ocean_only = measure_ocean_only(source, boxes, times, time_idx)
    results = {"week": week, "tigge": tigge, "cyclone": cyc, "points_check_max_abs": check, "ocean_only": ocean_only}
    if args.checkpoint:
        from zssd_engine.pipeline import prior_sha256

        payload["prior"] = {"checkpoint": args.checkpoint, "sha256": prior_sha256(source.prior), "steps": args.steps,
                            "samples": source.n_samples, "seconds_per_sample": source.seconds / max(source.n_samples, 1)}
    payload.update(settings={"seed": args.seed, "n_boxes": len(boxes), "boxes": [b[0] for b in boxes],
                             "n_times": len(times), "time_stride": args.times, "tuning_times_only": args.tuning_times, "tc_cases": args.tc_cases,
                             "coarse_res": COARSE_RES, "tigge_time": TIGGE_TIME, "ratio_ok": [LOW, HIGH]},
                   results=results)
    payload["rows"] = build_rows(payload["results"])
    payload["seconds_total"] = _time.perf_counter() - t0
    payload["png"] = None
    if not args.no_png:
        from benchmarks._common import RESULTS

        RESULTS.mkdir(parents=True, exist_ok=True)
        png = RESULTS / f"{args.name}.png"
        if plot(payload, png):
            payload["png"] = png.name
    payload["seconds_total"] = _time.perf_counter() - t0
    js, md = write(args.name, payload, markdown(payload))
    print(markdown(payload).split("| measure |", 1)[1].split("\nBoxes", 1)[0])
    print(f"wrote {js} and {md} in {payload['seconds_total']:.0f} s")
    return 0


if __name__ == "__main__":
    main()
