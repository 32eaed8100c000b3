"""sdedu.attention_maps: per-word cross-attention maps of a tiny random pipeline."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from sdedu.attention_maps import plot_word_maps, word_attention_maps  # noqa: E402

PROMPT = "a large red circle in the top left"


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def pipe(tiny_random_pipe):
    return tiny_random_pipe


def test_word_attention_maps_are_distributions_over_tokens(pipe):
    attention = word_attention_maps(pipe, PROMPT, num_inference_steps=3, include_padding=True)
    L = pipe.tokenizer.max_length
    assert len(attention.tokens) == L and attention.maps.shape == (L, 8, 8)
    torch.testing.assert_close(attention.maps.sum(dim=0), torch.ones(8, 8))  # softmax over tokens, per pixel
    assert set(attention.per_layer) == {name for name, _ in pipe.unet.cross_attentions().items()}
    assert attention.image.shape == (3, 32, 32)
    # Stored attention is switched off again.
    assert all(not m.store_attention and m.attention_probs is None for m in pipe.unet.cross_attentions().values())


def test_word_attention_maps_drop_padding_and_match_the_pipeline_image(pipe):
    attention = word_attention_maps(pipe, "a red circle", num_inference_steps=3, seed=4)
    assert attention.tokens == ["<start>", "a", "red", "circle", "<end>"]
    assert attention.maps.shape == (5, 8, 8)
    torch.testing.assert_close(attention.image, pipe("a red circle", num_inference_steps=3, seed=4)[0])
    fig = plot_word_maps(attention)
    assert [ax.get_title() for ax in fig.get_axes()] == ["image"] + attention.tokens
    with pytest.raises(TypeError, match="prompt must be one str"):
        word_attention_maps(pipe, ["a", "b"])
