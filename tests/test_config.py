"""The config contract: TOML in, dotted overrides, every mistake named before any work."""
import re

import pytest

from thinfilm import train
from thinfilm.config import Config, ConfigError, frame_size, from_dict, load_config, to_toml, validate
from thinfilm.unet import UNet

from conftest import DEFAULT, REPO


def test_defaults_are_the_researchers_design():
    cfg = Config()
    assert cfg.model.channels == [128, 128, 256, 256, 512, 512] and cfg.model.attention_levels == [4]
    t = cfg.train
    assert (t.lr, t.betas, t.weight_decay, t.warmup_steps, t.grad_clip) == (1e-4, [0.95, 0.999], 1e-6, 500, 1.0)
    assert (t.ema_max_decay, t.ema_inv_gamma, t.ema_power) == (0.9999, 1.0, 0.75)
    assert cfg.data.roi == [678, 0, 767, 2452] and cfg.data.normalize == "zscore"


def test_round_trip_through_toml(tmp_path):
    cfg = load_config(DEFAULT, ["train.steps=7", "data.root=/mnt/films", "data.roi=[1,2,3,4]"])
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


@pytest.mark.parametrize("name", ["default", "pmma_256", "pmma_512", "pmma_256_original", "pmma_512_original",
                                  "pmma_256_wide", "pmma_512_wide"])
def test_shipped_experiments_build(name):
    cfg = load_config(str(REPO / "experiments" / f"{name}.toml"))
    with __import__("torch").device("meta"):
        net = UNet.from_config(cfg)
    assert net.frame_shape == (1, *frame_size(cfg.data)) and net.n_conditions == len(cfg.data.columns)


BAD_VALUES = [
    ("data.resolution=100", "data.resolution = 100 is not divisible by 16 (model.patch_size 2 x 2^3"),
    ("model.attention_levels=[5]", "model.attention_levels = [5]: levels are 0..3"),
    ("data.roi=[0, 0, 767]", "data.roi = [0, 0, 767]: give [top, left, height, width]"),
    ("train.zoom=1.5", "train.zoom = 1.5: give a fraction in [0, 1)"),
    ('train.zoom_columns=["x5", "x9"]', "train.zoom_columns: x9 not in data.columns"),
    ("train.fracture_repeat=0", "train.fracture_repeat = 0: give a whole number >= 1"),
    ("train.fracture_load=load", "train.fracture_load: load not in data.columns"),
    ("diffusion.min_snr_floor=6", "diffusion.min_snr_floor = 6.0: give a weight in [0, min_snr_gamma = 5]"),
    ("diffusion.loss_weighting=none", "min_snr_floor = 0.3 floors the min_snr weight, but diffusion.loss_weighting"),
    ("diffusion.grain=-1", "diffusion.grain = -1.0: give 8-bit levels, or 0 to measure them"),
    ('diffusion.prediction="v"', 'skip = "grain" is a skip for x0 prediction, but diffusion.prediction = \'v\''),
    ('diffusion.skip="grain"', 'sample.keep_grain = true puts the grain back when sampling, and diffusion.skip'),
    ("train.lr=0", "train.lr = 0.0: give a positive learning rate"),
    ("train.betas=[0.9]", "train.betas = [0.9]: give two AdamW betas"),
    ("train.cond_drop_prob=1.5", "give probabilities in [0, 1]"),
    ("sample.steps=0", "sample.steps = 0: give 1 or more"),
    ("data.columns=[]", "data.columns = []: give the CSV's condition columns"),
    ("model.channels=[32, 0]", "model.channels = [32, 0]: give one positive width per level"),
    ("train.precision=fp16", 'train.sync_free with train.precision = "fp16": the loss scaler decides on the host'),
    ("data.flat_region=[600, 0, 100, 100]", "data.flat_region = [600, 0, 100, 100]: give [top, left, height, width] in "
     "camera pixels inside data.roi"),
    ("data.brightness=-1", "data.brightness = -1.0: give levels per MPa"),
    ("model.cond_fourier=-2", "model.cond_fourier = -2: give 0 (off) or a number of frequencies"),
    ("sample.guidance_interval=[700, 100]", "sample.guidance_interval = [700, 100]: give [lo, hi] timesteps"),
    ("sample.film_tail=1000", "sample.film_tail = 1000: give a timestep in 0 .. diffusion.timesteps - 1 = 999"),
    ('sample.guidance_fields=["x5", "load"]', "sample.guidance_fields: load not in data.columns"),
]
NEEDS = {"fracture_load": "train.fracture_repeat=2", "precision=fp16": "train.sync_free=true",
         "prediction": 'diffusion.skip="grain"', "skip": "sample.keep_grain=true"}   # the other half


@pytest.mark.parametrize("override,message", BAD_VALUES)
def test_validate_names_the_key(override, message):
    extra = [v for k, v in NEEDS.items() if k in override]
    with pytest.raises(ConfigError) as err:
        validate(load_config(DEFAULT, [override, *extra]))
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("override,message", BAD_VALUES[:4])
def test_bad_values_fail_before_any_data_is_touched(tmp_path, override, message):
    """The synthetic default would generate its data first: a bad value must stop the command before that."""
    data = tmp_path / "synthetic"
    with pytest.raises(ConfigError, match="^" + re.escape(message.split(":")[0])):
        train.main(["--config", DEFAULT, "--quiet", "--set", override,
                    "--set", f"data.train_csv={data / 'train.csv'}", "--set", f"data.test_csv={data / 'test.csv'}",
                    "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", f"train.out_dir={tmp_path / 'runs'}"])
    assert not data.exists() and not (tmp_path / "cache").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", ["default", "pmma_256", "pmma_512", "pmma_256_original", "pmma_512_original",
                                  "pmma_256_wide", "pmma_512_wide"])
def test_shipped_experiments_are_valid(name):
    """Each shipped experiment validates, and holds every value its file sets (nothing dropped on the way)."""
    import tomllib
    path = REPO / "experiments" / f"{name}.toml"
    cfg = validate(load_config(path))
    for section, body in tomllib.loads(path.read_text()).items():
        for key, value in body.items():
            assert getattr(getattr(cfg, section), key) == value, (section, key)
