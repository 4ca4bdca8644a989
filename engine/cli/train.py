"""``zssd train``: the command line of :mod:`zssd_engine.prior.train` (TOML config, overrides, resume; torchrun for DDP)."""

from __future__ import annotations

import argparse
import sys

from ..prior import train as trainer
from ..prior.train import TrainConfig, train

__all__ = ["add_parser", "run", "main", "add_train_parser", "run_train"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``zssd train`` on an argparse sub-parser collection."""
    p = subparsers.add_parser("train", help="train the diffusion prior (TOML config; torchrun for DDP)",
                              description=trainer.__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="TOML training config")
    p.add_argument("--resume", default=None, help="training state file (or run directory) to continue from")
    p.add_argument("--steps", type=int, default=None, help="override the total number of steps")
    p.add_argument("--out", default=None, help="override the output directory")
    p.add_argument("--stop-after", type=int, default=None, metavar="STEP",
                   help="stop (and save) at this step although the learning-rate schedule runs to --steps")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="override the wall-time budget (stop and save when exceeded; 0: none)")
    p.add_argument("--data-workers", type=int, default=None,
                   help="override the number of data worker processes (0: the prefetch thread)")
    p.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                   help="override init_from: start the network and its EMA from these weights (fine-tuning)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(_run=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``zssd train`` from parsed arguments; returns the exit code."""
    cfg = TrainConfig.from_file(args.config)
    if args.steps is not None:
        cfg.steps = int(args.steps)
    if getattr(args, "out", None):
        cfg.out = args.out
    if getattr(args, "max_minutes", None) is not None:
        cfg.max_minutes = float(args.max_minutes)
    if getattr(args, "data_workers", None) is not None:
        cfg.data_workers = int(args.data_workers)
    if getattr(args, "init_from", None):
        cfg.init_from = str(args.init_from)
    TrainConfig.from_dict(cfg.to_dict())  # re-validate overrides
    stop_after = getattr(args, "stop_after", None)
    if stop_after is not None and stop_after <= 0:
        raise ValueError(f"--stop-after must be a positive step, got {stop_after}")
    train(cfg, resume=args.resume, stop_after=stop_after, progress=not getattr(args, "no_progress", False))
    return 0


#: The names ``zssd_engine.prior.train`` exported before the command line moved here.
add_train_parser = add_parser
run_train = run


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m zssd_engine.prior.train --config FILE …`` (no ``zssd: error`` handling)."""
    ap = argparse.ArgumentParser(prog="zssd")
    sub = ap.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = ap.parse_args(["train", *(argv if argv is not None else sys.argv[1:])])
    return int(args._run(args) or 0)
