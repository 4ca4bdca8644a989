"""Travelling plane waves: the random fields of the demo world's weather and their spectra.

A :class:`_Modes` set is a sum of amplitude-modulated plane waves on (λ, φ) whose amplitudes
follow a spectrum (:func:`_pressure_spectrum`: ∝ k⁻³ kinetic energy at synoptic scales, k^(−5/3)
in the mesoscale; :func:`_meso_spectrum`, :func:`_meso_pressure_spectrum`); drawn once per
world by :func:`_make_modes` and evaluated (with derivatives) on any grid at any time.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from .constants import PRESSURE_TAIL, R_EARTH

__all__ = ["_Modes", "_make_modes", "_pressure_spectrum", "_meso_spectrum", "_meso_pressure_spectrum"]

#: cos of the reference latitude (40°) at which a mode's zonal index ``m`` maps to a wavenumber.
_COS_REF = np.cos(np.deg2rad(40.0))


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

    def split(self, wavelength_km: float) -> tuple["_Modes", "_Modes"]:
        """``(long, short)``: the modes with wavelength at least / below ``wavelength_km`` (their sum is the field)."""
        k = np.hypot(self.m / (R_EARTH * _COS_REF), self.l / R_EARTH)
        long_ = 2 * np.pi / np.maximum(k, 1e-30) >= wavelength_km * 1e3
        long_modes, short_modes = (_Modes(**{f.name: getattr(self, f.name)[sel] for f in fields(self)})
                                   for sel in (long_, ~long_))
        return long_modes, short_modes

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
    m = np.round(k * np.cos(ang) * R_EARTH * _COS_REF)
    l = k * np.sin(ang) * R_EARTH
    amp = np.sqrt(spectrum(k))
    amp = amp / np.sqrt(np.sum(amp ** 2))  # unit variance overall
    kx = m / (R_EARTH * _COS_REF)
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
    e = (k / k0) ** 2 / (1 + (k / k0) ** 2) ** 2.5 + PRESSURE_TAIL * (k / km) ** (-5.0 / 3.0) * (k > k0)
    return e / k


def _meso_spectrum(k: np.ndarray) -> np.ndarray:
    return (k / (2 * np.pi / 1.5e6)) ** (-2.0 / 3.0) / (1 + (2 * np.pi / 1.5e6 / k) ** 2)


def _meso_pressure_spectrum(k: np.ndarray) -> np.ndarray:
    """Amplitude² per log-k of the mesoscale pressure field: ∝ k^(−1.5) below ~2000 km."""
    k1 = 2 * np.pi / 2.0e6
    return (k / k1) ** (-1.5) / (1 + (k1 / k) ** 2)
