"""Checkpoints: atomic save, safe load (weights_only), and rebuilding a model from one.

Shared by train, sample and every later consumer, so none of them imports another's loop. A
checkpoint is a plain dict (docs/design.md): `format`, `model`, `ema`, `optimizer`, `step`, `config`
(plain dict), `normalizer` (plain numbers), plus the training state needed for an exact resume.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from thinfilm import UserError
from thinfilm.config import Config, ConfigError, from_dict, validate
from thinfilm.data import Normalizer
from thinfilm.unet import UNet

FORMAT = "thinfilm-diffusion/1"


class CheckpointError(UserError):
    """A checkpoint path that is missing, unreadable, or of another format or version."""


def save(state: dict[str, Any], path: str | Path) -> None:
    """Write `state` to `path` atomically: a temp file in the same folder, fsynced, then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save({"format": FORMAT, **state}, f)
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


def load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint on the CPU with `weights_only=True`: no code runs from the file."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found (give a .pt file or a run folder)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not ours"
        raise CheckpointError(f"{path}: not a readable thinfilm checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format", "no format tag") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: checkpoint format {found!r}, expected {FORMAT!r} "
                              "(written by another program or another thinfilm version)")
    return state


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
