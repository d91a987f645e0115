"""The inverse model (`python -m thinfilm.regression train | predict`): a ResNet-18 that reads the
measurements back from a frame, the judge of generated frames where no simulator knows the truth.

It trains on the training split through the same cached pipeline as the diffusion model, with MSE on
z-scored targets (its own statistics of the training split, whatever `data.normalize` the diffusion
model used, so one judge serves models trained either way) of the columns a frame can show (the
others read as the training mean), early stopping on a validation part held out by series (a fraction
of frames where the split has fewer than 4 series), and no augmentation but
the zoom that scales the pixel-distance columns with the frame (`data.stretch`) and left-right mirroring
(which keeps every distance). Its run folder holds
config.toml, checkpoints/best.pt, tb/ and metrics.json: R² and MAE per column on the test split, in
raw units (contract: docs/design.md).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
import torchvision
from torch import Tensor, nn

from thinfilm import UserError, checkpoint, cli
from thinfilm.config import Config, add_config_args, frame_size, load_config, to_toml, validate
from thinfilm.data import Normalizer, Split, load_splits, read_images, series_of, split_series, stretch, to_network
from thinfilm.metrics import mae, r2
from thinfilm.runtime import autocast, autocast_dtype, pick_device


class RegressionError(UserError):
    """A regressor that cannot be trained or applied as asked."""


class Regressor(nn.Module):
    """ResNet-18 (torchvision, random init) on 1-channel frames [B, 1, R, R] -> [B, C] z-scored values.

    stem "small": a 3x3 stride-1 convolution and no max-pool, so a 64-px frame keeps its gauge marks'
    fine positions into the first residual stage; "pooled": the same conv, then the max-pool; "stock":
    torchvision's 7x7 stride-2 conv and max-pool (4x coarser before the first stage).
    """

    def __init__(self, n_outputs: int, stem: str = "small"):
        super().__init__()
        net = torchvision.models.resnet18(weights=None, num_classes=n_outputs)
        if stem == "stock":
            net.conv1 = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
        else:
            net.conv1 = nn.Conv2d(1, 64, 3, stride=1, padding=1, bias=False)
            if stem == "small":
                net.maxpool = nn.Identity()
        self.head, net.fc = net.fc, nn.Identity()
        self.body = net

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features [B, 512] (after global average pooling): the space KID is measured in."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class Loaded(NamedTuple):
    """A trained regressor with what it was trained with."""
    net: Regressor
    config: Config
    normalizer: Normalizer          # of its targets (z-score of the training split)
    epoch: int


def load(path: str | Path, device: str | torch.device = "cpu") -> Loaded:
    """Rebuild a regressor from its checkpoint (weights_only), in eval mode."""
    state = checkpoint.load(path, checkpoint.REGRESSOR)
    cfg = checkpoint.config_of(state)
    norm = Normalizer.from_dict(state["normalizer"])
    net = Regressor(len(norm.columns), cfg.regression.stem)
    try:
        net.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as err:
        raise checkpoint.CheckpointError(f"{path}: weights do not fit the regressor its config describes: "
                                         f"{' '.join(str(err).split())[:200]}") from None
    return Loaded(net.to(device).eval(), cfg, norm, int(state["epoch"]))


class Readout(NamedTuple):
    """What a regressor reads from frames: values [N, C] in raw units and features [N, 512]."""
    values: np.ndarray
    features: np.ndarray


@torch.no_grad()
def read(loaded: Loaded, frames: np.ndarray, device: torch.device, amp: torch.dtype | None = None,
         batch_size: int = 64) -> Readout:
    """Apply the regressor to uint8 frames [N, H, W] of its frame size."""
    h, w = frame_size(loaded.config.data)
    if frames.shape[1:] != (h, w):
        raise RegressionError(f"frames of {frames.shape[2]}x{frames.shape[1]} px (width x height), but the "
                              f"regressor reads {w}x{h} (its data.resolution)")
    values, features = [], []
    for lo in range(0, len(frames), batch_size):
        x = to_network(frames[lo:lo + batch_size]).to(device)
        with autocast(device, amp):
            f = loaded.net.features(x)
            y = loaded.net.head(f)
        values.append(loaded.normalizer.decode(y.float()))
        features.append(f.float().cpu().numpy())
    return Readout(np.concatenate(values), np.concatenate(features))


# ------------------------------------------------------------------------------------- training
def validation_part(split: Split, fraction: float) -> tuple[np.ndarray, str]:
    """Which training frames validate: whole series where the split has at least 4 (the researcher's rule,
    `split_series`), otherwise every k-th frame (k = 1 / fraction). Returns a bool mask [N] and how."""
    series = np.array([series_of(p) for p in split.table.paths])
    names = sorted(set(series))
    if len(names) >= 4:
        held = split_series(names)
        return np.isin(series, held), f"series {', '.join(held)}"
    k = max(2, round(1 / fraction))
    mask = np.arange(len(series)) % k == k // 2
    return mask, f"every {k}th frame ({len(names)} series: too few to hold one out)"


class Fit:
    """Trains a regressor with early stopping; `epoch()` is one pass, `validate()` one check."""

    def __init__(self, cfg: Config, train: Split, device: torch.device):
        g = cfg.regression
        self.cfg, self.device = cfg, device
        self.norm = Normalizer.fit(train.table.values, cfg.data.columns, "zscore")
        self.targets = self.norm.encode(train.table.values)
        self.frames = train.frames
        val, self.val_how = validation_part(train, g.val_fraction)
        self.fit_idx, self.val_idx = np.flatnonzero(~val), np.flatnonzero(val)
        # only the columns a frame can show are fitted and validated: the others (data.invisible, e.g. x8, an
        # absolute stage offset per specimen) could only be learnt by recognising the specimen; their outputs
        # stay at the training mean (zero weights, no gradient)
        self.visible = torch.tensor([c not in cfg.data.invisible for c in cfg.data.columns], device=device)
        torch.manual_seed(cfg.train.seed)
        self.net = Regressor(len(cfg.data.columns), g.stem).to(device)
        with torch.no_grad():
            self.net.head.weight[~self.visible] = 0
            self.net.head.bias[~self.visible] = 0
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=g.lr, weight_decay=g.weight_decay)
        per_epoch = math.ceil(len(self.fit_idx) / g.batch_size)
        total = g.epochs * per_epoch                          # one epoch of linear warm-up, then cosine to 0
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: min((s + 1) / per_epoch, 0.5 * (
            1 + math.cos(math.pi * min(1.0, s / total)))))
        self.amp = autocast_dtype(cfg.train.precision, device)
        zoomed = [cfg.data.columns.index(c) for c in cfg.train.zoom_columns]
        self.zoom_idx = torch.tensor(zoomed, dtype=torch.long, device=device)
        self.zoom_shift = torch.tensor([self.norm.shift[i] / self.norm.scale[i] for i in zoomed], device=device)
        self.gen = torch.Generator().manual_seed(cfg.train.seed + 2)

    def epoch(self) -> float:
        """One pass over the fitting frames in a fresh order; returns the mean training loss."""
        g, total, count = self.cfg.regression, 0.0, 0
        self.net.train()
        order = self.fit_idx[torch.randperm(len(self.fit_idx), generator=self.gen).numpy()]
        for lo in range(0, len(order), g.batch_size):
            idx = np.sort(order[lo:lo + g.batch_size])
            x = to_network(np.asarray(self.frames[idx])).to(self.device)
            y = self.targets[idx].to(self.device)
            if g.zoom > 0:
                s = 1 + g.zoom * (2 * torch.rand(len(idx), generator=self.gen) - 1)
                x, y = stretch(x, y, s.to(self.device), self.zoom_idx, self.zoom_shift)
            if g.mirror:                               # left-right: every distance, hence every value, is kept
                flip = (torch.rand(len(idx), generator=self.gen) < 0.5).to(self.device)
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            with autocast(self.device, self.amp):
                loss = (self.net(x).float() - y)[:, self.visible].pow(2).mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.sched.step()
            total, count = total + float(loss.detach()) * len(idx), count + len(idx)
        return total / max(count, 1)

    @torch.no_grad()
    def validate(self) -> float:
        """Mean squared error on the validation frames (z-scored targets of the visible columns)."""
        self.net.eval()
        loaded = Loaded(self.net, self.cfg, self.norm, 0)
        raw = read(loaded, np.asarray(self.frames[self.val_idx]), self.device, self.amp).values
        err = (self.norm.encode(raw) - self.targets[self.val_idx]).pow(2)
        return float(err[:, self.visible.cpu()].mean())

    def state(self, epoch: int, val_loss: float) -> dict:
        return {"model": self.net.state_dict(), "config": self.cfg.to_dict(), "normalizer": self.norm.to_dict(),
                "epoch": epoch, "val_loss": val_loss}


def scores(pred: np.ndarray, true: np.ndarray, columns: list[str]) -> dict[str, dict[str, float]]:
    """{column: {"r2": .., "mae": ..}} of raw predictions [N, C] against raw truth [N, C]."""
    return {c: {"r2": r2(pred[:, j], true[:, j]), "mae": mae(pred[:, j], true[:, j])} for j, c in enumerate(columns)}


def fit(cfg: Config, train: Split, device: torch.device, quiet: bool = False,
        run: checkpoint.RunDir | None = None) -> tuple[Loaded, int, float]:
    """Train a regressor on a split's frames with early stopping; returns the best epoch's model (in eval
    mode), that epoch and its validation MSE. With `run`: checkpoints/best.pt and tensorboard curves there."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    g = cfg.regression
    job = Fit(cfg, train, device)
    writer = SummaryWriter(str(run.tb)) if run else None
    if not quiet:
        print(f"regressor{f' {run.path}' if run else ''}: ResNet-18 ({g.stem} stem), {len(job.fit_idx)} frames to "
              f"fit, {len(job.val_idx)} to validate ({job.val_how}), up to {g.epochs} epochs")
    best, best_epoch, since, kept = math.inf, 0, 0, None
    bar = tqdm(range(1, g.epochs + 1), desc="regressor", unit="epoch", disable=quiet, dynamic_ncols=True)
    for epoch in bar:
        loss, val = job.epoch(), job.validate()
        if writer:
            writer.add_scalar("regression/train_loss", loss, epoch)
            writer.add_scalar("regression/val_loss", val, epoch)
        bar.set_postfix(loss=f"{loss:.4f}", val=f"{val:.4f}")
        if val < best:
            best, best_epoch, since = val, epoch, 0
            kept = {k: v.detach().clone() for k, v in job.net.state_dict().items()}
            if run:
                checkpoint.save(job.state(epoch, val), run.checkpoints / "best.pt", checkpoint.REGRESSOR)
        else:
            since += 1
            if since > g.patience:
                break
    bar.close()
    if writer:
        writer.close()
    job.net.load_state_dict(kept)
    return Loaded(job.net.eval(), cfg, job.norm, best_epoch), best_epoch, best


