"""Concept erasure (ESD, sdedu.safety.erasure): the copy is fine-tuned, the input pipe is not; bad input."""

import pytest
import torch

from sdedu.safety.erasure import (
    ESDConfig,
    concept_attributes,
    concept_prompt_pairs,
    concept_prompts,
    erase_concept,
    erasure_parameters,
    other_prompts,
)
from sdedu.safety.evaluation import shows


@pytest.fixture(scope="module")
def pipe():
    from sdedu import TinyStableDiffusion

    return TinyStableDiffusion.from_pretrained()


def test_concept_prompts_name_the_concept_and_other_prompts_do_not():
    prompts = concept_prompts("triangle", 40, torch.Generator().manual_seed(0))
    assert all("triangle" in p.split() for p in prompts)
    assert len(set(prompts)) > 10  # paraphrases, not one prompt
    red = concept_prompts("a red square", 10, torch.Generator().manual_seed(1))
    assert all({"red", "square"} <= set(p.split()) for p in red)
    assert not any("triangle" in p.split() for p in other_prompts("triangle", 40, torch.Generator().manual_seed(2)))


def test_the_base_of_each_caption_leaves_out_only_the_concept():
    prompts, bases = concept_prompt_pairs("a red triangle", 20, torch.Generator().manual_seed(3))
    for prompt, base in zip(prompts, bases):
        assert base == prompt.replace("red ", "").replace("triangle", "shape")


def test_shows_reads_verdicts():
    verdicts = [{"shape": "triangle", "color": "red"}, {"shape": "circle", "color": "red"}, {"shape": "none"}]
    hit, unclear = shows(verdicts, {"shape": "triangle"})
    assert hit.tolist() == [True, False, False] and unclear.tolist() == [False, False, True]


@pytest.mark.parametrize("concept", ["", "a shape", "a pentagon", "three corners", None])
def test_bad_concepts_are_named(concept):
    with pytest.raises(ValueError, match="concept"):
        concept_attributes(concept)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"method": "z"}, "method"), ({"eta": -1.0}, "eta"), ({"steps": 0}, "steps"), ({"anchor_weight": -1}, "anchor")],
)
def test_bad_configs_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ESDConfig(**kwargs)


@pytest.mark.parametrize("method", ["x", "u", "kv"])
def test_erasure_changes_only_its_parameters_of_a_copy(pipe, method):
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    erased = erase_concept(pipe, "triangle", ESDConfig(method=method, steps=2, batch_size=2, num_inference_steps=2))
    assert all(torch.equal(before[k], v) for k, v in pipe.unet.state_dict().items())  # the input pipe is unchanged
    assert erased.unet is not pipe.unet and erased.text_encoder is pipe.text_encoder
    chosen = {id(p) for p in erasure_parameters(erased.unet, method)}
    changed = {name for name, p in erased.unet.named_parameters() if not torch.equal(p, before[name])}
    assert changed, "ESD changed nothing"
    assert all(id(dict(erased.unet.named_parameters())[name]) in chosen for name in changed)
    assert all(("attn2" in name) == (method != "u") for name in changed)
    if method == "kv":
        assert all(".to_k." in name or ".to_v." in name for name in changed)
    assert erased.manifest["erasure"]["concept"] == "triangle"


def test_erase_concept_rejects_a_word_outside_the_vocabulary(pipe):
    with pytest.raises(ValueError, match="concept 'a hexagon'"):
        erase_concept(pipe, "a hexagon")
    with pytest.raises(TypeError, match="pipe"):
        erase_concept("not a pipe", "triangle")
