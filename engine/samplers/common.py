"""Shared pieces of the posterior samplers: the step record, the respaced schedule,
observation operators built from a GCM field, and the guided ancestral loop.

Conventions
-----------
* Everything inside a sampler lives in the prior's *normalised* space
  (per-variable ``(x − mean)/std``).  The averaging and interpolation
  operators have rows that sum to one, so ``A(normalize(x)) = normalize(A(x))``
  and a misfit measured between normalised fields equals the physical misfit
  divided by each variable's std — the variables are commensurate.
* The batch axis holds the ensemble members: ``x_t`` is ``(members, C, H, W)``.
* Timesteps are integers in ``[0, T)`` of the prior's training schedule
  (``T = len(alphas_cumprod)``, 1000 for the demo prior).  A run of ``n``
  steps uses an evenly spaced subset (Nichol & Dhariwal 2021 respacing):
  ``ᾱ`` at the subset, ``β'_i = 1 − ᾱ_i/ᾱ_{i−1}``.
* Samplers are Python generators yielding one :class:`StepState` per step;
  the last one holds the result.  Closing the generator (``.close()``) stops
  the run; randomness comes from one seeded :class:`torch.Generator`.

The denoiser contract (:class:`Denoiser`) is what :class:`engine.prior.model.Prior`
provides; tests may pass any object that satisfies it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np
import torch

from ..grids import GridError, LatLonGrid, Region, lat_weights, unified_grid, wrap_lon
from ..operators import SeparableOperator, grid_from_xarray

__all__ = [
    "Denoiser",
    "StepState",
    "Observation",
    "MAX_STEPS",
    "GUIDANCE_SCHEDULES",
    "respaced_timesteps",
    "start_timestep",
    "MIN_ALPHA_BAR",
    "check_steps",
    "check_prior_size",
    "ddim_step",
    "fine_bounds_region",
    "clip_grid",
    "ucg_coarse_grid",
    "native_clipped_grid",
    "gcm_tensor",
    "make_generator",
    "expand_conditioning",
    "guided_loop",
    "Trajectory",
    "Frame",
    "record_trajectory",
    "default_guidance_scale",
    "DEFAULT_GUIDANCE",
    "REFERENCE_PIXELS",
    "effective_scale",
    "denoise",
    "X0_CLIP",
]

#: Upper limit of ``steps`` (the demo prior is trained with T = 1000).
MAX_STEPS = 1000
GUIDANCE_SCHEDULES = ("constant", "noise")
#: Guidance scales are quoted for a region of this many 0.25° pixels (128 x 128, the evaluation size).
REFERENCE_PIXELS = 128 * 128


def effective_scale(zeta: float, shape: tuple[int, int]) -> float:
    """ζ applied to an ``H x W`` region: ``ζ · sqrt(H·W / 128²)``.

    With the unsquared norm the gradient ``∇‖r‖`` has O(1) total size spread over
    ``H·W`` pixels, so each pixel moves by ``∝ ζ/sqrt(H·W)``; this rescaling keeps the
    per-pixel step — and so one tuned ζ — independent of the region size (for ZSSD,
    DPS and every GCM resolution alike).
    """
    return float(zeta) * math.sqrt(shape[0] * shape[1] / REFERENCE_PIXELS)


# ---------------------------------------------------------------- contract
class Denoiser(Protocol):
    """What a sampler needs from the prior (see :class:`engine.prior.model.Prior`)."""

    device: torch.device
    variables: Sequence[str]
    schedule: Any  # .alphas_cumprod: 1-D tensor (T,)

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, static: torch.Tensor,
            time_feats: torch.Tensor) -> torch.Tensor: ...

    def normalize(self, x: torch.Tensor) -> torch.Tensor: ...

    def denormalize(self, x: torch.Tensor) -> torch.Tensor: ...

    def check_size(self, h: int, w: int) -> None: ...


# ---------------------------------------------------------------- the record
@dataclass(frozen=True, eq=False)
class StepState:
    """One step of a posterior sampler (all tensors normalised, batch = members).

    Attributes
    ----------
    step, n_steps
        Index of this step (0-based) and the total; ``step == n_steps - 1`` is the final state.
    t
        Diffusion timestep (of the training schedule) at which the denoiser was evaluated.
    t_next
        Timestep of ``x_t`` after this step (``-1`` once the sample is clean).
    x_t
        The iterate *after* this step (``x_{t_next}``); on the final step, the sample itself.
    x0_hat
        The denoiser's clean estimate ``x̂0(x_t)`` at this step (before guidance).
    misfit
        Mean over members of ``‖W^{1/2}(A(x̂0) − y)‖`` (normalised units, cos φ weights of
        mean 1, missing observations excluded); ``nan`` for an unconditional run.
    misfit_members
        The same per member.
    misfit_rms
        ``misfit / sqrt(number of observed values)``: an RMS error in units of the variables' std.
    guidance_norm
        Mean over members of the L2 norm of the guidance correction added to ``x_t`` at this step.
    sigma
        Noise level ``sqrt((1 − ᾱ_t)/ᾱ_t)`` at ``t``.
    alpha_bar
        ``ᾱ_t``.
    method
        ``"zssd"``, ``"dps"``, ``"ddrm"`` or ``"unconditional"``.
    """

    step: int
    n_steps: int
    t: int
    t_next: int
    x_t: torch.Tensor
    x0_hat: torch.Tensor
    misfit: float
    misfit_members: tuple[float, ...]
    misfit_rms: float
    guidance_norm: float
    sigma: float
    alpha_bar: float
    method: str = ""
    denormalize: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)

    @property
    def final(self) -> bool:
        return self.step == self.n_steps - 1

    @property
    def members(self) -> int:
        return int(self.x_t.shape[0])

    @property
    def progress(self) -> float:
        """Fraction of the run done after this step (0–1)."""
        return (self.step + 1) / self.n_steps

    def result(self) -> torch.Tensor:
        """The sample (normalised): ``x_t`` of the final state (raises on an earlier state)."""
        if not self.final:
            raise ValueError(f"step {self.step + 1}/{self.n_steps} is not the final state")
        return self.x_t

    def _denorm(self, x: torch.Tensor) -> torch.Tensor:
        if self.denormalize is None:
            raise ValueError("this StepState carries no denormalize function (pass the prior's)")
        with torch.no_grad():
            return self.denormalize(x)

    def x0_phys(self) -> torch.Tensor:
        """``x̂0`` in physical units (``members, C, H, W``)."""
        return self._denorm(self.x0_hat)

    def sample_phys(self) -> torch.Tensor:
        """The final sample in physical units (only on the final state)."""
        return self._denorm(self.result())

    def xt_phys(self) -> torch.Tensor:
        """``x_t / sqrt(ᾱ)`` of the iterate mapped to physical units (a noisy field, for viewers)."""
        return self._denorm(self.x_t)


# ---------------------------------------------------------------- schedule
def check_steps(steps: int, T: int = MAX_STEPS) -> int:
    """Validate a step count: an integer in ``[1, T]``."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise ValueError(f"steps must be an integer, got {steps!r}")
    if steps <= 0:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if steps > T:
        raise ValueError(f"steps must be at most {T} (the prior's training schedule has {T} timesteps), got {steps}")
    return int(steps)