def train_regressor(cfg: Config, quiet: bool = False) -> Path:
    """Train, keep the best epoch's weights in checkpoints/best.pt, write metrics.json; return the run folder."""
    from torch.utils.tensorboard import SummaryWriter

    run = checkpoint.new_run_dir(cfg.train.out_dir, cfg.regression.run_name
                                 or checkpoint.timestamped(f"regressor-{cfg.name}"), "regression.run_name")
    device = pick_device(cfg.train.device, "train.device")
    train, test, _ = load_splits(cfg.data, progress=not quiet)
    run.path.mkdir(parents=True)
    (run.path / "config.toml").write_text(to_toml(cfg))
    loaded, best_epoch, best = fit(cfg, train, device, quiet, run)
    metrics = scores(read(loaded, np.asarray(test.frames), device, autocast_dtype(cfg.train.precision, device)).values,
                     test.table.values, cfg.data.columns)
    with SummaryWriter(str(run.tb)) as writer:
        for c, m in metrics.items():
            writer.add_scalar(f"test_r2/{c}", m["r2"], best_epoch)
    (run.path / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"best epoch {best_epoch} (validation MSE {best:.4f}); test split, R2 per column: "
          + ", ".join(f"{c} {m['r2']:.3f}" for c, m in metrics.items()))
    print(f"checkpoint {run.checkpoints / 'best.pt'}; metrics {run.path / 'metrics.json'}")
    return run.path


