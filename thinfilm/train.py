"""The training loop (`python -m thinfilm.train`): AMP, EMA, accumulation, exact resume, DDP, logging.

One optimiser step consumes a *global* batch of batch_size x grad_accum x world_size frames. Its
frame indices, noise, timesteps and condition-dropout masks are drawn for the whole global batch
from streams seeded by `train.seed` (the same on every rank), and each rank takes its slice: so a
run on N processes computes the same update as one process with an N-times larger micro-batch,
checkpoints move freely between world sizes, and a resumed run continues bit for bit.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torchvision.utils import make_grid, save_image

from thinfilm import UserError, checkpoint, cli
from thinfilm.checkpoint import RunDir, new_run_dir, timestamped
from thinfilm.config import Config, add_config_args, apply_overrides, frame_size, load_config, to_toml, validate
from thinfilm.data import Normalizer, Split, after_fracture, load_splits, stretch, to_network, to_uint8
from thinfilm.diffusion import GaussianDiffusion
from thinfilm.metrics import grain_level, texture, texture_region
from thinfilm.runtime import (
    Dist,
    agree,
    autocast,
    autocast_dtype,
    check_replicas,
    derive_seed,
    init_distributed,
    pick_device,
    precision_name,
)
from thinfilm.sampling import Execution, Plan, frame_seed, generate
from thinfilm.unet import UNet


class TrainingError(UserError):
    """Training cannot go on (diverged, run folder taken, nothing to resume)."""


# ------------------------------------------------------------------------------------ pieces
class EMA:
    """Exponential moving average of a model's parameters and buffers, with the warm-up of
    diffusers' EMAModel: decay = min(max_decay, 1 - (1 + step / inv_gamma) ** -power)."""

    def __init__(self, model: nn.Module, max_decay: float, inv_gamma: float, power: float):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.max_decay, self.inv_gamma, self.power = max_decay, inv_gamma, power

    def decay(self, step: int) -> float:
        return min(self.max_decay, max(0.0, 1 - (1 + step / self.inv_gamma) ** -self.power))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int, take: Tensor | None = None) -> float:
        """Move the average towards `model` (one fused lerp over all parameters); copy buffers. `take`: a
        0-dim bool tensor, False = keep the average (a step skipped on the device, without a sync)."""
        d = self.decay(step)
        mine, theirs = list(self.model.parameters()), list(model.parameters())
        if take is None:
            torch._foreach_lerp_(mine, theirs, 1 - d)
        else:
            torch._foreach_lerp_(mine, theirs, [take.float() * (1 - d)] * len(mine))
        for mine, theirs in zip(self.model.buffers(), model.buffers()):
            mine.copy_(theirs)
        return d


