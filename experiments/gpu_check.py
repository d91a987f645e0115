"""What only a GPU can show: the researcher's networks' step time and memory, and sampling latency.

Run on a CUDA machine from the repository root:
    PYTHONPATH=. python3 experiments/gpu_check.py --out results/
For each of experiments/pmma_256.toml and pmma_512.toml it times one optimiser step (batch 4 x 4
accumulation = 16 frames, AdamW, clip) in bf16 autocast and in fp32 (tf32 off), records the peak
memory, and times DDIM-50 for one frame; then the same step with torch.compile at 256 px.
Each timing is the median of several repeats after warm-up, synchronised; results go to gpu.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from thinfilm.config import load_config
from thinfilm.diffusion import GaussianDiffusion
from thinfilm.sampling import guided
from thinfilm.unet import UNet


def timed(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def train_step_fn(net, opt, res, dtype, batch=4, accum=4):
    d = GaussianDiffusion()
    x0 = torch.rand(batch * accum, 1, res, res, device="cuda") * 2 - 1
    cond = torch.randn(batch * accum, 8, device="cuda")

    def step():
        for j in range(accum):
            part = slice(j * batch, (j + 1) * batch)
            t = torch.randint(0, 1000, (batch,), device="cuda")
            noise = torch.randn_like(x0[part])
            with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                pred = net(d.q_sample(x0[part], t, noise), t, cond[part])
            (d.loss(pred, x0[part], noise, t).mean() / accum).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="gpu_results")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    for name in ("pmma_256", "pmma_512"):
        cfg = load_config(f"experiments/{name}.toml")
        res = cfg.data.resolution
        net = UNet.from_config(cfg).cuda()
        report[f"{name}_params_M"] = round(sum(q.numel() for q in net.parameters()) / 1e6, 2)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6)
        for label, dtype in (("bf16", torch.bfloat16), ("fp32", None)):
            torch.cuda.reset_peak_memory_stats()
            s = timed(train_step_fn(net, opt, res, dtype), args.repeats)
            report[f"{name}_{label}_s_per_step16"] = round(s, 4)
            report[f"{name}_{label}_s_per_1000_steps_min"] = round(s * 1000 / 60, 1)
            report[f"{name}_{label}_peak_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            print(name, label, report[f"{name}_{label}_s_per_step16"], "s/step",
                  report[f"{name}_{label}_peak_GiB"], "GiB", flush=True)
        net.eval()
        d = GaussianDiffusion()
        cond = torch.randn(1, 8, device="cuda")
        for label, dtype in (("bf16", torch.bfloat16), ("fp32", None)):
            def draw():
                with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                    d.sample(guided(net, cond, 1.0), (1, 1, res, res), "ddim", 50, device="cuda")
            report[f"{name}_{label}_ddim50_s_per_frame"] = round(timed(draw, 3, 1), 3)
            print(name, label, "ddim50", report[f"{name}_{label}_ddim50_s_per_frame"], "s/frame", flush=True)
        del net, opt
        torch.cuda.empty_cache()
        (out / "gpu.json").write_text(json.dumps(report, indent=1))

    cfg = load_config("experiments/pmma_256.toml")
    net = UNet.from_config(cfg).cuda()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    start = time.perf_counter()
    net.compile()
    step = train_step_fn(net, opt, 256, torch.bfloat16)
    step()
    torch.cuda.synchronize()
    report["pmma_256_compile_first_step_s"] = round(time.perf_counter() - start, 1)
    report["pmma_256_bf16_compiled_s_per_step16"] = round(timed(step, args.repeats), 4)
    print("compiled 256 bf16", report["pmma_256_bf16_compiled_s_per_step16"], flush=True)
    (out / "gpu.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
