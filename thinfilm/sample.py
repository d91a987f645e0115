"""`python -m thinfilm.sample`: measurements in (raw physical units), frames + manifest out.

Conditions come from a CSV in the researcher's format (`--conditions`), from `--values x1=..,x5=..`
(omitted columns are unknown, masked out through the per-field conditioning), from a sweep
(`--sweep x3=0:0.12:9 --base ...`: one value varies, every frame starts from the same noise with a
deterministic sampler, so the frames differ only by that value) or from a measured series replayed in
order (`--path test.csv`). `--init-image` + `--strength` draws frames like a given one. `--from-frame`
+ `--measured` draws a real frame's own specimen under new measurements: the frame is inverted under its
measurements (DDIM run backwards) and every new frame is drawn from that start noise.

Every frame has its own generator seeded from (--seed, frame index): the same frame at any batch size.
The command reads as: parse, load the checkpoint, the sampling config (`sample_config`), the request
(`resolve`: conditions, seeds, start), `draw` (generate + write); `evaluate` calls the same functions.
"""
from __future__ import annotations

import argparse
import math
import tomllib
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch

from thinfilm import UserError, checkpoint, cli
from thinfilm.config import Config, ConfigError, add_config_args, parse_override, set_value, validate
from thinfilm.data import DataError, Normalizer, load_frame, read_table, to_network, to_uint8
from thinfilm.diffusion import SAMPLERS, GaussianDiffusion, Init, image_to_image
from thinfilm.runtime import autocast_dtype, pick_device, require_cuda
from thinfilm.sampling import Execution, Guidance, Plan, frame_seed, generate, invert, start_noise


class SampleError(UserError):
    """Conditions or options that cannot be sampled as given."""


class Specimen(NamedTuple):
    """--from-frame: a real frame (uint8 [H, W], as the network sees it) and its own raw measurements [1, C]."""
    frame: np.ndarray
    measured: np.ndarray


class Request(NamedTuple):
    """A sample command resolved: what to draw (raw rows [N, C], NaN = unknown, and their seeds), how (the
    plan), from what (an image-to-image start, one specimen's start noise, a real frame's specimen), and
    what it says before drawing."""
    raw: np.ndarray
    seeds: list[int]
    plan: Plan
    init: Init | None = None
    starts: list[int] | None = None      # one specimen: the seed of each row's start noise (`start_noise`)
    specimen: Specimen | None = None
    film: bool = False                   # a sweep or a path: strip.png and film.gif too
    notes: tuple[str, ...] = ()


# ------------------------------------------------------------------------------- conditions
def parse_values(text: str, columns: Sequence[str], flag: str = "--values") -> np.ndarray:
    """'x1=0.02,x5=1300' -> raw vector [C] with NaN for omitted (unknown) columns."""
    row = np.full(len(columns), np.nan)
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or key not in columns:
            raise SampleError(f"{flag} {item!r}: expected COLUMN=VALUE with COLUMN one of {', '.join(columns)}")
        try:
            value = float(raw)
        except ValueError:
            raise SampleError(f"{flag} {key}={raw!r}: not a number") from None
        if not math.isfinite(value):
            raise SampleError(f"{flag} {key}={raw}: give a finite number (omit a column to leave it unknown)")
        row[columns.index(key)] = value
    return row


def parse_base(text: str, columns: Sequence[str], flag: str = "--base") -> np.ndarray:
    """--base / --measured 'CSV:ROW' (1-based data row) or 'x1=..,x2=..' -> raw vector [C]."""
    path, sep, row = text.rpartition(":")
    if sep and row.isdigit() and Path(path).suffix.lower() == ".csv":
        try:
            table = read_table(path, columns, need_paths=False)
        except DataError as err:
            raise SampleError(f"{flag}: {err}") from None
        i = int(row)
        if not 1 <= i <= len(table):
            raise SampleError(f"{flag} {text}: {path} has data rows 1..{len(table)}")
        return table.values[i - 1]
    return parse_values(text, columns, flag)


