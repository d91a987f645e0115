"""The network: sinusoidal time embedding, per-field condition embedding, ResBlock, Attention, UNet.

Conditions are the normalised measurement vector [B, C]; a NaN field is *unknown*. The condition
MLP sees `[c * m, m]` with `m` the presence mask, so "no measurement" is a learned state of its own
(zero is a valid normalised value: the training mean). All-NaN is the null condition used for
classifier-free guidance; a partly-NaN vector conditions on the known fields only.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from thinfilm.config import ModelConfig, hw, model_problem


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding (Vaswani et al. 2017; Ho et al. 2020): [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm that, with `low_precision` set, runs in autocast's dtype: CUDA autocast otherwise
    computes every group norm in fp32 (its fp32 op list), so each one reads and writes twice the bytes and
    the SiLU and FiLM after it run in fp32 too. The kernel still accumulates its statistics in fp32. On
    the CPU, autocast already leaves group norm in bf16: the switch only casts the affine weights."""
    low_precision = False

    def forward(self, x: Tensor) -> Tensor:
        kind = x.device.type
        if not (self.low_precision and torch.is_autocast_enabled(kind)):
            return super().forward(x)
        dtype = torch.get_autocast_dtype(kind)
        with torch.autocast(kind, enabled=False):
            return F.group_norm(x.to(dtype), self.num_groups, self.weight.to(dtype), self.bias.to(dtype), self.eps)


def _norm(channels: int) -> GroupNorm:
    return GroupNorm(math.gcd(32, channels), channels)


