"""TinyStableDiffusion3: the shipped weights (offline, hash-checked), the pipeline's plumbing, bad input, the recipe."""

import json
import shutil
import types

import pytest
import torch

from sdedu import TinyStableDiffusion, TinyStableDiffusion3
from sdedu.models.mmdit import MMDiT, MMDiTConfig
from sdedu.models.text_encoder import Tokenizer
from sdedu.pipeline.sd3 import DEFAULT_STEPS, SHIPPED_SD3
from sdedu.training.loop import TrainConfig
from sdedu.training.sd3_recipe import SD3Recipe, train_sd3
from sdedu.weights import SHIPPED, WeightsError, load_component, read_manifest, sha256_file

PROMPT = "a large red circle in the top left"


@pytest.fixture(scope="module")
def pipe():
    """The shipped VAE and text encoder with a small random MM-DiT: fast, for shapes and plumbing."""
    torch.manual_seed(0)
    text_encoder, vae = load_component("text_encoder"), load_component("vae")
    mmdit = MMDiT(MMDiTConfig(width=32, depth=2, num_heads=2))
    with torch.no_grad():
        for p in mmdit.parameters():  # not the zero initialisation: the output must depend on the input
            p.add_(torch.randn(p.shape) * 0.05)
    return TinyStableDiffusion3(Tokenizer(max_length=text_encoder.config.max_length), text_encoder, vae, mmdit)


# ---- the shipped model -----------------------------------------------------------------------


def test_shipped_sd3_loads_offline_and_generates():
    pipe = TinyStableDiffusion3.from_pretrained()
    assert pipe.manifest["model"] == "TinyStableDiffusion3"
    assert sum(f.stat().st_size for f in SHIPPED_SD3.iterdir()) <= 15 * 2**20
    images = pipe([PROMPT, "a blue shape"], seed=0)
    assert images.shape == (2, 3, 32, 32)
    assert images.min() >= 0 and images.max() <= 1
    torch.testing.assert_close(pipe(PROMPT, seed=0), images[:1], rtol=0, atol=1e-6)  # image i is seed + i's


