"""The GPU paths: the models, the pipeline, every optimisation and training run on CUDA.

CI and the course's laptops have no GPU, so here every test is skipped with the reason printed;
on a machine with CUDA, `pytest tests/test_cuda.py` checks that what the CPU suite shows also
holds on the GPU (same prompts followed, same outputs within TF32/fp16 tolerance).
"""

import subprocess
import sys

import pytest
import torch
from test_shipped_weights import FLOORS  # the same floors as on the CPU

from sdedu import metrics, optimize
from sdedu.data import shapes
from sdedu.pipeline import TinyStableDiffusion

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here; run on a GPU machine")


@pytest.fixture(scope="module")
def cpu_pipe():
    return TinyStableDiffusion.from_pretrained()


@pytest.fixture(scope="module")
def gpu_pipe():
    return TinyStableDiffusion.from_pretrained(device="cuda")


@pytest.fixture(scope="module")
def prompts_and_attributes():
    attributes = shapes.sample_attributes(48, torch.Generator().manual_seed(123), exclude_held_out=True)
    return [shapes.caption(a) for a in attributes], attributes


def assert_follows(images, attributes):
    assert images.shape == (len(attributes), 3, 32, 32) and images.isfinite().all()
    assert 0 <= images.min() and images.max() <= 1
    scores = metrics.adherence(images.float().cpu(), attributes)
    for name, floor in FLOORS.items():
        assert scores[name] >= floor, f"{name} adherence {scores[name]:.2f} < {floor} (all scores: {scores})"


def test_components_give_the_cpu_outputs(cpu_pipe, gpu_pipe):
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(4, 4, 8, 8, generator=generator)
    t = torch.tensor([0, 250, 500, 999])
    cond, _ = cpu_pipe.encode_prompt(["a red circle", "a shape", "a large blue square in the center", ""])
    cond_gpu, _ = gpu_pipe.encode_prompt(["a red circle", "a shape", "a large blue square in the center", ""])
    torch.testing.assert_close(cond_gpu.cpu(), cond, atol=2e-3, rtol=2e-3)
    eps_cpu = cpu_pipe.unet(z, t, cond)
    eps_gpu = gpu_pipe.unet(z.cuda(), t.cuda(), cond.cuda())
    torch.testing.assert_close(eps_gpu.cpu(), eps_cpu, atol=5e-3, rtol=5e-3)  # cuDNN convs may use TF32
    images, _, _ = shapes.sample(4, seed=0)
    torch.testing.assert_close(
        gpu_pipe.decode_latents(gpu_pipe.encode_images(images.cuda())).cpu(),
        cpu_pipe.decode_latents(cpu_pipe.encode_images(images)),
        atol=5e-3,
        rtol=5e-3,
    )


def test_pipeline_follows_prompts_on_cuda(gpu_pipe, prompts_and_attributes):
    prompts, attributes = prompts_and_attributes
    images = gpu_pipe(prompts, num_inference_steps=10, seed=0)
    assert images.device.type == "cuda"
    assert_follows(images, attributes)
    assert torch.equal(images, gpu_pipe(prompts, num_inference_steps=10, seed=0)), "same seed, same images"


def test_an_image_does_not_depend_on_the_device(cpu_pipe, gpu_pipe):
    """Image i draws all its noise from a CPU stream (seed + i): the CPU's images, up to float rounding (TF32)."""
    prompts = ["a large red circle in the top left", "a small blue square in the center"]
    for sampler in ("ddim", "ddpm"):
        cpu = cpu_pipe(prompts, num_inference_steps=10, sampler=sampler, seed=3)
        gpu = gpu_pipe(prompts, num_inference_steps=10, sampler=sampler, seed=3).cpu()
        assert (gpu - cpu).abs().mean() < 5e-3, sampler


def test_ddpm_and_trajectory_on_cuda(gpu_pipe):
    out = gpu_pipe(
        ["a large green square in the center"] * 2,
        num_inference_steps=50,
        sampler="ddpm",
        seed=0,
        return_trajectory=True,
    )
    assert out.images.device.type == "cuda" and out.images.isfinite().all()
    assert out.latents.shape == (51, 2, 4, 8, 8) and out.x0_preds.shape == (50, 2, 4, 8, 8)


def test_editing_on_cuda(gpu_pipe):
    images, _, _ = shapes.sample(2, seed=3)
    images = images.cuda()
    edited = gpu_pipe.img2img(images, "a large green square in the center", strength=0.6, num_inference_steps=10)
    mask = torch.zeros(1, 1, 32, 32, device="cuda")
    mask[..., 8:24, 8:24] = 1
    painted = gpu_pipe.inpaint(images, mask, "a small yellow circle in the center", num_inference_steps=10)
    assert edited.shape == painted.shape == (2, 3, 32, 32)
    assert torch.equal(painted * (1 - mask), images * (1 - mask))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_keeps_adherence_on_cuda(gpu_pipe, prompts_and_attributes, dtype):
    prompts, attributes = prompts_and_attributes
    fast = optimize.autocast(gpu_pipe, dtype=dtype)
    assert_follows(fast(prompts, num_inference_steps=10, seed=0), attributes)


def test_int8_and_pruning_keep_adherence_on_cuda(gpu_pipe, prompts_and_attributes):
    prompts, attributes = prompts_and_attributes
    assert_follows(optimize.quantize_int8(gpu_pipe)(prompts, num_inference_steps=10, seed=0), attributes)
    assert_follows(optimize.prune(gpu_pipe, amount=0.2)(prompts, num_inference_steps=10, seed=0), attributes)


def test_compile_on_cuda(gpu_pipe, prompts_and_attributes):
    prompts, attributes = prompts_and_attributes
    compiled = optimize.compile(gpu_pipe, batch_size=2 * len(prompts))
    assert compiled.unet.is_compiled, "torch.compile fell back to eager on CUDA"
    images = compiled(prompts, num_inference_steps=10, seed=0)
    assert_follows(images, attributes)
    torch.testing.assert_close(images, gpu_pipe(prompts, num_inference_steps=10, seed=0), atol=2e-2, rtol=0)


def test_cached_text_embeddings_on_cuda(gpu_pipe, prompts_and_attributes):
    prompts, _ = prompts_and_attributes
    cached = optimize.cache_text_embeddings(gpu_pipe, prompts)
    # Embeddings computed in a batch of 48 vs 4: GPU kernels may round differently by batch size.
    torch.testing.assert_close(
        cached(prompts[:4], num_inference_steps=5, seed=0),
        gpu_pipe(prompts[:4], num_inference_steps=5, seed=0),
        atol=5e-3,
        rtol=0,
    )


def test_training_recipe_runs_on_cuda(tmp_path):
    """Every part of `python -m sdedu.train all` on the GPU, a few steps each, ending in loadable weights."""
    command = [
        sys.executable,
        "-m",
        "sdedu.train",
        "all",
        "--steps",
        "5",
        "--device",
        "cuda",
        "--no-progress",
        "--no-eval",
        "--out",
        str(tmp_path / "run"),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    weights = next(p.parent for p in (tmp_path / "run").rglob("manifest.json"))
    pipe = TinyStableDiffusion.from_pretrained(weights, device="cuda")
    assert pipe(["a red circle"], num_inference_steps=2).isfinite().all()
