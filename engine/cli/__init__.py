"""``zssd`` command line: ``cases``, ``downscale``, ``evaluate``, ``train``, ``batch``, ``serve``.

Each sub-command lives in its own module of this package (:data:`SUBCOMMANDS`) exposing
``add_parser(subparsers)`` and ``run(args) -> int``; the engine modules they call hold no
argument parsing.  This module only wires them.  Errors that come from bad input
(:class:`ValueError` subclasses: ``DataError``, ``GridError``, ``CheckpointError``…) are
printed as one line ``zssd: error: …`` with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main", "build_parser", "SUBCOMMANDS"]

#: sub-command -> module providing add_parser/run
SUBCOMMANDS: dict[str, str] = {
    "cases": "zssd_engine.cli.cases",
    "downscale": "zssd_engine.cli.downscale",
    "evaluate": "zssd_engine.cli.evaluate",
    "train": "zssd_engine.cli.train",
    "batch": "zssd_engine.cli.batch",
    "serve": "zssd_engine.cli.serve",
}


def build_parser() -> argparse.ArgumentParser:
    """The ``zssd`` parser with every sub-command of :data:`SUBCOMMANDS` registered."""
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
    """Entry point of the ``zssd`` console script; returns the exit code.

    Parameters
    ----------
    argv
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The sub-command's exit code; 2 for bad input, 130 after Ctrl-C, 0 when the reader of
        standard output went away (``zssd cases | head``).
    """
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
