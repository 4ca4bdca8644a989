"""``zssd serve``: start the ZSSD Explorer dashboard (``panel serve zssd_app/app.py``).

Panel is imported only by the server process this command starts, never when
the ``engine`` package (or this module) is imported.  Server-side settings
(which GCM files the app may read, the prior, the number of concurrent runs)
are passed to the app through environment variables that only the operator
controls (see :mod:`zssd_app.config`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["add_parser", "run", "build_command", "APP_PATH"]

APP_PATH = Path(__file__).resolve().parents[2] / "zssd_app" / "app.py"


def add_parser(sub) -> None:
    """Register ``zssd serve`` on an argparse sub-parser collection."""
    p = sub.add_parser("serve", help="start the interactive dashboard (Panel server)",
                       description="Start the ZSSD Explorer dashboard; open http://ADDRESS:PORT/app in a browser.")
    p.add_argument("--port", type=int, default=5006, help="port to listen on (default 5006)")
    p.add_argument("--address", default=None, help="address to bind (default: Panel's, reachable as localhost); "
                   "use 0.0.0.0 to serve other machines (and add --allow-websocket-origin)")
    p.add_argument("--allow-websocket-origin", action="append", default=None, metavar="HOST[:PORT]",
                   help="host allowed to open the websocket (repeatable); needed when the page is reached "
                        "under another name than localhost, e.g. --allow-websocket-origin myhost:5006")
    p.add_argument("--prior", default=None, metavar="tiny|PATH",
                   help="prior checkpoint (default: the shipped demo checkpoint; 'tiny' = untrained network "
                        "for smoke tests); sets ZSSD_PRIOR")
    p.add_argument("--gcm-files", default=None, metavar="NAME=a.nc,b.nc;…",
                   help="extra CF NetCDF GCM files the app may read (sets ZSSD_GCM_FILES)")
    p.add_argument("--config", default=None, metavar="TOML", help="server configuration file (sets ZSSD_CONFIG)")
    p.add_argument("--max-runs", type=int, default=None,
                   help="concurrent sampling runs across all sessions (default 1; sets ZSSD_MAX_RUNS)")
    p.add_argument("--no-bcsd", action="store_true",
                   help="do not train the BCSD baseline (≈20 s of CPU per new case; sets ZSSD_BCSD=0)")
    p.add_argument("--show", action="store_true", help="open a browser tab")
    p.add_argument("--num-procs", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(_run=run)


def build_command(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The ``panel serve`` command line and environment for ``args`` (no side effects)."""
    if not APP_PATH.is_file():
        raise FileNotFoundError(f"dashboard app not found at {APP_PATH}")
    if not (0 < int(args.port) < 65536):
        raise ValueError(f"--port must be 1–65535, got {args.port}")
    # --warm runs the app once at start-up: the prior, demo world and first case are cached before a user comes
    cmd = [sys.executable, "-m", "panel", "serve", str(APP_PATH), "--port", str(int(args.port)), "--warm"]
    if args.address:
        cmd += ["--address", args.address]
    origins = list(args.allow_websocket_origin or [])
    for o in origins:
        cmd += ["--allow-websocket-origin", o]
    if args.show:
        cmd.append("--show")
    if getattr(args, "num_procs", None):
        cmd += ["--num-procs", str(int(args.num_procs))]
    env = dict(os.environ)
    if args.prior:
        if args.prior != "tiny" and not Path(args.prior).expanduser().exists():
            raise FileNotFoundError(f"--prior {args.prior}: no such checkpoint")
        env["ZSSD_PRIOR"] = args.prior
    if args.gcm_files:
        env["ZSSD_GCM_FILES"] = args.gcm_files
    if args.config:
        if not Path(args.config).is_file():
            raise FileNotFoundError(f"--config {args.config}: no such file")
        env["ZSSD_CONFIG"] = str(Path(args.config).resolve())
    if args.max_runs is not None:
        if args.max_runs < 1:
            raise ValueError(f"--max-runs must be at least 1, got {args.max_runs}")
        env["ZSSD_MAX_RUNS"] = str(int(args.max_runs))
    if getattr(args, "no_bcsd", False):
        env["ZSSD_BCSD"] = "0"
    root = str(APP_PATH.parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return cmd, env


def run(args: argparse.Namespace) -> int:
    """Become the Panel server (``os.execve`` on POSIX); returns its exit code elsewhere."""
    try:
        import importlib.util

        if importlib.util.find_spec("panel") is None:
            raise ImportError
    except ImportError:
        raise FileNotFoundError("panel is not installed: `pip install panel holoviews` (or `make serve`)") from None
    cmd, env = build_command(args)
    host = args.address or "localhost"
    print(f"ZSSD Explorer: http://{'localhost' if host in ('0.0.0.0', '::') else host}:{args.port}/app "
          f"(Ctrl-C to stop)", file=sys.stderr)
    if shutil.which(cmd[0]) is None and not Path(cmd[0]).exists():  # pragma: no cover
        raise FileNotFoundError(f"python interpreter {cmd[0]} not found")
    sys.stderr.flush()
    if os.name == "posix" and not getattr(args, "no_exec", False):
        os.execve(cmd[0], cmd, env)  # become the server: signals (Ctrl-C, SIGTERM) reach it directly
    proc = subprocess.Popen(cmd, env=env)  # pragma: no cover - non-POSIX
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
        return 130
