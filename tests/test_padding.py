"""Padding, padding_mode, dilation and ``combine: direction``, against ``numpy.pad`` and the direct loop.

The expected output is always ``correlate_loop`` (tests/reference.py) on the
input padded by ``numpy.pad``: the padding widths of ``same`` are computed
here from the TensorFlow/Keras rule, not by convpipe.
"""

from __future__ import annotations

import math
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import NUMPY_MODES, correlate_loop
from reference import correlate_padded as expected

import convpipe
from convpipe.config import parse_config
from convpipe.core import correlate_block
from convpipe.errors import ConvpipeError
from convpipe.sample import write_sample

SLOW = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def same_widths(n: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow/Keras ``same``: ceil(n / s) outputs, the odd pixel of padding at the end."""
    total = max((math.ceil(n / s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def widths(padding, shape, window, stride) -> tuple[int, int, int, int]:
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        return same_widths(shape[0], window[0], stride[0]) + same_widths(shape[1], window[1], stride[1])
    if isinstance(padding, int):
        return (padding,) * 4
    if len(padding) == 2:
        return (padding[0], padding[0], padding[1], padding[1])
    return tuple(padding)


@st.composite
def cases(draw, max_side=16):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    mode = draw(st.sampled_from(list(NUMPY_MODES)))
    limit = {"reflect": min(h, w) - 1, "circular": min(h, w)}.get(mode, 5)
    side = st.integers(0, min(limit, 5))
    padding = draw(
        st.one_of(
            st.sampled_from(["valid", "same"]), side, st.lists(side, min_size=2, max_size=2),
            st.lists(side, min_size=4, max_size=4),
        )
    )
    window = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    pads = widths(padding, (h, w), window, stride)
    big = {"reflect": max(pads) >= min(h, w), "circular": max(pads) > min(h, w)}.get(mode, False)
    fits = h + pads[0] + pads[1] >= window[0] and w + pads[2] + pads[3] >= window[1]
    if big or not fits:  # refused (tested below): draw a valid case instead
        padding, pads, mode, dilation = "valid", (0, 0, 0, 0), "zeros", (1, 1)
        kh, kw = min(kh, h), min(kw, w)
    n_kernels = draw(st.integers(1, 2))
    weights = np.array(
        draw(st.lists(st.integers(-3, 3), min_size=n_kernels * kh * kw, max_size=n_kernels * kh * kw)), np.float64
    ).reshape(n_kernels, 1, kh, kw)
    frames = draw(st.integers(1, 2))
    x = np.random.default_rng(draw(st.integers(0, 2**16))).integers(0, 200, (frames, h, w)).astype(np.uint8)
    chunks = (draw(st.integers(1, frames)), draw(st.integers(1, h)), draw(st.integers(1, w)))
    return x, weights, stride, dilation, padding, pads, mode, chunks


@settings(SLOW, max_examples=60)
@given(cases())
def test_numpy_and_dask_equal_numpy_pad_and_the_loop_bit_for_bit_whatever_the_chunking(case) -> None:
    x, weights, stride, dilation, padding, pads, mode, chunks = case
    options = dict(stride=stride, dilation=dilation, padding=padding, padding_mode=mode, dtype="float64")
    from_numpy = convpipe.correlate(x, weights, **options)
    from_dask = convpipe.correlate(da.from_array(x, chunks=chunks), weights, **options).compute()
    assert from_numpy.tobytes() == from_dask.tobytes()
    np.testing.assert_array_equal(from_numpy, expected(x, weights, stride, dilation, pads, mode))


@pytest.mark.parametrize("padding", ["same", 1, [2, 0], [0, 3, 1, 2]], ids=["same", "p", "pair", "four"])
def test_same_keeps_the_size_and_explicit_widths_add_up(padding) -> None:
    x = np.zeros((2, 11, 7), np.uint8)
    out = convpipe.correlate(x, "sobel", padding=padding, stride=(1, 2))
    pads = widths(padding, (11, 7), (3, 3), (1, 2))
    assert out.shape == (2, 2, 11 + pads[0] + pads[1] - 2, (7 + pads[2] + pads[3] - 3) // 2 + 1)
    if padding == "same":
        assert out.shape[-2:] == (11, 4)  # ceil(H / sy) x ceil(W / sx)


def test_same_at_stride_one_matches_pytorch_rule_for_even_kernels() -> None:
    """An even window: the odd pixel of padding goes at the end (bottom, right)."""
    x = np.arange(36, dtype=np.uint8).reshape(6, 6)
    w = np.ones((1, 1, 2, 2))
    out = convpipe.correlate(x, w, padding="same", dtype="float64")
    np.testing.assert_array_equal(out, expected(x, w, (1, 1), (1, 1), (0, 1, 0, 1), "zeros"))


@settings(SLOW, max_examples=25)
@given(cases(max_side=24), st.sampled_from(["none", "magnitude", "direction"]), st.sampled_from(["f4", "f8"]))
def test_compiled_and_numpy_cores_give_the_same_bits_with_dilation(case, combine, dtype) -> None:
    x, weights, stride, dilation, _, (top, bottom, left, right), mode, _ = case
    if combine == "direction":
        weights = np.concatenate([weights, weights[:, :, ::-1]])[:2]
        weights[1, 0, 0, 0] += 1  # two different kernels
    block = np.pad(x, [(0, 0), (top, bottom), (left, right)], mode=NUMPY_MODES[mode])[:, None]
    options = dict(stride=stride, combine=combine, dtype=np.dtype(dtype), dilation=dilation)
    numpy_result = correlate_block(block, weights, backend="numpy", **options)
    compiled_result = correlate_block(block, weights, backend="compiled", **options)
    assert numpy_result.tobytes() == compiled_result.tobytes()


# --------------------------------------------------------------------------- direction


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", ["compiled", "numpy"])
def test_direction_is_arctan2_of_the_two_responses_and_zero_where_both_are_zero(
    dtype, backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVPIPE_CORE", backend)
    rng = np.random.default_rng(5)
    x = rng.integers(0, 4, (3, 20, 21)).astype(np.uint8)
    x[0, :8, :8] = 7  # flat: both responses 0
    x[1, :, 10:] = 0  # a step down to the right: sobel-x < 0 with sobel-y 0, angle pi
    x[1, :, :10] = 9
    angle = convpipe.correlate(da.from_array(x, chunks=(1, 7, 9)), "sobel", combine="direction", dtype=dtype)
    angle = angle.compute()
    sobel_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float64)
    responses = correlate_loop(x[:, None], np.stack([sobel_x, sobel_x.T])[:, None], (1, 1))
    want = np.arctan2(responses[:, 1], responses[:, 0])
    assert angle.dtype == np.dtype(dtype) and angle.shape == want.shape
    np.testing.assert_allclose(angle, want, rtol=2e-7 if dtype == "float32" else 1e-15, atol=0)
    both_zero = (responses[:, 0] == 0) & (responses[:, 1] == 0)
    assert both_zero[0].any() and np.all(angle[both_zero] == 0) and not np.signbit(angle[both_zero]).any()
    assert np.all((angle > -np.pi) & (angle <= np.float32(np.pi) if dtype == "float32" else angle <= np.pi))
    assert np.any(angle[1] == np.asarray(np.pi, dtype))  # +pi, never -pi


def test_direction_points_right_and_down() -> None:
    ramp_right = np.tile(np.arange(8, dtype=np.uint8), (8, 1))
    assert np.all(convpipe.correlate(ramp_right, "sobel", combine="direction") == 0)
    down = convpipe.correlate(ramp_right.T.copy(), "sobel", combine="direction")
    np.testing.assert_allclose(down, np.pi / 2, rtol=1e-7)


# --------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    "options, error, fragments",
    [
        ({"padding": -1}, ValueError, ("padding: must be valid, same", "got -1")),
        ({"padding": [1, 2, 3]}, ValueError, ("padding: must be", "[top, bottom, left, right]", "[1, 2, 3]")),
        ({"padding": "full"}, ValueError, ("padding: must be", "'full'")),
        ({"padding_mode": "wrap"}, ValueError, ("padding_mode: must be one of zeros, reflect, replicate, circular",)),
        ({"dilation": 0}, ValueError, ("dilation: must be a positive integer or [dy, dx]", "got 0")),
        ({"dilation": (1, 2, 3)}, ValueError, ("dilation: must be",)),
        ({"padding": 8, "padding_mode": "reflect"}, ValueError, ("padding: reflect needs padding smaller", "8")),
        (
            {"padding": 11, "padding_mode": "circular"},
            ValueError,
            ("padding: circular needs padding at most the frame height 8", "got 11"),
        ),
        ({"dilation": 5}, ValueError, ("dilation: the kernels (11x11 dilated)", "(8x10)")),
        ({"combine": "direction", "kernels": "laplacian"}, ValueError, ("combine: direction needs", "two kernels")),
    ],
    ids=["negative", "three", "word", "mode", "dilation-0", "dilation-3", "reflect", "circular", "too-dilated",
         "direction-1"],
)
def test_correlate_refuses_bad_values_in_one_line(options, error, fragments) -> None:
    options = dict(options)
    kernels = options.pop("kernels", "sobel")
    with pytest.raises(error) as info:
        convpipe.correlate(np.zeros((8, 10), np.uint8), kernels, **options)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


CONFIG = "input:\n  path: in.zarr\nkernels: sobel\noutput:\n  path: out.zarr\n"  # lines 1-5


@pytest.mark.parametrize(
    "extra, line, fragments",
    [
        ("padding: -2\n", 6, ("padding: must be valid, same, a non-negative integer p",)),
        ("padding: [1, 2, 3]\n", 6, ("padding: must be", "got [1, 2, 3]")),
        ("padding: true\n", 6, ("padding: must be", "got True")),
        ("padding_mode: mirror\n", 6, ("padding_mode: must be one of zeros, reflect, replicate, circular",)),
        ("stride: 1\ndilation: [1, 0]\n", 7, ("dilation: must be a positive integer or [dy, dx]", "[1, 0]")),
    ],
    ids=["negative", "three", "bool", "mode", "dilation"],
)
def test_config_refuses_bad_values_at_their_line(extra, line, fragments) -> None:
    with pytest.raises(ConvpipeError) as info:
        parse_config(CONFIG + extra, source="bad.yaml")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"bad.yaml:{line}: "), message
    for fragment in fragments:
        assert fragment in message, message


def test_config_refuses_direction_without_two_kernels_at_its_line() -> None:
    text = "input:\n  path: in.zarr\nkernels: laplacian\ncombine: direction\noutput:\n  path: out.zarr\n"
    with pytest.raises(ConvpipeError, match=r"^bad\.yaml:4: combine: direction needs a bank of exactly two kernels"):
        parse_config(text, source="bad.yaml")


@pytest.mark.parametrize(
    "extra, fragment",
    [
        ("padding: 32\npadding_mode: reflect\n", "padding: reflect needs padding smaller than the frame height 32"),
        ("padding: [0, 41]\npadding_mode: circular\n", "padding: circular needs padding at most the frame width 40"),
        ("dilation: 20\n", "dilation: the kernels (41x41 dilated) are larger than the image frames (32x40)"),
    ],
    ids=["reflect", "circular", "dilation"],
)
def test_plan_checks_padding_and_dilation_against_the_input_at_the_key_line(
    sample_zarr: Path, write_config, extra: str, fragment: str
) -> None:
    text = f"input:\n  path: {sample_zarr}\nkernels: sobel\noutput:\n  path: out.zarr\n{extra}"
    config = write_config(sample_zarr.parent, text)
    with pytest.raises(ConvpipeError) as info:
        convpipe.plan(config)
    assert str(info.value).startswith(f"{config}:6: "), str(info.value)
    assert fragment in str(info.value)


# --------------------------------------------------------------------------- end to end and metadata


@pytest.mark.parametrize(
    "options",
    [
        {"padding": "same", "padding_mode": "reflect", "compute": {"chunks": [8, 16]}},
        {"padding": [3, 0, 1, 4], "padding_mode": "circular", "stride": [2, 3], "compute": {"chunks": [6, 9]}},
        {"padding": 2, "padding_mode": "replicate", "dilation": [2, 3], "compute": {"chunks": [10, 12]}},
        {"padding": "same", "dilation": 2, "stride": 2, "combine": "direction"},
    ],
    ids=["same-reflect", "circular-strided", "replicate-dilated", "zeros-direction"],
)
def test_a_run_writes_the_padded_dilated_formula(tmp_path: Path, options: dict) -> None:
    source, target = tmp_path / "in.zarr", tmp_path / "out.zarr"
    write_sample(str(source), frames=2, height=29, width=37)
    config = {"input": {"path": str(source)}, "kernels": "sobel", "output": {"path": str(target), "dtype": "float64"}}
    convpipe.run({**config, **options}, progress=False)
    x = zarr.open_group(str(source), mode="r")["0"][...]
    stride, dilation = tuple(np.broadcast_to(options.get("stride", 1), 2)), tuple(
        np.broadcast_to(options.get("dilation", 1), 2)
    )
    window = tuple(d * 2 + 1 for d in dilation)
    pads = widths(options["padding"], x.shape[-2:], window, stride)
    bank = convpipe.BUILTIN_BANKS["sobel"].weights
    want = expected(x, bank, stride, dilation, pads, options.get("padding_mode", "zeros"))
    got = zarr.open_group(str(target), mode="r")["0"][...]
    if options.get("combine") == "direction":
        np.testing.assert_allclose(got, np.arctan2(want[:, 1], want[:, 0]), rtol=1e-15, atol=0)
    else:
        np.testing.assert_array_equal(got, want)
    record = convpipe.open_output(str(target)).attrs["convpipe"]
    assert record["padding"] == list(pads) and record["dilation"] == list(dilation)


def test_same_padding_puts_output_pixels_on_input_pixels(tmp_path: Path) -> None:
    source, target = tmp_path / "in.zarr", tmp_path / "out.zarr"
    write_sample(str(source), frames=2, height=20, width=24)
    config = {"input": {"path": str(source)}, "kernels": "sobel", "padding": "same", "output": {"path": str(target)}}
    convpipe.run(config, progress=False)
    multiscale = zarr.open_group(str(target), mode="r").attrs["ome"]["multiscales"][0]
    scale, translation = (t[t["type"]] for t in multiscale["datasets"][0]["coordinateTransformations"])
    assert scale[-2:] == [1.0, 1.0] and translation[-2:] == [0.0, 0.0]
    result = convpipe.open_output(str(target))
    assert result.shape[-2:] == (20, 24)
    np.testing.assert_array_equal(result["y"].values, np.arange(20))
    np.testing.assert_array_equal(result["x"].values, np.arange(24))


def test_padding_and_dilation_move_the_ome_translation(tmp_path: Path) -> None:
    source, target = tmp_path / "in.zarr", tmp_path / "out.zarr"
    write_sample(str(source), frames=1, height=20, width=24)
    config = {
        "input": {"path": str(source)}, "kernels": "sobel", "padding": [3, 0, 1, 1], "dilation": [1, 2],
        "stride": 2, "output": {"path": str(target)},
    }
    convpipe.run(config, progress=False)
    multiscale = zarr.open_group(str(target), mode="r").attrs["ome"]["multiscales"][0]
    scale, translation = (t[t["type"]] for t in multiscale["datasets"][0]["coordinateTransformations"])
    assert scale[-2:] == [2.0, 2.0]
    assert translation[-2:] == [1 - 3, 2 - 1]  # window centre (k_e - 1) / 2 minus the padding before
    result = convpipe.open_output(str(target))
    np.testing.assert_array_equal(result["y"].values, np.arange(result.shape[-2]) * 2 - 2.0)
    np.testing.assert_array_equal(result["x"].values, np.arange(result.shape[-1]) * 2 + 1.0)


def test_dataarray_coordinates_follow_the_padding() -> None:
    x = xr.DataArray(
        np.zeros((2, 9, 12), np.uint8),
        dims=("t", "y", "x"),
        coords={"t": [0, 1], "y": 10.0 + 0.5 * np.arange(9), "x": 2.0 * np.arange(12)},
    )
    same = convpipe.correlate(x, "sobel", padding="same")
    np.testing.assert_array_equal(same["y"].values, x["y"].values)
    np.testing.assert_array_equal(same["x"].values, x["x"].values)
    padded = convpipe.correlate(x, "sobel", padding=3, stride=2)  # centres at 2i + 1 - 3: from -2, extended
    np.testing.assert_array_equal(padded["y"].values, 10.0 + 0.5 * (np.arange(padded.shape[-2]) * 2 - 2))
    np.testing.assert_array_equal(padded["x"].values, 2.0 * (np.arange(padded.shape[-1]) * 2 - 2))
    assert padded.attrs["convpipe_padding"] == [3, 3, 3, 3]


def test_direction_of_negative_zeros_is_zero_not_minus_pi() -> None:
    """IEEE atan2(-0, -0) is -pi; the contract adds 0 first, so signed zeros give 0 too."""
    from convpipe.core.reference import combine_responses

    zeros = np.array([[[-0.0, 0.0, -0.0]], [[-0.0, -0.0, 0.0]]], np.float32)  # (K=2, 1, 3)
    angle = combine_responses(zeros, "direction")
    assert angle.tolist() == [[0.0, 0.0, 0.0]] and not np.signbit(angle).any()
    assert combine_responses(np.array([[[-1.0]], [[-0.0]]]), "direction")[0, 0] == np.pi
