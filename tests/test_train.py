"""The training loop: outputs, exact resume, EMA, faults, and DDP equivalence."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from thinfilm import UserError, checkpoint, sample, train
from thinfilm.data import load_splits
from thinfilm.metrics import grain_level

from conftest import COLS, DEFAULT, REPO, python_path, set_args, tiny_config, tiny_overrides


def test_few_steps_write_checkpoint_config_and_events(run_train, tmp_path):
    run_train(tmp_path, "train.steps=3", "train.run_name=r", "train.sample_every=2")
    run = tmp_path / "runs" / "r"
    assert (run / "config.toml").is_file() and list((run / "tb").glob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "checkpoints" / "step_0000003.pt").is_file()
    assert (run / "samples" / "step_0000002.png").is_file()
    state = checkpoint.load(run / "checkpoints" / "last.pt")
    assert state["step"] == 3 and {"model", "ema", "optimizer", "config", "normalizer"} <= set(state)
    assert state["normalizer"]["kind"] == "zscore" and len(state["normalizer"]["shift"]) == 8
    loaded = checkpoint.load_model(run)
    assert loaded.step == 3 and loaded.config.data.resolution == 16
    d = loaded.config.diffusion              # the training split's grain, measured once, stored with the run
    train_frames = load_splits(loaded.config.data)[0].frames
    assert d.grain == round(grain_level(train_frames), 3) > 0
    assert f"grain = {d.grain}" in (run / "config.toml").read_text()
    with pytest.raises(checkpoint.CheckpointError, match="already exists"):
        run_train(tmp_path, "train.steps=3", "train.run_name=r")


def test_a_run_at_the_rois_aspect_trains_samples_and_reads(run_train, synth_dir, tmp_path):
    """data.resolution = [0, 32]: the ROI's aspect at 32 px wide (767 / 2452 x 32 = 10 -> 12, the network's
    multiple of 4): the run trains on 12 x 32 frames, stores that shape, and sample and the regressor's reader
    take frames of it (and refuse a square one, in one line)."""
    from thinfilm.data import read_images
    run = run_train(tmp_path, "train.steps=2", "train.run_name=wide", "data.resolution=[0, 32]")
    loaded = checkpoint.load_model(run)
    assert loaded.config.data.resolution == [12, 32] and loaded.net.frame_shape == (1, 12, 32)
    sample.main(["--ckpt", str(run), "--conditions", str(synth_dir / "test.csv"), "--out", str(tmp_path / "o"),
                 "--quiet", "--steps", "2"])
    images = read_images(tmp_path / "o" / "manifest.csv", COLS, (678, 0, 767, 2452), [12, 32])
    assert images.frames.shape == (12, 12, 32)
    with pytest.raises(UserError, match=r"32x12 px \(width x height\), but the model reads 32x32 frames"):
        read_images(tmp_path / "o" / "manifest.csv", COLS, (678, 0, 767, 2452), 32)


def test_grain_skip_run_samples_without_keeping_grain(run_train, tmp_path):
    """The training-time alternative to keep_grain: the network trained around w(t) x_t, the grain stored."""
    run_train(tmp_path, "train.steps=2", "train.run_name=skip", "train.sample_every=2", 'diffusion.skip="grain"',
              "sample.keep_grain=false")
    run = tmp_path / "runs" / "skip"
    d = checkpoint.load_model(run).config.diffusion
    assert d.skip == "grain" and d.grain > 0.5 and (run / "samples" / "step_0000002.png").is_file()
    with pytest.raises(UserError, match="sample.keep_grain = true puts the grain back when sampling"):
        sample.main(["--ckpt", str(run), "--values", "x1=1", "--out", str(tmp_path / "o"), "--keep-grain", "--quiet"])


def test_bf16_autocast_run(run_train, tmp_path):
    """The mixed-precision path (bf16 autocast, fp32 master weights) trains and writes fp32 weights."""
    run_train(tmp_path, "train.steps=2", "train.run_name=bf", "train.precision=bf16")
    state = checkpoint.load(tmp_path / "runs" / "bf")
    assert all(v.dtype == torch.float32 for v in state["model"].values() if v.is_floating_point())
    assert checkpoint.load_model(tmp_path / "runs" / "bf").net.conv_in.weight.isfinite().all()


@pytest.mark.parametrize("sync_free", [False, True])
def test_resume_is_exact(run_train, tmp_path, sync_free):
    """4 straight steps == 2 steps + resume for 2 (bitwise on CPU): data order, RNG, optimiser, EMA, LR."""
    run_train(tmp_path, "train.steps=4", "train.run_name=a", "train.checkpoint_every=2",
              "train.keep_checkpoints=5", "model.dropout=0.1", "train.zoom=0.03", 'train.zoom_columns=["x5", "x6"]',
              "train.fracture_repeat=3", f"train.sync_free={str(sync_free).lower()}")
    ckpts = tmp_path / "runs" / "a" / "checkpoints"
    straight = checkpoint.load(ckpts / "step_0000004.pt")
    train.main(["--resume", str(ckpts / "step_0000002.pt"), "--quiet"])
    resumed = checkpoint.load(ckpts / "step_0000004.pt")
    for key in ("model", "ema"):
        for name, value in straight[key].items():
            assert torch.equal(value, resumed[key][name]), (key, name)
    for a, b in zip(straight["optimizer"]["state"].values(), resumed["optimizer"]["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    assert straight["data_order"] == resumed["data_order"]
    assert straight["scheduler"]["last_epoch"] == resumed["scheduler"]["last_epoch"] == 4


def test_zoom_stretches_frames_and_scales_their_distances(synth_dir):
    from thinfilm.data import Normalizer, load_frame, read_table, resolve_all, stretch, to_network, to_uint8
    from thinfilm.synthetic import ROI, measure
    columns = [f"x{i}" for i in range(1, 9)]
    table = read_table(synth_dir / "train.csv", columns)
    frames = np.stack([load_frame(f, ROI, 64) for f in resolve_all(table)[:8]])
    norm = Normalizer.fit(table.values, columns)
    cond = norm.encode(table.values[:8])
    idx = torch.tensor([4, 5])
    shift = torch.tensor([norm.shift[i] / norm.scale[i] for i in (4, 5)])
    s = torch.tensor([1.0, 1.03, 0.97, 1.02, 0.98, 1.0, 1.03, 0.97])
    x, c = stretch(to_network(frames), cond, s, idx, shift)
    assert torch.allclose(x[s == 1], to_network(frames)[s == 1], atol=1e-5)          # no zoom: the same frame
    before, after = measure(frames)[:, :2], measure(to_uint8(x))[:, :2]
    error = np.abs(after - before * s.numpy()[:, None])     # marks ~1300 px apart move 26-39 px; 1/s: 52-78
    assert error.max() < 15 and error.mean() < 5
    raw = norm.decode(c)
    assert np.allclose(raw[:, 4:6], table.values[:8, 4:6] * s.numpy()[:, None].astype(np.float64), rtol=1e-5)
    assert np.allclose(raw[:, :4], table.values[:8, :4], rtol=1e-5, atol=1e-6)       # strains, load: unchanged


def test_fracture_repeat_draws_broken_frames_more_often(synth_dir, tmp_path):
    from thinfilm.data import after_fracture
    cfg = tiny_config(synth_dir, tmp_path, "train.fracture_repeat=3")
    tr, te, norm = load_splits(cfg.data, progress=False)
    trainer = train.Trainer(cfg, tr, te, norm, torch.device("cpu"))
    counts = torch.bincount(trainer.pool, minlength=len(tr.frames)).numpy()
    broken = after_fracture(tr.table, "x1")
    assert broken.any() and (counts[broken] == 3).all() and (counts[~broken] == 1).all()
    epoch = trainer.pool[trainer.order.take(len(trainer.pool))]           # one epoch, as step() draws it
    assert np.array_equal(torch.bincount(epoch, minlength=len(tr.frames)).numpy(), counts)


def test_ema_update_against_hand_computed_values():
    net = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.BatchNorm1d(1))
    ema = train.EMA(net, max_decay=0.9999, inv_gamma=1.0, power=0.75)
    assert ema.decay(0) == 0.0 and ema.decay(10) == pytest.approx(1 - 11 ** -0.75)
    assert ema.decay(10**9) == 0.9999
    before = [p.clone() for p in ema.model.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
        net[1].running_mean.fill_(3.0)
    d = ema.update(net, 10)
    for old, new, cur in zip(before, ema.model.parameters(), net.parameters()):
        assert torch.allclose(new, d * old + (1 - d) * cur)
    assert ema.model[1].running_mean.item() == 3.0                     # buffers are copied


@pytest.mark.parametrize("sync_free", [False, True])
def test_nan_guard_skips_and_stops(synth_dir, tmp_path, monkeypatch, sync_free):
    """A non-finite step changes no weight, moment or average; max_bad_steps in a row stop the run (with
    train.sync_free the skip is decided on the device and the limit checked at log steps)."""
    cfg = tiny_config(synth_dir, tmp_path, "train.max_bad_steps=2", "train.log_every=4",
                      f"train.sync_free={str(sync_free).lower()}")
    tr, te, norm = load_splits(cfg.data, progress=False)
    trainer = train.Trainer(cfg, tr, te, norm, torch.device("cpu"))
    trainer.step()

    def snapshot():
        return [t.clone() for t in (*trainer.net.state_dict().values(), *trainer.ema.model.state_dict().values(),
                                    *(v for s in trainer.opt.state.values() for v in s.values()))]
    good = snapshot()
    monkeypatch.setattr(trainer.diffusion, "loss", lambda pred, *a, **k: pred.flatten(1).mean(1) * float("nan"))
    trainer.step()
    assert all(torch.equal(a, b) for a, b in zip(good, snapshot()))      # skipped, not applied
    assert int(trainer.bad_in_row) == int(trainer.bad_total) == 1
    trainer.step()
    with pytest.raises(train.TrainingError, match="3 non-finite steps in a row at step 4"):
        trainer.step()                                                  # step 4, a log step
    assert all(torch.equal(a, b) for a, b in zip(good, snapshot()))
    run = train.RunDir(tmp_path / "guard")
    monkeypatch.undo()
    assert trainer.save(run) is not None
    last = (run.checkpoints / "last.pt").read_bytes()
    with torch.no_grad():
        next(trainer.net.parameters()).fill_(float("nan"))
    assert trainer.save(run) is None and (run.checkpoints / "last.pt").read_bytes() == last


def test_sync_free_step_matches_the_synced_one(synth_dir, tmp_path):
    """The lever changes where the skip is decided, not the update: fused AdamW and the masked EMA give the
    weights of the host-decided step to float tolerance (one step: after that, Adam's normalisation of
    near-zero gradients magnifies last-bit differences up to the step size)."""
    nets = []
    for sync_free in ("false", "true"):
        cfg = tiny_config(synth_dir, tmp_path, f"train.sync_free={sync_free}")
        tr, te, norm = load_splits(cfg.data, progress=False)
        trainer = train.Trainer(cfg, tr, te, norm, torch.device("cpu"))
        trainer.step()
        nets.append((trainer.net.state_dict(), trainer.ema.model.state_dict()))
    for synced, free in zip(*nets):
        for k, v in synced.items():
            assert torch.allclose(v, free[k], rtol=1e-5, atol=1e-8), k


@pytest.mark.slow
def test_sigterm_saves_and_resumes(synth_dir, tmp_path):
    args = [sys.executable, "-m", "thinfilm.train", "--config", DEFAULT, "--quiet",
            *set_args(tiny_overrides(synth_dir, tmp_path, "train.steps=100000", "train.run_name=sig"))]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": python_path()})
    run = tmp_path / "runs" / "sig"
    deadline = time.time() + 120
    while not list((run / "tb").glob("events*")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "SIGTERM" in out and "--resume" in out
    step = checkpoint.load(run)["step"]
    assert step > 0
    run_train_resume = ["--resume", str(run), "--quiet", "--set", f"train.steps={step + 2}"]
    train.main(run_train_resume)
    assert checkpoint.load(run)["step"] == step + 2


def test_time_limit_saves_and_resume_finishes(run_train, tmp_path, capsys):
    """train.max_minutes ends the run after the step that passes it (the clock includes loading the
    data, so a tiny limit stops after step 1), saved; each resumed command gets the limit afresh."""
    run_train(tmp_path, "train.steps=4", "train.run_name=tl", "train.max_minutes=1e-6")
    run = tmp_path / "runs" / "tl"
    assert checkpoint.load(run)["step"] == 1
    assert "train.max_minutes 1e-06 reached: stopped at step 1 of 4" in capsys.readouterr().out
    train.main(["--resume", str(run), "--quiet"])
    assert checkpoint.load(run)["step"] == 2
    train.main(["--resume", str(run), "--quiet", "--set", "train.max_minutes=0"])
    assert checkpoint.load(run)["step"] == 4


@pytest.mark.slow
def test_ddp_two_processes_match_one(synth_dir, tmp_path):
    """2 gloo processes x batch 2 == 1 process x batch 4: same global batch, same update, same replicas."""
    def launch(prefix, name, batch):
        # v: under x0 a few biases still sit at ~1e-5 after 3 steps, where Adam's sign-sized first
        # updates turn the all-reduce's summation-order rounding into 2e-5 weight differences
        args = prefix + ["-m", "thinfilm.train", "--config", DEFAULT, "--quiet",
                         *set_args(tiny_overrides(synth_dir, tmp_path, "train.steps=3", f"train.run_name={name}",
                                                  f"train.batch_size={batch}", "train.device=cpu",
                                                  'diffusion.prediction="v"'))]
        proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": python_path(), "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        return checkpoint.load(tmp_path / "runs" / name)
    two = launch([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"], "ddp", 2)
    one = launch([sys.executable], "single", 4)
    for name, value in one["model"].items():
        assert torch.allclose(value, two["model"][name], atol=1e-5), name
    # the gradient itself, before Adam (which ignores its scale: summed instead of averaged gradients would
    # give the same weights): each step's gradient norm, as logged, is the single process's
    norms = [grad_norms(tmp_path / "runs" / name / "tb") for name in ("single", "ddp")]
    assert len(norms[0]) == 3 and np.allclose(norms[0], norms[1], rtol=1e-4), norms


def grad_norms(tb: Path) -> list[float]:
    """train/grad_norm at each logged step of a run's tensorboard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tb))
    events.Reload()
    return [e.value for e in events.Scalars("train/grad_norm")]
