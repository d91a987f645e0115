"""The built-in tensile-test simulator, its frame renderer, and the measurement of what a frame shows.

Each series is one PMMA film specimen pulled to fracture (calibrated on the researcher's real tests):
an idle period, a near-linear rise to a stress peak of ~41 MPa at strain ~0.027, softening towards ~36 MPa with the
strain rate doubled after the peak, fracture at strain 0.08..0.125 with a 35..42 px recoil of both
gauge distances, and a few frames after it. Measurements follow the researcher's relations:
x2 = 2000 * x1 (stress = load / 5e-4 mm^2), x3 = (x5 - d0A) / d0A, x4 = (x6 - d0B) / d0B,
x7 = -x4 / x3 of the *previous* frame, x8 = stage position (+ a constant step per frame).

Frames are full 2452 x 2056 8-bit camera images; the specimen lies in the ROI rows 678..1444.

What drives what you see (the rest is invisible by construction):

| value         | visible feature                                                                   |
|---------------|-----------------------------------------------------------------------------------|
| x5            | horizontal distance between the two dark marks of pair A (upper band of the strip) |
| x6            | the same for pair B (lower band)                                                  |
| x3, x4        | through x5, x6 (d0 differs per series) and through crazes and strip height        |
| x1, x2 with x3| crazes: bright bands across the strip whose total opening is the plastic strain   |
|               | x3 - x2 / E, so they appear near the stress peak and widen; after fracture (load  |
|               | ~ 0) a dark gap through the strip                                                 |
| x3            | strip height contracts by Poisson's ratio 0.38 times the strain                    |
| x2 (option)   | `brightness` > 0: the film's level rises by that many 8-bit levels per MPa of     |
|               | stress (light through a stressed film, as in textured frames from outside the     |
|               | project), under a lamp that flickers by `FLICKER` levels from frame to frame: a   |
|               | global intensity a sampler must get right to a fraction of a level                |
| x7            | invisible: a lagged ratio of label noise                                          |
| x8            | invisible: an absolute stage offset per series                                    |
| (none)        | texture (`texture="camera"`): a speckle pattern and film-thickness variations     |
|               | fixed on each specimen, stretched with the strain x3 and contracted with the      |
|               | height; drawn per specimen, so no condition says what it looks like               |

Texture levels (`TEXTURES`), in 8-bit levels of the full-size frame:
- "none": sensor noise only (Gaussian, std 3 per camera pixel): ~0.5 levels left at 64 px.
- "camera": as a DIC-speckled film filmed by a 5-megapixel camera: dark spray-paint speckles covering
  45 % of the film, 3-10 px across and 50 levels deep; thickness variations of 3 levels std with a
  correlation length of ~60 px; an optical blur (Gaussian, sigma 1 px) on both; the same sensor noise.
  At 64 px the strip between the marks then has a high-pass std (pixel minus its 3x3 mean) of ~4
  levels, as textured tensile-test frames from outside this project do (~5 levels); at 256 / 512 px
  more of the speckle survives.

`measure()` reads the features back from ROI frames at any resolution; `FEATURES` names them;
`exact_reading()` turns them into the measurements that drew them (x5, x6, the strains, the stress through
the brightness), the reading a judge of generated frames stands in for.
Not simulated: marker-tracking failures (the real data1's x6 jumps), grips.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from thinfilm.metrics import (
    excess_interval,
    flat_region,
    levels,
    neighbour_mean,
    ratio_interval,
    region_mask,
    texture,
)

WIDTH, HEIGHT = 2452, 2056
ROI = (678, 0, 767, 2452)                     # top, left, height, width
CENTER_ROW = ROI[0] + ROI[2] / 2              # the strip's axis
HALF_HEIGHT = 280.0                           # unstrained strip half-height, px
POISSON = 0.38
MARK_WIDTH = 44.0
BACKGROUND, STRIP, WHITE, MARK_DEPTH = 50.0, 140.0, 90.0, 110.0
AREA_FACTOR = 2000.0                          # x2 = 2000 * x1
FLICKER = 0.4                                 # with `brightness`: the lamp's frame-to-frame std, 8-bit levels
LOAD_STEP = 8.19e-6                           # load quantisation, N
FEATURES = ("sep_a", "sep_b", "whitening", "gap", "height", "film")
# the strip between the marks, outside the craze zone: rows and columns as fractions of the ROI
FLAT_ROWS, FLAT_COLS = (0.42, 0.58), ((0.28, 0.38), (0.62, 0.72))
# where the film's own level is read: the same rows (between the mark bands), every column outside the
# craze zone that is not at the frame's edge
FILM_COLS = ((0.05, 0.33), (0.67, 0.95))


class Texture(NamedTuple):
    """What a camera sees on the film beyond the drawn geometry (8-bit levels, full-size pixels)."""
    speckle_depth: float        # how much darker a paint speckle is
    speckle_cover: float        # fraction of the film they cover
    speckle_sigma: float        # correlation of the noise thresholded into speckles, px (-> 3-10 px blobs)
    film_std: float             # thickness variation
    film_sigma: float           # ... its correlation length, px
    blur: float                 # optical blur of the texture (Gaussian sigma, px)


TEXTURES: dict[str, Texture | None] = {
    "none": None,
    "camera": Texture(speckle_depth=50.0, speckle_cover=0.45, speckle_sigma=1.5, film_std=3.0, film_sigma=60.0,
                      blur=1.0),
}
PAD = 32                                      # texture rows beyond the ROI (the strip's material contracts)


class Series(NamedTuple):
    """One simulated specimen: per-frame true state and the 8 measurements, shape [N] each."""
    strain: np.ndarray          # true gauge strain (A)
    plastic: np.ndarray         # plastic strain driving the crazes
    broken: np.ndarray          # bool, after fracture
    sep_a: np.ndarray           # rendered mark separations, px (= x5, x6)
    sep_b: np.ndarray
    values: np.ndarray          # [N, 8] x1..x8
    center: float               # specimen centre column
    crazes: np.ndarray          # [K] craze sites, relative position in the gauge (-0.35..0.35)
    onsets: np.ndarray          # [K] plastic strain at which each craze opens
    d0: float
    gap_width: float
    texture: np.ndarray | None = None   # [ROI height + 2 PAD, WIDTH] levels on the unstrained film, zero mean


def stress_strain(strain: np.ndarray, modulus: float, peak: float, peak_strain: float,
                  plateau: float, decay: float) -> np.ndarray:
    """Engineering stress (MPa): a power-law rise with initial slope `modulus`, then softening."""
    n = modulus * peak_strain / peak
    rise = peak * (1 - np.clip(1 - strain / peak_strain, 0, 1) ** n)
    soft = plateau + (peak - plateau) * np.exp(-(strain - peak_strain) / decay)
    return np.where(strain < peak_strain, rise, soft)


def simulate(index: int, n_frames: int, seed: int) -> Series:
    """Simulate series `index` with `n_frames` frames, deterministically from (seed, index)."""
    rng = np.random.default_rng([seed, index])
    d0a = rng.uniform(1240, 1300)
    d0b = d0a + rng.uniform(-8, 8)
    modulus = rng.uniform(2300, 2600)
    peak, peak_strain = rng.uniform(40.7, 41.2), rng.uniform(0.025, 0.029)
    plateau, decay = rng.uniform(35.5, 36.2), rng.uniform(0.02, 0.03)
    fracture = rng.uniform(0.08, 0.125)
    idle, after = int(rng.integers(2, 4)), int(rng.integers(3, 6))
    loading = n_frames - idle - after
    if loading < 4:
        raise ValueError(f"a series needs at least {idle + after + 4} frames, got {n_frames}")
    # strain rate doubles after the peak (localisation): peak_strain/d + (fracture-peak_strain)/(2d) = loading
    d = (peak_strain + (fracture - peak_strain) / 2) / loading
    strain = np.zeros(n_frames)
    for i in range(idle + 1, idle + loading):
        strain[i] = strain[i - 1] + (d if strain[i - 1] < peak_strain else 2 * d)
    strain[idle + loading:] = fracture
    strain[idle + loading - 1] = fracture
    broken = np.arange(n_frames) >= idle + loading
    stress = stress_strain(strain, modulus, peak, peak_strain, plateau, decay)
    plastic = np.maximum(strain - stress / modulus, 0.0)
    stress = np.where(broken, 0.0, stress) + rng.normal(0, 0.2, n_frames)

    strain_b = strain * (1 + rng.uniform(-0.05, 0.05)) + rng.normal(0, 2e-5, n_frames)
    jump = np.where(broken, 1.0, 0.0)
    sep_a = d0a * (1 + strain + rng.normal(0, 2e-5, n_frames)) + jump * rng.uniform(35, 42)
    sep_b = d0b * (1 + strain_b) + jump * rng.uniform(35, 42)
    x1 = np.round(stress / AREA_FACTOR / LOAD_STEP) * LOAD_STEP
    x3, x4 = (sep_a - d0a) / d0a, (sep_b - d0b) / d0b
    ratio = -x4 / np.where(np.abs(x3) < 1e-9, 1e-9, x3)
    x7 = np.concatenate([ratio[:1], ratio[:-1]])                  # lagged by one frame
    moving = np.maximum(np.arange(n_frames) - idle + 1, 0)
    x8 = rng.uniform(11.5, 13.0) + moving * 0.37 / (n_frames - idle)
    values = np.stack([x1, AREA_FACTOR * x1, x3, x4, sep_a, sep_b, x7, x8], axis=1)

    k = 12
    return Series(strain=strain, plastic=plastic, broken=broken, sep_a=sep_a, sep_b=sep_b, values=values,
                  center=WIDTH / 2 + rng.uniform(-30, 30), crazes=rng.uniform(-0.35, 0.35, k),
                  onsets=np.sort(rng.uniform(0.0, 0.012, k)), d0=d0a, gap_width=rng.uniform(30, 45))


def _box(u: np.ndarray, lo: np.ndarray | float, hi: np.ndarray | float, blur: float = 1.5) -> np.ndarray:
    """A box from lo to hi with soft (logistic) edges of width `blur` px: optics, not aliasing."""
    return 0.5 * (np.tanh((u - lo) / (2 * blur)) - np.tanh((u - hi) / (2 * blur)))


def _blur(field: np.ndarray, sigma_y: float, sigma_x: float) -> np.ndarray:
    """Gaussian blur through the FFT (periodic edges: the fields are stationary noise)."""
    fy = np.fft.fftfreq(field.shape[0])[:, None]
    fx = np.fft.rfftfreq(field.shape[1])[None, :]
    kernel = np.exp(-2 * np.pi**2 * ((sigma_y * fy) ** 2 + (sigma_x * fx) ** 2))
    return np.fft.irfft2(np.fft.rfft2(field) * kernel, s=field.shape)


def texture_field(texture: Texture, rng: np.random.Generator) -> np.ndarray:
    """One specimen's texture on its unstrained film: [ROI height + 2 PAD, WIDTH] float32 levels, zero mean."""
    shape = (ROI[2] + 2 * PAD, WIDTH)
    grains = _blur(rng.standard_normal(shape), texture.speckle_sigma, texture.speckle_sigma)
    dots = (grains > np.quantile(grains, 1 - texture.speckle_cover)).astype(np.float64)
    film = _blur(rng.standard_normal(shape), texture.film_sigma, texture.film_sigma)
    film *= texture.film_std / film.std()
    field = _blur(film - texture.speckle_depth * dots, texture.blur, texture.blur)
    return (field - field.mean()).astype(np.float32)