def _zero(module: nn.Module) -> nn.Module:
    """Zero-initialised last layer of a residual branch: every block starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ConditionEmbedding(nn.Module):
    """MLP over the measurement vector with its presence mask: [B, C] (NaN = unknown) -> [B, dim].

    `fourier` > 0 also gives the MLP sin and cos of each value at that many frequencies, 0.25 to 8 cycles per
    unit of the normalised value, geometrically spaced (Fourier features, Tancik et al. 2020): a small
    difference in a value is then a large difference in some input, not only a small one in one input."""

    def __init__(self, n_conditions: int, dim: int, fourier: int = 0):
        super().__init__()
        self.register_buffer("freqs", 2 * math.pi * torch.logspace(-2, 3, fourier, base=2.0) if fourier else
                             torch.zeros(0), persistent=False)
        self.mlp = nn.Sequential(nn.Linear((2 + 2 * fourier) * n_conditions, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, cond: Tensor) -> Tensor:
        known = ~torch.isnan(cond)
        values = torch.where(known, cond, torch.zeros_like(cond))
        parts = [values, known.to(values.dtype)]
        if len(self.freqs):
            angle = values[:, :, None] * self.freqs                                  # [B, C, K]
            on = known[:, :, None].to(values.dtype)
            parts += [(angle.sin() * on).flatten(1), (angle.cos() * on).flatten(1)]
        return self.mlp(torch.cat(parts, dim=1))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice; the embedding scales and shifts the second norm (FiLM)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2, self.dropout = _norm(c_out), nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))                       # [B, c_out, H, W]
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(self.dropout(F.silu(h)))


class Attention(nn.Module):
    """Multi-head self-attention over pixels through scaled_dot_product_attention."""

    def __init__(self, channels: int, head_channels: int = 64):
        super().__init__()
        self.heads = max(1, channels // head_channels)
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        q, k, v = rearrange(self.qkv(self.norm(x)), "b (n heads d) h w -> n b heads (h w) d",
                            n=3, heads=self.heads)                 # each [B, heads, HW, d]
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(rearrange(out, "b heads (h w) d -> b (heads d) h w", h=h, w=w))


class UNet(nn.Module):
    """Conditional UNet: x_t [B, 1, H, W], t [B], cond [B, C] -> prediction [B, 1, H, W] (H x W =
    `resolution`, a side or [height, width]); its widths, depth and head as a `[model]` section (`spec`) says."""

    def __init__(self, n_conditions: int, resolution: int | Sequence[int], spec: ModelConfig | None = None,
                 in_channels: int = 1):
        super().__init__()
        spec = spec or ModelConfig()
        problem = model_problem(resolution, spec)
        if problem:
            raise ValueError(problem)
        self.n_conditions, self.in_channels = n_conditions, in_channels
        self.height, self.width = hw(resolution)
        emb_dim = 4 * spec.channels[0]
        self.time_dim = spec.channels[0]
        self.time_mlp = nn.Sequential(nn.Linear(spec.channels[0], emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.cond_embed = ConditionEmbedding(n_conditions, emb_dim, spec.cond_fourier)
        # patch_size p folds p x p pixels into channels (Hoogeboom et al. 2023, "simple diffusion"):
        # the UNet runs at R/p for a p^2-fold saving; coords appends x/y position maps (CoordConv).
        self.patch_size, self.coords = spec.patch_size, spec.coords
        self.conv_in = nn.Conv2d(in_channels * spec.patch_size**2 + 2 * spec.coords, spec.channels[0], 3, padding=1)
        c = self._levels(spec, emb_dim)
        if spec.patch_size == 1:
            self.out = nn.Sequential(_norm(c), nn.SiLU(), _zero(nn.Conv2d(c, in_channels, 3, padding=1)))
        else:
            self._head(c, spec, emb_dim)
        if spec.channels_last:  # NHWC weights: every convolution then returns NHWC, the first one's NCHW input too
            self.to(memory_format=torch.channels_last)
        for module in self.modules():
            if isinstance(module, GroupNorm):
                module.low_precision = spec.low_precision_norm

    def _levels(self, spec: ModelConfig, emb_dim: int) -> int:
        """The down path, the middle and the up path with its skips; returns the last width."""
        channels, levels = spec.channels, len(spec.channels)
        block = lambda a, b: ResBlock(a, b, emb_dim, spec.dropout)  # noqa: E731
        attn = lambda c, level: (Attention(c, spec.head_channels) if level in spec.attention_levels  # noqa: E731
                                 else nn.Identity())
        self.down, skips, c = nn.ModuleList(), [channels[0]], channels[0]
        for level, width in enumerate(channels):
            for _ in range(spec.layers_per_block):
                self.down.append(nn.ModuleList([block(c, width), attn(width, level)]))
                c = width
                skips.append(c)
            if level < levels - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid = nn.ModuleList([block(c, c), Attention(c, spec.head_channels) if spec.mid_attention
                                  else nn.Identity(), block(c, c)])
        self.up = nn.ModuleList()
        for level, width in reversed(list(enumerate(channels))):
            for _ in range(spec.layers_per_block + 1):
                self.up.append(nn.ModuleList([block(c + skips.pop(), width), attn(width, level)]))
                c = width
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             nn.Conv2d(c, c, 3, padding=1)))
        return c

    def _head(self, c: int, spec: ModelConfig, emb_dim: int) -> None:
        """patch_size > 1: unfold the patches back to pixels, then one full-resolution ResBlock that also sees
        x_t itself: per-pixel detail no longer has to travel through patch channels (docs/experiments.md, "A
        full-resolution head"). "shuffle" gives each pixel of a patch its own channels (and biases): a flat
        region comes out with a faint 2x2 phase pattern; "resize" upsamples and convolves at full resolution,
        the same filter at every pixel (#unpatch)."""
        k, p, n = max(8, c // 2), spec.patch_size, self.in_channels
        if spec.unpatch == "shuffle":
            back = [nn.Conv2d(c, (k - n) * p**2, 3, padding=1), nn.PixelShuffle(p)]
        elif spec.unpatch == "resize":
            back = [nn.Conv2d(c, 2 * k, 3, padding=1), nn.Upsample(scale_factor=p, mode="nearest"),
                    nn.Conv2d(2 * k, k - n, 3, padding=1)]
        else:
            raise ValueError(f"model.unpatch {spec.unpatch!r}: use shuffle or resize")
        self.unpatch = nn.Sequential(_norm(c), nn.SiLU(), *back)
        self.head_block = ResBlock(k, k, emb_dim)
        self.out = nn.Sequential(_norm(k), nn.SiLU(), _zero(nn.Conv2d(k, n, 3, padding=1)))

    @classmethod
    def from_config(cls, cfg) -> "UNet":
        """The network an experiment config describes (contract: used by the peer benchmark too)."""
        return cls(len(cfg.data.columns), cfg.data.resolution, cfg.model)

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """What one frame is in the network's space: (channels, height, width)."""
        return self.in_channels, self.height, self.width

    @staticmethod
    def null_condition(cond: Tensor) -> Tensor:
        """The 'no measurement' condition for a batch like `cond`: every field unknown."""
        return torch.full_like(cond, float("nan"))

    def embed(self, t: Tensor, cond: Tensor) -> Tensor:
        """Time + condition embedding, [B, 4 * channels[0]]."""
        return self.time_mlp(timestep_embedding(t, self.time_dim)) + self.cond_embed(cond)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        emb = self.embed(t, cond)
        pixels = x
        if self.patch_size > 1:
            x = F.pixel_unshuffle(x, self.patch_size)                 # [B, p^2, R/p, R/p]
        if self.coords:
            b, _, height, width = x.shape
            ys = torch.linspace(-1, 1, height, device=x.device, dtype=x.dtype)
            xs = torch.linspace(-1, 1, width, device=x.device, dtype=x.dtype)
            grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")).expand(b, 2, height, width)
            x = torch.cat([x, grid], dim=1)
        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            if isinstance(layer, nn.ModuleList):
                h = layer[1](layer[0](h, emb))
            else:
                h = layer(h)
            skips.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        for layer in self.up:
            if isinstance(layer, nn.ModuleList):
                h = layer[1](layer[0](torch.cat([h, skips.pop()], dim=1), emb))
            else:
                h = layer(h)
        if self.patch_size > 1:
            h = self.head_block(torch.cat([self.unpatch(h), pixels], dim=1), emb)   # [B, k, R, R]
        return self.out(h)
