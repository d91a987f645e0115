"""Tiny configs and a tiny synthetic dataset shared by the tests."""
from pathlib import Path

import pytest

from thinfilm.config import Config, load_config
from thinfilm.data import synthesize

TINY = [
    "data.resolution=16", "model.channels=[8, 16]", "model.layers_per_block=1", "model.attention_levels=[1]",
    "model.head_channels=8", "train.batch_size=4", "train.grad_accum=1", "train.warmup_steps=2",
    "train.log_every=1", "train.sample_every=1000", "train.checkpoint_every=1000", "train.sample_count=2",
    "sample.steps=3", "sample.batch_size=4", "data.synthetic=false", "train.precision=fp32",
]


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
