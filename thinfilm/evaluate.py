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
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from thinfilm import UserError, checkpoint, cli, regression, sample
from thinfilm.config import add_config_args, load_config, validate
from thinfilm.data import DataError, Images, Split, Table, after_fracture, read_images, read_table, series_of
from thinfilm.metrics import Region, excess_interval, frechet, kid, mae, r2, ratio_interval, texture, texture_region
from thinfilm.runtime import autocast_dtype, pick_device
from thinfilm.sampling import Execution

if TYPE_CHECKING:                          # the simulator is imported where the built-in data is found
    from thinfilm.synthetic import Training

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


def match_rows(generated: np.ndarray, real: np.ndarray, scale: np.ndarray, source: str,
               whose: str = "the real", how: str = "--conditions TEST.csv") -> np.ndarray:
    """For each generated condition row [N, C], the real row [M, C] with the same values (within 1e-6 of
    each column's scale): [N] indices. A row without a twin is an error naming it."""
    best = np.empty(len(generated), dtype=int)
    for lo in range(0, len(generated), 256):            # [256, M, C] at a time: a training split is large
        diff = np.abs(generated[lo:lo + 256, None, :] - real[None, :, :]) / scale
        best[lo:lo + 256] = diff.max(2).argmin(1)
        worst = diff[np.arange(len(diff)), best[lo:lo + 256]].max(1)
        if (worst > 1e-6).any():
            line = lo + int(np.flatnonzero(worst > 1e-6)[0]) + 2
            raise EvaluationError(f"{source}: line {line}: no frame of {whose} CSV has these conditions; generate "
                                  f"for its rows (python -m thinfilm.sample {how})")
    return best


def kid_against_floor(gen: Judged, matched: np.ndarray, real: Judged, seed: int = 0) -> dict[str, float]:
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
        tests.append(kid(gen.features[np.isin(matched, a)], real.features[b]))
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
    data, which is what a sweep that leaves j unknown should reproduce, and ~0 for unrelated columns.

    Three kinds of sweep, kept apart: one column given alone (key "<column>"); one column moving with the
    others given at a fixed row ("<column> at a fixed row"); a measured path, every column moving as in a
    real test ("<column> along measured paths", only the reading of each moving column itself, and only for
    the columns also swept alone where there are such sweeps)."""
    groups: dict[tuple[int, str], list[Judged]] = {}
    alone = set()
    for s in sweeps:
        given = np.isfinite(s.asked)
        moving = [j for j in range(len(columns)) if given[:, j].all() and s.asked[:, j].std() > 0]
        if not moving:
            raise EvaluationError(f"a sweep must vary a column; {s.images.names[0]}'s varies none")
        if len(moving) > 1:
            for j in moving:
                groups.setdefault((j, "along measured paths"), []).append(s)
            continue
        kind = "at a fixed row" if np.delete(given, moving[0], axis=1).any() else ""
        alone.update(moving if not kind else [])
        groups.setdefault((moving[0], kind), []).append(s)
    centred = lambda v: v - v.mean()  # noqa: E731
    out = {}
    for (i, kind), group in sorted(groups.items()):
        if columns[i] in invisible or (kind == "along measured paths" and alone and i not in alone):
            continue
        x = np.concatenate([centred(s.asked[:, i]) / scale[i] for s in group])
        t = centred(real.asked[:, i]) / scale[i]
        reads = [j for j, c in enumerate(columns) if c not in invisible and (j == i or kind != "along measured paths")]
        gen = {columns[j]: slope(x, np.concatenate([centred(s.read[:, j]) / scale[j] for s in group])) for j in reads}
        seen = {columns[j]: slope(t, centred(real.read[:, j]) / scale[j]) for j in reads}
        c = columns[i]
        key = f"{c} {kind}" if kind else c
        out[key] = {"slope": gen.pop(c), "real_slope": seen.pop(c), "off_diagonal": gen, "real_off_diagonal": seen,
                    "sweeps": len(group), "frames": len(x), "kind": kind or "alone"}
        out[key]["slope_ratio"] = out[key]["slope"] / out[key]["real_slope"]
    return out


# the project's targets for a model, checked in every report (what is missed, and by how much)
TARGET_R2_REAL = 0.95        # the judge: R² on real held-out frames, every visible column
TARGET_RATIO = 1.2           # consistency ratio, every visible column (1.0 = as readable as a real frame)
TARGET_SLOPE = 0.10          # sweep slope within 10 % of the real-frame slope
TARGET_KID = 3.0             # KID within 3x its real-vs-real noise floor
TARGET_GRAIN = (0.8, 1.25)   # grain in the flat film, generated / real: the camera's, neither smoother nor noisier
TARGET_EXACT = 1.5           # consistency ratio by the simulator's exact reading (built-in data), every column it reads


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
    for c, v in report.get("simulator", {}).get("columns", {}).items():
        check(f"{c}: consistency ratio by the exact reading <= {TARGET_EXACT}", v["ratio"], TARGET_EXACT)
    return rows


def simulator_check(gen: Judged, real: Judged, matched: np.ndarray, columns: list[str], groups: list[str],
                    brightness: float = 0.0, visible: list[str] | None = None,
                    train: Training | None = None) -> dict[str, Any]:
    """The built-in data only: the simulator's exact reading of the same frames beside the regressor's
    (`synthetic.exact_check`: per column the ratio and the excess in the column's units, x3-x6 from the
    marks, x1 and x2 from the film's brightness where the data has it; per drawn feature the ratio against
    what the conditions predict), `agreement`: Pearson r between the regressor's and the exact reading of
    the generated frames, and `synthetic.fidelity` (r against the real frame). `groups` [M]: each real
    frame's specimen; `train`: the training split, for the precision per stage and stress band."""
    from thinfilm.synthetic import Measured, exact_check, exact_reading, fidelity, measure

    shown = measure(gen.images.frames)
    exact = exact_check(Measured(shown, gen.asked), Measured(measure(real.images.frames), real.asked), matched, columns,
                        groups, brightness, visible, train)
    read = exact_reading(shown, gen.asked, columns, brightness)
    agreement = {c: float(np.corrcoef(gen.read[:, columns.index(c)], v)[0, 1]) for c, v in read.items()}
    return {**fidelity(gen.images.frames, real.images.frames[matched]), **exact, "agreement": agreement}


