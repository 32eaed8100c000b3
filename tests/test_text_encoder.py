"""sdedu.models.text_encoder: the tokenizer's contract, the encoder, the contrastive loss."""

import pytest
import torch
import torch.nn.functional as F

from sdedu.data.shapes import VOCABULARY
from sdedu.models.text_encoder import (
    END_ID,
    PAD_ID,
    START_ID,
    ContrastiveModel,
    TextEncoder,
    TextEncoderConfig,
    Tokenizer,
)


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer()


def test_token_layout(tokenizer):
    ids = tokenizer(["a red circle", ""])
    assert ids.dtype == torch.long and ids.shape == (2, tokenizer.max_length)
    word = tokenizer.token_to_id
    assert ids[0, :5].tolist() == [tokenizer.start_id, word["a"], word["red"], word["circle"], tokenizer.end_id]
    assert (ids[0, 5:] == tokenizer.pad_id).all()
    # The empty prompt is <start> <end> only: the unconditional prompt.
    assert ids[1, :2].tolist() == [tokenizer.start_id, tokenizer.end_id] and (ids[1, 2:] == tokenizer.pad_id).all()
    # The encoder's ids for <pad> and <end> are the tokenizer's, by name.
    assert (tokenizer.pad_id, tokenizer.start_id, tokenizer.end_id) == (PAD_ID, START_ID, END_ID)
    assert [tokenizer.token_to_id[t] for t in ("<pad>", "<start>", "<end>")] == [PAD_ID, START_ID, END_ID]
    assert tokenizer.decode(ids[:1])[0][:5] == ["<start>", "a", "red", "circle", "<end>"]


def test_vocabulary_is_the_shapes_world(tokenizer):
    assert len(tokenizer) == len(VOCABULARY) + 3
    assert set(VOCABULARY) <= set(tokenizer.token_to_id)
    longest = "a small magenta triangle in the bottom right"
    assert tokenizer(longest).shape == (1, tokenizer.max_length)


def test_case_and_punctuation(tokenizer):
    assert torch.equal(tokenizer("A Red, circle."), tokenizer("a red circle"))
    assert torch.equal(tokenizer("a red circle"), tokenizer(["a red circle"]))


def test_unknown_words_are_named_with_the_vocabulary(tokenizer):
    with pytest.raises(ValueError) as info:
        tokenizer(["a red circle", "a purple hexagon"])
    message = str(info.value)
    assert "hexagon" in message and "purple" in message and "magenta" in message
    with pytest.raises(ValueError, match="<pad>"):
        tokenizer("a <pad> circle")


def test_too_long_and_wrong_types(tokenizer):
    with pytest.raises(ValueError, match="at most 10"):
        tokenizer("a " * 11)
    with pytest.raises(TypeError, match="prompts"):
        tokenizer(3)
    with pytest.raises(TypeError, match="prompt must be a str"):
        tokenizer([3])


def test_encoder_shape_and_padding_never_matters(tokenizer):
    torch.manual_seed(0)
    encoder = TextEncoder(TextEncoderConfig(width=32, layers=2, num_heads=2))
    ids = tokenizer(["a red circle", "a small blue square in the center"])
    cond = encoder(ids)
    assert cond.shape == (2, tokenizer.max_length, 32)
    # Changing what sits at the padded positions leaves the real tokens' embeddings unchanged.
    with torch.no_grad():
        encoder.position_embedding[6:] += 5.0
    torch.testing.assert_close(encoder(ids)[0, :5], cond[0, :5])
    assert encoder.pooled(ids).shape == (2, encoder.config.embed_dim)


def test_encoder_bad_ids(tokenizer):
    encoder = TextEncoder()
    with pytest.raises(ValueError, match="int64"):
        encoder(tokenizer("a circle").float())
    with pytest.raises(ValueError, match=r"\(B, 12\)"):
        encoder(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="must lie in"):
        encoder(torch.full((1, 12), 99))


def test_contrastive_loss_reduces_to_clip_with_one_match_per_row(tokenizer, generator):
    model = ContrastiveModel(TextEncoder(TextEncoderConfig(width=32, num_heads=2)), image_channels=8)
    images = torch.rand(4, 3, 32, 32, generator=generator)
    ids = tokenizer(["a red circle", "a blue square", "a green triangle", "a large shape"])
    loss = model.loss(images, ids, torch.eye(4, dtype=torch.bool))
    image_emb = F.normalize(model.image_encoder(images), dim=-1)
    text_emb = F.normalize(model.text_encoder.pooled(ids), dim=-1)
    logits = model.logit_scale.exp() * image_emb @ text_emb.T
    labels = torch.arange(4)
    clip = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    torch.testing.assert_close(loss, clip)
    # Extra positives change the targets, hence the loss.
    match = torch.eye(4, dtype=torch.bool)
    match[:, 3] = True  # "a large shape" matches every image here
    assert not torch.allclose(model.loss(images, ids, match), loss)
