"""Drawing frames from a trained network: classifier-free guidance as a `denoise` callable, one
generator per frame, batched generation, a whole sampler run replayed from a CUDA graph. Shared by the
sample CLI, the trainer's previews, the evaluation and the bench, so none of them imports another's
entry point.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from thinfilm import LEVELS
from thinfilm.diffusion import Denoise, GaussianDiffusion, randn
from thinfilm.runtime import autocast, derive_seed
from thinfilm.unet import UNet


def kept_grain(cfg) -> float:
    """The grain the sampler puts back (`GaussianDiffusion.keeping_grain`), in the network's units:
    the run's measured `diffusion.grain` with `sample.keep_grain`, else 0."""
    return cfg.diffusion.grain / LEVELS if cfg.sample.keep_grain else 0.0


def frame_seed(seed: int, index: int) -> int:
    """The generator seed of frame `index` of a draw with seed `seed`: a frame is the same at any batch size."""
    return derive_seed(seed, index)


class Guidance(NamedTuple):
    """Classifier-free guidance as the samplers apply it (`guided`)."""
    scale: float = 1.0                   # 1 = off
    fields: tuple[int, ...] = ()         # the condition columns it pushes: the other branch leaves only these
                                         # unknown; () = all of them (the plain unconditional branch)
    interval: tuple[int, int] | None = None   # the timesteps [lo, hi] it acts on (Kynkaanniemi et al. 2024)
    parallel: float = 1.0                # weight of the update's part parallel to the conditional x0 (Sadat et al.
                                         # 2024, APG: 0 keeps only the orthogonal part; 1 = plain guidance)

    @classmethod
    def from_config(cls, s, columns: Sequence[str]) -> "Guidance":
        """The guidance a `[sample]` config section asks for, fields by name in `columns`."""
        return cls(s.guidance, tuple(columns.index(c) for c in s.guidance_fields),
                   tuple(s.guidance_interval) if s.guidance_interval else None, s.guidance_parallel)


def guided(net: Callable[[Tensor, Tensor, Tensor], Tensor], cond: Tensor, guidance: float | Guidance,
           diffusion: GaussianDiffusion | None = None) -> Denoise:
    """Classifier-free guidance (Ho & Salimans 2022) as a `denoise` callable: c + (w - 1) (c - u).

    NaN fields of `cond` are unknown. The other branch u has every field unknown, or only `fields`. Plain
    guidance mixes the network's outputs; with an `interval` or `parallel` != 1 it mixes the x0 estimates
    (the same thing where it is plain: x0 is affine in any prediction), which needs `diffusion`.
    """
    g = guidance if isinstance(guidance, Guidance) else Guidance(guidance)
    if g.scale == 1.0:
        return lambda x_t, t: net(x_t, t, cond)
    other = UNet.null_condition(cond)
    if g.fields:
        other = cond.clone()
        other[:, list(g.fields)] = float("nan")
    plain = g.interval is None and g.parallel == 1.0
    if not plain and diffusion is None:
        raise ValueError("guidance with an interval or a parallel weight needs the diffusion (x0 estimates)")

    def denoise(x_t: Tensor, t: Tensor) -> Tensor:
        out_c, out_u = net(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([cond, other])).chunk(2)
        if plain:
            return out_u + g.scale * (out_c - out_u)
        x0_c, x0_u = diffusion.split(out_c, x_t, t).x0, diffusion.split(out_u, x_t, t).x0
        delta = x0_c - x0_u                                                   # [B, 1, R, R]
        if g.parallel != 1.0:                 # APG: the part of delta along x0_c mostly scales the image's levels
            along = (delta * x0_c).flatten(1).sum(1) / x0_c.flatten(1).pow(2).sum(1).clamp(min=1e-12)
            parallel = along.view(-1, *[1] * (delta.dim() - 1)) * x0_c
            delta = delta - (1 - g.parallel) * parallel
        w = torch.full_like(t, g.scale, dtype=x0_c.dtype)
        if g.interval is not None:
            w = torch.where((t >= g.interval[0]) & (t <= g.interval[1]), w, torch.ones_like(w))
        return diffusion.join(x0_c + (w - 1).view(-1, *[1] * (delta.dim() - 1)) * delta, x_t, t)

    return denoise


def predrawn(shape: Sequence[int], generators: Sequence[torch.Generator], draws: int) -> Tensor:
    """A sampler run's noise drawn ahead, [draws, *shape] on the CPU: draw k of frame i is what the
    eager sampler takes from generator i at its k-th draw, so the frames are the same either way."""
    return torch.stack([randn(shape, generators, "cpu") for _ in range(draws)])


class SamplerGraph:
    """One whole sampler run at a fixed batch size (every step: the network, guidance, the grain put back,
    the update) captured as a CUDA graph and replayed, so a frame's thousands of kernel launches become
    one: sampling at batch 1 is no longer bound by launching them. The graph reads its conditions, its
    start image and its noise from buffers; the noise is drawn ahead from the frames' generators
    (`predrawn`) and copied in, so the same seeds give the eager frames. `run(cond, x_init, noise)` is
    the eager run; capturing it costs one eager run (the warm-up) and the noise buffer,
    draws x frame size (51 x 1 MiB per 512-px frame for 50 stochastic steps).
    For sampling under no_grad only; the network's weights must not change while this is in use."""

    def __init__(self, run: Callable[[Tensor, Tensor | None, Tensor], Tensor], cond: Tensor,
                 x_init: Tensor | None, noise_shape: Sequence[int]):
        if cond.device.type != "cuda":
            raise ValueError(f"SamplerGraph: CUDA graphs need a CUDA device, not {cond.device}")
        self.cond, self.x_init = cond.clone(), None if x_init is None else x_init.clone()
        self.noise = torch.zeros(tuple(noise_shape), device=cond.device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):     # warm up off the capture: lazy initialisation, cuDNN's kernel choice
            run(self.cond, self.x_init, self.noise)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = run(self.cond, self.x_init, self.noise)

    def __call__(self, cond: Tensor, x_init: Tensor | None, noise: Tensor) -> Tensor:
        self.cond.copy_(cond)
        if self.x_init is not None:
            self.x_init.copy_(x_init)
        self.noise.copy_(noise)
        self.graph.replay()
        return self.out.clone()                      # the next replay overwrites `out`