def test_shipped_sd3_is_hash_checked(tmp_path):
    folder = tmp_path / "sd3"
    shutil.copytree(SHIPPED_SD3, folder)
    data = bytearray((folder / "mmdit.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "mmdit.safetensors").write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="does not match the manifest"):
        TinyStableDiffusion3.from_pretrained(folder)


def test_a_folder_of_the_other_model_is_refused_by_field(tmp_path):
    with pytest.raises(WeightsError, match="field 'model'.*TinyStableDiffusion.from_pretrained"):
        TinyStableDiffusion3.from_pretrained(SHIPPED)
    with pytest.raises(WeightsError, match="field 'components"):
        TinyStableDiffusion.from_pretrained(SHIPPED_SD3)
    with pytest.raises(WeightsError, match="no manifest.json"):
        TinyStableDiffusion3.from_pretrained(tmp_path)


def test_another_base_vae_is_refused_by_field(tmp_path):
    folder = tmp_path / "sd3"
    shutil.copytree(SHIPPED_SD3, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["base"]["vae"]["sha256"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match=r"field 'base\.vae\.sha256'"):
        TinyStableDiffusion3.from_pretrained(folder)


# ---- the pipeline, with a random MM-DiT ------------------------------------------------------


def test_pipeline_shapes_seeds_and_trajectory(pipe):
    images = pipe([PROMPT, "a shape"], num_inference_steps=3, seed=5)
    assert images.shape == (2, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
    # Image i of a batch is the image of seed + i alone; the same call gives the same images.
    torch.testing.assert_close(pipe("a shape", num_inference_steps=3, seed=6), images[1:], rtol=0, atol=1e-6)
    assert torch.equal(pipe([PROMPT, "a shape"], num_inference_steps=3, seed=5), images)
    trajectory = pipe(PROMPT, num_inference_steps=3, num_images_per_prompt=2, return_trajectory=True)
    assert trajectory.latents.shape == (4, 2, 4, 8, 8) and trajectory.x0_preds.shape == (3, 2, 4, 8, 8)
    assert trajectory.timesteps[0] == 1000.0 and len(trajectory.timesteps) == 3


def test_pipeline_given_latents_and_guidance(pipe):
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    a = pipe(PROMPT, num_inference_steps=2, latents=z)
    assert torch.equal(a, pipe(PROMPT, num_inference_steps=2, latents=z[0]))
    assert not torch.equal(a, pipe(PROMPT, num_inference_steps=2, latents=z, guidance_scale=1.0))


def test_packed_conditioning_carries_tokens_and_pooled(pipe):
    packed, packed_uncond = pipe.encode_prompt([PROMPT, "a shape"])
    ids = pipe.tokenizer([PROMPT, "a shape"])
    D = pipe.text_encoder.config.width
    torch.testing.assert_close(packed[..., :D], pipe.text_encoder(ids))
    torch.testing.assert_close(packed[:, 3, D:], pipe.text_encoder.pooled(ids))
    torch.testing.assert_close(packed_uncond[1, :, :D], pipe.text_encoder(pipe.tokenizer([""]))[0])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"num_inference_steps": 0}, ValueError, "num_inference_steps"),
        ({"num_inference_steps": 1001}, ValueError, "num_inference_steps"),
        ({"num_inference_steps": 2.5}, TypeError, "num_inference_steps"),
        ({"guidance_scale": -1.0}, ValueError, "guidance_scale"),
        ({"guidance_scale": float("nan")}, ValueError, "guidance_scale"),
        ({"seed": -1}, ValueError, "seed"),
        ({"num_images_per_prompt": 0}, ValueError, "num_images_per_prompt"),
        ({"latents": torch.zeros(1, 4, 4, 4)}, ValueError, "latents must have shape"),
        ({"latents": torch.full((1, 4, 8, 8), float("nan"))}, ValueError, "latents"),
        ({"latents": torch.zeros(2, 4, 8, 8)}, ValueError, "one latent per image"),
    ],
)
def test_bad_settings(pipe, kwargs, error, match):
    with pytest.raises(error, match=match):
        pipe(PROMPT, **{"num_inference_steps": 2, **kwargs})


def test_bad_prompts(pipe):
    with pytest.raises(ValueError, match="purple"):
        pipe("a purple circle", num_inference_steps=1)
    with pytest.raises(TypeError, match="prompt"):
        pipe(["a red shape", 3], num_inference_steps=1)
    with pytest.raises(TypeError, match="prompt"):
        pipe([], num_inference_steps=1)


def test_default_steps_are_the_call_default(pipe):
    trajectory = pipe("a shape", return_trajectory=True)
    assert len(trajectory.timesteps) == DEFAULT_STEPS


# ---- the recipe --------------------------------------------------------------------------------


def test_recipe_smoke_run_is_reproducible_and_loads(tmp_path):
    recipe = SD3Recipe(
        mmdit=MMDiTConfig(width=32, depth=2, num_heads=2),
        train=TrainConfig(steps=2, warmup_steps=1, checkpoint_every=1),
        batch_size=4,
        latent_bank=8,
        eval_prompts=4,
    )
    first = train_sd3(tmp_path / "a", recipe, progress=False, evaluate=True)
    second = train_sd3(tmp_path / "b", recipe, progress=False, evaluate=False)
    # The evaluation at every checkpoint changes nothing in the weights.
    assert sha256_file(first / "mmdit.safetensors") == sha256_file(second / "mmdit.safetensors")
    manifest = read_manifest(first)
    assert manifest["model"] == "TinyStableDiffusion3" and manifest["recipe"]["batch_size"] == 4
    training = manifest["components"]["mmdit"]["training"]
    log = training["adherence_log"]
    assert [row["step"] for row in log] == [1, 2] and log[0]["full_prompts"]["n"] == 4
    assert 0 < log[0]["seconds"] < log[1]["seconds"] <= training["train_seconds"]
    assert training["time_to_target"] is None  # two steps of a random model reach nothing
    pipe = TinyStableDiffusion3.from_pretrained(first)
    assert pipe("a red shape", num_inference_steps=1).shape == (1, 3, 32, 32)


