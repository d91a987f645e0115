"""`python -m thinfilm.bench`: training throughput, sampling latency, memory and FLOPs of an experiment.

    python -m thinfilm.bench --config experiments/pmma_256.toml --device cuda --json bench.json
For the config's network, on the chosen device and precision: parameters; forward GFLOP per image
(torch.utils.flop_counter, which counts a multiply-add as 2 FLOPs); the training step of the real
`Trainer` (the config's batch_size x grad_accum frames, AdamW, clipping, EMA) as s/step and images/s,
model TFLOP/s (3 x forward FLOPs per image: forward + backward) and MFU against --peak-tflops (default:
the card's dense bf16 / fp32 datasheet value where known); sampling latency of the config's sampler at
batch 1 and 16; peak memory (CUDA: allocated by torch; CPU: the process's peak resident set). Every
timing is the median of --repeats after warm-up, synchronised. Levers: --compile (torch.compile of the
network, compile time reported), --set model.channels_last=true (NHWC layout), --set
model.low_precision_norm=true (group norms in bf16 under CUDA autocast), --set
train.sync_free=true (a training step without a host-device sync, fused AdamW), --cuda-graph (each
sampling run replayed from one CUDA graph). This is the one place the README's speed figures come from.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from thinfilm import cli
from thinfilm.config import Config, add_config_args, frame_size, load_config, validate
from thinfilm.data import Normalizer, Split, Table
from thinfilm.diffusion import GaussianDiffusion
from thinfilm.runtime import pick_device, precision_name, require_cuda
from thinfilm.sampling import Execution, Plan, generate

# dense (no sparsity) peak TFLOP/s by (device name fragment, precision), from the vendors' datasheets
PEAKS = {("H100", "bf16"): 989.0, ("H100", "fp32"): 67.0, ("H200", "bf16"): 989.0, ("H200", "fp32"): 67.0,
         ("A100", "bf16"): 312.0, ("A100", "fp32"): 19.5, ("L40S", "bf16"): 362.0, ("RTX 4090", "bf16"): 165.0}


def fake_split(cfg: Config, n: int = 64) -> tuple[Split, Normalizer]:
    """A training split of random frames and conditions: the step's cost does not depend on content."""
    rng = np.random.default_rng(0)
    c = len(cfg.data.columns)
    values = rng.normal(size=(n, c))
    table = Table(Path("bench.csv"), [f"data1/{i:04d}.tif" for i in range(n)], values, list(cfg.data.columns))
    norm = Normalizer.fit(values, cfg.data.columns)
    return Split(table, rng.integers(0, 256, (n, *frame_size(cfg.data)), dtype=np.uint8), norm.encode(values)), norm


def timed(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Median seconds of `fn` over `repeats` calls after `warmup`, synchronised on CUDA."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20        # Linux: KiB


def bench(cfg: Config, device: torch.device, repeats: int = 5, compile: bool = False,
          peak_tflops: float | None = None, sample_batches: tuple[int, ...] = (1, 16),
          cuda_graph: bool = False) -> dict[str, Any]:
    """The figures described in the module docstring, as a flat dict."""
    from torch.utils.flop_counter import FlopCounterMode

    from thinfilm.train import Trainer

    cfg.train.compile = compile
    split, norm = fake_split(cfg)
    trainer = Trainer(cfg, split, split, norm, device)
    r, c = cfg.data.resolution, len(cfg.data.columns)
    x, t, cond = torch.zeros(1, 1, *frame_size(cfg.data), device=device), \
        torch.zeros(1, dtype=torch.long, device=device), torch.zeros(1, c, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        trainer.ema.model(x, t, cond)
    gflop = counter.get_total_flops() / 1e9
    amp = trainer.amp_dtype
    precision = precision_name(amp)
    out: dict[str, Any] = {
        "config": cfg.name, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "precision": precision, "resolution": r, "compile": compile,
        "channels_last": cfg.model.channels_last,
        "low_precision_norm": cfg.model.low_precision_norm, "sync_free": cfg.train.sync_free, "cuda_graph": cuda_graph,
        "params_M": sum(p.numel() for p in trainer.net.parameters()) / 1e6,
        "fwd_gflop_per_image": gflop, "flop_convention": "multiply-add = 2 FLOPs",
        "train_batch": trainer.global_batch}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    trainer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    out["first_step_s"] = time.perf_counter() - start                     # includes compiling, if any
    step = timed(trainer.step, device, repeats)
    out["train_s_per_step"] = step
    out["train_images_per_s"] = trainer.global_batch / step
    out["train_tflops"] = 3 * gflop * trainer.global_batch / step / 1e3
    name = out["device"]
    peak = peak_tflops or next((v for (k, p), v in PEAKS.items() if k in name and p == precision), None)
    out["peak_tflops"] = peak
    out["train_mfu"] = out["train_tflops"] / peak if peak else None
    out["train_peak_memory_gib"] = peak_memory_gib(device)
    diffusion = GaussianDiffusion.from_config(cfg)
    plan = Plan.from_config(cfg)
    graphs = {} if cuda_graph else None                   # captured in the warm-up call, replayed after
    for b in sample_batches:
        conds = torch.zeros(b, c)

        def draw() -> None:
            generate(trainer.ema.model, diffusion, conds, list(range(b)), plan._replace(batch_size=b),
                     Execution(device, amp, graphs=graphs))
        out[f"sample_{plan.sampler}{plan.steps}_batch{b}_s"] = timed(draw, device, max(1, repeats // 2), warmup=1)
    out["peak_memory_gib"] = peak_memory_gib(device)
    return out


def table(report: dict[str, Any]) -> str:
    """The report as aligned `key  value` lines."""
    width = max(map(len, report))
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    return "\n".join(f"{k:<{width}}  {fmt(v)}" for k, v in report.items())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m thinfilm.bench", description=__doc__.splitlines()[0])
    add_config_args(p, "experiments/default.toml")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default=None,
                   help="default: the config's train.precision")
    p.add_argument("--resolution", type=int, default=None, help="override data.resolution")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, for MFU")
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.add_argument("--cuda-graph", action="store_true", help="sampling: replay each run from a CUDA graph")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    overrides = list(args.overrides) + ([f"train.precision={args.precision}"] if args.precision else []) \
        + ([f"data.resolution={args.resolution}"] if args.resolution else [])
    cfg = validate(load_config(args.config, overrides))
    device = pick_device(args.device, "--device")
    if args.cuda_graph:
        require_cuda(device, "--cuda-graph")
    cfg.train.device = device.type
    report = bench(cfg, device, args.repeats, args.compile, args.peak_tflops, cuda_graph=args.cuda_graph)
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    cli(main)
