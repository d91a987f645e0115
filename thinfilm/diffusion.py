"""The diffusion core: schedules, forward process, training loss, and the samplers, one function each
(`ddpm`, `ddim`, `dpmpp2m`, `heun`, and `ddim_inversion`), registered by name in `SAMPLERS`.

It knows nothing of networks or conditions: a sampler calls `denoise(x_t, t)`, any callable that
returns the prediction named by `prediction` (eps, x0 or v) for x_t [B, ...] and t LongTensor [B].
Schedules are computed in float64 (improved-diffusion); per-step coefficients are gathered in
float64 and cast to the sample's dtype. A sampler run reads nothing back from the device: its
timesteps and branches are host-side numbers.

References: Ho et al. 2020 (DDPM), Song et al. 2021 (DDIM), Nichol & Dhariwal 2021 (cosine
schedule), Salimans & Ho 2022 (v-prediction), Hang et al. 2023 (min-SNR-gamma weighting),
Lin et al. 2024 (DDIM spacing that includes t = T - 1), Lu et al. 2022 (DPM-Solver++),
Karras et al. 2022 (EDM: Karras spacing, the Heun sampler).
"""
from __future__ import annotations

import math
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from thinfilm import LEVELS

Denoise = Callable[[Tensor, Tensor], Tensor]
# where Karras spacing starts: the linear schedule's own last sigma (157 at T = 1000), twice EDM's 80 (Karras et
# al. 2022, data of std 0.5); the cosine schedule ends at sigma 20 000, where hundreds of its steps change nothing
SIGMA_MAX = 160.0
Generators = torch.Generator | Sequence[torch.Generator] | None


def linear_betas(timesteps: int) -> np.ndarray:
    """Ho et al. 2020, sec. 4: beta linear from 1e-4 to 0.02 (scaled to 1000 steps)."""
    scale = 1000 / timesteps
    return np.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=np.float64)


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal 2021, eq. 17: alpha_bar(t) = cos^2(((t/T + s) / (1 + s)) * pi/2), betas <= 0.999."""
    f = lambda t: math.cos((t / timesteps + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    return np.array([min(1 - f(t + 1) / f(t), max_beta) for t in range(timesteps)], dtype=np.float64)


def randn(shape: Sequence[int], generator: Generators, device: torch.device | str,
          dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal noise; with one generator per batch row, row i depends only on generator i.

    Noise is drawn on the generator's device and moved, so a seed gives the same frame on any device.
    """
    if generator is None or isinstance(generator, torch.Generator):
        gen_device = generator.device if generator is not None else device
        return torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=dtype).to(device)
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
    return torch.stack([torch.randn(tuple(shape[1:]), generator=g, device=g.device, dtype=dtype)
                        for g in generator]).to(device)


class Prediction(NamedTuple):
    """A network output expressed both ways: the clean image and the noise, same shape as x_t."""
    x0: Tensor
    eps: Tensor


