"""Checkpoints: atomic save, safe load (weights_only), and rebuilding a model from one.

Shared by train, sample and every later consumer, so none of them imports another's loop. A
checkpoint is a plain dict (docs/design.md): `format`, `model`, `ema`, `optimizer`, `step`, `config`
(plain dict), `normalizer` (plain numbers), plus the training state needed for an exact resume.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from thinfilm import UserError
from thinfilm.config import Config, ConfigError, from_dict, validate
from thinfilm.data import Normalizer
from thinfilm.unet import UNet

FORMAT = "thinfilm-diffusion/1"              # the diffusion model (train.py)
REGRESSOR = "thinfilm-regressor/1"           # the inverse model (regression.py)
WHAT = {FORMAT: ("a diffusion checkpoint", "python -m thinfilm.train"),
        REGRESSOR: ("a regressor checkpoint", "python -m thinfilm.regression train")}


class CheckpointError(UserError):
    """A checkpoint path that is missing, unreadable, or of another format or version."""


@dataclass
class RunDir:
    """`<out_dir>/<run>/`: config.toml, checkpoints/, tb/, samples/."""
    path: Path

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def tb(self) -> Path:
        return self.path / "tb"

    @property
    def samples(self) -> Path:
        return self.path / "samples"


def new_run_dir(out_dir: str, name: str, key: str, check: bool = True) -> RunDir:
    """`<out_dir>/<name>/`, "" naming it <key's default>-<date>-<time> is the caller's job; an existing
    folder is never overwritten (check=False: this process does not create it, e.g. a DDP rank > 0)."""
    path = Path(out_dir) / name
    if check and path.exists():
        raise CheckpointError(f"run folder {path} already exists and is never overwritten; set {key} to a new name"
                              + (" or continue it with --resume" if key == "train.run_name" else ""))
    return RunDir(path)


def timestamped(prefix: str) -> str:
    """A run name: <prefix>-<date>-<time>."""
    return f"{prefix}-{datetime.now():%Y%m%d-%H%M%S}"


def save(state: dict[str, Any], path: str | Path, kind: str = FORMAT) -> None:
    """Write `state` to `path` atomically: a temp file in the same folder, fsynced, then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save({"format": kind, **state}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def publish_last(path: Path) -> None:
    """Point `checkpoints/last.pt` at `path` atomically (a hard link where the filesystem allows)."""
    last = path.with_name("last.pt")
    tmp = path.with_name(f".last.pt.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:
        shutil.copyfile(path, tmp)
    os.replace(tmp, last)


def load(path: str | Path, kind: str = FORMAT) -> dict[str, Any]:
    """Load a checkpoint of `kind` on the CPU with `weights_only=True`: no code runs from the file."""
    path = Path(path)
    if path.is_dir():                            # a run folder: its checkpoint, or the other kind's (to say so)
        names = ["best.pt", "last.pt"] if kind == REGRESSOR else ["last.pt", "best.pt"]
        path = next((path / "checkpoints" / n for n in names if (path / "checkpoints" / n).is_file()),
                    path / "checkpoints" / names[0])
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found (give a .pt file or a run folder)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not ours"
        raise CheckpointError(f"{path}: not a readable thinfilm checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:120]})") from None
    found = state.get("format", "no format tag") if isinstance(state, dict) else type(state).__name__
    if found in WHAT and found != kind:
        raise CheckpointError(f"{path} is {WHAT[found][0]}, not {WHAT[kind][0]}: give one written by "
                              f"`{WHAT[kind][1]}`")
    if found != kind:
        raise CheckpointError(f"{path}: checkpoint format {found!r}, expected {kind!r} "
                              "(written by another program or another thinfilm version)")
    return state


def find_run(spec: str, out_dir: str | Path, flag: str) -> Path:
    """RUN_DIR | CKPT | latest -> a diffusion checkpoint file: a run folder's last.pt, or the newest last.pt
    under `out_dir`; `flag` names the option in the error."""
    if spec == "latest":
        runs = sorted(Path(out_dir).glob("*/checkpoints/last.pt"), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise CheckpointError(f"{flag} latest: no diffusion run with checkpoints/last.pt under {out_dir}: train "
                                  "one first (bash run.sh train)")
        return runs[-1]
    path = Path(spec) / "checkpoints" / "last.pt" if Path(spec).is_dir() else Path(spec)
    if not path.is_file():
        raise CheckpointError(f"{flag} {spec}: no checkpoint there (give a run folder, a .pt file or 'latest')")
    return path


def find_regressor(out_dir: str | Path, cfg: Config) -> Path | None:
    """The newest regressor under `out_dir` trained on the data `cfg` describes (the same training CSV,
    resolution and columns), or None."""
    for best in sorted(Path(out_dir).glob("*/checkpoints/best.pt"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            other = config_of(load(best, REGRESSOR)).data
        except UserError:
            continue
        if (other.train_csv, other.resolution, other.columns) == (cfg.data.train_csv, cfg.data.resolution,
                                                                  cfg.data.columns):
            return best
    return None


class Loaded(NamedTuple):
    """A network ready for sampling, with what it was trained with."""
    net: UNet
    config: Config
    normalizer: Normalizer
    step: int


def config_of(state: dict[str, Any]) -> Config:
    """The config a checkpoint was trained with, checked like a TOML file's."""
    try:
        return validate(from_dict(state["config"], "checkpoint config"))
    except ConfigError as err:
        raise CheckpointError(f"checkpoint config does not fit this thinfilm version: {err}") from None


def load_model(path: str | Path, ema: bool = True, device: str | torch.device = "cpu") -> Loaded:
    """Rebuild the UNet a checkpoint describes and load its EMA (or raw) weights, in eval mode."""
    state = load(path)
    cfg = config_of(state)
    net = UNet.from_config(cfg)
    try:
        net.load_state_dict(state["ema" if ema else "model"])
    except (RuntimeError, KeyError) as err:
        detail = " ".join(str(err).split())[:200]
        raise CheckpointError(f"{path}: weights do not fit the network its config describes (written by "
                              f"another thinfilm version?): {detail}") from None
    return Loaded(net.to(device).eval(), cfg, Normalizer.from_dict(state["normalizer"]), int(state["step"]))


def all_finite(module: nn.Module) -> bool:
    """True when every parameter and buffer is finite: a NaN model is never written."""
    return all(bool(torch.isfinite(t).all()) for t in list(module.parameters()) + list(module.buffers())
               if t.is_floating_point())