UNITS = {"x1": "N", "x2": "MPa", "x3": "strain", "x4": "strain", "x5": "px", "x6": "px", "x7": "", "x8": "mm"}


def unit(column: str) -> str:
    """The column's unit as a suffix (" px", " N"), "" where it has none."""
    return f" {UNITS[column]}" if UNITS.get(column) else ""


def loosest(columns: dict[str, dict[str, Any]]) -> str:
    """A sentence: which column generated frames carry least precisely (the highest ratio) and by how much in
    its units, then every other column's excess. `columns`: {col: ratio, excess(_low, _high), mae_real}."""
    if not columns:
        return ""
    ranked = sorted(columns, key=lambda c: -columns[c]["ratio"])
    fmt = lambda c: (f"{columns[c]['excess']:.3g}{unit(c)} ({columns[c]['excess_low']:.3g}-"  # noqa: E731
                     f"{columns[c]['excess_high']:.3g})")
    top = ranked[0]
    others = "; ".join(f"{c} {fmt(c)}" for c in ranked[1:])
    return (f"Loosest: {top}, read {columns[top]['ratio']:.2f}x as far off as from real frames: generated frames "
            f"carry it {fmt(top)} off beyond the reading's own error ({columns[top]['mae_real']:.3g}{unit(top)} "
            f"MAE on real frames)." + (f" The others, same measure: {others}." if others else ""))


