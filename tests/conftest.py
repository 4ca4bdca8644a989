"""Shared fixtures and constants of the test suite.

Constants (import them with ``from conftest import …``; pytest puts ``tests/`` on ``sys.path``):

* ``DEMO_TIME``, ``DEMO_REGION`` — a small held-out demo case (16x16 cells of 0.25°, crossing 5°
  boundaries in both directions: 2x2 unified cells).
* ``TC_TIME``, ``TC_REGION`` — the real ERA5 week's tropical cyclone off north-west Australia
  (128x128 cells); ``needs_real_weather`` skips a module or test when that pack is not built.
* ``GCM_DIR``, ``REAL_GCM_FILES`` — the real CMIP5 MPI-ESM-LR files (the shared data folder when
  present, else the demo pack's copy); ``needs_real_gcm`` skips when they are missing.
* ``free_port()`` — a free local TCP port.

Fixtures: ``tiny`` (the untrained ``Prior.tiny(0)``), ``world`` (``DemoWorld(0)``), both built once
per session (neither is changed by the tests that use them).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from zssd_engine.paths import ASSETS
from zssd_engine.real_sources import ERA5_WEEK

ROOT = Path(__file__).resolve().parents[1]

DEMO_TIME = "2021-08-10T06:00"
DEMO_REGION = "12,16,122,126"

TC_TIME = "2026-03-26T05:00"
TC_REGION = "-35,-3,100,132"
needs_real_weather = pytest.mark.skipif(not ERA5_WEEK.exists(), reason="real-weather data pack not built")


def _gcm_dir() -> Path:
    shared = ROOT.parent / "shared" / "data" / "gcm"
    if (shared / "tas_rectilinear_grid_2D.nc").exists():
        return shared
    return ASSETS / "gcm"


GCM_DIR = _gcm_dir()
REAL_GCM_FILES = [GCM_DIR / f"{v}_rectilinear_grid_2D.nc" for v in ("tas", "uas", "vas")]
needs_real_gcm = pytest.mark.skipif(not all(p.exists() for p in REAL_GCM_FILES),
                                    reason="real MPI-ESM-LR files not available")


def free_port() -> int:
    """A TCP port nobody listens on now (the OS's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny():
    """The untrained tiny prior (``Prior.tiny(0)``): fast, deterministic, for plumbing tests."""
    from zssd_engine.prior.model import Prior

    return Prior.tiny(0)


@pytest.fixture(scope="session")
def world():
    """The demo world of seed 0."""
    from zssd_engine.demo_world import DemoWorld

    return DemoWorld(0)
