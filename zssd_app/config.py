"""Server configuration of the dashboard, set by the *server operator* only.

Nothing here can be changed from the browser: the GCM files the server may
read are fixed when the server starts, from

* ``ZSSD_GCM_FILES`` — ``"NAME=/path/a.nc,/path/b.nc;OTHER=/path/c.nc"``
  (source id, ``=``, comma-separated CF NetCDF files; entries separated by ``;``);
* ``ZSSD_CONFIG`` — a TOML file::

      max_concurrent_runs = 1
      max_steps = 250
      max_members = 8
      prior = "tiny"            # or a checkpoint path; default: the shipped checkpoint
      export_dir = "/tmp/zssd-exports"
      bcsd = true

      [gcm_files]
      MYMODEL = ["/data/tas_day_MYMODEL.nc", "/data/psl_day_MYMODEL.nc"]

Environment variables override the TOML file: ``ZSSD_PRIOR`` (``tiny`` or a
checkpoint path), ``ZSSD_MAX_RUNS``, ``ZSSD_EXPORT_DIR``, ``ZSSD_BCSD`` (``0`` turns the
BCSD baseline off: it trains for ~20 s of CPU on every new case).  A configured file
that is missing is reported (``ServerConfig.problems``) and left out; it is
never fatal.  A user in the browser only ever picks a source *name*.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

__all__ = ["ServerConfig", "load_config", "parse_gcm_files"]


@dataclass(frozen=True)
class ServerConfig:
    gcm_files: dict[str, list[Path]] = field(default_factory=dict)
    prior: str | None = None            # "tiny", a checkpoint path, or None (default checkpoint)
    max_concurrent_runs: int = 1
    max_steps: int = 250
    max_members: int = 8
    min_region_deg: float = 16.0
    max_region_deg: float = 64.0
    bcsd: bool = True                   # train/show the BCSD baseline (≈20 s of CPU per new case)
    export_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "zssd-exports")
    problems: tuple[str, ...] = ()


def parse_gcm_files(text: str) -> tuple[dict[str, list[Path]], list[str]]:
    """Parse ``NAME=a.nc,b.nc;OTHER=c.nc`` → ``({NAME: [paths]}, problems)``."""
    out: dict[str, list[Path]] = {}
    problems: list[str] = []
    for entry in filter(None, (e.strip() for e in (text or "").split(";"))):
        name, sep, paths = entry.partition("=")
        name = name.strip()
        if not sep or not name:
            problems.append(f"ZSSD_GCM_FILES entry {entry!r} is not NAME=file[,file…]")
            continue
        files = [Path(p.strip()).expanduser() for p in paths.split(",") if p.strip()]
        if not files:
            problems.append(f"ZSSD_GCM_FILES entry {name!r} lists no file")
            continue
        out[name] = files
    return out, problems


def _check_files(gcm: dict[str, list[Path]], problems: list[str]) -> dict[str, list[Path]]:
    from zssd_engine.gcm import GCM_SOURCES

    ok: dict[str, list[Path]] = {}
    for name, files in gcm.items():
        if name in GCM_SOURCES:
            problems.append(f"configured GCM {name!r} clashes with a built-in source id; rename it")
            continue
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            problems.append(f"configured GCM {name!r}: file(s) not found: {', '.join(missing)}")
            continue
        ok[name] = files
    return ok


def load_config(environ: dict[str, str] | None = None) -> ServerConfig:
    """Read the operator's configuration (TOML via ``ZSSD_CONFIG``, then environment overrides)."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    data: dict = {}
    cfg_path = env.get("ZSSD_CONFIG")
    if cfg_path:
        try:
            with open(cfg_path, "rb") as f:
                data = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as e:
            problems.append(f"ZSSD_CONFIG {cfg_path!r} could not be read: {e}")
    gcm: dict[str, list[Path]] = {}
    for name, files in (data.get("gcm_files") or {}).items():
        files = [files] if isinstance(files, str) else list(files)
        gcm[str(name)] = [Path(str(p)).expanduser() for p in files]
    env_gcm, env_problems = parse_gcm_files(env.get("ZSSD_GCM_FILES", ""))
    gcm.update(env_gcm)
    problems += env_problems
    gcm = _check_files(gcm, problems)

    def num(key_env: str, key_toml: str, default, cast):
        raw = env.get(key_env, data.get(key_toml, default))
        try:
            return cast(raw)
        except (TypeError, ValueError):
            problems.append(f"{key_env or key_toml}={raw!r} is not a number; using {default}")
            return default

    prior = env.get("ZSSD_PRIOR") or data.get("prior") or None
    export_dir = Path(env.get("ZSSD_EXPORT_DIR") or data.get("export_dir")
                      or Path(tempfile.gettempdir()) / "zssd-exports")
    return ServerConfig(
        gcm_files=gcm, prior=prior,
        max_concurrent_runs=max(1, num("ZSSD_MAX_RUNS", "max_concurrent_runs", 1, int)),
        max_steps=max(2, num("", "max_steps", 250, int)),
        max_members=max(1, num("", "max_members", 8, int)),
        min_region_deg=num("", "min_region_deg", 16.0, float),
        max_region_deg=num("", "max_region_deg", 64.0, float),
        bcsd=str(env.get("ZSSD_BCSD", data.get("bcsd", True))).strip().lower() not in ("0", "false", "no", "off"),
        export_dir=export_dir, problems=tuple(problems))


@lru_cache(maxsize=1)
def server_config() -> ServerConfig:
    """The configuration of this server process (read once)."""
    return load_config()
