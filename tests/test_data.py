"""The data pipeline: CSVs, rebasing, ROI, normaliser, cache, split, inspect, and every bad input."""
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from thinfilm.config import load_config
from thinfilm.data import (
    DataError,
    Normalizer,
    after_fracture,
    cached_frames,
    frame_order,
    load_frame,
    read_table,
    resolve,
    resolve_all,
    series_of,
    split_series,
    to_network,
    to_uint8,
)
from thinfilm.prepare import inspect

from conftest import DEFAULT, python_path

COLS = [f"x{i}" for i in range(1, 9)]


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_rebase_windows_and_relative_paths(tmp_path):
    (tmp_path / "data1").mkdir()
    frame = tmp_path / "data1" / "0001.tif"
    Image.new("L", (8, 8)).save(frame)
    assert resolve("C:\\dev\\dataset\\ThinFilm\\PMMA\\data1\\0001.tif", tmp_path) == frame
    assert resolve("/home/someone/PMMA/data1/0001.tif", tmp_path) == frame
    assert resolve("data1/0001.tif", tmp_path) == frame
    assert resolve("data1\\0001.tif", tmp_path) == frame
    assert resolve("C:\\dev\\data1\\0002.tif", tmp_path) is None
    assert resolve(str(frame), tmp_path / "elsewhere") == frame        # an absolute path that exists here


def test_missing_files_reported_at_once(tmp_path):
    rows = "".join(f"C:\\x\\data1\\{i:04d}.tif,{','.join(['1'] * 8)}\n" for i in range(5))
    csv = write_csv(tmp_path / "t.csv", "filepath," + ",".join(COLS) + "\n" + rows)
    with pytest.raises(DataError) as err:
        resolve_all(read_table(csv, COLS))
    msg = str(err.value)
    assert "5 of 5 frames not found" in msg and "line 2: C:\\x\\data1\\0000.tif" in msg and "data.root" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("text,message", [
    ("filepath,x1,x2\na.tif,1,2\n", "missing column(s) x3, x4, x5, x6, x7, x8"),
    ("filepath," + ",".join(COLS) + "\n", "no rows below the header"),
    ("", "not a readable CSV"),
    ("filepath," + ",".join(COLS) + "\na.tif,1,2,3,4,5,6,7,8\nb.tif,1,,3,4,5,6,7,8\n", "line 3 column x2 ('')"),
    ("filepath," + ",".join(COLS) + "\na.tif,1,2,3,4,5,6,7,NaN\n", "line 2 column x8 ('NaN')"),
    ("filepath," + ",".join(COLS) + "\na.tif,1,2,3,abc,5,6,7,8\n", "line 2 column x4 ('abc')"),
])
def test_bad_csvs(tmp_path, text, message):
    csv = write_csv(tmp_path / "bad.csv", text)
    with pytest.raises(DataError) as err:
        read_table(csv, COLS)
    assert message in str(err.value) and str(csv) in str(err.value)


def test_other_material_columns(tmp_path):
    cols = ["Time", "Load", "Stress", "Strain A", "Strain B", "Distance A", "Distance B", "Poisson's ratio",
            "Displacement", "Displacement velocity"]
    row = ",".join(map(str, range(10)))
    csv = write_csv(tmp_path / "m.csv", "filepath," + ",".join(cols) + "\na.tif," + row + "\n")
    assert read_table(csv, cols).values.shape == (1, 10)


def test_roi_crop_and_resize_against_a_hand_made_image(tmp_path):
    image = np.zeros((40, 60), np.uint8)
    image[10:30, 20:60] = 200                 # the ROI (top 10, left 20, 20 x 40) is uniform 200 ...
    image[10:20, 20:40] = 100                 # ... except its top-left quarter
    Image.fromarray(image).save(tmp_path / "f.tif")
    out = load_frame(tmp_path / "f.tif", (10, 20, 20, 40), 4)
    assert out.dtype == np.uint8 and out.shape == (4, 4)
    assert np.array_equal(out, np.array([[100, 100, 200, 200]] * 2 + [[200] * 4] * 2))


def test_sixteen_bit_frames_scale_not_clip(tmp_path):
    image = np.full((8, 8), 65535, np.uint16)
    image[:, :4] = 32768
    Image.fromarray(image).save(tmp_path / "f16.tif")
    out = load_frame(tmp_path / "f16.tif", (0, 0, 8, 8), 2)
    assert out.tolist() == [[128, 255], [128, 255]]


def test_roi_outside_frame_is_an_error(tmp_path):
    Image.new("L", (100, 50)).save(tmp_path / "small.tif")
    with pytest.raises(DataError, match=r"small.tif: data.roi \[678, 0, 767, 2452\].*100x50"):
        load_frame(tmp_path / "small.tif", (678, 0, 767, 2452), 64)


