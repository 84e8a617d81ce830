"""Built-in banks: each kernel gives its documented sign on a synthetic edge."""

from __future__ import annotations

import numpy as np
import pytest

from convpipe.core import correlate_block
from convpipe.kernels import BUILTIN_BANKS, KernelBank


def left_to_right_edge() -> np.ndarray:
    """Dark on the left, bright on the right (one channel, 12x12)."""
    image = np.zeros((1, 12, 12), dtype=np.uint8)
    image[:, :, 6:] = 200
    return image


def top_to_bottom_edge() -> np.ndarray:
    return np.ascontiguousarray(left_to_right_edge().transpose(0, 2, 1))


def responses(bank: str, image: np.ndarray) -> dict[str, np.ndarray]:
    out = correlate_block(image, BUILTIN_BANKS[bank].weights, dtype=np.float64)
    return dict(zip(BUILTIN_BANKS[bank].names, out))


@pytest.mark.parametrize("bank", ["sobel", "scharr", "prewitt"])
def test_gradient_pairs_are_positive_on_dark_to_bright_edges(bank):
    horizontal = responses(bank, left_to_right_edge())
    assert horizontal[f"{bank}-x"].max() > 0 and horizontal[f"{bank}-x"].min() == 0
    assert np.all(horizontal[f"{bank}-y"] == 0)
    vertical = responses(bank, top_to_bottom_edge())
    assert vertical[f"{bank}-y"].max() > 0 and vertical[f"{bank}-y"].min() == 0
    assert np.all(vertical[f"{bank}-x"] == 0)
    # the response sits on the edge columns only
    columns = np.nonzero(horizontal[f"{bank}-x"].any(axis=0))[0]
    assert set(columns) <= {4, 5}


def test_roberts_diagonals():
    image = np.zeros((1, 2, 2), dtype=np.uint8)
    image[0, 1, 1] = 10  # bottom-right brighter than top-left
    r = responses("roberts", image)
    assert r["roberts-d1"][0, 0] == 10 and r["roberts-d2"][0, 0] == 0
    image = np.zeros((1, 2, 2), dtype=np.uint8)
    image[0, 1, 0] = 10  # bottom-left brighter than top-right
    r = responses("roberts", image)
    assert r["roberts-d2"][0, 0] == 10 and r["roberts-d1"][0, 0] == 0


def test_laplacian_sign_around_an_edge():
    r = responses("laplacian", left_to_right_edge())["laplacian"]
    assert r[:, 4].min() > 0, "dark side positive"
    assert r[:, 5].max() < 0, "bright side negative"
    assert np.all(r[:, :4] == 0) and np.all(r[:, 6:] == 0), "flat areas zero"


@pytest.mark.parametrize("name", sorted(BUILTIN_BANKS))
def test_builtin_banks_are_unnormalised_integer_and_zero_sum(name):
    weights = BUILTIN_BANKS[name].weights
    assert weights.shape[1] == 1
    np.testing.assert_array_equal(weights, np.round(weights))
    np.testing.assert_array_equal(weights.sum(axis=(1, 2, 3)), 0)


def test_one_channel_bank_is_repeated_over_input_channels():
    bank = BUILTIN_BANKS["sobel"]
    assert bank.for_channels(3).shape == (2, 3, 3, 3)
    with pytest.raises(ValueError):
        KernelBank(("a",), np.ones((1, 2, 3, 3))).for_channels(3)
