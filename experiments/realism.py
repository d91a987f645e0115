"""The realism comparison (docs/experiments.md, "Texture"): training objectives x simulator worlds x
training seeds at the default budget, each checkpoint drawn with several sampler settings and scored on
its test split (and, with --eval, on an evaluation set of 8 unseen specimens) for condition fidelity
and texture.

    python experiments/realism.py --out /tmp/realism --objectives x0 v --worlds camera none --seeds 0 1 2
Results: one JSON line per (run, sampler, set) in OUT/results.jsonl; runs are skipped when their
checkpoint exists, so an interrupted comparison continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fidelity import score

REPO = Path(__file__).resolve().parents[1]
OBJECTIVES = {                       # training overrides on top of experiments/default.toml
    "x0": [],
    "v": ['diffusion.prediction="v"'],
    "eps": ['diffusion.prediction="eps"'],
    "vplain": ['diffusion.prediction="v"', 'diffusion.loss_weighting="none"', "diffusion.min_snr_floor=0"],
    "x0hi": ["diffusion.min_snr_gamma=1000"],
    "x0grain": ['diffusion.skip="grain"'],
}
SAMPLERS = {                         # sample CLI flags
    "ddim50": ["--steps", "50", "--spacing", "trailing", "--no-keep-grain"],
    "ddim50k": ["--steps", "50", "--spacing", "karras", "--no-keep-grain"],
    "ddim50kg": ["--steps", "50", "--spacing", "karras", "--keep-grain"],
}


def run(cmd: list[str], log: Path, threads: int) -> None:
    with open(log, "a") as f:
        subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, check=True,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": str(threads)})


def rescore(out: Path) -> None:
    """Score every sample folder of an earlier comparison again with this version's measurements."""
    rows = []
    for folder in sorted((out / "samples").glob("*/manifest.csv")):
        name = folder.parent.name                                  # <objective>-<world>-s<seed>-<sampler>-<set>
        objective, world, seed, sampler, label = name.split("-")
        csv = out / "data" / world / "test.csv" if label == "test" else out / "eval" / world / "all.csv"
        rows.append({"run": f"{objective}-{world}-{seed}", "objective": objective, "world": world,
                     "seed": int(seed[1:]), "sampler": sampler, "set": label, **score(folder.parent, csv)})
        print(name, flush=True)
    (out / "rescored.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def finished(ckpt: Path, steps: int) -> bool:
    """A checkpoint of a run that trained all its steps (a stopped run's last.pt is not)."""
    import torch
    return ckpt.is_file() and torch.load(ckpt, map_location="cpu", weights_only=True)["step"] >= steps


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--objectives", nargs="+", default=["x0", "v"])
    p.add_argument("--worlds", nargs="+", default=["camera", "none"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--samplers", nargs="+", default=list(SAMPLERS))
    p.add_argument("--eval", action="store_true", help="also score on the 8-specimen evaluation set")
    p.add_argument("--steps", type=int, default=1400)
    p.add_argument("--extra", nargs="*", default=[], help="more training overrides for every run")
    p.add_argument("--tag", default="", help="suffix of run names (for --extra variants)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads per process (OMP_NUM_THREADS)")
    p.add_argument("--rescore", action="store_true", help="only score every sample folder again (rescored.jsonl)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.rescore:
        rescore(out)
        return
    py = sys.executable
    for world in args.worlds:
        data = out / "data" / world
        if not (data / "test.csv").is_file():
            run([py, "-m", "thinfilm.data", "synth", "--out", str(data), "--texture", world], out / "data.log",
                args.threads)
        if args.eval and not (out / "eval" / world / "all.csv").is_file():
            run([py, "-m", "thinfilm.data", "synth", "--out", str(out / "eval" / world), "--series", "8",
                 "--seed", "99", "--all", "--texture", world], out / "data.log", args.threads)
    for seed in args.seeds:
        for world in args.worlds:
            for objective in args.objectives:
                name = f"{objective}{args.tag}-{world}-s{seed}"
                data = out / "data" / world
                ckpt = out / "runs" / name / "checkpoints" / "last.pt"
                if not finished(ckpt, args.steps):
                    start = time.time()
                    overrides = [f"data.train_csv={data / 'train.csv'}", f"data.test_csv={data / 'test.csv'}",
                                 f"data.texture={world}", f"data.cache_dir={out / 'cache'}",
                                 f"train.out_dir={out / 'runs'}", f"train.run_name={name}", f"train.seed={seed}",
                                 f"train.steps={args.steps}", "train.max_minutes=0",
                                 *OBJECTIVES[objective], *args.extra]
                    cmd = [py, "-m", "thinfilm.train", "--config", "experiments/default.toml", "--quiet"]
                    if (out / "runs" / name).exists():          # an interrupted run: start it again
                        shutil.rmtree(out / "runs" / name)
                    run(cmd + [a for o in overrides for a in ("--set", o)], out / f"{name}.log", args.threads)
                    print(f"{name}: trained in {(time.time() - start) / 60:.1f} min", flush=True)
                sets = [("test", data / "test.csv")]
                if args.eval:
                    sets.append(("eval", out / "eval" / world / "all.csv"))
                for sampler in args.samplers:
                    for label, csv in sets:
                        folder = out / "samples" / f"{name}-{sampler}-{label}"
                        if not (folder / "manifest.csv").is_file():
                            run([py, "-m", "thinfilm.sample", "--ckpt", str(ckpt), "--conditions", str(csv),
                                 "--out", str(folder), "--quiet", *SAMPLERS[sampler]], out / f"{name}.log",
                                args.threads)
                        row = {"run": name, "objective": objective + args.tag, "world": world, "seed": seed,
                               "sampler": sampler, "set": label, **score(folder, csv)}
                        with open(out / "results.jsonl", "a") as f:
                            f.write(json.dumps(row) + "\n")
                        print(f"  {sampler} {label}: " + ", ".join(
                            f"{k} {row[k]:.3f}" for k in ("corr_sep_a", "corr_sep_b", "corr_whitening",
                                                          "corr_fracture", "corr_height", "grain_ratio")), flush=True)


if __name__ == "__main__":
    main()
