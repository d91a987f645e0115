"""Statistics that judge frames and predictions without a simulator: R², MAE, bootstrap intervals, KID,
Fréchet distance, and texture (high-pass std, power per octave band).

Everything here is plain numpy on arrays: frames are [N, H, W] in 8-bit levels (uint8 or float),
features [N, D], predictions and targets [N] or [N, C].
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np


# ----------------------------------------------------------------------------------- regression
def r2(pred: np.ndarray, true: np.ndarray) -> float:
    """Coefficient of determination 1 - SS_res / SS_tot of [N] arrays (NaN where `true` is constant)."""
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    total = ((true - true.mean()) ** 2).sum()
    return float(1 - ((pred - true) ** 2).sum() / total) if total > 0 else math.nan


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean absolute error of [N] arrays."""
    return float(np.abs(np.asarray(pred, np.float64) - np.asarray(true, np.float64)).mean())


class Interval(NamedTuple):
    """A statistic with its bootstrap interval."""
    value: float
    low: float
    high: float


def bootstrap(statistic: Callable[[np.ndarray], float], n: int, draws: int = 1000, level: float = 0.95,
              seed: int = 0) -> Interval:
    """`statistic(idx)` on all n items and its percentile interval over `draws` resamples of the items
    with replacement (Efron & Tibshirani 1993, ch. 13). `statistic` receives the index array [n]."""
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, n)) for _ in range(draws)])
    values = values[np.isfinite(values)]
    tail = (1 - level) / 2 * 100
    low, high = (np.percentile(values, [tail, 100 - tail]) if len(values) else (math.nan, math.nan))
    return Interval(float(statistic(np.arange(n))), float(low), float(high))


def _per_condition(gen_err: np.ndarray, matched: np.ndarray, m: int, power: int) -> tuple[np.ndarray, np.ndarray]:
    """Per real condition (0..m-1): the sum of |err|^power over the generated frames drawn for it, and their count."""
    return (np.bincount(matched, weights=np.abs(gen_err) ** power, minlength=m),
            np.bincount(matched, minlength=m).astype(np.float64))


def ratio_interval(gen_err: np.ndarray, matched: np.ndarray, real_err: np.ndarray, seed: int = 0) -> Interval:
    """MAE generated / MAE real with its bootstrap interval over conditions. gen_err [N]: read - asked of
    each generated frame, matched [N]: its condition's index in real_err [M] (read - true per condition)."""
    m, real = len(real_err), np.abs(real_err)
    sums, counts = _per_condition(gen_err, matched, m, 1)

    def statistic(idx: np.ndarray) -> float:
        denominator = real[idx].mean()
        return float(sums[idx].sum() / max(counts[idx].sum(), 1) / denominator) if denominator > 0 else math.nan
    return bootstrap(statistic, m, seed=seed)


def excess_interval(gen_err: np.ndarray, matched: np.ndarray, real_err: np.ndarray, seed: int = 0) -> Interval:
    """The generator's own error beyond the reader's, sqrt(max(0, RMSE_gen^2 - RMSE_real^2)), in the units of
    the errors, with its bootstrap interval over conditions (arguments as `ratio_interval`). A reader that
    misreads real frames by e_r and a generator that misplaces by e_g independently read generated frames
    off by sqrt(e_r^2 + e_g^2): this is e_g. 0 when generated frames read as well as real ones."""
    m, real = len(real_err), np.square(real_err)
    sums, counts = _per_condition(gen_err, matched, m, 2)

    def statistic(idx: np.ndarray) -> float:
        return math.sqrt(max(0.0, sums[idx].sum() / max(counts[idx].sum(), 1) - real[idx].mean()))
    return bootstrap(statistic, m, seed=seed)


def neighbour_mean(x: np.ndarray, y: np.ndarray, groups: Sequence[str], k: int = 8) -> np.ndarray:
    """For each row of x [M, D] (columns z-scored here), the mean of y [M, F] over its k nearest rows of
    *other* groups [M] (leave one group out: a specimen does not predict itself): [M, F]."""
    x = np.asarray(x, np.float64)
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    groups = np.asarray(groups)
    dist = ((x[:, None, :] - x[None, :, :]) ** 2).sum(2)
    dist[groups[:, None] == groups[None, :]] = np.inf
    k = min(k, int(np.isfinite(dist).sum(1).min()))
    if k == 0:                                                    # a single group: nothing to predict from
        return np.full((len(x), np.shape(y)[1]), np.nan)
    nearest = np.argsort(dist, axis=1)[:, :k]
    return np.asarray(y, np.float64)[nearest].mean(1)