def predict(ckpt: str, images: str, out: str, root: str = "", device_name: str = "auto") -> Path:
    """Raw-unit readings of the frames a manifest or seed-format CSV lists, to a CSV: file, <columns>."""
    device = pick_device(device_name, "--device")
    loaded = load(ckpt, device)
    d = loaded.config.data
    found = read_images(images, loaded.normalizer.columns, d.roi, d.resolution, root)
    values = read(loaded, found.frames, device, autocast_dtype("auto", device)).values
    table = pd.DataFrame(values, columns=loaded.normalizer.columns)
    table.insert(0, "file", found.names)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False, float_format="%.9g")
    return Path(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m thinfilm.regression", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train the regressor on the config's training split")
    add_config_args(p, "experiments/default.toml")
    p.add_argument("--quiet", action="store_true")
    p = sub.add_parser("predict", help="read the measurements of frames back")
    p.add_argument("--ckpt", required=True, help="regressor checkpoint (.pt or its run folder)")
    p.add_argument("--images", required=True, help="a sample manifest.csv or a seed-format CSV of frames")
    p.add_argument("--out", required=True, help="CSV to write: file, <columns> in raw units")
    p.add_argument("--root", default="", help="folder the CSV's frame paths are rebased under (as data.root)")
    p.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if args.command == "train":
        train_regressor(validate(load_config(args.config, args.overrides)), args.quiet)
    else:
        print(f"wrote {predict(args.ckpt, args.images, args.out, args.root, args.device)}")


if __name__ == "__main__":
    cli(main)
