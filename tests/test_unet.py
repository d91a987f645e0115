"""The network: conditioning, null condition, attention, gradients, and that it can learn with the loss."""
import math

import pytest
import torch

from thinfilm.config import ModelConfig
from thinfilm.diffusion import GaussianDiffusion
from thinfilm.sampling import guided
from thinfilm.unet import Attention, GroupNorm, UNet


def small(n_conditions: int = 3, **model) -> UNet:
    spec = dict(channels=[8, 16], layers_per_block=1, attention_levels=[1], head_channels=8)
    spec.update(model)
    torch.manual_seed(0)
    net = UNet(n_conditions, 16, ModelConfig(**spec))
    for p in net.parameters():                 # leave the zero-initialised branches non-zero for these tests
        if p.dim() > 0 and p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.05)
    return net


@pytest.mark.parametrize("kw", [{}, {"patch_size": 2, "coords": True}, {"n_conditions": 10},
                                {"patch_size": 2, "unpatch": "resize"}])
def test_shape_and_dependence_on_condition_and_time(kw):
    net = small(**kw)
    c = net.n_conditions
    x, t, cond = torch.randn(2, 1, 16, 16), torch.tensor([10, 500]), torch.randn(2, c)
    out = net(x, t, cond)
    assert out.shape == x.shape
    assert not torch.allclose(out, net(x, t, cond + 0.5), atol=1e-5)
    assert not torch.allclose(out, net(x, torch.tensor([11, 700]), cond), atol=1e-5)


def test_resize_unpatch_has_no_patch_phase_pattern():
    """A spatially constant patch feature map comes back to pixels constant (away from the border) with
    "resize"; "shuffle" gives each of the 2 x 2 pixels of a patch its own value."""
    h = torch.randn(1, 8, 1, 1).expand(1, 8, 8, 8)                               # channels[0] = 8, 16 px / 2
    for unpatch, flat in (("resize", True), ("shuffle", False)):
        pixels = small(patch_size=2, unpatch=unpatch).unpatch(h)[..., 4:-4, 4:-4]          # [1, k - 1, 8, 8]
        assert torch.allclose(pixels, pixels[..., :1, :1].expand_as(pixels), atol=1e-6) == flat


@pytest.mark.parametrize("kw", [{}, {"patch_size": 2, "coords": True, "unpatch": "resize"}])
def test_channels_last_is_the_same_network(kw):
    """model.channels_last changes the memory layout only: the same weights give the same outputs, and a
    state dict moves between the layouts."""
    plain, nhwc = small(**kw), small(**kw, channels_last=True)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in nhwc.parameters() if p.dim() == 4)
    nhwc.load_state_dict(plain.state_dict())
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in nhwc.parameters() if p.dim() == 4)
    x, t, cond = torch.randn(2, 1, 16, 16), torch.tensor([10, 500]), torch.randn(2, 3)
    with torch.no_grad():
        assert torch.allclose(nhwc(x, t, cond), plain(x, t, cond), atol=1e-5)
    plain.load_state_dict(nhwc.state_dict())


def test_low_precision_norm_is_the_same_network():
    """model.low_precision_norm runs group norms in autocast's dtype (an fp32 input too, which CUDA autocast
    would normalise in fp32): the same weights, outputs within bf16 rounding of the default under autocast,
    and identical without autocast (the switch is then inert)."""
    plain, low = small(patch_size=2, coords=True), small(patch_size=2, coords=True, low_precision_norm=True)
    assert all(m.low_precision for m in low.modules() if isinstance(m, GroupNorm))
    x, t, cond = torch.randn(2, 1, 16, 16), torch.tensor([10, 500]), torch.randn(2, 3)
    with torch.no_grad():
        assert torch.equal(low(x, t, cond), plain(x, t, cond))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ref, out = plain(x, t, cond).float(), low(x, t, cond).float()
            h = torch.randn(2, 8, 4, 4)
            assert plain.down[0][0].norm1(h).dtype == torch.float32
            assert low.down[0][0].norm1(h).dtype == torch.bfloat16
    assert 0 < (out - ref).abs().max() < 0.05 * ref.abs().max()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA autocast's fp32 list needs a CUDA device")
def test_low_precision_norm_on_cuda_skips_the_fp32_upcast():
    plain, low = small().cuda(), small(low_precision_norm=True).cuda()
    x, t, cond = torch.randn(2, 1, 16, 16).cuda(), torch.tensor([10, 500]).cuda(), torch.randn(2, 3).cuda()
    h = torch.randn(2, 8, 4, 4).cuda().bfloat16()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        assert plain.down[0][0].norm1(h).dtype == torch.float32          # autocast's fp32 list
        assert low.down[0][0].norm1(h).dtype == torch.bfloat16
        ref, out = plain(x, t, cond).float(), low(x, t, cond).float()
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


def test_null_and_partial_conditions_are_their_own_states():
    net = small()
    real = torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 0.5], [0.0, 0.0, 0.0], [0.0, float("nan"), 0.0]])
    null = UNet.null_condition(real)
    emb_null = net.cond_embed(null)
    emb_real = net.cond_embed(real)
    assert torch.isnan(null).all() and torch.isfinite(emb_null).all()
    assert (emb_null - emb_real).abs().amax(1).min() > 1e-3        # zero (the training mean) is not "unknown"
    assert not torch.allclose(emb_real[2], emb_real[3])             # partly unknown differs from all-zero


