"""The block contract: the NumPy core against independent references, argument checks, the backend switch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from reference import correlate_loop, correlate_scipy, magnitude

import convpipe.core
from convpipe.core import BACKEND_ENV, correlate_block, correlate_block_numpy

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
def test_backends_give_the_same_bits(dtype):
    rng = np.random.default_rng(1)
    x = (rng.random((2, 2, 19, 23)) * 200).astype(dtype)
    w = rng.normal(size=(3, 2, 3, 4))
    for stride in [(1, 1), (2, 3)]:
        for combine in ["none", "magnitude"]:
            a = correlate_block(x, w, stride, combine, np.float32, backend="compiled")
            b = correlate_block(x, w, stride, combine, np.float32, backend="numpy")
            assert a.tobytes() == b.tobytes()


@pytest.fixture
def spy_numpy_core(monkeypatch):
    """Record whether correlate_block ran the NumPy core."""
    calls = []

    def spy(*args):
        calls.append(args)
        return correlate_block_numpy(*args)

    monkeypatch.setattr(convpipe.core, "correlate_block_numpy", spy)
    return calls


@pytest.mark.parametrize(
    "env, backend, numpy_used",
    [(None, None, False), ("numpy", None, True), ("compiled", None, False), ("numpy", "compiled", False), (None, "numpy", True)],
    ids=["default", "env-numpy", "env-compiled", "argument-wins", "argument-numpy"],
)
def test_backend_switch(monkeypatch, spy_numpy_core, env, backend, numpy_used):
    if env is None:
        monkeypatch.delenv(BACKEND_ENV, raising=False)
    else:
        monkeypatch.setenv(BACKEND_ENV, env)
    got = correlate_block(np.arange(16, dtype=np.uint8).reshape(1, 4, 4), np.ones((1, 1, 3, 3)), backend=backend)
    np.testing.assert_array_equal(got[0], [[45, 54], [81, 90]])
    assert bool(spy_numpy_core) == numpy_used


def test_unknown_backend_is_refused(monkeypatch):
    x, w = np.zeros((1, 4, 4)), np.ones((1, 1, 3, 3))
    monkeypatch.setenv(BACKEND_ENV, "simd")
    with pytest.raises(ValueError, match=BACKEND_ENV):
        correlate_block(x, w)
    monkeypatch.delenv(BACKEND_ENV)
    with pytest.raises(ValueError, match="backend must be one of"):
        correlate_block(x, w, backend="fast")


@pytest.mark.parametrize("backend", ["numpy", "compiled"])
@pytest.mark.parametrize(
    "block_shape, weights_shape, options, message",
    [
        ((2, 8, 8), (1, 3, 3, 3), {}, "channels"),
        ((1, 2, 8), (1, 1, 3, 3), {}, "smaller than the kernel"),
        ((8, 8), (1, 1, 3, 3), {}, "shape"),
        ((1, 8, 8), (1, 1, 0, 3), {}, "kh, kw >= 1"),
        ((1, 8, 8), (0, 1, 3, 3), {"combine": "magnitude"}, "bank of 0 kernels"),
        ((1, 8, 8), (3, 1, 3, 3), {"combine": "direction"}, "bank of 3 kernels"),
        ((1, 8, 8), (1, 1, 3, 3), {"dilation": (1, 0)}, "dilation"),
        ((1, 8, 8), (1, 1, 3, 3), {"dilation": (4, 1)}, "smaller than the kernel"),
        ((1, 8, 8), (1, 1, 3, 3), {"stride": (0, 1)}, "stride"),
        ((1, 8, 8), (1, 1, 3, 3), {"combine": "sum"}, "combine"),
        ((1, 8, 8), (1, 1, 3, 3), {"dtype": np.float16}, "dtype"),
    ],
    ids=["channels", "too-small", "no-channel-axis", "empty-kernel", "empty-bank", "direction-3", "dilation-0",
         "dilated-too-big", "stride", "combine", "dtype"],
)
def test_invalid_arguments(backend, block_shape, weights_shape, options, message):
    with pytest.raises(ValueError, match=message):
        correlate_block(np.zeros(block_shape, np.uint8), np.ones(weights_shape), backend=backend, **options)


@pytest.mark.parametrize("backend", ["numpy", "compiled"])
def test_complex_pixels_are_refused(backend):
    with pytest.raises(TypeError, match="real numbers"):
        correlate_block(np.zeros((1, 4, 4), np.complex64), np.ones((1, 1, 3, 3)), backend=backend)