def parse_sweep(text: str, columns: Sequence[str]) -> tuple[int, np.ndarray]:
    """'x3=0:0.12:9' -> (column index, 9 evenly spaced values from 0 to 0.12)."""
    key, sep, spec = text.partition("=")
    parts = spec.split(":")
    if not sep or key.strip() not in columns or len(parts) != 3:
        raise SampleError(f"--sweep {text!r}: expected COLUMN=START:STOP:COUNT with COLUMN one of {', '.join(columns)}")
    try:
        start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        raise SampleError(f"--sweep {text!r}: START and STOP must be numbers, COUNT an integer") from None
    if count < 1:
        raise SampleError(f"--sweep {text!r}: COUNT must be at least 1")
    return columns.index(key.strip()), np.linspace(start, stop, count)


def extrapolation_warnings(values: np.ndarray, norm: Normalizer) -> list[str]:
    """One line per column with requested values outside the training range."""
    lines = []
    for j, col in enumerate(norm.columns):
        v = values[:, j][np.isfinite(values[:, j])]
        out = v[(v < norm.low[j]) | (v > norm.high[j])]
        if len(out):
            lines.append(f"warning: {col}: {len(out)} value(s) outside the training range "
                         f"{norm.low[j]:.6g}..{norm.high[j]:.6g} (e.g. {out[0]:.6g}): extrapolation")
    return lines


def conditions_from(args: argparse.Namespace, cols: Sequence[str]) -> np.ndarray:
    """The raw condition rows [N, C] the arguments ask for (NaN = unknown)."""
    sources = [s for s in ("conditions", "values", "sweep", "path") if getattr(args, s)]
    if len(sources) > 1:
        raise SampleError(f"give one of --conditions, --values, --sweep, --path (got {', '.join(sources)})")
    if not sources:
        if args.init_image:
            return np.full((1, len(cols)), np.nan)
        if args.from_frame:
            raise SampleError("--from-frame: give the new measurements (--values, --conditions, --sweep or --path)")
        raise SampleError("no conditions: give --conditions CSV, --values x1=...,  --sweep or --path")
    if args.conditions or args.path:
        csv = args.conditions or args.path
        try:
            return read_table(csv, cols, need_paths=False).values
        except DataError as err:
            raise SampleError(f"{err} (the checkpoint was trained on columns {', '.join(cols)})") from None
    if args.values:
        return parse_values(args.values, cols)[None]
    j, sweep = parse_sweep(args.sweep, cols)
    base = parse_base(args.base, cols) if args.base else np.full(len(cols), np.nan)
    rows = np.repeat(base[None], len(sweep), axis=0)
    rows[:, j] = sweep
    return rows


def request(cfg: Config, norm: Normalizer, raw: np.ndarray, *, seed: int = 0, n_per_condition: int = 1,
            one_specimen: bool = False, film: bool = False) -> Request:
    """The request for raw rows [N, C] (each drawn `n_per_condition` times): one generator per frame seeded
    from (seed, index); for one specimen (a sweep, a path, a real frame's counterfactuals) every row also
    starts from the same noise (that of the first row's seed, for each of the n per condition) with
    `Plan.one_specimen`: the frames differ by their rows and by the fresh noise of the last steps
    (`sample.film_tail`), as a camera's exposures do."""
    raw = np.repeat(raw, n_per_condition, axis=0)
    plan, notes = Plan.from_config(cfg), extrapolation_warnings(raw, norm)
    unknown = [c for j, c in enumerate(norm.columns) if np.isnan(raw[:, j]).any()]
    if unknown:
        notes.append(f"unknown (masked out, the model fills them in): {', '.join(unknown)}")
    seeds, starts = [frame_seed(seed, i) for i in range(len(raw))], None
    if one_specimen:
        plan, tail = plan.one_specimen(cfg.sample.film_tail), cfg.sample.film_tail
        starts = [frame_seed(seed, i % n_per_condition) for i in range(len(raw))]
        notes.append(f"one specimen: one start noise, {plan.sampler} deterministic " +
                     (f"above t = {tail}, each frame's own noise below it (sample.film_tail; 0: a still film)"
                      if tail else "(sample.film_tail = 0: a still film)") +
                     "; --independent: each frame its own specimen")
    return Request(raw, seeds, plan, starts=starts, film=film, notes=tuple(notes))


