"""The precision comparison (docs/experiments.md#precision): training and sampling candidates x simulator
worlds x training seeds at the default budget, each checkpoint drawn for the 8-specimen evaluation set and
judged by the simulator's exact reading: the consistency ratio and the excess error in units of x3-x6 (the
marks) and of x1, x2 (the film's brightness), the ratio of every drawn feature, r per feature, grain, and
the read-back slope of sweeps of x5 and x3 (alone, and x5 with the other columns of a middle row given).

    python experiments/precision.py --out /tmp/precision --candidates base resize --worlds camera none --seeds 0
Worlds are the built-in simulator with the film brightening 0.25 levels per MPa of stress (`--brightness`),
with the camera texture or none. Results: one JSON line per (candidate, world, seed) in OUT/results.jsonl;
a run whose checkpoint and samples exist is not repeated. A candidate is training overrides on top of
experiments/default.toml plus sample CLI flags: sampling-only candidates (`train` empty, `from_run` naming the
candidate whose checkpoint they draw from) reuse that checkpoint.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from thinfilm.data import load_frame, read_table, resolve_all, series_of  # noqa: E402
from thinfilm.synthetic import ROI, Measured, exact_check, fidelity, measure  # noqa: E402

GEOMETRY = "--guidance-fields=x3,x4,x5,x6"
OLD = ['model.unpatch="shuffle"', "train.steps=1400"]     # the default before this comparison (2026-12-04)
CANDIDATES: dict[str, dict] = {                  # name: training overrides, sample flags, checkpoint of
    "base": {"train": OLD},
    "resize": {"train": [*OLD, 'model.unpatch="resize"']},
    "fourier": {"train": [*OLD, "model.cond_fourier=8"]},
    "floor1": {"train": [*OLD, "diffusion.min_snr_floor=1.0"]},
    "budget": {"train": [*OLD, "train.steps=1800"]},
    "lr1e3": {"train": [*OLD, "train.lr=1e-3"]},
    "attn8": {"train": [*OLD, "model.attention_levels=[2, 3]"]},
    "b16": {"train": [*OLD, "train.batch_size=16", "train.steps=2800", "train.warmup_steps=200"]},
    "combo": {"train": [*OLD, 'model.unpatch="resize"', "train.steps=1800"]},      # the default since 2026-12-05
    "attn16": {"train": [*OLD, "model.attention_levels=[1, 2, 3]"]},
    "steps05x": {"train": [*OLD, 'model.unpatch="resize"', "train.steps=900"]},    # scaling rows: the new default
    "steps2x": {"train": [*OLD, 'model.unpatch="resize"', "train.steps=3600"]},    # at 0.5x, 2x, 4x its steps
    "steps4x": {"train": [*OLD, 'model.unpatch="resize"', "train.steps=7200"]},
    "res128": {"train": [*OLD, 'model.unpatch="resize"', "train.steps=1800", "data.resolution=128"]},  # 4x the work
    "wide128": {"train": [*OLD, 'model.unpatch="resize"', "train.steps=1800", "data.resolution=[32, 128]"]},  # the
    "wide96": {"train": [*OLD, 'model.unpatch="resize"', "train.steps=1800", "data.resolution=[32, 96]"]},  # ROI's
    "wide160": {"train": [*OLD, 'model.unpatch="resize"', "train.steps=1800", "data.resolution=[48, 160]"]},  # aspect
    "eta0": {"from_run": "base", "sample": ["--eta", "0"]},
    "noema": {"from_run": "base", "sample": ["--no-ema"]},
    "ddim100": {"from_run": "base", "sample": ["--steps", "100"]},
    "trailing": {"from_run": "base", "sample": ["--spacing", "trailing"]},
    "g15": {"from_run": "base", "sample": ["--guidance", "1.5"]},
    "g125": {"from_run": "base", "sample": ["--guidance", "1.25"]},
    "g15geo": {"from_run": "base", "sample": ["--guidance", "1.5", GEOMETRY]},
    "g125geo": {"from_run": "base", "sample": ["--guidance", "1.25", GEOMETRY]},
    "g2geo": {"from_run": "base", "sample": ["--guidance", "2", GEOMETRY]},
    "g3geo": {"from_run": "base", "sample": ["--guidance", "3", GEOMETRY]},
    "g2geo-apg": {"from_run": "base", "sample": ["--guidance", "2", GEOMETRY, "--guidance-parallel", "0"]},
    "g2geo-mid": {"from_run": "base", "sample": ["--guidance", "2", GEOMETRY, "--guidance-interval", "100:700"]},
}


def run(cmd: list[str], log: Path, threads: int) -> None:
    with open(log, "a") as f:
        subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, check=True,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": str(threads)})


def load_set(csv: Path, manifest: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Generated frames of a sample folder and the real frames of `csv` they were drawn for:
    (generated [N, H, W], asked [N, 8], real [M, H, W], real values [M, 8], cond [N] into real)."""
    table = read_table(csv, [f"x{i}" for i in range(1, 9)])
    files = resolve_all(table)
    shown = pd.read_csv(manifest)
    from PIL import Image
    generated = np.stack([np.asarray(Image.open(manifest.parent / f)) for f in shown.file])
    asked = shown[table.columns].to_numpy(np.float64)
    cond = np.array([int(np.argmin(np.abs(table.values - row).sum(1))) for row in asked])
    real = np.stack([load_frame(f, ROI, generated.shape[-2:]) for f in files])
    return generated, asked, real, table.values, cond


