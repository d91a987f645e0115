"""The configuration: a typed dataclass tree, read from TOML with dotted overrides.

Defaults are the researcher's original design; an experiment file holds only what differs.
`load_config(path, overrides)` is the contract every command uses; `--set section.key=value`
values are parsed as TOML (`data.roi=[678,0,767,2452]`), falling back to a bare string
(`data.root=/mnt/films`). Unknown sections or keys and wrong types raise `ConfigError`.
"""
from __future__ import annotations

import argparse
import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from thinfilm import UserError


class ConfigError(UserError):
    """A config file or override that names an unknown key or gives a wrong type."""


@dataclass
class DataConfig:
    """Where the frames and their measurements are, and how a frame becomes a network input."""
    train_csv: str = "data/synthetic/train.csv"
    test_csv: str = "data/synthetic/test.csv"
    root: str = ""                       # frame folder; "" = each CSV's own folder
    columns: list[str] = field(default_factory=lambda: [f"x{i}" for i in range(1, 9)])
    roi: list[int] = field(default_factory=lambda: [678, 0, 767, 2452])   # top, left, height, width
    resolution: int | list[int] = 512    # a square's side, or [height, width]; [0, width]: the ROI's aspect at
                                         # that width, the height rounded to the network's multiple (`validate`)
    normalize: Literal["zscore", "minmax", "none"] = "zscore"
    cache_dir: str = "data/cache"
    synthetic: bool = False              # generate the built-in dataset where the CSVs point, if missing
    synthetic_series: int = 10
    synthetic_frames: int = 50           # frames per series
    synthetic_seed: int = 0
    texture: Literal["camera", "none"] = "camera"   # the simulator's texture (synthetic.TEXTURES)
    brightness: float = 0.0              # the simulator's film brightens this many levels per MPa of stress x2
    flat_region: list[int] = field(default_factory=list)   # where texture is measured: [top, left, height, width]
                                         # in camera px (as roi); [] = the flat film found in the real frames
    invisible: list[str] = field(default_factory=lambda: ["x7", "x8"])   # columns no frame can show


@dataclass
class ModelConfig:
    """The UNet's widths and depth (the researcher's design by default)."""
    channels: list[int] = field(default_factory=lambda: [128, 128, 256, 256, 512, 512])
    layers_per_block: int = 2
    attention_levels: list[int] = field(default_factory=lambda: [4])   # 0-based: the fifth level
    mid_attention: bool = True
    head_channels: int = 64
    dropout: float = 0.0
    patch_size: int = 1                  # fold p x p pixels into channels: the UNet runs at R / p
    coords: bool = False                 # append x / y position maps to the input
    unpatch: Literal["shuffle", "resize"] = "shuffle"   # patch_size > 1, back to pixels: pixel shuffle of
                                         # per-phase channels, or nearest upsampling + a 3x3 conv (UNet)
    channels_last: bool = False          # weights and activations in NHWC: a memory layout, the same network;
                                         # no faster on the CPU (docs/experiments.md#peer), unmeasured on a GPU
    cond_fourier: int = 0                # sin / cos of each condition value at this many frequencies beside the
                                         # value itself (unet.ConditionEmbedding); 0 = the values alone
    low_precision_norm: bool = False     # group norms in autocast's dtype, not the fp32 CUDA autocast picks
                                         # (unet.GroupNorm); the same weights; unmeasured on a GPU


@dataclass
class DiffusionConfig:
    """Noise schedule, prediction target and loss weighting."""
    schedule: Literal["linear", "cosine"] = "linear"
    timesteps: int = 1000
    prediction: Literal["eps", "x0", "v"] = "eps"
    loss_weighting: Literal["none", "min_snr"] = "none"
    min_snr_gamma: float = 5.0
    min_snr_floor: float = 0.0           # min_snr's x0-space weight never below this (README: "a floor")
    skip: Literal["none", "grain"] = "none"   # grain: x0 = network + w(t) x_t, w the Wiener gain of `grain`
    grain: float = 0.0                   # fine grain of the frames, 8-bit levels; 0: measured on the training
                                         # frames when training starts (metrics.grain_level), stored in the run