def resolve(args: argparse.Namespace, cfg: Config, norm: Normalizer) -> Request:
    """What the command line asks for: its conditions, seeds and start (`request`), the flags' rules checked."""
    check_flags(args)
    one = bool(args.sweep or args.from_frame or (args.path and not args.independent))
    req = request(cfg, norm, conditions_from(args, norm.columns), seed=args.seed,
                  n_per_condition=args.n_per_condition, one_specimen=one, film=bool(args.sweep or args.path))
    if args.init_image:
        try:
            image = to_network(load_frame(Path(args.init_image), cfg.data.roi, cfg.data.resolution))[None]
        except DataError as err:
            raise SampleError(f"--init-image: {err}") from None
        req = req._replace(init=image_to_image(image, args.strength))
    if args.from_frame:                        # the inversion runs DDIM backwards: the frames are drawn with it
        notes = req.notes + (("--from-frame: drawing with ddim, the sampler the inversion runs backwards",)
                             if req.plan.sampler != "ddim" else ())
        req = req._replace(plan=req.plan._replace(sampler="ddim"), starts=None, specimen=specimen(args, cfg, norm),
                           notes=notes)
    return req


def check_flags(args: argparse.Namespace) -> None:
    """The rules between flags that no config key holds (a sampling key's range is `config.validate`'s)."""
    if args.n_per_condition < 1:
        raise SampleError("--n-per-condition must be at least 1")
    if not 0 < args.strength <= 1:
        raise SampleError(f"--strength {args.strength}: must be in (0, 1]")
    if args.from_frame and args.init_image:
        raise SampleError("give --from-frame (the frame's own specimen) or --init-image (strength), not both")
    if bool(args.from_frame) != bool(args.measured):
        raise SampleError("--from-frame FRAME needs --measured (the frame's own measurements), and --measured "
                          "is only for --from-frame")
    if args.from_frame and args.independent:
        raise SampleError("--independent with --from-frame: every frame drawn from a frame is that frame's specimen")
    if args.from_frame and args.n_per_condition != 1:
        raise SampleError("--n-per-condition with --from-frame: every draw of the frame's specimen is the same")


def specimen(args: argparse.Namespace, cfg: Config, norm: Normalizer) -> Specimen:
    """--from-frame FRAME --measured ...: the frame as the network sees it and its own measurements, all given."""
    try:
        frame = load_frame(Path(args.from_frame), cfg.data.roi, cfg.data.resolution)
    except DataError as err:
        raise SampleError(f"--from-frame: {err}") from None
    measured = parse_base(args.measured, norm.columns, "--measured")[None]
    missing = [c for j, c in enumerate(norm.columns) if np.isnan(measured[0, j])]
    if missing:
        raise SampleError(f"--measured: {', '.join(missing)} missing: give every column of the frame's own row "
                          f"(CSV:ROW gives them all)")
    for line in extrapolation_warnings(measured, norm):
        print(f"--measured {line}")
    return Specimen(frame, measured)


def sample_config(cfg: Config, args: argparse.Namespace) -> Config:
    """The checkpoint's config with the command line's sampling changes, in this order: --config's [sample]
    section, each --set sample.KEY=VALUE, each flag (which sets one sample key); then `config.validate`.
    Only [sample] keys change how a trained network draws: --set refuses any other, --config's other
    sections are named as not applied."""
    changes: list[tuple[str, object, str]] = []
    if args.config:
        try:
            tree = tomllib.loads(Path(args.config).read_text())
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"--config {args.config}: not a readable TOML file ({err})") from None
        changes += [(f"sample.{k}", v, f"--config {args.config}") for k, v in tree.get("sample", {}).items()]
        others = sorted(k for k, v in tree.items() if k != "sample" and isinstance(v, dict))
        if others:
            print(f"--config {args.config}: its [sample] section applies; [{'], ['.join(others)}] are the "
                  "checkpoint's own (fixed by training)")
    for text in args.overrides:
        section, key, value = parse_override(text)
        if section != "sample":
            raise ConfigError(f"--set {text}: give sample.KEY=VALUE; the rest of the config is the checkpoint's")
        changes.append((f"sample.{key}", value, f"--set {text}"))
    changes += [(f"sample.{key}", value, f"--{key.replace('_', '-')}") for key, value in flag_values(args).items()
                if value is not None]
    for key, value, origin in changes:
        set_value(cfg, key, value, origin)
    return validate(cfg)