# ------------------------------------------------------------------------------------- report
def tstr(loaded: regression.Loaded, generated_train: str, real: Judged, device: torch.device,
         amp: torch.dtype | None, quiet: bool = True) -> dict[str, dict[str, float]]:
    """Train on generated, test on real (Ravuri & Vinyals 2019's classification accuracy score, for
    regression): a regressor like the judge (its config and seed) trained only on frames generated for the
    training split's conditions (`generated_train`: their manifest), scored by R² and MAE on the real test
    frames of `real`. Validation holds out whole series of the training CSV where the judge's config finds it
    (each generated row matched to its training row), else every k-th frame."""
    cfg = loaded.config
    columns, d = loaded.normalizer.columns, cfg.data
    images = read_images(generated_train, columns, d.roi, d.resolution, need_values=True)
    paths = images.names
    if Path(d.train_csv).is_file():
        table = read_table(d.train_csv, columns)
        twin = match_rows(images.values, table.values, np.array(loaded.normalizer.scale), generated_train,
                          "the training", "--conditions TRAIN.csv")
        paths = [table.paths[i] for i in twin]
    split = Split(Table(Path(generated_train), paths, images.values, list(columns)), images.frames,
                  torch.empty(0))
    trained, _, _ = regression.fit(cfg, split, device, quiet)
    return regression.scores(regression.read(trained, real.images.frames, device, amp).values, real.asked, columns)


def evaluate(regressor: str, generated: str, real_csv: str, root: str = "", sweeps: tuple[str, ...] = (),
             device_name: str = "auto", tstr_generated: str | None = None, quiet: bool = True) -> dict[str, Any]:
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
    matched = np.searchsorted(used, twin)              # generated frame i was drawn for real frame matched[i]
    report: dict[str, Any] = {"columns": {}, "counts": {"generated": len(twin), "conditions": len(used)},
                              "inputs": {"regressor": str(regressor), "generated": str(generated),
                                         "real": str(real_csv)}}
    for j, c in enumerate(columns):
        gen_err, real_err = gen.read[:, j] - gen.asked[:, j], real.read[:, j] - real.asked[:, j]
        ratio, excess = ratio_interval(gen_err, matched, real_err), excess_interval(gen_err, matched, real_err)
        report["columns"][c] = {
            "visible": c not in d.invisible,
            "real": {"r2": r2(real.read[:, j], real.asked[:, j]), "mae": mae(real.read[:, j], real.asked[:, j])},
            "generated": {"r2": r2(gen.read[:, j], gen.asked[:, j]), "mae": mae(gen.read[:, j], gen.asked[:, j])},
            "ratio": ratio.value, "ratio_low": ratio.low, "ratio_high": ratio.high,
            "excess": excess.value, "excess_low": excess.low, "excess_high": excess.high, "units": UNITS.get(c, "")}
    report["kid"] = kid_against_floor(gen, matched, real)
    report["frechet"] = {"value": frechet(gen.features, real.features), "dims": gen.features.shape[1],
                         "rank_deficient": min(len(gen.features), len(real.features)) <= gen.features.shape[1]}
    region = texture_region(real.images.frames, d.flat_region, d.roi)
    report["texture"] = {**texture(gen.images.frames, real.images.frames, region.mask).to_dict(),
                         "region": region.describe(real.images.frames)}
    if sweeps:
        judged = [judge(loaded, read_images(s, columns, d.roi, d.resolution), device, amp) for s in sweeps]
        report["sensitivity"] = sensitivity(judged, real, scale, columns, d.invisible)
    stamp = Path(real_csv).parent / "synthetic.json"
    if stamp.is_file():                                            # the built-in data: the simulator can measure
        brightness = float(json.loads(stamp.read_text()).get("brightness", 0.0))
        visible = [c for c in columns if c not in d.invisible]
        from thinfilm.synthetic import Training
        train = None
        if Path(d.train_csv).is_file():                            # how densely the training split covers each band
            table = read_table(d.train_csv, columns)
            train = Training(table.values, [series_of(p) for p in table.paths])
        report["simulator"] = simulator_check(gen, real, matched, columns, [series_of(p) for p in real.images.names],
                                              brightness, visible, train)
    if tstr_generated:
        report["tstr"] = tstr(loaded, tstr_generated, real, device, amp, quiet)
    report["targets"] = targets(report)
    report["_plot"] = {"columns": columns, "gen_asked": gen.asked, "gen_read": gen.read,
                       "real_asked": real.asked, "real_read": real.read, "sweeps": sweeps,
                       "region": region, "real_mean": real.images.frames.mean(0)}
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
        region_picture(plot["real_mean"], plot["region"], tmp / "texture_region.png")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def region_picture(mean: np.ndarray, region: Region, path: Path, side: int = 256) -> None:
    """The mean real frame [H, W] with the texture region tinted red, enlarged to `side` px wide (its aspect kept)."""
    from PIL import Image

    gray = np.clip(mean, 0, 255)
    rgb = np.stack([gray] * 3, axis=-1)
    rgb[region.mask] = 0.55 * rgb[region.mask] + 0.45 * np.array([255.0, 0.0, 0.0])
    height = max(1, round(side * mean.shape[0] / mean.shape[1]))
    Image.fromarray(rgb.round().astype(np.uint8)).resize((side, height), Image.Resampling.NEAREST).save(path)


