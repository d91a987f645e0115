"""The built-in simulator: the seed's format, determinism, the stated relations, visible features."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from thinfilm import synthetic as S
from thinfilm.data import load_frame, read_table, resolve_all, series_of


def test_format_is_the_researchers(synth_dir):
    train = pd.read_csv(synth_dir / "train.csv")
    test = pd.read_csv(synth_dir / "test.csv")
    assert list(train.columns) == ["filepath"] + [f"x{i}" for i in range(1, 9)]
    assert train.filepath.iloc[0].startswith("C:\\dev\\dataset\\") and "\\data" in train.filepath.iloc[0]
    assert len(train) == 36 and len(test) == 12
    assert not set(train.filepath.map(series_of)) & set(test.filepath.map(series_of))
    files = resolve_all(read_table(synth_dir / "train.csv", [f"x{i}" for i in range(1, 9)]))
    image = Image.open(files[0])
    assert image.size == (2452, 2056) and image.mode == "L"


def test_deterministic_by_seed():
    a, b, c = S.simulate(2, 30, 7), S.simulate(2, 30, 7), S.simulate(2, 30, 8)
    assert np.array_equal(a.values, b.values) and not np.array_equal(a.values, c.values)
    f1 = S.render(a, 20, np.random.default_rng(0))
    f2 = S.render(b, 20, np.random.default_rng(0))
    assert np.array_equal(f1, f2)


def test_relations_between_columns():
    for index in range(1, 6):
        s = S.simulate(index, 60, 0)
        x1, x2, x3, x4, x5, x6, x7, x8 = s.values.T
        assert np.allclose(x2, 2000 * x1)
        assert np.allclose(x5 / (1 + x3), x5[0] / (1 + x3[0]))            # one d0A per series
        assert np.allclose(x6 / (1 + x4), x6[0] / (1 + x4[0]))
        assert np.allclose(x7[1:], -x4[:-1] / x3[:-1])                      # lagged strain ratio
        assert np.all(np.diff(x8) >= 0) and x8[-1] - x8[0] > 0.3
        peak = x2.max()
        assert 40 < peak < 42 and 0.02 < x3[np.argmax(x2)] < 0.035          # the real tests' peak
        broken = s.broken
        assert np.abs(x2[broken]).max() < 1.5 and 0.08 <= x3[~broken].max() <= 0.125 + 1e-9
        assert 30 < (x5[broken][0] - x5[~broken][-1]) < 45                  # recoil at fracture


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Series 1 (40 frames, the last few broken) rendered and loaded like the training data, at 64 px."""
    s = S.simulate(1, 40, 0)
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("frames") / "f.tif"
    frames = []
    for i in range(40):
        Image.fromarray(S.render(s, i, rng)).save(path)
        frames.append(load_frame(path, S.ROI, 64))
    return s, np.stack(frames)


def test_measure_reads_back_what_drives_the_frame(rendered):
    s, frames = rendered
    m = S.measure(frames)
    assert np.corrcoef(m[:, 0], s.sep_a)[0, 1] > 0.98 and np.abs(m[:, 0] - s.sep_a).max() < 15
    assert np.corrcoef(m[:, 1], s.sep_b)[0, 1] > 0.98
    whole = ~s.broken
    assert np.corrcoef(m[whole, 2], s.plastic[whole])[0, 1] > 0.95       # crazes follow plastic strain
    assert m[s.broken, 3].min() > 3 * m[~s.broken, 3].max()               # the fracture gap
    assert np.array_equal(S.broken_frames(m[:, 3]), s.broken)
    assert np.corrcoef(m[:, 4], -s.strain)[0, 1] > 0.9                    # Poisson contraction
    assert S.residual_noise(frames).mean() < 1.0


def test_fidelity_scores_a_missing_gap(rendered):
    s, frames = rendered
    same = S.fidelity(frames, frames)
    assert all(same[f"corr_{k}"] == pytest.approx(1.0) for k in S.FEATURES if k != "film")
    assert "corr_film" not in same                         # no brightness: the film's level is texture only
    assert same["corr_fracture"] == pytest.approx(same["ceiling_fracture"])
    assert same["ceiling_gap"] == pytest.approx(same["ceiling_fracture"] ** 2)
    assert same["level_error"] == 0 and same["noise_generated"] == same["noise_real"]
    first = int(np.flatnonzero(s.broken)[0])
    gapless = frames.copy()
    gapless[first] = frames[first - 1]                     # the first broken frame drawn as the one before
    missed = S.fidelity(gapless, frames)
    assert missed["corr_fracture"] < same["ceiling_fracture"] - 0.1
    assert missed["corr_sep_a"] > 0.95                     # only the gap is wrong


def test_residual_noise_and_level_error_separate_grain_from_offset():
    rng = np.random.default_rng(0)
    real = np.full((4, 64, 64), 140.0)
    grain = real + rng.normal(0, 3, real.shape)
    offset = real + np.array([2.0, -2.0, 2.0, -2.0])[:, None, None]
    assert abs(S.residual_noise(grain).mean() - 3) < 0.6 and S.level_error(grain, real) < 1.0
    assert S.residual_noise(offset).max() == 0 and S.level_error(offset, real) == pytest.approx(2.0)


