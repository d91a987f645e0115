"""Guidance as the samplers apply it: which branch it compares against, where it acts, its projection, and
a closed-form case in which guided sampling is exact."""
import pytest
import torch

from thinfilm.diffusion import GaussianDiffusion, Init
from thinfilm.sampling import Execution, Guidance, Plan, generate, guided, invert

from conftest import DEFAULT, white_grain_std

CPU = Execution(torch.device("cpu"))

MU_KNOWN, MU_UNKNOWN, STD = 0.6, -0.2, 0.25


def as_prediction(diffusion: GaussianDiffusion, x0, x_t, t):
    """x0 [B, ...] as the diffusion's prediction type, by the published formulas (eps = (x_t - sqrt(a) x0) /
    sqrt(1 - a); v = sqrt(a) eps - sqrt(1 - a) x0; x0 less w(t) x_t with the grain skip, w = sqrt(a) g^2 /
    (a g^2 + 1 - a)), not by the code's conversions, so that a prediction type the code converted wrongly
    would change the frames."""
    a = diffusion.alphas_cumprod[t].reshape(-1, *[1] * (x_t.dim() - 1))
    eps = (x_t.double() - a.sqrt() * x0) / (1 - a).sqrt()
    g2 = diffusion.skip_grain ** 2                     # the grain skip's network output: x0 - w(t) x_t
    x0_out = x0 - a.sqrt() * g2 / (a * g2 + 1 - a) * x_t.double()
    return {"x0": x0_out, "eps": eps, "v": a.sqrt() * eps - (1 - a).sqrt() * x0}[diffusion.prediction].float()


def gaussian_net(diffusion: GaussianDiffusion):
    """A 'network' whose output is the exact denoiser of per-pixel N(mu, STD^2) data, mu = MU_KNOWN where
    condition field 0 is given and MU_UNKNOWN where it is not (NaN), as the diffusion's prediction type."""
    def net(x_t, t, cond):
        x = x_t.double()
        a = diffusion.alphas_cumprod[t].reshape(-1, 1, 1, 1)
        mu = torch.where(torch.isnan(cond[:, :1]), MU_UNKNOWN, MU_KNOWN).double().reshape(-1, 1, 1, 1)
        x0 = mu + a.sqrt() * STD**2 * (x - a.sqrt() * mu) / (a * STD**2 + 1 - a)
        return as_prediction(diffusion, x0, x_t, t)
    return net


def film_net(diffusion: GaussianDiffusion):
    """A 'network' that has learnt the film and not its grain: data = film mu (as `gaussian_net`'s, one value
    per condition) + white grain, and it returns x0_hat = mu, the film alone. With the grain skip it returns
    what a skip network trained on that data converges to, E[x0 - w(t) x_t | x_t] = mu (1 - w(t) sqrt(a)) for
    the skip's w (`grain_gain`), which `to_x0_eps` turns into the exact x0 denoiser of film + grain."""
    def net(x_t, t, cond):
        mu = torch.where(torch.isnan(cond[:, :1]), MU_UNKNOWN, MU_KNOWN).double().reshape(-1, 1, 1, 1)
        x0 = mu.expand(x_t.shape)
        if diffusion.skip_grain:
            a = diffusion.alphas_cumprod[t].reshape(-1, 1, 1, 1)
            g2 = diffusion.skip_grain ** 2
            return (x0 * (1 - a * g2 / (a * g2 + 1 - a))).float()
        return as_prediction(diffusion, x0, x_t, t)
    return net


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_guided_sampling_of_two_gaussians_is_exact(prediction, scale):
    """For Gaussians of one variance, u + w (c - u) is the exact denoiser of N(u + w (c - u), STD^2): DDPM
    with guidance w draws that distribution. The guidance is on field 0 only (field 1 stays given in both
    branches), in x0 space with an interval that covers every step: the same frames as plain guidance."""
    d = GaussianDiffusion("linear", 1000, prediction)
    net = gaussian_net(d)
    cond = torch.tensor([[0.3, 1.0]]).repeat(2000, 1)
    target = MU_UNKNOWN + scale * (MU_KNOWN - MU_UNKNOWN)
    draws = []
    for guidance in (Guidance(scale, fields=(0,)), Guidance(scale, fields=(0,), interval=(0, 999))):
        x = d.sample(guided(net, cond, guidance, d), (2000, 1, 2, 2), "ddpm",
                     generator=torch.Generator().manual_seed(0))
        assert abs(x.mean().item() - target) < 0.01 and abs(x.std().item() - STD) < 0.01
        draws.append(x)
    assert torch.allclose(draws[0], draws[1], atol=1e-4)


