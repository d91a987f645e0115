"""The sample CLI: raw conditions in, reproducible frames and an honest manifest out."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from thinfilm import checkpoint, cli, sample

from conftest import COLS, python_path


@pytest.fixture
def ckpt(tiny_ckpt) -> Path:
    return tiny_ckpt


def run(*args):
    sample.main([*map(str, args), "--quiet"])


def frames(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) for p in sorted(folder.glob("[0-9]*.png"))]


def test_manifest_reproduces_conditions(ckpt, synth_dir, tmp_path):
    run("--ckpt", ckpt, "--conditions", synth_dir / "test.csv", "--out", tmp_path, "--n-per-condition", 2,
        "--full-aspect")
    manifest = pd.read_csv(tmp_path / "manifest.csv")
    wanted = pd.read_csv(synth_dir / "test.csv")[COLS].to_numpy()
    assert list(manifest.columns) == ["file"] + COLS + ["seed"]
    assert np.allclose(manifest[COLS].to_numpy(), np.repeat(wanted, 2, axis=0), rtol=1e-8)
    assert len(frames(tmp_path)) == 24 and all(f.shape == (16, 16) for f in frames(tmp_path))
    assert (tmp_path / "grid.png").is_file()
    assert Image.open(tmp_path / "full" / "0000.png").size == (2452, 767)


def test_same_seed_same_frame_at_any_batch_size(ckpt, synth_dir, tmp_path):
    for bs in (1, 8):
        run("--ckpt", ckpt, "--conditions", synth_dir / "test.csv", "--out", tmp_path / f"b{bs}",
            "--batch-size", bs, "--seed", 3, "--eta", 1, "--steps", 5)
    assert all(np.array_equal(a, b) for a, b in zip(frames(tmp_path / "b1"), frames(tmp_path / "b8")))
    run("--ckpt", ckpt, "--conditions", synth_dir / "test.csv", "--out", tmp_path / "other", "--seed", 4,
        "--eta", 1, "--steps", 5)
    assert not np.array_equal(frames(tmp_path / "b1")[0], frames(tmp_path / "other")[0])


def test_config_and_set_change_how_a_checkpoint_draws(ckpt, tmp_path, capsys):
    """--config's [sample] section, then --set sample.*, then the flags, over the checkpoint's own section: the
    closing line says what was drawn, and the frames follow it (the same seed, other steps: other frames)."""
    toml = tmp_path / "quick.toml"
    toml.write_text('[model]\nchannels = [1]\n[sample]\nsteps = 2\nspacing = "trailing"\neta = 0.0\n')
    run("--ckpt", ckpt, "--values", "x3=0.05", "--out", tmp_path / "a", "--config", toml)
    run("--ckpt", ckpt, "--values", "x3=0.05", "--out", tmp_path / "b", "--config", toml, "--set", "sample.steps=3")
    run("--ckpt", ckpt, "--values", "x3=0.05", "--out", tmp_path / "c", "--config", toml, "--set", "sample.steps=3",
        "--steps", "2")
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("wrote")]
    assert ["2 trailing steps, eta 0" in said[0], "3 trailing steps" in said[1], "2 trailing steps" in said[2]] == [
        True] * 3
    a, b, c = (frames(tmp_path / x)[0] for x in "abc")
    assert np.array_equal(a, c) and not np.array_equal(a, b)


def test_a_path_is_one_specimen(ckpt, synth_dir, tmp_path):
    """--path draws every row from the same start noise with a deterministic sampler: two rows with the same
    measurements give the same frame, and each frame is the one drawn alone for its row with that noise;
    --independent gives every row its own noise."""
    table = pd.read_csv(synth_dir / "test.csv")
    path = tmp_path / "path.csv"
    table.iloc[[0, 5, 9, 0]].to_csv(path, index=False)
    run("--ckpt", ckpt, "--path", path, "--out", tmp_path / "film", "--seed", 3)
    film = frames(tmp_path / "film")
    assert np.array_equal(film[0], film[3])              # (the 2-step network hardly tells rows apart)
    assert (tmp_path / "film" / "film.gif").is_file()
    table.iloc[[5]].to_csv(tmp_path / "one.csv", index=False)
    run("--ckpt", ckpt, "--conditions", tmp_path / "one.csv", "--out", tmp_path / "one", "--seed", 3, "--eta", 0)
    assert np.array_equal(frames(tmp_path / "one")[0], film[1])
    run("--ckpt", ckpt, "--path", path, "--out", tmp_path / "each", "--seed", 3, "--independent")
    each = frames(tmp_path / "each")
    assert not np.array_equal(each[0], each[3])


def test_from_frame_draws_the_frames_specimen(ckpt, synth_dir, tmp_path, capsys):
    """--from-frame inverts a real frame under its own measurements and draws every new row from that noise:
    the row of its own measurements is the round trip it reports, rows alike are frames alike, and a film
    of new measurements is written with them printed beside each frame."""
    from thinfilm.data import read_table, resolve_all
    table = pd.read_csv(synth_dir / "test.csv")
    frame = resolve_all(read_table(synth_dir / "test.csv", COLS))[2]
    rows = tmp_path / "rows.csv"
    table.iloc[[2, 8, 2]].to_csv(rows, index=False)
    run("--ckpt", ckpt, "--from-frame", frame, "--measured", f"{synth_dir / 'test.csv'}:3", "--path", rows,
        "--out", tmp_path / "cf")
    drawn = frames(tmp_path / "cf")
    assert np.array_equal(drawn[0], drawn[2])
    assert np.array_equal(drawn[0], np.asarray(Image.open(tmp_path / "cf" / "round_trip.png")))
    said = re.search(r"drawn back, (\d+)% of the pixels within 1 level \(mean error ([\d.]+) levels",
                     capsys.readouterr().out)
    error = np.abs(np.asarray(Image.open(tmp_path / "cf" / "from_frame.png"), np.int16) - drawn[0])
    assert said and f"{np.mean(error <= 1):.0%}" == f"{said[1]}%" and f"{error.mean():.2f}" == said[2]
    film = Image.open(tmp_path / "cf" / "film.gif")
    assert film.n_frames == 3 and film.size[0] > film.size[1]        # the frame and its measurements beside it


def test_keep_grain_puts_back_the_measured_grain(ckpt, synth_dir, tmp_path, capsys):
    from thinfilm.data import load_splits
    from thinfilm.metrics import grain_level
    cfg = checkpoint.load_model(ckpt).config                       # the grain measured when training started
    assert cfg.diffusion.grain == round(grain_level(load_splits(cfg.data, progress=False)[0].frames), 3) > 0
    for keep in ("--keep-grain", "--no-keep-grain"):
        run("--ckpt", ckpt, "--conditions", synth_dir / "test.csv", "--out", tmp_path / keep, "--spacing", "karras",
            "--eta", 1, "--steps", 20, keep)
    assert sum("levels kept" in line for line in capsys.readouterr().out.splitlines()) == 1
    kept, smooth = (np.stack(frames(tmp_path / k)).astype(float) for k in ("--keep-grain", "--no-keep-grain"))
    assert grain_level(kept) > grain_level(smooth) + 0.5


def test_sweep_values_and_shared_noise(ckpt, synth_dir, tmp_path, capsys):
    run("--ckpt", ckpt, "--sweep", "x3=0:0.12:4", "--base", f"{synth_dir / 'test.csv'}:5", "--out", tmp_path)
    manifest = pd.read_csv(tmp_path / "manifest.csv")
    base = pd.read_csv(synth_dir / "test.csv")[COLS].to_numpy()[4]
    assert np.allclose(manifest.x3, [0, 0.04, 0.08, 0.12])
    assert np.allclose(manifest[["x1", "x5", "x8"]].to_numpy(), base[[0, 4, 7]])
    assert manifest.start_seed.nunique() == 1 and manifest.seed.nunique() == 4     # one specimen, 4 exposures
    assert (tmp_path / "strip.png").is_file() and (tmp_path / "film.gif").is_file()
    run("--ckpt", ckpt, "--sweep", "x5=1250:1400:3", "--out", tmp_path / "partial")
    assert "unknown (masked out" in capsys.readouterr().out
    assert pd.read_csv(tmp_path / "partial" / "manifest.csv").x1.isna().all()


def test_partial_values_and_extrapolation_warning(ckpt, tmp_path, capsys):
    run("--ckpt", ckpt, "--values", "x3=0.5,x5=1300", "--out", tmp_path)
    out = capsys.readouterr().out
    assert "warning: x3: 1 value(s) outside the training range" in out and "extrapolation" in out
    assert "unknown (masked out, the model fills them in): x1, x2, x4, x6, x7, x8" in out


def test_img2img_small_strength_stays_close(synth_dir, tmp_path, run_train):
    from thinfilm.data import load_frame, read_table, resolve_all
    # v-prediction: even a barely trained network returns ~x_t at low noise (x0 = sqrt(a) x_t - ...),
    # so what is checked is where image-to-image starts, not what 2 training steps learned
    ckpt = run_train(tmp_path, "train.steps=2", 'diffusion.prediction="v"')
    frame = resolve_all(read_table(synth_dir / "test.csv", COLS))[6]
    tmp_path = tmp_path / "out"
    run("--ckpt", ckpt, "--init-image", frame, "--strength", 0.02, "--out", tmp_path, "--n-per-condition", 3,
        "--values", "x3=0.05")
    ref = load_frame(frame, (678, 0, 767, 2452), 16).astype(float)
    for f in frames(tmp_path):
        assert np.abs(f - ref).mean() < 12                   # 8-bit levels; the model is barely trained
    run("--ckpt", ckpt, "--init-image", frame, "--strength", 1.0, "--out", tmp_path / "far", "--values", "x3=0.05")
    assert np.abs(frames(tmp_path / "far")[0] - ref).mean() > np.abs(frames(tmp_path)[0] - ref).mean()


def test_bad_inputs_are_one_line_errors(ckpt, synth_dir, tmp_path, capsys):
    bad_cols = tmp_path / "cols.csv"
    bad_cols.write_text("filepath,x1,x2\na,1,2\n")
    nan = tmp_path / "nan.csv"
    nan.write_text(",".join(COLS) + "\n1,2,3,4,5,6,7,8\n1,2,,4,5,6,7,8\n")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else/9", "model": {}}, other)
    from thinfilm.data import read_table, resolve_all
    frame = resolve_all(read_table(synth_dir / "test.csv", COLS))[0]
    measured = f"{synth_dir / 'test.csv'}:1"
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(small)
    cases = [
        (["--ckpt", ckpt, "--conditions", bad_cols], "missing column(s) x3"),
        (["--ckpt", ckpt, "--conditions", nan], "line 3 column x3"),
        (["--ckpt", ckpt, "--values", "x9=1"], "COLUMN one of x1, x2"),
        (["--ckpt", ckpt, "--values", "x1=abc"], "x1='abc': not a number"),
        (["--ckpt", ckpt, "--values", "x1=nan"], "give a finite number"),
        (["--ckpt", ckpt, "--sweep", "x3=0:1"], "COLUMN=START:STOP:COUNT"),
        (["--ckpt", ckpt], "no conditions"),
        (["--ckpt", ckpt, "--values", "x1=1", "--strength", "0", "--init-image", "x.png"], "--strength 0.0"),
        (["--ckpt", junk, "--values", "x1=1"], "not a readable thinfilm checkpoint"),
        (["--ckpt", other, "--values", "x1=1"], "checkpoint format 'something-else/9'"),
        (["--ckpt", tmp_path / "none.pt", "--values", "x1=1"], "checkpoint not found"),
        (["--ckpt", ckpt, "--values", "x1=1", "--steps", "0"], "sample.steps = 0: give 1 or more"),
        (["--ckpt", ckpt, "--values", "x1=1", "--set", "train.steps=3"], "--set train.steps=3: give sample.KEY"),
        (["--ckpt", ckpt, "--values", "x1=1", "--set", "sample.stepz=3"], "unknown key sample.stepz"),
        (["--ckpt", ckpt, "--values", "x1=1", "--sampler", "heun", "--eta", "1"], "\"heun\" is deterministic"),
        (["--ckpt", ckpt, "--values", "x1=1", "--device", "gpu7"], "--device 'gpu7'"),
        (["--ckpt", ckpt, "--values", "x1=1", "--device", "cpu", "--cuda-graph"], "--cuda-graph: needs a CUDA"),
        (["--ckpt", ckpt, "--values", "x1=1", "--guidance", "2", "--guidance-fields", "x5,x9"],
         "sample.guidance_fields: x9 not in data.columns"),
        (["--ckpt", ckpt, "--values", "x1=1", "--guidance-interval", "700"], "give LO:HI timesteps"),
        (["--ckpt", ckpt, "--values", "x1=1", "--guidance-interval", "700:100"],
         "sample.guidance_interval = [700, 100]"),
        (["--ckpt", ckpt, "--values", "x1=1", "--from-frame", frame], "needs --measured"),
        (["--ckpt", ckpt, "--values", "x1=1", "--measured", "x1=1"], "needs --measured"),
        (["--ckpt", ckpt, "--from-frame", frame, "--measured", measured], "give the new measurements"),
        (["--ckpt", ckpt, "--values", "x1=1", "--from-frame", frame, "--measured", measured, "--independent"],
         "that frame's specimen"),
        (["--ckpt", ckpt, "--values", "x1=1", "--from-frame", frame, "--measured", "x1=1,x2=3"],
         "--measured: x3, x4, x5, x6, x7, x8 missing"),
        (["--ckpt", ckpt, "--values", "x1=1", "--from-frame", small, "--measured", measured], "lies outside the frame"),
        (["--ckpt", ckpt, "--values", "x1=1", "--from-frame", junk, "--measured", measured], "cannot read the frame"),
        (["--ckpt", ckpt, "--values", "x1=1", "--from-frame", frame, "--measured", f"{measured}9"],
         "has data rows 1..12"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as exit_:
            cli(sample.main, [*map(str, args), "--out", str(tmp_path / "o"), "--quiet"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and message in err, (args, err)
        assert err.startswith("error: ") and err.count("\n") == 1, err
    # and as a real process: exit status 2, one line, no traceback
    proc = subprocess.run([sys.executable, "-m", "thinfilm.sample", "--ckpt", str(junk), "--values", "x1=1",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": python_path()})
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_a_film_frame_is_its_own_exposure_of_one_specimen(ckpt, synth_dir):
    """One specimen with a stochastic tail (`Plan.one_specimen`): the frames share their start and differ by
    each frame's own noise below the tail; a frame of the film is the frame drawn alone with its seed and the
    start, at any batch size; tail 0 draws the still film, the same frames for any exposure seeds."""
    from thinfilm.data import read_table
    from thinfilm.diffusion import GaussianDiffusion
    from thinfilm.sampling import Execution, Plan, generate, start_noise

    loaded = checkpoint.load_model(ckpt)
    d, cpu = GaussianDiffusion.from_config(loaded.config), Execution(torch.device("cpu"))
    cond = loaded.normalizer.encode(read_table(synth_dir / "test.csv", COLS).values[:4])
    start = start_noise(loaded.net.frame_shape, [11])
    plan = Plan.from_config(loaded.config)._replace(steps=12, spacing="karras", batch_size=4)
    film = generate(loaded.net, d, cond, [20, 21, 22, 23], plan.one_specimen(100), cpu, start=start)
    alone = generate(loaded.net, d, cond[2:3], [22], plan.one_specimen(100)._replace(batch_size=1), cpu, start=start)
    assert torch.allclose(film[2:3], alone, atol=1e-5)                  # batch 4 and 1: the same up to rounding
    again = generate(loaded.net, d, cond[:1].expand(2, -1), [20, 30], plan.one_specimen(100), cpu, start=start)
    still = generate(loaded.net, d, cond[:1].expand(2, -1), [20, 30], plan.one_specimen(0), cpu, start=start)
    other = generate(loaded.net, d, cond[:1], [30], plan, cpu)[0]                  # another specimen: its own start
    assert torch.allclose(again[0], film[0], atol=1e-5) and torch.equal(still[0], still[1])
    assert 1e-3 < (again[0] - again[1]).abs().mean() < (again[0] - other).abs().mean()  # exposures differ, less
