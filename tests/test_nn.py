"""sdedu.nn: timestep embedding, attention, residual and transformer blocks.

Parity tests load the same weights into diffusers' reference blocks and compare outputs.
"""

import pytest
import torch
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.resnet import ResnetBlock2D

from sdedu.nn import (
    CrossAttention,
    Downsample,
    ResBlock,
    SelfAttention,
    SpatialTransformer,
    TimestepEmbedding,
    TransformerBlock,
    Upsample,
    scaled_dot_product_attention,
    timestep_embedding,
)


def _randomize(module, generator, scale=0.2):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * scale)
    return module


# ---- timestep embedding ------------------------------------------------------------------


@pytest.mark.parametrize("dim", [32, 64, 7])
def test_timestep_embedding_matches_diffusers(dim):
    t = torch.tensor([0, 1, 10, 500, 999])
    ours = timestep_embedding(t, dim)
    theirs = get_timestep_embedding(t, dim, flip_sin_to_cos=True, downscale_freq_shift=0)
    assert ours.shape == (5, dim)
    torch.testing.assert_close(ours, theirs)


def test_timestep_embedding_closed_form():
    emb = timestep_embedding(torch.tensor([0, 3]), 8, max_period=10000)
    # t = 0: cos = 1, sin = 0; t = 3, frequency 0 is 1: cos(3), sin(3).
    torch.testing.assert_close(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    assert emb[1, 0].item() == pytest.approx(torch.cos(torch.tensor(3.0)).item(), abs=1e-6)
    assert emb[1, 4].item() == pytest.approx(torch.sin(torch.tensor(3.0)).item(), abs=1e-6)


def test_timestep_embedding_bad_input():
    with pytest.raises(ValueError, match="t must have 1 dimensions"):
        timestep_embedding(torch.zeros(2, 1), 8)
    with pytest.raises(TypeError, match="dim"):
        timestep_embedding(torch.zeros(2), 8.0)


def test_timestep_embedding_module_shape():
    assert TimestepEmbedding(16, 64)(torch.tensor([1, 2, 3])).shape == (3, 64)


# ---- attention ---------------------------------------------------------------------------


@pytest.mark.parametrize("length", [5, 80])  # written-out products below FUSED_ABOVE, the fused kernel above
def test_explicit_attention_equals_fused_kernel(generator, length):
    q, k, v = (torch.randn(2, 3, length, 8, generator=generator) for _ in range(3))
    mask = torch.ones(2, length, dtype=torch.bool)
    mask[1, 3:] = False
    out, probs = scaled_dot_product_attention(q, k, v, mask, return_probs=True)
    fused = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
    torch.testing.assert_close(out, fused)
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, mask), fused)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 3, length))
    assert probs[1, :, :, 3:].abs().max() == 0  # padding keys get no attention


def test_cross_attention_matches_diffusers(generator):
    ours = _randomize(CrossAttention(16, 12, num_heads=2, head_dim=8), generator)
    theirs = Attention(16, cross_attention_dim=12, heads=2, dim_head=8)
    theirs.load_state_dict({k.replace("to_out.", "to_out.0."): v for k, v in ours.state_dict().items()})
    x, cond = torch.randn(3, 20, 16, generator=generator), torch.randn(3, 7, 12, generator=generator)
    torch.testing.assert_close(ours(x, cond), theirs(x, encoder_hidden_states=cond), atol=1e-5, rtol=1e-4)


def test_self_attention_matches_diffusers(generator):
    ours = _randomize(SelfAttention(16, num_heads=4, head_dim=4), generator)
    theirs = Attention(16, heads=4, dim_head=4)
    theirs.load_state_dict({k.replace("to_out.", "to_out.0."): v for k, v in ours.state_dict().items()})
    x = torch.randn(2, 9, 16, generator=generator)
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-4)


def test_cross_attention_stores_probabilities_per_word(generator):
    attn = _randomize(CrossAttention(16, 12, num_heads=2, head_dim=8), generator)
    x, cond = torch.randn(3, 64, 16, generator=generator), torch.randn(3, 7, 12, generator=generator)
    plain = attn(x, cond)
    assert attn.attention_probs is None
    attn.store_attention = True
    stored = attn(x, cond)
    torch.testing.assert_close(stored, plain)
    probs = attn.attention_probs
    assert probs.shape == (3, 2, 64, 7)  # (B, heads, H*W, L)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 2, 64))