def test_the_other_branch_leaves_only_the_guided_fields_unknown():
    seen = []

    def net(x_t, t, cond):
        seen.append(cond.clone())
        return torch.zeros_like(x_t)
    cond = torch.tensor([[1.0, 2.0, 3.0]])
    x, t = torch.zeros(1, 1, 4, 4), torch.tensor([10])
    guided(net, cond, Guidance(2.0, fields=(0, 2)))(x, t)
    both = seen[-1]
    assert torch.equal(both[0], cond[0]) and torch.isnan(both[1, [0, 2]]).all() and both[1, 1] == 2.0
    guided(net, cond, 2.0)(x, t)
    assert torch.isnan(seen[-1][1]).all()                                # plain guidance: every field unknown
    guided(net, cond, 1.0)(x, t)
    assert len(seen[-1]) == 1                                            # off: one branch, no doubled batch


def test_interval_and_parallel_weight():
    """Outside its interval guidance is off; with parallel weight 0 an update along the conditional x0 (here
    the unconditional x0 is half the conditional one) vanishes, with 1 it is plain guidance."""
    d = GaussianDiffusion("linear", 1000, "x0")
    shape = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))

    def net(x_t, t, cond):
        return shape.expand(len(x_t), -1, -1, -1) * torch.where(torch.isnan(cond[:, :1]), 0.5, 1.0)[:, :, None, None]
    cond, x = torch.ones(1, 2), torch.zeros(1, 1, 4, 4)
    inside, outside = torch.tensor([500]), torch.tensor([50])
    g = Guidance(3.0, interval=(100, 700))
    assert torch.allclose(guided(net, cond, g, d)(x, inside), shape * (1 + 2 * 0.5))
    assert torch.allclose(guided(net, cond, g, d)(x, outside), shape)
    assert torch.allclose(guided(net, cond, Guidance(3.0, parallel=0.0), d)(x, inside), shape, atol=1e-6)
    assert torch.allclose(guided(net, cond, Guidance(3.0, parallel=1.0), d)(x, inside), shape * 2, atol=1e-6)
    with pytest.raises(ValueError, match="needs the diffusion"):
        guided(net, cond, g)


class GaussianNet(torch.nn.Module):
    """`gaussian_net` (or `film_net`, film=True) as generate() takes a network: with a frame shape."""
    frame_shape = (1, 4, 4)

    def __init__(self, diffusion, film: bool = False):
        super().__init__()
        self.net = (film_net if film else gaussian_net)(diffusion)

    def forward(self, x_t, t, cond):
        return self.net(x_t, t, cond)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_an_inverted_frame_is_drawn_back_and_moved_only_by_its_conditions(prediction):
    """invert() then generate(start=...) is the round trip through the very denoiser generate() uses (guidance on
    a field, grain put back): the frames come back. For Gaussian data DDIM's map from noise is x = mu + STD z,
    so the frame drawn from an inverted specimen under other conditions is the same specimen moved by the
    change of the mean, exactly what "this frame, had the measurement been ..." should give."""
    d = GaussianDiffusion("linear", 1000, "x0" if prediction == "x0" else prediction,
                          skip_grain=0.02 if prediction == "x0" else 0.0)
    net = GaussianNet(d)
    plan = Plan("ddim", 200, 0.0, "karras", Guidance(1.5, fields=(0,)), clip=False, kept_grain=0.03)
    cond = torch.tensor([[0.3, 1.0]]).repeat(64, 1)
    frames = generate(net, d, cond, range(64), plan, CPU)
    start = invert(net, d, frames, cond, plan, CPU)
    assert (generate(net, d, cond, [0] * 64, plan, CPU, start=start) - frames).abs().max() < 2e-3
    plain = plan._replace(guidance=Guidance(), kept_grain=0.0)
    frames = generate(net, d, cond, range(64), plain, CPU)
    start = invert(net, d, frames, cond, plain, CPU)
    other = cond.clone()
    other[:, 0] = float("nan")                                   # field 0 unknown: mean MU_UNKNOWN
    moved = generate(net, d, other, [0] * 64, plain, CPU, start=start)
    assert (moved - (frames - (MU_KNOWN - MU_UNKNOWN))).abs().max() < 2e-3
    # a stochastic tail from t* redraws what x_t* leaves open: for N(mu, STD^2) data the deterministic frame
    # is mu + STD u / sqrt(v) and the tail's a draw around E[x0 | x_t*] = mu + sqrt(a) STD^2 u / v (u = x_t* -
    # sqrt(a) mu, v = a STD^2 + 1 - a), so the two correlate by sqrt(a STD^2 / v), a = alpha_bar(t*)
    tail = plain.one_specimen(50)
    a = d.alphas_cumprod[max(t for t in d.visits(tail.settings) if t <= 50)].item()
    drawn = generate(net, d, other, range(64), tail, CPU, start=start)
    r = torch.corrcoef(torch.stack([drawn.flatten(), moved.flatten()]))[0, 1].item()
    assert abs(r - (a * STD**2 / (a * STD**2 + 1 - a)) ** 0.5) < 0.03, (r, a)
    with pytest.raises(ValueError, match="not both"):
        generate(net, d, cond, [0] * 64, plan, CPU, start=start, init=Init(frames, 0.5))


