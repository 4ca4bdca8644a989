"""Monthly-mean inputs: guide the mean of an ensemble drawn through the month, not one instant.

A monthly mean (the MPI-ESM-LR file; :func:`zssd_engine.readers.select_time` marks it
``time_mean = "month"``) is not an instantaneous state, and pulling one 6-hourly sample's 5° means
toward it is not a meaningful downscaling.  For such an input the guided methods (ZSSD, DPS,
zssd-bc) draw their ``B`` members at times spread evenly over the calendar month
(:func:`member_times`), each with its own time embedding and local-solar-time channels
(:func:`member_conditioning`), and guidance pulls the *members' mean* toward the monthly mean
(one misfit on the batch mean, :func:`zssd_engine.samplers.guidance.guided_loop` with
``guide_mean=True``):

    x̂0_b ← x̂0_b − B ζ ∇_b ‖ W^{1/2} (A (1/B) Σ_b x̂0_b − Y_month) ‖

The ensemble mean is then the downscaled monthly mean; member ``b`` is a state at
``member_time[b]`` whose own large scales are not pinned to the month's, only their mean is.  With few members the month is sampled coarsely; the
output says how many.  DDRM replaces each member's coarse part by ``Y`` itself — on a monthly mean
that would make every member an instant with the month's large scales — so it is refused.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..conditioning import static_channels, time_features
from ..errors import DataError
from .case import Case, get_world

__all__ = ["is_monthly", "member_times", "member_conditioning", "check_monthly_method", "monthly_note"]

#: Methods that guide a monthly mean through the batch mean; every other diffusion method is refused on one.
BATCH_MEAN_METHODS = ("zssd", "dps")


def is_monthly(case: Case) -> bool:
    """Whether the case's GCM field is a monthly mean (marked by :func:`~zssd_engine.readers.select_time`)."""
    return case.gcm.attrs.get("time_mean") == "month"


def member_times(time, members: int) -> list[pd.Timestamp]:
    """``members`` times spread evenly over ``time``'s calendar month (the middles of equal parts, to the hour)."""
    ts = pd.Timestamp(time)
    start = ts.to_period("M").start_time
    hours = ts.days_in_month * 24.0
    return [start + pd.Timedelta(hours=round((k + 0.5) * hours / members)) for k in range(members)]


def member_conditioning(case: Case, members: int) -> tuple[np.ndarray, np.ndarray, list[pd.Timestamp]]:
    """Per-member ``static (B, S, H, W)``, ``time_feats (B, F)`` and the members' times for a monthly case."""
    times = member_times(case.time, members)
    dem, land = get_world(case.world_seed).statics.region(case.fine)
    static = np.stack([static_channels(case.fine, dem, land, t) for t in times])
    return static, time_features(times), times


def check_monthly_method(case: Case, method: str) -> None:
    """Raise :class:`DataError` for a diffusion method that cannot guide a monthly mean."""
    if is_monthly(case) and method not in BATCH_MEAN_METHODS:
        raise DataError(
            f"{method} cannot downscale {case.source_id}: the file holds monthly means, and {method} would replace "
            "each member's large scales by the month's mean, making every member an instant with a monthly-mean "
            "large scale; use zssd or dps, which draw the members through the month and guide their mean")


def monthly_note(members: int) -> str:
    """The ``input_time_mean`` attribute of a guided result on a monthly-mean input."""
    few = (" With one member the month is represented by a single instant: use 8 or more members."
           if members == 1 else (f" With {members} members the month is sampled coarsely: 8 or more are better."
                                 if members < 8 else ""))
    return (f"the input holds monthly means: the {members} member(s) were drawn at times spread evenly over the "
            "month (member_time), each with its own time conditioning, and guidance pulled the members' MEAN toward "
            "the monthly mean; the ensemble mean is the downscaled monthly mean, each member a state at its own "
            "time (only the members' mean is pinned to the month), and the spread mixes within-month variability "
            "with uncertainty." + few)