class DataOrder:
    """Global batches of positions in the training pool (`Trainer.pool`: frame indices, frames after
    fracture repeated): a fresh permutation per epoch, seeded by (seed, epoch)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch, self.pos = n, seed, 0, 0

    def _perm(self) -> Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(derive_seed(self.seed, self.epoch)))

    def take(self, count: int) -> Tensor:
        parts = []
        while count > 0:
            if self.pos >= self.n:
                self.epoch, self.pos = self.epoch + 1, 0
            part = self._perm()[self.pos:self.pos + count]
            self.pos += len(part)
            count -= len(part)
            parts.append(part)
        return torch.cat(parts)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])


def lr_lambda(cfg: Config):
    """Linear warm-up, then cosine decay to zero at train.steps (or constant)."""
    warm, total = cfg.train.warmup_steps, cfg.train.steps

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.train.lr_schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
    return factor


# ------------------------------------------------------------------------------------ run dir
# ------------------------------------------------------------------------------------ trainer
class Batch(NamedTuple):
    """One global batch in the network's space: x0 [G, 1, R, R], cond [G, C] (NaN = dropped),
    noise like x0, t [G]."""
    x0: Tensor
    cond: Tensor
    noise: Tensor
    t: Tensor


class Trainer:
    """Owns the network, optimiser, EMA, data order and RNG streams; `step()` is one update."""

    def __init__(self, cfg: Config, train: Split, test: Split, normalizer: Normalizer, device: torch.device,
                 ddp: Dist = Dist()):
        self.cfg, self.train, self.test, self.normalizer, self.device, self.ddp = \
            cfg, train, test, normalizer, device, ddp
        t = cfg.train
        torch.manual_seed(t.seed)
        self.net = UNet.from_config(cfg).to(device)
        self.ema = EMA(self.net, t.ema_max_decay, t.ema_inv_gamma, t.ema_power)
        self.model: nn.Module = self.net
        if ddp.world > 1:
            self.model = DistributedDataParallel(self.net, device_ids=[device.index] if device.type == "cuda" else None)
        if t.compile:
            self.net.compile()                  # in place: state-dict keys keep their names
        self.diffusion = GaussianDiffusion.from_config(cfg)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=t.lr, betas=tuple(t.betas),
                                     weight_decay=t.weight_decay, fused=t.sync_free or None)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(cfg))
        self.amp_dtype = autocast_dtype(t.precision, device)
        self.precision = precision_name(self.amp_dtype)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        broken = np.flatnonzero(after_fracture(train.table, t.fracture_load)) if t.fracture_repeat > 1 else []
        self.n_after_fracture = len(broken)
        self.pool = torch.cat([torch.arange(len(train.frames)),    # the frames an epoch draws, each once or more
                               torch.as_tensor(broken, dtype=torch.long).repeat(t.fracture_repeat - 1)])
        self.order = DataOrder(len(self.pool), t.seed)
        zoomed = [cfg.data.columns.index(c) for c in t.zoom_columns]
        self.zoom_idx = torch.tensor(zoomed, dtype=torch.long, device=device)
        self.zoom_shift = torch.tensor([normalizer.shift[i] / normalizer.scale[i] for i in zoomed], device=device)
        self.gen = torch.Generator(device).manual_seed(t.seed + 1)
        self.step_count = 0
        self.bad_in_row, self.bad_total = self._counter(0), self._counter(0)   # read with int()

    def _counter(self, value: int) -> int | Tensor:
        """A step counter: on the device when train.sync_free (counted without a sync), else a Python int."""
        return torch.tensor(value, device=self.device) if self.cfg.train.sync_free else value

    @property
    def global_batch(self) -> int:
        return self.cfg.train.batch_size * self.cfg.train.grad_accum * self.ddp.world

    def _random(self, g: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
        """Noise, timesteps, condition-dropout masks and zoom factors (None without train.zoom) for a
        global batch of g (the same on every rank)."""
        tc = self.cfg.train
        noise = torch.randn(g, 1, *frame_size(self.cfg.data), generator=self.gen, device=self.device)
        t = torch.randint(0, self.diffusion.timesteps, (g,), generator=self.gen, device=self.device)
        c = len(self.cfg.data.columns)
        fields = torch.rand(g, c, generator=self.gen, device=self.device) < tc.field_drop_prob
        whole = torch.rand(g, generator=self.gen, device=self.device) < tc.cond_drop_prob
        zoom = None
        if tc.zoom > 0:
            zoom = 1 + tc.zoom * (2 * torch.rand(g, generator=self.gen, device=self.device) - 1)
        return noise, t, fields, whole, zoom

    def batch(self) -> Batch:
        """Draw the next global batch: frames (zoomed), conditions (fields dropped), noise, timesteps."""
        idx = self.pool[self.order.take(self.global_batch)]
        noise, t, fields, whole, zoom = self._random(self.global_batch)
        frames = torch.from_numpy(np.asarray(self.train.frames[idx.numpy()]))
        if self.device.type == "cuda":
            frames = frames.pin_memory()                # so the copy below does not wait for the host
        cond = self.train.conditions[idx].to(self.device, non_blocking=True)
        x0 = to_network(frames.to(self.device, non_blocking=True))
        if zoom is not None:
            x0, cond = stretch(x0, cond, zoom, self.zoom_idx, self.zoom_shift)
        return Batch(x0, cond.masked_fill(fields | whole[:, None], float("nan")), noise, t)

    def step(self) -> dict[str, Any]:
        """One optimiser step over a global batch; returns detached statistics for logging."""
        tc, start = self.cfg.train, time.perf_counter()
        x0, cond, noise, t = self.batch()
        data_time = time.perf_counter() - start

        losses = torch.zeros(self.global_batch, device=self.device)
        for j in range(tc.grad_accum):                 # this rank's micro-batches of the global batch
            lo = (j * self.ddp.world + self.ddp.rank) * tc.batch_size
            part = slice(lo, lo + tc.batch_size)
            sync = j == tc.grad_accum - 1 or self.ddp.world == 1
            with (nullcontext() if sync else self.model.no_sync()):
                x_t = self.diffusion.q_sample(x0[part], t[part], noise[part])
                with autocast(self.device, self.amp_dtype):
                    pred = self.model(x_t, t[part], cond[part])
                loss = self.diffusion.loss(pred, x0[part], noise[part], t[part])
                self.scaler.scale(loss.mean() / tc.grad_accum).backward()
            losses[part] = loss.detach()
        if self.ddp.world > 1:
            dist.all_reduce(losses)             # every rank filled its own slices; the sum fills all

        grad_norm, decay = self._update(losses)
        end = time.perf_counter()
        return {"loss": losses, "t": t, "grad_norm": grad_norm, "decay": decay, "data_time": data_time,
                "time": end - start, "end": end}

    def _update(self, losses: Tensor) -> tuple[Tensor, float]:
        """Clip, then one optimiser and EMA update, skipped when the loss or a gradient is not finite.
        With train.sync_free the skip is decided on the device (fused AdamW's found_inf, a masked EMA) and
        the limit on bad steps in a row is checked at log steps only; otherwise on the host every step."""
        t = self.cfg.train
        self.scaler.unscale_(self.opt)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), t.grad_clip)
        finite = torch.isfinite(losses).all() & torch.isfinite(grad_norm)
        decay = self.ema.decay(self.step_count)
        if t.sync_free:
            self.opt.found_inf = (~finite).float()     # 1: the fused step leaves weights and moments as they were
            self.opt.step()
            self.ema.update(self.net, self.step_count, take=finite)
            self.bad_in_row = torch.where(finite, 0, self.bad_in_row + 1)
            self.bad_total = self.bad_total + (~finite).long()
        elif bool(finite):
            self.scaler.step(self.opt)
            self.scaler.update()
            self.ema.update(self.net, self.step_count)
            self.bad_in_row = 0
        else:
            self.scaler.update()
            self.bad_in_row += 1
            self.bad_total += 1
        self.opt.zero_grad(set_to_none=True)
        self.sched.step()
        self.step_count += 1
        if (not t.sync_free or self.step_count % t.log_every == 0) and int(self.bad_in_row) > t.max_bad_steps:
            raise TrainingError(f"{int(self.bad_in_row)} non-finite steps in a row at step {self.step_count}: "
                                "training diverged; lower train.lr or use train.precision=fp32/bf16 "
                                "(the last good checkpoint is untouched)")
        return grad_norm.detach(), decay

    # -------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state(), "gen": self.gen.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {"model": self.net.state_dict(), "ema": self.ema.model.state_dict(),
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "scaler": self.scaler.state_dict(), "step": self.step_count, "data_order": self.order.state_dict(),
                "rng": rng, "bad_steps": int(self.bad_total), "config": self.cfg.to_dict(),
                "normalizer": self.normalizer.to_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.ema.model.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.order.load_state_dict(state["data_order"])
        self.step_count, self.bad_total = int(state["step"]), self._counter(int(state.get("bad_steps", 0)))
        torch.set_rng_state(state["rng"]["torch"])
        self.gen.set_state(state["rng"]["gen"])
        if self.device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)

    def save(self, run: RunDir) -> Path | None:
        """Write checkpoints/step_XXXXXXX.pt and point last.pt at it; prune to keep_checkpoints.
        A model with a non-finite weight is never written over a good checkpoint."""
        if not (checkpoint.all_finite(self.net) and checkpoint.all_finite(self.ema.model)):
            print(f"warning: non-finite weights at step {self.step_count}; checkpoint NOT written")
            return None
        path = run.checkpoints / f"step_{self.step_count:07d}.pt"
        checkpoint.save(self.state_dict(), path)
        checkpoint.publish_last(path)
        keep = max(1, self.cfg.train.keep_checkpoints)
        for old in sorted(run.checkpoints.glob("step_*.pt"))[:-keep]:
            old.unlink(missing_ok=True)
        return path

    # -------------------------------------------------------------------------- sampling
    def preview(self, cond: Tensor, seed: int = 0) -> Tensor:
        """EMA samples for normalised conditions [n, C] with the config's sampler: [n, 1, R, R] on the CPU."""
        return generate(self.ema.model, self.diffusion, cond, [frame_seed(seed, i) for i in range(len(cond))],
                        Plan.from_config(self.cfg), Execution(self.device, self.amp_dtype))


# ------------------------------------------------------------------------------------ logging
class Logger:
    """tensorboard scalars, averaged over the steps between two log steps."""

    def __init__(self, run: RunDir, cfg: Config, timesteps: int):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run.tb))
        self.writer.add_text("config", "```\n" + to_toml(cfg) + "\n```", 0)
        self.timesteps, self.every = timesteps, cfg.train.log_every
        self._reset()

    def _reset(self) -> None:
        self.loss_sum = self.count = self.grad_norm = None      # on the device until a log step reads them
        self.images = self.time = self.data_time = 0.0
        self.steps, self.decay = 0, float("nan")

    def record(self, stats: dict[str, Any], lr: float, step: int,
               bad_total: int | Tensor) -> tuple[float, float] | None:
        """Accumulate one step (on the device: no sync); on a log step write the means and return (loss,
        images/s)."""
        q = (stats["t"] * 4 // self.timesteps).clamp(max=3)
        loss = stats["loss"].double()
        if self.loss_sum is None:
            self.loss_sum, self.count = loss.new_zeros(4), loss.new_zeros(4)
            self.grad_norm = loss.new_zeros(())
        self.loss_sum.index_add_(0, q, loss)
        self.count.index_add_(0, q, torch.ones_like(loss))
        self.grad_norm += stats["grad_norm"].double()
        self.images += len(loss)
        self.time += stats["time"]
        self.data_time += stats["data_time"]
        self.steps += 1
        self.decay = stats["decay"]
        if step % self.every and step != 1:
            return None
        mean = float(self.loss_sum.sum() / self.count.sum().clamp(min=1))
        self.time += time.perf_counter() - stats["end"]            # the device's work still queued at the step's end
        w = self.writer
        w.add_scalar("train/loss", mean, step)
        for i in range(4):
            if self.count[i] > 0:
                w.add_scalar(f"train/loss_t_quartile_{i}", float(self.loss_sum[i] / self.count[i]), step)
        w.add_scalar("train/lr", lr, step)
        w.add_scalar("train/grad_norm", float(self.grad_norm) / self.steps, step)
        w.add_scalar("train/ema_decay", self.decay, step)
        w.add_scalar("train/images_per_s", self.images / max(self.time, 1e-9), step)
        w.add_scalar("train/data_wait_fraction", self.data_time / max(self.time, 1e-9), step)
        w.add_scalar("train/bad_steps", int(bad_total), step)
        rate = self.images / max(self.time, 1e-9)
        self._reset()
        return mean, rate


def grid(rows: list[Tensor]) -> Tensor:
    """Rows of [n, 1, R, R] images in [-1, 1] -> one [1, H, W] image in [0, 1] (tensorboard / PNG)."""
    return make_grid(torch.cat(rows), nrow=len(rows[0]), padding=2, pad_value=1.0).add(1).div(2).clamp(0, 1)[:1]


# ------------------------------------------------------------------------------------ main
@dataclass
class Session:
    """What one training command works with: built by `setup`, run by `loop`, closed by `finish`."""
    cfg: Config
    ddp: Dist
    run: RunDir
    trainer: Trainer
    test: Split
    logger: Logger | None           # rank 0 only
    deadline: float                 # time.time() at which train.max_minutes is reached (inf: never)
    quiet: bool


@dataclass
class Outcome:
    """How the loop ended: a signal's name, the time limit, or neither (the schedule is done)."""
    signal: str | None
    timed_out: bool
    minutes: float


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m thinfilm.train", description="Train the conditional diffusion model.")
    add_config_args(p)
    p.add_argument("--resume", default=None, metavar="RUN_DIR|CKPT|latest",
                   help="continue a run in its own folder, from its last (or the given) checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    launched = time.time()                        # train.max_minutes counts data generation and caching too
    args = parse(argv)
    session = setup(args, launched)
    outcome = loop(session)
    finish(session, outcome)


def setup(args: argparse.Namespace, launched: float) -> Session:
    """Config (checked before any work), process group, device, data, trainer, run folder, logger."""
    state = None
    if args.resume:
        out_dir = load_config(args.config, args.overrides).train.out_dir
        ckpt = checkpoint.find_run(args.resume, out_dir, "--resume")
        state = checkpoint.load(ckpt)
        cfg = validate(apply_overrides(checkpoint.config_of(state), args.overrides))   # e.g. train.steps=...
        run = RunDir(ckpt.parent.parent)
    else:
        if args.config is None:
            raise TrainingError("give --config PATH (e.g. experiments/default.toml) or --resume")
        cfg = validate(load_config(args.config, args.overrides))
    ddp = init_distributed("cuda" if torch.cuda.is_available() and cfg.train.device != "cpu" else "cpu")
    if state is None:
        run = new_run_dir(cfg.train.out_dir, cfg.train.run_name or timestamped(cfg.name), "train.run_name",
                          check=ddp.main)
    device = pick_device(cfg.train.device, "train.device", ddp.local_rank)
    if not ddp.main:
        dist.barrier()                            # rank 0 generates / caches the data first
    train, test, normalizer = load_splits(cfg.data, progress=ddp.main and not args.quiet)
    if ddp.main and ddp.world > 1:
        dist.barrier()
    if state is not None:                         # the statistics the run was started with
        normalizer = Normalizer.from_dict(state["normalizer"])
        train.conditions, test.conditions = normalizer.encode(train.table.values), normalizer.encode(test.table.values)
    elif cfg.diffusion.grain == 0:                # measured once, stored in the run's config from here on
        cfg.diffusion.grain = round(grain_level(train.frames), 3)
    trainer = Trainer(cfg, train, test, normalizer, device, ddp)
    if state is not None:
        trainer.load_state_dict(state)
        del state
    logger = None
    if ddp.main:
        run.path.mkdir(parents=True, exist_ok=True)
        (run.path / "config.toml").write_text(to_toml(cfg))
        logger = Logger(run, cfg, cfg.diffusion.timesteps)
        n_params = sum(p.numel() for p in trainer.net.parameters())
        repeat = cfg.train.fracture_repeat
        broken = f" ({trainer.n_after_fracture} after fracture, drawn {repeat}x)" if repeat > 1 else ""
        kept = " kept by the sampler" if cfg.sample.keep_grain else ""
        how = " passed through" if cfg.diffusion.skip == "grain" else kept
        grain = f", grain {cfg.diffusion.grain:g} levels{how}"
        print(f"run {run.path}: {n_params / 1e6:.2f} M parameters, {len(train.frames)} training frames{broken}{grain}, "
              f"global batch {trainer.global_batch}, {trainer.precision} on {device}"
              + (f" x {ddp.world} processes" if ddp.world > 1 else ""))
    deadline = launched + 60 * cfg.train.max_minutes if cfg.train.max_minutes > 0 else math.inf
    return Session(cfg, ddp, run, trainer, test, logger, deadline, args.quiet)


def loop(s: Session) -> Outcome:
    """Steps until the schedule ends, a signal arrives or the time limit passes; logs, previews and
    checkpoints on the way. Ctrl-C / SIGTERM finish the step in hand."""
    from tqdm import tqdm

    trainer, t = s.trainer, s.cfg.train
    fixed = np.linspace(0, len(s.test.frames) - 1, min(t.sample_count, len(s.test.frames))).round().astype(int)
    caught: dict[str, str | None] = {"signal": None}

    def on_signal(signum, _frame):
        caught["signal"] = signal.Signals(signum).name
    handlers = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    bar = tqdm(total=t.steps, initial=trainer.step_count, desc="train", unit="step",
               disable=not s.ddp.main or s.quiet, dynamic_ncols=True)
    started, last_saved, signalled, timed_out = time.time(), trainer.step_count, False, False
    try:
        while trainer.step_count < t.steps:
            stats = trainer.step()
            step = trainer.step_count
            signalled, timed_out = agree([caught["signal"] is not None, time.time() > s.deadline], s.ddp)
            bar.update()
            if s.logger is not None:
                logged = s.logger.record(stats, trainer.sched.get_last_lr()[0], step, trainer.bad_total)
                if logged is not None:
                    bar.set_postfix(loss=f"{logged[0]:.4f}", img_s=f"{logged[1]:.1f}")
                if step % t.sample_every == 0 or step == t.steps or timed_out:
                    image = grid([trainer.preview(s.test.conditions[fixed]), to_network(s.test.frames[fixed])])
                    s.logger.writer.add_image("samples/ema_vs_real", image, step)
                    s.run.samples.mkdir(parents=True, exist_ok=True)
                    save_image(image, s.run.samples / f"step_{step:07d}.png")
            if step % t.checkpoint_every == 0 and s.ddp.main:
                trainer.save(s.run)
                last_saved = step
            if signalled or timed_out:
                break
    finally:
        bar.close()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    if s.ddp.main and trainer.step_count != last_saved:
        trainer.save(s.run)
    name = (caught["signal"] or "a signal to another rank") if signalled else None
    return Outcome(name, timed_out, (time.time() - started) / 60)


def finish(s: Session, outcome: Outcome) -> None:
    """Leave the process group; on rank 0 say how the run ended, evaluate it and say what comes next."""
    cfg, trainer, run = s.cfg, s.trainer, s.run
    if s.ddp.world > 1:
        check_replicas(trainer.net)
        trainer.model = trainer.net               # drop the DDP wrapper (its reducer) before the group goes
        dist.barrier()
        dist.destroy_process_group()
    if s.logger is None:
        return
    if outcome.signal:
        print(f"\n{outcome.signal}: saved step {trainer.step_count} in {run.checkpoints}; continue with\n"
              f"  bash run.sh train --resume {run.path}")
        s.logger.writer.close()
        return
    if outcome.timed_out:
        print(f"train.max_minutes {cfg.train.max_minutes:g} reached: stopped at step {trainer.step_count} of "
              f"{cfg.train.steps}; to finish the schedule: bash run.sh train --resume {run.path}")
    print(f"done: {trainer.step_count} steps in {outcome.minutes:.1f} min; checkpoint {run.checkpoints / 'last.pt'}")
    report = final_check(trainer, s.test, cfg.data.synthetic)
    for k, v in report.items():
        s.logger.writer.add_scalar(f"fidelity/{k}", v, trainer.step_count)
    (run.path / "fidelity.json").write_text(json.dumps(report, indent=2) + "\n")
    what = "condition fidelity and texture" if cfg.data.synthetic else "texture"
    print(f"{what} on the test split (generated vs real frames, same conditions):")
    print("  " + ", ".join(f"{k} {v:.3f}" for k, v in report.items()))
    s.logger.writer.close()
    print(f"sample: python -m thinfilm.sample --ckpt {run.checkpoints / 'last.pt'} --conditions "
          f"{cfg.data.test_csv} --out {run.path / 'generated'}")


def final_check(trainer: Trainer, test: Split, synthetic: bool, most: int = 100) -> dict[str, float]:
    """Sample test conditions once (all of the built-in data's, else `most` evenly spaced) and compare the
    frames with the real ones: what they show (`synthetic.fidelity`, the built-in data only) and their
    texture (`metrics.texture` in data.flat_region or the flat film found in the real frames, any data)."""
    from thinfilm.synthetic import fidelity

    pick = np.arange(len(test.frames)) if synthetic else \
        np.unique(np.linspace(0, len(test.frames) - 1, min(most, len(test.frames))).round().astype(int))
    generated, real = to_uint8(trainer.preview(test.conditions[pick], seed=1)), np.asarray(test.frames[pick])
    d = trainer.cfg.data
    region = texture_region(real, d.flat_region, d.roi).mask
    if synthetic:
        return fidelity(generated, real, region)
    report = texture(generated, real, region).to_dict()
    return {k: float(v) for k, v in report.items() if not k.startswith("n_")}


if __name__ == "__main__":
    cli(main)