class GaussianDiffusion:
    """Discrete-time Gaussian diffusion (contract: docs/design.md). Not an nn.Module.

    The loss weighting is fixed at construction: "none" (plain MSE to the target) or "min_snr"
    (Hang et al. 2023) with cap `min_snr_gamma` and floor `min_snr_floor`.

    `skip_grain` > 0 (x0 prediction only; the std of the data's fine grain, in x's units) passes part of
    x_t straight through: x0 = network + w(t) x_t with w(t) = sqrt(a) g^2 / (a g^2 + 1 - a), the
    posterior-mean gain of white grain of std g (a skip in the manner of Karras et al. 2022, c_skip,
    scaled to the grain instead of the whole image). At high noise w ~ 0: plain x0 prediction. At low
    noise the grain the network cannot model is kept instead of smoothed away; the samplers, exact for
    Gaussian data, then draw it with its std (docs/experiments.md#grain).
    """

    def __init__(self, schedule: str = "linear", timesteps: int = 1000, prediction: str = "eps", *,
                 loss_weighting: str = "none", min_snr_gamma: float = 5.0, min_snr_floor: float = 0.0,
                 skip_grain: float = 0.0):
        if schedule not in ("linear", "cosine"):
            raise ValueError(f"schedule {schedule!r}: use linear or cosine")
        if prediction not in ("eps", "x0", "v"):
            raise ValueError(f"prediction {prediction!r}: use eps, x0 or v")
        if loss_weighting not in ("none", "min_snr"):
            raise ValueError(f"loss_weighting {loss_weighting!r}: use none or min_snr")
        if skip_grain < 0 or (skip_grain > 0 and prediction != "x0"):
            raise ValueError(f"skip_grain {skip_grain}: give 0, or a positive std with x0 prediction")
        self.skip_grain = skip_grain
        self.schedule, self.timesteps, self.prediction = schedule, timesteps, prediction
        self.loss_weighting, self.min_snr_gamma, self.min_snr_floor = loss_weighting, min_snr_gamma, min_snr_floor
        betas = linear_betas(timesteps) if schedule == "linear" else cosine_betas(timesteps)
        self.betas = torch.from_numpy(betas)                                   # float64 [T]
        self.alphas_cumprod = torch.cumprod(1 - self.betas, dim=0)             # alpha_bar_t, float64 [T]
        self._sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod).sqrt().numpy()  # for spacing, increasing
        # alpha_bar with a last entry 1 for "t = -1" (the clean image); device copies made once
        self._tables = {"betas": self.betas,
                        "alpha_bar": torch.cat([self.alphas_cumprod, torch.ones(1, dtype=torch.float64)])}
        self._on_device: dict[tuple[str, torch.device], Tensor] = {}

    @classmethod
    def from_config(cls, cfg) -> "GaussianDiffusion":
        """The diffusion an experiment config's [diffusion] section describes."""
        d = cfg.diffusion
        return cls(d.schedule, d.timesteps, d.prediction, loss_weighting=d.loss_weighting,
                   min_snr_gamma=d.min_snr_gamma, min_snr_floor=d.min_snr_floor,
                   skip_grain=d.grain / LEVELS if d.skip == "grain" else 0.0)   # 8-bit levels -> network units

    # ----------------------------------------------------------------------------- helpers
    def _at(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """table[t] as [B, 1, ..., 1] in like's dtype (gathered in float64 on t's device)."""
        key = (name, t.device)
        if key not in self._on_device:
            self._on_device[key] = self._tables[name].to(t.device)
        return self._on_device[key][t].to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))

    def _scalar(self, name: str, index: int, like: Tensor) -> Tensor:
        """table[index] as [1, ..., 1] in like's dtype, gathered on like's device (no host copy per step)."""
        key = (name, like.device)
        if key not in self._on_device:
            self._on_device[key] = self._tables[name].to(like.device)
        return self._on_device[key][index].to(like.dtype).reshape([1] * like.dim())

    def alpha_bar(self, t: Tensor, like: Tensor) -> Tensor:
        """alpha_bar_t broadcast like `like`; t = -1 means alpha_bar = 1 (the clean image)."""
        return self._at("alpha_bar", torch.where(t < 0, torch.full_like(t, self.timesteps), t), like)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Forward process (Ho et al. eq. 4): x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps, in float32."""
        x0, noise = x0.float(), noise.float()
        a = self.alpha_bar(t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def grain_gain(self, t: Tensor, like: Tensor, std: float | None = None) -> Tensor:
        """w(t) = sqrt(a) g^2 / (a g^2 + 1 - a) for g = `std` (network units; default: `skip_grain`): the
        posterior-mean gain of white N(0, g^2) grain seen in x_t, E[grain | x_t] = w(t) x_t. [B, 1, ..., 1]."""
        a, g2 = self.alpha_bar(t, like), (self.skip_grain if std is None else std) ** 2
        return a.sqrt() * g2 / (a * g2 + 1 - a)

    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """What the network is trained to output: eps, x0 (less w(t) x_t with `skip_grain`) or
        v = sqrt(a) eps - sqrt(1 - a) x0."""
        if self.prediction == "eps":
            return noise
        if self.prediction == "x0":
            if self.skip_grain:
                return x0.float() - self.grain_gain(t, x0.float()) * self.q_sample(x0, t, noise)
            return x0
        a = self.alpha_bar(t, x0)
        return a.sqrt() * noise - (1 - a).sqrt() * x0                        # Salimans & Ho, sec. 4

    def to_x0_eps(self, pred: Tensor, x_t: Tensor, t: Tensor) -> Prediction:
        """Any prediction -> (x0_hat, eps_hat), using x_t = sqrt(a) x0 + sqrt(1 - a) eps."""
        pred, x_t = pred.float(), x_t.float()
        a = self.alpha_bar(t, x_t)
        if self.prediction == "eps":
            return Prediction((x_t - (1 - a).sqrt() * pred) / a.sqrt(), pred)
        if self.prediction == "x0":
            if self.skip_grain:
                pred = pred + self.grain_gain(t, x_t) * x_t
            return Prediction(pred, (x_t - a.sqrt() * pred) / (1 - a).sqrt())
        return Prediction(a.sqrt() * x_t - (1 - a).sqrt() * pred, (1 - a).sqrt() * x_t + a.sqrt() * pred)

    def from_x0(self, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """The prediction named by `prediction` that `to_x0_eps` turns into x0_hat = x0 (its inverse)."""
        x0, x_t = x0.float(), x_t.float()
        a = self.alpha_bar(t, x_t)
        if self.prediction == "x0":
            return x0 - self.grain_gain(t, x_t) * x_t if self.skip_grain else x0
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        return eps if self.prediction == "eps" else a.sqrt() * eps - (1 - a).sqrt() * x0

    def keeping_grain(self, denoise: Denoise, std: float) -> Denoise:
        """`denoise` with the grain it smooths away put back: each x0 estimate m becomes
        m + w(t) (x_t - sqrt(a) m), the posterior mean of x0 = m + white N(0, g^2) grain given x_t
        (w as in `grain_gain`, g = `std` in network units). Exact where the network draws the film and none
        of its grain: a denoiser that returns the mean of N(m, g^2) data becomes that data's exact
        denoiser. At high noise w ~ 0 and nothing changes. For sampling only: training still fits the
        plain x0 (docs/experiments.md#keep-grain)."""
        if std <= 0:
            return denoise

        def kept(x_t: Tensor, t: Tensor) -> Tensor:
            m = self.to_x0_eps(denoise(x_t, t), x_t, t).x0
            a = self.alpha_bar(t, m)
            return self.from_x0(m + self.grain_gain(t, m, std) * (x_t.float() - a.sqrt() * m), x_t, t)

        return kept

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at t [B], float64."""
        a = self._at("alpha_bar", t, self.alphas_cumprod).reshape(-1)
        return a / (1 - a)

    def loss(self, pred: Tensor, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """Per-sample training loss [B]: mean squared error to `target`, weighted as constructed.

        min-SNR (Hang et al. 2023, eq. 10) expressed for each target: the x0-space weight
        min(SNR, gamma) becomes min(SNR, gamma) / SNR for eps and min(SNR, gamma) / (SNR + 1) for v.
        The floor raises the x0-space weight to at least that value: min(SNR, gamma) alone is ~0.007
        at t = 700 of the linear schedule, so what a noisy frame must become is barely trained.
        """
        err = (pred.float() - self.target(x0, noise, t).float()).pow(2).flatten(1).mean(1)
        if self.loss_weighting == "none":
            return err
        snr = self.snr(t)
        clipped = snr.clamp(min=self.min_snr_floor, max=self.min_snr_gamma)
        weight = {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1)}[self.prediction]
        return err * weight.float()

    # ---------------------------------------------------------------------------- sampling
    def alpha_bar_at(self, t: int, like: Tensor) -> Tensor:
        """alpha_bar at one timestep t (an int; -1: the clean image, 1) as [1, ..., 1] like `like`."""
        return self._scalar("alpha_bar", t if t >= 0 else self.timesteps, like)

    def beta_at(self, t: int, like: Tensor) -> Tensor:
        """beta_t at one timestep t (an int) as [1, ..., 1] like `like`."""
        return self._scalar("betas", t, like)

    def steps_for(self, steps: int | None, spacing: str = "trailing") -> list[int]:
        """Descending timesteps for a sampler run: all T, or about `steps` of them, spaced
        "trailing": evenly in t from T - 1 down to 0 (Lin et al. 2024: 'leading' spacing never visits
        the noisiest step); or "karras": evenly in sigma^(1/7) between min(sigma(T - 1), `SIGMA_MAX`) and
        sigma(0) (Karras et al. 2022, eq. 5, rho = 7), which spends most steps at low noise, where the finest
        detail is drawn. Timesteps are integers, so karras may give fewer distinct steps than asked (a
        few at 50 steps of 1000; the sample CLI says so)."""
        if steps is None or steps >= self.timesteps:
            return list(range(self.timesteps - 1, -1, -1))
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if spacing == "trailing":
            points = np.linspace(self.timesteps - 1, 0, steps)
        elif spacing == "karras":
            sigma = self._sigmas
            rho = 7.0
            hi, lo = min(sigma[-1], SIGMA_MAX) ** (1 / rho), sigma[0] ** (1 / rho)
            wanted = (hi + np.linspace(0, 1, steps) * (lo - hi)) ** rho
            points = np.interp(np.log(wanted), np.log(sigma), np.arange(self.timesteps))
        else:
            raise ValueError(f"spacing {spacing!r}: use trailing or karras")
        return sorted({int(round(t)) for t in points}, reverse=True)

    def visits(self, settings: "SamplerSettings", strength: float = 1.0) -> list[int]:
        """The descending timesteps a run with `settings` visits: `steps_for` (every T for ddpm, whose
        ancestral step goes from t to t - 1), and for image-to-image (strength < 1) those at or below
        strength * T."""
        every = self.steps_for(None if settings.sampler == "ddpm" else settings.steps, settings.spacing)
        return every if strength >= 1.0 else [t for t in every if t <= strength * self.timesteps - 1]

    def predictor(self, denoise: Denoise, clip: bool = False) -> Predict:
        """`denoise` as the samplers call it: `predict(x_t, t)` at one timestep t (an int; t = -1 never
        asked) -> Prediction (x0_hat, eps_hat). clip: x0_hat clamped to [-1, 1] and eps_hat re-derived from it,
        so the update stays consistent."""
        def predict(x_t: Tensor, t: int) -> Prediction:
            tt = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
            pred = self.to_x0_eps(denoise(x_t, tt), x_t, tt)
            if not clip:
                return pred
            a = self.alpha_bar(tt, x_t)
            x0 = pred.x0.clamp(-1, 1)
            return Prediction(x0, (x_t.float() - a.sqrt() * x0) / (1 - a).sqrt())
        return predict

    @torch.no_grad()
    def sample(self, denoise: Denoise, shape: Sequence[int], sampler: str = "ddpm", steps: int | None = None,
               eta: float = 0.0, generator: Generators = None, x_init: Tensor | None = None,
               strength: float = 1.0, *, spacing: str = "trailing", clip: bool = False, tail: int | None = None,
               noise: Tensor | None = None, device: torch.device | str | None = None,
               progress: bool = False) -> Tensor:
        """Draw x_0 [shape] by running `denoise` from noise (or from `x_init` noised to `strength`): the
        sampler by name (contract: docs/design.md), the loop `run` with `SAMPLERS[sampler]`.

        strength in (0, 1]: image-to-image starts at the timestep strength * T from x_init (1 = pure noise;
        x_init ignored). spacing, clip, tail: `SamplerSettings`. noise: the draws made ahead, [K, *shape] on
        `device`, in the order they are used (`Noise`); None draws them from `generator` as needed.
        """
        settings = SamplerSettings(sampler, steps, eta, spacing, clip, tail)
        device = device or (x_init.device if x_init is not None else "cpu")
        return run(self, denoise, settings, Noise(shape, generator, device, noise),
                   image_to_image(x_init, strength), progress)

    @torch.no_grad()
    def invert(self, denoise: Denoise, x0: Tensor, steps: int | None = None, spacing: str = "trailing",
               refine: int = 2, progress: bool = False) -> Tensor:
        """The start noise from which deterministic DDIM over `steps_for(steps, spacing)` draws x0 [B, ...]
        (`ddim_inversion`)."""
        with tqdm(desc="invert", unit="call", leave=False, disable=not progress) as bar:
            return ddim_inversion(counted(self.predictor(denoise), bar), self, x0.float().clone(),
                                  self.steps_for(steps, spacing), refine)


Predict = Callable[[Tensor, int], Prediction]


class SamplerSettings(NamedTuple):
    """How a sampler run goes: which sampler (`SAMPLERS`), its steps and their spacing (`steps_for`; None =
    all T), eta (DDIM / DPM++: 0 deterministic, 1 = DDPM's variance), whether x0_hat is clipped, and `tail`:
    eta acts only at the steps from timesteps t <= tail (a stochastic tail after a deterministic start; DDIM
    and DPM++ only), None at every step."""
    sampler: str = "ddim"
    steps: int | None = 50
    eta: float = 0.0
    spacing: str = "trailing"
    clip: bool = False
    tail: int | None = None

    def eta_at(self, t: int) -> float:
        """The eta of the step from timestep t."""
        return self.eta if self.tail is None or t <= self.tail else 0.0


class Init(NamedTuple):
    """Image-to-image: the run starts from `image` [B, ...] noised to the timestep strength * T."""
    image: Tensor
    strength: float


def image_to_image(x_init: Tensor | None, strength: float) -> Init | None:
    """The one rule for a start image: it counts only with strength < 1 (strength 1 is pure noise)."""
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    return Init(x_init, strength) if x_init is not None and strength < 1.0 else None


class Noise:
    """A run's fresh noise in the order it is used (the start, then each stochastic step's): drawn from
    the frames' generators as needed, or taken from `ahead` [K, *shape], draws made ahead (a CUDA graph's
    buffer; nothing is then read back to the host, and a run that takes more or fewer than K is refused).
    `start` [*shape]: the start given (one specimen's, an inverted frame's) in place of the generators' first
    draw, so their later draws are the steps' noise either way."""

    def __init__(self, shape: Sequence[int], generator: Generators = None, device: torch.device | str = "cpu",
                 ahead: Tensor | None = None, start: Tensor | None = None):
        if ahead is not None and start is not None:
            raise ValueError("noise: give the start inside the draws made ahead, not beside them")
        self.shape, self.generator, self.device, self.ahead, self.used = tuple(shape), generator, device, ahead, 0
        self.start = start

    def next(self) -> Tensor:
        self.used += 1
        if self.ahead is not None:
            if self.used > len(self.ahead):
                raise ValueError(f"noise: {len(self.ahead)} draws given, this run takes more")
            return self.ahead[self.used - 1]
        z = randn(self.shape, self.generator, self.device)
        return self.start.to(self.device) if self.start is not None and self.used == 1 else z

    def check_spent(self) -> None:
        if self.ahead is not None and self.used != len(self.ahead):
            raise ValueError(f"noise: {len(self.ahead)} draws given, this run took {self.used}")