@dataclass
class TrainConfig:
    """The optimisation as the researcher ran it, plus run bookkeeping."""
    steps: int = 100_000
    batch_size: int = 4                  # per process and micro-step
    grad_accum: int = 4
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.95, 0.999])
    weight_decay: float = 1e-6
    warmup_steps: int = 500
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float = 1.0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"   # auto: bf16 where it is fast (runtime.py)
    ema_max_decay: float = 0.9999
    ema_inv_gamma: float = 1.0
    ema_power: float = 0.75
    cond_drop_prob: float = 0.1          # drop the whole measurement vector (guidance)
    field_drop_prob: float = 0.1         # drop single fields (sampling from partial measurements)
    zoom: float = 0.0                    # augmentation: stretch each frame horizontally by 1 +- zoom (uniform)
    zoom_columns: list[str] = field(default_factory=list)   # ... and scale these columns (horizontal pixel
                                                            # distances, e.g. x5, x6) with it
    fracture_repeat: int = 1             # draw each frame after fracture this many times as often (data.after_fracture)
    fracture_load: str = "x1"            # ... found by this column: the load
    checkpoint_every: int = 5000
    keep_checkpoints: int = 3
    sample_every: int = 2500
    sample_count: int = 8
    log_every: int = 50
    max_bad_steps: int = 20
    max_minutes: float = 0.0             # stop (save, evaluate) this long after the command started; 0 = never
    compile: bool = False
    sync_free: bool = False              # no host-device sync in a step: fused AdamW skips a non-finite step on
                                         # the device; max_bad_steps is checked at log steps (docs/design.md)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    out_dir: str = "runs"
    run_name: str = ""                   # "" = <experiment>-<date>-<time>
    seed: int = 0


@dataclass
class SampleConfig:
    """Defaults for drawing frames (training previews and `thinfilm.sample`)."""
    sampler: Literal["ddim", "ddpm", "dpmpp2m", "heun"] = "ddim"   # dpmpp2m: DPM-Solver++(2M), eta > 0 its SDE
                                         # form; heun: EDM's deterministic sampler (diffusion.SAMPLERS)
    steps: int = 50
    spacing: Literal["trailing", "karras"] = "trailing"   # how the steps are spread over t (diffusion.steps_for)
    eta: float = 0.0
    keep_grain: bool = False             # put back the grain (diffusion.grain) an x0 estimate smooths away: its
                                         # posterior mean at low noise (GaussianDiffusion.keeping_grain); with karras
    guidance: float = 1.0                # classifier-free guidance scale; 1 = off (sampling.Guidance)
    guidance_fields: list[str] = field(default_factory=list)   # the columns it pushes; [] = all
    guidance_interval: list[int] = field(default_factory=list)  # [lo, hi]: only at timesteps lo..hi; [] = all
    guidance_parallel: float = 1.0       # weight of the update along the conditional x0 (APG: 0); 1 = plain
    clip: bool = True
    batch_size: int = 16
    film_tail: int = 3                   # one specimen's frames: each its own noise at timesteps <= this, the
                                         # deterministic start shared (sampling.Plan.one_specimen); 0: a still film;
                                         # 3: a film changes as a camera's does, with karras spacing (#film-noise)


@dataclass
class RegressionConfig:
    """The inverse model: a ResNet-18 that reads the measurements back from a frame."""
    stem: Literal["small", "pooled", "stock"] = "small"   # small: 3x3 stride 1, no max-pool (fine mark positions)
    epochs: int = 40                     # at most; early stopping on the validation loss
    patience: int = 8                    # epochs without a better validation loss before stopping
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    zoom: float = 0.0                    # stretch augmentation as train.zoom, scaling train.zoom_columns
    mirror: bool = True                  # left-right mirroring: keeps every distance, so every value
    val_fraction: float = 0.1            # validation frames when the training split has < 4 series
    run_name: str = ""                   # "" = regressor-<experiment>-<date>-<time>


