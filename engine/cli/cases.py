"""``zssd cases``: list the cyclone cases (the real ERA5 ones first, then the demo world's held-out storms)."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    """Register ``zssd cases`` on an argparse sub-parser collection."""
    p = sub.add_parser("cases", help="list the cyclone cases: the real ERA5 ones first, then the demo world's "
                                     "(held-out years)")
    p.add_argument("--years", default=None, help="comma-separated years (default: the held-out demo years)")
    p.add_argument("--seed", type=int, default=0, help="demo world seed")
    p.set_defaults(_run=run)


def run(args: argparse.Namespace) -> int:
    """Print one tab-separated line per case; returns the exit code."""
    from ..demo_world import HELDOUT_YEARS, DemoWorld

    years = [int(y) for y in args.years.split(",")] if args.years else list(HELDOUT_YEARS)
    print("name\tbasin\tpeak time\tregion S,N,W,E\tmin pressure\tmax 10 m wind\tsource")
    if not args.years:
        from ..real_sources import real_cyclones

        for c in real_cyclones():  # real first: found by the cyclone finder in the ERA5 week
            print(c.line())
    for c in DemoWorld(args.seed).catalog(years):
        print(c.line())
    return 0