def counted(predict: Predict, bar: tqdm) -> Predict:
    """`predict` that counts its network calls on a progress bar."""
    def call(x_t: Tensor, t: int) -> Prediction:
        bar.update()
        return predict(x_t, t)
    return call


@torch.no_grad()
def run(d: GaussianDiffusion, denoise: Denoise, settings: SamplerSettings, noise: Noise, init: Init | None = None,
        progress: bool = False) -> Tensor:
    """One sampler run: the start (noise, or `init` noised to its strength), then the sampler's loop over
    the timesteps it visits down to the clean image. Every sampler shares this start and noise source."""
    if settings.sampler not in SAMPLERS:
        raise ValueError(f"sampler {settings.sampler!r}: use {', '.join(SAMPLERS)}")
    if settings.tail is not None and settings.sampler not in ("ddim", "dpmpp2m"):
        raise ValueError(f"a stochastic tail needs ddim or dpmpp2m (their eta), not {settings.sampler}")
    ts = d.visits(settings, init.strength if init else 1.0)
    z = noise.next()
    if init is None:
        x = z
    elif not ts:                                           # below one timestep: nothing to denoise
        return init.image.float().to(noise.device).clone()
    else:                                                  # "start from the middle": x_init noised to ts[0]
        x = d.q_sample(init.image.to(noise.device), torch.full((len(z),), ts[0], device=z.device), z)
    with tqdm(desc=settings.sampler, unit="call", leave=False, disable=not progress) as bar:
        x = SAMPLERS[settings.sampler].loop(counted(d.predictor(denoise, settings.clip), bar), d, x, ts, settings,
                                            noise)
    noise.check_spent()
    return x