@dataclass
class Config:
    """The whole experiment."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    regression: RegressionConfig = field(default_factory=RegressionConfig)
    name: str = "default"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _sections() -> dict[str, type]:
    return {k: v for k, v in typing.get_type_hints(Config).items() if k != "name"}


def _check_type(key: str, value: Any, hint: Any) -> Any:
    """Return `value` as `hint` (int widens to float), or raise naming the key and both types."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        for arm in typing.get_args(hint):
            try:
                return _check_type(key, value, arm)
            except ConfigError:
                pass
        names = " or ".join(f"a list of {typing.get_args(a)[0].__name__}" if typing.get_origin(a) is list
                            else a.__name__ for a in typing.get_args(hint))
        raise ConfigError(f"{key}: expected {names}, got {type(value).__name__} {value!r}")
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")
        return value
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list of {item.__name__}, got {type(value).__name__} {value!r}")
        return [_check_type(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{key}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def _apply(cfg: Config, section: str, key: str, value: Any, origin: str) -> None:
    sections = _sections()
    if section not in sections:
        raise ConfigError(f"{origin}: unknown section [{section}]; valid sections: {', '.join(sections)}")
    node = getattr(cfg, section)
    hints = typing.get_type_hints(type(node))
    if key not in hints:
        raise ConfigError(f"{origin}: unknown key {section}.{key}; valid keys in [{section}]: "
                          f"{', '.join(hints)}")
    setattr(node, key, _check_type(f"{section}.{key}", value, hints[key]))


def set_value(cfg: Config, key: str, value: Any, origin: str) -> None:
    """Set `section.key` of `cfg` to `value`, type-checked as a TOML value would be; `origin` names where the
    value came from in the error (a flag, a file)."""
    section, dot, name = key.partition(".")
    if not dot or not name:
        raise ConfigError(f"{origin}: expected section.key, got {key!r}")
    _apply(cfg, section, name, value, origin)


def parse_override(text: str) -> tuple[str, str, Any]:
    """'section.key=value' -> (section, key, value parsed as TOML, else the bare string)."""
    dotted, sep, raw = text.partition("=")
    section, dot, key = dotted.strip().partition(".")
    if not sep or not dot or not key:
        raise ConfigError(f"override {text!r}: expected section.key=value, e.g. train.steps=2000")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw                       # a bare string such as a path
    return section, key.strip(), value


def from_dict(tree: dict[str, Any], origin: str = "config") -> Config:
    """Build a Config from a nested dict (a TOML file or a checkpoint's stored config)."""
    cfg = Config()
    for section, body in tree.items():
        if section == "name":
            cfg.name = str(body)
            continue
        if not isinstance(body, dict):
            raise ConfigError(f"{origin}: {section!r} must be a [section] table; valid sections: "
                              f"{', '.join(_sections())}")
        for key, value in body.items():
            _apply(cfg, section, key, value, origin)
    return cfg


def load_config(path: str | Path | None, overrides: typing.Iterable[str] = ()) -> Config:
    """Read an experiment TOML (None = defaults) and apply `section.key=value` overrides."""
    if path is None:
        cfg = Config()
    else:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found; experiments/ holds the shipped ones")
        try:
            tree = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML ({err})") from None
        cfg = from_dict(tree, str(path))
        cfg.name = str(tree.get("name", path.stem))
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: Config, overrides: typing.Iterable[str]) -> Config:
    """Apply `section.key=value` strings to `cfg` in place (and return it)."""
    for text in overrides:
        section, key, value = parse_override(text)
        _apply(cfg, section, key, value, f"--set {text}")
    return cfg


def validate(cfg: Config) -> Config:
    """Check every value's range and the rules between values before any work is done; the first
    broken rule is a `ConfigError` that names the key and how to fix it. Every command calls this
    right after loading its config (and `checkpoint` on the one a checkpoint stores). One value it also
    settles: data.resolution = [0, width] becomes [height, width] at the ROI's aspect (`aspect_height`), so a
    run stores, and every module reads (`frame_size`), the concrete shape."""
    d, m, f, t = cfg.data, cfg.model, cfg.diffusion, cfg.train
    for ok, message in _rules(cfg):
        if not ok:
            raise ConfigError(message)
    if isinstance(d.resolution, list) and len(d.resolution) == 2 and d.resolution[0] == 0:   # the ROI's aspect
        d.resolution = [aspect_height(d.resolution[1], d.roi, network_multiple(m)), d.resolution[1]]
    problem = model_problem(d.resolution, m)
    if problem:
        raise ConfigError(problem)
    for key, names in (("train.zoom_columns", t.zoom_columns), ("data.invisible", d.invisible),
                       ("sample.guidance_fields", cfg.sample.guidance_fields),
                       ("train.fracture_load", [t.fracture_load] if t.fracture_repeat > 1 else [])):
        unknown = [c for c in names if c not in d.columns]
        if unknown:
            raise ConfigError(f"{key}: {', '.join(unknown)} not in data.columns ({', '.join(d.columns)})")
    if cfg.regression.zoom > 0 and not t.zoom_columns:
        raise ConfigError(f"regression.zoom = {cfg.regression.zoom} stretches frames, but train.zoom_columns names no "
                          "pixel-distance column to scale with them: set it (e.g. [\"x5\", \"x6\"]) or the zoom to 0")
    if f.min_snr_floor > 0 and f.loss_weighting != "min_snr":
        raise ConfigError(f"diffusion.min_snr_floor = {f.min_snr_floor} floors the min_snr weight, but "
                          f"diffusion.loss_weighting = {f.loss_weighting!r}: set it to \"min_snr\" or the floor to 0")
    if f.skip == "grain" and f.prediction != "x0":
        raise ConfigError(f"diffusion.skip = \"grain\" is a skip for x0 prediction, but diffusion.prediction = "
                          f"{f.prediction!r}: set it to \"x0\" or the skip to \"none\"")
    if f.skip == "grain" and cfg.sample.keep_grain:
        raise ConfigError("sample.keep_grain = true puts the grain back when sampling, and diffusion.skip = \"grain\" "
                          "already passes it through the network's output: set one of them off")
    return cfg


def hw(resolution: int | Sequence[int]) -> tuple[int, int]:
    """data.resolution as (height, width): one number is a square."""
    return (resolution, resolution) if isinstance(resolution, int) else (int(resolution[0]), int(resolution[1]))


def frame_size(d: DataConfig) -> tuple[int, int]:
    """(height, width) of a frame in the network's space, as `validate` leaves data.resolution."""
    return hw(d.resolution)


def network_multiple(m: ModelConfig) -> int:
    """What a frame's height and width must be multiples of: the patch size times one halving per level."""
    return m.patch_size * 2 ** (len(m.channels) - 1)


def aspect_height(width: int, roi: Sequence[int], multiple: int) -> int:
    """The height that keeps the ROI's aspect (height / width) at `width`, rounded to `multiple` (at least one)."""
    return max(multiple, int(round(width * roi[2] / roi[3] / multiple)) * multiple)


def model_problem(resolution: int | Sequence[int], m: ModelConfig) -> str | None:
    """What makes a frame of `resolution` (a side, or [height, width]) unfit for the network `m` describes
    (None: nothing); the one place this rule lives (`validate` and `unet.UNet` both ask it)."""
    factor = network_multiple(m)
    for name, side in zip(("height", "width"), hw(resolution)):
        if side % factor:
            lower, upper = side // factor * factor, (side // factor + 1) * factor
            what = f"data.resolution = {resolution}" + ("" if isinstance(resolution, int) else f": its {name} {side}")
            return (f"{what} is not divisible by {factor} (model.patch_size {m.patch_size} x 2^{len(m.channels) - 1} "
                    f"for {len(m.channels)} levels in model.channels): pick a multiple of {factor}, e.g. "
                    f"{upper if lower == 0 else lower}")
    bad = [a for a in m.attention_levels if not 0 <= a < len(m.channels)]
    if bad:
        return (f"model.attention_levels = {bad}: levels are 0..{len(m.channels) - 1} (one per entry of "
                f"model.channels)")
    return None


def _rules(cfg: Config) -> list[tuple[bool, str]]:
    """(holds, message) for every single-value range the types do not catch."""
    return _data_rules(cfg) + _run_rules(cfg)


def _data_rules(cfg: Config) -> list[tuple[bool, str]]:
    """The [data], [model] and [diffusion] ranges."""
    d, m, f = cfg.data, cfg.model, cfg.diffusion
    return [
        (isinstance(d.resolution, int) and d.resolution >= 8 or isinstance(d.resolution, list)
         and len(d.resolution) == 2 and d.resolution[0] >= 0 and min(d.resolution[1], d.resolution[0] or 8) >= 8,
         f"data.resolution = {d.resolution}: give a square's side in pixels (e.g. 64), [height, width] (e.g. [32, "
         f"96]) or [0, width] for the ROI's aspect at that width, each side 8 or more"),
        (len(d.roi) == 4 and min(d.roi[:2], default=-1) >= 0 and min(d.roi[2:], default=0) >= 1,
         f"data.roi = {d.roi}: give [top, left, height, width] in pixels, e.g. [678, 0, 767, 2452]"),
        (len(d.columns) >= 1 and len(set(d.columns)) == len(d.columns) and "filepath" not in d.columns,
         f"data.columns = {d.columns}: give the CSV's condition columns, each once (filepath is not one)"),
        (not d.flat_region or (len(d.flat_region) == 4 and min(d.flat_region[2:]) >= 1 and len(d.roi) == 4
                               and d.roi[0] <= d.flat_region[0] and d.roi[1] <= d.flat_region[1]
                               and d.flat_region[0] + d.flat_region[2] <= d.roi[0] + d.roi[2]
                               and d.flat_region[1] + d.flat_region[3] <= d.roi[1] + d.roi[3]),
         f"data.flat_region = {d.flat_region}: give [top, left, height, width] in camera pixels inside data.roi "
         f"= {d.roi}, or [] to find the flat film in the frames"),
        (d.brightness >= 0, f"data.brightness = {d.brightness}: give levels per MPa, 0 or more (0 = off)"),
        (d.synthetic_series >= 2 and d.synthetic_frames >= 12,
         "data.synthetic_series >= 2 and data.synthetic_frames >= 12: a split by series needs two series "
         "and a simulated test at least 12 frames"),
        (len(m.channels) >= 1 and min(m.channels, default=0) >= 1,
         f"model.channels = {m.channels}: give one positive width per level, e.g. [32, 64, 128, 128]"),
        (m.layers_per_block >= 1, f"model.layers_per_block = {m.layers_per_block}: give 1 or more"),
        (m.head_channels >= 1, f"model.head_channels = {m.head_channels}: give 1 or more, e.g. 64"),
        (0 <= m.dropout < 1, f"model.dropout = {m.dropout}: give a probability in [0, 1)"),
        (m.patch_size >= 1, f"model.patch_size = {m.patch_size}: give 1 (pixels) or more"),
        (m.cond_fourier >= 0,
         f"model.cond_fourier = {m.cond_fourier}: give 0 (off) or a number of frequencies, e.g. 8"),
        (f.timesteps >= 2, f"diffusion.timesteps = {f.timesteps}: give 2 or more, e.g. 1000"),
        (f.min_snr_gamma > 0, f"diffusion.min_snr_gamma = {f.min_snr_gamma}: give a positive SNR cap, e.g. 5"),
        (0 <= f.min_snr_floor <= f.min_snr_gamma, f"diffusion.min_snr_floor = {f.min_snr_floor}: give a weight "
         f"in [0, min_snr_gamma = {f.min_snr_gamma:g}], e.g. 0.3"),
        (f.grain >= 0, f"diffusion.grain = {f.grain}: give 8-bit levels, or 0 to measure them on the training frames"),
    ]


def _run_rules(cfg: Config) -> list[tuple[bool, str]]:
    """The [train], [sample] and [regression] ranges."""
    f, t, s, g = cfg.diffusion, cfg.train, cfg.sample, cfg.regression
    prob = lambda v: 0 <= v <= 1  # noqa: E731
    return [
        (t.steps >= 1, f"train.steps = {t.steps}: give 1 or more"),
        (t.batch_size >= 1 and t.grad_accum >= 1,
         f"train.batch_size = {t.batch_size}, train.grad_accum = {t.grad_accum}: give 1 or more each"),
        (t.lr > 0, f"train.lr = {t.lr}: give a positive learning rate, e.g. 1e-4"),
        (len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas),
         f"train.betas = {t.betas}: give two AdamW betas in [0, 1), e.g. [0.95, 0.999]"),
        (t.weight_decay >= 0, f"train.weight_decay = {t.weight_decay}: give 0 or more"),
        (t.warmup_steps >= 0, f"train.warmup_steps = {t.warmup_steps}: give 0 or more"),
        (t.grad_clip > 0, f"train.grad_clip = {t.grad_clip}: give a positive norm, e.g. 1.0"),
        (prob(t.ema_max_decay) and t.ema_inv_gamma > 0 and t.ema_power > 0,
         "train.ema_max_decay in [0, 1], train.ema_inv_gamma > 0 and train.ema_power > 0 (e.g. 0.9999, 1, 0.75)"),
        (prob(t.cond_drop_prob) and prob(t.field_drop_prob),
         f"train.cond_drop_prob = {t.cond_drop_prob}, train.field_drop_prob = {t.field_drop_prob}: "
         "give probabilities in [0, 1]"),
        (0 <= t.zoom < 1, f"train.zoom = {t.zoom}: give a fraction in [0, 1), e.g. 0.04"),
        (t.fracture_repeat >= 1, f"train.fracture_repeat = {t.fracture_repeat}: give a whole number >= 1 (1 = off)"),
        (min(t.checkpoint_every, t.sample_every, t.log_every, t.keep_checkpoints, t.sample_count) >= 1,
         "train.checkpoint_every, sample_every, log_every, keep_checkpoints and sample_count: give 1 or more"),
        (t.max_bad_steps >= 0, f"train.max_bad_steps = {t.max_bad_steps}: give 0 or more"),
        (t.max_minutes >= 0, f"train.max_minutes = {t.max_minutes}: give minutes, or 0 for no limit"),
        (not (t.sync_free and t.precision == "fp16"), "train.sync_free with train.precision = \"fp16\": the loss "
         "scaler decides on the host; use bf16 (or sync_free = false)"),
        (s.steps >= 1, f"sample.steps = {s.steps}: give 1 or more, e.g. 50"),
        (s.eta >= 0, f"sample.eta = {s.eta}: give 0 (deterministic DDIM) or more"),
        (s.sampler != "heun" or s.eta == 0, f"sample.sampler = \"heun\" is deterministic (Karras et al. 2022, "
         f"Algorithm 1), but sample.eta = {s.eta}: set it to 0"),
        (s.guidance >= 0, f"sample.guidance = {s.guidance}: give 1 (off) or more"),
        (s.batch_size >= 1, f"sample.batch_size = {s.batch_size}: give 1 or more"),
        (not s.guidance_interval or (len(s.guidance_interval) == 2
                                     and 0 <= s.guidance_interval[0] <= s.guidance_interval[1] < f.timesteps),
         f"sample.guidance_interval = {s.guidance_interval}: give [lo, hi] timesteps with 0 <= lo <= hi < "
         f"diffusion.timesteps = {f.timesteps}, or [] for every step"),
        (0 <= s.film_tail < f.timesteps, f"sample.film_tail = {s.film_tail}: give a timestep in 0 .. "
         f"diffusion.timesteps - 1 = {f.timesteps - 1} (0: a still film)"),
        (min(g.epochs, g.batch_size) >= 1 and g.patience >= 0,
         "regression.epochs and regression.batch_size: give 1 or more; regression.patience: 0 or more"),
        (g.lr > 0 and g.weight_decay >= 0, "regression.lr > 0 and regression.weight_decay >= 0, e.g. 1e-3 and 1e-4"),
        (0 <= g.zoom < 1, f"regression.zoom = {g.zoom}: give a fraction in [0, 1), e.g. 0.04"),
        (0 < g.val_fraction < 1, f"regression.val_fraction = {g.val_fraction}: give a fraction in (0, 1), e.g. 0.1"),
    ]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def to_toml(cfg: Config) -> str:
    """The whole config as TOML text that `load_config` reads back to an equal Config."""
    lines = [f"name = {_toml_value(cfg.name)}"]
    for section, body in cfg.to_dict().items():
        if isinstance(body, dict):
            lines += ["", f"[{section}]"] + [f"{k} = {_toml_value(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"


def add_config_args(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """The two config flags every command shares: --config PATH and repeated --set key=value."""
    parser.add_argument("--config", default=default, help="experiment TOML (see experiments/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value, TOML syntax; repeatable")
