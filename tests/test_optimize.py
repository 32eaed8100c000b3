"""sdedu.optimize on a small random pipeline: each variant works, changes what it says, and only that.

Timings are the benchmark's business (python -m sdedu.bench); here every assertion is about values.
"""

import warnings

import pytest
import torch
from torch import nn

from sdedu import optimize
from sdedu.grading.checks_compression import quantize_reference
from sdedu.models.text_encoder import TextEncoder, TextEncoderConfig, Tokenizer  # noqa: E402
from sdedu.models.unet import UNet, UNetConfig  # noqa: E402
from sdedu.models.vae import VAE, VAEConfig  # noqa: E402
from sdedu.pipeline import TinyStableDiffusion
from sdedu.schedules import NoiseSchedule

PROMPTS = ["a red circle", "a large blue square in the top left"]


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    unet = UNet(UNetConfig(channels=(32, 64), context_dim=32, head_dim=16, norm_groups=8))
    with torch.no_grad():  # zero-initialised layers would hide differences: give them weights
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    text_encoder = TextEncoder(TextEncoderConfig(width=32, layers=1, num_heads=2, embed_dim=32))
    vae = VAE(VAEConfig(channels=(8, 16, 16)))
    return TinyStableDiffusion(Tokenizer(), text_encoder, vae, unet, NoiseSchedule.scaled_linear())


@pytest.fixture(scope="module")
def reference(pipe):
    return pipe(PROMPTS, num_inference_steps=4)


def generate(pipe):
    return pipe(PROMPTS, num_inference_steps=4)


# ---- autocast -----------------------------------------------------------------------------------


def test_autocast_bf16_close_to_fp32_and_leaves_input_alone(pipe, reference):
    fast = optimize.autocast(pipe)
    assert fast.unet.dtype == torch.bfloat16  # the CPU default
    assert isinstance(fast.unet, optimize.AutocastModule) and not isinstance(pipe.unet, optimize.ModuleWrapper)
    assert fast.unet.config is optimize.unwrap(fast.unet).config  # attributes reach the wrapped UNet
    images = generate(fast)
    assert images.dtype == torch.float32
    difference = (images - reference).abs().max().item()
    assert 0 < difference < 0.1  # rounding changed something, not everything
    torch.testing.assert_close(generate(pipe), reference)


def test_autocast_rejects_other_dtypes(pipe):
    with pytest.raises(ValueError, match="dtype must be torch.bfloat16 or torch.float16"):
        optimize.autocast(pipe, dtype=torch.float64)


def test_autocast_unet_eps_close_in_fp16_too(pipe):
    fast = optimize.autocast(pipe, dtype=torch.float16)
    z, t, cond = torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), torch.randn(2, 12, 32)
    with torch.no_grad():
        torch.testing.assert_close(fast.unet(z, t, cond), pipe.unet(z, t, cond), atol=0.05, rtol=0.05)


# ---- int8 ------------------------------------------------------------------------------------------


def test_quantize_weight_matches_the_graded_reference_and_its_error_bound():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 10, generator=g) * torch.logspace(-3, 0, 6).reshape(6, 1)
    weight[2] = 0.0  # a pruned neuron: no 0/0
    q, scale = optimize.quantize_weight(weight)
    ref_q, ref_scale = quantize_reference(weight)
    assert q.dtype == torch.int8 and torch.equal(q, ref_q)
    torch.testing.assert_close(scale, ref_scale)
    assert torch.all((q.float() * scale - weight).abs() <= scale / 2 + 1e-12)
    conv = torch.randn(8, 3, 3, 3, generator=g)
    q, scale = optimize.quantize_weight(conv)
    assert q.shape == conv.shape and scale.shape == (8, 1, 1, 1)
    assert int(q.abs().amax(dim=(1, 2, 3)).min()) == 127  # each output channel uses the full range


def test_quantize_int8_replaces_every_layer_shrinks_and_stays_close(pipe, reference):
    small = optimize.quantize_int8(pipe)
    layers = list(small.unet.modules())
    assert not any(type(m) in (nn.Linear, nn.Conv2d) for m in layers)
    assert any(isinstance(m, optimize.Int8Conv2d) for m in layers)
    assert any(isinstance(m, optimize.Int8Linear) for m in layers)
    ratio = optimize.model_size_bytes(small.unet) / optimize.model_size_bytes(pipe.unet)
    assert 0.25 <= ratio < 0.32  # int8 weights; biases, norms and scales stay float32
    assert (generate(small) - reference).abs().max().item() < 0.05
    assert any(type(m) is nn.Linear for m in pipe.unet.modules())  # the input pipeline is untouched


def test_int8_linear_and_conv_equal_float_layers_with_dequantised_weights():
    torch.manual_seed(1)
    linear, conv = nn.Linear(16, 8), nn.Conv2d(4, 6, 3, stride=2, padding=1)
    x, image = torch.randn(5, 16), torch.randn(2, 4, 8, 8)
    q_linear, q_conv = optimize.Int8Linear(linear), optimize.Int8Conv2d(conv)
    with torch.no_grad():
        linear.weight.copy_(q_linear.dequantized_weight())
        conv.weight.copy_(q_conv.dequantized_weight())
        torch.testing.assert_close(q_linear(x), linear(x))
        torch.testing.assert_close(q_conv(image), conv(image))


def test_quantize_int8_rejects_unknown_components(pipe):
    with pytest.raises(ValueError, match="components must be a non-empty subset"):
        optimize.quantize_int8(pipe, components=("unet", "tokenizer"))