def test_gradients_reach_every_parameter():
    net = small(patch_size=2, coords=True)
    net(torch.randn(2, 1, 16, 16), torch.tensor([3, 600]), torch.randn(2, 3)).pow(2).mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_attention_equals_naive_reference():
    torch.manual_seed(0)
    attn = Attention(16, head_channels=8)
    torch.nn.init.normal_(attn.proj.weight, std=0.2)
    x = torch.randn(2, 16, 4, 5)
    q, k, v = attn.qkv(attn.norm(x)).reshape(2, 3, 2, 8, 20).unbind(1)          # [B, heads, d, HW]
    w = torch.softmax(q.transpose(-1, -2) @ k / math.sqrt(8), dim=-1)          # [B, heads, HW, HW]
    ref = (w @ v.transpose(-1, -2)).transpose(-1, -2).reshape(2, 16, 4, 5)
    assert torch.allclose(attn(x), x + attn.proj(ref), atol=1e-5)


def test_bad_resolution_is_a_clear_error():
    with pytest.raises(ValueError, match="data.resolution = 100 is not divisible by 32"):
        UNet(8, 100, ModelConfig(channels=[8] * 6))
    with pytest.raises(ValueError, match="attention_levels"):
        UNet(8, 64, ModelConfig(channels=[8, 8], attention_levels=[5]))


def test_guidance_wrapper():
    net = small()
    x, t, c = torch.randn(2, 1, 16, 16), torch.tensor([5, 5]), torch.randn(2, 3)
    assert torch.equal(guided(net, c, 1.0)(x, t), net(x, t, c))
    u = net(x, t, UNet.null_condition(c))
    assert torch.allclose(guided(net, c, 3.0)(x, t), u + 3 * (net(x, t, c) - u), atol=1e-5)


def test_network_and_loss_learn_a_few_conditioned_frames():
    """Overfit 4 frames (a bright bar whose position is the condition); a sample resembles its frame."""
    torch.manual_seed(0)
    frames = -torch.ones(4, 1, 16, 16)
    for i in range(4):
        frames[i, :, :, 2 + 3 * i:5 + 3 * i] = 1.0
    cond = torch.linspace(-1.5, 1.5, 4)[:, None]
    net = UNet(1, 16, ModelConfig(channels=[16, 32], layers_per_block=1, attention_levels=[], mid_attention=False,
                                  head_channels=16))
    d = GaussianDiffusion("cosine", 1000, "v")
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for step in range(300):
        t = torch.randint(0, 1000, (16,), generator=g)
        x0, c = frames.repeat(4, 1, 1, 1), cond.repeat(4, 1)
        noise = torch.randn(x0.shape, generator=g)
        loss = d.loss(net(d.q_sample(x0, t, noise), t, c), x0, noise, t).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-20:]) / 20 < sum(losses[:20]) / 20 / 5
    net.eval()
    x = d.sample(guided(net, cond, 1.0), (4, 1, 16, 16), "ddim", steps=30, clip=True,
                 generator=torch.Generator().manual_seed(1))
    err = (x - frames).pow(2).mean((1, 2, 3))
    others = torch.stack([(x - frames.roll(k, 0)).pow(2).mean((1, 2, 3)) for k in (1, 2, 3)])
    assert (err < others.min(0).values).all(), (err, others)
    assert err.max() < 0.1


def test_fourier_condition_features():
    """cond_fourier adds sin / cos of each known value; an unknown field gives zeros there as everywhere; off,
    the embedding is the one every earlier checkpoint holds (its first layer sees 2 C inputs)."""
    from thinfilm.unet import ConditionEmbedding
    emb = ConditionEmbedding(3, 16, fourier=4)
    assert emb.mlp[0].in_features == (2 + 2 * 4) * 3 and len(emb.freqs) == 4
    seen = []
    emb.mlp[0].register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    emb(torch.tensor([[0.5, float("nan"), -1.0]]))
    features = seen[0].reshape(-1)
    assert features[1] == 0 and features[4] == 0                            # value and presence of field 1
    sines = features[6:18].reshape(3, 4)
    assert torch.all(sines[1] == 0) and torch.allclose(sines[0], torch.sin(0.5 * emb.freqs))
    assert ConditionEmbedding(3, 16).mlp[0].in_features == 6
    spec = ModelConfig(channels=[8, 16], layers_per_block=1, attention_levels=[], cond_fourier=4)
    assert "cond_embed.freqs" not in UNet(3, 16, spec).state_dict()


def test_checkpoint_without_a_new_option_loads_and_a_mismatch_is_one_line(tiny_ckpt, tmp_path):
    """A checkpoint written before model.cond_fourier existed (no such key) loads as it was; one whose config
    asks for it over weights without it says so in one line."""
    from thinfilm import checkpoint
    state = torch.load(tiny_ckpt, weights_only=True)
    del state["config"]["model"]["cond_fourier"]
    old = tmp_path / "old.pt"
    torch.save(state, old)
    assert checkpoint.load_model(old).net.cond_embed.mlp[0].in_features == 16
    state["config"]["model"]["cond_fourier"] = 4
    torch.save(state, old)
    with pytest.raises(checkpoint.CheckpointError, match="weights do not fit the network") as err:
        checkpoint.load_model(old)
    assert "\n" not in str(err.value)