def slope_ratio(folders: list[Path], column: str, real: np.ndarray, values: np.ndarray,
                rows: list[np.ndarray]) -> float:
    """Slope of the exact-read mark separation A on the commanded `column` over sweep (or path) frames,
    centred per folder, against the same slope over the real frames (`rows`: the real rows each folder was
    drawn for, or all real frames for a sweep): x5 in px per px, ideal 1; x3 in px per unit strain (d0)."""
    from PIL import Image
    j = int(column[1:]) - 1
    xs, ys, real_x, real_y = [], [], [], []
    for folder, pick in zip(folders, rows):
        shown = pd.read_csv(folder / "manifest.csv")
        frames = np.stack([np.asarray(Image.open(folder / f)) for f in shown.file])
        x = shown[column].to_numpy(np.float64)
        xs.append(x - x.mean())
        sep = measure(frames)[:, 0]
        ys.append(sep - sep.mean())
        real_x.append(values[pick, j] - values[pick, j].mean())
        sep = measure(real[pick])[:, 0]
        real_y.append(sep - sep.mean())
    fit = lambda x, y: float((np.concatenate(x) * np.concatenate(y)).sum() / (np.concatenate(x) ** 2).sum())  # noqa: E731
    return fit(xs, ys) / fit(real_x, real_y)


def score(folder: Path, csv: Path, sweeps: dict[str, list[Path]], paths: list[np.ndarray],
          brightness: float) -> dict:
    generated, asked, real, values, cond = load_set(csv, folder / "manifest.csv")
    cols = [f"x{i}" for i in range(1, 9)]
    groups = [series_of(p) for p in read_table(csv, cols).paths]
    check = exact_check(Measured(measure(generated), asked), Measured(measure(real), values), cond, cols, groups,
                        brightness, cols[:6])
    row = {k: round(v, 4) for k, v in fidelity(generated, real[cond]).items()}
    for c, v in check["columns"].items():
        row[f"ratio_{c}"], row[f"excess_{c}"] = round(v["ratio"], 3), float(f"{v['excess']:.4g}")
    for f, v in check["features"].items():
        row[f"ratio_{f}"] = round(v["ratio"], 3)
    everything = np.arange(len(values))
    for key, folders in sweeps.items():
        row[f"slope_{key}"] = round(slope_ratio(folders, key, real, values, [everything] * len(folders)), 3)
    for column in ("x5", "x3"):
        row[f"slope_path_{column}"] = round(slope_ratio(sweeps_of_paths(folder), column, real, values, paths), 3)
    return row


def sweeps_of_paths(folder: Path) -> list[Path]:
    return sorted(folder.parent.glob(f"{folder.name}-path-*"))


