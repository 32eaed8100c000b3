"""Tree-Ring watermark (sdedu.safety.watermark, issue 19): the key, the pipeline's watermark=, the test, exercise 15."""

import math

import pytest
import torch
from exercise_catalogue import assert_passes, assert_rejected, mutants, right_answers, wrong_answers

from sdedu.safety import WatermarkKey, detect_watermark, watermark_statistic
from sdedu.safety.watermark import fourier, noncentral_chi2_logcdf, ring_index


def test_the_key_is_rings_of_real_values_in_one_channel_and_keeps_the_rest_of_z():
    key = WatermarkKey(seed=5, channel=3)
    rings = ring_index(8)
    assert rings[4, 4] == 0 and rings[4, 7] == 3 and rings[0, 0] == 6  # the zero frequency sits at (4, 4)
    assert int(key.mask.sum()) == 29 and bool((rings[key.mask] <= 3).all())
    for j in range(4):  # one real value per ring
        values = key.pattern[rings == j]
        assert torch.equal(values, values[:1].expand_as(values)) and float(values.imag.abs().max()) == 0
    z = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    marked = key.apply(z)
    assert marked.dtype == z.dtype and torch.equal(marked[:, :3], z[:, :3])  # other channels untouched
    spectrum, before = fourier(marked[:, 3].double()), fourier(z[:, 3].double())
    assert torch.allclose(spectrum[:, key.mask], key.pattern[key.mask].to(spectrum).expand(3, -1), atol=1e-5)
    assert torch.allclose(spectrum[:, ~key.mask], before[:, ~key.mask], atol=1e-5)  # the rest of the spectrum kept
    assert torch.allclose(WatermarkKey(seed=5, channel=3, strength=3).pattern, 3 * key.pattern)
    assert torch.equal(WatermarkKey(seed=5).pattern, key.pattern) and not torch.equal(
        WatermarkKey(6).pattern, key.pattern
    )


def test_the_statistic_is_zero_on_the_key_and_follows_the_noncentral_chi2_without_it():
    key = WatermarkKey(seed=1)
    g = torch.Generator().manual_seed(2)
    eta, _ = watermark_statistic(key.apply(torch.randn(4, 4, 8, 8, generator=g)), key)
    assert float(eta.max()) < 1e-6
    # H0: white noise. With sigma^2 estimated from y itself (Tree-Ring's plug-in), the test is conservative:
    # p-values gather in the middle (measured on 4000 draws: 1.6% below 0.1, 1.1% above 0.9), never too small.
    eta, lam = watermark_statistic(torch.randn(4000, 4, 8, 8, generator=g), key)
    p = noncentral_chi2_logcdf(eta, int(key.mask.sum()), lam).exp()
    assert float((p < 0.01).double().mean()) <= 0.01 and float((p < 0.1).double().mean()) <= 0.1
    assert 0.45 < float(p.median()) < 0.55


def test_noncentral_chi2_cdf_against_closed_forms_and_sampling():
    x = torch.tensor([0.5, 2.0, 7.0])
    central = noncentral_chi2_logcdf(x, 2, torch.tensor(0.0)).exp()  # chi^2_2: 1 - exp(-x / 2)
    assert torch.allclose(central, 1 - torch.exp(-x.double() / 2), atol=1e-10)
    g = torch.Generator().manual_seed(0)
    df, nc = 5, 9.0
    samples = (torch.randn(200_000, df, generator=g, dtype=torch.float64) + torch.tensor([3.0] + [0.0] * 4)).pow(2)
    samples = samples.sum(1)  # noncentrality 3^2 = 9
    for value in (5.0, 14.0, 25.0):
        empirical = float((samples <= value).double().mean())
        assert math.isclose(
            float(noncentral_chi2_logcdf(torch.tensor(value), df, torch.tensor(nc)).exp()), empirical, abs_tol=4e-3
        )


def test_pipeline_watermark_is_off_by_default_and_keeps_each_images_seed(tiny_random_pipe):
    pipe = tiny_random_pipe
    key = WatermarkKey(seed=0, latent_shape=pipe.latent_shape)
    plain = pipe(["a red circle"] * 2, num_inference_steps=2, seed=3)
    assert torch.equal(plain, pipe(["a red circle"] * 2, num_inference_steps=2, seed=3, watermark=None))
    marked = pipe(["a red circle"] * 2, num_inference_steps=2, seed=3, watermark=key)
    alone = pipe("a red circle", num_inference_steps=2, seed=4, watermark=key)  # image 1 is the image of seed 4
    assert not torch.allclose(marked, plain) and torch.allclose(marked[1:], alone, atol=1e-6)
    trajectory = pipe("a red circle", num_inference_steps=2, seed=4, watermark=key, return_trajectory=True)
    eta, _ = watermark_statistic(trajectory.latents[0], key)  # z_T carries the key exactly
    assert float(eta.max()) < 1e-6
    scores, p_values = detect_watermark(pipe, marked, key, num_inference_steps=2)
    assert scores.shape == p_values.shape == (2,) and bool(((p_values >= 0) & (p_values <= 1)).all())


