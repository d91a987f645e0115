"""Tiny configs, a tiny synthetic dataset and the helpers that run the loop on them, shared by the tests."""
from pathlib import Path

import pytest

from thinfilm import train
from thinfilm.config import Config, load_config
from thinfilm.data import synthesize

TINY = [
    "data.resolution=16", "model.channels=[8, 16]", "model.layers_per_block=1", "model.attention_levels=[1]",
    "model.head_channels=8", "train.batch_size=4", "train.grad_accum=1", "train.warmup_steps=2",
    "train.log_every=1", "train.sample_every=1000", "train.checkpoint_every=1000", "train.sample_count=2",
    "sample.steps=3", "sample.batch_size=4", "data.synthetic=false", "train.precision=fp32",
]
COLS = [f"x{i}" for i in range(1, 9)]
REPO = Path(__file__).parents[1]


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """4 series x 12 frames of the built-in simulator (3 train, 1 test), seed 0."""
    out = tmp_path_factory.mktemp("synthetic")
    synthesize(out, n_series=4, n_frames=12, seed=0, progress=False)
    return out


def tiny_overrides(synth_dir: Path, tmp: Path, *extra: str) -> list[str]:
    return TINY + [f"data.train_csv={synth_dir / 'train.csv'}", f"data.test_csv={synth_dir / 'test.csv'}",
                   f"data.cache_dir={tmp / 'cache'}", f"train.out_dir={tmp / 'runs'}", *extra]


def tiny_config(synth_dir: Path, tmp: Path, *extra: str) -> Config:
    return load_config("experiments/default.toml", tiny_overrides(synth_dir, tmp, *extra))


def set_args(overrides: list[str]) -> list[str]:
    """["a.b=1", ...] -> ["--set", "a.b=1", ...]."""
    return [arg for o in overrides for arg in ("--set", o)]


@pytest.fixture
def run_train(synth_dir):
    """run_train(tmp, *overrides): train the default config at toy size in-process; returns the run folder
    (train.run_name, default "r")."""
    def run(tmp: Path, *extra: str) -> Path:
        name = next((e.split("=", 1)[1] for e in extra if e.startswith("train.run_name=")), "r")
        train.main(["--config", "experiments/default.toml", "--quiet",
                    *set_args(tiny_overrides(synth_dir, tmp, f"train.run_name={name}", *extra))])
        return tmp / "runs" / name
    return run


@pytest.fixture(scope="session")
def tiny_ckpt(synth_dir, tmp_path_factory) -> Path:
    """The last checkpoint of a 2-step run of the default config at toy size (shared, read-only)."""
    tmp = tmp_path_factory.mktemp("tiny_ckpt")
    train.main(["--config", "experiments/default.toml", "--quiet",
                *set_args(tiny_overrides(synth_dir, tmp, "train.steps=2", "train.run_name=s"))])
    return tmp / "runs" / "s" / "checkpoints" / "last.pt"
