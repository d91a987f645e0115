"""The researcher's peer benchmark (`../shared/bench/peer_unet.py`, unchanged) with our network edited
after it is built (docs/experiments.md#peer):
    live      the zero-initialised layers (each block's last conv, the attention projection, the output
              conv) get N(0, 0.02^2) weights, as trained weights are: the script's loss, the output
              squared, otherwise gives our network all-zero gradients
    nhwc      channels-last weights (model.channels_last)
    live-nhwc both
Needs diffusers in a scratch venv, as the peer script says:
    PYTHONPATH=. /tmp/peer/bin/python experiments/peer_variants.py live --config experiments/pmma_256.toml \
        --resolution 64 --batch 4 [--precision bf16]
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared" / "bench"))
import peer_unet  # noqa: E402

VARIANTS = ("live", "nhwc", "live-nhwc")


def edited(variant: str):
    build = peer_unet.ours

    def ours(config, resolution):
        net, n_cond = build(config, resolution)
        if "live" in variant:
            for p in net.parameters():
                if p.dim() > 1 and p.abs().sum() == 0:
                    torch.nn.init.normal_(p, std=0.02)
        if "nhwc" in variant:
            net = net.to(memory_format=torch.channels_last)
        return net, n_cond

    return ours


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in VARIANTS:
        sys.exit(f"usage: peer_variants.py {{{'|'.join(VARIANTS)}}} [peer_unet.py arguments]")
    peer_unet.ours = edited(sys.argv.pop(1))
    peer_unet.main()
