"""``convpipe.correlate`` on NumPy, Dask and xarray arrays, against the direct loop of ``reference.py``."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import correlate_loop, magnitude

import convpipe

SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
DTYPES = ("uint8", "int8", "uint16", "int16", "int32", "uint32", "int64", "float32", "float64")


def expected(x: np.ndarray, weights: np.ndarray, stride, combine: str, channel_axis: int | None) -> np.ndarray:
    """The reference in the output layout: batch axes in input order, kernel axis before (y, x)."""
    work = x[..., None, :, :] if channel_axis is None else np.moveaxis(x, channel_axis, -3)
    responses = correlate_loop(work, weights, stride)
    return magnitude(responses) if combine == "magnitude" else responses


@st.composite
def cases(draw):
    ndim = draw(st.integers(2, 4))
    channel_axis = draw(st.one_of(st.none(), st.integers(0, ndim - 1))) if ndim >= 3 else None
    channels = draw(st.integers(1, 3)) if channel_axis is not None else 1
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    shape = [draw(st.integers(1, 3)) for _ in range(ndim)]
    spatial = [a for a in range(ndim) if a != channel_axis][-2:]
    if len(spatial) < 2:
        channel_axis, channels = None, 1
        spatial = [ndim - 2, ndim - 1]
    shape[spatial[0]] = draw(st.integers(kh, 14))
    shape[spatial[1]] = draw(st.integers(kw, 14))
    if channel_axis is not None:
        shape[channel_axis] = channels
    n_kernels = draw(st.integers(1, 3))
    kernel_channels = draw(st.sampled_from([1, channels]))
    weights = np.array(
        draw(st.lists(st.integers(-3, 3), min_size=n_kernels * kernel_channels * kh * kw,
                      max_size=n_kernels * kernel_channels * kh * kw)),
        dtype=np.float64,
    ).reshape(n_kernels, kernel_channels, kh, kw)
    dtype = draw(st.sampled_from(DTYPES))
    x = np.random.default_rng(draw(st.integers(0, 2**16))).integers(0, 50, shape).astype(dtype)
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    chunks = tuple(draw(st.integers(1, n)) for n in shape)
    combine = draw(st.sampled_from(["none", "magnitude"]))
    return x, weights, stride, combine, channel_axis, chunks


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.sampled_from(["float32", "float64"]))
def test_numpy_and_dask_give_the_formula_bit_for_bit_whatever_the_chunking(case, dtype) -> None:
    x, weights, stride, combine, channel_axis, chunks = case
    options = dict(stride=stride, combine=combine, channel_axis=channel_axis, dtype=dtype)
    from_numpy = convpipe.correlate(x, weights, **options)
    lazy = convpipe.correlate(da.from_array(x, chunks=chunks), weights, **options)
    assert isinstance(from_numpy, np.ndarray) and isinstance(lazy, da.Array)
    from_dask = lazy.compute()
    assert from_numpy.dtype == from_dask.dtype == np.dtype(dtype)
    assert from_numpy.tobytes() == from_dask.tobytes()  # the chunking never changes a bit
    channels = 1 if channel_axis is None else x.shape[channel_axis]
    want = expected(x, np.repeat(weights, channels // weights.shape[1], axis=1), stride, combine, channel_axis)
    if combine == "none":  # integers: exact
        np.testing.assert_array_equal(from_numpy, want.astype(dtype))
    else:
        np.testing.assert_allclose(from_numpy, want, rtol=1e-6 if dtype == "float32" else 1e-12)


def test_four_by_four_and_three_by_three_give_two_by_two() -> None:
    x = np.arange(16).reshape(4, 4)
    out = convpipe.correlate(x, np.ones((3, 3)))
    np.testing.assert_array_equal(out, [[[45, 54], [81, 90]]])


def test_a_kernel_and_its_transpose_in_one_graph_stay_apart() -> None:
    """dask's tokenize gives an array and its transpose one token: tasks must not be named from it."""
    x = da.from_array(np.random.default_rng(1).integers(0, 255, (2, 30, 30)).astype(np.uint8), chunks=(1, 16, 16))
    gx = convpipe.correlate(x, SOBEL_X)
    gy = convpipe.correlate(x, SOBEL_X.T)
    both = da.hypot(gx, gy)[:, 0].compute()
    want = convpipe.correlate(x.compute(), "sobel", combine="magnitude")
    np.testing.assert_array_equal(both, want)
    assert not np.array_equal(gx.compute(), gy.compute())


def test_building_the_result_computes_nothing() -> None:
    calls = []

    class Count(dask.callbacks.Callback):
        def _start(self, dsk):
            calls.append(1)

    x = da.ones((4, 64, 64), chunks=(1, 32, 32))
    with Count():
        y = convpipe.correlate(x, "sobel", combine="magnitude", stride=2)
        z = convpipe.correlate(xr.DataArray(x, dims=("t", "y", "x")), "scharr")
    assert calls == []
    assert isinstance(y, da.Array) and isinstance(z.data, da.Array)