def test_time_to_target_is_the_first_checkpoint_meeting_every_floor():
    from sdedu.training.evaluation import ADHERENCE_TARGET, time_to_target

    def row(step, **scores):
        return {"step": step, "seconds": 10.0 * step, "cpu_seconds": 5.0 * step, "full_prompts": {**scores}}

    good = dict(ADHERENCE_TARGET)
    log = [row(1, **{**good, "color": 0.97}), row(2, **good), row(3, **{**good, "size": 0.5}), row(4, **good)]
    assert time_to_target(log) == {"step": 2, "seconds": 20.0, "cpu_seconds": 10.0}
    assert time_to_target(log[:1]) is None
    assert time_to_target(log[:1], {"shape": 0.9}) == {"step": 1, "seconds": 10.0, "cpu_seconds": 5.0}


def test_recipe_bad_settings():
    with pytest.raises(ValueError, match="recipe.time_sampling"):
        SD3Recipe(time_sampling="beta")
    with pytest.raises(ValueError, match="recipe.p_uncond"):
        SD3Recipe(p_uncond=1.5)


# ---- the benchmark's side-by-side section ------------------------------------------------------


def test_straightness_closed_form():
    from sdedu.bench.sd3 import straightness

    line = torch.linspace(0, 1, 5)[:, None, None] * torch.tensor([[3.0, 4.0]])  # (5, 1, 2): a straight path
    assert straightness(line) == pytest.approx(0.0, abs=1e-6)
    corner = torch.tensor([[[0.0, 0.0]], [[1.0, 0.0]], [[1.0, 1.0]]])  # two sides of a unit square
    assert straightness(corner) == pytest.approx(2 / 2**0.5 - 1)


def test_bench_section_measures_both_models(tiny_random_pipe):
    from sdedu.bench import Context
    from sdedu.bench.sd3 import sd3_section

    rows = sd3_section(Context(pipe=tiny_random_pipe, quick=True, device=torch.device("cpu")))
    metrics = {row.metric: row for row in rows}
    for name in ("unet", "mmdit"):
        assert metrics[f"{name}: parameters"].value > 0
        assert metrics[f"{name}: path length / chord - 1 (0 = straight), 25 steps"].value >= 0
    unet_to_target = metrics["unet: training CPU-seconds to the adherence target (recipe's log)"]
    assert unet_to_target.extra["note"].startswith("not measured")  # the random UNet has no manifest
    assert any("matmul peak" in m for m in metrics)
    assert not any("at NFE" in m for m in metrics)  # a random UNet: adherence is not measured


def test_unet_recipe_run_record_is_consistent_and_read_for_the_shipped_unet():
    from sdedu.bench.sd3 import UNET_RECIPE_RUN, _time_to_target_row
    from sdedu.training.evaluation import time_to_target

    record = json.loads(UNET_RECIPE_RUN.read_text())
    shipped = read_manifest(SHIPPED)
    assert record["shipped_sha256"] == shipped["components"]["unet"]["sha256"] != record["weights_sha256"]
    # The recorded time to target is the first checkpoint of the recorded log that meets the target.
    assert time_to_target(record["training"]["adherence_log"]) == record["training"]["time_to_target"]
    pipe = types.SimpleNamespace(manifest=shipped)
    row = _time_to_target_row("unet", pipe, shipped["components"]["unet"].get("training", {}))
    assert row.value == record["training"]["time_to_target"]["cpu_seconds"]
    assert row.extra["step"] == record["training"]["time_to_target"]["step"]
    assert "a rerun of the UNet recipe" in row.extra["note"]
    other = types.SimpleNamespace(manifest={})  # another UNet: the record is not its log
    assert _time_to_target_row("unet", other, {}).extra["note"].startswith("not measured")
