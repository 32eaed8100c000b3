"""sdedu.models.mmdit: the tiny MM-DiT, its blocks against diffusers 0.42, shapes, adaLN-Zero, bad input."""

import pytest
import torch
from diffusers.models.attention import JointTransformerBlock as DiffusersJointBlock
from diffusers.models.embeddings import PatchEmbed as DiffusersPatchEmbed
from diffusers.models.normalization import AdaLayerNormZero as DiffusersAdaLayerNormZero

from sdedu.models.mmdit import MMDiT, MMDiTConfig, PatchEmbed, sincos_2d
from sdedu.models.mmdit_blocks import AdaLayerNormZero, JointTransformerBlock, gelu_tanh
from sdedu.models.mmdit_diffusers import diffusers_state_dict, to_diffusers

SMALL = dict(width=64, depth=2, num_heads=2, context_dim=16, pooled_dim=24)


def _randomize(module, generator, scale=0.1):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * scale)
    return module


def _inputs(generator, config: MMDiTConfig, B=3, L=5):
    x = torch.randn(B, config.in_channels, config.sample_size, config.sample_size, generator=generator)
    t = torch.tensor([0.0, 431.5, 1000.0])[:B]
    cond = torch.randn(B, L, config.context_dim, generator=generator)
    pooled = torch.randn(B, config.pooled_dim, generator=generator)
    return x, t, cond, pooled


# ---- parity with diffusers ------------------------------------------------------------------


def test_adaln_zero_matches_diffusers(generator):
    ours = _randomize(AdaLayerNormZero(32), generator)
    theirs = DiffusersAdaLayerNormZero(32)
    theirs.load_state_dict(ours.state_dict())
    x, y = torch.randn(2, 7, 32, generator=generator), torch.randn(2, 32, generator=generator)
    for a, b in zip(ours(x, y), theirs(x, emb=y)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("context_pre_only", [False, True])
def test_joint_transformer_block_matches_diffusers(generator, context_pre_only):
    ours = _randomize(JointTransformerBlock(64, num_heads=2, context_pre_only=context_pre_only), generator)
    theirs = DiffusersJointBlock(64, num_attention_heads=2, attention_head_dim=32, context_pre_only=context_pre_only)
    renamed = diffusers_state_dict({f"block.{k}": v for k, v in ours.state_dict().items()})
    theirs.load_state_dict({k.removeprefix("block."): v for k, v in renamed.items()})
    x, c = torch.randn(2, 16, 64, generator=generator), torch.randn(2, 5, 64, generator=generator)
    y = torch.randn(2, 64, generator=generator)
    x_ours, c_ours = ours(x, c, y)
    c_theirs, x_theirs = theirs(x, c, y)
    torch.testing.assert_close(x_ours, x_theirs, atol=1e-5, rtol=1e-5)
    if context_pre_only:
        assert c_ours is None and c_theirs is None
    else:
        torch.testing.assert_close(c_ours, c_theirs, atol=1e-5, rtol=1e-5)
    # the same gradients too: training runs through the fused forward (in-place steps included)
    grads = []
    for model, stream in ((ours, 0), (theirs, 1)):
        x_in, y_in = x.clone().requires_grad_(), y.clone().requires_grad_()
        grads.append(torch.autograd.grad(model(x_in, c, y_in)[stream].square().sum(), (x_in, y_in)))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_gelu_tanh_is_torchs_tanh_gelu():
    x = torch.linspace(-8, 8, 1001, dtype=torch.float64, requires_grad=True)
    ours, theirs = gelu_tanh(x), torch.nn.functional.gelu(x, approximate="tanh")
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(*(torch.autograd.grad(out.sum(), x)[0] for out in (ours, theirs)))


def test_patch_embed_matches_diffusers(generator):
    config = MMDiTConfig(**SMALL)
    ours = _randomize(PatchEmbed(config), generator)
    theirs = DiffusersPatchEmbed(height=8, width=8, patch_size=2, in_channels=4, embed_dim=64)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 4, 8, 8, generator=generator)
    torch.testing.assert_close(ours(x), theirs(x))


