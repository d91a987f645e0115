"""The configuration: a typed dataclass tree, read from TOML with dotted overrides.

Defaults are the researcher's design (SEED.md); an experiment file holds only what differs.
`load_config(path, overrides)` is the contract every command uses; `--set section.key=value`
values are parsed as TOML (`data.roi=[678,0,767,2452]`), falling back to a bare string
(`data.root=/mnt/films`). Unknown sections or keys and wrong types raise `ConfigError`.
"""
from __future__ import annotations

import argparse
import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    resolution: int = 512
    normalize: str = "zscore"            # zscore | minmax | none
    cache_dir: str = "data/cache"
    synthetic: bool = False              # generate the built-in dataset where the CSVs point, if missing
    synthetic_series: int = 10
    synthetic_frames: int = 50           # frames per series
    synthetic_seed: int = 0


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


@dataclass
class DiffusionConfig:
    """Noise schedule, prediction target and loss weighting."""
    schedule: str = "linear"             # linear | cosine
    timesteps: int = 1000
    prediction: str = "eps"              # eps | x0 | v
    loss_weighting: str = "none"         # none | min_snr
    min_snr_gamma: float = 5.0
    min_snr_floor: float = 0.0           # min_snr's x0-space weight never below this (README: "a floor")


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
    lr_schedule: str = "cosine"          # cosine | constant
    grad_clip: float = 1.0
    precision: str = "auto"              # auto (bf16 on CUDA and AMX CPUs, else fp32) | fp32 | bf16 | fp16
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
    device: str = "auto"                 # auto | cpu | cuda
    out_dir: str = "runs"
    run_name: str = ""                   # "" = <experiment>-<date>-<time>
    seed: int = 0


@dataclass
class SampleConfig:
    """Defaults for drawing frames (training previews and `thinfilm.sample`)."""
    sampler: str = "ddim"                # ddim | ddpm
    steps: int = 50
    eta: float = 0.0
    guidance: float = 1.0
    clip: bool = True
    batch_size: int = 16


@dataclass
class Config:
    """The whole experiment."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    name: str = "default"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


CHOICES = {
    "data.normalize": ("zscore", "minmax", "none"),
    "diffusion.schedule": ("linear", "cosine"),
    "diffusion.prediction": ("eps", "x0", "v"),
    "diffusion.loss_weighting": ("none", "min_snr"),
    "train.lr_schedule": ("cosine", "constant"),
    "train.precision": ("auto", "fp32", "bf16", "fp16"),
    "train.device": ("auto", "cpu", "cuda"),
    "sample.sampler": ("ddim", "ddpm"),
}


def _sections() -> dict[str, type]:
    return {k: v for k, v in typing.get_type_hints(Config).items() if k != "name"}


def _check_type(key: str, value: Any, hint: Any) -> Any:
    """Return `value` as `hint` (int widens to float), or raise naming the key and both types."""
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list of {item.__name__}, got {type(value).__name__} {value!r}")
        return [_check_type(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{key}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    choices = CHOICES.get(key)
    if choices and value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")
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


def _parse_override(text: str) -> tuple[str, str, Any]:
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
        section, key, value = _parse_override(text)
        _apply(cfg, section, key, value, f"--set {text}")
    return cfg


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