def _precision_lines(columns: dict[str, dict[str, Any]], who: str) -> list[str]:
    """A table row per column of `columns` (ratio and excess with intervals, units) and the loosest sentence."""
    lines = [f"| column | ratio, {who} | excess beyond the reading's own error | MAE real | MAE generated |",
             "|---|---|---|---|---|"]
    for c, v in columns.items():
        lines.append(f"| {c} | {v['ratio']:.2f} ({v['ratio_low']:.2f}-{v['ratio_high']:.2f}) | {v['excess']:.3g} "
                     f"({v['excess_low']:.3g}-{v['excess_high']:.3g}){unit(c)} | {v['mae_real']:.3g}{unit(c)} | "
                     f"{v['mae_generated']:.3g}{unit(c)} |")
    return lines + ["", loosest(columns)]


def markdown(report: dict[str, Any]) -> str:
    """The report as a page: the consistency table, precision in units, KID, texture, sensitivity, TSTR and
    the simulator's check."""
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
    visible = {c: {**v, "mae_real": v["real"]["mae"], "mae_generated": v["generated"]["mae"]}
               for c, v in report["columns"].items() if v["visible"]}
    lines += ["", "**Precision in the columns' units.** The generator's own error beyond the regressor's misreading, "
              "sqrt(max(0, RMSE generated² - RMSE real²)): what a generated frame adds to the error a real frame is "
              "read with (0 = as precise as a real frame), 95 % bootstrap interval over conditions.", ""]
    lines += _precision_lines(visible, "regressor")
    lines += _distance_lines(report) + _response_lines(report) + _simulator_lines(report)
    lines += ["", "![predicted against asked](scatter.png)", ""]
    return "\n".join(lines)


def _distance_lines(report: dict[str, Any]) -> list[str]:
    """report.md's KID and texture paragraphs."""
    lines: list[str] = []
    k = report["kid"]
    lines += ["", f"**KID** (regressor's penultimate features, x1000): generated vs real {1000 * k['kid']:.3f} "
              f"(spread {1000 * k['kid_spread']:.3f}) against a noise floor of {1000 * k['floor']:.3f} "
              f"(RMS of KID between two halves of the real frames, {k['splits']} splits; "
              f"{k['n_generated']} generated, {k['n_real']} real frames): {k['kid'] / k['floor']:.1f}x the floor. "
              f"Fréchet distance {report['frechet']['value']:.4g} (secondary: with {k['n_real']} frames in "
              f"{report['frechet']['dims']} dimensions the covariances are "
              f"{'rank-deficient' if report['frechet']['rank_deficient'] else 'full-rank'})."]
    t = report["texture"]
    g = t["region"]
    where = {"found": "the flat film found in the real frames (away from every edge, mark and craze)",
             "data.flat_region": "the region data.flat_region gives",
             "whole frame": "the whole frame (no flat region found: set data.flat_region)"}[g["how"]]
    bands = ", ".join(f"{b.removeprefix('band_ratio_')} {v:.2f}" for b, v in t.items() if b.startswith("band_ratio"))
    lines += ["", f"**Texture** in {where}: {g['pixels']} pixels ({100 * g['fraction']:.0f} % of the frame), rows "
              f"{g['rows'][0]}-{g['rows'][1]}, columns {g['cols'][0]}-{g['cols'][1]} of {g['shape'][0]} x "
              f"{g['shape'][1]}, mean level {g['level']:.0f} (red in texture_region.png). High-pass std "
              f"{t['grain_generated']:.2f} levels generated vs {t['grain_real']:.2f} real (ratio "
              f"{t['grain_ratio']:.2f}); power per octave band, "
              f"generated / real: {bands} ({t['n_generated']} and {t['n_real']} frames).", "",
              "![texture region](texture_region.png)"]
    return lines