def test_gap_ceilings_are_what_an_ideal_sampler_scores():
    # frames of 40 specimens, the last 4 of each broken with a gap whose width is drawn per specimen
    rng = np.random.default_rng(0)
    broken = np.tile(np.arange(50) >= 46, 40)

    def draw():  # what the conditions command (broken or not) and nothing else: widths are fresh
        width = np.repeat(rng.uniform(4.0, 10.0, 40), 50)
        return np.where(broken, width, rng.uniform(0.0, 0.8, broken.size))

    real = draw()
    ideal = np.mean([np.corrcoef(draw(), real)[0, 1] for _ in range(400)])
    ceiling = S.gap_ceiling(real)
    assert 0.8 < ceiling < 0.99 and abs(ideal - ceiling) < 0.01
    # against what the conditions command (fracture or not) the ideal sampler scores r(real gap, broken)
    commanded = S.broken_frames(real)
    assert np.array_equal(commanded, broken)
    ideal = np.mean([np.corrcoef(draw(), commanded)[0, 1] for _ in range(400)])
    assert abs(ideal - np.sqrt(ceiling)) < 0.01
    missing = draw()
    missing[np.flatnonzero(broken)[::8]] = 0.3                  # one broken frame in 8 drawn without its gap
    assert np.corrcoef(missing, commanded)[0, 1] < np.sqrt(ceiling) - 0.05
    assert S.gap_ceiling(np.full(10, 0.3)) != S.gap_ceiling(np.full(10, 0.3))        # nothing broken: NaN
    assert S.gap_ceiling(np.where(broken, 7.0, 0.0)) == pytest.approx(1.0)             # one width: r = 1 reachable


def test_texture_changes_texture_and_nothing_the_conditions_drive(tmp_path):
    """Series 1 rendered with and without the camera texture: same features to a tolerance, another grain."""
    plain = S.simulate(1, 40, 0)
    textured = plain._replace(texture=S.texture_field(S.TEXTURES["camera"], np.random.default_rng([0, 1, 2])))
    frames = {}
    for name, series in (("none", plain), ("camera", textured)):
        loaded = []
        for i in range(0, 40, 3):
            Image.fromarray(S.render(series, i, np.random.default_rng(i))).save(tmp_path / "f.tif")
            loaded.append(load_frame(tmp_path / "f.tif", S.ROI, 64))
        frames[name] = np.stack(loaded)
    diff = np.abs(S.measure(frames["camera"]) - S.measure(frames["none"]))
    assert diff[:, :2].max() < 8 and diff[:, 2:4].max() < 1.5 and diff[:, 4].max() < 1      # px, levels, px
    assert np.array_equal(S.broken_frames(S.measure(frames["camera"])[:, 3]), plain.broken[::3])
    mask = S.flat_mask(64)
    from thinfilm.metrics import grain
    assert grain(frames["none"], mask).mean() < 1.0 < 3.0 < grain(frames["camera"], mask).mean() < 6.0


def test_measure_reads_the_same_marks_in_original_pixels_at_any_frame_shape(synth_dir):
    """The same camera frames at 96 x 96 and at 32 x 96 (the ROI's aspect, a third of the pixels): rows and
    columns are scaled to the ROI each on their own, so the mark separations read the same in original
    pixels (within 1 px; both within 3 px of the truth, x5 / x6) and the strip's height within half a row
    of the coarser frame (767 / 32 / 2 = 12 px). A reading that scaled rows by the width would be 3x off."""
    table = read_table(synth_dir / "test.csv", [f"x{i}" for i in range(1, 9)])
    files = resolve_all(table)
    square, wide = (S.measure(np.stack([load_frame(f, S.ROI, size) for f in files])) for size in (96, [32, 96]))
    assert np.abs(square[:, :2] - wide[:, :2]).max() < 1.0
    assert np.abs(wide[:, :2] - table.values[:, 4:6]).mean(0).max() < 3.0
    height = S.FEATURES.index("height")
    assert np.abs(square[:, height] - wide[:, height]).max() < 767 / 32 / 2


def test_precision_per_stage_and_stress_band_counts_the_training_frames():
    """`stages` from the values alone (the peak load's strain, then the load's fall), in any row order; and
    `density_bands` gives each band its training frames, its conditions and the ratio of the errors there:
    generated frames twice as far off as the reading in the rising stage, as far off after it."""
    from thinfilm.synthetic import STAGES, Training, density_bands, stages

    cols = [f"x{i}" for i in range(1, 9)]
    load, strain = [1, 2, 3, 2, 0.05], [0, 0.01, 0.02, 0.03, 0.04]
    values = np.zeros((10, 8))
    values[:, 0], values[:, 2] = load * 2, strain * 2
    values[:, 1] = values[:, 0] * 10                                           # stress
    groups = ["a"] * 5 + ["b"] * 5
    order = np.random.default_rng(0).permutation(10)
    assert list(stages(values, groups, cols)) == [0, 0, 0, 1, 2] * 2
    assert list(stages(values[order], np.array(groups)[order], cols)) == list(np.array([0, 0, 0, 1, 2] * 2)[order])
    real_err = np.array([1.0, -1, 1, 2, -3] * 2)
    matched = np.repeat(np.arange(10), 2)                                       # 2 generated frames per condition
    stage = stages(values, groups, cols)
    gen_err = real_err[matched] * np.where(stage[matched] == 0, 2.0, 1.0)
    train = Training(np.concatenate([values, values[:3]]), groups + ["c"] * 3)  # 8 + 3 rising frames
    bands = density_bands({"x5": (gen_err, real_err)}, matched, values, groups, train, cols)
    by_stage = {b["band"]: b for b in bands if b["by"] == "stage"}
    assert list(by_stage) == list(STAGES)
    assert [by_stage[s]["train_frames"] for s in STAGES] == [9, 2, 2] and by_stage["rising"]["conditions"] == 6
    assert by_stage["rising"]["x5"]["ratio"] == 2.0 and by_stage["broken"]["x5"]["ratio"] == 1.0
    stress = [b for b in bands if b["by"] == "stress"]
    assert sum(b["conditions"] for b in stress) == 10 and sum(b["train_frames"] for b in stress) == 13