def flag_values(args: argparse.Namespace) -> dict[str, object]:
    """The sample keys the flags set (None: not given)."""
    fields = None if args.guidance_fields is None else [c.strip() for c in args.guidance_fields.split(",") if c.strip()]
    interval = None if args.guidance_interval is None else parse_interval(args.guidance_interval)
    return {"sampler": args.sampler, "steps": args.steps, "spacing": args.spacing, "eta": args.eta,
            "keep_grain": args.keep_grain, "guidance": args.guidance, "guidance_fields": fields,
            "guidance_interval": interval, "guidance_parallel": args.guidance_parallel,
            "batch_size": args.batch_size, "clip": False if args.no_clip else None, "film_tail": args.film_tail}


def parse_interval(text: str) -> list[int]:
    """--guidance-interval 'LO:HI' -> [LO, HI]; '' -> [] (every step)."""
    parts = text.split(":") if text.strip() else []
    if len(parts) not in (0, 2) or not all(p.strip().lstrip("-").isdigit() for p in parts):
        raise SampleError(f"--guidance-interval {text!r}: give LO:HI timesteps, e.g. 100:700")
    return [int(p) for p in parts]


# ------------------------------------------------------------------------------------- output
def write_outputs(frames: np.ndarray, request: Request, columns: Sequence[str], out: Path,
                  full_aspect: Sequence[int] | None = None) -> None:
    """NNNN.png, manifest.csv, grid.png; frames resized to `full_aspect` = (height, width) in full/ if given;
    for a film (sweep, path) strip.png and film.gif, each frame with its measurements beside it."""
    from PIL import Image
    from torchvision.utils import save_image

    out.mkdir(parents=True, exist_ok=True)
    digits = max(4, len(str(len(frames) - 1)))
    names = [f"{i:0{digits}d}.png" for i in range(len(frames))]
    for name, f in zip(names, frames):
        Image.fromarray(f).save(out / name)
        if full_aspect:
            (out / "full").mkdir(exist_ok=True)
            Image.fromarray(f).resize(tuple(full_aspect[::-1]), Image.Resampling.BICUBIC).save(out / "full" / name)
    manifest = pd.DataFrame(request.raw, columns=list(columns))
    manifest.insert(0, "file", names)
    manifest["seed"] = list(request.seeds)
    if request.starts is not None:                               # one specimen: the seed of its start noise
        manifest["start_seed"] = list(request.starts)
    manifest.to_csv(out / "manifest.csv", index=False, float_format="%.9g", na_rep="")
    shown = torch.from_numpy(frames[:64]).unsqueeze(1).float() / 255
    save_image(shown, out / "grid.png", nrow=min(8, len(shown)), padding=2, pad_value=1.0)
    if request.film:
        raw = request.raw
        gap = np.full((frames.shape[1], 2), 255, np.uint8)
        Image.fromarray(np.concatenate([x for f in frames for x in (f, gap)][:-1], axis=1)).save(out / "strip.png")
        images = [captioned(f, row, columns) for f, row in zip(frames, raw)]
        images[0].save(out / "film.gif", save_all=True, append_images=images[1:], duration=150, loop=0)