def _response_lines(report: dict[str, Any]) -> list[str]:
    """report.md's sensitivity and TSTR tables, where the report has them."""
    lines: list[str] = []
    if "sensitivity" in report:
        lines += ["", "**Sensitivity**: one column swept with fixed noise; slope of the read-back value on the "
                  "commanded one (std units) against the slope the regressor gets on real frames, and how the "
                  "other visible readings move with it, generated (real frames in brackets: how the column moves "
                  "with the swept one in real data).", "",
                  "| swept | slope | real slope | ratio | other readings |", "|---|---|---|---|---|"]
        for c, sens in report["sensitivity"].items():
            others = ", ".join(f"{k} {v:+.2f} ({sens['real_off_diagonal'][k]:+.2f})"
                               for k, v in sens["off_diagonal"].items())
            lines.append(f"| {c} ({sens['sweeps']} sweeps) | {sens['slope']:.3f} | {sens['real_slope']:.3f} | "
                         f"{sens['slope_ratio']:.2f} | {others} |")
    if "tstr" in report:
        lines += ["", "**Train on generated, test on real**: a regressor like the judge trained only on frames "
                  "generated for the training split's conditions, R² on the real test frames, beside the judge "
                  "trained on the real training frames:", "", "| column | R² trained on generated | R² trained on "
                  "real | gap |", "|---|---|---|---|"]
        for c, v in report["columns"].items():
            if v["visible"]:
                ts = report["tstr"][c]["r2"]
                lines.append(f"| {c} | {ts:.3f} | {v['real']['r2']:.3f} | {ts - v['real']['r2']:+.3f} |")
    return lines


def _simulator_lines(report: dict[str, Any]) -> list[str]:
    """report.md's paragraph on the simulator's exact reading (built-in data only)."""
    lines: list[str] = []
    if "simulator" in report:
        f = report["simulator"]
        lines += ["", "**The simulator's exact reading of the same frames** (built-in data only: the reading the "
                  "regressor stands in for). Consistency ratio and excess by the exact reading:", ""]
        lines += _precision_lines(f["columns"], "exact reading")
        lines += ["", "r between the regressor's and the exact reading of the generated frames: " + ", ".join(
            f"{c} {r:.3f}" for c, r in f["agreement"].items()) + ".", "",
            "Features no condition fixes exactly (craze sites, gap width and texture are drawn per specimen), their "
            "error taken from what the conditions predict (the mean of the nearest real frames of other specimens): "
            + ", ".join(f"{name} ratio {v['ratio']:.2f} ({v['ratio_low']:.2f}-{v['ratio_high']:.2f})"
                        for name, v in f["features"].items()) + " (below 1: less spread than real frames).",
            "", "`synthetic.fidelity`, Pearson r against the real frame: " + ", ".join(
                f"{k.removeprefix('corr_')} {v:.3f}" for k, v in f.items() if k.startswith("corr_"))]
        lines += _density_lines(f.get("density", []))
    return lines