#: Sampling starts at the last timestep whose ᾱ is at least this (σ = sqrt((1−ᾱ)/ᾱ) ≤ 31.6); see
#: :func:`respaced_timesteps`.
MIN_ALPHA_BAR = 1e-3


def start_timestep(alphas_cumprod, min_alpha_bar: float | None = None) -> int:
    """The largest ``t`` with ``ᾱ_t ≥ min_alpha_bar`` (default :data:`MIN_ALPHA_BAR`; ``T − 1`` if ``<= 0``)."""
    if min_alpha_bar is None:
        min_alpha_bar = MIN_ALPHA_BAR
    ab = np.asarray(alphas_cumprod.detach().cpu() if isinstance(alphas_cumprod, torch.Tensor) else alphas_cumprod,
                    dtype=np.float64)
    if min_alpha_bar <= 0:
        return int(ab.size - 1)
    ok = np.nonzero(ab >= min_alpha_bar)[0]
    return int(ok.max()) if ok.size else 0


def respaced_timesteps(n_steps: int, T: int, t_start: int | None = None) -> list[int]:
    """Evenly spaced training timesteps, descending from ``t_start`` (default ``T − 1``) to ``0``.

    With ``t_start = T − 1`` this is :func:`engine.prior.schedule.respace`.  The samplers pass
    :func:`start_timestep`: at the first timesteps of a cosine schedule ᾱ is ~1e-9, and an
    ε-network's clean estimate ``x̂0 = (x_t − sqrt(1−ᾱ) ε̂)/sqrt(ᾱ)`` carries its ε error times
    ``σ_t = sqrt((1−ᾱ)/ᾱ)`` (≈ 2·10⁴ at t = 999): the first ancestral step would inject it.
    Below ``ᾱ = 10⁻³`` the signal in ``x_t`` (``sqrt(ᾱ)·x0 ≤ 0.03 x0``) is negligible, so starting
    from ``N(0, I)`` at ``t_start`` samples the same distribution (as diffusers' "leading" spacing).
    """
    from ..prior.schedule import respace

    check_steps(n_steps, T)
    if t_start is None or t_start >= T - 1 or n_steps > t_start + 1:
        # (more steps than timesteps below t_start: the full chain, whose first steps are tiny)
        return [int(t) for t in respace(n_steps, T)]
    t_start = int(t_start)
    if n_steps == 1:
        return [t_start]
    return [int(t) for t in np.round(np.linspace(t_start, 0, n_steps)).astype(int)]


