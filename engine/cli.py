"""``zssd`` command line: ``cases``, ``downscale``, ``evaluate``, ``train``, ``batch``, ``serve``.

Each sub-command lives in its own module exposing ``add_parser(subparsers)``
and ``run(args) -> int``; this file only wires them.  Errors that come from bad
input (:class:`ValueError` subclasses: ``DataError``, ``GridError``,
``CheckpointError``…) are printed as one line ``zssd: error: …`` with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main", "SUBCOMMANDS"]

#: sub-command -> module providing add_parser/run
SUBCOMMANDS: dict[str, str] = {
    "cases": "engine.cli",
    "downscale": "engine.pipeline",
    "evaluate": "engine.evaluate",
    "train": "engine.prior.train",
    "batch": "engine.batch",
    "serve": "engine.serve_cmd",
}


def add_parser(sub) -> None:
    p = sub.add_parser("cases", help="list the cyclone cases: the real ERA5 ones first, then the demo world's "
                                     "(held-out years)")
    p.add_argument("--years", default=None, help="comma-separated years (default: the held-out demo years)")
    p.add_argument("--seed", type=int, default=0, help="demo world seed")
    p.set_defaults(_run=run)


def run(args) -> int:
    from .demo_world import HELDOUT_YEARS, DemoWorld

    years = [int(y) for y in args.years.split(",")] if args.years else list(HELDOUT_YEARS)
    print("name\tbasin\tpeak time\tregion S,N,W,E\tmin pressure\tmax 10 m wind\tsource")
    if not args.years:
        from .real_sources import real_cyclones

        for c in real_cyclones():  # real first: found by the cyclone finder in the ERA5 week
            print(c.line())
    for c in DemoWorld(args.seed).catalog(years):
        print(c.line())
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="zssd", description="ZSSD Explorer: zero-shot statistical downscaling "
                                 "by diffusion posterior sampling (Tie & Xiong 2026)")
    sub = ap.add_subparsers(dest="command", required=True)
    for name, mod in SUBCOMMANDS.items():
        importlib.import_module(mod).add_parser(sub)
    return ap


#: Options whose value may start with a minus sign (a southern or western region edge).
_SIGNED_VALUE_OPTIONS = ("--region", "--regions")


def _join_signed_values(argv: list[str]) -> list[str]:
    """``--region -35,-3,100,132`` → ``--region=-35,-3,100,132`` (argparse would read the value as an option)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in _SIGNED_VALUE_OPTIONS and i + 1 < len(argv) and argv[i + 1][:1] == "-" and argv[i + 1][1:2].isdigit():
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(_join_signed_values(list(sys.argv[1:] if argv is None else argv)))
    try:
        return int(args._run(args) or 0)
    except BrokenPipeError:  # e.g. `zssd cases | head`: the reader went away, not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("zssd: interrupted; no output was written", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"zssd: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
