"""Where the shipped demo pack lives: the one place every reader asks for it.

The data folder ``assets/`` of the repository (static fields, checkpoints, the CMIP5 files,
Natural Earth coastlines, the real-weather pack) is installed as the package data of
``zssd_engine.assets`` (``[tool.setuptools.package-dir]`` in ``pyproject.toml``), so a wheel puts it
at ``site-packages/zssd_engine/assets`` and no top-level ``assets`` package is installed.
:func:`assets_dir` finds it wherever the engine runs:

* a regular (wheel) install or the editable install: ``importlib.resources.files("zssd_engine.assets")``;
* the folder ``engine/`` imported from a checkout under its folder name, without installing:
  ``zssd_engine.assets`` is not importable there, and the folder is the checkout's ``assets/`` next
  to ``engine/``.

Writers of the pack (``scripts/build_assets.py``) write the checkout's ``assets/``, never an
installed copy.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
from functools import lru_cache
from pathlib import Path

__all__ = ["ASSETS", "NATURAL_EARTH_DIR", "assets_dir"]

_PACKAGE = "zssd_engine.assets"


@lru_cache(maxsize=1)
def assets_dir() -> Path:
    """The demo pack's folder on the file system (``zssd_engine.assets``' data, or the checkout's ``assets/``).

    Raises ``FileNotFoundError`` when the package is installed somewhere that is not a folder (a
    zip import): NetCDF, GRIB and Zarr readers need real files.
    """
    try:
        found = importlib.util.find_spec(_PACKAGE) is not None
    except ModuleNotFoundError:  # pragma: no cover - only if ``zssd_engine`` itself cannot be found
        found = False
    if not found:
        return Path(__file__).resolve().parents[1] / "assets"
    root = importlib.resources.files(_PACKAGE)
    if not isinstance(root, Path):
        raise FileNotFoundError(f"the demo pack ({_PACKAGE}) is installed as {root!r}, not as a folder; "
                                "install the wheel unzipped (pip does)")
    return root.resolve()


#: The demo pack's folder (:func:`assets_dir`).
ASSETS: Path = assets_dir()
#: The Natural Earth shapefiles of the pack (the app's coastlines, cartopy's offline data).
NATURAL_EARTH_DIR: Path = ASSETS / "natural_earth"
