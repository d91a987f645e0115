"""Drawing frames from a trained network: classifier-free guidance as a `denoise` callable, one
generator per frame, batched generation, a whole sampler run replayed from a CUDA graph. Shared by the
sample CLI, the trainer's previews, the evaluation and the bench, so none of them imports another's
entry point.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from thinfilm.data import LEVELS
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


def guided(net: Callable[[Tensor, Tensor, Tensor], Tensor], cond: Tensor, scale: float) -> Denoise:
    """Classifier-free guidance (Ho & Salimans 2022) as a `denoise` callable: u + scale * (c - u).

    NaN fields of `cond` are unknown; the unconditional branch has every field unknown.
    """
    null = UNet.null_condition(cond)

    def denoise(x_t: Tensor, t: Tensor) -> Tensor:
        if scale == 1.0:
            return net(x_t, t, cond)
        out_c, out_u = net(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([cond, null])).chunk(2)
        return out_u + scale * (out_c - out_u)

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


@torch.no_grad()
def generate(net: nn.Module, diffusion: GaussianDiffusion, cond: Tensor, seeds: Sequence[int], *, sampler: str,
             steps: int | None, eta: float, guidance: float, clip: bool, batch_size: int,
             device: torch.device | str, x_init: Tensor | None = None, strength: float = 1.0,
             amp: torch.dtype | None = None, progress: bool = False, spacing: str = "trailing",
             grain: float = 0.0, graphs: dict | None = None) -> Tensor:
    """Frames for normalised conditions cond [N, C] (NaN = unknown), one generator per frame:
    returns float [N, 1, R, R] in [-1, 1] on the CPU. `amp`: autocast dtype (None = fp32);
    `grain` > 0: the grain put back at low noise (`kept_grain`).
    `graphs`: None runs eagerly; a dict (CUDA only) runs each chunk from a `SamplerGraph` kept in it, keyed
    by everything that shapes the run: pass the same dict again and the graphs are replayed, not captured."""
    device = torch.device(device)
    r = net.resolution
    strength = strength if x_init is not None else 1.0

    def run(chunk: Tensor, init: Tensor | None, noise: Tensor | None = None,
            gens: Sequence[torch.Generator] | None = None) -> Tensor:
        with autocast(device, amp, cache=noise is None):     # a graph must not keep autocast's cast weights
            denoise = diffusion.keeping_grain(guided(net, chunk, guidance), grain)
            return diffusion.sample(denoise, (len(chunk), 1, r, r), sampler, steps, eta, gens, x_init=init,
                                    strength=strength, clip=clip, device=device,
                                    progress=progress and noise is None, spacing=spacing, noise=noise)

    draws = None if graphs is None else diffusion.draws(sampler, steps, eta, spacing, strength)
    out = []
    for lo in range(0, len(cond), max(1, batch_size)):
        chunk = cond[lo:lo + batch_size].to(device)
        gens = [torch.Generator().manual_seed(s) for s in seeds[lo:lo + batch_size]]
        init = None if x_init is None else x_init.expand(len(chunk), -1, -1, -1).to(device)
        if graphs is None:
            x = run(chunk, init, gens=gens)
        else:
            noise = predrawn((len(chunk), 1, r, r), gens, draws)
            key = (id(net), id(diffusion), tuple(chunk.shape), init is None, sampler, steps, eta, guidance, clip,
                   strength, amp, spacing, grain)
            if key not in graphs:
                graphs[key] = SamplerGraph(run, chunk, init, noise.shape)
            x = graphs[key](chunk, init, noise)
        out.append(x.float().cpu())
    return torch.cat(out)
