"""Drawing frames from a trained network: classifier-free guidance as a `denoise` callable, the sampling
`Plan`, one generator per frame, batched generation (`generate`), a frame inverted through the same denoiser
(`invert`), and a whole sampler run replayed from a CUDA graph with its noise drawn ahead (`SamplerGraph`,
`predrawn`, `noise_draws`). Shared by the sample CLI, the trainer's previews, the evaluation and the bench,
so none of them imports another's entry point.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from thinfilm import LEVELS
from thinfilm.diffusion import SAMPLERS, Denoise, GaussianDiffusion, Init, Noise, SamplerSettings, randn, run
from thinfilm.runtime import autocast, derive_seed
from thinfilm.unet import UNet


def kept_grain(cfg) -> float:
    """The std of the grain the sampler puts back (`GaussianDiffusion.keeping_grain`), in network units:
    the run's measured `diffusion.grain` (8-bit levels) with `sample.keep_grain`, else 0."""
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
        x0_c, x0_u = diffusion.to_x0_eps(out_c, x_t, t).x0, diffusion.to_x0_eps(out_u, x_t, t).x0
        delta = x0_c - x0_u                                                   # [B, 1, R, R]
        if g.parallel != 1.0:                 # APG: the part of delta along x0_c mostly scales the image's levels
            along = (delta * x0_c).flatten(1).sum(1) / x0_c.flatten(1).pow(2).sum(1).clamp(min=1e-12)
            parallel = along.view(-1, *[1] * (delta.dim() - 1)) * x0_c
            delta = delta - (1 - g.parallel) * parallel
        w = torch.full_like(t, g.scale, dtype=x0_c.dtype)
        if g.interval is not None:
            w = torch.where((t >= g.interval[0]) & (t <= g.interval[1]), w, torch.ones_like(w))
        return diffusion.from_x0(x0_c + (w - 1).view(-1, *[1] * (delta.dim() - 1)) * delta, x_t, t)

    return denoise


def noise_draws(diffusion: GaussianDiffusion, settings: SamplerSettings, strength: float = 1.0) -> int:
    """How many noise tensors a run takes (the length of `Noise.ahead`): the start, then one per step of a
    stochastic sampler (at that step's eta: `SamplerSettings.tail`) but the last, into the clean image."""
    stochastic = SAMPLERS[settings.sampler].stochastic
    return 1 + sum(stochastic(settings.eta_at(t)) for t in diffusion.visits(settings, strength)[:-1])


def predrawn(shape: Sequence[int], generators: Sequence[torch.Generator], draws: int,
             start: Tensor | None = None) -> Tensor:
    """A sampler run's noise drawn ahead, [draws, *shape] on the CPU: draw k of frame i is what the
    eager sampler takes from generator i at its k-th draw (`start` [*shape], if given, in place of draw 0, as
    `Noise` takes it), so the frames are the same either way."""
    noise = torch.stack([randn(shape, generators, "cpu") for _ in range(draws)])
    if start is not None:
        noise[0] = start
    return noise


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
    kept_grain: float = 0.0              # std put back at low noise, network units (`kept_grain`); 0 = off
    tail: int | None = None              # eta only at timesteps <= tail (`one_specimen`); None: at every step

    @classmethod
    def from_config(cls, cfg) -> "Plan":
        s = cfg.sample
        return cls(s.sampler, s.steps, s.eta, s.spacing, Guidance.from_config(s, cfg.data.columns), s.clip,
                   s.batch_size, kept_grain(cfg))

    @property
    def settings(self) -> SamplerSettings:
        """What the sampler itself is told (`diffusion.run`)."""
        return SamplerSettings(self.sampler, self.steps, self.eta, self.spacing, self.clip, self.tail)

    def deterministic(self) -> "Plan":
        """The same plan with no fresh noise after the start: eta 0, and DDIM for DDPM (which has no eta)."""
        return self._replace(sampler="ddim" if self.sampler == "ddpm" else self.sampler, eta=0.0, tail=None)

    def one_specimen(self, tail: int) -> "Plan":
        """The plan for frames of one specimen drawn from one start noise (a film, a sweep, a real frame's
        counterfactuals): deterministic above timestep `tail`, so what is set at high noise (the specimen's
        thickness, its texture's layout) is shared; at and below it eta 1 with each frame's own noise, what a
        camera redraws at every exposure (DDIM, or DPM++'s SDE form; docs/experiments.md#film-noise).
        tail 0: no fresh noise, a still film (`deterministic`)."""
        if tail <= 0:
            return self.deterministic()
        return self._replace(sampler="dpmpp2m" if self.sampler == "dpmpp2m" else "ddim", eta=1.0, tail=tail)


