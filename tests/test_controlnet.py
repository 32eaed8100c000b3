"""ControlNet (issue 18 item 5): zero-init property, wiring into the UNet and the one loop, bad input, recipe, shipped weights."""

import pytest
import torch

from sdedu import ControlNet, TinyStableDiffusion
from sdedu.data import shapes
from sdedu.metrics.masks import mask_iou, shape_mask
from sdedu.models.controlnet import ControlledUNet, ControlNetConfig, ControlNetModel, outline
from sdedu.models.unet import UNet, UNetConfig
from sdedu.training.controlnet_recipe import ControlNetRecipe, train_controlnet
from sdedu.training.loop import TrainConfig
from sdedu.weights import SHIPPED, read_manifest, sha256_file

SMALL = UNetConfig(channels=(16, 32), context_dim=8, head_dim=8, norm_groups=4)


@pytest.fixture(scope="module")
def pipe():
    return TinyStableDiffusion.from_pretrained()


def masks_of(n, seed=0):
    images, _, _ = shapes.sample(n, seed=seed)
    return shape_mask(images)


def inputs(config, B=3):
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(B, config.in_channels, config.sample_size, config.sample_size, generator=g)
    cond = torch.randn(B, 5, config.context_dim, generator=g)
    return x_t, torch.tensor([0, 500, 999][:B]), cond


# ---- the model ----------------------------------------------------------------------------------


def test_untrained_controlnet_leaves_the_unet_output_bit_identical():
    """Zhang et al. 2023, eq. 2: zero convolutions make y_c = y at initialisation."""
    torch.manual_seed(0)
    unet = UNet(SMALL).eval()
    controlnet = ControlNetModel.from_unet(unet).eval()
    x_t, t, cond = inputs(SMALL)
    with torch.no_grad():
        down, mid = controlnet(x_t, t, cond, masks_of(3))
        assert all(torch.count_nonzero(r) == 0 for r in [*down, mid])
        assert torch.equal(ControlledUNet(unet, controlnet, masks_of(3))(x_t, t, cond), unet(x_t, t, cond))


def test_residuals_reach_the_unet_and_the_copy_starts_as_its_encoder():
    torch.manual_seed(0)
    unet = UNet(SMALL).eval()
    controlnet = ControlNetModel.from_unet(unet).eval()
    for name in ("time_embedding", "conv_in", "down0_res", "down0_attn", "down1_res", "mid_attn"):
        ours, theirs = getattr(controlnet, name).state_dict(), getattr(unet, name).state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    x_t, t, cond = inputs(SMALL)
    with torch.no_grad():
        reference = unet(x_t, t, cond)
        for zero_conv in (controlnet.zero_convs[0], controlnet.zero_convs[1], controlnet.zero_mid):
            zero_conv.bias.fill_(0.1)
            assert not torch.equal(ControlledUNet(unet, controlnet, masks_of(3))(x_t, t, cond), reference)
            zero_conv.bias.zero_()
        # the mask enters through the condition network (its last convolution starts at zero)
        controlnet.zero_mid.weight.fill_(0.01)
        controlnet.condition[-1].weight.normal_(generator=torch.Generator().manual_seed(1))
        a = ControlledUNet(unet, controlnet, masks_of(3, seed=1))(x_t, t, cond)
        b = ControlledUNet(unet, controlnet, masks_of(3, seed=2))(x_t, t, cond)
    assert not torch.equal(a, b)


def test_outline_is_the_mask_minus_its_erosion():
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1.0
    expected = mask.clone()
    expected[..., 3:5, 3:5] = 0.0  # the 4x4 square's ring
    assert torch.equal(outline(mask), expected)


def test_config_checks():
    with pytest.raises(ValueError, match="image_size"):
        ControlNetConfig(image_size=24)
    with pytest.raises(ValueError, match="embedding_channels"):
        ControlNetConfig(embedding_channels=(16, 32))
    assert ControlNetConfig(unet={"channels": [16, 32], "norm_groups": 4}).unet.channels == (16, 32)


# ---- masks and IoU ------------------------------------------------------------------------------


def test_mask_iou():
    images, _, _ = shapes.sample(4, seed=3)
    masks = shape_mask(images)
    assert torch.equal(mask_iou(images, masks), torch.ones(4))
    assert torch.equal(mask_iou(images, torch.zeros_like(masks)), torch.zeros(4))
    assert torch.equal(mask_iou(torch.zeros_like(images), torch.zeros_like(masks)), torch.ones(4))
    square, shifted = torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32)
    square[..., 8:16, 8:16], shifted[..., 8:16, 12:20] = 1.0, 1.0
    red = square * torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)  # (1, 3, 32, 32)
    assert torch.allclose(mask_iou(red, shifted), torch.tensor([32 / 96]))  # 8x4 shared of 8x12
    with pytest.raises(ValueError, match="masks must have shape"):
        mask_iou(images, masks[:2])


# ---- the pipeline -------------------------------------------------------------------------------


