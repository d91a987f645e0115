"""`python -m thinfilm.evaluate`: how faithful generated frames are, judged by the regressor (no simulator).

    python -m thinfilm.evaluate --regressor REG --generated DIR/manifest.csv --real TEST.csv --out OUT \
        [--root DIR] [--sweep SWEEP/manifest.csv ...]
    python -m thinfilm.evaluate [--run RUN_DIR|latest] [--config ...]      # the whole chain, below

Per column: the regressor's R² and MAE on the real test frames and on frames generated for the same
conditions, and `ratio` = MAE generated / MAE real (1.0 = as readable as a real frame) with a 95 %
bootstrap interval over conditions. Across columns: KID (Bińkowski et al. 2018) between generated and
real frames in the regressor's penultimate features beside its noise floor, a Fréchet distance as a
secondary figure, texture (grain and power per octave band in the strip between the marks), and, for
each sweep given, the slope of the read-back value on the commanded one against the slope the same
regressor gets on real frames, with the responses of the other columns beside how they move with the
swept column in real data; the project's targets (`targets`), each met or missed by a stated margin.
Columns in `data.invisible` (x7, x8: see the table in thinfilm/synthetic.py) are reported but kept out
of every headline. On the built-in data the simulator measures the same frames exactly
(`simulator_check`: the ratio of x3-x6 by the exact reading of the marks beside the regressor's, and
`synthetic.fidelity`), so the judge itself is checked. Writes OUT/report.json, OUT/report.md and PNG
plots; OUT is written only once everything is computed.

The chain (`bash run.sh evaluate`): the latest diffusion run under train.out_dir (or --run), a
regressor for its data (the latest one found, else trained), its test split sampled with the run's
sampler, sweeps of two visible columns (x3, x5: each given alone over the test split's 5-95 % range,
the other columns unknown, 4 noise seeds), then the report into <run>/evaluation/.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from thinfilm import UserError, checkpoint, cli, regression
from thinfilm.config import add_config_args, load_config, validate
from thinfilm.data import DataError, Images, read_images, read_table
from thinfilm.metrics import Interval, bootstrap, frechet, kid, mae, r2, texture
from thinfilm.runtime import autocast_dtype, pick_device
from thinfilm.synthetic import flat_mask

KID_SPLITS = 20


class EvaluationError(UserError):
    """Inputs that cannot be judged together."""


class Judged(NamedTuple):
    """Frames with what they were asked to show and what the regressor reads from them."""
    images: Images
    asked: np.ndarray           # [N, C] raw conditions
    read: np.ndarray            # [N, C] raw readings
    features: np.ndarray        # [N, 512]


def judge(loaded: regression.Loaded, images: Images, device, amp) -> Judged:
    out = regression.read(loaded, images.frames, device, amp)
    return Judged(images, images.values, out.values, out.features)


def match_rows(generated: np.ndarray, real: np.ndarray, scale: np.ndarray, source: str) -> np.ndarray:
    """For each generated condition row [N, C], the real row [M, C] with the same values (within 1e-6 of
    each column's scale): [N] indices. A row without a twin is an error naming it."""
    diff = np.abs(generated[:, None, :] - real[None, :, :]) / scale
    best = diff.max(2).argmin(1)
    worst = diff[np.arange(len(generated)), best].max(1)
    if (worst > 1e-6).any():
        line = int(np.flatnonzero(worst > 1e-6)[0]) + 2
        raise EvaluationError(f"{source}: line {line}: no real frame has these conditions; generate for the real "
                              "CSV's rows (python -m thinfilm.sample --conditions TEST.csv)")
    return best


def ratio_interval(gen_err: np.ndarray, gen_cond: np.ndarray, real_err: np.ndarray, seed: int = 0) -> Interval:
    """MAE generated / MAE real with its bootstrap interval over conditions. gen_err [N]: |read - asked| of
    each generated frame, gen_cond [N]: its condition's index in real_err [M] (|read - true| per condition)."""
    m = len(real_err)
    per_condition = np.bincount(gen_cond, weights=gen_err, minlength=m)
    counts = np.bincount(gen_cond, minlength=m)

    def statistic(idx: np.ndarray) -> float:
        real = real_err[idx].mean()
        return float(per_condition[idx].sum() / max(counts[idx].sum(), 1) / real) if real > 0 else math.nan
    return bootstrap(statistic, m, seed=seed)


def kid_against_floor(gen: Judged, gen_cond: np.ndarray, real: Judged, seed: int = 0) -> dict[str, float]:
    """KID of generated against real frames, and its noise floor, at equal sample counts: the real frames
    are split KID_SPLITS times into halves A and B; floor = RMS of KID(A, B) (what two sets of real frames
    of this size score), kid = mean of KID(generated for A's conditions, B)."""
    rng = np.random.default_rng(seed)
    m = len(real.features)
    floors, tests = [], []
    for _ in range(KID_SPLITS):
        perm = rng.permutation(m)
        a, b = perm[: m // 2], perm[m // 2:]
        floors.append(kid(real.features[a], real.features[b]))
        tests.append(kid(gen.features[np.isin(gen_cond, a)], real.features[b]))
    return {"kid": float(np.mean(tests)), "kid_spread": float(np.std(tests)),
            "floor": float(np.sqrt(np.mean(np.square(floors)))), "kid_all": kid(gen.features, real.features),
            "splits": KID_SPLITS, "n_generated": len(gen.features), "n_real": m}


def slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of y on x, both [N] and already centred."""
    return float((x * y).sum() / (x * x).sum())


def sensitivity(sweeps: list[Judged], real: Judged, scale: np.ndarray, columns: list[str],
                invisible: list[str]) -> dict[str, Any]:
    """Per swept column i: the slope of every reading j on the commanded value (std units, pooled within
    sweeps), against the same slopes over the real frames, reading j on the true value of column i: for
    j = i how well a real frame's value is read; for j != i how much column j moves with column i in real
    data, which is what a sweep that leaves j unknown should reproduce, and ~0 for unrelated columns."""
    by_column: dict[int, list[Judged]] = {}
    for s in sweeps:
        given = np.isfinite(s.asked)
        moving = [j for j in range(len(columns)) if given[:, j].all() and s.asked[:, j].std() > 0]
        if len(moving) != 1:
            raise EvaluationError(f"a sweep must vary exactly one column; {s.images.names[0]}'s varies "
                                  f"{', '.join(columns[j] for j in moving) or 'none'}")
        by_column.setdefault(moving[0], []).append(s)
    centred = lambda v: v - v.mean()  # noqa: E731
    out = {}
    for i, group in sorted(by_column.items()):
        x = np.concatenate([centred(s.asked[:, i]) / scale[i] for s in group])
        t = centred(real.asked[:, i]) / scale[i]
        gen, seen = {}, {}
        for j, col in enumerate(columns):
            if col in invisible:
                continue
            gen[col] = slope(x, np.concatenate([centred(s.read[:, j]) / scale[j] for s in group]))
            seen[col] = slope(t, centred(real.read[:, j]) / scale[j])
        c = columns[i]
        out[c] = {"slope": gen.pop(c), "real_slope": seen.pop(c), "off_diagonal": gen, "real_off_diagonal": seen,
                  "sweeps": len(group), "frames": len(x)}
        out[c]["slope_ratio"] = out[c]["slope"] / out[c]["real_slope"]
    return out


# the project's targets for a model, checked in every report (what is missed, and by how much)
TARGET_R2_REAL = 0.95        # the judge: R² on real held-out frames, every visible column
TARGET_RATIO = 1.2           # consistency ratio, every visible column (1.0 = as readable as a real frame)
TARGET_SLOPE = 0.10          # sweep slope within 10 % of the real-frame slope
TARGET_KID = 3.0             # KID within 3x its real-vs-real noise floor
TARGET_GRAIN = (0.8, 1.25)   # grain in the flat strip, generated / real: the camera's, neither smoother nor noisier


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its value, whether it is met and, if not, by how much it is missed."""
    rows = []

    def check(name: str, value: float, goal: float, above: bool = False) -> None:
        miss = goal - value if above else value - goal
        rows.append({"target": name, "value": value, "goal": goal, "met": bool(miss <= 0), "missed_by": max(miss, 0.0)})
    for c, v in report["columns"].items():
        if v["visible"]:
            check(f"{c}: R² of the regressor on real frames >= {TARGET_R2_REAL}", v["real"]["r2"], TARGET_R2_REAL,
                  above=True)
    for c, v in report["columns"].items():
        if v["visible"]:
            check(f"{c}: consistency ratio <= {TARGET_RATIO}", v["ratio"], TARGET_RATIO)
    for c, v in report.get("sensitivity", {}).items():
        check(f"{c}: |sweep slope / real slope - 1| <= {TARGET_SLOPE}", abs(v["slope_ratio"] - 1), TARGET_SLOPE)
    k = report["kid"]
    check(f"KID / noise floor <= {TARGET_KID}", k["kid"] / k["floor"] if k["floor"] > 0 else math.inf, TARGET_KID)
    if "texture" in report:
        grain, (low, high) = report["texture"]["grain_ratio"], TARGET_GRAIN
        check(f"texture: grain ratio >= {low}", grain, low, above=True)
        check(f"texture: grain ratio <= {high}", grain, high)
    return rows


def simulator_check(gen: Judged, real: Judged, cond: np.ndarray, columns: list[str]) -> dict[str, Any]:
    """The built-in data only: the simulator's exact reading of the same frames beside the regressor's.
    Its rendered mark separations are x5 and x6, and the strains x3 = x5 / d0A - 1, x4 = x6 / d0B - 1 with
    each frame's d0 known from its asked values, so the consistency ratio of these four columns can be
    computed without the regressor (`ratio`), and the regressor's reading of generated frames compared
    with the exact one (`agreement`: Pearson r). Also `synthetic.fidelity` (r against the real frame)."""
    from thinfilm.synthetic import fidelity, measure

    out: dict[str, Any] = {**fidelity(gen.images.frames, real.images.frames[cond]), "ratio": {}, "agreement": {}}
    seps = measure(gen.images.frames)[:, :2], measure(real.images.frames)[:, :2]
    for k, (strain, dist) in enumerate((("x3", "x5"), ("x4", "x6"))):
        if strain not in columns or dist not in columns:
            continue
        i, j = columns.index(strain), columns.index(dist)
        exact = []
        for judged, sep in zip((gen, real), seps):
            d0 = judged.asked[:, j] / (1 + judged.asked[:, i])
            exact.append({strain: sep[:, k] / d0 - 1, dist: sep[:, k]})
        for c, col in ((strain, i), (dist, j)):
            interval = ratio_interval(np.abs(exact[0][c] - gen.asked[:, col]), cond,
                                      np.abs(exact[1][c] - real.asked[:, col]))
            out["ratio"][c] = {"ratio": interval.value, "ratio_low": interval.low, "ratio_high": interval.high}
            out["agreement"][c] = float(np.corrcoef(gen.read[:, col], exact[0][c])[0, 1])
    return out


# ------------------------------------------------------------------------------------- report
def evaluate(regressor: str, generated: str, real_csv: str, root: str = "", sweeps: tuple[str, ...] = (),
             device_name: str = "auto") -> dict[str, Any]:
    """Everything report.json holds (see the module docstring)."""
    device = pick_device(device_name, "--device")
    loaded = regression.load(regressor, device)
    cfg, columns = loaded.config, loaded.normalizer.columns
    amp = autocast_dtype(cfg.train.precision, device)
    d = cfg.data
    gen = judge(loaded, read_images(generated, columns, d.roi, d.resolution, need_values=True), device, amp)
    if not Path(real_csv).is_file():
        raise DataError(f"{real_csv}: CSV not found")
    real = judge(loaded, read_images(real_csv, columns, d.roi, d.resolution, root, need_values=True,
                                     cache_dir=d.cache_dir), device, amp)
    scale = np.array(loaded.normalizer.scale)
    twin = match_rows(gen.asked, real.asked, scale, generated)
    used = np.unique(twin)                                # the real conditions that were generated
    real = Judged(Images([real.images.names[k] for k in used], real.images.frames[used], real.asked[used]),
                  real.asked[used], real.read[used], real.features[used])
    cond = np.searchsorted(used, twin)
    report: dict[str, Any] = {"columns": {}, "counts": {"generated": len(twin), "conditions": len(used)},
                              "inputs": {"regressor": str(regressor), "generated": str(generated),
                                         "real": str(real_csv)}}
    for j, c in enumerate(columns):
        gen_err, real_err = np.abs(gen.read[:, j] - gen.asked[:, j]), np.abs(real.read[:, j] - real.asked[:, j])
        ratio = ratio_interval(gen_err, cond, real_err)
        report["columns"][c] = {
            "visible": c not in d.invisible,
            "real": {"r2": r2(real.read[:, j], real.asked[:, j]), "mae": mae(real.read[:, j], real.asked[:, j])},
            "generated": {"r2": r2(gen.read[:, j], gen.asked[:, j]), "mae": mae(gen.read[:, j], gen.asked[:, j])},
            "ratio": ratio.value, "ratio_low": ratio.low, "ratio_high": ratio.high}
    report["kid"] = kid_against_floor(gen, cond, real)
    report["frechet"] = {"value": frechet(gen.features, real.features), "dims": gen.features.shape[1],
                         "rank_deficient": min(len(gen.features), len(real.features)) <= gen.features.shape[1]}
    report["texture"] = texture(gen.images.frames, real.images.frames, flat_mask(d.resolution)).to_dict()
    if sweeps:
        judged = [judge(loaded, read_images(s, columns, d.roi, d.resolution), device, amp) for s in sweeps]
        report["sensitivity"] = sensitivity(judged, real, scale, columns, d.invisible)
    if (Path(real_csv).parent / "synthetic.json").is_file():      # the built-in data: the simulator can measure
        report["simulator"] = simulator_check(gen, real, cond, columns)
    report["targets"] = targets(report)
    report["_plot"] = {"columns": columns, "gen_asked": gen.asked, "gen_read": gen.read,
                       "real_asked": real.asked, "real_read": real.read, "sweeps": sweeps}
    return report


def write_report(report: dict[str, Any], out: Path) -> None:
    """report.json, report.md and the plots, into a temporary folder renamed to `out` at the end."""
    plot = report.pop("_plot")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (tmp / "report.md").write_text(markdown(report))
        scatter(plot, report, tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def markdown(report: dict[str, Any]) -> str:
    """The report as a page: the consistency table, then KID, texture, sensitivity, the simulator's check."""
    n = report["counts"]
    lines = ["# Evaluation", "", f"{n['generated']} generated frames for {n['conditions']} conditions of the real "
             "test frames; the regressor reads all of them. ratio = MAE generated / MAE real (1.0 = as readable "
             "as a real frame), 95 % bootstrap interval over conditions. Columns no frame can show are in "
             "italics and out of the headlines.", "",
             "| column | R² real | R² generated | MAE real | MAE generated | ratio (95 % interval) |",
             "|---|---|---|---|---|---|"]
    for c, v in report["columns"].items():
        name = c if v["visible"] else f"*{c} (not visible)*"
        lines.append(f"| {name} | {v['real']['r2']:.3f} | {v['generated']['r2']:.3f} | {v['real']['mae']:.4g} | "
                     f"{v['generated']['mae']:.4g} | {v['ratio']:.2f} ({v['ratio_low']:.2f}-{v['ratio_high']:.2f}) |")
    missed = [t for t in report["targets"] if not t["met"]]
    lines += ["", f"**Targets**: {len(report['targets']) - len(missed)} of {len(report['targets'])} met."
              + ("".join(f" {t['target']}: {t['value']:.3f}, missed by {t['missed_by']:.3f}." for t in missed))]
    k = report["kid"]
    lines += ["", f"**KID** (regressor's penultimate features, x1000): generated vs real {1000 * k['kid']:.3f} "
              f"(spread {1000 * k['kid_spread']:.3f}) against a noise floor of {1000 * k['floor']:.3f} "
              f"(RMS of KID between two halves of the real frames, {k['splits']} splits; "
              f"{k['n_generated']} generated, {k['n_real']} real frames): {k['kid'] / k['floor']:.1f}x the floor. "
              f"Fréchet distance {report['frechet']['value']:.4g} (secondary: with {k['n_real']} frames in "
              f"{report['frechet']['dims']} dimensions the covariances are "
              f"{'rank-deficient' if report['frechet']['rank_deficient'] else 'full-rank'})."]
    t = report["texture"]
    bands = ", ".join(f"{b.removeprefix('band_ratio_')} {v:.2f}" for b, v in t.items() if b.startswith("band_ratio"))
    lines += ["", f"**Texture** in the strip between the marks: high-pass std {t['grain_generated']:.2f} levels "
              f"generated vs {t['grain_real']:.2f} real (ratio {t['grain_ratio']:.2f}); power per octave band, "
              f"generated / real: {bands} ({t['n_generated']} and {t['n_real']} frames)."]
    if "sensitivity" in report:
        lines += ["", "**Sensitivity**: one column swept with fixed noise; slope of the read-back value on the "
                  "commanded one (std units) against the slope the regressor gets on real frames, and how the "
                  "other visible readings move with it, generated (real frames in brackets: how the column moves "
                  "with the swept one in real data).", "",
                  "| swept | slope | real slope | ratio | other readings |", "|---|---|---|---|---|"]
        for c, s in report["sensitivity"].items():
            others = ", ".join(f"{k} {v:+.2f} ({s['real_off_diagonal'][k]:+.2f})" for k, v in s["off_diagonal"].items())
            lines.append(f"| {c} ({s['sweeps']} sweeps) | {s['slope']:.3f} | {s['real_slope']:.3f} | "
                         f"{s['slope_ratio']:.2f} | {others} |")
    if "simulator" in report:
        f = report["simulator"]
        lines += ["", "**The simulator's measurement of the same frames** (built-in data only: the exact reading "
                  "the regressor stands in for). Consistency ratio by the exact reading of the marks, against "
                  "the regressor's; r between the two readings of the generated frames:", "",
                  "| column | ratio, exact reading | ratio, regressor | r, regressor vs exact |", "|---|---|---|---|"]
        for c, e in f["ratio"].items():
            g = report["columns"][c]
            lines.append(f"| {c} | {e['ratio']:.2f} ({e['ratio_low']:.2f}-{e['ratio_high']:.2f}) | "
                         f"{g['ratio']:.2f} ({g['ratio_low']:.2f}-{g['ratio_high']:.2f}) | {f['agreement'][c]:.3f} |")
        lines += ["", "`synthetic.fidelity`, Pearson r against the real frame: " + ", ".join(
            f"{k.removeprefix('corr_')} {v:.3f}" for k, v in f.items() if k.startswith("corr_"))]
    lines += ["", "![predicted against asked](scatter.png)", ""]
    return "\n".join(lines)


def scatter(plot: dict[str, Any], report: dict[str, Any], out: Path) -> None:
    """scatter.png: read against asked per visible column, real and generated frames on one plot each."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [j for j, c in enumerate(plot["columns"]) if report["columns"][c]["visible"]]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.3), squeeze=False)
    for ax, j in zip(axes[0], shown):
        c = plot["columns"][j]
        ax.scatter(plot["real_asked"][:, j], plot["real_read"][:, j], s=8, alpha=0.7, label="real")
        ax.scatter(plot["gen_asked"][:, j], plot["gen_read"][:, j], s=8, alpha=0.7, label="generated")
        lo = min(plot["real_asked"][:, j].min(), plot["gen_asked"][:, j].min())
        hi = max(plot["real_asked"][:, j].max(), plot["gen_asked"][:, j].max())
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.6)
        ax.set_title(f"{c}: ratio {report['columns'][c]['ratio']:.2f}", fontsize=9)
        ax.set_xlabel("asked", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("read by the regressor", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "scatter.png", dpi=110)
    plt.close(fig)


# -------------------------------------------------------------------------------------- chain
def chain(args: argparse.Namespace) -> Path:
    """The default run's evaluation end to end (see the module docstring); returns the report folder."""
    from thinfilm import sample

    cfg = validate(load_config(args.config, args.overrides))
    runs = Path(cfg.train.out_dir)
    if args.run == "latest":
        found = sorted(runs.glob("*/checkpoints/last.pt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise EvaluationError(f"no diffusion run under {runs}: train one first (bash run.sh train)")
        ckpt = found[-1]
    else:
        ckpt = Path(args.run) / "checkpoints" / "last.pt" if Path(args.run).is_dir() else Path(args.run)
    state = checkpoint.load(ckpt)
    run_cfg, run = checkpoint.config_of(state), ckpt.parent.parent
    del state
    regressor = Path(args.regressor) if args.regressor else find_regressor(runs, run_cfg)
    if regressor is None:
        print("no regressor for this data yet: training one (python -m thinfilm.regression train)")
        reg_cfg = validate(load_config(args.config, args.overrides + [
            f"data.train_csv={run_cfg.data.train_csv}", f"data.test_csv={run_cfg.data.test_csv}",
            f"data.resolution={run_cfg.data.resolution}"]))
        regressor = regression.train_regressor(reg_cfg, args.quiet)
    work = run / "evaluation"
    test = run_cfg.data.test_csv
    quiet = ["--quiet"] if args.quiet else []
    sample.main(["--ckpt", str(ckpt), "--conditions", test, "--out", str(work / "generated"), *quiet])
    table = read_table(test, run_cfg.data.columns, need_paths=False)
    sweeps = []
    for col in args.sweep_columns:                   # the column alone given, over the test range; 4 noises
        j = run_cfg.data.columns.index(col)
        lo, hi = np.percentile(table.values[:, j], [5, 95])
        for seed in range(4):
            folder = work / f"sweep-{col}-{seed}"
            sample.main(["--ckpt", str(ckpt), "--sweep", f"{col}={lo:.9g}:{hi:.9g}:9", "--out", str(folder),
                         "--seed", str(seed), *quiet])
            sweeps.append(str(folder / "manifest.csv"))
    out = work / "report"
    report = evaluate(str(regressor), str(work / "generated" / "manifest.csv"), test, run_cfg.data.root,
                      tuple(sweeps))
    write_report(report, out)
    return out


def find_regressor(runs: Path, cfg) -> Path | None:
    """The latest regressor under `runs` trained on this data (same training CSV and resolution)."""
    for best in sorted(runs.glob("*/checkpoints/best.pt"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            other = checkpoint.config_of(checkpoint.load(best, checkpoint.REGRESSOR)).data
        except UserError:
            continue
        if (other.train_csv, other.resolution, other.columns) == (cfg.data.train_csv, cfg.data.resolution,
                                                                  cfg.data.columns):
            return best
    return None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m thinfilm.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--regressor", help="regressor checkpoint (.pt or run folder)")
    p.add_argument("--generated", help="manifest.csv of generated frames (python -m thinfilm.sample)")
    p.add_argument("--real", help="seed-format CSV of the real test frames with the same conditions")
    p.add_argument("--root", default="", help="folder the real CSV's frame paths are rebased under (data.root)")
    p.add_argument("--out", help="report folder")
    p.add_argument("--sweep", action="append", default=[], help="manifest.csv of a sample --sweep; repeatable")
    p.add_argument("--device", default="auto")
    chain_args = p.add_argument_group("the whole chain (no --generated)")
    add_config_args(chain_args, "experiments/default.toml")
    chain_args.add_argument("--run", default="latest", help="diffusion run folder or checkpoint (default: latest)")
    chain_args.add_argument("--sweep-columns", nargs="*", default=["x3", "x5"])
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.generated is None:
        print(f"report: {chain(args) / 'report.md'}")
        return
    missing = [f"--{k}" for k in ("regressor", "real", "out") if getattr(args, k) is None]
    if missing:
        raise EvaluationError(f"with --generated also give {', '.join(missing)}")
    report = evaluate(args.regressor, args.generated, args.real, args.root, tuple(args.sweep), args.device)
    write_report(report, Path(args.out))
    print(f"report: {Path(args.out) / 'report.md'}")


if __name__ == "__main__":
    cli(main)
