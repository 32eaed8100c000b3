"""Checks for exercise 15 (Tree-Ring watermark): the detector's statistic, given inverted noise and a key.

The right answer is the library's (`sdedu.safety.watermark.watermark_statistic`, Wen et al. 2023,
section 3, the P-value): with Y = fftshift(fft2(z_T[:, c], norm="ortho")) over the two spatial axes, y = Y on
the key's region M and k = the key there,

    sigma^2 = mean_M |y|^2,        eta = sum_M |k - y|^2 / sigma^2        (B,)

The known wrong versions are the usual mistakes: the FFT over the wrong axes, no centring shift (M
is drawn around the centre of the *shifted* spectrum), the shift over every axis (the batch too),
magnitudes compared instead of complex numbers, the unnormalised FFT, no division by sigma^2.
"""

from __future__ import annotations

import torch

from sdedu.grading.expect import expect_tensor
from sdedu.grading.registry import register
from sdedu.grading.trial import Trial
from sdedu.safety.watermark import WatermarkKey, watermark_statistic

NOTEBOOK = "15_watermark"
AXES_HINT = (
    "the 2-D Fourier transform runs over the two spatial axes of one channel, (h, w): "
    "torch.fft.fft2(z_T[:, key.channel], norm='ortho') (its default dim=(-2, -1)), not over the batch or the channels."
)
SHIFT_HINT = (
    "no centring shift: the key's rings are drawn around the zero frequency at the centre, so shift it "
    "there first: torch.fft.fftshift(spectrum, dim=(-2, -1))."
)
SHIFT_ALL_HINT = (
    "fftshift without dim= shifts every axis, the batch too (image i gets image i + B/2's spectrum): "
    "torch.fft.fftshift(spectrum, dim=(-2, -1))."
)
MAGNITUDE_HINT = (
    "magnitudes compared instead of complex numbers: the key fixes the phase too, so the distance is "
    "|k - y|^2 on the complex values ((key_values - y).abs() ** 2), not (|k| - |y|)^2."
)
NORM_HINT = (
    "the FFT must be orthonormal, norm='ortho' (the key's values are N(0, 1), like the coefficients of white "
    "noise under that norm; the default norm makes them 8 times larger on an 8x8 latent)."
)
SIGMA_HINT = "divide by sigma^2 = mean over M of |y|^2 (Tree-Ring's estimate of the coefficients' variance)."
# (key seed, latent shape, channel, radius, watermarked?): the shipped latent shape and others.
CASES = [
    (0, (4, 8, 8), 3, 3, False),
    (1, (4, 8, 8), 3, 3, True),
    (2, (4, 8, 8), 0, 2, False),
    (3, (3, 12, 12), 1, 4, True),
    (4, (2, 6, 6), 1, 1, False),
]


def _distance(y, k, sigma2, *, magnitude=False):
    d = (y.abs() - k.abs()) ** 2 if magnitude else (k - y).abs() ** 2
    return d.sum(dim=1) / sigma2


def _statistic(spectrum: torch.Tensor, key: WatermarkKey, *, magnitude=False, normalise=True) -> torch.Tensor:
    """eta from a (B, h, w) complex spectrum assumed centred (a wrong version when it is not)."""
    y = spectrum[:, key.mask]
    k = key.pattern[key.mask].to(y)
    sigma2 = (y.abs() ** 2).mean(dim=1) if normalise else torch.ones(len(y), dtype=y.real.dtype)
    return _distance(y, k, sigma2, magnitude=magnitude)


def _mistakes(z: torch.Tensor, key: WatermarkKey):
    c, x = key.channel, z.double()
    ortho = lambda v, dim=(-2, -1): torch.fft.fft2(v, dim=dim, norm="ortho")  # noqa: E731
    shift = lambda v: torch.fft.fftshift(v, dim=(-2, -1))  # noqa: E731
    return [
        (lambda: _statistic(shift(ortho(x[:, c], dim=(0, 1))), key), AXES_HINT),
        (lambda: _statistic(shift(torch.fft.fftn(x, dim=(1, 2, 3), norm="ortho")[:, c]), key), AXES_HINT),
        (lambda: _statistic(ortho(x[:, c]), key), SHIFT_HINT),
        (lambda: _statistic(torch.fft.fftshift(ortho(x[:, c])), key), SHIFT_ALL_HINT),
        (lambda: _statistic(shift(ortho(x[:, c])), key, magnitude=True), MAGNITUDE_HINT),
        (lambda: _statistic(shift(torch.fft.fft2(x[:, c])), key), NORM_HINT),
        (lambda: _statistic(shift(ortho(x[:, c])), key, normalise=False), SIGMA_HINT),
    ]


@register(
    "watermark_statistic",
    "watermark_statistic(z_T, key): Tree-Ring's chi-squared statistic eta = sum_M |k - y|^2 / sigma^2 (B,)",
    NOTEBOOK,
)
def check_watermark_statistic(statistic_fn, trial: Trial) -> str:
    item = "watermark_statistic"
    count = 0
    g = trial.generator(151)
    for number, (seed, shape, channel, radius, marked) in enumerate(CASES, start=1):
        batch = 4 + number % 3
        case = f"{number} (z_T of shape {(batch, *shape)}, key channel {channel}, radius {radius}" + (
            ", the key written into z_T and noise added)" if marked else ")"
        )
        with trial.case(case):
            key = WatermarkKey(seed=seed, latent_shape=shape, channel=channel, radius=radius)
            z = torch.randn(batch, *shape, generator=g)
            if marked:
                z = key.apply(z) + 0.3 * torch.randn(batch, *shape, generator=g)
            got = trial.call(
                item, statistic_fn, [("z_T", z.clone()), ("key", key)], case=case, name="watermark_statistic"
            )
            expect_tensor(
                item,
                case,
                got,
                watermark_statistic(z, key)[0],
                name="eta",
                check_dtype=False,
                mistakes=_mistakes(z, key),
                default_hint=(
                    "y = fftshift(fft2(z_T[:, key.channel], norm='ortho'), dim=(-2, -1))[:, key.mask]; "
                    "k = key.pattern[key.mask]; eta = sum |k - y|^2 / mean |y|^2, per image."
                ),
            )
            count += 1
    return f"{count} cases"
