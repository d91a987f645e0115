"""Tiny configs, a tiny synthetic dataset and the helpers that run the loop on them, shared by the tests."""
import math
import os
from pathlib import Path

import numpy as np
import pytest

from thinfilm import train
from thinfilm.config import Config, DataConfig, load_config
from thinfilm.data import synthesize
from thinfilm.diffusion import GaussianDiffusion

TINY = [
    "data.resolution=16", "model.channels=[8, 16]", "model.layers_per_block=1", "model.attention_levels=[1]",
    "model.head_channels=8", "train.batch_size=4", "train.grad_accum=1", "train.warmup_steps=2",
    "train.log_every=1", "train.sample_every=1000", "train.checkpoint_every=1000", "train.sample_count=2",
    "sample.steps=3", "sample.batch_size=4", "data.synthetic=false", "train.precision=fp32",
]
COLS = [f"x{i}" for i in range(1, 9)]
REPO = Path(__file__).parents[1]
DEFAULT = str(REPO / "experiments" / "default.toml")       # absolute: the suite runs from any folder


def python_path() -> str:
    """PYTHONPATH for a subprocess: the checkout first, then whatever the caller had."""
    return os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """4 series x 12 frames of the built-in simulator (3 train, 1 test), seed 0."""
    out = tmp_path_factory.mktemp("synthetic")
    synthesize(out, DataConfig(synthetic_series=4, synthetic_frames=12, synthetic_seed=0), progress=False)
    return out


def tiny_overrides(synth_dir: Path, tmp: Path, *extra: str) -> list[str]:
    return TINY + [f"data.train_csv={synth_dir / 'train.csv'}", f"data.test_csv={synth_dir / 'test.csv'}",
                   f"data.cache_dir={tmp / 'cache'}", f"train.out_dir={tmp / 'runs'}", *extra]


def tiny_config(synth_dir: Path, tmp: Path, *extra: str) -> Config:
    return load_config(DEFAULT, tiny_overrides(synth_dir, tmp, *extra))


def set_args(overrides: list[str]) -> list[str]:
    """["a.b=1", ...] -> ["--set", "a.b=1", ...]."""
    return [arg for o in overrides for arg in ("--set", o)]


@pytest.fixture
def run_train(synth_dir):
    """run_train(tmp, *overrides): train the default config at toy size in-process; returns the run folder
    (train.run_name, default "r")."""
    def run(tmp: Path, *extra: str) -> Path:
        name = next((e.split("=", 1)[1] for e in extra if e.startswith("train.run_name=")), "r")
        train.main(["--config", DEFAULT, "--quiet",
                    *set_args(tiny_overrides(synth_dir, tmp, f"train.run_name={name}", *extra))])
        return tmp / "runs" / name
    return run


@pytest.fixture(scope="session")
def tiny_ckpt(synth_dir, tmp_path_factory) -> Path:
    """The last checkpoint of a 2-step run of the default config at toy size (shared, read-only)."""
    tmp = tmp_path_factory.mktemp("tiny_ckpt")
    train.main(["--config", DEFAULT, "--quiet",
                *set_args(tiny_overrides(synth_dir, tmp, "train.steps=2", "train.run_name=s"))])
    return tmp / "runs" / "s" / "checkpoints" / "last.pt"


def white_grain_std(d: GaussianDiffusion, sampler: str, steps, eta: float, spacing: str, g: float) -> float:
    """The std a sampler draws for white N(0, g^2) data with its exact denoiser, derived in float64 apart from
    the code under test: x0_hat = w(t) x_t is linear, so every step is affine in x and its fresh noise, and x
    is tracked as coefficients over the independent standard normal sources (the start, each step's z); the
    std is their norm. Steps written from the papers: DDPM Ho et al. eqs. 6-7; DDIM Song et al. eqs. 12, 16;
    DPM-Solver++(2M) Lu et al. Algorithm 2 (first order at the first step and into t = 0, x0_hat into the clean
    image; eta > 0 its SDE form); Heun Karras et al. Algorithm 1."""
    a_bar = d.alphas_cumprod.numpy()
    ts = list(range(d.timesteps - 1, -1, -1)) if sampler == "ddpm" else d.steps_for(steps, spacing)
    a = lambda t: 1.0 if t < 0 else float(a_bar[t])  # noqa: E731
    w = lambda t: math.sqrt(a(t)) * g * g / (a(t) * g * g + 1 - a(t))  # noqa: E731
    x, prev, n = np.zeros(2 * len(ts) + 2), None, 1
    x[0] = 1.0

    def fresh(scale):
        nonlocal n
        z = np.zeros_like(x)
        z[n] = scale
        n += 1
        return z

    for i, t in enumerate(ts):
        s = ts[i + 1] if i + 1 < len(ts) else -1
        x0 = w(t) * x
        if sampler == "ddpm":
            beta = float(d.betas[t])
            x = (math.sqrt(a(t - 1)) * beta * x0 + math.sqrt(1 - beta) * (1 - a(t - 1)) * x) / (1 - a(t)) \
                + (fresh(math.sqrt(beta * (1 - a(t - 1)) / (1 - a(t)))) if t > 0 else 0)
        elif sampler == "ddim":
            sigma = eta * math.sqrt((1 - a(s)) / (1 - a(t)) * (1 - a(t) / a(s))) if s >= 0 else 0.0
            eps = (x - math.sqrt(a(t)) * x0) / math.sqrt(1 - a(t))
            x = math.sqrt(a(s)) * x0 + math.sqrt(max(0.0, 1 - a(s) - sigma**2)) * eps + (fresh(sigma) if sigma else 0)
        elif sampler == "heun":
            sig_t, sig_s = math.sqrt((1 - a(t)) / a(t)), math.sqrt((1 - a(s)) / a(s))
            xt = x / math.sqrt(a(t))
            slope = (xt - x0) / sig_t
            euler = xt + (sig_s - sig_t) * slope
            if s >= 0:
                euler = xt + (sig_s - sig_t) * (slope + (euler - w(s) * euler * math.sqrt(a(s))) / sig_s) / 2
            x = euler * math.sqrt(a(s))
        elif s < 0:                                                      # dpmpp2m into the clean image
            x = x0
        else:
            lam = lambda u: 0.5 * math.log(a(u) / (1 - a(u)))  # noqa: E731
            h = lam(s) - lam(t)
            dd = x0 if prev is None or s == ts[-1] else x0 + (x0 - prev[0]) / (2 * prev[1] / h)
            x = math.sqrt((1 - a(s)) / (1 - a(t))) * math.exp(-eta * h) * x \
                + math.sqrt(a(s)) * (1 - math.exp(-(1 + eta) * h)) * dd \
                + (fresh(math.sqrt(1 - a(s)) * math.sqrt(1 - math.exp(-2 * eta * h))) if eta else 0)
            prev = (x0, h)
    return float(np.linalg.norm(x))