def captioned(frame: np.ndarray, row: np.ndarray, columns: Sequence[str], height: int = 192):
    """A film frame: the frame enlarged to `height` px with the measurements it was drawn for beside it."""
    from PIL import Image, ImageDraw

    scale = max(1, round(height / frame.shape[0]))
    image = Image.fromarray(frame).resize((frame.shape[1] * scale, frame.shape[0] * scale),
                                          Image.Resampling.NEAREST)
    panel = Image.new("L", (image.width + 96, max(image.height, 14 * len(columns) + 8)), 255)
    panel.paste(image, (0, 0))
    draw = ImageDraw.Draw(panel)
    for i, (col, value) in enumerate(zip(columns, row)):
        draw.text((image.width + 6, 4 + 14 * i), f"{col} {value:.5g}" if np.isfinite(value) else f"{col} ?", fill=0)
    return panel


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m thinfilm.sample", description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", required=True, help="checkpoint .pt or run folder")
    p.add_argument("--out", required=True, help="output folder")
    add_config_args(p)
    src = p.add_argument_group("conditions (one of)")
    src.add_argument("--conditions", help="CSV in the researcher's format (filepath column optional, ignored)")
    src.add_argument("--values", help="x1=...,x5=... ; omitted columns are unknown")
    src.add_argument("--sweep", help="COLUMN=START:STOP:COUNT, other columns from --base")
    src.add_argument("--base", help="for --sweep: CSV:ROW (1-based) or x1=...,x2=...")
    src.add_argument("--path", help="replay a measured series CSV in order as one specimen: the same start noise "
                                    "and a deterministic sampler for every row (writes film.gif and strip.png)")
    p.add_argument("--independent", action="store_true", help="with --path: every frame its own noise (and "
                   "the checkpoint's sampler), i.e. its own specimen")
    p.add_argument("--film-tail", type=int, default=None, metavar="T",
                   help="one specimen (sweeps, --path, --from-frame): fresh noise for each frame at timesteps <= T, "
                        "the camera's new exposure (default: the checkpoint's sample.film_tail; 0: a still film)")
    p.add_argument("--n-per-condition", type=int, default=1)
    p.add_argument("--sampler", choices=list(SAMPLERS), default=None,
                   help="sample.sampler (default: the checkpoint's); dpmpp2m: DPM-Solver++(2M), --eta > 0 its SDE "
                        "form; heun: EDM's deterministic second-order sampler (--eta 0)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--spacing", choices=["trailing", "karras"], default=None,
                   help="how the steps are spread over t (default: the checkpoint's sample.spacing)")
    p.add_argument("--eta", type=float, default=None)
    p.add_argument("--keep-grain", action=argparse.BooleanOptionalAction, default=None,
                   help="put back the camera's grain an x0 estimate smooths away (default: the checkpoint's "
                        "sample.keep_grain); use with --spacing karras")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--guidance-fields", default=None, metavar="x3,x4,...",
                   help="the columns guidance pushes (the other branch leaves only these unknown); '' = all")
    p.add_argument("--guidance-interval", default=None, metavar="LO:HI",
                   help="guide only at timesteps LO..HI (e.g. 100:700); '' = every step")
    p.add_argument("--guidance-parallel", type=float, default=None, metavar="ETA",
                   help="weight of the guidance update along the conditional x0 (APG: 0; 1 = plain guidance)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--no-clip", action="store_true", help="do not clamp x0 predictions to [-1, 1]")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: bf16 autocast where it is fast (CUDA, CPUs with bf16 units), else fp32")
    p.add_argument("--cuda-graph", action="store_true",
                   help="replay each batch's whole sampler run from a CUDA graph: faster small batches on a "
                        "GPU (the first batch of each size runs twice: a warm-up, then the capture)")
    p.add_argument("--from-frame", metavar="FRAME", help="draw this real frame's specimen under the new "
                   "measurements: the frame (a full camera frame, cropped with the checkpoint's ROI) is inverted "
                   "under its own --measured values, then every new frame starts from that noise (DDIM, eta 0; "
                   "--guidance 2 --guidance-fields x3,x4,x5,x6 places the marks closer: docs/experiments.md"
                   "#virtual-test)")
    p.add_argument("--measured", metavar="CSV:ROW|x1=..", help="with --from-frame: the frame's own measurements, "
                   "every column (a 1-based data row of a CSV, or x1=...,x8=...)")
    p.add_argument("--init-image", help="image-to-image: a frame (cropped with the checkpoint's ROI)")
    p.add_argument("--strength", type=float, default=0.5, help="image-to-image noise level in (0, 1]")
    p.add_argument("--full-aspect", action="store_true", help="also write frames at the ROI's aspect in full/")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    device = pick_device(args.device, "--device")
    if args.cuda_graph:
        require_cuda(device, "--cuda-graph")
    loaded = checkpoint.load_model(args.ckpt, ema=not args.no_ema, device=device)
    cfg = sample_config(loaded.config, args)
    req = resolve(args, cfg, loaded.normalizer)
    on = Execution(device, autocast_dtype(args.precision, device), not args.quiet, {} if args.cuda_graph else None)
    draw(loaded._replace(config=cfg), req, on, Path(args.out), args.full_aspect)


