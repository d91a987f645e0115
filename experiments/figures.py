"""The README's pictures from a diffusion run on the built-in data: docs/default_samples.png (generated
frames above the real test frames with the same measurements), docs/sweep.png (strain A swept with fixed
noise, load and stress of a peak-load frame given, the rest unknown) and docs/img2img.png (a real test
frame and four image-to-image draws), all from seed 0.

    python experiments/figures.py --run runs/RUN --out docs/
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torchvision.utils import save_image

from thinfilm import checkpoint, sample
from thinfilm.data import read_images, read_table, resolve_all, series_of


def grid(rows: list[np.ndarray], out: Path) -> None:
    """uint8 frames [N, R, R] per row, one row under the other, 2-px white gaps."""
    x = torch.from_numpy(np.concatenate(rows)).float().div(255)[:, None]
    save_image(x, out, nrow=len(rows[0]), padding=2, pad_value=1.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="diffusion run folder")
    p.add_argument("--out", default="docs")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = checkpoint.config_of(checkpoint.load(Path(args.run) / "checkpoints" / "last.pt")).data
    test = pd.read_csv(cfg.test_csv)
    root = cfg.root or str(Path(cfg.test_csv).parent)     # "" = the CSV's folder, as in training
    series = test.filepath.map(series_of)
    # 4 moments of each held-out specimen: early, at the peak load, late, and the last frame (after fracture)
    picks = []
    for s in series.unique():
        idx = np.flatnonzero(series == s)
        peak = idx[np.argmax(test.loc[idx, cfg.columns[0]].to_numpy())]
        picks += [idx[len(idx) // 8], peak, idx[len(idx) * 7 // 8 - 4], idx[-1]]
    with tempfile.TemporaryDirectory() as tmp:
        chosen = Path(tmp) / "chosen.csv"
        test.iloc[picks].to_csv(chosen, index=False)
        sample.main(["--ckpt", args.run, "--conditions", str(chosen), "--out", f"{tmp}/gen", "--seed",
                     str(args.seed), "--quiet"])
        generated = read_images(f"{tmp}/gen/manifest.csv", cfg.columns, cfg.roi, cfg.resolution).frames
        real = read_images(chosen, cfg.columns, cfg.roi, cfg.resolution, root).frames
        grid([generated, real], out / "default_samples.png")

        peak = test.iloc[picks[1]]                       # the first specimen's peak load; the rest unknown
        base = f"x1={peak['x1']:.9g},x2={peak['x2']:.9g}"
        sample.main(["--ckpt", args.run, "--sweep", "x3=0:0.12:9", "--base", base, "--out", f"{tmp}/sweep",
                     "--seed", str(args.seed), "--quiet"])
        grid([read_images(f"{tmp}/sweep/manifest.csv", cfg.columns, cfg.roi, cfg.resolution).frames],
             out / "sweep.png")

        frame = resolve_all(read_table(chosen, cfg.columns), root)[2]   # the first specimen's late frame
        values = ",".join(f"{c}={test.loc[picks[2], c]:.9g}" for c in cfg.columns)
        draws = []
        for seed in range(4):
            sample.main(["--ckpt", args.run, "--init-image", str(frame), "--strength", "0.4", "--values", values,
                         "--out", f"{tmp}/i2i{seed}", "--seed", str(seed), "--quiet"])
            draws.append(read_images(f"{tmp}/i2i{seed}/manifest.csv", cfg.columns, cfg.roi, cfg.resolution).frames)
        grid([np.concatenate([real[2:3], *draws])], out / "img2img.png")
    print(f"wrote {out}/default_samples.png, sweep.png, img2img.png")


if __name__ == "__main__":
    main()