def test_dataarray_dims_coordinates_and_attributes() -> None:
    t, ny, nx = 3, 20, 25
    data = np.random.default_rng(2).integers(0, 100, (t, ny, nx)).astype(np.uint16)
    x = xr.DataArray(
        da.from_array(data, chunks=(1, 8, 9)),
        dims=("time", "y", "x"),
        coords={
            "time": [10, 20, 30],
            "y": ("y", 100.0 + 0.5 * np.arange(ny), {"units": "um"}),
            "x": -3.0 + 2.0 * np.arange(nx),
            "label": "scene",
            "area": (("y", "x"), np.ones((ny, nx))),
        },
        attrs={"units": "counts"},
        name="img",
    )
    out = convpipe.correlate(x, "sobel", stride=(2, 3))
    assert out.dims == ("time", "c", "y", "x")
    assert isinstance(out.data, da.Array)
    assert list(out["c"].values) == ["sobel-x", "sobel-y"]
    # window centres: input index i*s + 1 for a 3x3 kernel
    np.testing.assert_array_equal(out["y"].values, x["y"].values[1::2][: out.sizes["y"]])
    np.testing.assert_array_equal(out["x"].values, x["x"].values[1::3][: out.sizes["x"]])
    assert out["y"].attrs == {"units": "um"}
    assert list(out["time"].values) == [10, 20, 30] and out["label"].item() == "scene"
    assert "area" not in out.coords  # a 2-D spatial coordinate has no meaning on the output grid
    assert out.attrs["units"] == "counts" and out.name == "img"
    assert out.attrs["convpipe_kernels"] == ["sobel-x", "sobel-y"]
    assert out.attrs["convpipe_stride"] == [2, 3] and out.attrs["convpipe_combine"] == "none"
    np.testing.assert_array_equal(out.values, convpipe.correlate(data, "sobel", stride=(2, 3)))


def test_dataarray_even_kernel_sits_between_two_pixels_and_channel_dim_is_found() -> None:
    data = np.random.default_rng(3).integers(0, 9, (6, 7, 3)).astype(np.uint8)
    x = xr.DataArray(data, dims=("y", "x", "channel"), coords={"y": np.arange(6) * 2.0, "x": np.arange(7)})
    out = convpipe.correlate(x, np.ones((2, 3, 2, 2)), combine="magnitude")  # one 3-channel 2x2 bank
    assert isinstance(out.data, np.ndarray)
    assert out.dims == ("y", "x")
    np.testing.assert_array_equal(out["y"].values, np.arange(5) * 2.0 + 1.0)
    np.testing.assert_array_equal(out["x"].values, np.arange(6) + 0.5)
    want = expected(data, np.ones((2, 3, 2, 2)), (1, 1), "magnitude", 2)
    np.testing.assert_allclose(out.values, want, rtol=1e-6)


def test_dataarray_channel_axis_by_name() -> None:
    data = np.random.default_rng(4).integers(0, 9, (2, 5, 6)).astype(np.float32)
    x = xr.DataArray(data, dims=("band", "y", "x"))
    out = convpipe.correlate(x, np.ones((1, 3, 3)), channel_axis="band")
    assert out.dims == ("c", "y", "x")
    np.testing.assert_array_equal(out.values, convpipe.correlate(data, np.ones((1, 3, 3)), channel_axis=0))


@pytest.mark.parametrize(
    ("call", "error", "fragment"),
    [
        (lambda: convpipe.correlate(np.zeros((8, 8)), "nope"), ValueError, "kernels: unknown bank 'nope'"),
        (lambda: convpipe.correlate(np.zeros((8, 8)), "sobel", stride=0), ValueError, "stride: must be a positive"),
        (lambda: convpipe.correlate(np.zeros((8, 8)), "sobel", stride=(1, 2, 3)), ValueError, "stride"),
        (lambda: convpipe.correlate(np.zeros((8, 8)), "sobel", combine="max"), ValueError, "combine: must be"),
        (lambda: convpipe.correlate(np.zeros((8, 8)), "sobel", dtype="uint8"), ValueError, "dtype: must be"),
        (lambda: convpipe.correlate(np.zeros((8, 8)), "sobel", dtype="int16"), ValueError, "float64 pixels"),
        (lambda: convpipe.correlate(np.zeros(8), "sobel"), ValueError, "at least 2 dimensions"),
        (lambda: convpipe.correlate(np.zeros((2, 2)), "sobel"), ValueError, "larger than the image"),
        (lambda: convpipe.correlate(np.zeros((8, 8), dtype=bool), "sobel"), TypeError, "real numbers"),
        (lambda: convpipe.correlate(np.zeros((8, 8), dtype=complex), "sobel"), TypeError, "real numbers"),
        (lambda: convpipe.correlate(np.zeros((3, 8, 8)), "sobel", channel_axis=3), ValueError, "out of range"),
        (lambda: convpipe.correlate(np.zeros((3, 8, 8)), "sobel", channel_axis="c"), TypeError, "DataArray"),
        (lambda: convpipe.correlate(np.zeros((3, 8, 8)), np.ones((1, 2, 3, 3)), channel_axis=0), ValueError,
         "kernels have 2 channels but the input has 3"),
        (lambda: convpipe.correlate(np.zeros((8, 8)), [[1.0, np.nan]]), ValueError, "finite"),
        (lambda: convpipe.correlate(xr.DataArray(np.zeros((8, 8)), dims=("y", "x")), "sobel", channel_axis="c"),
         ValueError, "'c' is not a dimension"),
    ],
)
def test_bad_arguments_raise_before_any_compute(call, error, fragment) -> None:
    with pytest.raises(error, match=None) as info:
        call()
    assert fragment in str(info.value)