def test_pipeline_with_an_untrained_controlnet_is_unchanged_and_broadcasts(pipe):
    controlnet = ControlNet.from_unet(pipe.unet)
    prompts = ["a red shape", "a blue circle"]
    plain = pipe(prompts, num_inference_steps=2)
    assert torch.equal(pipe(prompts, num_inference_steps=2, control_image=masks_of(2), controlnet=controlnet), plain)
    controlnet.model.zero_mid.bias.data.fill_(0.5)
    one = pipe(prompts, num_inference_steps=2, control_image=masks_of(1), controlnet=controlnet)
    both = pipe(prompts, num_inference_steps=2, control_image=masks_of(1).expand(2, -1, -1, -1), controlnet=controlnet)
    assert not torch.equal(one, plain) and torch.equal(one, both)
    per_prompt = pipe(
        prompts, num_inference_steps=2, control_image=masks_of(2), controlnet=controlnet, num_images_per_prompt=2
    )
    assert per_prompt.shape == (4, 3, 32, 32)
    kwargs = {"control_image": masks_of(2), "controlnet": controlnet, "controlnet_conditioning_scale": 0.0}
    scaled_off = pipe(prompts, num_inference_steps=2, **kwargs)
    assert torch.equal(scaled_off, plain)


def test_pipeline_bad_input(pipe):
    controlnet = ControlNet.from_unet(pipe.unet)
    good = masks_of(2)
    call = lambda **kw: pipe(["a red shape"] * 2, num_inference_steps=1, **kw)  # noqa: E731
    with pytest.raises(ValueError, match="control_image was given without controlnet"):
        call(control_image=good)
    with pytest.raises(ValueError, match="controlnet was given without control_image"):
        call(controlnet=controlnet)
    with pytest.raises(TypeError, match="controlnet must be a sdedu ControlNet"):
        call(control_image=good, controlnet=controlnet.model)
    with pytest.raises(ValueError, match=r"control_image must have shape \(B, 1, 32, 32\)"):
        call(control_image=torch.rand(2, 1, 16, 16), controlnet=controlnet)
    with pytest.raises(ValueError, match=r"control_image must have shape \(B, 1, 32, 32\)"):
        call(control_image=torch.rand(2, 3, 32, 32), controlnet=controlnet)
    with pytest.raises(ValueError, match=r"control_image must have values in \[0, 1\]"):
        call(control_image=good * 2, controlnet=controlnet)
    with pytest.raises(ValueError, match="control_image must hold 1, 2"):
        call(control_image=masks_of(3), controlnet=controlnet)
    with pytest.raises(ValueError, match="controlnet_conditioning_scale"):
        call(control_image=good, controlnet=controlnet, controlnet_conditioning_scale=-1.0)
    other = ControlNet.from_unet(UNet(SMALL))
    with pytest.raises(ValueError, match="controlnet was made for a UNet with config"):
        call(control_image=good, controlnet=other)
    stranger = ControlNet(controlnet.model, {"base": {"unet": {"sha256": "0" * 64}}})
    with pytest.raises(ValueError, match="controlnet was trained for the UNet with sha256 0000"):
        call(control_image=good, controlnet=stranger)


# ---- the recipe and the shipped weights ---------------------------------------------------------


def test_recipe_smoke_run_is_reproducible_and_loads(tmp_path, pipe):
    recipe = ControlNetRecipe(train=TrainConfig(steps=2, warmup_steps=1, checkpoint_every=2), batch_size=4, bank=8)
    first = train_controlnet(tmp_path / "a", recipe, progress=False)
    second = train_controlnet(tmp_path / "b", recipe, progress=False)
    assert sha256_file(first / "controlnet.safetensors") == sha256_file(second / "controlnet.safetensors")
    manifest = read_manifest(first)
    assert manifest["model"] == "ControlNet" and manifest["recipe"]["batch_size"] == 4
    assert manifest["base"]["unet"]["sha256"] == read_manifest(SHIPPED)["components"]["unet"]["sha256"]
    controlnet = ControlNet.from_pretrained(first)
    images = pipe("a red shape", num_inference_steps=1, control_image=masks_of(1), controlnet=controlnet)
    assert images.shape == (1, 3, 32, 32)


def test_recipe_bad_settings():
    with pytest.raises(ValueError, match="recipe.p_uncond"):
        ControlNetRecipe(p_uncond=2.0)
    with pytest.raises(ValueError, match="recipe.bank"):
        ControlNetRecipe(bank=0)


def test_shipped_controlnet_loads_fits_and_is_small(pipe):
    folder = SHIPPED / "controlnet"
    manifest = read_manifest(folder)
    entry = manifest["components"]["controlnet"]
    assert entry["bytes"] <= 5 * 2**20
    assert manifest["base"]["unet"]["sha256"] == read_manifest(SHIPPED)["components"]["unet"]["sha256"]
    controlnet = ControlNet.from_pretrained()
    controlnet.check_fits(pipe)
    assert "recipe" in manifest and manifest["training_cpu_seconds"] > 0