def _alphas_cumprod(prior: Denoiser) -> np.ndarray:
    ab = prior.schedule.alphas_cumprod
    if isinstance(ab, torch.Tensor):
        ab = ab.detach().to("cpu", torch.float64).numpy()
    return np.asarray(ab, dtype=np.float64)


def ddim_step(x_t: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, a_t: float, a_prev: float, eta: float,
              noise: torch.Tensor | None) -> torch.Tensor:
    """One respaced ancestral step ``x_t → x_{t_prev}`` (Song et al. 2021, eq. 12).

    With ``η = 1`` this is exactly the DDPM posterior ``q(x_{t−1} | x_t, x̂0)`` of the
    respaced chain (mean ``(√ᾱ_prev β'/(1−ᾱ_t)) x̂0 + (√α'(1−ᾱ_prev)/(1−ᾱ_t)) x_t``,
    variance ``β' (1−ᾱ_prev)/(1−ᾱ_t)``); ``η = 0`` is deterministic DDIM.
    """
    if a_prev >= 1.0:
        return x0
    var = eta ** 2 * (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev)
    sig = math.sqrt(max(var, 0.0))
    c = math.sqrt(max(1.0 - a_prev - var, 0.0))
    out = math.sqrt(a_prev) * x0 + c * eps
    if sig > 0 and noise is not None:
        out = out + sig * noise
    return out


