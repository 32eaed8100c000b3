"""sdedu.models.unet: the eps-prediction UNet's contract, conditioning paths, attention maps."""

import pytest
import torch

from sdedu.models.unet import UNet, UNetConfig

SMALL = UNetConfig(channels=(16, 32), context_dim=12, head_dim=8, norm_groups=4)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    model = UNet(SMALL)
    with torch.no_grad():  # leave the zero initialisation so every path is exercised
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def _inputs(B=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, 4, 8, 8, generator=g),
        torch.randint(0, 1000, (B,), generator=g),
        torch.randn(B, 5, 12, generator=g),
    )


def test_output_shape_and_init():
    x, t, cond = _inputs()
    model = UNet(SMALL)
    assert model(x, t, cond).shape == (3, 4, 8, 8)


def test_default_config_is_the_shipped_size():
    model = UNet()
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 4e6  # fits the 15 MB budget in float32


def test_prompt_and_timestep_change_the_prediction(unet):
    x, t, cond = _inputs()
    with torch.no_grad():
        base = unet(x, t, cond)
        assert not torch.allclose(base, unet(x, t, cond + 1.0))  # cross-attention reads cond
        assert not torch.allclose(base, unet(x, (t + 100) % 1000, cond))  # time embedding
        # Batch elements do not interact: the first prediction ignores the others.
        torch.testing.assert_close(unet(x[:1], t[:1], cond[:1]), base[:1], atol=1e-5, rtol=1e-4)


def test_attention_only_at_8x8_and_4x4(unet):
    x, t, cond = _inputs()
    unet.set_store_attention(True)
    with torch.no_grad():
        unet(x, t, cond)
    maps = unet.cross_attention_maps()
    unet.set_store_attention(False)
    assert len(maps) == len(unet.cross_attentions()) == 5
    for name, probs in maps.items():
        B, heads, pixels, L = probs.shape
        assert (B, L) == (3, 5) and pixels in (64, 16), name
        torch.testing.assert_close(probs.sum(-1), torch.ones(B, heads, pixels))
    assert unet.cross_attention_maps() == {}


def test_gradients_reach_the_text_path(unet):
    x, t, cond = _inputs()
    cond.requires_grad_(True)
    unet(x, t, cond).pow(2).mean().backward()
    assert cond.grad.abs().sum() > 0
    assert unet.conv_in.weight.grad.abs().sum() > 0
    unet.zero_grad()


def test_bad_input(unet):
    x, t, cond = _inputs()
    with pytest.raises(ValueError, match=r"x_t must have shape .* = \(B, 4, 8, 8\)"):
        unet(torch.randn(3, 4, 16, 16), t, cond)
    with pytest.raises(ValueError, match=r"t must be an int64 tensor of shape \(B,\) = \(3,\)"):
        unet(x, t.float(), cond)
    with pytest.raises(ValueError, match=r"values in \[0, 1000\)"):
        unet(x, t + 1000, cond)
    with pytest.raises(ValueError, match=r"cond must have shape \(B, L, D\) = \(3, L, 12\)"):
        unet(x, t, torch.randn(3, 5, 7))
    with pytest.raises(ValueError, match="channels must give 2 levels"):
        UNetConfig(channels=(8, 16, 32))


def test_compiles_to_one_graph(unet):
    # The range check on t reads values; under torch.compile it is skipped rather than splitting the graph.
    x, t, cond = _inputs()
    with torch.no_grad():
        explanation = torch._dynamo.explain(unet)(x, t, cond)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_sample_size_sets_the_resolution():
    # The layers do not depend on H, W: sample_size only tells the input check what to expect.
    config = UNetConfig(in_channels=3, sample_size=16, channels=(16, 32), context_dim=12, head_dim=8, norm_groups=4)
    model = UNet(config).eval()
    x, t, cond = torch.randn(2, 3, 16, 16), torch.tensor([0, 999]), torch.randn(2, 5, 12)
    with torch.no_grad():
        assert model(x, t, cond).shape == (2, 3, 16, 16)
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel()
        for p in UNet(
            UNetConfig(in_channels=3, channels=(16, 32), context_dim=12, head_dim=8, norm_groups=4)
        ).parameters()
    )
    with pytest.raises(ValueError, match=r"sample_size, sample_size\) = \(B, 3, 16, 16\).*sample_size=16"):
        model(torch.randn(2, 3, 8, 8), t, cond)


def test_default_sample_size_is_8_and_must_be_even():
    assert UNetConfig().sample_size == 8  # the shipped weights' manifest has no sample_size: 8 is implied
    for bad in (7, 0, 2.5):
        with pytest.raises(ValueError, match="sample_size must be an even int"):
            UNetConfig(sample_size=bad)