def _density_lines(bands: list[dict[str, Any]]) -> list[str]:
    """report.md's table of the exact reading per stage of the test and stress band, beside the training
    frames each has: where the training split is thin, is the precision worse?"""
    if not bands:
        return []
    cols = [c for c in ("x5", "x6", "x2") if c in bands[0]]
    lines = ["", "Where the training split is dense and where thin: the exact reading per stage of the test and "
             "per fifth of the training stress range (ratio, excess beyond the reading):", "",
             "| by | band | training frames | conditions | " + " | ".join(cols) + " |",
             "|---|---|---|---|" + "---|" * len(cols)]
    for b in bands:
        cells = [f"{b[c]['ratio']:.2f}, {b[c]['excess']:.3g}{unit(c)}" for c in cols]
        lines.append(f"| {b['by']} | {b['band']} | {b['train_frames']} | {b['conditions']} | " + " | ".join(cells)
                     + " |")
    return lines


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
    cfg = validate(load_config(args.config, args.overrides))
    runs = Path(cfg.train.out_dir)
    ckpt = checkpoint.find_run(args.run, runs, "--run")
    device = pick_device(args.device, "--device")
    loaded = checkpoint.load_model(ckpt, device=device)
    run_cfg, norm, run = loaded.config, loaded.normalizer, ckpt.parent.parent
    regressor = Path(args.regressor) if args.regressor else checkpoint.find_regressor(runs, run_cfg)
    if regressor is None:
        print("no regressor for this data yet: training one (python -m thinfilm.regression train)")
        reg_cfg = validate(load_config(args.config, args.overrides + [
            f"data.train_csv={run_cfg.data.train_csv}", f"data.test_csv={run_cfg.data.test_csv}",
            f"data.resolution={run_cfg.data.resolution}"]))
        regressor = regression.train_regressor(reg_cfg, args.quiet)
    work, test = run / "evaluation", run_cfg.data.test_csv
    on = Execution(device, autocast_dtype("auto", device), not args.quiet)

    def draw(rows: np.ndarray, folder: str, seed: int = 0, film: bool = False) -> str:
        """Frames for raw rows into work/folder; a film (sweep, path) is one specimen."""
        req = sample.request(run_cfg, norm, rows, seed=seed, one_specimen=film, film=film)
        sample.draw(loaded, req, on, work / folder)
        return str(work / folder / "manifest.csv")

    table = read_table(test, run_cfg.data.columns, need_paths=False)
    generated = draw(table.values, "generated")
    sweeps = []
    for col in args.sweep_columns:                   # the column alone given, over the test range; 4 noises
        j = run_cfg.data.columns.index(col)
        rows = np.full((9, len(run_cfg.data.columns)), np.nan)
        rows[:, j] = np.linspace(*np.percentile(table.values[:, j], [5, 95]), 9)
        sweeps += [draw(rows, f"sweep-{col}-{seed}", seed, film=True) for seed in range(4)]
    for k, rows in enumerate(measured_paths(test, run_cfg)):     # every column as measured: one specimen each
        sweeps += [draw(rows, f"path-{k}-{seed}", seed, film=True) for seed in range(2)]
    trained_on = None
    if args.tstr is not None:          # frames for every training condition, one each: the TSTR regressor's data
        trained_on = draw(read_table(run_cfg.data.train_csv, run_cfg.data.columns, need_paths=False).values,
                          "generated-train")
    out = work / "report"
    report = evaluate(str(regressor), generated, test, run_cfg.data.root, tuple(sweeps), args.device,
                      tstr_generated=trained_on, quiet=args.quiet)
    write_report(report, out)
    return out


def measured_paths(test_csv: str, cfg, count: int = 2, frames: int = 9) -> list[np.ndarray]:
    """Up to `count` test series as paths of `frames` raw rows each [frames, C], evenly spaced from their first
    frame to the last before fracture (`data.after_fracture` by train.fracture_load)."""
    table = read_table(test_csv, cfg.data.columns)
    broken = after_fracture(table, cfg.train.fracture_load) if cfg.train.fracture_load in table.columns else \
        np.zeros(len(table), dtype=bool)
    series = np.array([series_of(p) for p in table.paths])
    paths = []
    for name in sorted(set(series), key=lambda n: (len(n), n))[:count]:
        rows = np.flatnonzero((series == name) & ~broken)
        if len(rows) < 3:
            continue
        pick = rows[np.unique(np.linspace(0, len(rows) - 1, frames).round().astype(int))]
        paths.append(table.values[pick])
    return paths


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
    p.add_argument("--tstr", nargs="?", const="", default=None, metavar="MANIFEST",
                   help="train on generated, test on real: a regressor trained on frames generated for the training "
                        "split's conditions (their manifest.csv; the chain generates them), R² on the real frames")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.generated is None:
        print(f"report: {chain(args) / 'report.md'}")
        return
    missing = [f"--{k}" for k in ("regressor", "real", "out") if getattr(args, k) is None]
    if args.tstr == "":
        missing.append("--tstr MANIFEST (frames generated for the training split's conditions)")
    if missing:
        raise EvaluationError(f"with --generated also give {', '.join(missing)}")
    report = evaluate(args.regressor, args.generated, args.real, args.root, tuple(args.sweep), args.device,
                      args.tstr, args.quiet)
    write_report(report, Path(args.out))
    print(f"report: {Path(args.out) / 'report.md'}")


if __name__ == "__main__":
    cli(main)
