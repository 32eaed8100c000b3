"""sdedu.adapt.teach (issue 18 item 3) and the new concepts of the shapes world and its judge."""

import pytest
import torch

from sdedu import metrics
from sdedu.adapt import teach
from sdedu.adapt.protect import CROSS_ATTENTION_KV, old_captions, old_context_basis
from sdedu.adapt.vocabulary import extend_text_encoder, new_words
from sdedu.bench.common import random_pipeline
from sdedu.data import shapes


@pytest.fixture(scope="module")
def pipe():
    return random_pipeline("tiny", T=50)


def state(module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_same(a: dict, b: dict, skip=()):
    assert a.keys() == b.keys()
    for key in a:
        if key not in skip:
            assert torch.equal(a[key], b[key]), key


def orange_set(n=4):
    images, captions, _ = shapes.sample_concept(n, "orange", seed=0)
    return images, captions


# ---- the shapes world and the judge ------------------------------------------------------------


def test_standard_world_never_holds_the_concepts():
    _, captions, attributes = shapes.sample(300, seed=0)
    batch_captions = next(shapes.training_batches(300, seed=0))[1]
    for word in shapes.CONCEPT_VOCABULARY:
        assert word not in shapes.VOCABULARY
        assert not any(word in c.split() for c in captions + batch_captions)
    assert {a["color"] for a in attributes} <= set(shapes.COLORS)


@pytest.mark.parametrize("concept", shapes.CONCEPTS)
def test_judge_reads_rendered_concepts(concept):
    images, captions, attributes = shapes.sample_concept(120, concept, seed=1)
    assert all(concept in c.split() for c in captions)
    assert metrics.adherence(images, captions)["all"] == 1.0  # concepts judged because the prompts name one
    standard = metrics.adherence(images, captions, concepts=False)
    assert standard["all"] == 0.0  # the standard judge cannot read them


def test_standard_verdicts_unchanged_by_the_concepts():
    images, _, attributes = shapes.sample(600, seed=3)
    plain = metrics.judge(images)
    assert metrics.judge(images, concepts=True) == plain
    assert plain == attributes
    noisy = (images + 0.3 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert metrics.adherence(noisy, attributes) == metrics.adherence(metrics.judge(noisy), attributes)


def test_outline_style_and_fill_fraction():
    filled, _, attributes = shapes.sample_concept(200, None, seed=2)
    outline, _, same = shapes.sample_concept(200, None, seed=2, style="outline")
    assert same == attributes
    assert torch.equal(filled, shapes.sample(200, seed=2)[0])
    assert torch.all(metrics.fill_fraction(filled) == 1.0)
    large = torch.tensor([a["size"] == "large" for a in attributes])
    assert metrics.fill_fraction(outline)[large].max() < 0.75
    with pytest.raises(ValueError, match="style"):
        shapes.render(attributes[0], style="dotted")


# ---- vocabulary ----------------------------------------------------------------------------------


def test_tokenizer_extension_keeps_old_ids_and_encodings(pipe):
    tokenizer, encoder = extend_text_encoder(pipe.tokenizer, pipe.text_encoder, ["orange", "diamond"], seed=0)
    old = pipe.tokenizer(["a large red circle in the center", ""])
    assert torch.equal(tokenizer(["a large red circle in the center", ""]), old)
    ids = tokenizer("a orange diamond")[0].tolist()
    assert ids[2:4] == [len(pipe.tokenizer), len(pipe.tokenizer) + 1]
    assert encoder.config.vocab_size == len(tokenizer) == len(pipe.tokenizer) + 2
    assert torch.equal(encoder(old), pipe.text_encoder(old))
    assert len(pipe.tokenizer) == len(pipe.tokenizer.vocabulary) + 3  # the input untouched


def test_new_words_found_and_checked(pipe):
    assert new_words(pipe.tokenizer, ["a orange circle", "a orange diamond"]) == ("orange", "diamond")
    with pytest.raises(ValueError, match="words must be new.*'red'"):
        new_words(pipe.tokenizer, ["a red circle"], words=["red"])
    with pytest.raises(ValueError, match="captions must use at least one new word"):
        new_words(pipe.tokenizer, ["a red circle"])
    with pytest.raises(ValueError, match="neither in the vocabulary nor in words"):
        new_words(pipe.tokenizer, ["a orange diamond"], words=["orange"])


# ---- teach -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["textual_inversion", "lora", "both"])
def test_teach_freezes_what_it_must_and_leaves_the_input(pipe, method):
    before = {"text": state(pipe.text_encoder), "unet": state(pipe.unet), "vae": state(pipe.vae)}
    vocabulary = pipe.tokenizer.vocabulary
    images, captions = orange_set()
    prior = {"prior_images": 4} if method != "textual_inversion" else {}
    taught = teach(pipe, images, captions, method=method, steps=3, batch_size=4, progress=False, **prior)
    # The input pipeline is unchanged.
    assert pipe.tokenizer.vocabulary == vocabulary
    for name, module in (("text", pipe.text_encoder), ("unet", pipe.unet), ("vae", pipe.vae)):
        assert_same(state(module), before[name])
    # The new one knows the word; its frozen parts are bit-identical.
    assert taught.tokenizer.vocabulary == vocabulary + ("orange",)
    after = state(taught.text_encoder)
    old_rows = before["text"]["token_embedding.weight"]
    assert torch.equal(after["token_embedding.weight"][: len(old_rows)], old_rows)
    assert_same(after, before["text"], skip=("token_embedding.weight",))
    unet_same = all(torch.equal(v, before["unet"][k]) for k, v in state(taught.unet).items())
    assert unet_same == (method == "textual_inversion")
    assert taught.manifest["adaptation"]["method"] == method
    assert all(not p.requires_grad for p in taught.unet.parameters())
    assert taught(["a orange circle", "a red circle"], num_inference_steps=2).shape == (2, 3, 32, 32)


def test_teach_textual_inversion_moves_the_new_row(pipe):
    images, captions = orange_set()
    taught = teach(pipe, images, captions, method="textual_inversion", steps=3, batch_size=4, progress=False)
    start = extend_text_encoder(pipe.tokenizer, pipe.text_encoder, ["orange"], seed=0)[1]
    assert not torch.equal(taught.text_encoder.token_embedding.weight[-1], start.token_embedding.weight[-1])


def test_teach_lora_moves_only_its_target_layers(pipe):
    images, captions = orange_set()
    target = ("attn2.to_k", "attn2.to_v")
    before = state(pipe.unet)
    taught = teach(
        pipe, images, captions, method="lora", steps=3, batch_size=4, prior_images=4, target=target, progress=False
    )
    moved = {k for k, v in state(taught.unet).items() if not torch.equal(v, before[k])}
    assert moved and all(k.split(".")[-3:-1] in (["attn2", "to_k"], ["attn2", "to_v"]) for k in moved), moved
    assert taught.manifest["adaptation"]["target"] == list(target)


def test_old_captions_are_the_whole_standard_world():
    captions = old_captions()
    assert len(captions) == len(set(captions)) == 505 and {"", "a shape", "a large red circle in the center"} <= set(
        captions
    )
    assert not any(word in c.split() for c in captions for word in shapes.CONCEPT_VOCABULARY)


def test_protected_lora_update_is_blind_to_the_old_contexts(pipe):
    images, captions = orange_set()
    kwargs = {"method": "both", "steps": 3, "batch_size": 4, "prior_images": 4, "progress": False}
    taught = teach(pipe, images, captions, target=CROSS_ATTENTION_KV, protect_old=0.99, **kwargs)
    basis = old_context_basis(pipe.tokenizer, pipe.text_encoder, 0.99)  # (D, k)
    assert 0 < basis.shape[1] < basis.shape[0]
    before, after = state(pipe.unet), state(taught.unet)
    for name in (k for k in after if k.endswith(("attn2.to_k.weight", "attn2.to_v.weight"))):
        delta = after[name] - before[name]  # (out, D): the merged LoRA update
        assert delta.norm() > 0, name
        assert (delta @ basis).norm() < 1e-4 * delta.norm(), name  # zero on the old captions' subspace
    assert taught.manifest["adaptation"]["protect_old"] == 0.99


def test_teach_prior_weight_zero_is_no_prior(pipe):
    images, captions = orange_set()
    kwargs = {"method": "lora", "steps": 2, "batch_size": 4, "progress": False}
    weightless = teach(pipe, images, captions, prior_images=4, prior_weight=0.0, **kwargs)
    weighted = teach(pipe, images, captions, prior_images=4, prior_weight=1.0, **kwargs)
    assert not all(torch.equal(v, state(weighted.unet)[k]) for k, v in state(weightless.unet).items())


def test_teach_is_deterministic_for_a_seed(pipe):
    images, captions = orange_set()
    a, b = (
        teach(pipe, images, captions, method="both", steps=2, seed=5, batch_size=4, prior_images=2, progress=False)
        for _ in range(2)
    )
    assert_same(state(a.unet), state(b.unet))
    assert_same(state(a.text_encoder), state(b.text_encoder))


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"images": torch.zeros(0, 3, 32, 32), "captions": []}, ValueError, "images must hold at least one image"),
        ({"images": torch.zeros(4, 3, 16, 16)}, ValueError, r"images must have shape \(N, 3, 32, 32\)"),
        ({"images": torch.full((4, 3, 32, 32), 2.0)}, ValueError, r"images must lie in \[0, 1\]"),
        ({"captions": ["a orange circle"] * 3}, ValueError, "captions must have one caption per image"),
        ({"words": ["red"]}, ValueError, "words must be new"),
        ({"method": "dreambooth"}, ValueError, "method must be one of"),
        ({"steps": 0}, ValueError, "steps"),
        ({"prior_weight": -1.0}, ValueError, "prior_weight"),
        ({"protect_old": 1.5}, ValueError, "protect_old"),
        ({"lr": 0.0}, ValueError, "lr must be > 0"),
        ({"prior_images": 4}, ValueError, "prior_images is used by methods 'lora' and 'both' only"),
        ({"prior_weight": 0.5}, ValueError, "prior_weight is used by methods 'lora' and 'both' only"),
        ({"rank": 8}, ValueError, "rank is used by methods 'lora' and 'both' only"),
        ({"protect_old": 0.0}, ValueError, "protect_old is used by methods 'lora' and 'both' only"),
        ({"target": ("attn2.to_k",)}, ValueError, "target is used by methods 'lora' and 'both' only"),
        ({"method": "lora", "target": ("attn1.to_q",)}, ValueError, "when protect_old > 0"),
        ({"method": "lora", "target": ("to_nothing",)}, ValueError, "target names"),
        ({"pipe": "sd"}, TypeError, "pipe must be a sdedu TinyStableDiffusion"),
    ],
)
def test_teach_bad_input(pipe, change, error, match):
    images, captions = orange_set()
    kwargs = {"pipe": pipe, "images": images, "captions": captions, "steps": 1, "progress": False, **change}
    with pytest.raises(error, match=match):
        teach(**kwargs)