def test_network_space_round_trip():
    frames = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    x = to_network(frames)
    assert x.shape == (1, 1, 16, 16) and x.min() == -1 and x.max() == 1
    assert np.array_equal(to_uint8(x), frames)


@pytest.mark.parametrize("kind", ["zscore", "minmax", "none"])
def test_normalizer_round_trip(kind):
    rng = np.random.default_rng(0)
    values = rng.normal([0.015, 30, 0.03, 0.08, 1314, 1375, -2, 12.6], [0.006, 12, 0.025, 0.09, 40, 100, 2, 0.5],
                        size=(500, 8))
    values[:, 6] = 3.0                                                  # a constant column
    norm = Normalizer.fit(values, COLS, kind)
    z = norm.encode(values)
    assert np.allclose(norm.decode(z), values, rtol=1e-6, atol=1e-6)
    assert np.allclose(z[:, 6].numpy(), 0 if kind != "none" else 3.0)  # constant column: no division by 0
    if kind == "zscore":
        assert np.allclose(z.mean(0)[:6], 0, atol=1e-5) and np.allclose(z.std(0, unbiased=False)[:6], 1, atol=1e-4)
    if kind == "minmax":
        assert z[:, :6].min() >= -1 - 1e-6 and z[:, :6].max() <= 1 + 1e-6
    again = Normalizer.from_dict(norm.to_dict())
    assert again == norm
    partial = values[:1].copy()
    partial[0, 2] = np.nan
    encoded = norm.encode(partial)
    assert torch.isnan(encoded[0, 2]) and not torch.isnan(encoded[0, 3])


def test_frames_of_any_shape_are_cached_apart(synth_dir, tmp_path):
    """96 x 96 and 32 x 96 frames of the same split: two caches (keys and names differ), each of its shape, and
    the 32 x 96 frame is the camera frame's ROI area-resized to that shape (the same as loading it alone)."""
    table = read_table(synth_dir / "test.csv", [f"x{i}" for i in range(1, 9)])
    files = resolve_all(table)
    roi = (678, 0, 767, 2452)
    square = cached_frames(table, files, roi, 96, tmp_path, progress=False)
    wide = cached_frames(table, files, roi, [32, 96], tmp_path, progress=False)
    assert square.shape[1:] == (96, 96) and wide.shape[1:] == (32, 96)
    names = sorted(p.name for p in tmp_path.glob("*.npy"))
    assert len(names) == 2 and any("-96px-" in n for n in names) and any("-32x96px-" in n for n in names)
    assert np.array_equal(wide[3], load_frame(files[3], roi, [32, 96]))


def test_cache_hit_and_rebuild(synth_dir, tmp_path):
    table = read_table(synth_dir / "test.csv", COLS)
    files = resolve_all(table)
    cache = tmp_path / "cache"
    first = np.array(cached_frames(table, files, (678, 0, 767, 2452), 16, cache, progress=False))
    (entry,) = cache.glob("*.npy")
    mtime = entry.stat().st_mtime_ns
    again = cached_frames(table, files, (678, 0, 767, 2452), 16, cache, progress=False)
    assert isinstance(again, np.memmap) and np.array_equal(first, again) and entry.stat().st_mtime_ns == mtime
    # an edited frame gives a new key: rebuilt, and the stale cache is gone
    copy_dir = tmp_path / "copy"
    import shutil
    shutil.copytree(synth_dir, copy_dir)
    table = read_table(copy_dir / "test.csv", COLS)
    files = resolve_all(table)
    cached_frames(table, files, (678, 0, 767, 2452), 16, cache, progress=False)
    before = set(cache.glob("*.npy"))
    assert entry in before and len(before) == 2          # another dataset's test.csv keeps its own cache
    time.sleep(0.01)
    Image.fromarray(np.zeros((2056, 2452), np.uint8)).save(files[0])
    changed = cached_frames(table, files, (678, 0, 767, 2452), 16, cache, progress=False)
    after = set(cache.glob("*.npy"))
    assert changed[0].max() == 0 and after != before and len(after) == len(before)
    # an edited CSV too
    text = (copy_dir / "test.csv").read_text().replace(",", " ,", 1)
    (copy_dir / "test.csv").write_text(text)
    cached_frames(read_table(copy_dir / "test.csv", COLS), files, (678, 0, 767, 2452), 16, cache, progress=False)
    assert set(cache.glob("*.npy")) != after


