"""Conditional U-Net of the ZSSD prior (an ε- or v-predictor: the training target decides).

Architecture (Tie & Xiong 2026, §"Diffusion prior"; U-Net of Ho et al. 2020 /
Dhariwal & Nichol 2021, shrunk for CPU training):

* **Input** — the noisy state ``x_t`` (4 normalised variables) concatenated
  with the static channels (elevation, land fraction, sin/cos lat/lon/local
  solar hour; :data:`zssd_engine.conditioning.STATIC_CHANNELS`).
* **Diffusion step** — sinusoidal embedding of ``t`` → 2-layer MLP → ``temb``,
  injected in every residual block as a scale-shift (FiLM) on the second
  GroupNorm: ``h ← GN(h)·(1 + s(temb)) + b(temb)`` (Dhariwal & Nichol 2021, "AdaGN").
* **Cyclic time** — month / day-of-year / hour (each a sin/cos pair,
  :data:`zssd_engine.conditioning.TIME_FEATURES`) become one token each (a linear
  projection plus a learned type embedding), joined by a token for the
  diffusion step; image features attend to these tokens through
  cross-attention blocks at the coarse levels (``attn_levels``).
* **Fully convolutional** — no positional embedding of the image grid, so a
  net trained on 64×64 crops runs on any ``H, W`` that are multiples of
  :attr:`ConditionalUNet.min_size` (``2**(len(channel_mult) - 1)``).
* GroupNorm + SiLU everywhere, zero-initialised output convolution (the
  untrained net predicts ε = 0) and zero-initialised residual/attention
  output projections.

:func:`count_flops` gives the analytic multiply–add count (×2) of a forward
pass: the floor used by the speed benchmarks.

Default size (chosen for the CPU budget; 2 Sapphire-Rapids cores, torch 2.13,
``torch.set_num_threads(2)``): base 32, ``channel_mult (1, 2, 3, 4)``, one
residual block per level, cross-attention at levels 2, 3 and the bottleneck —
2.69 M parameters, 6.25 GFLOP per 128×128 forward; forward + gradient w.r.t.
the input at 128×128 (batch 1) ≈ 65 ms on idle cores; training ≈ 47 crops/s
(64×64, batch 16, AdamW, float32) or ≈ 80 crops/s with bf16 autocast.
On CPU the activations are kept channels-last (NHWC), where oneDNN
convolutions run about 3× faster than in NCHW.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from ..conditioning import STATIC_CHANNELS, TIME_FEATURES

__all__ = ["UNetConfig", "ConditionalUNet", "count_flops", "timestep_embedding"]


def strict_from_dict(cls, d: dict, what: str):
    """``cls(**d)`` for a dataclass, refusing keys it does not have (``ValueError`` naming them and the known ones)."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; known: {sorted(known)}")
    return cls(**d)


