"""Memorisation (issue 19 item 4): Carlini et al.'s extraction rule, its calibration, the training sets,
the shipped memorising model and the recipe that trains it."""

import json

import pytest
import torch

from sdedu.safety import memorisation
from sdedu.safety.memorisation import (
    calibrated_extraction,
    extraction_scores,
    l2_distances,
    memorising_pipeline,
    training_set,
)
from sdedu.training.memorisation_recipe import TRAINING_IMAGES, memorising_recipe
from sdedu.training.parts import encode_bank
from sdedu.training.recipe_config import Recipe
from sdedu.weights import WeightsError, load_component, sha256_file


def test_l2_is_the_root_mean_squared_pixel_difference():
    a = torch.zeros(2, 3, 4, 4)
    b = torch.stack([torch.zeros(3, 4, 4), torch.full((3, 4, 4), 0.5), torch.ones(3, 4, 4)])
    d = l2_distances(a, b)
    assert d.shape == (2, 3)
    assert torch.allclose(d[0], torch.tensor([0.0, 0.5, 1.0]), atol=1e-6)


@pytest.mark.parametrize(
    "a, b, match",
    [
        (torch.zeros(3, 4, 4), torch.zeros(1, 3, 4, 4), "a must be"),
        (torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 2, 2), "same size"),
    ],
)
def test_l2_refuses_what_is_not_two_batches_of_same_size_images(a, b, match):
    with pytest.raises(ValueError, match=match):
        l2_distances(a, b)


def test_a_copy_is_extracted_and_an_image_between_many_is_not():
    training = torch.rand(60, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    copy = training[7:8] + 0.001 * torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    average = training.mean(dim=0, keepdim=True)  # about as far from every training image
    result = extraction_scores(torch.cat([copy, average]), training)
    assert result.extracted.tolist() == [True, False]
    assert result.nearest[0] == 7 and result.distance[0] < 0.01
    with pytest.raises(ValueError, match="alpha"):
        extraction_scores(copy, training, alpha=0.0)


def test_calibration_flags_scores_below_the_controls_quantile():
    control = extraction_scores(torch.rand(100, 3, 4, 4), torch.rand(50, 3, 4, 4))
    attack = extraction_scores(torch.rand(5, 3, 4, 4), torch.rand(50, 3, 4, 4))
    attack.score = torch.tensor([0.0, 10.0, 0.0, 10.0, 10.0])
    assert calibrated_extraction(attack, control).tolist() == [True, False, True, False, False]
    assert calibrated_extraction(control, control, 0.1).float().mean() <= 0.1
    with pytest.raises(ValueError, match="false_positive_rate"):
        calibrated_extraction(attack, control, 1.5)


def test_training_set_is_the_bank_the_unet_was_trained_on():
    recipe = memorising_recipe()
    images, captions, attributes = training_set(recipe)
    assert images.shape == (TRAINING_IMAGES, 3, 32, 32) and len(captions) == len(attributes) == TRAINING_IMAGES
    vae = load_component("vae")
    means, _, bank_attributes = encode_bank(vae, recipe.latent_bank, recipe.seed + 2)
    assert bank_attributes == attributes
    with torch.no_grad():
        assert torch.equal(vae.encode(images)[0], means)


def test_the_memorising_pipeline_has_the_memorising_unet_and_names_it(tmp_path):
    pipe = memorising_pipeline()
    entry = json.loads((memorisation.MEMORISING_WEIGHTS / "manifest.json").read_text())["components"]["unet"]
    assert (
        pipe.manifest["components"]["unet"]["sha256"]
        == entry["sha256"]
        == sha256_file(memorisation.MEMORISING_WEIGHTS / "unet.safetensors")
    )
    assert torch.equal(pipe.unet.conv_in.weight, load_component("unet", memorisation.MEMORISING_WEIGHTS).conv_in.weight)


def test_the_memorising_weights_name_the_shipped_vae_and_text_encoder(tmp_path):
    for file in ("unet.safetensors", "manifest.json"):
        (tmp_path / file).write_bytes((memorisation.MEMORISING_WEIGHTS / file).read_bytes())
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["recipe"]["latent_bank"] == TRAINING_IMAGES
    manifest["base"]["vae"]["sha256"] = "0" * 64
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="base.vae.sha256"):
        memorising_pipeline(path=tmp_path)


def test_the_recipe_changes_only_the_unets_data_and_schedule():
    shipped, memorising = Recipe(), memorising_recipe()
    assert memorising.latent_bank == TRAINING_IMAGES
    assert memorising.unet == shipped.unet and memorising.schedule == shipped.schedule
    assert (memorising.p_full, memorising.p_drop, memorising.p_uncond) == (
        shipped.p_full,
        shipped.p_drop,
        shipped.p_uncond,
    )


def test_python_m_sdedu_train_memorise_runs(tmp_path, capsys):
    from sdedu.train import main

    assert main(["memorise", "--steps", "2", "--out", str(tmp_path), "--no-progress", "--threads", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["unet"]["steps"] == 2
    assert load_component("unet", tmp_path / "weights").config == memorising_recipe().unet
