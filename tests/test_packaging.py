"""Packaging: what the wheel installs (``engine``, ``zssd_app``; the demo pack as ``zssd_engine.assets``) and
that an installed wheel works outside the repository (``zssd cases``, the data, ``zssd serve``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, free_port

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
#: What the repository has but no wheel may carry.
NOT_SHIPPED = ("tests/", "benchmarks/", "runs/", "scripts/", "configs/", "assets/")


def _pack_files() -> set[str]:
    """Every file of the repository's demo pack ``assets/``, relative to it (no caches)."""
    root = ROOT / "assets"
    return {p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def test_the_package_list_names_every_package_folder():
    """``packages`` is explicit (the folder ``engine/`` installs as ``zssd_engine``, ``assets/`` as
    ``zssd_engine.assets``): it must name every folder of ``engine/`` and ``zssd_app/`` that holds an
    ``__init__.py``, and nothing else but ``zssd_engine.assets``."""
    found = {p.parent.relative_to(ROOT).as_posix().replace("/", ".")
             for top in ("engine", "zssd_app") for p in (ROOT / top).rglob("__init__.py")}
    found = {("zssd_engine" + f[len("engine"):]) if f == "engine" or f.startswith("engine.") else f for f in found}
    assert set(SETUPTOOLS["packages"]) == found | {"zssd_engine.assets"}
    assert SETUPTOOLS["package-dir"] == {"zssd_engine": "engine", "zssd_engine.assets": "assets"}


def test_package_data_patterns_cover_the_whole_pack():
    """Each file of ``assets/`` matches a package-data pattern of ``zssd_engine.assets`` (else the wheel
    would lack it); the slow test below checks the built wheel itself."""
    root = ROOT / "assets"
    matched = {p.relative_to(root).as_posix() for pat in SETUPTOOLS["package-data"]["zssd_engine.assets"]
               for p in root.glob(pat) if p.is_file()}
    assert _pack_files() - {"__init__.py"} <= matched, sorted(_pack_files() - matched)


def test_readers_find_the_pack_through_engine_paths():
    from zssd_engine.gcm import REAL_FILES
    from zssd_engine.paths import ASSETS, NATURAL_EARTH_DIR, assets_dir
    from zssd_engine.pipeline import DEFAULT_CHECKPOINT
    from zssd_engine.readers import assets_gcm_dir
    from zssd_engine.real_sources import REAL_DIR

    assert ASSETS == assets_dir() and (ASSETS / "static_0p25.npz").is_file()
    for p in (DEFAULT_CHECKPOINT, REAL_DIR, assets_gcm_dir(), NATURAL_EARTH_DIR, *REAL_FILES["MPI-ESM-LR"]):
        assert p.exists() and p.resolve().is_relative_to(ASSETS), p


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``pip wheel . --no-deps --no-build-isolation`` (offline) of a copy of the working tree.

    A copy, so the build's ``build/`` folder (which setuptools never cleans) cannot leak stale files
    into the wheel, and the checkout is left as it was.
    """
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "runs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "artifacts", ".venv"))
    r = _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "--no-index",
              "-q", "-w", tmp / "dist"], cwd=src)
    assert r.returncode == 0, r.stdout + r.stderr
    (whl,) = (tmp / "dist").glob("zssd_explorer-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A venv (system site-packages for the dependencies) with the wheel installed in it, not the checkout."""
    env_dir = tmp_path_factory.mktemp("venv") / "venv"
    r = _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", env_dir])
    assert r.returncode == 0, r.stderr
    py = env_dir / "bin" / "python"
    # --ignore-installed: the editable install in the system site-packages must not count as satisfying it
    r = _run([py, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", wheel])
    assert r.returncode == 0, r.stdout + r.stderr
    return env_dir


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ZSSD_PRIOR", "ZSSD_CONFIG",
                                                            "ZSSD_GCM_FILES")}
    return dict(env, OMP_NUM_THREADS="1", MPLBACKEND="Agg")


@pytest.mark.slow
def test_wheel_holds_the_packages_and_the_whole_pack_and_nothing_else(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    dist_info = [n for n in names if ".dist-info/" in n]
    assert {n.split("/")[0] for n in names if n not in dist_info} == {"zssd_engine", "zssd_app"}
    top = zipfile.ZipFile(wheel).read(next(n for n in dist_info if n.endswith("top_level.txt"))).decode()
    assert top.split() == ["zssd_app", "zssd_engine"]
    assert not [n for n in names if n.startswith(NOT_SHIPPED)]
    shipped = {n[len("zssd_engine/assets/"):] for n in names if n.startswith("zssd_engine/assets/")}
    assert _pack_files() <= shipped, sorted(_pack_files() - shipped)
    assert "zssd_engine/samplers/guidance_defaults.json" in names
    for pkg in SETUPTOOLS["packages"]:
        assert f"{pkg.replace('.', '/')}/__init__.py" in names, pkg


@pytest.mark.slow
def test_installed_wheel_runs_outside_the_repository(venv, tmp_path):
    py, site = venv / "bin" / "python", next((venv / "lib").glob("python3*/site-packages"))
    probe = """
import hashlib, importlib.util, json
import zssd_engine, zssd_engine.paths
from zssd_engine.pipeline import DEFAULT_CHECKPOINT, default_prior, prior_sha256
from zssd_engine.real_sources import era5_week
from zssd_engine.statics import load_statics
s = load_statics()
spec = importlib.util.find_spec("assets")
generic = importlib.util.find_spec("engine")
print(json.dumps({"engine": zssd_engine.__file__, "generic_engine": None if generic is None else generic.origin, "assets": str(zssd_engine.paths.ASSETS), "dem": list(s.dem.shape),
                  "land_max": float(s.land.max()), "prior_sha": prior_sha256(default_prior()),
                  "file_sha": hashlib.sha256(DEFAULT_CHECKPOINT.read_bytes()).hexdigest(),
                  "era5_times": era5_week().sizes["time"], "top_assets": None if spec is None else spec.origin}))
"""
    r = _run([py, "-c", probe], cwd=tmp_path, env=_env())
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert Path(got["engine"]).is_relative_to(site), got  # imported from the venv, not the checkout
    assert Path(got["assets"]) == site / "zssd_engine" / "assets"
    assert got["generic_engine"] is None  # no top-level `engine` package in the venv
    assert got["dem"] == [721, 1440] and got["land_max"] == 1.0 and got["era5_times"] == 24
    assert got["prior_sha"] == got["file_sha"]  # the shipped checkpoint loads and matches its card
    assert not (site / "assets").exists()  # no top-level `assets` package in the venv
    assert got["top_assets"] is None or not Path(got["top_assets"]).is_relative_to(venv)

    r = _run([venv / "bin" / "zssd", "cases"], cwd=tmp_path, env=_env())
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("name\t") and lines[1].startswith("ERA5-TC") and "real (ERA5-x20)" in lines[1]
    assert len(lines) > 5 and all(line.endswith("demo world (synthetic)") for line in lines[2:])


@pytest.mark.slow
def test_installed_wheel_serves_the_dashboard(venv, tmp_path):
    port = free_port()
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen([str(venv / "bin" / "python"), "-m", "zssd_engine.cli", "serve", "--port", str(port),
                             "--prior", "tiny", "--no-bcsd"], cwd=tmp_path, env=_env(), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        html, deadline = None, time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/app", timeout=60) as resp:
                    if resp.status == 200:
                        html = resp.read().decode()
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(2)
        log.seek(0)
        out = log.read()
        assert html is not None, f"no 200 from /app (exit {proc.poll()}):\n{out[-3000:]}"
        assert "<title>ZSSD Explorer</title>" in html and "bokeh" in html.lower()
        # `zssd serve` became `panel serve` of the app file installed in the venv
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        site = next((venv / "lib").glob("python3*/site-packages"))
        assert str(site / "zssd_app" / "app.py").encode() in cmdline, cmdline
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        log.close()