def test_bad_input_names_the_argument(tiny_random_pipe):
    pipe = tiny_random_pipe
    key = WatermarkKey(seed=0, latent_shape=pipe.latent_shape)
    other = WatermarkKey(seed=0, latent_shape=(4, 16, 16))
    image = torch.rand(1, 3, pipe.image_size, pipe.image_size)
    cases = [
        (lambda: WatermarkKey(seed=-1), "seed"),
        (lambda: WatermarkKey(latent_shape=(4, 8)), "latent_shape"),
        (lambda: WatermarkKey(latent_shape=(4, 8, 6)), "latent_shape"),
        (lambda: WatermarkKey(channel=4), "channel"),
        (lambda: WatermarkKey(radius=4), "radius"),
        (lambda: WatermarkKey(strength=0.0), "strength"),
        (lambda: detect_watermark(pipe, image, other), "key"),
        (lambda: detect_watermark(pipe, image, "key"), "key"),
        (lambda: detect_watermark(pipe, torch.rand(1, 3, 16, 16), key), "images"),
        (lambda: detect_watermark(pipe, image * 255, key), "images"),
        (lambda: watermark_statistic(torch.zeros(2, 4, 16, 16), key), "z_T"),
        (lambda: pipe("a red circle", num_inference_steps=1, watermark=other), "latent_shape"),
        (lambda: pipe("a red circle", num_inference_steps=1, watermark="key"), "watermark"),
    ]
    for call, name in cases:
        with pytest.raises((ValueError, TypeError), match=name):
            call()


def test_attacks_keep_shape_and_range_and_do_what_they_say(tiny_random_pipe):
    from sdedu.bench.safety_watermark import tpr_at_fpr
    from sdedu.safety.attacks import ATTACKS, gaussian_blur, jpeg, shift

    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    flat = torch.full((1, 3, 32, 32), 0.4)
    assert torch.allclose(gaussian_blur(flat), flat, atol=1e-6) and gaussian_blur(images).std() < images.std()
    assert torch.equal(shift(images)[..., 1:, 1:], images[..., :-1, :-1])
    assert (jpeg(images) - images).abs().mean() < 0.25 and (jpeg(flat) - flat).abs().max() < 0.01
    for name, attack in ATTACKS.items():
        out = attack(images, tiny_random_pipe, ["a red circle"] * 2)
        assert out.shape == images.shape and 0 <= float(out.min()) and float(out.max()) <= 1, name
    with pytest.raises(ValueError, match="images"):
        shift(images * 2)
    clean, marked = torch.arange(100.0), torch.tensor([98.5, 99.5, 50.0, 120.0])
    assert tpr_at_fpr(marked, clean) == 0.75  # 3 of 4 above the 99th percentile of the clean scores (98.01)


# ---- exercise 15: the graded item and its mistake catalogue -------------------------------------


def ex_statistic(z_T, key, *, dims=(-2, -1), shift="spatial", magnitude=False, norm="ortho", normalise=True):
    spectrum = torch.fft.fft2(z_T[:, key.channel], dim=dims, norm=norm)
    if shift == "spatial":
        spectrum = torch.fft.fftshift(spectrum, dim=(-2, -1))
    elif shift == "all":
        spectrum = torch.fft.fftshift(spectrum)
    y, k = spectrum[:, key.mask], key.pattern[key.mask]
    distance = (y.abs() - k.abs()) ** 2 if magnitude else (k - y).abs() ** 2
    sigma2 = (y.abs() ** 2).mean(1) if normalise else 1.0
    return distance.sum(1) / sigma2


EX15_RIGHT = [("watermark_statistic", ex_statistic)]
EX15_WRONG = {
    "watermark_statistic": {
        "FFT over batch and rows": (lambda z, k: ex_statistic(z, k, dims=(0, 1)), "spatial axes"),
        "no centring shift": (lambda z, k: ex_statistic(z, k, shift=None), "no centring shift"),
        "shift of every axis": (lambda z, k: ex_statistic(z, k, shift="all"), "the batch too"),
        "magnitudes compared": (lambda z, k: ex_statistic(z, k, magnitude=True), "magnitudes compared"),
        "unnormalised FFT": (lambda z, k: ex_statistic(z, k, norm="backward"), "norm='ortho'"),
        "no sigma^2": (lambda z, k: ex_statistic(z, k, normalise=False), "sigma^2"),
    }
}


@right_answers(EX15_RIGHT)
def test_exercise_15_right_answers_pass(item, answer, capsys):
    assert_passes(item, answer, capsys)


@wrong_answers(mutants(EX15_WRONG))
def test_exercise_15_wrong_answers_are_rejected_with_a_useful_hint(item, name, answer, keyword):
    assert_rejected(item, name, answer, keyword)