def measured_paths(csv: Path, count: int = 4, frames: int = 9) -> list[np.ndarray]:
    """Rows of the first `count` series, `frames` evenly spaced before fracture (load above 10 % of its peak)."""
    table = read_table(csv, [f"x{i}" for i in range(1, 9)])
    series = np.array([series_of(p) for p in table.paths])
    out = []
    for name in sorted(set(series))[:count]:
        rows = np.flatnonzero(series == name)
        peak = rows[np.argmax(table.values[rows, 0])]
        whole = rows[(rows <= peak) | (table.values[rows, 0] > 0.1 * table.values[peak, 0])]
        out.append(whole[np.unique(np.linspace(0, len(whole) - 1, frames).round().astype(int))])
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--candidates", nargs="+", default=["base"])
    p.add_argument("--worlds", nargs="+", default=["camera", "none"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--brightness", type=float, default=0.25)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--extra", nargs="*", default=[], help="more training overrides for every run")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    for world in args.worlds:
        for kind, extra in (("data", []), ("eval", ["--series", "8", "--seed", "99", "--all"])):
            folder = out / kind / world
            if not (folder / ("all.csv" if extra else "test.csv")).is_file():
                run([py, "-m", "thinfilm.prepare", "synth", "--out", str(folder), "--texture", world, "--brightness",
                     str(args.brightness), *extra], out / "data.log", args.threads)
    for seed in args.seeds:
        for world in args.worlds:
            for cand in args.candidates:
                spec = CANDIDATES[cand]
                trained = spec.get("from_run", cand)
                name = f"{trained}-{world}-s{seed}"
                data = out / "data" / world
                ckpt = out / "runs" / name / "checkpoints" / "last.pt"
                if not ckpt.is_file():
                    start = time.time()
                    overrides = [f"data.train_csv={data / 'train.csv'}", f"data.test_csv={data / 'test.csv'}",
                                 f"data.texture={world}", f"data.brightness={args.brightness}",
                                 f"data.cache_dir={out / 'cache'}", f"train.out_dir={out / 'runs'}",
                                 f"train.run_name={name}", f"train.seed={seed}", "train.max_minutes=0",
                                 *CANDIDATES[trained]["train"], *args.extra]
                    if (out / "runs" / name).exists():          # an interrupted run: start it again
                        shutil.rmtree(out / "runs" / name)
                    run([py, "-m", "thinfilm.train", "--config", "experiments/default.toml", "--quiet",
                         *[a for o in overrides for a in ("--set", o)]], out / f"{name}.log", args.threads)
                    print(f"{name}: trained in {(time.time() - start) / 60:.1f} min", flush=True)
                csv = out / "eval" / world / "all.csv"
                flags = spec.get("sample", [])
                folder = out / "samples" / f"{cand}-{world}-s{seed}"
                start = time.time()
                if not (folder / "manifest.csv").is_file():
                    run([py, "-m", "thinfilm.sample", "--ckpt", str(ckpt), "--conditions", str(csv), "--out",
                         str(folder), "--quiet", *flags], out / f"{name}.log", args.threads)
                sampled = time.time() - start
                table = read_table(csv, [f"x{i}" for i in range(1, 9)])
                sweeps: dict[str, list[Path]] = {}
                for col in ("x5", "x3"):
                    j = int(col[1:]) - 1
                    lo, hi = np.percentile(table.values[:, j], [5, 95])
                    for draw in range(2):
                        sweep = out / "samples" / f"{cand}-{world}-s{seed}-sweep-{col}-{draw}"
                        if not (sweep / "manifest.csv").is_file():
                            run([py, "-m", "thinfilm.sample", "--ckpt", str(ckpt), "--sweep",
                                 f"{col}={lo:.9g}:{hi:.9g}:9", "--out", str(sweep), "--seed", str(draw),
                                 "--quiet", *flags], out / f"{name}.log", args.threads)
                        sweeps.setdefault(col, []).append(sweep)
                paths = measured_paths(csv)
                for k, rows in enumerate(paths):
                    path = out / "samples" / f"{cand}-{world}-s{seed}-path-{k}"
                    if not (path / "manifest.csv").is_file():
                        listed = out / "samples" / f"path-{world}-{k}.csv"
                        pd.DataFrame(table.values[rows], columns=table.columns).to_csv(listed, index=False)
                        run([py, "-m", "thinfilm.sample", "--ckpt", str(ckpt), "--path", str(listed), "--out",
                             str(path), "--seed", str(k), "--quiet", *flags], out / f"{name}.log", args.threads)
                row = {"candidate": cand, "world": world, "seed": seed, "sample_s": round(sampled, 1),
                       **score(folder, csv, sweeps, paths, args.brightness)}
                with open(out / "results.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
                keys = ("ratio_x3", "ratio_x4", "ratio_x5", "ratio_x6", "ratio_x2", "excess_x5", "excess_x2",
                        "corr_sep_a", "corr_fracture", "grain_ratio", "slope_x5", "slope_x3", "slope_path_x5")
                print(f"  {cand} {world} s{seed}: " + ", ".join(f"{k} {row[k]}" for k in keys if k in row), flush=True)


if __name__ == "__main__":
    main()