# ------------------------------------------------------------------------------- the samplers
# Each is one loop over the descending timesteps `ts` (from x at ts[0] to the clean image, "t = -1"),
# calling `predict(x, t)` for (x0_hat, eps_hat) and `noise.next()` for fresh noise; `run` hands them the start.

def pairs(ts: list[int]) -> Iterator[tuple[int, int]]:
    """(t, t_prev) for each step, the last one into the clean image (t_prev = -1)."""
    return zip(ts, ts[1:] + [-1])


def ddpm(predict: Predict, d: GaussianDiffusion, x: Tensor, ts: list[int], s: SamplerSettings,
         noise: Noise) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) over every timestep: x_{t-1} drawn from the
    posterior q(x_{t-1} | x_t, x0_hat) (eqs. 6-7); the last step, t = 0, adds no noise."""
    for t, t_prev in pairs(ts):
        pred = predict(x, t)
        x = ddpm_step(x, pred.x0, d.alpha_bar_at(t, x), d.alpha_bar_at(t - 1, x), d.beta_at(t, x),
                      noise.next() if t_prev >= 0 else None)
    return x


def ddim(predict: Predict, d: GaussianDiffusion, x: Tensor, ts: list[int], s: SamplerSettings,
         noise: Noise) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12 with sigma from eq. 16 scaled by eta): eta 0 is the deterministic
    sampler, eta 1 DDPM's posterior variance at any step size; the last step adds no noise (sigma 0)."""
    for t, t_prev in pairs(ts):
        pred, eta = predict(x, t), s.eta_at(t)
        z = noise.next() if eta > 0 and t_prev >= 0 else None
        x = ddim_step(pred, d.alpha_bar_at(t, x), d.alpha_bar_at(t_prev, x), eta, z)
    return x


