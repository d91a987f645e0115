"""Frames drawn on every sample CLI path, and the comparison of two such draws: what a refactor must not change.

    python experiments/same_frames.py draw --ckpt runs/RUN --out before/    # before a change
    python experiments/same_frames.py draw --ckpt runs/RUN --out after/     # after it
    python experiments/same_frames.py compare before/ after/

`draw` runs `python -m thinfilm.sample` in-process with the flags a user gives (conditions, values, sweep,
path, path --independent, from-frame, init-image, each sampler, guidance 2 plain / on fields / in an interval,
spacing, clip and grain off) on the built-in test split; `compare` prints, per path, the largest difference
in 8-bit levels and the share of pixels that differ, and exits 1 if any path differs by more than one level
or on more than 0.1 % of its pixels (the restructure's bound, docs/experiments.md#restructure).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

TEST = "data/synthetic/test.csv"


def commands(ckpt: str, out: Path, test: str) -> dict[str, list[str]]:
    """Sample CLI argument lists by name; every one writes to out/<name>."""
    table = pd.read_csv(test)
    rows, path = out / "rows.csv", out / "path.csv"
    table.iloc[[0, 12, 25, 40, 49, 55, 70, 99]].to_csv(rows, index=False)
    table.iloc[:50:5].to_csv(path, index=False)
    camera = Path(table.filepath[2].replace("\\", "/"))                 # C:\...\data3\0003.tif
    frame = str(Path(test).parent / camera.parent.name / camera.name)
    few = ["--conditions", str(rows)]
    runs = {
        "conditions": few,
        "values": ["--values", "x3=0.05,x2=38"],
        "sweep": ["--sweep", "x3=0:0.12:5", "--base", f"{test}:20"],
        "path": ["--path", str(path)],
        "path_independent": ["--path", str(path), "--independent"],
        "from_frame": ["--from-frame", frame, "--measured", f"{test}:3", "--path", str(path)],
        "from_frame_guided": ["--from-frame", frame, "--measured", f"{test}:3", "--path", str(path),
                              "--guidance", "2", "--guidance-fields", "x3,x4,x5,x6"],
        "init_image": ["--init-image", frame, "--strength", "0.4", "--values", "x3=0.05"],
        "ddpm": few + ["--sampler", "ddpm"],
        "ddim_eta0": few + ["--sampler", "ddim", "--eta", "0"],
        "ddim_trailing": few + ["--spacing", "trailing", "--no-keep-grain"],
        "dpmpp2m": few + ["--sampler", "dpmpp2m", "--steps", "15", "--eta", "0"],
        "dpmpp2m_sde": few + ["--sampler", "dpmpp2m", "--steps", "15", "--eta", "1"],
        "guidance2": few + ["--guidance", "2"],
        "guidance_fields": few + ["--guidance", "2", "--guidance-fields", "x3,x4,x5,x6"],
        "guidance_interval_apg": few + ["--guidance", "2", "--guidance-interval", "100:700",
                                        "--guidance-parallel", "0"],
        "no_clip": few + ["--no-clip", "--batch-size", "3"],
    }
    return {name: ["--ckpt", ckpt, "--out", str(out / name), "--seed", "7", "--quiet", *args]
            for name, args in runs.items()}


def draw(ckpt: str, out: Path, test: str, only: list[str]) -> None:
    from thinfilm.sample import main

    out.mkdir(parents=True, exist_ok=True)
    for name, argv in commands(ckpt, out, test).items():
        if not only or name in only:
            print(f"== {name}: python -m thinfilm.sample {' '.join(argv)}", flush=True)
            main(argv)


def compare(a: Path, b: Path) -> bool:
    """Print each path's largest difference and share of differing pixels; True when all are within bounds."""
    ok = True
    for folder in sorted(p for p in a.iterdir() if p.is_dir()):
        names = sorted(f.name for f in folder.glob("[0-9]*.png"))
        if not (b / folder.name).is_dir():
            print(f"{folder.name}: missing in {b}")
            ok = False
            continue
        x = np.stack([np.asarray(Image.open(folder / n), np.int16) for n in names])
        y = np.stack([np.asarray(Image.open(b / folder.name / n), np.int16) for n in names])
        diff = np.abs(x - y)
        share = float((diff > 0).mean())
        within = diff.max() <= 1 and share <= 0.001
        ok &= bool(within)
        print(f"{folder.name:24s} {len(names):3d} frames  max {diff.max():3d} levels  "
              f"{share:.4%} of pixels differ  {'same' if diff.max() == 0 else 'within' if within else 'CHANGED'}")
    return ok


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("draw")
    d.add_argument("--ckpt", required=True)
    d.add_argument("--out", required=True, type=Path)
    d.add_argument("--test", default=TEST)
    d.add_argument("--only", nargs="*", default=[])
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = p.parse_args()
    if args.cmd == "draw":
        draw(args.ckpt, args.out, args.test, args.only)
    else:
        sys.exit(0 if compare(args.a, args.b) else 1)


if __name__ == "__main__":
    main()
