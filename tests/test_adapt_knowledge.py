"""Knowledge enhancement (sdedu.adapt.knowledge) and SDEdit as style transfer (sdedu.adapt.style_transfer)."""

import pytest
import torch

from sdedu.adapt.knowledge import FACTS, KnowledgeBase, caption_database, retrieve
from sdedu.adapt.style_transfer import restyle_prompts, sdedit_sweep
from sdedu.data import shapes
from sdedu.metrics import judge


@pytest.fixture(scope="module")
def pipe():
    from sdedu import TinyStableDiffusion

    return TinyStableDiffusion.from_pretrained()


def test_facts_expand_unknown_words_into_the_models_words():
    kb = KnowledgeBase()
    assert len(kb) == len(FACTS) and kb.facts["tomato"] == {"color": "red", "shape": "circle"}
    assert kb.expand("a large tomato in the top left") == "a large red circle in the top left"
    assert kb.without("a large tomato in the top left") == "a large shape in the top left"
    assert kb.expand("a ruby sail") == "a red triangle"  # two facts combine
    assert kb.attributes("a green tomato") == {"color": "green", "shape": "circle"}  # the prompt's word wins
    assert kb.expand("an emerald") == "a green shape"
    assert kb.expand("a red circle") == "a red circle"  # nothing unknown: unchanged
    for fact in FACTS:  # every expansion is a prompt the tokenizer takes
        word = fact.split()[1]
        assert set(kb.expand(f"a {word} in the center").split()) <= set(shapes.VOCABULARY)


@pytest.mark.parametrize(
    "facts, message",
    [
        ("a tomato is red", "facts must be a non-empty list"),
        (["tomato = red"], "sentences 'a WORD is"),
        (["a circle is red"], "already a word of the model's vocabulary"),
        (["a tomato is red", "a tomato is a circle"], "has a fact already"),
        (["a tomato is a shape"], "names no attribute"),
        (["a tomato is purple"], "outside the vocabulary"),
    ],
)
def test_bad_facts_are_refused_with_a_clear_error(facts, message):
    with pytest.raises((TypeError, ValueError), match=message):
        KnowledgeBase(facts)


def test_a_word_nobody_knows_is_named():
    with pytest.raises(ValueError, match=r"neither the model nor the knowledge base knows: \['zebra'\]"):
        KnowledgeBase().expand("a zebra in the center")


def test_retrieval_ranks_the_expanded_caption_first(pipe):
    captions, attributes = caption_database()
    assert len(captions) == 180 and len(set(captions)) == 180
    found = retrieve(pipe, "a large tomato in the top left", k=5)
    assert found.query == "a large red circle in the top left"
    assert found.captions[0] == found.query and found.similarity[0] == pytest.approx(1.0, abs=1e-5)
    assert bool((found.similarity[:-1] >= found.similarity[1:]).all())
    assert found.images.shape == (5, 3, 32, 32)
    assert judge(found.images[:1]) == [found.attributes[0]]
    with pytest.raises(ValueError, match="^k must"):
        retrieve(pipe, "a tomato", k=0)


def test_restyle_prompts_ask_for_another_colour_and_shape():
    images, sources, prompts, asked = restyle_prompts(12, seed=3)
    assert images.shape == (12, 3, 32, 32) and len(prompts) == 12
    for source, wanted, prompt in zip(sources, asked, prompts):
        assert wanted["color"] != source["color"] and wanted["shape"] != source["shape"]
        assert prompt == f"a {wanted['color']} {wanted['shape']}"
        assert (wanted["color"], wanted["shape"]) not in shapes.HELD_OUT


def test_sdedit_at_strength_zero_keeps_the_content_and_ignores_the_prompt(pipe):
    result = sdedit_sweep(pipe, n=4, strengths=(0.0, 1.0), num_inference_steps=4)
    assert result["strength"] == [0.0, 1.0]
    assert result["content_kept"][0] == 1.0 and result["prompt_followed"][0] == 0.0
    assert result["examples"][0.0].shape == (4, 3, 32, 32)
    with pytest.raises(TypeError, match="^strengths"):
        sdedit_sweep(pipe, n=1, strengths=0.5)
    with pytest.raises(ValueError, match="^strength"):
        sdedit_sweep(pipe, n=1, strengths=(1.5,))
    assert torch.is_tensor(result["sources"])