REFUSED = ("sample.keep_grain = true puts the grain back", "diffusion.skip = \"grain\" is a skip for x0",
           "sample.sampler = \"heun\" is deterministic")


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpmpp2m", "heun"])
def test_every_sampling_combination_works_or_is_refused(schedule, prediction, sampler):
    """schedule x prediction x sampler x spacing x eta x guidance x keep-grain x skip, through the config, its
    `Plan` and `generate`, as a run samples, with a network that has learnt the film and not its grain
    (`film_net`; the prediction type by the published formulas). Data: film (guided on field x1: mean
    u + w (c - u)) + white grain of `diffusion.grain` = 3 levels. Each combination `config.validate` accepts
    draws the guided film's mean (within 0.003: 16 times less than the grain) and, where the grain is kept
    (sample.keep_grain) or skipped (diffusion.skip), the grain std the float64 reference derives for that
    sampler (`white_grain_std`, within 6 %), and none without either (below 5 % of it); it visits at least
    90 % of the asked steps. The rest are refused in one line, for a reason given. DDPM (1000 network calls)
    uses every timestep and no eta: its spacing and eta are not varied, and it runs guided only."""
    from thinfilm import LEVELS
    from thinfilm.config import ConfigError, load_config, validate

    cond = torch.tensor([[0.3, 1.0]]).repeat(125, 1)
    for spacing in ("trailing", "karras")[:1 if sampler == "ddpm" else 2]:
        for eta in (0.0, 1.0)[:1 if sampler == "ddpm" else 2]:
            for scale in (1.0, 2.0)[1 if sampler == "ddpm" else 0:]:
                for keep, skip in ((False, "none"), (True, "none"), (False, "grain")):
                    overrides = [f'diffusion.schedule="{schedule}"', f'diffusion.prediction="{prediction}"',
                                 f'sample.sampler="{sampler}"', f'sample.spacing="{spacing}"', f"sample.eta={eta}",
                                 f"sample.guidance={scale}", 'sample.guidance_fields=["x1"]',
                                 f"sample.keep_grain={str(keep).lower()}", f'diffusion.skip="{skip}"',
                                 "diffusion.grain=3.0", "sample.steps=50", "sample.clip=false"]
                    try:
                        cfg = validate(load_config(DEFAULT, overrides))
                    except ConfigError as err:
                        assert str(err).startswith(REFUSED) and "\n" not in str(err), (overrides, err)
                        continue
                    d = GaussianDiffusion.from_config(cfg)
                    plan = Plan.from_config(cfg)
                    if sampler != "ddpm":
                        assert len(d.visits(plan.settings)) >= 45, overrides
                    x = generate(GaussianNet(d, film=True), d, cond, range(125), plan, CPU)
                    target = MU_UNKNOWN + scale * (MU_KNOWN - MU_UNKNOWN)
                    g = 3.0 / LEVELS
                    grain = white_grain_std(d, sampler, plan.steps, eta, spacing, g) if keep or skip == "grain" else 0
                    assert abs(x.mean().item() - target) < 0.003, (overrides, x.mean().item())
                    assert abs(x.std().item() - grain) < 0.06 * grain + 0.05 * g, (overrides, x.std().item(), grain)
