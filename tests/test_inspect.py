"""sdedu.inspect: shape traces, parameter counts, word attention maps and sweeps, on tiny random models."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from sdedu import inspect  # noqa: E402
from sdedu.models.text_encoder import TextEncoder, TextEncoderConfig, Tokenizer  # noqa: E402
from sdedu.models.unet import UNet, UNetConfig  # noqa: E402
from sdedu.models.vae import VAE, VAEConfig  # noqa: E402
from sdedu.nn.blocks import ResBlock, SpatialTransformer  # noqa: E402
from sdedu.pipeline import TinyStableDiffusion  # noqa: E402
from sdedu.schedules import NoiseSchedule  # noqa: E402

PROMPT = "a large red circle in the top left"


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNet(UNetConfig(channels=(32, 64), context_dim=16, head_dim=16, norm_groups=8)).eval()


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    text_encoder = TextEncoder(TextEncoderConfig(width=16, layers=1, num_heads=2, embed_dim=16))
    unet = UNet(UNetConfig(channels=(16, 32), context_dim=16, head_dim=8, norm_groups=8))
    vae = VAE(VAEConfig(channels=(8, 8, 8), norm_groups=4))
    return TinyStableDiffusion(Tokenizer(), text_encoder, vae, unet, NoiseSchedule.scaled_linear())


def unet_inputs(B=2, L=5):
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, 4, 8, 8, generator=g), torch.tensor([3, 700])[:B], torch.randn(B, L, 16, generator=g)


def test_trace_shapes_records_calls_in_order_with_their_shapes(unet):
    records = inspect.trace_shapes(unet, *unet_inputs())
    names = [r.name for r in records]
    assert names[:3] == ["time_embedding", "conv_in", "down0_res"] and names[-1] == "conv_out"
    by_name = {r.name: r for r in records}
    assert by_name["time_embedding"].inputs == [(2,)] and by_name["time_embedding"].output == (2, 128)
    assert by_name["downsample"].output == (2, 32, 4, 4)
    # The up path's ResBlock sees the skip connection concatenated on the channel axis.
    assert by_name["up1_res"].inputs == [(2, 128, 4, 4), (2, 128)]
    assert by_name["up0_attn"].inputs == [(2, 32, 8, 8), (2, 5, 16)]
    assert by_name["conv_out"].output == (2, 4, 8, 8)
    assert by_name["conv_in"].parameters == sum(p.numel() for p in unet.conv_in.parameters())


def test_trace_shapes_removes_its_hooks_and_goes_deeper(unet):
    deeper = inspect.trace_shapes(unet, *unet_inputs(), depth=2)
    assert any(r.name == "down0_attn.blocks" for r in deeper) is False  # ModuleLists are never called
    assert "down0_res.conv1" in [r.name for r in deeper]
    assert all(not m._forward_hooks for m in unet.modules())


def test_format_shape_table_lists_every_record(unet):
    records = inspect.trace_shapes(unet, *unet_inputs())
    table = inspect.format_shape_table(records)
    lines = table.splitlines()
    assert len(lines) == len(records) + 2  # header and rule
    assert "up1_res" in table and "(2, 128, 4, 4), (2, 128)" in table


def test_trace_shapes_rejects_bad_arguments(unet):
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        inspect.trace_shapes(lambda x: x, torch.zeros(1))
    with pytest.raises(ValueError, match="depth must be in"):
        inspect.trace_shapes(unet, *unet_inputs(), depth=0)


def test_parameter_counts_add_up_to_the_total(unet):
    total = sum(p.numel() for p in unet.parameters())
    counts = inspect.parameter_counts(unet)
    assert sum(counts.values()) == total
    assert list(counts)[:2] == ["time_embedding", "conv_in"]
    assert counts["mid_attn"] == sum(p.numel() for p in unet.mid_attn.parameters())
    deeper = inspect.parameter_counts(unet, depth=2)
    assert sum(deeper.values()) == total and "mid_attn.blocks" in deeper


def test_parameter_counts_by_kind_assigns_each_parameter_once(unet):
    counts = inspect.parameter_counts_by_kind(unet, (ResBlock, SpatialTransformer))
    assert sum(counts.values()) == sum(p.numel() for p in unet.parameters())
    res = sum(p.numel() for m in unet.modules() if isinstance(m, ResBlock) for p in m.parameters())
    assert counts["ResBlock"] == res and counts["other"] > 0
    with pytest.raises(TypeError, match="kinds must be"):
        inspect.parameter_counts_by_kind(unet, ["ResBlock"])


def test_word_attention_maps_are_distributions_over_tokens(pipe):
    attention = inspect.word_attention_maps(pipe, PROMPT, num_inference_steps=3, include_padding=True)
    L = pipe.tokenizer.max_length
    assert len(attention.tokens) == L and attention.maps.shape == (L, 8, 8)
    torch.testing.assert_close(attention.maps.sum(dim=0), torch.ones(8, 8))  # softmax over tokens, per pixel
    assert set(attention.per_layer) == {name for name, _ in pipe.unet.cross_attentions().items()}
    assert attention.image.shape == (3, 32, 32)
    # Stored attention is switched off again.
    assert all(not m.store_attention and m.attention_probs is None for m in pipe.unet.cross_attentions().values())


def test_word_attention_maps_drop_padding_and_match_the_pipeline_image(pipe):
    attention = inspect.word_attention_maps(pipe, "a red circle", num_inference_steps=3, seed=4)
    assert attention.tokens == ["<start>", "a", "red", "circle", "<end>"]
    assert attention.maps.shape == (5, 8, 8)
    torch.testing.assert_close(attention.image, pipe("a red circle", num_inference_steps=3, seed=4)[0])
    fig = inspect.plot_word_maps(attention)
    assert [ax.get_title() for ax in fig.get_axes()] == ["image"] + attention.tokens
    with pytest.raises(TypeError, match="prompt must be one str"):
        inspect.word_attention_maps(pipe, ["a", "b"])


def test_guidance_sweep_scores_each_scale_on_the_same_seeds(pipe):
    prompts = ["a red shape"] * 3
    rows = inspect.guidance_sweep(pipe, prompts, [1.0, 3.0], num_inference_steps=2, batch_size=2)
    assert [r["guidance_scale"] for r in rows] == [1.0, 3.0]
    assert rows[0]["images"].shape == (3, 3, 32, 32)
    assert set(rows[0]["adherence"]) == {"color", "all", "n"} and rows[0]["adherence"]["n"] == 3
    assert sum(rows[0]["diversity"]["counts"].values()) == 3
    again = inspect.guidance_sweep(pipe, prompts, [3.0], num_inference_steps=2, batch_size=2)
    assert torch.equal(again[0]["images"], rows[1]["images"])
    fig = inspect.plot_guidance_sweep(rows)
    assert len(fig.get_axes()) == 2


def test_sampling_sweep_times_each_step_count(pipe):
    rows = inspect.sampling_sweep(pipe, [PROMPT, "a blue square"], [1, 3], sampler="ddpm")
    assert [(r["sampler"], r["steps"]) for r in rows] == [("ddpm", 1), ("ddpm", 3)]
    assert all(r["seconds"] > 0 and r["adherence"]["n"] == 2 for r in rows)


def test_training_step_seconds_leaves_the_model_unchanged(unet):
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    x0, _, cond = unet_inputs()
    seconds = inspect.training_step_seconds(unet, x0, NoiseSchedule.linear(), repeats=2, warmup=0, cond=cond)
    assert seconds > 0
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items())
    with pytest.raises(ValueError, match="repeats must be in"):
        inspect.training_step_seconds(unet, x0, NoiseSchedule.linear(), repeats=0, cond=cond)