class Execution(NamedTuple):
    """Where and how the network runs while drawing: device, autocast dtype (None = fp32), progress bars, and
    CUDA graphs (None: eager; a dict (CUDA only): each batch's run captured once as a `SamplerGraph` kept in
    it, keyed by everything that shapes the run, and replayed when the same dict comes again)."""
    device: torch.device
    amp: torch.dtype | None = None
    progress: bool = False
    graphs: dict | None = None


@torch.no_grad()
def generate(net: nn.Module, diffusion: GaussianDiffusion, cond: Tensor, seeds: Sequence[int], plan: Plan,
             on: Execution, *, init: Init | None = None, start: Tensor | None = None) -> Tensor:
    """Frames for normalised conditions cond [N, C] (NaN = unknown) drawn as `plan` says, one generator per
    frame (seeded from `seeds`): float [N, 1, H, W] in [-1, 1] on the CPU. `init`: image-to-image (its image
    [1 or N, 1, H, W]). `start`: the start noise [N or 1, 1, H, W] instead of the seeds' first draw (one
    specimen's, `start_noise`; an inverted frame's, `invert`); the seeds' generators give the steps' noise."""
    device, batch = torch.device(on.device), max(1, plan.batch_size)
    draws = noise_draws(diffusion, plan.settings, init.strength if init else 1.0)
    if start is not None and init is not None:
        raise ValueError("give a start noise or an image-to-image start, not both")
    out = []
    for lo in range(0, len(cond), batch):
        chunk = cond[lo:lo + batch].to(device)
        shape = (len(chunk), *net.frame_shape)
        gens = [torch.Generator().manual_seed(s) for s in seeds[lo:lo + len(chunk)]]
        part = None if init is None else init._replace(image=init.image.expand(len(chunk), -1, -1, -1).to(device))
        first = None if start is None else start.expand(len(cond), -1, -1, -1)[lo:lo + len(chunk)].float()
        if on.graphs is None:
            x = _draw(net, diffusion, chunk, plan, on, part, Noise(shape, gens, device, start=first))
        else:
            x = _replay(net, diffusion, chunk, plan, on, part, predrawn(shape, gens, draws, first))
        out.append(x.float().cpu())
    return torch.cat(out)


def start_noise(shape: Sequence[int], seeds: Sequence[int]) -> Tensor:
    """The start noise [N, *shape] (CPU) that generators seeded from `seeds` draw first: frames drawn from it
    with other seeds share their start (one specimen) and differ in the steps' noise."""
    return randn((len(seeds), *shape), [torch.Generator().manual_seed(s) for s in seeds], "cpu")


def _draw(net: nn.Module, diffusion: GaussianDiffusion, cond: Tensor, plan: Plan, on: Execution,
          init: Init | None, noise: Noise, graph: bool = False) -> Tensor:
    """One batch's sampler run: guidance and the kept grain wrapped around the network, under autocast."""
    with autocast(torch.device(on.device), on.amp, cache=not graph):   # a graph must not keep autocast's casts
        denoise = diffusion.keeping_grain(guided(net, cond, plan.guidance, diffusion), plan.kept_grain)
        return run(diffusion, denoise, plan.settings, noise, init, on.progress and not graph)


def _replay(net: nn.Module, diffusion: GaussianDiffusion, cond: Tensor, plan: Plan, on: Execution,
            init: Init | None, noise: Tensor) -> Tensor:
    """One batch's run replayed from the `SamplerGraph` in `on.graphs` for its shape, captured at first use."""
    key = (id(net), id(diffusion), tuple(cond.shape), init is None, plan, None if init is None else init.strength,
           on.amp)
    if key not in on.graphs:
        def capture(c: Tensor, image: Tensor | None, z: Tensor) -> Tensor:
            part = None if image is None else Init(image, init.strength)
            return _draw(net, diffusion, c, plan, on, part, Noise(z.shape[1:], None, z.device, z), graph=True)
        on.graphs[key] = SamplerGraph(capture, cond, None if init is None else init.image, noise.shape)
    return on.graphs[key](cond, None if init is None else init.image, noise)


@torch.no_grad()
def invert(net: nn.Module, diffusion: GaussianDiffusion, frames: Tensor, cond: Tensor, plan: Plan,
           on: Execution) -> Tensor:
    """The start noise [N, 1, H, W] (CPU) from which `generate` with `plan.deterministic()` draws `frames`
    [N, 1, H, W] for their own normalised conditions `cond` [N, C]: DDIM inversion through the denoiser
    `generate` uses (guidance, grain put back) over the plan's steps."""
    device = torch.device(on.device)
    with autocast(device, on.amp):
        denoise = diffusion.keeping_grain(guided(net, cond.to(device), plan.guidance, diffusion), plan.kept_grain)
        x = diffusion.invert(denoise, frames.to(device), plan.steps, plan.spacing, progress=on.progress)
    return x.float().cpu()