def test_cross_attention_bad_cond():
    attn = CrossAttention(16, 12)
    with pytest.raises(ValueError, match="cond must have 3 dimensions"):
        attn(torch.randn(2, 4, 16), torch.randn(2, 12))
    with pytest.raises(ValueError, match="batch size 2"):
        attn(torch.randn(2, 4, 16), torch.randn(3, 5, 12))


# ---- blocks ------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [(8, 8), (8, 16)])
def test_resblock_matches_diffusers(channels, generator):
    cin, cout = channels
    ours = _randomize(ResBlock(cin, cout, time_dim=10, norm_groups=4), generator)
    theirs = ResnetBlock2D(in_channels=cin, out_channels=cout, temb_channels=10, groups=4, eps=1e-5)
    theirs.load_state_dict(ours.state_dict())
    x, temb = torch.randn(2, cin, 6, 6, generator=generator), torch.randn(2, 10, generator=generator)
    torch.testing.assert_close(ours(x, temb), theirs(x, temb), atol=1e-5, rtol=1e-4)


def test_resblock_time_conditioning_changes_output(generator):
    block = _randomize(ResBlock(8, 8, time_dim=10, norm_groups=4), generator)
    x = torch.randn(1, 8, 4, 4, generator=generator)
    a, b = block(x, torch.zeros(1, 10)), block(x, torch.ones(1, 10))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="temb"):
        block(x)


def test_zero_init_resblock_is_identity():
    block = ResBlock(8, 8, time_dim=4, norm_groups=4, zero_init=True)
    x = torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(block(x, torch.randn(2, 4)), x)


def test_transformer_block_matches_diffusers(generator):
    ours = _randomize(TransformerBlock(16, 12, num_heads=2, head_dim=8, ff_mult=2), generator, scale=0.1)
    theirs = BasicTransformerBlock(16, 2, 8, cross_attention_dim=12, activation_fn="geglu", ff_inner_dim=32)
    renamed = {}
    for k, v in ours.state_dict().items():
        k = k.replace("to_out.", "to_out.0.").replace("ff.proj_in", "ff.net.0.proj").replace("ff.proj_out", "ff.net.2")
        renamed[k] = v
    theirs.load_state_dict(renamed)
    x, cond = torch.randn(2, 10, 16, generator=generator), torch.randn(2, 5, 12, generator=generator)
    torch.testing.assert_close(ours(x, cond), theirs(x, encoder_hidden_states=cond), atol=1e-5, rtol=1e-4)


def test_spatial_transformer_starts_as_identity_and_reads_cond(generator):
    block = SpatialTransformer(16, 12, num_heads=2, head_dim=8, norm_groups=4)
    x, cond = torch.randn(2, 16, 4, 4, generator=generator), torch.randn(2, 5, 12, generator=generator)
    torch.testing.assert_close(block(x, cond), x)  # proj_out starts at zero
    _randomize(block, generator, scale=0.1)
    assert block(x, cond).shape == (2, 16, 4, 4)
    assert not torch.allclose(block(x, cond), block(x, cond + 1.0))


def test_spatial_transformer_projections_are_1x1_convolutions(generator):
    block = _randomize(SpatialTransformer(16, 12, num_heads=2, head_dim=8, norm_groups=4), generator, scale=0.1)
    x, cond = torch.randn(2, 16, 4, 4, generator=generator), torch.randn(2, 5, 12, generator=generator)
    B, C, H, W = x.shape
    tokens = block.proj_in(block.norm(x)).permute(0, 2, 3, 1).reshape(B, H * W, C)  # as written in LDM
    for inner in block.blocks:
        tokens = inner(tokens, cond)
    expected = x + block.proj_out(tokens.reshape(B, H, W, C).permute(0, 3, 1, 2))
    torch.testing.assert_close(block(x, cond), expected, atol=1e-5, rtol=1e-4)
    channels_last = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(block(channels_last, cond), expected, atol=1e-5, rtol=1e-4)


def test_down_and_upsample_shapes():
    x = torch.randn(2, 8, 8, 8)
    assert Downsample(8)(x).shape == (2, 8, 4, 4)
    assert Upsample(8)(x).shape == (2, 8, 16, 16)
    assert Upsample(8, 4)(x).shape == (2, 4, 16, 16)
