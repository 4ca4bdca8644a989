"""What a run leaves for the teaching view: compact frames of x_t and x̂0, and per-step diagnostics.

One helper, :meth:`Trace.record`, records a sampler step for a normal run and for the ZSSD-vs-DPS
comparison alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Frame", "Trace", "make_frame", "MAX_FRAMES"]

#: Frames kept per run (every ``ceil(steps / MAX_FRAMES)``-th step, and the last).
MAX_FRAMES = 50


@dataclass
class Frame:
    """One recorded step of a run (member 1), stored compactly as float16 in the prior's normalised space.

    ``x0`` (physical units) is the denoiser's estimate x̂0 — on the final step, the sample itself.
    """

    step: int
    t: int
    sigma: float
    misfit: float
    guidance_norm: float
    x_t: np.ndarray                      # (C, H, W) normalised, float16
    x0n: np.ndarray                      # (C, H, W) normalised, float16
    denormalize: Any = field(default=None, repr=False)

    @property
    def x0(self) -> np.ndarray:
        """x̂0 in physical units, float32 ``(C, H, W)``."""
        import torch

        x = torch.from_numpy(self.x0n.astype(np.float32))[None]
        if self.denormalize is None:
            return x[0].numpy()
        with torch.no_grad():
            return self.denormalize(x)[0].numpy().astype(np.float32)


def _f16(x) -> np.ndarray:
    return np.clip(x.detach().to("cpu").float().numpy(), -6.0e4, 6.0e4).astype(np.float16)


def make_frame(st) -> Frame:
    """A :class:`Frame` from a sampler :class:`~zssd_engine.samplers.StepState` (member 1)."""
    x0 = st.x_t if st.final else st.x0_hat
    return Frame(st.step, int(st.t), float(st.sigma), float(st.misfit_rms), float(st.guidance_norm),
                 _f16(st.x_t[0]), _f16(x0[0]), st.denormalize)


@dataclass
class Trace:
    """A run's trajectory for the teaching view."""

    method: str
    source_id: str
    n_steps: int = 0
    frames: list[Frame] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    sigma: list[float] = field(default_factory=list)
    misfit: list[float] = field(default_factory=list)
    guidance: list[float] = field(default_factory=list)
    case: Any = None

    @property
    def every(self) -> int:
        """Steps between kept frames."""
        return max(1, -(-max(self.n_steps, 1) // MAX_FRAMES))

    def record(self, st) -> None:
        """Append one sampler step: its σ, misfit and guidance norm, and a frame every :attr:`every` steps."""
        self.steps.append(st.step)
        self.sigma.append(float(st.sigma))
        self.misfit.append(float(st.misfit_rms))
        self.guidance.append(float(st.guidance_norm))
        if st.step % self.every == 0 or st.final:
            self.frames.append(make_frame(st))