@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of :class:`ConditionalUNet` (stored in checkpoint cards).

    Parameters
    ----------
    in_vars
        Number of predicted variables (t2m, msl, u10, v10).
    static_channels
        Number of static conditioning channels concatenated to the input.
    time_features
        Number of cyclic time features (sin/cos pairs → ``time_features // 2`` tokens).
    base_channels
        Channels at full resolution; level ``i`` has ``base_channels * channel_mult[i]``.
    channel_mult
        One multiplier per resolution level; ``len(channel_mult) - 1`` downsamplings.
    num_res_blocks
        Residual blocks per level in the encoder and in the decoder: one number
        for all levels or one per level (coarse levels are cheap).
    attn_levels
        Levels (0 = full resolution) whose blocks are followed by cross-attention
        to the time tokens; the bottleneck always has one.
    token_dim
        Width of the time tokens.
    heads
        Attention heads.
    dropout
        Dropout inside residual blocks (training only).
    norm_groups
        GroupNorm groups (reduced to a divisor of the channel count if needed).
    """

    in_vars: int = 4
    static_channels: int = len(STATIC_CHANNELS)
    time_features: int = len(TIME_FEATURES)
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    num_res_blocks: int | tuple[int, ...] = 1
    attn_levels: tuple[int, ...] = (2, 3)
    token_dim: int = 64
    heads: int = 4
    dropout: float = 0.0
    norm_groups: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mult", tuple(int(m) for m in self.channel_mult))
        object.__setattr__(self, "attn_levels", tuple(int(a) for a in self.attn_levels))
        nrb = self.num_res_blocks
        nrb = int(nrb) if isinstance(nrb, (int, float)) else tuple(int(n) for n in nrb)
        object.__setattr__(self, "num_res_blocks", nrb)
        if isinstance(nrb, tuple) and len(nrb) != len(self.channel_mult):
            raise ValueError(f"num_res_blocks {nrb} must give one count per level ({len(self.channel_mult)})")
        if not self.channel_mult or min(self.channel_mult) <= 0:
            raise ValueError(f"channel_mult must be non-empty positive integers, got {self.channel_mult}")
        if any(a < 0 or a >= len(self.channel_mult) for a in self.attn_levels):
            raise ValueError(f"attn_levels {self.attn_levels} must index the {len(self.channel_mult)} levels")
        if self.time_features % 2:
            raise ValueError(f"time_features must be sin/cos pairs (even), got {self.time_features}")
        if self.token_dim % self.heads:
            raise ValueError(f"token_dim {self.token_dim} must be divisible by heads {self.heads}")
        if self.base_channels <= 0 or min(self.blocks_per_level) <= 0 or self.in_vars <= 0:
            raise ValueError("base_channels, num_res_blocks and in_vars must be positive")

    def to_dict(self) -> dict:
        """JSON-able dict (tuples become lists)."""
        d = asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        d["attn_levels"] = list(self.attn_levels)
        if isinstance(self.num_res_blocks, tuple):
            d["num_res_blocks"] = list(self.num_res_blocks)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        return strict_from_dict(cls, d, "UNetConfig keys")

    @property
    def min_size(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def blocks_per_level(self) -> tuple[int, ...]:
        nrb = self.num_res_blocks
        return tuple(nrb) if isinstance(nrb, tuple) else (nrb,) * len(self.channel_mult)

    @property
    def temb_dim(self) -> int:
        return 4 * self.base_channels


def _groups(ch: int, want: int) -> int:
    g = min(want, ch)
    while ch % g:
        g -= 1
    return g


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) diffusion steps, ``[B, dim]``.

    Transformer positional encoding as used by Ho et al. (2020): frequencies
    ``max_period^{-k/(dim/2)}``, concatenated ``[cos, sin]``.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float().reshape(-1, 1) * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 (also under bf16 autocast, where the bf16 kernels are slow and lossy)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return super().forward(x)
        return F.group_norm(x.float(), self.num_groups, self.weight, self.bias, self.eps).to(x.dtype)


def _zero(m: nn.Module) -> nn.Module:
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


class ResBlock(nn.Module):
    """GN–SiLU–conv, GN with scale-shift from ``temb`` (FiLM), SiLU–dropout–conv, + skip."""

    def __init__(self, cin: int, cout: int, temb_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.cin, self.cout = cin, cout
        self.norm1 = GroupNorm32(_groups(cin, groups), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(temb_dim, 2 * cout)
        self.norm2 = GroupNorm32(_groups(cout, groups), cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(temb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h

    def flops(self, h: int, w: int, temb_dim: int) -> int:
        n = h * w
        f = n * 9 * self.cin * self.cout + n * 9 * self.cout * self.cout + temb_dim * 2 * self.cout
        if self.cin != self.cout:
            f += n * self.cin * self.cout
        return 2 * f


class CrossAttention(nn.Module):
    """Image features (queries) attend to the time tokens (keys/values), residual.

    ``h ← h + W_o · softmax(Q Kᵀ/√d) V`` with ``Q = W_q GN(h)``, ``K, V`` from the tokens.
    """

    def __init__(self, ch: int, token_dim: int, heads: int, groups: int) -> None:
        super().__init__()
        self.heads = heads
        self.ch = ch
        self.inner = token_dim
        self.norm = GroupNorm32(_groups(ch, groups), ch)
        self.q = nn.Linear(ch, token_dim, bias=False)
        self.kv = nn.Linear(token_dim, 2 * token_dim, bias=False)
        self.out = _zero(nn.Linear(token_dim, ch))

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        nh, d = self.heads, self.inner // self.heads
        # pixels as a sequence; free for channels-last tensors (the CPU layout)
        seq = self.norm(x).permute(0, 2, 3, 1).reshape(B, H * W, C)
        q = self.q(seq).reshape(B, H * W, nh, d).transpose(1, 2)  # B nh HW d
        k, v = self.kv(tokens).chunk(2, dim=-1)  # B L D
        k = k.reshape(B, -1, nh, d).transpose(1, 2)  # B nh L d
        v = v.reshape(B, -1, nh, d).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v)  # B nh HW d
        a = self.out(a.transpose(1, 2).reshape(B, H * W, self.inner))
        return x + a.reshape(B, H, W, C).permute(0, 3, 1, 2)

    def flops(self, h: int, w: int, n_tokens: int) -> int:
        n = h * w
        f = n * self.ch * self.inner * 2  # q and out projections
        f += n_tokens * self.inner * 2 * self.inner  # k, v
        f += 2 * n * n_tokens * self.inner  # QKᵀ and AV
        return 2 * f


class TimeTokens(nn.Module):
    """Cyclic time features + diffusion-step embedding → ``[B, L, token_dim]`` tokens.

    Each sin/cos pair (month, day of year, hour) is linearly projected and
    given a learned type embedding; a fourth token is a projection of
    ``temb``.  A shared LayerNorm + MLP refines the tokens.
    """

    def __init__(self, n_features: int, temb_dim: int, token_dim: int) -> None:
        super().__init__()
        self.n_pairs = n_features // 2
        self.pair = nn.ModuleList([nn.Linear(2, token_dim) for _ in range(self.n_pairs)])
        self.type_emb = nn.Parameter(torch.randn(self.n_pairs + 1, token_dim) * 0.02)
        self.step = nn.Linear(temb_dim, token_dim)
        self.norm = nn.LayerNorm(token_dim)
        self.mlp = nn.Sequential(nn.Linear(token_dim, 2 * token_dim), nn.SiLU(), nn.Linear(2 * token_dim, token_dim))

    @property
    def n_tokens(self) -> int:
        return self.n_pairs + 1

    def forward(self, feats: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        toks = [lin(feats[:, 2 * i:2 * i + 2]) for i, lin in enumerate(self.pair)]
        toks.append(self.step(F.silu(temb)))
        x = torch.stack(toks, dim=1) + self.type_emb[None]
        return x + self.mlp(self.norm(x))

    def flops(self, temb_dim: int, token_dim: int) -> int:
        return 2 * (self.n_pairs * 2 * token_dim + temb_dim * token_dim
                    + self.n_tokens * 4 * token_dim * token_dim)


class ConditionalUNet(nn.Module):
    """U-Net predicting ε (or v) conditioned on statics, diffusion step and cyclic time.

    Parameters
    ----------
    cfg
        :class:`UNetConfig`.

    Notes
    -----
    ``forward(x_t, t, static, time_feats)`` with ``x_t [B, in_vars, H, W]``,
    ``t [B]`` (integer or fractional diffusion step, or a scalar),
    ``static [B, static_channels, H, W]`` and ``time_feats [B, time_features]``
    returns ``ε̂ [B, in_vars, H, W]``.  ``H`` and ``W`` must be positive
    multiples of :attr:`min_size`.
    """

    def __init__(self, cfg: UNetConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or UNetConfig()
        self.cfg = cfg
        self.min_size = cfg.min_size
        C, td, g = cfg.base_channels, cfg.temb_dim, cfg.norm_groups
        chans = [C * m for m in cfg.channel_mult]
        self.t_mlp = nn.Sequential(nn.Linear(C, td), nn.SiLU(), nn.Linear(td, td))
        self.tokens = TimeTokens(cfg.time_features, td, cfg.token_dim)
        self.conv_in = nn.Conv2d(cfg.in_vars + cfg.static_channels, C, 3, padding=1)

        def attn(ch: int) -> CrossAttention:
            return CrossAttention(ch, cfg.token_dim, cfg.heads, g)

        # encoder
        self.down_blocks = nn.ModuleList()
        self.down_attn = nn.ModuleList()
        self.downsample = nn.ModuleList()
        cin = C
        for lvl, ch in enumerate(chans):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(cfg.blocks_per_level[lvl]):
                blocks.append(ResBlock(cin, ch, td, g, cfg.dropout))
                attns.append(attn(ch) if lvl in cfg.attn_levels else nn.Identity())
                cin = ch
            self.down_blocks.append(blocks)
            self.down_attn.append(attns)
            if lvl < len(chans) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        # bottleneck
        self.mid1 = ResBlock(cin, cin, td, g, cfg.dropout)
        self.mid_attn = attn(cin)
        self.mid2 = ResBlock(cin, cin, td, g, cfg.dropout)
        # decoder (one skip per level, concatenated before the level's first block)
        self.up_blocks = nn.ModuleList()
        self.up_attn = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for lvl in reversed(range(len(chans))):
            ch = chans[lvl]
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            for i in range(cfg.blocks_per_level[lvl]):
                blocks.append(ResBlock(cin + ch if i == 0 else ch, ch, td, g, cfg.dropout))
                attns.append(attn(ch) if lvl in cfg.attn_levels else nn.Identity())
                cin = ch
            self.up_blocks.append(blocks)
            self.up_attn.append(attns)
            if lvl > 0:
                self.upsample.append(nn.Conv2d(ch, chans[lvl - 1], 3, padding=1))
                cin = chans[lvl - 1]
        self.norm_out = GroupNorm32(_groups(cin, g), cin)
        self.conv_out = _zero(nn.Conv2d(cin, cfg.in_vars, 3, padding=1))

    # ------------------------------------------------------------------
    def check_size(self, H: int, W: int) -> None:
        """Raise ``ValueError`` unless ``H`` and ``W`` are positive multiples of :attr:`min_size`."""
        m = self.min_size
        if H < m or W < m or H % m or W % m:
            raise ValueError(
                f"field of {H}x{W} cells cannot be processed by this U-Net: height and width must be "
                f"positive multiples of {m} (2**{len(self.cfg.channel_mult) - 1} for its "
                f"{len(self.cfg.channel_mult) - 1} downsamplings)")

    def forward(self, x_t: torch.Tensor, t: torch.Tensor | float, static: torch.Tensor,
                time_feats: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if x_t.ndim != 4 or x_t.shape[1] != cfg.in_vars:
            raise ValueError(f"x_t must be [B, {cfg.in_vars}, H, W], got {tuple(x_t.shape)}")
        B, _, H, W = x_t.shape
        self.check_size(H, W)
        if static.shape != (B, cfg.static_channels, H, W):
            raise ValueError(f"static must be [{B}, {cfg.static_channels}, {H}, {W}], got {tuple(static.shape)}")
        if time_feats.shape != (B, cfg.time_features):
            raise ValueError(f"time_feats must be [{B}, {cfg.time_features}], got {tuple(time_feats.shape)}")
        t = torch.as_tensor(t, device=x_t.device)
        if t.ndim == 0 or t.numel() == 1:
            t = t.reshape(1).expand(B)
        elif t.shape != (B,):
            raise ValueError(f"t must be a scalar or [{B}] diffusion steps, got shape {tuple(t.shape)}")
        dtype = x_t.dtype
        temb = self.t_mlp(timestep_embedding(t, cfg.base_channels).to(dtype))
        tokens = self.tokens(time_feats.to(dtype), temb)

        h = torch.cat([x_t, static.to(dtype)], dim=1)
        if h.device.type == "cpu":  # oneDNN convolutions are ~3x faster in NHWC on CPU
            h = h.contiguous(memory_format=torch.channels_last)
        h = self.conv_in(h)
        skips = []
        for lvl, (blocks, attns) in enumerate(zip(self.down_blocks, self.down_attn)):
            for blk, at in zip(blocks, attns):
                h = blk(h, temb)
                h = at(h, tokens) if isinstance(at, CrossAttention) else h
            skips.append(h)
            if lvl < len(self.downsample):
                h = self.downsample[lvl](h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb), tokens), temb)
        for j, (blocks, attns) in enumerate(zip(self.up_blocks, self.up_attn)):
            h = torch.cat([h, skips.pop()], dim=1)
            for blk, at in zip(blocks, attns):
                h = blk(h, temb)
                h = at(h, tokens) if isinstance(at, CrossAttention) else h
            if j < len(self.upsample):
                h = self.upsample[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        out = self.conv_out(F.silu(self.norm_out(h)))
        return out.contiguous()


def count_flops(cfg: UNetConfig, H: int, W: int, batch: int = 1) -> int:
    """Analytic FLOPs (2 × multiply–adds of convolutions, linears and attention) of one forward pass.

    Normalisations, activations and additions are not counted (a floor).

    Parameters
    ----------
    cfg
        Network configuration.
    H, W
        Field size (multiples of ``cfg.min_size``).
    batch
        Batch size.
    """
    with torch.device("meta"):  # structure only, no memory
        net = ConditionalUNet(cfg)
    net.check_size(H, W)
    td, C = cfg.temb_dim, cfg.base_channels
    nt = net.tokens.n_tokens
    f = 2 * (C * td + td * td) + net.tokens.flops(td, cfg.token_dim)  # step MLP, tokens
    f += 2 * H * W * 9 * (cfg.in_vars + cfg.static_channels) * C  # conv_in
    h, w = H, W
    n_lvl = len(cfg.channel_mult)
    for lvl in range(n_lvl):
        for blk, at in zip(net.down_blocks[lvl], net.down_attn[lvl]):
            f += blk.flops(h, w, td)
            if isinstance(at, CrossAttention):
                f += at.flops(h, w, nt)
        if lvl < n_lvl - 1:
            ds = net.downsample[lvl]
            h, w = (h + 1) // 2, (w + 1) // 2
            f += 2 * h * w * 9 * ds.in_channels * ds.out_channels
    f += net.mid1.flops(h, w, td) + net.mid_attn.flops(h, w, nt) + net.mid2.flops(h, w, td)
    for j in range(n_lvl):
        for blk, at in zip(net.up_blocks[j], net.up_attn[j]):
            f += blk.flops(h, w, td)
            if isinstance(at, CrossAttention):
                f += at.flops(h, w, nt)
        if j < n_lvl - 1:
            h, w = 2 * h, 2 * w
            us = net.upsample[j]
            f += 2 * h * w * 9 * us.in_channels * us.out_channels
    f += 2 * H * W * 9 * net.conv_out.in_channels * cfg.in_vars
    return int(f) * int(batch)
