"""Recording a sampler's run for viewers: thinned :class:`Frame` snapshots and the final state.

:func:`record_trajectory` consumes any sampler generator, keeps a bounded number of frames on
the CPU (the spacing doubles when more would be kept) and stops the run when a callback says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

from .contract import StepState

__all__ = ["Frame", "Trajectory", "record_trajectory"]


@dataclass(frozen=True)
class Frame:
    """A thinned snapshot for viewers (tensors on the CPU)."""

    step: int
    t: int
    sigma: float
    misfit: float
    x0_hat: torch.Tensor
    x_t: torch.Tensor | None


@dataclass
class Trajectory:
    """Frames kept by :func:`record_trajectory` plus the final state."""

    frames: list[Frame] = field(default_factory=list)
    final: StepState | None = None
    every: int = 1
    misfit: list[float] = field(default_factory=list)
    guidance_norm: list[float] = field(default_factory=list)
    steps_seen: int = 0

    def result(self) -> torch.Tensor:
        """The sample of the final state (``ValueError`` if the run did not finish)."""
        if self.final is None or not self.final.final:
            raise ValueError("the run did not finish (no final state)")
        return self.final.result()


def record_trajectory(states: Iterator[StepState], every: int = 1, max_frames: int = 50, keep_xt: bool = True,
                      callback: Callable[[StepState], Any] | None = None) -> Trajectory:
    """Consume a sampler, keeping every ``every``-th state's ``x̂0`` (and ``x_t``) on the CPU.

    When more than ``max_frames`` frames would be kept, every other frame is
    dropped and ``every`` doubles (so memory stays bounded for any step count);
    the final state is always kept as the last frame.  ``callback(state)`` is
    called for each state (progress bars); if it returns ``False`` the run is
    stopped (the generator is closed) and the trajectory has ``final=None``
    unless the last state seen was the final one.
    """
    if every < 1 or max_frames < 2:
        raise ValueError("every must be >= 1 and max_frames >= 2")
    tr = Trajectory(every=int(every))
    last = None
    try:
        for st in states:
            last = st
            tr.steps_seen += 1
            tr.misfit.append(st.misfit)
            tr.guidance_norm.append(st.guidance_norm)
            if st.step % tr.every == 0 or st.final:
                tr.frames.append(Frame(st.step, st.t, st.sigma, st.misfit, st.x0_hat.detach().cpu(),
                                       st.x_t.detach().cpu() if keep_xt else None))
                if len(tr.frames) > max_frames:
                    tr.every *= 2
                    keep = [f for f in tr.frames[:-1] if f.step % tr.every == 0]
                    tr.frames = keep + [tr.frames[-1]] if (tr.frames[-1].step % tr.every) else keep
            if callback is not None and callback(st) is False:
                break
    finally:
        close = getattr(states, "close", None)
        if close is not None:
            close()
    if last is not None and last.final:
        tr.final = last
    return tr
