"""The config contract: TOML in, dotted overrides, every mistake named."""
import pytest

from thinfilm.config import Config, ConfigError, from_dict, load_config, to_toml
from thinfilm.unet import UNet


def test_defaults_are_the_researchers_design():
    cfg = Config()
    assert cfg.model.channels == [128, 128, 256, 256, 512, 512] and cfg.model.attention_levels == [4]
    t = cfg.train
    assert (t.lr, t.betas, t.weight_decay, t.warmup_steps, t.grad_clip) == (1e-4, [0.95, 0.999], 1e-6, 500, 1.0)
    assert (t.ema_max_decay, t.ema_inv_gamma, t.ema_power) == (0.9999, 1.0, 0.75)
    assert cfg.data.roi == [678, 0, 767, 2452] and cfg.data.normalize == "zscore"


def test_round_trip_through_toml(tmp_path):
    cfg = load_config("experiments/default.toml", ["train.steps=7", "data.root=/mnt/films", "data.roi=[1,2,3,4]"])
    path = tmp_path / "c.toml"
    path.write_text(to_toml(cfg))
    again = load_config(path)
    assert again == cfg
    assert from_dict(cfg.to_dict()) == cfg


def test_overrides_parse_as_toml_or_bare_strings():
    cfg = load_config(None, ["train.steps=2000", "data.normalize=none", 'data.root="C:\\\\films"',
                             "train.lr=3e-4", "train.lr_schedule=constant", "data.columns=['a','b']"])
    assert cfg.train.steps == 2000 and cfg.data.normalize == "none" and cfg.data.root == "C:\\films"
    assert cfg.train.lr == 3e-4 and cfg.data.columns == ["a", "b"]
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0          # int widens to float


@pytest.mark.parametrize("override,message", [
    ("nosuch.key=1", "unknown section [nosuch]; valid sections: data, model"),
    ("train.stepz=1", "unknown key train.stepz; valid keys in [train]: steps"),
    ("train.steps=abc", "train.steps: expected int, got str 'abc'"),
    ("train.steps=1.5", "train.steps: expected int, got float"),
    ("data.synthetic=1", "data.synthetic: expected bool, got int"),
    ("data.roi=[1,2,'x',4]", "data.roi[2]: expected int, got str"),
    ("data.roi=5", "data.roi: expected a list of int, got int"),
    ("data.normalize=mean", "data.normalize: 'mean' is not one of zscore, minmax, none"),
    ("trainsteps=3", "expected section.key=value"),
])
def test_override_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=None) as err:
        load_config(None, [override])
    assert message in str(err.value)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nsteps = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    bad.write_text("[train]\nbatchsize = 3\n")
    with pytest.raises(ConfigError, match=r"bad.toml: unknown key train.batchsize"):
        load_config(bad)


@pytest.mark.parametrize("name", ["default", "pmma_256", "pmma_512"])
def test_shipped_experiments_build(name):
    cfg = load_config(f"experiments/{name}.toml")
    with __import__("torch").device("meta"):
        net = UNet.from_config(cfg)
    assert net.resolution == cfg.data.resolution and net.n_conditions == len(cfg.data.columns)