# ---- pruning ----------------------------------------------------------------------------------------


def test_prune_zeroes_the_smallest_weights_of_each_layer_permanently(pipe):
    pruned = optimize.prune(pipe, amount=0.4)
    for (name, before), (_, after) in zip(pipe.unet.named_modules(), pruned.unet.named_modules()):
        if isinstance(before, (nn.Linear, nn.Conv2d)):
            zero = after.weight == 0
            assert abs(zero.float().mean().item() - 0.4) < 0.01, name
            assert torch.equal(after.weight[~zero], before.weight[~zero]), name  # the rest unchanged
            assert before.weight[zero].abs().max() <= before.weight[~zero].abs().min(), name
            assert not hasattr(after, "weight_orig") and not after._forward_pre_hooks, name  # made permanent
    assert abs(optimize.sparsity(pruned.unet) - 0.4) < 0.01
    assert optimize.sparsity(pipe.unet) < 0.01


def test_prune_global_scope_and_amount_zero(pipe, reference):
    assert abs(optimize.sparsity(optimize.prune(pipe, 0.5, scope="global").unet) - 0.5) < 0.01
    torch.testing.assert_close(generate(optimize.prune(pipe, amount=0.0)), reference)
    with pytest.raises(ValueError, match="amount must be in"):
        optimize.prune(pipe, amount=1.5)
    with pytest.raises(ValueError, match="scope must be"):
        optimize.prune(pipe, scope="row")


def test_prune_then_quantize_composes_but_not_the_other_way(pipe):
    both = optimize.quantize_int8(optimize.prune(pipe, 0.3))
    assert optimize.sparsity(both.unet) > 0.29
    with pytest.raises(ValueError, match="prune first"):
        optimize.prune(optimize.quantize_int8(pipe), 0.3)


# ---- torch.compile ------------------------------------------------------------------------------------


def _failing_backend(graph_module, example_inputs):
    raise RuntimeError("this backend cannot compile anything")


def test_compile_failure_falls_back_to_eager_with_one_warning(pipe, reference):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fallen = optimize.compile(pipe, backend=_failing_backend)
        images = generate(fallen)
        generate(fallen)
    messages = [str(w.message) for w in caught if "torch.compile failed" in str(w.message)]
    assert len(messages) == 1 and "cannot compile anything" in messages[0]
    assert not fallen.unet.is_compiled
    torch.testing.assert_close(images, reference)


def test_compiled_module_does_not_hide_bad_input():
    torch.manual_seed(0)
    module = optimize.CompiledModule(nn.Linear(4, 2), backend=_failing_backend)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        module(torch.randn(3, 5))  # wrong in eager mode too: the input's error, not a fall-back
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        out = module(torch.randn(3, 4))
    assert out.shape == (3, 2) and not module.is_compiled


def test_compile_with_a_working_backend_gives_the_same_outputs():
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(4, 8), nn.SiLU(), nn.Linear(8, 2))
    module = optimize.CompiledModule(layer, backend="eager")
    x = torch.randn(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        torch.testing.assert_close(module(x), layer(x))
    assert module.is_compiled


@pytest.mark.skipif(
    optimize.compiling._missing_compiler("inductor", "cpu") is not None, reason="no C++ compiler for inductor"
)
def test_inductor_compile_gives_the_same_images(pipe, reference):
    # optimize.compile's own settings on a CPU (frozen weights, C++ wrapper, no pattern rewrites).
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fall-back to eager would warn
        compiled = optimize.compile(pipe, batch_size=2 * len(PROMPTS))
        images = generate(compiled)
    assert compiled.unet.is_compiled
    torch.testing.assert_close(images, reference, atol=1e-4, rtol=0)


def test_compile_must_come_last(pipe):
    fallen = optimize.compile(pipe, backend=_failing_backend, warmup=False)
    with pytest.raises(ValueError, match="apply sdedu.optimize.compile last"):
        optimize.quantize_int8(fallen)


# ---- cached text embeddings ----------------------------------------------------------------------------


def test_cache_gives_identical_images_and_counts_hits(pipe, reference):
    cached = optimize.cache_text_embeddings(pipe)
    torch.testing.assert_close(generate(cached), reference, rtol=0, atol=0)
    assert cached.text_encoder.misses == 3 and cached.text_encoder.hits == 0  # two prompts and ""
    generate(cached)
    assert cached.text_encoder.misses == 3 and cached.text_encoder.hits == 3


def test_cache_preloads_and_evicts_least_recently_used(pipe):
    cached = optimize.cache_text_embeddings(pipe, prompts=["a red circle", "a square"], max_entries=2)
    assert len(cached.text_encoder.cache) == 2  # 3 distinct sequences ("" too), the oldest evicted
    ids = pipe.tokenizer(["a square"])
    cached.text_encoder.hits = 0
    with torch.no_grad():
        torch.testing.assert_close(cached.text_encoder(ids), pipe.text_encoder(ids), rtol=0, atol=0)
    assert cached.text_encoder.hits == 1


def test_optimisations_compose(pipe, reference):
    combined = optimize.cache_text_embeddings(optimize.autocast(optimize.quantize_int8(pipe)))
    assert (generate(combined) - reference).abs().max().item() < 0.1


def test_bad_pipe_is_a_type_error():
    with pytest.raises(TypeError, match="pipe must be a TinyStableDiffusion"):
        optimize.quantize_int8(torch.nn.Linear(2, 2))