# ------------------------------------------------------------------------------ feature distances
def kid(a: np.ndarray, b: np.ndarray) -> float:
    """Kernel Inception Distance in any feature space (Bińkowski et al. 2018): the unbiased estimate of
    MMD² between feature sets a [n, d] and b [m, d] with the cubic polynomial kernel
    k(x, y) = (x·y / d + 1)^3. Can be slightly negative when the two sets come from one distribution."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n, m, d = len(a), len(b), a.shape[1]
    if n < 2 or m < 2:
        return math.nan
    k = lambda x, y: (x @ y.T / d + 1) ** 3  # noqa: E731
    kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
    return float((kaa.sum() - np.trace(kaa)) / (n * (n - 1)) + (kbb.sum() - np.trace(kbb)) / (m * (m - 1))
                 - 2 * kab.mean())


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to a [n, d] and b [m, d] (Heusel et al. 2017):
    |mu_a - mu_b|² + tr(S_a + S_b - 2 (S_a S_b)^1/2). With fewer samples than dimensions the
    covariances are rank-deficient and the figure is biased upwards: report it only beside KID."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr((S_a S_b)^1/2) = sum of sqrt of the eigenvalues of S_a^1/2 S_b S_a^1/2 (symmetric, PSD)
    w, v = np.linalg.eigh(sa)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ sb @ root), 0, None)).sum()
    return float(mu @ mu + np.trace(sa) + np.trace(sb) - 2 * cross)


# ----------------------------------------------------------------------------------------- texture
def levels(frames: np.ndarray) -> np.ndarray:
    """Frames as float64 8-bit levels, whether given as uint8 / 0..255 or as floats in [0, 1]."""
    frames = np.asarray(frames, dtype=np.float64)
    return frames * 255 if frames.max() <= 1.0 + 1e-6 else frames


def highpass(frames: np.ndarray) -> np.ndarray:
    """Each pixel minus the mean of its 3x3 neighbourhood (itself included): [N, H, W] -> [N, H-2, W-2]."""
    f = levels(frames)
    h, w = f.shape[-2:]
    box = sum(f[:, i:h - 2 + i, j:w - 2 + j] for i in range(3) for j in range(3)) / 9
    return f[:, 1:-1, 1:-1] - box


class Region(NamedTuple):
    """Where texture is measured: a boolean mask [H, W] and how it was chosen."""
    mask: np.ndarray
    how: str                    # "found" (`flat_region`), "data.flat_region" (given) or "whole frame"

    def describe(self, frames: np.ndarray) -> dict[str, Any]:
        """For a report: how, size, bounding box (rows, cols at this frame size) and mean level in `frames`."""
        rows, cols = np.nonzero(self.mask)
        return {"how": self.how, "pixels": int(self.mask.sum()), "fraction": float(self.mask.mean()),
                "rows": [int(rows.min()), int(rows.max()) + 1], "cols": [int(cols.min()), int(cols.max()) + 1],
                "shape": [int(v) for v in self.mask.shape], "level": float(levels(frames)[:, self.mask].mean())}


def _near(edges: np.ndarray, radius: int) -> np.ndarray:
    """Dilation of boolean [N, H, W] maps by a (2 radius + 1)^2 square (box sums from an integral image)."""
    if radius == 0:
        return edges
    n, h, w = edges.shape
    total = np.zeros((n, h + 2 * radius + 1, w + 2 * radius + 1), np.int32)
    total[:, 1:, 1:] = np.pad(edges, ((0, 0), (radius, radius), (radius, radius))).cumsum(1).cumsum(2)
    k = 2 * radius + 1
    box = total[:, k:, k:] - total[:, :-k, k:] - total[:, k:, :-k] + total[:, :-k, :-k]
    return box > 0


def flat_region(frames: np.ndarray, most: int = 64, busy: float = 0.05) -> Region:
    """Where the film is flat in real frames [N, H, W]: the pixels that are away from every edge in all but
    `busy` of the frames (strip edges, marks wherever they move, crazes, the fracture gap), so that only the
    film's texture varies there, found from the frames alone (no geometry assumed). Edges: the gradient of
    each frame blurred at R / 64 px, as the height of the step it would be, above 15 % of the frames' level
    range; "away": beyond twice the blur (and the frame's border). Of the flat pixels, the film is the level
    group (two groups when their levels differ by over 10 % of the range: film and background) with the
    finer texture, or, where both are alike within 25 %, the larger one. At most `most` frames, evenly spaced.
    No flat pixel at all (tiny frames): the whole frame, and `how` says so."""
    f = levels(frames)
    f = f[np.linspace(0, len(f) - 1, min(len(f), most)).round().astype(int)]
    h, w = f.shape[-2:]
    sigma = max(1.0, max(h, w) / 64)
    blurred = gaussian_blur(f, sigma)
    dy, dx = np.gradient(blurred, axis=(1, 2))
    step = np.hypot(dy, dx) * sigma * math.sqrt(2 * math.pi)          # an ideal step of height h reads ~h
    mean = f.mean(0)
    span = np.percentile(mean, 99) - np.percentile(mean, 1)
    margin = int(math.ceil(2 * sigma))
    flat = _near(step > 0.15 * span, margin).mean(0) <= busy
    border = np.zeros_like(flat)
    border[margin:h - margin, margin:w - margin] = True
    flat &= border
    if not flat.any():
        return Region(np.ones((h, w), dtype=bool), "whole frame")
    level = mean[flat]
    groups = [flat]
    cut = _otsu(level)
    if cut is not None and level[level > cut].mean() - level[level <= cut].mean() > 0.1 * span:
        groups = [flat & (mean > cut), flat & (mean <= cut)]
    hp = np.zeros_like(f)
    hp[:, 1:-1, 1:-1] = highpass(f)
    texture = [float(np.median(hp[:, g].std(1))) for g in groups]
    best = int(np.argmax(texture))
    if len(groups) == 2 and texture[best] < 1.25 * texture[1 - best]:
        best = int(np.argmax([g.sum() for g in groups]))
    return Region(groups[best], "found")


def texture_region(frames: np.ndarray, box: Sequence[int] = (), roi: Sequence[int] = ()) -> Region:
    """Where texture is measured in frames [N, H, W] cropped to `roi` (top, left, height, width, camera px):
    the `box` given in the same camera pixels (`data.flat_region`), else the flat film `flat_region` finds."""
    if not box:
        return flat_region(frames)
    h, w = np.shape(frames)[-2:]
    top, left, height, width = (int(v) for v in box)

    def span(start: int, length: int, origin: int, size: int, r: int) -> slice:
        lo = int(round((start - origin) / size * r))
        return slice(lo, max(int(round((start + length - origin) / size * r)), lo + 1))
    mask = np.zeros((h, w), dtype=bool)
    mask[span(top, height, roi[0], roi[2], h), span(left, width, roi[1], roi[3], w)] = True
    return Region(mask, "data.flat_region")


def _otsu(values: np.ndarray, bins: int = 64) -> float | None:
    """The threshold that splits `values` into two groups of least within-group variance (Otsu 1979)."""
    if values.max() <= values.min():
        return None
    counts, edges = np.histogram(values, bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts)[:-1]
    w1 = counts.sum() - w0
    m0 = np.cumsum(counts * centres)[:-1] / np.maximum(w0, 1)
    m1 = ((counts * centres).sum() - np.cumsum(counts * centres)[:-1]) / np.maximum(w1, 1)
    return float(edges[1:-1][np.argmax(w0 * w1 * (m0 - m1) ** 2)])


def region_mask(size: int | Sequence[int], rows: tuple[float, float],
                cols: Sequence[tuple[float, float]]) -> np.ndarray:
    """A boolean [H, W] mask (`size`: a side or (H, W)) of the row band `rows`, a fraction of H, and the column
    bands `cols`, fractions of W."""
    h, w = (size, size) if isinstance(size, int) else size
    mask = np.zeros((h, w), dtype=bool)
    band = lambda lo, hi, r: slice(int(round(lo * r)), max(int(round(hi * r)), int(round(lo * r)) + 1))  # noqa: E731
    for lo, hi in cols:
        mask[band(*rows, h), band(lo, hi, w)] = True
    return mask


def grain(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-frame texture: the std of the high-pass image (`highpass`) over the pixels of `mask` [H, W],
    in 8-bit levels: [N, H, W] -> [N]. White noise of std s gives s * sqrt(8/9); a smooth image ~0."""
    hp = highpass(frames)
    return hp[:, mask[1:-1, 1:-1]].std(1)


def grain_level(frames: np.ndarray, pixels: int = 2**24) -> float:
    """The fine grain of whole frames [N, H, W], 8-bit levels: a robust std (1.4826 x the median absolute
    deviation) of `highpass` over every pixel, so that edges and marks, a few pixels in a frame, barely
    count (they bias it upward by about the fraction of pixels they cover). White noise of std s gives
    s (`grain` gives s sqrt(8/9)); flat frames quantised to 8 bits give ~0. Frames evenly spaced over
    the split, at most `pixels` in all (256 frames at 256 px, 64 at 512 px: a memory-mapped split is
    not loaded whole, and the float copies stay under ~0.5 GiB)."""
    most = max(1, pixels // (frames.shape[-1] * frames.shape[-2]))
    frames = frames[np.linspace(0, len(frames) - 1, min(len(frames), most)).round().astype(int)]
    hp = highpass(frames).ravel()
    return float(1.4826 * np.median(np.abs(hp - np.median(hp))) / math.sqrt(8 / 9))


def gaussian_blur(frames: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of [N, H, W] frames through the FFT, edges reflected (3 sigma of padding)."""
    if sigma == 0:
        return np.asarray(frames, np.float64)
    pad = int(math.ceil(3 * sigma))
    f = np.pad(np.asarray(frames, np.float64), ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    fy = np.fft.fftfreq(f.shape[1])[:, None]
    fx = np.fft.rfftfreq(f.shape[2])[None, :]
    kernel = np.exp(-2 * np.pi**2 * sigma**2 * (fy**2 + fx**2))
    out = np.fft.irfft2(np.fft.rfft2(f) * kernel, s=f.shape[1:])
    return out[:, pad:-pad, pad:-pad]


OCTAVES = (0.0, 1.0, 2.0, 4.0, 8.0)       # Gaussian scales (px) bounding the octave bands


def octave_power(frames: np.ndarray, mask: np.ndarray, scales: Sequence[float] = OCTAVES) -> np.ndarray:
    """Power per octave band inside `mask` [H, W]: band k is the difference of Gaussian blurs at
    scales[k] and scales[k + 1] (a band-pass one octave wide, radially symmetric: a local power
    spectrum), its variance over the masked pixels averaged over frames. [N, H, W] -> [K], levels².
    Local, because a whole frame's spectrum is dominated by the strip's edges and marks."""
    blurred = [gaussian_blur(levels(frames), s) for s in scales]
    return np.array([(blurred[k] - blurred[k + 1])[:, mask].var(1).mean() for k in range(len(scales) - 1)])


def band_names(scales: Sequence[float] = OCTAVES) -> list[str]:
    return [f"{a:g}-{b:g}px" for a, b in zip(scales[:-1], scales[1:])]


class TextureReport(NamedTuple):
    """Texture of generated against real frames in a flat region: ratios of 1.0 are the real grain."""
    grain_generated: float      # mean high-pass std in the flat region, levels
    grain_real: float
    grain_ratio: float
    bands: list[str]            # octave bands by Gaussian scale
    band_ratio: list[float]     # power generated / real per band
    n_generated: int
    n_real: int

    def to_dict(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {"grain_generated": self.grain_generated, "grain_real": self.grain_real,
                                       "grain_ratio": self.grain_ratio}
        out.update({f"band_ratio_{b}": v for b, v in zip(self.bands, self.band_ratio)})
        out.update({"n_generated": self.n_generated, "n_real": self.n_real})
        return out


def texture(generated: np.ndarray, real: np.ndarray, mask: np.ndarray) -> TextureReport:
    """Grain and power per octave band in `mask` of generated [N, H, W] against real [M, H, W] frames."""
    gen_grain, real_grain = grain(generated, mask).mean(), grain(real, mask).mean()
    gen_power, real_power = octave_power(generated, mask), octave_power(real, mask)
    ratio = [float(a / b) if b > 0 else math.nan for a, b in zip(gen_power, real_power)]
    return TextureReport(float(gen_grain), float(real_grain), float(gen_grain / real_grain) if real_grain > 0
                         else math.nan, band_names(), ratio, len(generated), len(real))