def test_split_keeps_series_disjoint(tmp_path):
    assert split_series(["data1", "data2", "data3"]) == ["data2"]               # the researcher's rule
    held = split_series([f"data{i}" for i in range(1, 11)])
    assert len(held) == 2
    rows = [f"C:\\d\\data{s}\\{i:04d}.tif,{','.join(['1'] * 8)}" for s in (1, 2, 3) for i in range(4)]
    csv = write_csv(tmp_path / "all.csv", "filepath," + ",".join(COLS) + "\n" + "\n".join(rows) + "\n")
    subprocess.run([sys.executable, "-m", "thinfilm.prepare", "split", "--csv", str(csv)], check=True,
                   capture_output=True)
    train, test = pd.read_csv(tmp_path / "all_train.csv"), pd.read_csv(tmp_path / "all_test.csv")
    series = lambda t: {p.split("\\")[-2] for p in t.filepath}  # noqa: E731
    assert series(train) == {"data1", "data3"} and series(test) == {"data2"} and len(train) + len(test) == 12


def test_after_fracture_finds_the_broken_frames(synth_dir):
    from thinfilm.synthetic import simulate
    table = read_table(synth_dir / "train.csv", COLS)
    series = [series_of(p) for p in table.paths]
    truth = np.concatenate([simulate(int(name[4:]), 12, 0).broken for name in dict.fromkeys(series)])
    assert truth.sum() >= 9 and np.array_equal(after_fracture(table, "x1"), truth)
    # idle frames before loading have the same ~0 load and are not after fracture; a NaN load is unbroken
    values = table.values.copy()
    values[np.flatnonzero(truth)[0], 0] = np.nan
    assert after_fracture(dataclasses.replace(table, values=values), "x1").sum() == truth.sum() - 1
    # a CSV that lists the frames shuffled: time order comes from the file names (0009 before 0010)
    order = np.random.default_rng(0).permutation(len(table))
    shuffled = dataclasses.replace(table, paths=[table.paths[i] for i in order], values=table.values[order])
    assert np.array_equal(after_fracture(shuffled, "x1"), truth[order])
    assert sorted(["d\\10.tif", "d\\9.tif", "d\\0011.tif"], key=frame_order) == ["d\\9.tif", "d\\10.tif", "d\\0011.tif"]


def test_inspect_under_another_root(synth_dir, tmp_path):
    """A seed-format CSV elsewhere whose Windows paths live under data.root."""
    for name in ("train.csv", "test.csv"):
        (tmp_path / name).write_text((synth_dir / name).read_text())
    cfg = load_config(DEFAULT, [f"data.train_csv={tmp_path / 'train.csv'}",
                                                   f"data.test_csv={tmp_path / 'test.csv'}", f"data.root={synth_dir}",
                                                   "data.resolution=32"]).data
    report = inspect(cfg, tmp_path / "preview.png")
    assert "train:" in report and "36 rows, 3 series" in report and "frames: all 48 found" in report
    assert Image.open(tmp_path / "preview.png").size == (8 * 32, 32)
    cfg.root = str(tmp_path)
    with pytest.raises(DataError, match="36 of 36 frames not found"):
        inspect(cfg, tmp_path / "preview.png")


def test_cli_errors_are_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": python_path()}
    bad = write_csv(tmp_path / "bad.csv", "filepath,x1\na.tif,1\n")
    default = str(Path(__file__).parents[1] / "experiments" / "default.toml")
    for args in (["inspect", "--config", default, "--set", f"data.train_csv={bad}", "--set", "data.synthetic=false"],
                 ["inspect", "--config", default, "--set", "train.nope=1"],
                 ["split", "--csv", str(tmp_path / "none.csv")]):
        proc = subprocess.run([sys.executable, "-m", "thinfilm.prepare", *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr


def test_synth_all_writes_one_evaluation_table(tmp_path, capsys):
    from thinfilm.prepare import main
    main(["synth", "--out", str(tmp_path), "--series", "2", "--frames", "12", "--seed", "99", "--all"])
    table = pd.read_csv(tmp_path / "all.csv")
    assert len(table) == 24 and table.filepath.str.contains("data2").sum() == 12
    assert not (tmp_path / "train.csv").exists() and "all.csv" in capsys.readouterr().out


def test_output_into_a_closed_pipe_is_not_a_traceback():
    """`python -m thinfilm... | head -1`: the reader stops early; the command stops quietly."""
    code = "from thinfilm import cli\ndef main(argv):\n    for i in range(200000): print(i)\ncli(main)"
    env = {**os.environ, "PYTHONPATH": python_path()}
    proc = subprocess.run(f"{sys.executable} -c '{code}' | head -1", shell=True, capture_output=True, text=True,
                          env=env)
    assert proc.stdout == "0\n" and "Traceback" not in proc.stderr and proc.stderr == "", proc.stderr
