"""Drawing frames from a trained network: classifier-free guidance as a `denoise` callable, one
generator per frame, batched generation. Shared by the sample CLI, the trainer's previews and the
evaluation, so none of them imports another's entry point.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from thinfilm.data import LEVELS
from thinfilm.diffusion import Denoise, GaussianDiffusion
from thinfilm.runtime import autocast, derive_seed
from thinfilm.unet import UNet

Network = Callable[[Tensor, Tensor, Tensor], Tensor]     # net(x_t, t, cond): a UNet or a CudaGraphed one


def kept_grain(cfg) -> float:
    """The grain the sampler puts back (`GaussianDiffusion.keeping_grain`), in the network's units:
    the run's measured `diffusion.grain` with `sample.keep_grain`, else 0."""
    return cfg.diffusion.grain / LEVELS if cfg.sample.keep_grain else 0.0


def frame_seed(seed: int, index: int) -> int:
    """The generator seed of frame `index` of a draw with seed `seed`: a frame is the same at any batch size."""
    return derive_seed(seed, index)


def guided(net: Network, cond: Tensor, scale: float) -> Denoise:
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


class CudaGraphed:
    """`net(x, t, cond)` replayed from a CUDA graph, one per input shape: a call copies its inputs into the
    graph's buffers and launches the network's few hundred kernels as one, so a sampler at batch 1 is no
    longer bound by launching them. The same kernels replayed: the frames should be the eager network's
    (tests/test_bench.py checks that where CUDA is present; not yet run on a GPU at this writing).

    For sampling under no_grad only; the network's weights must not change while this is in use."""

    def __init__(self, net: nn.Module):
        if next(net.parameters()).device.type != "cuda":
            raise ValueError("CudaGraphed: the network must be on a CUDA device")
        self.net, self.resolution = net, net.resolution
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, tuple[Tensor, ...], Tensor]] = {}

    def capture(self, x: Tensor, t: Tensor, cond: Tensor) -> tuple[torch.cuda.CUDAGraph, tuple[Tensor, ...], Tensor]:
        inputs = (x.clone(), t.clone(), cond.clone())
        amp = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else None
        # autocast's cache of cast weights must not outlive the capture (torch.cuda.graphs' notes)
        with torch.autocast("cuda", dtype=amp or torch.float32, enabled=amp is not None, cache_enabled=False):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):            # warm up off the capture: cuDNN picks its kernels here
                for _ in range(2):
                    self.net(*inputs)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self.net(*inputs)
        return graph, inputs, out

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        key = (tuple(x.shape), x.dtype, tuple(cond.shape))
        if key not in self.graphs:
            self.graphs[key] = self.capture(x, t, cond)
        graph, inputs, out = self.graphs[key]
        for buffer, value in zip(inputs, (x, t, cond)):
            buffer.copy_(value)
        graph.replay()
        return out.clone()                           # the next replay overwrites `out`; samplers keep x0 estimates


@torch.no_grad()
def generate(net: Network, diffusion: GaussianDiffusion, cond: Tensor, seeds: Sequence[int], *, sampler: str,
             steps: int | None, eta: float, guidance: float, clip: bool, batch_size: int,
             device: torch.device | str, x_init: Tensor | None = None, strength: float = 1.0,
             amp: torch.dtype | None = None, progress: bool = False, spacing: str = "trailing",
             grain: float = 0.0) -> Tensor:
    """Frames for normalised conditions cond [N, C] (NaN = unknown), one generator per frame:
    returns float [N, 1, R, R] in [-1, 1] on the CPU. `amp`: autocast dtype (None = fp32);
    `grain` > 0: the grain put back at low noise (`kept_grain`). `net` may be a `CudaGraphed` network."""
    device = torch.device(device)
    r = net.resolution
    out = []
    for lo in range(0, len(cond), max(1, batch_size)):
        chunk = cond[lo:lo + batch_size].to(device)
        gens = [torch.Generator().manual_seed(s) for s in seeds[lo:lo + batch_size]]
        init = None if x_init is None else x_init.expand(len(chunk), -1, -1, -1).to(device)
        with autocast(device, amp):
            denoise = diffusion.keeping_grain(guided(net, chunk, guidance), grain)
            x = diffusion.sample(denoise, (len(chunk), 1, r, r), sampler, steps, eta, gens,
                                 x_init=init, strength=strength, clip=clip, device=device, progress=progress,
                                 spacing=spacing)
        out.append(x.float().cpu())
    return torch.cat(out)
