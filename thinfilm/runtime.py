"""Where and how the network runs: device choice, the distributed process group, precision, seeds.

Shared by train, sample, regression, evaluate and bench, so none of them imports another's loop.
"""
from __future__ import annotations

import os
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from thinfilm import UserError

SEED_STRIDE = 1_000_003          # a prime: sub-stream seeds seed * stride + index never collide in practice


def derive_seed(seed: int, index: int) -> int:
    """The seed of sub-stream `index` (a frame, an epoch) of a run seeded with `seed`."""
    return seed * SEED_STRIDE + index


# ------------------------------------------------------------------------------------ device
def pick_device(want: str, what: str, local_rank: int = 0) -> torch.device:
    """`auto` (CUDA when visible), `cpu`, `cuda` or `cuda:N` -> a device; a one-line error names
    `what` (the config key or flag that asked) when it cannot be had."""
    try:
        device = torch.device("cuda" if want == "auto" and torch.cuda.is_available() else
                              "cpu" if want == "auto" else want)
    except RuntimeError:
        raise UserError(f"{what} {want!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{what} {want}: no CUDA device is visible; use cpu")
        index = device.index if device.index is not None else local_rank
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if device.type != "cpu":
        raise UserError(f"{what} {want!r}: expected auto, cpu, cuda or cuda:N")
    return device


def require_cuda(device: torch.device, flag: str) -> None:
    """A one-line error when an option that only CUDA has (`flag`) meets another device."""
    if device.type != "cuda":
        raise UserError(f"{flag}: needs a CUDA device, not {device}; drop the flag")


# --------------------------------------------------------------------------------- precision
def cpu_bf16_fast() -> bool:
    """True on CPUs with native bf16 matrix instructions: AMX tiles (Intel Sapphire Rapids and later) or
    AVX-512 BF16 (e.g. AMD Zen 4 EPYC), where oneDNN runs bf16 convolutions faster than fp32."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(probe is not None and probe() for probe in probes)


def fast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype that runs the network fastest on `device`: bf16 on CUDA GPUs that support it
    and on CPUs with bf16 matrix instructions (`cpu_bf16_fast`), otherwise None (plain fp32)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if device.type == "cpu" and cpu_bf16_fast() else None


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """train.precision / --precision -> autocast dtype (None = plain fp32); auto = `fast_dtype`."""
    if precision == "auto":
        return fast_dtype(device)
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def precision_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def autocast(device: torch.device, dtype: torch.dtype | None, cache: bool = True) -> AbstractContextManager:
    """The one AMP path: autocast to `dtype` on `device`, or a no-op for None. cache False: weights are
    cast again at each use instead of once per region (what a CUDA graph capture requires)."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None,
                          cache_enabled=cache)


# ------------------------------------------------------------------------------- distributed
@dataclass
class Dist:
    """This process's place in a (possibly single-process) run."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> Dist:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return Dist(dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")))


def _collective_device() -> str:
    return "cuda" if dist.get_backend() == "nccl" else "cpu"


def agree(flags: list[bool], ddp: Dist) -> list[bool]:
    """Each flag, true if it is true on any rank (every rank must leave a loop at the same step)."""
    if ddp.world == 1:
        return flags
    t = torch.tensor([float(f) for f in flags], device=_collective_device())
    dist.all_reduce(t)
    return [bool(v > 0) for v in t.tolist()]


def check_replicas(net: torch.nn.Module) -> None:
    """Under DDP every replica must hold identical weights; compare a checksum across ranks."""
    total = torch.stack([p.detach().double().sum() for p in net.parameters()]).sum().reshape(1)
    sums = [torch.zeros(1, dtype=torch.float64, device=_collective_device()) for _ in range(dist.get_world_size())]
    dist.all_gather(sums, total.to(_collective_device()))
    if any(not torch.equal(s, sums[0]) for s in sums):
        raise UserError(f"DDP replicas diverged: weight checksums {[float(s) for s in sums]}")
