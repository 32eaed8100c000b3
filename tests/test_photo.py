"""The sample photo: offline, the promised shape and range, a real image rather than noise."""

import pytest
import torch

from sdedu.data.photo import load_photo, photo_path


def test_photo_file_ships_with_matplotlib():
    assert photo_path().endswith("grace_hopper.jpg")


@pytest.mark.parametrize("size", [16, 64])
def test_shape_range_and_dtype(size):
    image = load_photo(size)
    assert image.shape == (1, 3, size, size) and image.dtype == torch.float32
    assert image.min() >= 0.0 and image.max() <= 1.0


def test_it_is_a_photo_not_noise():
    image = load_photo(64)
    # A photo has spread-out values and strong correlation between neighbouring pixels.
    assert image.std() > 0.1
    left, right = image[..., :-1].flatten(), image[..., 1:].flatten()
    correlation = torch.corrcoef(torch.stack([left, right]))[0, 1]
    assert correlation > 0.8


def test_sizes_agree_after_downsampling():
    small = load_photo(16)
    pooled = torch.nn.functional.avg_pool2d(load_photo(64), 4)
    assert (small - pooled).abs().mean() < 0.05


def test_bad_size_names_the_argument():
    with pytest.raises(ValueError, match="size must be in"):
        load_photo(4)
