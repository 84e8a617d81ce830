"""Integer outputs (``output.dtype: int16 | int32 | auto``): exact, refused when they could overflow."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

import convpipe
from convpipe.core import correlate_block
from convpipe.outtypes import output_dtype, response_range
from helpers import CONVPIPE, assert_user_error, invoke, read_output, write_yaml
from reference import SOBEL, correlate_loop

PIXEL_DTYPES = (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.bool_)


@st.composite
def integer_cases(draw):
    """An integer block, an integer bank, a stride and a dilation that fit each other."""
    pixel = draw(st.sampled_from(PIXEL_DTYPES[:-1]))
    k, c = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    h = draw(st.integers(dilation[0] * (kh - 1) + 1, 24))
    w = draw(st.integers(dilation[1] * (kw - 1) + 1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    info = np.iinfo(pixel)
    block = rng.integers(info.min, int(info.max) + 1, size=(2, c, h, w)).astype(pixel)
    weights = rng.integers(-3, 4, size=(k, c, kh, kw)).astype(np.float64)
    return block, weights, stride, dilation


@settings(max_examples=30, deadline=None)
@given(integer_cases(), st.sampled_from(["int16", "int32"]), st.sampled_from(["compiled", "numpy"]))
def test_integer_responses_are_exact(case, dtype, backend):
    block, weights, stride, dilation = case
    expected = correlate_loop(block, weights, stride, dilation)  # float64: exact for these sums
    lowest, highest = response_range(weights, block.dtype)
    got = correlate_block(block, weights, stride, "none", dtype, dilation=dilation, backend=backend)
    assert got.dtype == np.dtype(dtype)
    if np.iinfo(dtype).min <= lowest and highest <= np.iinfo(dtype).max:
        np.testing.assert_array_equal(got, expected.astype(np.int64))
    else:  # beyond the type (the pipeline refuses it), the core gives the exact sum modulo 2**bits
        np.testing.assert_array_equal(got, expected.astype(np.int64).astype(dtype))


def test_large_banks_use_the_tap_table_and_stay_exact():
    rng = np.random.default_rng(3)
    block = rng.integers(0, 256, size=(1, 2, 40, 41)).astype(np.uint8)
    weights = rng.integers(1, 3, size=(2, 2, 11, 13)).astype(np.float64)  # 572 non-zero taps
    got = correlate_block(block, weights, (2, 1), "none", "int32", backend="compiled")
    np.testing.assert_array_equal(got, correlate_loop(block, weights, (2, 1)).astype(np.int64))


@pytest.mark.parametrize("pixel", PIXEL_DTYPES)
def test_response_range_is_reached_and_never_exceeded(pixel):
    """The bounds are the responses of the extreme patches (brute force over every 0/1 extreme pattern)."""
    weights = np.array([[[[1, -2], [0, 3]]], [[[-1, -1], [-1, -1]]]], dtype=np.float64)
    info = np.iinfo(np.uint8 if pixel is np.bool_ else pixel)
    responses = [
        correlate_loop(np.array(corner, dtype=np.float64).reshape(1, 2, 2), weights, (1, 1)).ravel()
        for corner in itertools.product((int(info.min), int(info.max)), repeat=4)
    ]
    assert response_range(weights, np.dtype(pixel)) == (min(map(min, responses)), max(map(max, responses)))


@pytest.mark.parametrize(
    ("requested", "pixel", "weights", "combine", "dtype", "problem"),
    [
        ("auto", np.uint8, SOBEL, "none", "int16", ""),
        ("auto", np.uint16, SOBEL, "none", "int32", ""),
        ("auto", np.int32, SOBEL, "none", "float32", ""),  # beyond int32: float32
        ("auto", np.float32, SOBEL, "none", "float32", ""),
        ("auto", np.uint8, SOBEL, "magnitude", "float32", ""),
        ("auto", np.uint8, SOBEL * 0.5, "none", "float32", ""),
        ("int16", np.uint16, SOBEL, "none", "int16", "beyond int16; use int32"),
        ("int32", np.float32, SOBEL, "none", "int32", "not integers"),
        ("int16", np.uint8, SOBEL, "magnitude", "int16", "combine: magnitude"),
        ("int16", np.uint8, SOBEL * 0.5, "none", "int16", "non-integer weights"),
        ("int32", np.int64, SOBEL, "none", "int32", "int64 pixels"),
        ("float64", np.uint8, SOBEL, "magnitude", "float64", ""),
    ],
)
def test_output_dtype_choice(requested, pixel, weights, combine, dtype, problem):
    chosen, why = output_dtype(requested, weights, np.dtype(pixel), combine)
    assert chosen == dtype
    assert (problem in why) if problem else why == ""


def _stack(path, dtype=np.uint8):
    rng = np.random.default_rng(5)
    data = rng.integers(0, np.iinfo(dtype).max, size=(3, 50, 61)).astype(dtype)
    zarr.create_array(str(path), data=data, chunks=(1, 32, 32), dimension_names=["t", "y", "x"])
    return data


@pytest.mark.parametrize(("pixel", "expected"), [(np.uint8, "int16"), (np.uint16, "int32")])
def test_auto_run_writes_the_exact_integers(tmp_path, pixel, expected):
    data = _stack(tmp_path / "in.zarr", pixel)
    config = {
        "input": {"path": str(tmp_path / "in.zarr")},
        "kernels": "sobel",
        "stride": [1, 2],
        "combine": "none",
        "output": {"path": str(tmp_path / "out.zarr"), "dtype": "auto"},
        "compute": {"chunks": [16, 16]},
    }
    assert convpipe.plan(config).output_dtype == expected
    convpipe.run(config, progress=False)
    result = read_output(tmp_path / "out.zarr")
    assert result.dtype == np.dtype(expected)
    np.testing.assert_array_equal(result, correlate_loop(data[:, None], SOBEL, (1, 2)).astype(np.int64))
    assert zarr.open_group(str(tmp_path / "out.zarr"))["0"].fill_value == np.iinfo(expected).min


def test_an_overflowing_integer_output_is_one_line_naming_the_yaml_line(tmp_path):
    _stack(tmp_path / "in.zarr", np.uint16)
    config = write_yaml(
        tmp_path / "c.yaml",
        {
            "input": {"path": str(tmp_path / "in.zarr")},
            "kernels": "sobel",
            "combine": "none",
            "output": {"path": str(tmp_path / "out.zarr"), "dtype": "int16"},
        },
    )
    message = assert_user_error(invoke("validate", config), "output.dtype", "int16", "use int32")
    assert f"{config}:7:" in message
    assert not (tmp_path / "out.zarr").exists()


def test_installed_command_runs_an_integer_output(tmp_path):
    import subprocess

    data = _stack(tmp_path / "in.zarr")
    config = write_yaml(
        tmp_path / "c.yaml",
        {
            "input": {"path": str(tmp_path / "in.zarr")},
            "kernels": "laplacian",
            "combine": "none",
            "output": {"path": str(tmp_path / "out.zarr"), "dtype": "int16"},
        },
    )
    done = subprocess.run([CONVPIPE, "run", str(config), "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    laplacian = np.array([[[[0, 1, 0], [1, -4, 1], [0, 1, 0]]]], dtype=np.float64)
    expected = correlate_loop(data[:, None], laplacian, (1, 1)).astype(np.int64)
    np.testing.assert_array_equal(read_output(tmp_path / "out.zarr"), expected)


def test_python_api_integer_dtypes():
    x = np.random.default_rng(2).integers(0, 256, size=(2, 30, 33)).astype(np.uint8)
    result = convpipe.correlate(x, "sobel", dtype="auto")
    assert result.dtype == np.int16
    np.testing.assert_array_equal(result, correlate_loop(x[:, None], SOBEL, (1, 1)).astype(np.int64))
    with pytest.raises(ValueError, match="dtype: int16: combine: magnitude"):
        convpipe.correlate(x, "sobel", dtype="int16", combine="magnitude")