class Plan(NamedTuple):
    """How frames are drawn: a `[sample]` config section with the run's measured grain, as `generate` takes
    it; `Plan.from_config(cfg)._replace(...)` for a command line's changes."""
    sampler: str = "ddim"
    steps: int | None = 50
    eta: float = 0.0
    spacing: str = "trailing"
    guidance: Guidance = Guidance()
    clip: bool = True
    batch_size: int = 16
    grain: float = 0.0                   # put back at low noise, network units (`kept_grain`); 0 = off

    @classmethod
    def from_config(cls, cfg) -> "Plan":
        s = cfg.sample
        return cls(s.sampler, s.steps, s.eta, s.spacing, Guidance.from_config(s, cfg.data.columns), s.clip,
                   s.batch_size, kept_grain(cfg))


@torch.no_grad()
def generate(net: nn.Module, diffusion: GaussianDiffusion, cond: Tensor, seeds: Sequence[int], plan: Plan, *,
             device: torch.device | str, x_init: Tensor | None = None, strength: float = 1.0,
             amp: torch.dtype | None = None, progress: bool = False, graphs: dict | None = None,
             start: Tensor | None = None) -> Tensor:
    """Frames for normalised conditions cond [N, C] (NaN = unknown) drawn as `plan` says, one generator per
    frame: returns float [N, 1, R, R] in [-1, 1] on the CPU. `amp`: autocast dtype (None = fp32).
    `start`: the start noise [N or 1, 1, R, R] instead of the seeds' (an inverted frame, `invert`), for a
    deterministic plan (DDIM or DPM++ at eta 0), which then draws nothing else.
    `graphs`: None runs eagerly; a dict (CUDA only) runs each chunk from a `SamplerGraph` kept in it, keyed
    by everything that shapes the run: pass the same dict again and the graphs are replayed, not captured."""
    device = torch.device(device)
    r, p = net.resolution, plan
    strength = strength if x_init is not None else 1.0

    def run(chunk: Tensor, init: Tensor | None, noise: Tensor | None = None,
            gens: Sequence[torch.Generator] | None = None, graph: bool = False) -> Tensor:
        with autocast(device, amp, cache=not graph):           # a graph must not keep autocast's cast weights
            denoise = diffusion.keeping_grain(guided(net, chunk, p.guidance, diffusion), p.grain)
            return diffusion.sample(denoise, (len(chunk), 1, r, r), p.sampler, p.steps, p.eta, gens, x_init=init,
                                    strength=strength, clip=p.clip, device=device,
                                    progress=progress and not graph, spacing=p.spacing, noise=noise)

    draws = diffusion.draws(p.sampler, p.steps, p.eta, p.spacing, strength)
    if start is not None and (draws != 1 or x_init is not None):
        raise ValueError("start noise needs a deterministic plan (ddim or dpmpp2m at eta 0) and no x_init")
    out = []
    batch = max(1, p.batch_size)
    for lo in range(0, len(cond), batch):
        chunk = cond[lo:lo + batch].to(device)
        gens = [torch.Generator().manual_seed(s) for s in seeds[lo:lo + batch]]
        init = None if x_init is None else x_init.expand(len(chunk), -1, -1, -1).to(device)
        noise = None
        if start is not None:
            noise = start.expand(len(cond), -1, -1, -1)[lo:lo + batch][None].to(device)
        elif graphs is not None:
            noise = predrawn((len(chunk), 1, r, r), gens, draws)
        if graphs is None:
            x = run(chunk, init, noise, gens)
        else:
            key = (id(net), id(diffusion), tuple(chunk.shape), init is None, p, strength, amp)
            if key not in graphs:
                graphs[key] = SamplerGraph(lambda c, i, n: run(c, i, n, graph=True), chunk, init, noise.shape)
            x = graphs[key](chunk, init, noise)
        out.append(x.float().cpu())
    return torch.cat(out)


@torch.no_grad()
def invert(net: nn.Module, diffusion: GaussianDiffusion, frames: Tensor, cond: Tensor, plan: Plan, *,
           device: torch.device | str, amp: torch.dtype | None = None, progress: bool = False) -> Tensor:
    """The start noise [N, 1, R, R] (CPU) from which `generate` with `plan` (made deterministic: eta 0)
    draws `frames` [N, 1, R, R] for their own normalised conditions `cond` [N, C]: DDIM inversion through
    the denoiser `generate` uses (guidance, grain put back) over the plan's steps."""
    device = torch.device(device)
    with autocast(device, amp):
        denoise = diffusion.keeping_grain(guided(net, cond.to(device), plan.guidance, diffusion), plan.grain)
        x = diffusion.invert(denoise, frames.to(device), plan.steps, plan.spacing, progress=progress)
    return x.float().cpu()
