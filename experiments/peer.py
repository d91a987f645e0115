"""Our UNet against the researcher's original network, side by side in one process (docs/experiments.md#peer).

The original was built with diffusers: UNet2DModel with block widths (128, 128, 256, 256, 512, 512), two
ResNet blocks per level, attention at the fifth level, one channel, and the 8 measurements embedded by
Linear(8, 512) + GELU and added to the time embedding (class_embed_type "identity"). This script rebuilds
it and ours (from an experiment file), times them in alternation (A B A B ...) on the same inputs, and
prints one JSON line: parameters, forward GFLOP per image, images / s, and the median ratio ours / original
for a training step (MSE to a target, AdamW) and for inference.

diffusers is never a dependency of the project: put it in a scratch environment that also sees the
project's packages, for instance
    python -m venv --system-site-packages /tmp/peer && /tmp/peer/bin/pip install -q diffusers
    PYTHONPATH=. /tmp/peer/bin/python experiments/peer.py --config experiments/pmma_256.toml --resolution 64 --batch 4
(`--system-site-packages` from a Python that has the project's packages, e.g. .venv/bin/python -m venv ...).
`--variant live` gives our zero-initialised layers (each block's last conv, the attention projection, the
output conv) N(0, 0.02^2) weights, as trained weights are; `nhwc` puts our network in channels-last; on a
GPU add `--device cuda --precision bf16`.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = ("plain", "live", "nhwc", "live-nhwc")


class Original(nn.Module):
    """The researcher's network: diffusers' UNet2DModel, the measurements added to its time embedding."""

    def __init__(self, resolution: int, n_cond: int):
        super().__init__()
        try:
            from diffusers import UNet2DModel
        except ImportError:
            sys.exit("error: diffusers is not importable here: run this script from a scratch venv that has it "
                     "(see the docstring of experiments/peer.py); it never enters the project")
        self.unet = UNet2DModel(
            sample_size=resolution, in_channels=1, out_channels=1, layers_per_block=2,
            block_out_channels=(128, 128, 256, 256, 512, 512),
            down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
            class_embed_type="identity")
        self.embed = nn.Sequential(nn.Linear(n_cond, 512), nn.GELU())

    def forward(self, x, t, cond):
        return self.unet(x, t, class_labels=self.embed(cond)).sample


def ours(config: str, resolution: int, variant: str) -> tuple[nn.Module, int]:
    from thinfilm.config import load_config
    from thinfilm.unet import UNet

    cfg = load_config(config, [f"data.resolution={resolution}"])
    net = UNet.from_config(cfg)
    if "live" in variant:
        for p in net.parameters():
            if p.dim() > 1 and not p.any():
                nn.init.normal_(p, std=0.02)
    if "nhwc" in variant:
        net = net.to(memory_format=torch.channels_last)
    return net, len(cfg.data.columns)


def timed(net: nn.Module, opt: torch.optim.Optimizer | None, x, t, c, device: str, dtype) -> float:
    """Seconds for one training step (opt given) or one forward pass."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.autocast(device.split(":")[0], dtype=dtype or torch.float32, enabled=dtype is not None):
        if opt is None:
            with torch.no_grad():
                net(x, t, c)
        else:
            loss = (net(x, t, c).float() - x).pow(2).mean()
    if opt is not None:
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="experiments/pmma_256.toml")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rounds", type=int, default=6, help="timed rounds after one warm-up round")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--variant", choices=VARIANTS, default="plain")
    a = p.parse_args()
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    mine, n_cond = ours(a.config, a.resolution, a.variant)
    nets = {"ours": mine, "original": Original(a.resolution, n_cond)}
    dtype = torch.bfloat16 if a.precision == "bf16" else None
    x = torch.randn(a.batch, 1, a.resolution, a.resolution, device=a.device)
    t = torch.randint(0, 1000, (a.batch,), device=a.device)
    c = torch.randn(a.batch, n_cond, device=a.device)
    report = {"resolution": a.resolution, "batch": a.batch, "device": a.device, "precision": a.precision,
              "variant": a.variant}
    for name, net in nets.items():
        net.to(a.device)
        report[f"{name}_params_M"] = round(sum(q.numel() for q in net.parameters()) / 1e6, 2)
        with torch.no_grad(), FlopCounterMode(display=False) as flops:
            net(x[:1], t[:1], c[:1])
        report[f"{name}_forward_GFLOP_per_image"] = round(flops.get_total_flops() / 1e9, 2)
    for mode in ("train", "infer"):
        opts = {k: torch.optim.AdamW(n.parameters(), lr=1e-4) if mode == "train" else None for k, n in nets.items()}
        seconds = {k: [] for k in nets}
        for round_ in range(a.rounds + 1):
            for k, net in nets.items():
                net.train(mode == "train")
                dt = timed(net, opts[k], x, t, c, a.device, dtype)
                if round_:                                                       # round 0 warms up
                    seconds[k].append(dt)
        for k in nets:
            report[f"{k}_{mode}_images_per_s"] = round(a.batch / statistics.median(seconds[k]), 2)
        ratios = [o / m for m, o in zip(seconds["ours"], seconds["original"])]
        report[f"{mode}_ratio_ours_over_original"] = round(statistics.median(ratios), 3)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
