"""The Dask pipeline: any chunking gives the same bits, equal to the formula."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import SOBEL, correlate_loop, magnitude

from convpipe.core import correlate_block
from convpipe.geometry import plan_geometry
from convpipe.pipeline import result_array, write_tasks

# A few fixed banks keep the number of compiled kernels (and the test time) bounded.
BANKS = {
    "sobel": SOBEL,
    "even-2x4": np.array([[[1, -2, 0, 3], [0, 1, 1, -1]]], float)[:, None],
    "row-1x3": np.array([[[1, 2, 1]], [[-1, 0, 1]]], float)[:, None],
    "col-5x1": np.array([[[1], [0], [-2], [0], [1]]], float)[:, None],
    "rgb-2x2": np.array([[[[1, -1], [0, 2]], [[0, 1], [1, 0]], [[-1, 0], [0, 1]]]], float),
}


@st.composite
def pipeline_cases(draw):
    bank_name = draw(st.sampled_from(sorted(BANKS)))
    weights = BANKS[bank_name]
    _, channels, kh, kw = weights.shape
    sy, sx = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    frames = draw(st.integers(1, 3))
    h, w = draw(st.integers(kh, 40)), draw(st.integers(kw, 40))
    dtype = draw(st.sampled_from(["uint8", "uint16", "int16", "int32", "float32", "float64"]))
    combine = draw(st.sampled_from(["none", "magnitude"]))
    layout = draw(st.sampled_from(["channels-first", "channels-last"])) if channels > 1 else "plain"
    if layout == "channels-first":
        shape, channel_axis = (frames, channels, h, w), 1
    elif layout == "channels-last":
        shape, channel_axis = (frames, h, w, channels), 3
    else:
        shape, channel_axis = (frames, h, w), None
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.integers(0, 200, size=shape).astype(dtype)
    stored = tuple(draw(st.integers(1, n)) for n in shape)
    chunks = (draw(st.integers(1, 2 * h)), draw(st.integers(1, 2 * w)))
    return x, weights, (sy, sx), combine, channel_axis, stored, chunks


def run_in_memory(x, weights, stride, combine, channel_axis, stored, chunks, out_dtype="float64"):
    """The pipeline on its own, with work tiles of ``chunks`` pixels (halos across tile edges).

    ``convpipe.correlate`` (tested in ``test_arrays.py``) tiles by the input's
    chunks and takes whole small frames; these tests choose the tiles.
    """
    kh, kw = weights.shape[-2:]
    geometry = plan_geometry(
        x.shape, stored, x.dtype.itemsize, np.dtype(out_dtype).itemsize, channel_axis, (kh, kw),
        weights.shape[0], stride, combine, spatial_chunks=chunks,
    )
    stack = da.from_array(x, chunks=geometry.input_chunks)
    result = result_array(stack, geometry, weights, out_dtype)
    assert result.chunks == geometry.output_chunks
    with dask.config.set(scheduler="threads"):
        return result.compute(), geometry


def work_layout(x, channel_axis):
    if channel_axis is None:
        return x[..., None, :, :]
    return np.moveaxis(x, channel_axis, -3)


@given(pipeline_cases())
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_chunked_result_equals_the_formula_and_the_single_block(case):
    x, weights, stride, combine, channel_axis, stored, chunks = case
    got, _ = run_in_memory(x, weights, stride, combine, channel_axis, stored, chunks)
    work = work_layout(x, channel_axis)
    expected = correlate_loop(work, weights, stride)
    if combine == "magnitude":
        np.testing.assert_allclose(got, magnitude(expected), rtol=1e-12)
    else:
        np.testing.assert_array_equal(got, expected)
    whole = correlate_block(np.ascontiguousarray(work), weights, stride, combine, np.float64)
    assert got.tobytes() == whole.tobytes(), "chunking changed a bit"


@given(pipeline_cases())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_float32_output_is_bit_identical_across_chunkings(case):
    x, weights, stride, combine, channel_axis, stored, chunks = case
    x = x.astype(np.float32) / 7  # non-integer values: rounding happens, order matters
    got, _ = run_in_memory(x, weights, stride, combine, channel_axis, stored, chunks, "float32")
    other, _ = run_in_memory(x, weights, stride, combine, channel_axis, x.shape, (10**6, 10**6), "float32")
    assert got.dtype == np.float32
    assert got.tobytes() == other.tobytes()


def test_write_tasks_store_each_block_in_its_own_chunk(tmp_path):
    x = np.random.default_rng(0).integers(0, 255, size=(3, 50, 61)).astype(np.uint8)
    weights = BANKS["sobel"]
    geometry = plan_geometry(x.shape, (1, 16, 16), 1, 4, None, (3, 3), 2, (2, 2), "none", spatial_chunks=(16, 16))
    result = result_array(da.from_array(x, chunks=geometry.input_chunks), geometry, weights, "float32")
    target = zarr.create_array(tmp_path / "o.zarr", shape=geometry.output_shape, chunks=geometry.zarr_chunks,
                               dtype="float32")
    tokens = write_tasks(result, target)
    assert tokens.npartitions == result.npartitions > 1
    dask.compute(tokens, scheduler="threads")
    np.testing.assert_array_equal(target[:], correlate_loop(x[:, None], weights, (2, 2)).astype(np.float32))


def test_write_tasks_refuse_misaligned_zarr_chunks(tmp_path):
    result = da.zeros((4, 10, 10), chunks=(1, 5, 5), dtype="float32")
    target = zarr.create_array(tmp_path / "o.zarr", shape=(4, 10, 10), chunks=(1, 10, 10), dtype="float32")
    with pytest.raises(ValueError, match="not aligned"):
        write_tasks(result, target)
