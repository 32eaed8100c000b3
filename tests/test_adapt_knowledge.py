"""Knowledge enhancement (sdedu.adapt.knowledge) and SDEdit as style transfer (sdedu.adapt.style_transfer)."""

import pytest
import torch

from sdedu.adapt.knowledge import FACTS, KnowledgeBase, caption_database, knowledge_prompts, measure_knowledge, retrieve
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


def test_measure_knowledge_scores_both_ways_against_what_the_prompt_means():
    kb = KnowledgeBase()
    prompts = knowledge_prompts(kb)
    assert len(prompts) == 2 * len(kb) and prompts[0] == "a tomato"

    def draw(said):  # a perfect model: renders exactly what the words say (unnamed attributes fixed)
        full = {"shape": "square", "color": "blue", "size": "large", "position": "center"}
        return shapes.render([{**full, **shapes.parse_caption(p)} for p in said], jitter=False)

    measured = measure_knowledge(draw, prompts, kb)
    assert measured["with"]["all"] == 1.0  # the expansion says everything the prompt means
    assert measured["without"]["color"] < 0.2 and measured["without"]["position"] == 1.0
    assert measured["images"]["with"].shape == (len(prompts), 3, 32, 32)


def test_the_style_examples_and_prompts(pipe):
    from sdedu.adapt.style_lora import RECIPE, STYLE_WORD, measure_style, style_examples, style_prompts, teach_style
    from sdedu.metrics import fill_fraction

    images, captions = style_examples(16)
    assert images.shape == (16, 3, 32, 32) and all(c.endswith(" " + STYLE_WORD) for c in captions)
    large = [i for i, c in enumerate(captions) if " large " in c]
    assert large and float(fill_fraction(images[large]).max()) < 0.8  # outlines, not filled shapes
    prompts, attributes = style_prompts(6)
    assert all(a["size"] == "large" for a in attributes) and prompts[0] == shapes.caption(attributes[0])
    styled = teach_style(pipe, steps=2, prior_images=2, progress=False)
    assert styled.manifest["adaptation"]["words"] == [STYLE_WORD] and styled.manifest["adaptation"]["images"] == 16
    assert styled.manifest["adaptation"]["target"] == list(RECIPE["target"])  # pinned, whatever teach's defaults
    measured = measure_style(styled, pipe, n=4, num_inference_steps=2)
    for reading in ("box fill", "fill fraction"):  # the rendered references: outlines read as less filled
        assert measured[reading]["rendered outline"] < measured[reading]["rendered filled"] - 0.2
    assert measured["fill fraction"]["rendered filled"] == 1.0  # every filled shape reads 1, a circle's pi/4 too
    assert measured["fill fraction"]["outlines through the VAE"] < 0.9  # the VAE's outlines stay outlines
    names = ["rendered filled", "rendered outline", "outlines through the VAE", "original", "styled, no word"]
    names.append("styled, with the word")
    assert list(measured["images"]) == list(measured["fill fraction"]) == names
    assert measured["images"]["styled, with the word"].shape == (4, 3, 32, 32)
