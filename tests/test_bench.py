"""The benchmark: every figure present at a tiny size on the CPU, and each lever leaves the outputs as they were."""
import json

import pytest
import torch

from thinfilm import bench
from thinfilm.config import load_config
from thinfilm.unet import Attention, UNet

from conftest import DEFAULT, TINY

FIELDS = {"params_M", "fwd_gflop_per_image", "flop_convention", "train_batch", "first_step_s", "train_s_per_step",
          "train_images_per_s", "train_tflops", "peak_tflops", "train_mfu", "train_peak_memory_gib",
          "sample_ddim50_batch1_s", "sample_ddim50_batch16_s", "peak_memory_gib", "device", "torch", "precision",
          "compile", "channels_last", "low_precision_norm", "sync_free", "cuda_graph"}


def test_bench_reports_every_figure(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["--config", DEFAULT, "--device", "cpu", "--repeats", "1", "--peak-tflops", "1.0",
            "--json", str(out)]
    for o in TINY + ["sample.steps=50"]:
        args += ["--set", o]
    bench.main(args)
    report = json.loads(out.read_text())
    assert FIELDS <= set(report) and report["train_batch"] == 4
    flop = hand_count(UNet.from_config(load_config(DEFAULT, TINY)))
    assert report["fwd_gflop_per_image"] * 1e9 == pytest.approx(flop, rel=1e-9)
    assert report["train_tflops"] == pytest.approx(3 * flop * 4 / report["train_s_per_step"] / 1e12)
    assert report["train_mfu"] == pytest.approx(report["train_tflops"] / 1.0)
    assert "train_s_per_step" in capsys.readouterr().out


def hand_count(net: UNet) -> int:
    """Forward FLOPs of one 16-px frame counted by hand from each layer's shapes (a multiply-add = 2; biases,
    norms and activations not counted, as torch's counter does): a convolution 2 x output elements x C_in
    x kh x kw, a linear layer 2 x outputs x inputs, attention 2 x 2 x C x L^2 (Q K^T and the weighted sum
    over L = H W positions, all heads together)."""
    total = [0]

    def conv(m, inputs, out):
        total[0] += 2 * out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]

    def linear(m, inputs, out):
        total[0] += 2 * out.numel() * m.in_features

    def attention(m, inputs, out):
        b, c, h, w = inputs[0].shape
        total[0] += 2 * 2 * b * c * (h * w) ** 2

    kinds = {torch.nn.Conv2d: conv, torch.nn.Linear: linear, Attention: attention}
    for module in net.modules():
        if type(module) in kinds:
            module.register_forward_hook(kinds[type(module)])
    with torch.no_grad():
        net(torch.zeros(1, 1, 16, 16), torch.zeros(1, dtype=torch.long), torch.zeros(1, 8))
    return total[0]


def net_and_input():
    torch.manual_seed(0)
    net = UNet.from_config(load_config(DEFAULT, TINY)).eval()
    for p in net.parameters():                       # zero-initialised branches made non-zero
        if p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.05)
    return net, (torch.randn(3, 1, 16, 16), torch.tensor([1, 500, 999]), torch.randn(3, 8))


@pytest.mark.slow
def test_compiled_network_gives_the_same_outputs():
    net, inputs = net_and_input()
    with torch.no_grad():
        eager = net(*inputs)
        compiled = torch.compile(net)
        assert torch.allclose(compiled(*inputs), eager, atol=1e-4)


@pytest.mark.parametrize("sampler,eta,guidance,strength", [("ddim", 1.0, 2.0, 1.0), ("dpmpp2m", 1.0, 1.0, 1.0),
                                                           ("dpmpp2m", 0.0, 1.0, 1.0), ("ddim", 1.0, 1.0, 0.6)])
def test_sampler_run_with_its_noise_ahead_reads_nothing_back(monkeypatch, sampler, eta, guidance, strength):
    """What a CUDA graph capture needs, checked on the CPU: a whole run (network, guidance, grain kept,
    clipping, every update; image-to-image too) given its noise ahead draws none itself and never turns a
    tensor into a host value (bool, item, tolist, numpy), so it has no host-device sync to break a capture."""
    from thinfilm import diffusion as diffusion_module
    from thinfilm.diffusion import GaussianDiffusion, SamplerSettings
    from thinfilm.sampling import guided, noise_draws, predrawn

    net, _ = net_and_input()
    d = GaussianDiffusion("linear", 1000, "x0")
    shape, gens = (2, 1, 16, 16), [torch.Generator().manual_seed(i) for i in range(2)]
    noise = predrawn(shape, gens, noise_draws(d, SamplerSettings(sampler, 8, eta, "karras"), strength))
    denoise = d.keeping_grain(guided(net, torch.randn(2, 8), guidance), 0.01)
    x_init = torch.rand(shape) * 2 - 1

    def host_read(*args, **kwargs):
        raise AssertionError("a tensor was read back to the host, or noise drawn inside the run")

    monkeypatch.setattr(diffusion_module, "randn", host_read)
    for name in ("__bool__", "item", "tolist", "numpy", "__float__", "__int__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, host_read)
    with torch.no_grad():
        x = d.sample(denoise, shape, sampler, 8, eta, noise=noise, clip=True, spacing="karras", x_init=x_init,
                     strength=strength)
        back = d.invert(denoise, x, 8, "karras")                           # DDIM inversion too
    monkeypatch.undo()
    assert torch.isfinite(back).all()
    assert torch.isfinite(x).all() and x.shape == shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("sampler,eta,guidance,img2img", [("ddim", 1.0, 1.0, False), ("dpmpp2m", 1.0, 2.0, False),
                                                          ("ddim", 0.0, 1.0, True)])
def test_cuda_graph_replayed_sampler_draws_the_eager_frames(sampler, eta, guidance, img2img):
    """Same seeds, same frames: a whole run replayed from a CUDA graph changes nothing but the launch cost
    (guidance 2 runs the network on a doubled batch; the last chunk of 2 is a second graph; a second call
    with the same dict replays the graphs it holds, with other conditions, seeds and start image)."""
    from thinfilm.diffusion import GaussianDiffusion, Init
    from thinfilm.sampling import Execution, Guidance, Plan, generate

    net, _ = net_and_input()
    net = net.cuda()
    diffusion = GaussianDiffusion("linear", 1000, "x0")
    graphs = {}

    def draw(cond, seed, graphs):
        init = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1 if img2img else None
        plan = Plan(sampler, 12, eta, "trailing", Guidance(guidance), True, 3, 0.01)
        return generate(net, diffusion, cond, list(range(seed, seed + 5)), plan,
                        Execution(torch.device("cuda"), graphs=graphs), init=Init(init, 0.6) if img2img else None)

    for seed in (0, 10):
        cond = torch.randn(5, 8, generator=torch.Generator().manual_seed(seed))
        assert torch.allclose(draw(cond, seed, graphs), draw(cond, seed, None), atol=1e-3)   # 1/8 of a level
        assert len(graphs) == 2