def test_sincos_2d_rows_and_columns():
    emb = sincos_2d(8, 3).view(3, 3, 8)  # (row, col, width)
    # The first half depends on the column only, the second half on the row only; sin(0) = 0, cos(0) = 1.
    torch.testing.assert_close(emb[0, :, :4], emb[2, :, :4])
    torch.testing.assert_close(emb[:, 0, 4:], emb[:, 2, 4:])
    torch.testing.assert_close(emb[0, 0], torch.tensor([0.0, 0, 1, 1, 0, 0, 1, 1]))


@pytest.mark.parametrize("patch_size", [1, 2])
def test_mmdit_matches_diffusers_sd3_transformer(generator, patch_size):
    config = MMDiTConfig(**SMALL, patch_size=patch_size)
    ours = _randomize(MMDiT(config), generator)
    theirs = to_diffusers(ours)
    x, t, cond, pooled = _inputs(generator, config)
    expected = theirs(x, encoder_hidden_states=cond, pooled_projections=pooled, timestep=t).sample
    torch.testing.assert_close(ours(x, t, cond, pooled), expected, atol=1e-5, rtol=1e-5)


# ---- the model's own properties ---------------------------------------------------------------


def test_untrained_mmdit_predicts_zero_and_blocks_are_identity(generator):
    """adaLN-Zero: gates and the final projection start at zero (Peebles & Xie 2023, section 3.2)."""
    config = MMDiTConfig(**SMALL)
    model = MMDiT(config)
    x, t, cond, pooled = _inputs(generator, config)
    assert torch.equal(model(x, t, cond, pooled), torch.zeros_like(x))
    block = model.transformer_blocks[0]
    tokens, words, y = torch.randn(3, 16, 64), torch.randn(3, 5, 64), torch.randn(3, 64)
    out_tokens, out_words = block(tokens, words, y)
    assert torch.equal(out_tokens, tokens) and torch.equal(out_words, words)


def test_mmdit_reads_time_text_and_pooled(generator):
    config = MMDiTConfig(**SMALL)
    model = _randomize(MMDiT(config), generator)
    x, t, cond, pooled = _inputs(generator, config)
    out = model(x, t, cond, pooled)
    assert out.shape == x.shape
    assert not torch.allclose(out, model(x, t.flip(0), cond, pooled))
    assert not torch.allclose(out, model(x, t, cond + 1, pooled))
    assert not torch.allclose(out, model(x, t, cond, pooled + 1))


def test_image_to_text_attention_maps(generator):
    config = MMDiTConfig(**SMALL)
    model = _randomize(MMDiT(config), generator)
    x, t, cond, pooled = _inputs(generator, config, L=5)
    model.set_store_attention(True)
    model(x, t, cond, pooled)
    maps = model.image_to_text_attention()
    assert len(maps) == config.depth
    for probs in maps.values():
        assert probs.shape == (3, config.num_heads, 16, 5)
        assert bool((probs.sum(-1) <= 1 + 1e-5).all())  # a share of each image token's attention
    stored = model(x, t, cond, pooled)
    model.set_store_attention(False)
    assert model.image_to_text_attention() == {}
    torch.testing.assert_close(model(x, t, cond, pooled), stored)  # the written-out attention: the same maths


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(x=torch.zeros(3, 4, 4, 4)), "x_t must have shape"),
        (dict(t=torch.tensor([0.0, 1.0])), "t must be a tensor of shape"),
        (dict(t=torch.tensor([0.0, 1.0, 1001.0])), r"values in \[0, 1000\]"),
        (dict(cond=torch.zeros(3, 5, 7)), "cond must have shape"),
        (dict(pooled=torch.zeros(3, 7)), "pooled must have shape"),
    ],
)
def test_mmdit_bad_input(generator, change, message):
    config = MMDiTConfig(**SMALL)
    model = MMDiT(config)
    x, t, cond, pooled = _inputs(generator, config)
    args = {"x": x, "t": t, "cond": cond, "pooled": pooled, **change}
    with pytest.raises(ValueError, match=message):
        model(args["x"], args["t"], args["cond"], args["pooled"])


@pytest.mark.parametrize(
    "settings, message",
    [(dict(patch_size=3), "multiple of patch_size"), (dict(width=66), "multiple of 4"), (dict(depth=0), "depth")],
)
def test_mmdit_config_bad_sizes(settings, message):
    with pytest.raises(ValueError, match=message):
        MMDiTConfig(**settings)
