"""The NumPy core against independent references (direct loop, SciPy)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from reference import correlate_loop, correlate_scipy, magnitude

from convpipe.core import correlate_block, correlate_block_numpy, output_shape

INPUT_DTYPES = ["uint8", "uint16", "int16", "int32", "float32", "float64"]


@st.composite
def core_cases(draw, integer_weights=True):
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sy, sx = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    channels = draw(st.integers(1, 3))
    n_kernels = draw(st.integers(1, 3))
    batch = draw(st.sampled_from([(), (2,), (2, 1)]))
    h, w = draw(st.integers(kh, kh + 12)), draw(st.integers(kw, kw + 12))
    dtype = draw(st.sampled_from(INPUT_DTYPES))
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    lo, hi = (max(info.min, -1000), min(info.max, 1000)) if info else (-1000, 1000)
    x = draw(hnp.arrays(dtype, batch + (channels, h, w), elements=st.integers(lo, hi)))
    w_elements = st.integers(-3, 3) if integer_weights else st.floats(-2, 2, width=32)
    weights = draw(hnp.arrays(np.float64, (n_kernels, channels, kh, kw), elements=w_elements))
    return x, weights, (sy, sx)


@given(core_cases())
@settings(max_examples=150, deadline=None)
def test_numpy_core_is_exact_for_integer_data(case):
    x, weights, stride = case
    expected = correlate_loop(x, weights, stride)
    got = correlate_block_numpy(x, weights, stride, dtype=np.float64)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got, correlate_scipy(x, weights, stride))


@given(core_cases(integer_weights=False))
@settings(max_examples=60, deadline=None)
def test_numpy_core_float32_is_close_to_the_reference(case):
    x, weights, stride = case
    expected = correlate_scipy(x.astype(np.float32), weights.astype(np.float32), stride)
    got = correlate_block_numpy(x, weights, stride, dtype=np.float32)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-2)


@given(core_cases())
@settings(max_examples=60, deadline=None)
def test_magnitude_is_the_root_of_the_sum_of_squares(case):
    x, weights, stride = case
    got = correlate_block_numpy(x, weights, stride, combine="magnitude", dtype=np.float64)
    np.testing.assert_allclose(got, magnitude(correlate_loop(x, weights, stride)), rtol=1e-12)


def test_four_by_four_with_three_by_three_gives_two_by_two():
    x = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
    got = correlate_block(x, np.ones((1, 1, 3, 3)))
    assert got.shape == (1, 2, 2)
    np.testing.assert_array_equal(got[0], [[45, 54], [81, 90]])


def test_uint8_gradients_do_not_wrap():
    x = np.zeros((1, 3, 3), dtype=np.uint8)
    x[..., 2] = 255
    w = np.array([[[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]]], dtype=np.float64)
    assert correlate_block(x, w)[0, 0, 0] == 4 * 255
    assert correlate_block(255 - x, w)[0, 0, 0] == -4 * 255


@pytest.mark.parametrize("dtype", INPUT_DTYPES)
def test_dispatching_core_matches_numpy_core_bit_for_bit(dtype):
    rng = np.random.default_rng(1)
    x = (rng.random((2, 2, 19, 23)) * 200).astype(dtype)
    w = rng.normal(size=(3, 2, 3, 4))
    for stride in [(1, 1), (2, 3)]:
        for combine in ["none", "magnitude"]:
            a = correlate_block(x, w, stride, combine, np.float32)
            b = correlate_block_numpy(x, w, stride, combine, np.float32)
            assert a.tobytes() == b.tobytes()


def test_output_shape():
    assert output_shape((10, 4, 4), (3, 3), (1, 1)) == (2, 2)
    assert output_shape((9, 9), (2, 2), (3, 3)) == (3, 3)


def test_block_smaller_than_kernel_is_refused():
    with pytest.raises(ValueError, match="smaller than the kernel"):
        correlate_block_numpy(np.zeros((1, 2, 2)), np.ones((1, 1, 3, 3)))