def _sample(field: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """field at fractional (rows x cols) positions, bilinear (both separable): [len(rows), len(cols)]."""
    def weights(pos: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        pos = np.clip(pos, 0, n - 1.001)
        i = np.floor(pos).astype(int)
        return i, (pos - i).astype(np.float32)
    i, wy = weights(rows, field.shape[0])
    j, wx = weights(cols, field.shape[1])
    part = field[i] * (1 - wy[:, None]) + field[i + 1] * wy[:, None]
    return part[:, j] * (1 - wx) + part[:, j + 1] * wx


def vignetting(x: np.ndarray) -> np.ndarray:
    """The camera's gain across the frame's columns x (px): 1 at the centre, 0.98 at the edges."""
    return 1 - 0.08 * ((x - WIDTH / 2) / WIDTH) ** 2


def render(series: Series, i: int, rng: np.random.Generator, brightness: float = 0.0) -> np.ndarray:
    """Frame `i` of `series` as a uint8 [2056, 2452] camera image; `brightness`: levels per MPa of the
    stress x2 added to the film's level, plus the lamp's flicker (`FLICKER`; without it the film's level
    would carry the stress to a hundredth of a level on smooth films, more exactly than any camera)."""
    x = np.arange(WIDTH, dtype=np.float32)
    top, _, height, _ = ROI
    y = np.arange(top, top + height, dtype=np.float32)
    strain, c = series.strain[i], series.center
    half = HALF_HEIGHT * (1 - POISSON * strain)
    gain = vignetting(x)

    # crazes: bright bands whose openings add up to the plastic strain over the gauge length
    active = np.maximum(series.plastic[i] - series.onsets, 0)
    opening = active / max(active.sum(), 1e-12) * series.plastic[i] * series.d0
    sites = c + series.crazes * series.d0 / 2 * (1 + strain)
    width = np.where(active > 0, 3 * opening + 4, 0)
    across = np.clip(_box(x[:, None], sites - width / 2, sites + width / 2).sum(1), 0, 1.2)
    lit = brightness * series.values[i, 1] + FLICKER * rng.standard_normal() if brightness else 0.0
    level = STRIP + lit + WHITE * across
    film = np.ones_like(x)
    if series.broken[i]:                                          # the specimen splits at the widest craze
        site = sites[np.argmax(opening)]
        film = 1 - _box(x, site - series.gap_width / 2, site + series.gap_width / 2)
        level = level * film
    rows = _box(y, CENTER_ROW - half, CENTER_ROW + half, 2.0)
    roi = BACKGROUND + np.outer(rows, (level - BACKGROUND) * gain)
    if series.texture is not None:                                # the film's texture moves with the film
        material_rows = PAD + CENTER_ROW - top + (y - CENTER_ROW) / (1 - POISSON * strain)
        material_cols = c + (x - c) / (1 + strain)
        roi += np.outer(rows, film) * _sample(series.texture, material_rows, material_cols)

    for sep, sign in ((series.sep_a[i], -1), (series.sep_b[i], 1)):
        band = _box(y, *sorted((CENTER_ROW + sign * 0.25 * half, CENTER_ROW + sign * 0.75 * half)))
        marks = (_box(x, c - sep / 2 - MARK_WIDTH / 2, c - sep / 2 + MARK_WIDTH / 2)
                 + _box(x, c + sep / 2 - MARK_WIDTH / 2, c + sep / 2 + MARK_WIDTH / 2))
        roi -= MARK_DEPTH * np.outer(band, marks)
    roi += 3.0 * rng.standard_normal(roi.shape, dtype=np.float32)  # sensor noise

    frame = np.full((HEIGHT, WIDTH), BACKGROUND, dtype=np.float32)
    frame[top:top + height] = roi
    return np.clip(frame, 0, 255).round().astype(np.uint8)


def generate(out: str | Path, n_series: int = 10, n_frames: int = 50, seed: int = 0,
             progress: bool = True, texture: str = "camera", brightness: float = 0.0) -> pd.DataFrame:
    """Write series `data1..dataN` of TIFF frames under `out`; return the table in the seed's format.

    `texture` names an entry of `TEXTURES`; the measurements and the geometry of every frame are the
    same whatever the texture (it is drawn from a stream of its own) and the `brightness` (`render`).

    `filepath` holds Windows paths from a made-up collection machine, like the researcher's CSVs;
    the loader rebases them onto the CSV's folder (or `data.root`).
    """
    from tqdm import tqdm

    out = Path(out)
    every = [(s, i) for s in range(1, n_series + 1) for i in range(n_frames)]
    series = {s: simulate(s, n_frames, seed) for s in range(1, n_series + 1)}
    if TEXTURES[texture] is not None:
        series = {s: v._replace(texture=texture_field(TEXTURES[texture], np.random.default_rng([seed, s, 2])))
                  for s, v in series.items()}
    for s in series:
        (out / f"data{s}").mkdir(parents=True, exist_ok=True)

    def write(job: tuple[int, int]) -> None:          # numpy and PIL release the GIL: threads suffice
        s, i = job
        frame = render(series[s], i, np.random.default_rng([seed, s, i, 1]), brightness)
        Image.fromarray(frame).save(out / f"data{s}" / f"{i + 1:04d}.tif", compression="tiff_lzw")

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for _ in tqdm(pool.map(write, every), total=len(every), desc="synthesising frames", unit="frame",
                      disable=not progress):
            pass
    rows = [[f"C:\\dev\\dataset\\ThinFilm\\synthetic\\data{s}\\{i + 1:04d}.tif", *series[s].values[i]]
            for s, i in every]
    return pd.DataFrame(rows, columns=["filepath"] + [f"x{j}" for j in range(1, 9)])


def _centroid(profile: np.ndarray, lo: int, hi: int) -> float:
    """Sub-pixel centre of the darkest blob in profile[lo:hi] (darkness-weighted, above 30 % of peak)."""
    window = profile[lo:hi]
    dark = np.median(window) - window
    dark = np.maximum(dark - 0.3 * dark.max(), 0)
    return lo + float((dark * np.arange(len(window))).sum() / max(dark.sum(), 1e-12))


def measure(frames: np.ndarray) -> np.ndarray:
    """What ROI frames show: [N, H, W] (float in [0, 1] or uint8; any H x W, rows and columns each scaled to
    the ROI on their own) -> [N, len(FEATURES)].

    sep_a, sep_b: mark separations in original px; whitening, gap: mean brightness above / below
    the film's own level across the gauge centre's columns (8-bit levels), each column averaged over the
    strip's middle half first (crazes and the gap run across the whole strip; a zero-mean texture
    mostly averages out instead of being rectified); height: strip height in original px; film: the
    film's level above the bare strip's (`STRIP`), read between the mark bands outside the craze zone
    and corrected for the vignetting (levels; the stress times `brightness` where the frames have it).
    """
    frames = levels(frames)
    n, h, w = frames.shape
    px_x, px_y = ROI[3] / w, ROI[2] / h
    band = lambda v0, v1: slice(int(round(v0 * h)), max(int(round(v1 * h)), int(round(v0 * h)) + 1))  # noqa: E731
    cols = slice(int(0.38 * w), int(round(0.62 * w)))
    film_mask = region_mask((h, w), FLAT_ROWS, FILM_COLS)
    gain = vignetting((np.arange(w) + 0.5) * WIDTH / w)[np.flatnonzero(film_mask.any(0))].mean()
    out = np.zeros((n, len(FEATURES)))
    for k, f in enumerate(frames):
        for j, rows in enumerate((band(0.25, 0.39), band(0.61, 0.75))):
            p = f[rows].mean(0)
            left = _centroid(p, int(0.10 * w), int(0.37 * w))
            right = _centroid(p, int(0.63 * w), int(0.90 * w))
            out[k, j] = (right - left) * px_x
        film = BACKGROUND + (f[film_mask].mean() - BACKGROUND) / gain      # the film's level, vignetting removed
        across = f[band(0.25, 0.75), cols].mean(0)
        out[k, 2] = np.maximum(across - film, 0).mean()
        out[k, 3] = np.maximum(film - across, 0).mean()
        profile = f[:, cols].mean(1)
        out[k, 4] = (h - _crossing(profile[::-1], (BACKGROUND + film) / 2)
                     - _crossing(profile, (BACKGROUND + film) / 2)) * px_y
        out[k, 5] = film - STRIP
    return out


def exact_reading(features: np.ndarray, asked: np.ndarray, columns: Sequence[str],
                  brightness: float = 0.0) -> dict[str, np.ndarray]:
    """The measurements frames carry, read back from their `measure` features [N, F] where the renderer can
    be inverted: x5, x6 are the mark separations; x3, x4 = separation / d0 - 1 with each frame's d0 =
    x5 / (1 + x3) from its asked raw values [N, C]; with `brightness` (levels per MPa), x2 = the film's level
    / brightness and x1 = x2 / 2000. {column: [N]}, only for the columns present."""
    out = {}
    for k, (strain, dist) in enumerate((("x3", "x5"), ("x4", "x6"))):
        if dist in columns:
            out[dist] = features[:, k]
            if strain in columns:
                d0 = asked[:, columns.index(dist)] / (1 + asked[:, columns.index(strain)])
                out[strain] = features[:, k] / d0 - 1
    if brightness > 0 and "x2" in columns:
        out["x2"] = features[:, FEATURES.index("film")] / brightness
        if "x1" in columns:
            out["x1"] = out["x2"] / AREA_FACTOR
    return {c: out[c] for c in columns if c in out}


class Measured(NamedTuple):
    """Frames as the simulator reads them: `measure()` of each, [N, F], and the raw measurements asked, [N, C]."""
    features: np.ndarray
    asked: np.ndarray


class Training(NamedTuple):
    """The training split's raw measurements [M, C] and each frame's specimen [M]: where conditions are dense."""
    values: np.ndarray
    groups: Sequence[str]


STAGES = ("rising", "softening", "broken")
STRESS_BANDS = 5


def stages(values: np.ndarray, groups: Sequence[str], columns: Sequence[str], drop: float = 0.1) -> np.ndarray:
    """Each frame's stage of its test, [N] indices into `STAGES`: rising up to its series' peak load (x1),
    softening past the peak's strain (x3), broken where past it the load is under `drop` times the peak (as
    `data.after_fracture`). Read from the values alone (a test's strain only grows), so any row order works."""
    load, strain, groups = values[:, columns.index("x1")], values[:, columns.index("x3")], np.asarray(groups)
    out = np.zeros(len(values), dtype=int)
    for name in np.unique(groups):
        rows = np.flatnonzero(groups == name)
        peak = rows[np.nanargmax(load[rows])]
        past = rows[strain[rows] > strain[peak]]
        out[past] = np.where(load[past] < drop * load[peak], 2, 1)
    return out


def density_bands(errors: dict[str, tuple[np.ndarray, np.ndarray]], matched: np.ndarray, real: np.ndarray,
                  groups: Sequence[str], train: Training, columns: Sequence[str]) -> list[dict[str, Any]]:
    """The exact reading's precision where the training split is dense and where it is thin: per stage of the
    test (`stages`) and per fifth of the training stress (x2) range, the training frames there (the density),
    the evaluation conditions there, and each column's ratio and excess over them (`_intervals`). errors:
    {column: (read - asked per generated frame [N], per real frame [M])}; real: the real raw values [M, C]."""
    j = columns.index("x2")
    edges = np.linspace(np.nanmin(train.values[:, j]), np.nanmax(train.values[:, j]), STRESS_BANDS + 1)
    band = lambda v: np.clip(np.searchsorted(edges, v, side="right") - 1, 0, STRESS_BANDS - 1)  # noqa: E731
    kinds = [("stage", STAGES, stages(train.values, train.groups, columns), stages(real, groups, columns)),
             ("stress", [f"{lo:.3g}-{hi:.3g} MPa" for lo, hi in zip(edges, edges[1:])], band(train.values[:, j]),
              band(real[:, j]))]
    out = []
    for kind, names, in_train, in_eval in kinds:
        for b, name in enumerate(names):
            keep = in_eval == b
            chosen = keep[matched]
            if not chosen.any():
                continue
            renumbered = np.cumsum(keep) - 1                       # condition index -> index among those kept
            row: dict[str, Any] = {"by": kind, "band": name, "train_frames": int((in_train == b).sum()),
                                   "conditions": int(keep.sum())}
            for c, (gen_err, real_err) in errors.items():
                row[c] = _intervals(gen_err[chosen], renumbered[matched[chosen]], real_err[keep])
            out.append(row)
    return out


def exact_check(gen: Measured, real: Measured, matched: np.ndarray, columns: Sequence[str], groups: Sequence[str],
                brightness: float = 0.0, visible: Sequence[str] | None = None,
                train: Training | None = None) -> dict[str, Any]:
    """How precisely generated frames carry their raw measurements, against the real frames (generated frame i
    was drawn for real frame matched[i]'s measurements), read by the simulator itself instead of a regressor.

    "columns": for every column `exact_reading` can read, the consistency ratio MAE generated / MAE real and
    the generator's own error beyond the reading's (`metrics.excess_interval`, in the column's units), each
    with its bootstrap interval over conditions. "features": for whitening, gap, height and film, which
    no condition fixes exactly (craze sites, gap width and texture are drawn per specimen), the same ratio
    with the error taken from what the conditions predict: the mean feature of the 8 real frames of other
    specimens (`groups` [M]) nearest in the `visible` columns (z-scored), so a real frame is not its own
    prediction. Below 1 there: less spread than the real frames (a mean drawn), above: looser. "density"
    (with `train`, the training split): the distances and the film's level per stage and stress band, beside
    how many training frames each has (`density_bands`)."""
    (shown, gen_asked), (seen, real_asked) = gen, real
    read_gen = exact_reading(shown, gen_asked, columns, brightness)
    read_real = exact_reading(seen, real_asked, columns, brightness)
    out: dict[str, Any] = {"columns": {}, "features": {}}
    errors = {}
    for c, values in read_gen.items():
        j = columns.index(c)
        gen_err, real_err = errors[c] = values - gen_asked[:, j], read_real[c] - real_asked[:, j]
        out["columns"][c] = _intervals(gen_err, matched, real_err)
    if train is not None and {"x1", "x2", "x3"} <= set(columns):
        out["density"] = density_bands({c: errors[c] for c in ("x5", "x6", "x2") if c in errors}, matched,
                                       real_asked, groups, train, columns)
    use = [columns.index(c) for c in (visible if visible is not None else columns)]
    predicted = neighbour_mean(real_asked[:, use], seen, groups)
    for name in ("whitening", "gap", "height", "film"):
        f = FEATURES.index(name)
        if name == "film" and not brightness:
            continue
        out["features"][name] = _intervals(shown[:, f] - predicted[matched, f], matched, seen[:, f] - predicted[:, f])
    return out


def _intervals(gen_err: np.ndarray, matched: np.ndarray, real_err: np.ndarray) -> dict[str, float]:
    ratio, excess = ratio_interval(gen_err, matched, real_err), excess_interval(gen_err, matched, real_err)
    return {"ratio": ratio.value, "ratio_low": ratio.low, "ratio_high": ratio.high,
            "excess": excess.value, "excess_low": excess.low, "excess_high": excess.high,
            "mae_generated": float(np.abs(gen_err).mean()), "mae_real": float(np.abs(real_err).mean())}


def _crossing(profile: np.ndarray, level: float) -> float:
    """Sub-pixel position where `profile` first rises through `level` (from index 0)."""
    above = np.nonzero(profile >= level)[0]
    if len(above) == 0 or above[0] == 0:
        return 0.0
    i = above[0]
    return i - 1 + (level - profile[i - 1]) / max(profile[i] - profile[i - 1], 1e-12) + 0.5


def _r(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two [N] arrays; NaN where either is constant."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else math.nan


def correlations(shown: np.ndarray, wanted: np.ndarray) -> dict[str, float]:
    """Pearson correlation per feature between two [N, F] feature tables (NaN where constant)."""
    return {name: _r(shown[:, j], wanted[:, j]) for j, name in enumerate(FEATURES)}


def _flat_patch(frames: np.ndarray) -> np.ndarray:
    """Pixels (8-bit levels) of a patch of bare strip that should be flat: [N, H, W] -> [N, P]."""
    frames = levels(frames)
    h, w = frames.shape[-2:]
    rows = slice(int(0.45 * h), max(int(round(0.55 * h)), int(0.45 * h) + 2))
    cols = slice(int(0.02 * w), max(int(round(0.10 * w)), int(0.02 * w) + 2))
    return frames[:, rows, cols].reshape(len(frames), -1)


def residual_noise(frames: np.ndarray) -> np.ndarray:
    """Per-frame std (8-bit levels) of a patch of bare strip that should be flat: [N, H, W] -> [N]."""
    return _flat_patch(frames).std(1)


def level_error(generated: np.ndarray, real: np.ndarray) -> float:
    """RMS over frames of the difference in mean brightness of that flat patch (8-bit levels): a
    frame-wide brightness offset, which the within-patch std of `residual_noise` cannot see."""
    diff = _flat_patch(generated).mean(1) - _flat_patch(real).mean(1)
    return float(np.sqrt(np.mean(diff ** 2)))


def broken_frames(gap: np.ndarray, broken_above: float = 2.0) -> np.ndarray:
    """Which frames show a fractured specimen, from their measured gap (8-bit levels): real frames show
    <= 1 level before fracture and >= 4 after, so the threshold separates them exactly."""
    return np.asarray(gap) > broken_above


def gap_ceiling(gap: np.ndarray, broken_above: float = 2.0) -> float:
    """The fracture gap's r that an ideal sampler would score on average against these real frames.

    The gap's width (30..45 px) is drawn per specimen and is in no condition: the conditions command
    *that* a frame is broken (load ~ 0 after fracture), not how wide the gap is. An ideal sampler draws
    each broken frame's gap independently from the same spread of widths, so its expected r is
    Var(E[gap | broken]) / Var(gap) = r(gap, broken)^2 (`broken_frames`). NaN where no frame, or every
    frame, is broken.
    """
    return _r(gap, broken_frames(gap, broken_above)) ** 2


def flat_mask(size: int | Sequence[int]) -> np.ndarray:
    """The strip between the marks, outside the craze zone, at `size` (a side or (H, W)): where only texture
    varies."""
    return region_mask(size, FLAT_ROWS, FLAT_COLS)


def fidelity(generated: np.ndarray, real: np.ndarray, region: np.ndarray | None = None) -> dict[str, float]:
    """How well generated frames show what their conditions command, row i of each being the same
    condition: the correlation of every visible feature between generated and real frames (the film's
    level only where the real frames' varies by over a level: the `brightness` option); for the
    gap, also its correlation with what the condition commands, fracture or not (`corr_fracture`:
    the real frame's gap width is drawn per specimen, in no condition), and what an ideal sampler would
    score on both (`ceiling_gap`, `ceiling_fracture` = r(real gap, fracture)); the residual noise of
    each (flat-patch std, 8-bit levels), the generated frames' brightness offset, and their texture
    against the real frames' (`metrics.texture` in `region` [H, W], by default the flat film
    `metrics.flat_region` finds in the real frames: grain and power per octave band)."""
    shown, wanted = measure(generated), measure(real)
    result = {f"corr_{k}": v for k, v in correlations(shown, wanted).items()}
    film = FEATURES.index("film")
    if wanted[:, film].std() <= 1.0:
        del result["corr_film"]
    gap = FEATURES.index("gap")
    broken = broken_frames(wanted[:, gap])
    result["corr_fracture"] = _r(shown[:, gap], broken)
    result["ceiling_gap"] = gap_ceiling(wanted[:, gap])
    result["ceiling_fracture"] = _r(wanted[:, gap], broken)
    result["noise_generated"] = float(residual_noise(generated).mean())
    result["noise_real"] = float(residual_noise(real).mean())
    result["level_error"] = level_error(generated, real)
    mask = flat_region(real).mask if region is None else region
    report = texture(generated, real, mask).to_dict()
    result.update({k: float(v) for k, v in report.items() if not k.startswith("n_")})
    return result
