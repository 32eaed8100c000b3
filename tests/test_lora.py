"""LoRA (sdedu.nn.lora): the layer's formula and initialisation, injection into the UNet, merge and
remove, bad input, and parity with peft's `lora.Linear` when peft is installed."""

import copy
import math

import pytest
import torch
from torch import nn

from sdedu.models.unet import UNet, UNetConfig
from sdedu.nn.lora import DEFAULT_TARGET, LoRALinear, inject_lora, lora_parameters, merge_lora, remove_lora


def randomise_b(layer: LoRALinear, generator) -> None:
    """B is zero at first (the layer is then the base layer): make it non-zero, as after training."""
    with torch.no_grad():
        layer.lora_B.weight.copy_(torch.randn(layer.lora_B.weight.shape, generator=generator))


@pytest.fixture
def unet():
    unet = UNet(UNetConfig(channels=(16, 32), context_dim=16, head_dim=8, norm_groups=8)).eval()
    with torch.no_grad():
        for p in unet.parameters():  # not the zero initialisation: every path must reach the output
            p.add_(torch.randn(p.shape) * 0.05)
    return unet


def unet_inputs(generator):
    z = torch.randn(2, 4, 8, 8, generator=generator)
    return z, torch.tensor([10, 500]), torch.randn(2, 12, 16, generator=generator)


def test_lora_linear_is_w_x_plus_scaled_b_a_x(generator):
    base = nn.Linear(12, 10)
    layer = LoRALinear(copy.deepcopy(base), rank=3, alpha=6.0)
    x = torch.randn(5, 12, generator=generator)
    # B = 0: exactly the base layer; A from kaiming_uniform(a=sqrt(5)): |A| <= 1 / sqrt(in).
    assert torch.equal(layer(x), base(x))
    assert torch.count_nonzero(layer.lora_B.weight) == 0
    bound = 1 / math.sqrt(12)
    assert layer.lora_A.weight.abs().max() <= bound and layer.lora_A.weight.abs().max() > bound / 2
    randomise_b(layer, generator)
    A, B = layer.lora_A.weight, layer.lora_B.weight  # (3, 12), (10, 3)
    expected = x @ base.weight.T + base.bias + (6.0 / 3) * x @ A.T @ B.T
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-6)
    assert not torch.equal(layer(x), base(x))
    with torch.no_grad():  # merged: one nn.Linear computing the same to 1e-6
        torch.testing.assert_close(copy.deepcopy(layer).merge()(x), layer(x), rtol=0, atol=1e-6)


def test_inject_wraps_attention_and_feed_forward_and_trains_lora_alone(unet, generator):
    inputs = unet_inputs(generator)
    before = unet(*inputs)
    names = inject_lora(unet, rank=2, alpha=4.0)
    assert names and all(
        name.rsplit(".", 1)[-1] in {"to_q", "to_k", "to_v", "to_out", "proj_in", "proj_out"} for name in names
    )
    assert any(".attn2.to_k" in name for name in names) and any(".ff.proj_out" in name for name in names)
    assert not any("time_emb_proj" in name for name in names)
    torch.testing.assert_close(unet(*inputs), before, rtol=0, atol=0)  # B = 0: nothing changed yet
    trainable = [p for p in unet.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in lora_parameters(unet)}
    assert len(trainable) == 2 * len(names)
    # A gradient step moves the output (B gets a gradient through A x).
    unet(*inputs).square().mean().backward()
    assert all(layer.lora_B.weight.grad.abs().sum() > 0 for layer in unet.modules() if isinstance(layer, LoRALinear))


def test_merge_keeps_the_output_and_remove_restores_the_original(unet, generator):
    inputs = unet_inputs(generator)
    original = copy.deepcopy(unet.state_dict())
    before = unet(*inputs)
    inject_lora(unet, rank=2, alpha=3.0, target=["to_q", "to_v", "ff.proj_in"])
    for layer in unet.modules():
        if isinstance(layer, LoRALinear):
            randomise_b(layer, generator)
    with torch.no_grad():
        adapted = unet(*inputs)
    assert (adapted - before).abs().max() > 1e-3
    merged = merge_lora(copy.deepcopy(unet))
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    assert set(merged.state_dict()) == set(original)  # the original layout: loads into a plain UNet
    with torch.no_grad():  # 1e-6 per layer (above), float32 rounding accumulated through the UNet
        torch.testing.assert_close(merged(*inputs), adapted, rtol=0, atol=1e-5)
    remove_lora(unet)
    assert not any(isinstance(m, LoRALinear) for m in unet.modules())
    assert all(torch.equal(value, original[key]) for key, value in unet.state_dict().items())
    torch.testing.assert_close(unet(*inputs), before, rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"rank": 0}, ValueError, "rank"),
        ({"alpha": 0.0}, ValueError, "alpha must be > 0"),
        ({"alpha": -1.0}, ValueError, "alpha"),
        ({"target": ["to_q", "conv_zebra"]}, ValueError, r"target names \['conv_zebra'\] match no nn.Linear"),
        ({"target": "to_q"}, TypeError, "target must be a non-empty list"),
    ],
)
def test_bad_input_is_named(unet, kwargs, error, match):
    with pytest.raises(error, match=match):
        inject_lora(unet, **kwargs)
    assert not any(isinstance(m, LoRALinear) for m in unet.modules())


def test_injecting_twice_and_wrapping_a_non_linear_are_refused(unet):
    inject_lora(unet, rank=2)
    with pytest.raises(ValueError, match="already holds LoRA layers"):
        inject_lora(unet, rank=2)
    with pytest.raises(TypeError, match="base must be a torch.nn.Linear"):
        LoRALinear(nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(nn.Linear(4, 2), rank=3)  # a rank above min(in, out) is no low-rank update


def test_parity_with_peft_lora_linear(generator):
    """The same base weights and A, B copied: peft's layer and ours compute the same, merged or not."""
    lora = pytest.importorskip("peft.tuners.lora", reason="peft is not installed (pip install peft)")
    base = nn.Linear(24, 16)
    ours = LoRALinear(copy.deepcopy(base), rank=4, alpha=8.0)
    theirs = lora.layer.Linear(
        copy.deepcopy(base), "default", config=lora.LoraConfig(r=4, lora_alpha=8), r=4, lora_alpha=8
    )
    # peft initialises as we do: B zeros, A inside kaiming_uniform(a=sqrt(5))'s bound 1 / sqrt(in).
    assert torch.count_nonzero(theirs.lora_B["default"].weight) == 0
    assert theirs.lora_A["default"].weight.abs().max() <= 1 / math.sqrt(24)
    assert theirs.scaling["default"] == ours.scaling == 2.0
    randomise_b(ours, generator)
    with torch.no_grad():
        theirs.lora_A["default"].weight.copy_(ours.lora_A.weight)
        theirs.lora_B["default"].weight.copy_(ours.lora_B.weight)
        x = torch.randn(3, 7, 24, generator=generator)
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-6)
        theirs.merge()
        torch.testing.assert_close(ours.merge().weight, theirs.base_layer.weight, rtol=0, atol=1e-6)


def test_default_target_names_are_the_unets(unet):
    names = [name for name, layer in unet.named_modules() if isinstance(layer, nn.Linear)]
    for target in DEFAULT_TARGET:
        assert any(name.endswith("." + target) for name in names), target
