"""The data command line, `bash run.sh data synth | split | inspect` (or `python -m thinfilm.prepare ...`):
generate the built-in dataset, split a CSV by series folder, and check a dataset before a long run, with
the report a researcher reads first (`inspect`). The library it calls is thinfilm.data.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from thinfilm import cli
from thinfilm.config import DataConfig, add_config_args, frame_size, load_config, validate
from thinfilm.data import (
    DataError,
    ensure_synthetic,
    load_frame,
    read_table,
    resolve_all,
    series_of,
    synthesize,
    write_split,
)


def inspect(cfg: DataConfig, preview: Path, count: int = 8) -> str:
    """The report a researcher reads before a long run; writes a preview PNG of network inputs."""
    lines = []
    tables = [read_table(cfg.train_csv, cfg.columns), read_table(cfg.test_csv, cfg.columns)]
    for name, t in zip(("train", "test"), tables):
        series = sorted({series_of(p) for p in t.paths})
        lines.append(f"{name}: {t.csv}  {len(t)} rows, {len(series)} series ({', '.join(series)})")
    overlap = {series_of(p) for p in tables[0].paths} & {series_of(p) for p in tables[1].paths}
    if overlap:
        lines.append(f"WARNING: series in both splits: {', '.join(sorted(overlap))} (split by series, "
                     "not by frame: `bash run.sh data split`)")
    files = [resolve_all(t, cfg.root) for t in tables]
    lines.append(f"frames: all {sum(map(len, files))} found")
    train, test = tables[0].values, tables[1].values
    lines.append(f"{'column':>12} {'min':>12} {'mean':>12} {'std':>12} {'max':>12}   test range")
    for j, c in enumerate(cfg.columns):
        v = train[:, j]
        lines.append(f"{c:>12} {v.min():12.6g} {v.mean():12.6g} {v.std():12.6g} {v.max():12.6g}   "
                     f"{test[:, j].min():.6g} .. {test[:, j].max():.6g}")
    for j, c in enumerate(cfg.columns):
        out = ((test[:, j] < train[:, j].min()) | (test[:, j] > train[:, j].max())).mean()
        if out > 0:
            lines.append(f"WARNING: {c}: {out:.0%} of test rows lie outside the training range (extrapolation)")
        if train[:, j].std() == 0:
            lines.append(f"WARNING: {c} is constant in the training split (normalised to 0)")
    pick = np.linspace(0, len(files[0]) - 1, min(count, len(files[0]))).round().astype(int)
    crops = [load_frame(files[0][i], cfg.roi, cfg.resolution) for i in pick]
    Image.fromarray(np.concatenate(crops, axis=1)).save(preview)
    lines.append(f"preview of {len(crops)} training crops as the network sees them "
                 f"({frame_size(cfg)[1]}x{frame_size(cfg)[0]}, width x height): {preview}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """`bash run.sh data synth | split | inspect`."""
    args = parse(argv)
    if args.command == "synth":
        synth(args)
    elif args.command == "split":
        split(Path(args.csv), args.out, args.test_series)
    else:
        cfg = validate(load_config(args.config, args.overrides)).data
        ensure_synthetic(cfg)
        print(inspect(cfg, Path(args.preview)))


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m thinfilm.prepare", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("synth", help="generate the built-in synthetic dataset")
    p.add_argument("--out", default="data/synthetic")
    p.add_argument("--series", type=int, default=DataConfig.synthetic_series)
    p.add_argument("--frames", type=int, default=DataConfig.synthetic_frames, help="frames per series")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--texture", choices=["camera", "none"], default=DataConfig.texture,
                   help="the film's texture (camera: speckle, thickness variations; none: smooth)")
    p.add_argument("--brightness", type=float, default=DataConfig.brightness,
                   help="levels per MPa of stress by which the film brightens (0 = off; data.brightness)")
    p.add_argument("--all", action="store_true", help="write every frame to all.csv, no train/test split "
                   "(an evaluation set: give it a --seed no training set used)")
    p = sub.add_parser("split", help="write train/test CSVs split by series folder")
    p.add_argument("--csv", required=True)
    p.add_argument("--out", default=None,
                   help="folder for <name>_train.csv / <name>_test.csv (default: beside the CSV)")
    p.add_argument("--test-series", nargs="*", default=[])
    p = sub.add_parser("inspect", help="check a dataset before training")
    add_config_args(p, "experiments/default.toml")
    p.add_argument("--preview", default="preview.png")
    return parser.parse_args(argv)


def synth(args: argparse.Namespace) -> None:
    """`synth`: the built-in dataset, or an evaluation set of unseen specimens (--all)."""
    if args.brightness < 0:
        raise DataError(f"--brightness {args.brightness}: give levels per MPa, 0 or more")
    world = DataConfig(synthetic_series=args.series, synthetic_frames=args.frames, synthetic_seed=args.seed,
                       texture=args.texture, brightness=args.brightness)
    synthesize(Path(args.out), world, split=not args.all)
    csvs = "all.csv" if args.all else "train.csv / test.csv"
    print(f"wrote {args.series * args.frames} frames and {csvs} under {args.out}")


def split(csv: Path, out: str | None, test_series: list[str]) -> None:
    """`split`: a CSV into <name>_train.csv / <name>_test.csv by series folder."""
    if not csv.is_file():
        raise DataError(f"{csv}: CSV not found")
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    if "filepath" not in table.columns:
        raise DataError(f"{csv}: no filepath column; the header has {', '.join(table.columns)}")
    folder = Path(out) if out else csv.parent
    for path, rows in write_split(table, folder, f"{csv.stem}_train.csv", f"{csv.stem}_test.csv", test_series):
        series = sorted(set(rows.filepath.map(series_of)))
        print(f"{path.stem.rsplit('_', 1)[-1]}: {len(rows)} rows, series {', '.join(series)} -> {path}")


if __name__ == "__main__":
    cli(main)
