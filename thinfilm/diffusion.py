"""The diffusion core: schedules, forward process, training loss, DDPM and DDIM samplers.

It knows nothing of networks or conditions: a sampler calls `denoise(x_t, t)`, any callable that
returns the prediction named by `prediction` (eps, x0 or v) for x_t [B, ...] and t LongTensor [B].
Schedules are computed in float64 (improved-diffusion); per-step coefficients are gathered in
float64 and cast to the sample's dtype.

References: Ho et al. 2020 (DDPM), Song et al. 2021 (DDIM), Nichol & Dhariwal 2021 (cosine
schedule), Salimans & Ho 2022 (v-prediction), Hang et al. 2023 (min-SNR-gamma weighting),
Lin et al. 2024 (DDIM spacing that includes t = T - 1).
"""
from __future__ import annotations

import itertools
import math
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

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

    `grain` > 0 (x0 prediction only; the std of the data's fine grain, in x's units) passes part of
    x_t straight through: x0 = network + w(t) x_t with w(t) = sqrt(a) g^2 / (a g^2 + 1 - a), the
    posterior-mean gain of white grain of std g (a skip in the manner of Karras et al. 2022, c_skip,
    scaled to the grain instead of the whole image). At high noise w ~ 0: plain x0 prediction. At low
    noise the grain the network cannot model is kept instead of smoothed away; the samplers, exact for
    Gaussian data, then draw it with its std (docs/experiments.md#grain).
    """

    def __init__(self, schedule: str = "linear", timesteps: int = 1000, prediction: str = "eps",
                 loss_weighting: str = "none", min_snr_gamma: float = 5.0, min_snr_floor: float = 0.0,
                 grain: float = 0.0):
        if schedule not in ("linear", "cosine"):
            raise ValueError(f"schedule {schedule!r}: use linear or cosine")
        if prediction not in ("eps", "x0", "v"):
            raise ValueError(f"prediction {prediction!r}: use eps, x0 or v")
        if loss_weighting not in ("none", "min_snr"):
            raise ValueError(f"loss_weighting {loss_weighting!r}: use none or min_snr")
        if grain < 0 or (grain > 0 and prediction != "x0"):
            raise ValueError(f"grain {grain}: give 0, or a positive std with x0 prediction")
        self.grain = grain
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
        grain = d.grain / LEVELS if d.skip == "grain" else 0.0          # 8-bit levels -> the network's units
        return cls(d.schedule, d.timesteps, d.prediction, d.loss_weighting, d.min_snr_gamma, d.min_snr_floor,
                   grain)

    # ----------------------------------------------------------------------------- helpers
    def _at(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """table[t] as [B, 1, ..., 1] in like's dtype (gathered in float64 on t's device)."""
        key = (name, t.device)
        if key not in self._on_device:
            self._on_device[key] = self._tables[name].to(t.device)
        return self._on_device[key][t].to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))

    def alpha_bar(self, t: Tensor, like: Tensor) -> Tensor:
        """alpha_bar_t broadcast like `like`; t = -1 means alpha_bar = 1 (the clean image)."""
        return self._at("alpha_bar", torch.where(t < 0, torch.full_like(t, self.timesteps), t), like)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Forward process (Ho et al. eq. 4): x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps, in float32."""
        x0, noise = x0.float(), noise.float()
        a = self.alpha_bar(t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def passed(self, t: Tensor, like: Tensor, grain: float | None = None) -> Tensor:
        """w(t) = sqrt(a) g^2 / (a g^2 + 1 - a) for g = `grain` (default: the skip's): the posterior-mean
        gain of white N(0, g^2) grain seen in x_t, i.e. E[grain | x_t] = w(t) x_t. [B, 1, ..., 1]."""
        a, g2 = self.alpha_bar(t, like), (self.grain if grain is None else grain) ** 2
        return a.sqrt() * g2 / (a * g2 + 1 - a)

    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """What the network is trained to output: eps, x0 (less w(t) x_t with `grain`) or
        v = sqrt(a) eps - sqrt(1 - a) x0."""
        if self.prediction == "eps":
            return noise
        if self.prediction == "x0":
            if self.grain:
                return x0.float() - self.passed(t, x0.float()) * self.q_sample(x0, t, noise)
            return x0
        a = self.alpha_bar(t, x0)
        return a.sqrt() * noise - (1 - a).sqrt() * x0                        # Salimans & Ho, sec. 4

    def split(self, pred: Tensor, x_t: Tensor, t: Tensor) -> Prediction:
        """Any prediction -> (x0_hat, eps_hat), using x_t = sqrt(a) x0 + sqrt(1 - a) eps."""
        pred, x_t = pred.float(), x_t.float()
        a = self.alpha_bar(t, x_t)
        if self.prediction == "eps":
            return Prediction((x_t - (1 - a).sqrt() * pred) / a.sqrt(), pred)
        if self.prediction == "x0":
            if self.grain:
                pred = pred + self.passed(t, x_t) * x_t
            return Prediction(pred, (x_t - a.sqrt() * pred) / (1 - a).sqrt())
        return Prediction(a.sqrt() * x_t - (1 - a).sqrt() * pred, (1 - a).sqrt() * x_t + a.sqrt() * pred)

    def join(self, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """The prediction named by `prediction` that `split` turns into x0_hat = x0 (its inverse)."""
        x0, x_t = x0.float(), x_t.float()
        a = self.alpha_bar(t, x_t)
        if self.prediction == "x0":
            return x0 - self.passed(t, x_t) * x_t if self.grain else x0
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        return eps if self.prediction == "eps" else a.sqrt() * eps - (1 - a).sqrt() * x0

    def keeping_grain(self, denoise: Denoise, grain: float) -> Denoise:
        """`denoise` with the grain it smooths away put back: each x0 estimate m becomes
        m + w(t) (x_t - sqrt(a) m), the posterior mean of x0 = m + white N(0, g^2) grain given x_t
        (w as in `passed`, g = `grain` in x's units). Exact where the network draws the film and none
        of its grain: a denoiser that returns the mean of N(m, g^2) data becomes that data's exact
        denoiser. At high noise w ~ 0 and nothing changes; the samplers then end with the grain's std
        where they end at t = 0 (spacing "karras", DDPM), about half of it with "trailing" (t = 19).
        For sampling only: training still fits the plain x0 (docs/experiments.md#keep-grain)."""
        if grain <= 0:
            return denoise

        def kept(x_t: Tensor, t: Tensor) -> Tensor:
            m = self.split(denoise(x_t, t), x_t, t).x0
            a = self.alpha_bar(t, m)
            return self.join(m + self.passed(t, m, grain) * (x_t.float() - a.sqrt() * m), x_t, t)

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
    def steps_for(self, steps: int | None, spacing: str = "trailing") -> list[int]:
        """Descending timesteps for a sampler run: all T, or about `steps` of them, spaced
        "trailing": evenly in t, starting at T - 1 (Lin et al. 2024: 'leading' spacing never visits
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

    def plan(self, sampler: str, steps: int | None = None, spacing: str = "trailing",
             strength: float = 1.0) -> list[int]:
        """The descending timesteps a `sample` call visits: `steps_for` (all T for ddpm), and for
        image-to-image (strength < 1) only those at or below strength * T."""
        schedule = self.steps_for(None if sampler == "ddpm" else steps, spacing)
        return schedule if strength >= 1.0 else [t for t in schedule if t <= strength * self.timesteps - 1]

    def draws(self, sampler: str, steps: int | None = None, eta: float = 0.0, spacing: str = "trailing",
              strength: float = 1.0) -> int:
        """How many noise tensors a `sample` call draws (the length of its `noise` argument)."""
        return _draws(self.plan(sampler, steps, spacing, strength), _stochastic(sampler, eta))

    @torch.no_grad()
    def sample(self, denoise: Denoise, shape: Sequence[int], sampler: str = "ddpm", steps: int | None = None,
               eta: float = 0.0, generator: Generators = None, x_init: Tensor | None = None,
               strength: float = 1.0, clip: bool = False, device: torch.device | str | None = None,
               progress: bool = False, spacing: str = "trailing", noise: Tensor | None = None) -> Tensor:
        """Draw x_0 [shape] by running `denoise` from noise (or from `x_init` noised to `strength`).

        sampler: "ddpm" (ancestral, posterior variance beta_tilde), "ddim" (eta: 0 deterministic,
        1 = DDPM's variance) or "dpmpp2m" (DPM-Solver++(2M); eta 0: the ODE solver, eta > 0: its SDE
        form, which at eta 1 and first order is DDPM's ancestral step; `dpmpp2m_step`).
        steps: None = all T; `spacing`: how they are spread (`steps_for`).
        strength in (0, 1]: image-to-image starts at the timestep strength * T from x_init (1 = pure
        noise; x_init ignored). clip: clamp x0_hat to [-1, 1] and re-derive eps_hat from it so the
        update stays consistent.
        noise: the draws pre-drawn, [`draws(...)`, *shape] on `device`, in the order they are used (the
        start, then each stochastic step's); None draws them from `generator` as they are needed. With it,
        nothing in the loop reads a tensor back to the host: the run can be captured as a CUDA graph.
        """
        if sampler not in ("ddpm", "ddim", "dpmpp2m"):
            raise ValueError(f"sampler {sampler!r}: use ddpm, ddim or dpmpp2m")
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        device = device or (x_init.device if x_init is not None else "cpu")
        img2img = x_init is not None and strength < 1.0
        schedule = self.plan(sampler, steps, spacing, strength if img2img else 1.0)
        stochastic = _stochastic(sampler, eta)
        if noise is not None:
            needed = _draws(schedule, stochastic)
            if len(noise) != needed:
                raise ValueError(f"noise: {len(noise)} draws given, this run takes {needed}")
            draw = iter(noise)
        else:
            draw = (randn(shape, generator, device) for _ in itertools.count())
        start = next(draw)
        if img2img:
            if not schedule:
                return x_init.float().to(device).clone()
            t0 = torch.full((shape[0],), schedule[0], device=device, dtype=torch.long)
            x = self.q_sample(x_init.to(device), t0, start)               # "start from the middle"
        else:
            x = start
        from tqdm import tqdm

        previous: tuple[Tensor, Tensor] | None = None           # dpmpp2m: the last step's (x0_hat, lambda step)
        for i, t in enumerate(tqdm(schedule, desc=sampler, leave=False, disable=not progress)):
            t_prev = schedule[i + 1] if i + 1 < len(schedule) else -1
            tt = torch.full((shape[0],), t, device=device, dtype=torch.long)
            pred = self.split(denoise(x, tt), x, tt)
            if clip:
                a = self.alpha_bar(tt, x)
                x0 = pred.x0.clamp(-1, 1)
                pred = Prediction(x0, (x - a.sqrt() * x0) / (1 - a).sqrt())
            z = next(draw) if t_prev >= 0 and stochastic else None       # the last step adds no noise
            if sampler == "dpmpp2m":
                if t_prev < 0:             # into the clean image (an infinite logSNR step) at first order: x0_hat
                    x = pred.x0
                    continue
                prev = torch.full_like(tt, t_prev)
                # the step into the last timestep (t = 0) at first order as well: its logSNR jump is the
                # largest, and extrapolating across it (r = h_prev / h ~ 0.3) overshoots
                order1 = i + 2 >= len(schedule)
                x, previous = dpmpp2m_step(x, pred.x0, self.alpha_bar(tt, x), self.alpha_bar(prev, x),
                                           None if order1 else previous, eta, z)
            elif sampler == "ddpm":
                x = self.ddpm_step(x, pred, tt, z)
            else:
                prev = torch.full_like(tt, t_prev)
                x = ddim_step(pred, self.alpha_bar(tt, x), self.alpha_bar(prev, x), eta, z)
        return x

    @torch.no_grad()
    def invert(self, denoise: Denoise, x0: Tensor, steps: int | None = None, spacing: str = "trailing",
               refine: int = 2, progress: bool = False) -> Tensor:
        """DDIM inversion (Song et al. 2021, sec. 4.3; Mokady et al. 2023): the start noise x_T from which
        deterministic DDIM (eta 0) over `steps_for(steps, spacing)` draws `x0` [B, ...].

        Each DDIM step maps x_n (at the noisier timestep) to x_t = sqrt(a_t) x0_hat(x_n) + sqrt(1 - a_t)
        eps_hat(x_n), x0_hat and eps_hat from one network call at x_n; the clean image is the step into
        a_t = 1. Inverting it means finding x_n given x_t. With eps taken at the point itself,
        x_n = sqrt(a_n) (x_t - sqrt(1 - a_t) eps) / sqrt(a_t) + sqrt(1 - a_n) eps is the usual explicit
        inversion (error ~ the step's change of eps); `refine` more calls per step evaluate eps at the new
        x_n and solve again, a fixed-point iteration that converges to the exact inverse where the steps
        are small (Pan et al. 2023). `sample(..., sampler="ddim", eta=0, noise=x_T[None])` then returns x0
        up to that error, with no clipping where x0_hat stays within [-1, 1]."""
        from tqdm import tqdm

        schedule = self.steps_for(steps, spacing)[::-1]                 # ascending: 0 ... T - 1
        x = x0.float().clone()
        b = x.shape[0]
        t_from = torch.full((b,), -1, device=x.device, dtype=torch.long)  # -1: the clean image, a = 1
        for t in tqdm(schedule, desc="invert", leave=False, disable=not progress):
            tt = torch.full_like(t_from, t)
            a_from, a_to = self.alpha_bar(t_from, x), self.alpha_bar(tt, x)
            guess = x if t_from[0] >= 0 else a_to.sqrt() * x         # the clean image, noised to t, to start
            for _ in range(1 + refine):
                eps = self.split(denoise(guess, tt), guess, tt).eps
                clean = (x - (1 - a_from).sqrt() * eps) / a_from.sqrt()
                guess = a_to.sqrt() * clean + (1 - a_to).sqrt() * eps
            x, t_from = guess, tt
        return x

    def ddpm_step(self, x_t: Tensor, pred: Prediction, t: Tensor, noise: Tensor | None) -> Tensor:
        """Ancestral step (Ho et al. eqs. 6-7): mean of q(x_{t-1} | x_t, x0_hat) + sqrt(beta_tilde) z
        (the mean alone for noise None: the last step, t = 0, has beta_tilde 0)."""
        a_t = self.alpha_bar(t, x_t)
        a_prev = self.alpha_bar(t - 1, x_t)
        beta = self._at("betas", t, x_t)
        mean = (a_prev.sqrt() * beta / (1 - a_t)) * pred.x0 + ((1 - beta).sqrt() * (1 - a_prev) / (1 - a_t)) * x_t
        var = beta * (1 - a_prev) / (1 - a_t)                                 # beta_tilde, eq. 7
        return mean if noise is None else mean + var.sqrt() * noise


def _stochastic(sampler: str, eta: float) -> bool:
    """Whether a sampler adds fresh noise at its steps (DDPM always; DDIM and DPM++ for eta > 0)."""
    return sampler == "ddpm" or eta > 0


def _draws(schedule: Sequence[int], stochastic: bool) -> int:
    """Noise tensors a run over `schedule` draws: the start, then one per stochastic step that does not
    end at the clean image (the last step adds none)."""
    return 1 + stochastic * max(0, len(schedule) - 1)


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
    the huge last logSNR jump of few-step runs; `sample` takes it without this function (no branch on a
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
