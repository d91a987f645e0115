"""Statistics that judge frames and predictions without a simulator: R², MAE, bootstrap intervals, KID,
Fréchet distance, and texture (high-pass std, power per octave band).

Everything here is plain numpy on arrays: frames are [N, R, R] in 8-bit levels (uint8 or float),
features [N, D], predictions and targets [N] or [N, C].
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

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
    """Each pixel minus the mean of its 3x3 neighbourhood (itself included): [N, R, R] -> [N, R-2, R-2]."""
    f = levels(frames)
    r = f.shape[-1]
    box = sum(f[:, i:r - 2 + i, j:r - 2 + j] for i in range(3) for j in range(3)) / 9
    return f[:, 1:-1, 1:-1] - box


def region_mask(r: int, rows: tuple[float, float], cols: Sequence[tuple[float, float]]) -> np.ndarray:
    """A boolean [r, r] mask of the row band `rows` and column bands `cols`, given as fractions of r."""
    mask = np.zeros((r, r), dtype=bool)
    band = lambda lo, hi: slice(int(round(lo * r)), max(int(round(hi * r)), int(round(lo * r)) + 1))  # noqa: E731
    for lo, hi in cols:
        mask[band(*rows), band(lo, hi)] = True
    return mask


def grain(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-frame texture: the std of the high-pass image (`highpass`) over the pixels of `mask` [R, R],
    in 8-bit levels: [N, R, R] -> [N]. White noise of std s gives s * sqrt(8/9); a smooth image ~0."""
    hp = highpass(frames)
    return hp[:, mask[1:-1, 1:-1]].std(1)


def grain_level(frames: np.ndarray, pixels: int = 2**24) -> float:
    """The fine grain of whole frames [N, R, R], 8-bit levels: a robust std (1.4826 x the median absolute
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
    """Gaussian blur of [N, R, R] frames through the FFT, edges reflected (3 sigma of padding)."""
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
    """Power per octave band inside `mask` [R, R]: band k is the difference of Gaussian blurs at
    scales[k] and scales[k + 1] (a band-pass one octave wide, radially symmetric: a local power
    spectrum), its variance over the masked pixels averaged over frames. [N, R, R] -> [K], levels².
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
    """Grain and power per octave band in `mask` of generated [N, R, R] against real [M, R, R] frames."""
    g, r = grain(generated, mask).mean(), grain(real, mask).mean()
    pg, pr = octave_power(generated, mask), octave_power(real, mask)
    ratio = [float(a / b) if b > 0 else math.nan for a, b in zip(pg, pr)]
    return TextureReport(float(g), float(r), float(g / r) if r > 0 else math.nan, band_names(), ratio,
                         len(generated), len(real))