def draw(loaded: checkpoint.Loaded, req: Request, on: Execution, out: Path, full_aspect: bool = False) -> np.ndarray:
    """Draw what `req` asks with `loaded`'s network and config, write the frames, manifest and pictures to
    `out`, print what was done; returns the frames, uint8 [N, H, W]."""
    cfg, norm = loaded.config, loaded.normalizer
    diffusion = GaussianDiffusion.from_config(cfg)
    for line in req.notes + plan_notes(cfg, diffusion, req.plan):
        print(line)
    start = (specimen_noise(loaded, diffusion, req, on, out) if req.specimen is not None else
             start_noise(loaded.net.frame_shape, req.starts) if req.starts is not None else None)
    x = to_uint8(generate(loaded.net, diffusion, norm.encode(req.raw), req.seeds, req.plan, on, init=req.init,
                          start=start))
    write_outputs(x, req, norm.columns, out, cfg.data.roi[2:] if full_aspect else None)
    p = req.plan
    how = (f"ddpm, {diffusion.timesteps} steps" if p.sampler == "ddpm" else
           f"{p.sampler}, {p.steps} {p.spacing} steps, eta {p.eta:g}")
    how += f", grain {cfg.diffusion.grain:g} levels kept" if p.kept_grain else ""
    print(f"wrote {len(x)} frames ({how}, guidance {describe(p.guidance, norm.columns)}) and manifest.csv to {out}")
    return x


def plan_notes(cfg: Config, diffusion: GaussianDiffusion, plan: Plan) -> tuple[str, ...]:
    """What a user should know about the plan before drawing."""
    notes = []
    if cfg.sample.keep_grain and cfg.diffusion.grain == 0:
        notes.append("keep-grain: the checkpoint has no measured grain (diffusion.grain = 0, trained before it was "
                     "measured): frames drawn without it")
    visited = diffusion.visits(plan.settings)
    if plan.sampler != "ddpm" and len(visited) < min(plan.steps, cfg.diffusion.timesteps):
        notes.append(f"note: {len(visited)} distinct timesteps of the {plan.steps} asked ({plan.spacing} spacing "
                     f"rounds to whole timesteps of {cfg.diffusion.timesteps})")
    if plan.tail and not any(0 < t <= plan.tail for t in visited):
        notes.append(f"note: no step of {plan.steps} {plan.spacing} steps is at t = 1..{plan.tail} "
                     f"(sample.film_tail): the frames get no fresh noise (karras spacing visits the lowest timesteps)")
    return tuple(notes)


def specimen_noise(loaded: checkpoint.Loaded, diffusion: GaussianDiffusion, req: Request, on: Execution,
                   out: Path) -> torch.Tensor:
    """--from-frame: the start noise [1, 1, H, W] of the frame's own specimen, inverted under its measured
    values with the request's plan unguided (guidance, if asked, steers only the new frames); writes the frame
    as cropped (from_frame.png) and as drawn back from that noise (round_trip.png), and says how close the
    round trip came."""
    from PIL import Image

    plan, (frame, measured) = req.plan.deterministic()._replace(guidance=Guidance()), req.specimen
    cond = loaded.normalizer.encode(measured)
    start = invert(loaded.net, diffusion, to_network(frame)[None], cond, plan, on)
    back = to_uint8(generate(loaded.net, diffusion, cond, [0], plan, on, start=start))[0]
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame).save(out / "from_frame.png")
    Image.fromarray(back).save(out / "round_trip.png")
    error = np.abs(back.astype(np.int16) - frame)
    print(f"--from-frame: inverted under its measurements; drawn back, {np.mean(error <= 1):.0%} of the pixels "
          f"within 1 level (mean error {error.mean():.2f} levels; round_trip.png)")
    return start


def describe(g: Guidance, columns: Sequence[str]) -> str:
    """Guidance in a few words for the closing line."""
    if g.scale == 1.0:
        return "off"
    parts = [f"{g.scale:g}"]
    if g.fields:
        parts.append("on " + ",".join(columns[j] for j in g.fields))
    if g.interval:
        parts.append(f"at t {g.interval[0]}-{g.interval[1]}")
    if g.parallel != 1.0:
        parts.append(f"parallel weight {g.parallel:g}")
    return " ".join(parts)


if __name__ == "__main__":
    cli(main)
