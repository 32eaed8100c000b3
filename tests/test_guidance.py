"""Classifier-free guidance: the limits s = 0 and s = 1, linearity in s, bad input."""

import pytest
import torch

from sdedu.guidance import classifier_free_guidance


def predictions(generator, shape=(2, 4, 8, 8)):
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


def test_scale_1_is_the_conditional_prediction(generator):
    eps_uncond, eps_cond = predictions(generator)
    torch.testing.assert_close(classifier_free_guidance(eps_uncond, eps_cond, 1.0), eps_cond)


def test_scale_0_is_the_unconditional_prediction(generator):
    eps_uncond, eps_cond = predictions(generator)
    assert torch.equal(classifier_free_guidance(eps_uncond, eps_cond, 0), eps_uncond)


def test_guidance_extrapolates_past_the_conditional_prediction(generator):
    eps_uncond, eps_cond = predictions(generator)
    guided = classifier_free_guidance(eps_uncond, eps_cond, 7.5)
    torch.testing.assert_close(guided, eps_uncond + 7.5 * (eps_cond - eps_uncond))
    # Linear in s: the step from s = 1 to s = 7.5 is 6.5 times (eps_cond - eps_uncond).
    torch.testing.assert_close(guided - eps_cond, 6.5 * (eps_cond - eps_uncond), rtol=1e-5, atol=1e-5)
    assert guided.shape == eps_cond.shape and guided.dtype == eps_cond.dtype


def test_bad_inputs(generator):
    eps_uncond, eps_cond = predictions(generator)
    with pytest.raises(ValueError, match=r"guidance_scale must be in \[0.0, inf\]; got -1"):
        classifier_free_guidance(eps_uncond, eps_cond, -1.0)
    with pytest.raises(TypeError, match="guidance_scale must be a number.*got str"):
        classifier_free_guidance(eps_uncond, eps_cond, "7.5")
    with pytest.raises(
        ValueError, match=r"eps_cond must have the same shape as eps_uncond \(2, 4, 8, 8\); got \(1, 4, 8, 8\)"
    ):
        classifier_free_guidance(eps_uncond, eps_cond[:1], 7.5)
    with pytest.raises(TypeError, match="eps_uncond must be a torch.Tensor; got list"):
        classifier_free_guidance([0.0], eps_cond, 7.5)
    with pytest.raises(ValueError, match="eps_cond must be a floating-point tensor"):
        classifier_free_guidance(eps_uncond, eps_cond.long(), 7.5)