def make_generator(device: torch.device, seed: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def check_prior_size(prior: Denoiser, grid: LatLonGrid) -> None:
    """Raise ``ValueError`` if the fine grid is not a size the prior accepts."""
    h, w = grid.shape
    check = getattr(prior, "check_size", None)
    if check is not None:
        check(h, w)


def expand_conditioning(prior: Denoiser, static, time_feats, members: int,
                        shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Static channels ``(S, H, W)`` and time features ``(F,)``/``(1, F)`` → batched tensors on the prior's device."""
    dev = prior.device
    s = torch.as_tensor(np.asarray(static) if not isinstance(static, torch.Tensor) else static,
                        dtype=torch.float32, device=dev)
    if s.ndim == 4:
        if s.shape[0] != 1:
            raise ValueError(f"static channels must be (S, H, W) or (1, S, H, W), got {tuple(s.shape)}")
        s = s[0]
    if s.ndim != 3 or tuple(s.shape[-2:]) != tuple(shape):
        raise ValueError(f"static channels of shape {tuple(s.shape)} do not match the fine grid {shape}")
    tf = torch.as_tensor(np.asarray(time_feats) if not isinstance(time_feats, torch.Tensor) else time_feats,
                         dtype=torch.float32, device=dev).reshape(1, -1)
    return s[None].expand(members, *s.shape).contiguous(), tf.expand(members, tf.shape[1]).contiguous()


# ---------------------------------------------------------------- grids
def fine_bounds_region(fine: LatLonGrid) -> Region:
    """The box spanned by the fine grid's outer cell bounds (longitudes wrapped to [-180, 180))."""
    lb = fine.lat_bounds
    s, n = float(min(lb[0], lb[-1])), float(max(lb[0], lb[-1]))
    w, e = float(fine.lon_bounds[0]), float(fine.lon_bounds[-1])
    if e - w >= 360.0 - 1e-9:
        return Region(max(s, -90.0), min(n, 90.0), 0.0, 360.0)
    return Region(max(s, -90.0), min(n, 90.0), float(wrap_lon(w, -180.0)), float(wrap_lon(e, -180.0)))


def _align_lon(grid: LatLonGrid, ref_lon0: float) -> LatLonGrid:
    """Shift a grid's longitudes by a multiple of 360 so its first bound is next to ``ref_lon0``."""
    k = 360.0 * round((ref_lon0 - grid.lon_bounds[0]) / 360.0)
    if k == 0.0:
        return grid
    return LatLonGrid(grid.lat, grid.lon + k, grid.name, grid.lat_bounds, grid.lon_bounds + k)


def clip_grid(coarse: LatLonGrid, fine: LatLonGrid, name: str | None = None) -> LatLonGrid:
    """``coarse`` with its cell bounds clipped to the fine grid's outer bounds.

    Centres move to the middle of the clipped cells (the point a clipped-cell mean
    represents, which is where bilinear interpolation places it).
    """
    coarse = _align_lon(coarse, float(fine.lon_bounds[0]))
    flb = fine.lat_bounds
    lat_lo, lat_hi = float(min(flb[0], flb[-1])), float(max(flb[0], flb[-1]))
    lon_lo, lon_hi = float(fine.lon_bounds[0]), float(fine.lon_bounds[-1])
    latb = np.clip(coarse.lat_bounds, lat_lo, lat_hi)
    lonb = np.clip(coarse.lon_bounds, lon_lo, lon_hi)
    if np.any(np.abs(np.diff(latb)) <= 0) or np.any(np.diff(lonb) <= 0):
        raise GridError(f"grid {coarse.name!r} has cells outside the fine region {fine_bounds_region(fine)}")
    lat = 0.5 * (latb[:-1] + latb[1:])
    lon = 0.5 * (lonb[:-1] + lonb[1:])
    return LatLonGrid(lat, lon, name or f"{coarse.name}|clipped", latb, lonb)


def ucg_coarse_grid(fine: LatLonGrid, res: float | None = None) -> LatLonGrid:
    """The unified (5°) cells covering the fine grid, clipped to its outer bounds.

    Raises :class:`GridError` if fewer than 2×2 unified cells cover the region
    (the guidance would then constrain a single area mean).
    """
    ug = unified_grid() if res is None else unified_grid(res)
    cov, _, _ = ug.covering(fine_bounds_region(fine))
    if cov.shape[0] < 2 or cov.shape[1] < 2:
        region = fine_bounds_region(fine)
        raise GridError(
            f"the {ug.dlat:g}° unified grid has only {cov.shape[0]}x{cov.shape[1]} cells over region {region}; "
            f"Unified Coordinate Guidance needs at least 2x2 — use a larger region or one that crosses "
            f"{ug.dlat:g}° cell boundaries in both directions")
    return clip_grid(cov, fine, name=f"{ug.name}|clipped")


def native_clipped_grid(native: LatLonGrid, fine: LatLonGrid) -> tuple[LatLonGrid, np.ndarray, np.ndarray]:
    """The cells of a (sub-)grid that overlap the fine grid, clipped to it, with their indices."""
    sub, li, lo = native.covering(fine_bounds_region(fine))
    return clip_grid(sub, fine, name=f"{native.name}|clipped"), li, lo


def gcm_tensor(gcm, variables: Sequence[str], li: np.ndarray | None = None,
               lo: np.ndarray | None = None) -> torch.Tensor:
    """GCM variables as a float64 tensor ``(C, nlat, nlon)``; variables absent from ``gcm`` are all-NaN."""
    grid_shape = (gcm.sizes["lat"], gcm.sizes["lon"])
    chans = []
    for v in variables:
        if v in gcm.data_vars:
            a = np.asarray(gcm[v].transpose(..., "lat", "lon").values, dtype=np.float64)
            a = a.reshape(a.shape[-2:]) if a.ndim > 2 and int(np.prod(a.shape[:-2])) == 1 else a
            if a.ndim != 2:
                raise ValueError(f"GCM variable {v!r} must be a single (lat, lon) field, got shape {a.shape}")
        else:
            a = np.full(grid_shape, np.nan)
        chans.append(a)
    x = np.stack(chans)
    if li is not None:
        x = x[:, li][:, :, lo]
    return torch.as_tensor(x)


# ---------------------------------------------------------------- observation
@dataclass(eq=False)
class Observation:
    """A linear observation ``y ≈ A(x)`` in normalised space.

    ``op`` maps the fine grid to the observation grid (for ZSSD the fine grid
    itself, via the unified cells); ``y`` is ``(C, h, w)`` with NaN where nothing
    is observed (cells, or whole variables absent from the GCM); ``weights``
    ``(h, w)`` are cos φ of the observation grid, normalised to mean 1.
    """

    op: SeparableOperator
    y: torch.Tensor
    weights: torch.Tensor
    description: str = ""
    unguided: tuple[str, ...] = ()
    coarse_grid: LatLonGrid | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mask = torch.isfinite(self.y)
        if not bool(self.mask.any()):
            raise ValueError(f"the GCM field has no finite value over the region ({self.description}); "
                             "nothing to condition on")
        self.y0 = torch.where(self.mask, self.y, torch.zeros_like(self.y))
        self.w_mask = self.mask.to(self.y.dtype) * self.weights
        self.n_obs = int(self.mask.sum())

    def to(self, device: torch.device) -> "Observation":
        self.op = self.op.to(device)
        for k in ("y", "weights", "mask", "y0", "w_mask"):
            setattr(self, k, getattr(self, k).to(device))
        return self

    def residual(self, x0: torch.Tensor) -> torch.Tensor:
        """``W^{1/2}(A(x0) − y)`` with unobserved entries zeroed, ``(B, C, h, w)``."""
        return (self.op(x0) - self.y0) * self.w_mask.sqrt()

    def misfit(self, x0: torch.Tensor) -> torch.Tensor:
        """``‖W^{1/2}(A(x0) − y)‖`` per member, shape ``(B,)`` (differentiable)."""
        r = self.residual(x0)
        return torch.sqrt(r.pow(2).flatten(1).sum(1) + 1e-20)


# ---------------------------------------------------------------- guided loop
def _guidance_factor(schedule: str, a_t: float) -> float:
    if schedule == "constant":
        return 1.0
    if schedule == "noise":
        return math.sqrt(1.0 - a_t)
    raise ValueError(f"unknown guidance schedule {schedule!r}; choose from {', '.join(GUIDANCE_SCHEDULES)}")


def denoise(prior: Denoiser, x_t: torch.Tensor, t_vec: torch.Tensor, a_t: float, static: torch.Tensor,
            time_feats: torch.Tensor, x0_clip: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ε, x̂0)`` at ``x_t``; with ``x0_clip`` the estimate is clamped to ``±x0_clip`` (normalised units)
    and ε recomputed from it, so the ancestral step stays consistent (as guided-diffusion does)."""
    eps = prior.eps(x_t, t_vec, static, time_feats)
    x0 = (x_t - math.sqrt(1.0 - a_t) * eps) / math.sqrt(a_t)
    if x0_clip is not None:
        x0 = x0.clamp(-x0_clip, x0_clip)
        eps = (x_t - math.sqrt(a_t) * x0) / math.sqrt(1.0 - a_t)
    return eps, x0


#: Default clamp of x̂0 in normalised units: far beyond any physical state (a 90 hPa cyclone is ~8 std),
#: but it stops the 1/sqrt(ᾱ) amplification of ε errors at the noisiest steps.
X0_CLIP = 20.0


def guided_loop(prior: Denoiser, obs: Observation | None, static: torch.Tensor, time_feats: torch.Tensor,
                shape: tuple[int, int], *, steps: int, members: int, seed: int, guidance_scale: float,
                guidance_schedule: str = "constant", eta: float = 1.0, method: str = "zssd",
                x0_clip: float | None = X0_CLIP, min_alpha_bar: float | None = None) -> Iterator[StepState]:
    """Respaced ancestral sampling with DPS-style guidance (Chung et al. 2023, Alg. 1).

    ``x_{t'} = step(x_t, ε_θ) − ζ_t ∇_{x_t} ‖W^{1/2}(A(x̂0(x_t)) − y)‖`` with the plain
    (unsquared) norm per member; ``ζ_t = ζ'`` (``"constant"``) or ``ζ'·sqrt(1 − ᾱ_t)``
    (``"noise"``), ``ζ' =`` :func:`effective_scale` ``(ζ, shape)``.  ``obs=None`` or
    ``ζ = 0`` gives unguided ancestral sampling (no backpropagation).  The graph is
    dropped after every step.
    """
    dev = prior.device
    ab = _alphas_cumprod(prior)
    T = ab.size
    ts = respaced_timesteps(steps, T, start_timestep(ab, min_alpha_bar))
    gen = make_generator(dev, seed)
    C = len(prior.variables)
    H, W = shape
    x = torch.randn((members, C, H, W), generator=gen, device=dev, dtype=torch.float32)
    guided = obs is not None and guidance_scale != 0.0
    zeta = effective_scale(guidance_scale, shape)
    denorm = prior.denormalize
    for i, t in enumerate(ts):
        a_t = float(ab[t])
        t_next = ts[i + 1] if i + 1 < len(ts) else -1
        a_prev = float(ab[t_next]) if t_next >= 0 else 1.0
        t_vec = torch.full((members,), t, device=dev, dtype=torch.long)
        x_in = x.detach().requires_grad_(guided)
        with torch.enable_grad() if guided else torch.no_grad():
            eps, x0 = denoise(prior, x_in, t_vec, a_t, static, time_feats, x0_clip)
            if obs is not None:
                mis = obs.misfit(x0)
            if guided:
                (grad,) = torch.autograd.grad(mis.sum(), x_in)
        with torch.no_grad():
            noise = (torch.randn(x.shape, generator=gen, device=dev, dtype=x.dtype) if t_next >= 0 else None)
            x_next = ddim_step(x_in.detach(), x0.detach(), eps.detach(), a_t, a_prev, eta, noise)
            gnorm = 0.0
            if guided:
                upd = (zeta * _guidance_factor(guidance_schedule, a_t)) * grad
                x_next = x_next - upd
                gnorm = float(upd.flatten(1).norm(dim=1).mean())
            if obs is not None:
                m = tuple(float(v) for v in mis.detach())
                mean = float(np.mean(m))
                rms = mean / math.sqrt(max(obs.n_obs, 1))
            else:
                m, mean, rms = (), float("nan"), float("nan")
        state = StepState(step=i, n_steps=len(ts), t=int(t), t_next=int(t_next), x_t=x_next.detach(),
                          x0_hat=x0.detach(), misfit=mean, misfit_members=m, misfit_rms=rms,
                          guidance_norm=gnorm, sigma=math.sqrt((1.0 - a_t) / a_t), alpha_bar=a_t,
                          method=method, denormalize=denorm)
        del x_in, eps, x0
        if guided:
            del grad
        x = x_next.detach()
        yield state


# ---------------------------------------------------------------- trajectory
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


# ---------------------------------------------------------------- ζ defaults
#: Built-in fallbacks (used when no tuned table is installed); keyed by method then step count.
DEFAULT_GUIDANCE: dict[str, dict[int, float]] = {
    "zssd": {20: 10.0, 50: 5.0, 100: 3.0, 250: 1.5, 1000: 0.5},
    "dps": {20: 10.0, 50: 5.0, 100: 3.0, 250: 1.5, 1000: 0.5},
}
#: Tuned table written by ``benchmarks/tune_guidance.py --install`` (training-year cases only).
TUNED_GUIDANCE_FILE = Path(__file__).with_name("guidance_defaults.json")


def _tuned_table() -> tuple[dict[str, dict[int, float]], str]:
    if TUNED_GUIDANCE_FILE.exists():
        try:
            d = json.loads(TUNED_GUIDANCE_FILE.read_text())
            table = {m: {int(k): float(v) for k, v in tab.items()} for m, tab in d["scales"].items()}
            sha = str(d.get("checkpoint_sha256", "?"))[:12]
            return table, f"tuned ({TUNED_GUIDANCE_FILE.name}, {d.get('date', '?')}, checkpoint {sha})"
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return DEFAULT_GUIDANCE, "built-in default (untuned)"


def default_guidance_scale(method: str, steps: int, with_source: bool = False):
    """ζ for ``method`` at ``steps``: from the tuned table, log-interpolated in the step count.

    Returns ``ζ`` (or ``(ζ, source)`` with ``with_source=True``).
    """
    table, source = _tuned_table()
    tab = table.get(method) or DEFAULT_GUIDANCE.get(method)
    if not tab:
        return (0.0, "n/a") if with_source else 0.0
    ks = sorted(tab)
    if steps <= ks[0]:
        z = tab[ks[0]]
    elif steps >= ks[-1]:
        z = tab[ks[-1]]
    else:
        j = int(np.searchsorted(ks, steps))
        lo, hi = ks[j - 1], ks[j]
        f = (math.log(steps) - math.log(lo)) / (math.log(hi) - math.log(lo))
        z = float(math.exp((1 - f) * math.log(tab[lo]) + f * math.log(tab[hi])))
    return (float(z), source) if with_source else float(z)


def obs_weights(grid: LatLonGrid, dtype=torch.float64) -> torch.Tensor:
    """cos φ weights of a grid's centres, ``(nlat, nlon)``, normalised to mean 1."""
    w = lat_weights(grid.lat)
    w = w / max(float(w.mean()), 1e-12)
    return torch.as_tensor(np.broadcast_to(w[:, None], grid.shape).copy(), dtype=dtype)


def gcm_grid_of(gcm) -> LatLonGrid:
    """The (sub-)grid of a GCM dataset (uses its CF bounds)."""
    return grid_from_xarray(gcm, name=str(gcm.attrs.get("source_id", "gcm")))