def dpmpp2m(predict: Predict, d: GaussianDiffusion, x: Tensor, ts: list[int], s: SamplerSettings,
            noise: Noise) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2; eta > 0: its SDE form, `dpmpp2m_step`). First order
    at the first step and at the step into the last timestep (t = 0), whose logSNR jump is the largest
    (extrapolating across it, r = h_prev / h ~ 0.3, overshoots); the step into the clean image, an
    infinite logSNR step, is x0_hat itself."""
    previous = None                                        # the last step's (x0_hat, h)
    for t, t_next in zip(ts, ts[1:]):
        x0_hat, eta = predict(x, t).x0, s.eta_at(t)
        z = noise.next() if eta > 0 else None
        x, previous = dpmpp2m_step(x, x0_hat, d.alpha_bar_at(t, x), d.alpha_bar_at(t_next, x),
                                   previous if t_next != ts[-1] else None, eta, z)
    return predict(x, ts[-1]).x0


def heun(predict: Predict, d: GaussianDiffusion, x: Tensor, ts: list[int], s: SamplerSettings,
         noise: Noise) -> Tensor:
    """EDM's deterministic sampler (Karras et al. 2022, Algorithm 1) on this schedule's timesteps: the
    probability-flow ODE dx~/dsigma = (x~ - x0_hat) / sigma in x~ = x_t / sqrt(a), sigma = sqrt((1 - a) / a),
    an Euler step (line 8) and Heun's trapezoid correction (lines 9-11) at every step but the last, the
    Euler step into sigma = 0, which lands on x0_hat. 2 * len(ts) - 1 network calls."""
    for t, t_prev in pairs(ts):
        a_t, a_prev = d.alpha_bar_at(t, x), d.alpha_bar_at(t_prev, x)
        sigma_t, sigma_prev = ((1 - a_t) / a_t).sqrt(), ((1 - a_prev) / a_prev).sqrt()
        x_tilde = x / a_t.sqrt()
        slope = (x_tilde - predict(x, t).x0) / sigma_t                               # line 7
        euler = x_tilde + (sigma_prev - sigma_t) * slope                              # line 8
        if t_prev >= 0:                                                               # lines 9-11
            slope_prev = (euler - predict(euler * a_prev.sqrt(), t_prev).x0) / sigma_prev
            euler = x_tilde + (sigma_prev - sigma_t) * (slope + slope_prev) / 2
        x = euler * a_prev.sqrt()
    return x


def ddim_inversion(predict: Predict, d: GaussianDiffusion, x: Tensor, ts: list[int], refine: int) -> Tensor:
    """DDIM run backwards (Song et al. 2021, sec. 4.3; Mokady et al. 2023): from the clean x [B, ...] up
    the descending timesteps `ts` to the start noise from which `ddim` at eta 0 over `ts` draws x.

    Each DDIM step maps x_n (at the noisier t) to x_t = sqrt(a_t) x0_hat(x_n) + sqrt(1 - a_t) eps_hat(x_n);
    inverting it means finding x_n given x_t. With eps taken at the point itself, x_n = sqrt(a_n) (x_t -
    sqrt(1 - a_t) eps) / sqrt(a_t) + sqrt(1 - a_n) eps is the usual explicit inversion (error ~ the step's
    change of eps); `refine` more calls per step evaluate eps at the new x_n and solve again, a fixed-point
    iteration that converges to the exact inverse where the steps are small (Pan et al. 2023)."""
    up = ts[::-1]
    for t_from, t in zip([-1] + up[:-1], up):
        a_from, a_to = d.alpha_bar_at(t_from, x), d.alpha_bar_at(t, x)
        guess = x if t_from >= 0 else a_to.sqrt() * x            # the clean image, noised to t, to start
        for _ in range(1 + refine):
            eps = predict(guess, t).eps
            clean = (x - (1 - a_from).sqrt() * eps) / a_from.sqrt()
            guess = a_to.sqrt() * clean + (1 - a_to).sqrt() * eps
        x = guess
    return x


class Sampler(NamedTuple):
    """A sampler by name: its loop, and whether it adds fresh noise at its steps for a given eta."""
    loop: Callable[[Predict, GaussianDiffusion, Tensor, list[int], SamplerSettings, Noise], Tensor]
    stochastic: Callable[[float], bool]


SAMPLERS: dict[str, Sampler] = {
    "ddpm": Sampler(ddpm, lambda eta: True),
    "ddim": Sampler(ddim, lambda eta: eta > 0),
    "dpmpp2m": Sampler(dpmpp2m, lambda eta: eta > 0),
    "heun": Sampler(heun, lambda eta: False),
}


# -------------------------------------------------------------------------- the update steps
def ddpm_step(x_t: Tensor, x0_hat: Tensor, a_t: Tensor, a_prev: Tensor, beta: Tensor,
              noise: Tensor | None) -> Tensor:
    """Ancestral step (Ho et al. eqs. 6-7): the mean of q(x_{t-1} | x_t, x0_hat) + sqrt(beta_tilde) z (the
    mean alone for noise None: the last step, t = 0, has beta_tilde 0). Tensors broadcast as [B, 1, ...]."""
    mean = (a_prev.sqrt() * beta / (1 - a_t)) * x0_hat + ((1 - beta).sqrt() * (1 - a_prev) / (1 - a_t)) * x_t
    var = beta * (1 - a_prev) / (1 - a_t)                                     # beta_tilde, eq. 7
    return mean if noise is None else mean + var.sqrt() * noise


def ddim_step(pred: Prediction, a_t: Tensor, a_prev: Tensor, eta: float, noise: Tensor | None) -> Tensor:
    """One DDIM update (Song et al. 2021, eq. 12); sigma from eq. 16. Tensors broadcast as [B, 1, ...].
    noise None: no noise term (eta 0, or the last step, where sigma is 0)."""
    sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).clamp(min=0).sqrt()
    x = a_prev.sqrt() * pred.x0 + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * pred.eps
    return x if noise is None else x + sigma * noise


def dpmpp2m_step(x_t: Tensor, x0_hat: Tensor, a_t: Tensor, a_next: Tensor, previous: tuple[Tensor, Tensor] | None,
                 eta: float = 0.0, noise: Tensor | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One DPM-Solver++(2M) update from t to the next (less noisy) timestep, in lambda = log(alpha / sigma)
    with alpha = sqrt(a), sigma = sqrt(1 - a), h = lambda_next - lambda_t (Lu et al. 2022, Algorithm 2).

    eta = 0: the ODE solver, x_next = (sigma_n / sigma_t) x_t + alpha_n (1 - e^-h) D. eta > 0: the SDE
    form (ibid., the data-prediction SDE solver), which keeps a fraction e^(-eta h) of the path and
    adds fresh noise in its place: x_next = (sigma_n / sigma_t) e^(-eta h) x_t
    + alpha_n (1 - e^(-(1 + eta) h)) D + sigma_n sqrt(1 - e^(-2 eta h)) noise; at eta 1 and first
    order that is DDPM's posterior step from t to t_next. D = x0_hat at the first step; after it the
    2M corrector D = x0_hat + (x0_hat - x0_prev) / (2 r), r = h_prev / h, with the (1 - e^(-(1 + eta) h))
    of the step itself (the midpoint form; eta 0 gives Algorithm 2 exactly).
    `previous` is the last step's (x0_hat, h), None at the first step. a_next < 1: the step into the
    clean image (sigma 0, an infinite lambda step) is x0_hat itself at first order, the usual remedy for
    the huge last logSNR jump of few-step runs; `dpmpp2m` takes it without this function (no branch on a
    tensor's value here: nothing is read back to the host). Returns x_next and (x0_hat, h)."""
    alpha_t, sigma_t = a_t.sqrt(), (1 - a_t).sqrt()
    alpha_n, sigma_n = a_next.sqrt(), (1 - a_next).sqrt()
    h = torch.log(alpha_n / sigma_n) - torch.log(alpha_t / sigma_t)           # lambda_next - lambda_t > 0
    d = x0_hat
    if previous is not None:
        r = previous[1] / h                                                   # r_i = h_{i-1} / h_i
        d = x0_hat + (x0_hat - previous[0]) / (2 * r)                         # the (2M) corrector
    x_next = (sigma_n / sigma_t) * torch.exp(-eta * h) * x_t - alpha_n * torch.expm1(-(1 + eta) * h) * d
    if eta > 0:
        x_next = x_next + sigma_n * (-torch.expm1(-2 * eta * h)).sqrt() * noise
    return x_next, (x0_hat, h)
