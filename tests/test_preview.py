"""Previews of real Zarr arrays (and image folders) as PNG files."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import zarr

import convpipe
from convpipe.errors import InputError, OutputError
from convpipe.preview import (
    CONSTANT_GREY,
    LINE_HEIGHT,
    PANEL_GAP,
    Panel,
    frame_axes,
    labelled,
    on_one_grid,
    render_frame,
    render_panel,
    side_by_side,
    stretch_to_uint8,
    write_preview,
)

T, H, W = 5, 12, 16


def right_half_bright(shape: tuple[int, ...] = (T, H, W), dtype: str = "uint16") -> np.ndarray:
    """Noise in 0..99 on the left half, 150..249 on the right half of every frame."""
    data = np.random.default_rng(0).integers(0, 100, shape).astype(dtype)
    data[..., W // 2 :] += 150
    return data


def save(path: Path, data: np.ndarray, dimension_names=None, chunks=None) -> Path:
    array = zarr.create_array(
        path, shape=data.shape, dtype=data.dtype, chunks=chunks or data.shape, dimension_names=dimension_names
    )
    array[...] = data
    return path


def save_group(path: Path, data: np.ndarray, name: str = "0", dimension_names=None) -> Path:
    group = zarr.open_group(path, mode="w")
    array = group.create_array(name, shape=data.shape, dtype=data.dtype, dimension_names=dimension_names)
    array[...] = data
    return path


def assert_bright_on_the_right(image: np.ndarray, width: int = W) -> None:
    left, right = image[:, : width // 2], image[:, width // 2 : width]
    assert right.min() > left.max()


# ----------------------------------------------------------------------------- axes


@pytest.mark.parametrize(
    ("shape", "names", "expected"),
    [
        pytest.param((H, W), None, ((), None, 0, 1), id="2d"),
        pytest.param((T, H, W), None, ((0,), None, 1, 2), id="3d-unnamed"),
        pytest.param((T, 3, H, W), None, ((0,), 1, 2, 3), id="4d-unnamed-channel-before-yx"),
        pytest.param((T, H, W, 3), ("t", "y", "x", "c"), ((0,), 3, 1, 2), id="channel-last-named"),
        pytest.param((T, 4, H, W), ("t", "z", "y", "x"), ((0, 1), None, 2, 3), id="tzyx-no-channel"),
        pytest.param((2, T, 3, H, W), ("t", "z", "c", "y", "x"), ((0, 1), 2, 3, 4), id="tzcyx"),
        pytest.param((T, H, W), (None, None, None), ((0,), None, 1, 2), id="names-all-missing"),
        pytest.param((T, 3, H, W), ("t", "channel", "row", "col"), ((0,), 1, 2, 3), id="xarray-style-names"),
    ],
)
def test_frame_axes(shape, names, expected) -> None:
    axes = frame_axes(shape, names)
    assert (axes.batch_axes, axes.channel_axis, *axes.spatial_axes) == expected


@pytest.mark.parametrize(
    ("shape", "names", "message"),
    [
        pytest.param((10,), None, "1-D", id="1d"),
        pytest.param((W, H), ("x", "y"), "must be the last two", id="xy-order"),  # as convpipe's inputs
    ],
)
def test_frame_axes_refuses(shape, names, message: str) -> None:
    with pytest.raises(InputError, match=message):
        frame_axes(shape, names)


# ----------------------------------------------------------------------------- contrast


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int32", "float32", "float64"])
def test_stretch_uses_the_full_range(dtype: str) -> None:
    ramp = np.arange(H * W).reshape(H, W).astype(dtype)
    image = stretch_to_uint8(ramp)
    assert image.dtype == np.uint8
    assert image[0, 0] == 0 and image[-1, -1] == 255
    assert np.all(np.diff(image.ravel().astype(int)) >= 0)  # monotonic


def test_stretch_ignores_a_hot_pixel() -> None:
    ramp = np.linspace(0, 1, 200 * 200).reshape(200, 200)
    ramp[5, 5] = 1e9
    image = stretch_to_uint8(ramp)
    assert image[5, 5] == 255
    assert image[100, 100] > 100  # the ramp is not squashed to black by the outlier


def test_stretch_shows_sparse_data() -> None:
    sparse = np.zeros((100, 100), np.uint16)
    sparse[10, 10] = 500  # percentiles are both 0: fall back to min and max
    image = stretch_to_uint8(sparse)
    assert image[10, 10] == 255 and image.sum() == 255


@pytest.mark.parametrize("value", [0, 7, -3.5, 1e30])
def test_constant_frame_is_mid_grey_without_warnings(value) -> None:
    image = stretch_to_uint8(np.full((H, W), value))
    np.testing.assert_array_equal(image, CONSTANT_GREY)


def test_non_finite_values_do_not_warn() -> None:
    frame = np.linspace(0, 1, H * W).reshape(H, W)
    frame[0, :3] = [np.nan, np.inf, -np.inf]
    image = stretch_to_uint8(frame)
    assert list(image[0, :3]) == [0, 255, 0]
    np.testing.assert_array_equal(stretch_to_uint8(np.full((2, 2), np.nan)), 0)


def test_bool_frame() -> None:
    np.testing.assert_array_equal(stretch_to_uint8(np.eye(3, dtype=bool)), np.eye(3, dtype=np.uint8) * 255)


# ----------------------------------------------------------------------------- render_frame


def test_render_middle_frame_by_default(tmp_path: Path) -> None:
    data = np.zeros((T, H, W), np.float32)
    for t in range(T):
        data[t, :, t] = 1.0  # frame t has a bright column t
    image = render_frame(save(tmp_path / "a.zarr", data, ("t", "y", "x"), chunks=(1, H, W)))
    assert image.shape == (H, W) and image.dtype == np.uint8
    assert set(np.flatnonzero(image.max(axis=0))) == {T // 2}


@pytest.mark.parametrize("index", [0, 3, -1])
def test_render_selected_frame(tmp_path: Path, index: int) -> None:
    data = np.zeros((T, H, W), np.uint8)
    for t in range(T):
        data[t, t, :] = 9
    image = render_frame(save(tmp_path / "a.zarr", data), index=index)
    assert set(np.flatnonzero(image.max(axis=1))) == {index % T}


def test_render_bright_right_half(tmp_path: Path) -> None:
    image = render_frame(save(tmp_path / "a.zarr", right_half_bright(), ("t", "y", "x")))
    assert image.std() > 0
    assert_bright_on_the_right(image)


def test_render_reads_only_the_chunks_of_the_frame(tmp_path: Path) -> None:
    path = save(tmp_path / "a.zarr", right_half_bright(), ("t", "y", "x"), chunks=(1, H, W))
    for t in (0, 1, 3, 4):  # every frame but the middle one becomes unreadable
        (path / "c" / str(t) / "0" / "0").write_bytes(b"not a blosc/zstd chunk")
    assert_bright_on_the_right(render_frame(path))
    with pytest.raises(RuntimeError, match="decompression"):  # the corrupt chunk is read when asked for
        render_frame(path, index=0)


@pytest.mark.parametrize(
    ("layout", "names"),
    [
        pytest.param("tcyx", None, id="unnamed-4d"),
        pytest.param("tyxc", ("t", "y", "x", "c"), id="named-channel-last"),
        pytest.param("tcyx", ("t", "c", "y", "x"), id="named-channel-first"),
    ],
)
def test_render_channel(tmp_path: Path, layout: str, names) -> None:
    data = np.zeros((T, 3, H, W), np.float32)
    data[:, 1, :, W // 2 :] = 1.0  # only channel 1 has a bright right half
    data[:, 2, : H // 2, :] = 1.0  # channel 2: bright top
    if layout == "tyxc":
        data = np.moveaxis(data, 1, -1)
    path = save(tmp_path / "a.zarr", data, names)
    assert_bright_on_the_right(render_frame(path, channel=1))
    top = render_frame(path, channel=2)
    assert top[: H // 2].min() > top[H // 2 :].max()
    np.testing.assert_array_equal(render_frame(path), CONSTANT_GREY)  # channel 0 by default: all zero


def test_render_several_leading_axes(tmp_path: Path) -> None:
    data = np.zeros((2, 4, H, W), np.uint8)
    data[1, 3, :, W // 2 :] = 200
    path = save(tmp_path / "a.zarr", data, ("t", "z", "y", "x"))
    assert_bright_on_the_right(render_frame(path, index=(1, 3)))
    np.testing.assert_array_equal(render_frame(path, index=1), CONSTANT_GREY)  # z defaults to 0


def test_render_group_and_named_array(tmp_path: Path) -> None:
    path = save_group(tmp_path / "g.zarr", right_half_bright(), dimension_names=("t", "y", "x"))
    assert_bright_on_the_right(render_frame(path))
    assert_bright_on_the_right(render_frame(zarr.open_group(path, mode="r")))
    other = save_group(tmp_path / "h.zarr", right_half_bright(), name="filtered")
    assert_bright_on_the_right(render_frame(other, array="filtered"))
    nested = zarr.open_group(tmp_path / "n.zarr", mode="w").create_group("scale0")
    nested.create_array("image", data=right_half_bright())
    assert_bright_on_the_right(render_frame(tmp_path / "n.zarr", array="scale0/image"))
    with pytest.raises(InputError, match="no array 'scale0'"):
        render_frame(tmp_path / "n.zarr", array="scale0")  # a group, not an array


def test_render_zarr2_dimension_names(tmp_path: Path) -> None:
    data = np.moveaxis(right_half_bright((T, 2, H, W)), 1, -1)
    array = zarr.create_array(
        tmp_path / "v2.zarr",
        shape=data.shape,
        dtype=data.dtype,
        zarr_format=2,
        attributes={"_ARRAY_DIMENSIONS": ["t", "y", "x", "c"]},
    )
    array[...] = data
    assert_bright_on_the_right(render_frame(tmp_path / "v2.zarr", channel=1))


def test_render_2d_array_and_open_objects(tmp_path: Path) -> None:
    data = right_half_bright((H, W))
    assert_bright_on_the_right(render_frame(save(tmp_path / "a.zarr", data)))
    assert_bright_on_the_right(render_frame(zarr.open_array(tmp_path / "a.zarr", mode="r")))
    assert_bright_on_the_right(render_frame(data))


def test_render_image_folder(tmp_path: Path) -> None:
    for t, frame in enumerate(right_half_bright(dtype="uint8")):
        iio.imwrite(tmp_path / f"frame{t}.png", frame)
    assert_bright_on_the_right(render_frame(tmp_path, index=4))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"index": 5}, r"index on axis t 5 is out of range .*valid range 0\.\.4", id="index-high"
        ),
        pytest.param({"index": -6}, r"valid range 0\.\.4", id="index-low"),
        pytest.param({"index": (1, 2)}, r"2 values.*1 leading axis", id="too-many-indices"),
        pytest.param({"channel": 0}, r"no channel axis", id="no-channel-axis"),
        pytest.param({"array": "0"}, r"not a group", id="array-name-on-array"),
    ],
)
def test_render_errors_on_a_3d_array(tmp_path: Path, kwargs, message: str) -> None:
    path = save(tmp_path / "a.zarr", right_half_bright(), ("t", "y", "x"))
    with pytest.raises(InputError, match=message):
        render_frame(path, **kwargs)


def test_channel_out_of_range_says_the_valid_range(tmp_path: Path) -> None:
    path = save(tmp_path / "a.zarr", np.zeros((T, 3, H, W), np.uint8))
    with pytest.raises(InputError, match=r"channel 3 is out of range .*valid range 0\.\.2"):
        render_frame(path, channel=3)


def test_index_on_a_single_frame_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="single frame"):
        render_frame(save(tmp_path / "a.zarr", np.zeros((H, W))), index=0)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no such Zarr array or group: .*missing\.zarr"):
        render_frame(tmp_path / "missing.zarr")


def test_folder_that_is_not_zarr_nor_images(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="no image files"):
        render_frame(tmp_path)


def test_group_without_the_array(tmp_path: Path) -> None:
    path = save_group(tmp_path / "g.zarr", np.zeros((H, W)), name="raw")
    with pytest.raises(InputError, match=r"no array '0' \(arrays: 'raw'\)"):
        render_frame(path)


# ----------------------------------------------------------------------------- write_preview


def test_write_preview_png(tmp_path: Path) -> None:
    src = save(tmp_path / "a.zarr", right_half_bright(), ("t", "y", "x"))
    out = write_preview(src, tmp_path / "frame.png", index=2)
    assert out == tmp_path / "frame.png"
    image = iio.imread(out)
    header = image.shape[0] - H
    assert header % LINE_HEIGHT == 0 and header > 0 and image.shape[1] == W and image.dtype == np.uint8
    assert image[:header].max() > 200 and np.median(image[:header]) == 0  # a label, white on black
    frame = image[header:]
    np.testing.assert_array_equal(frame, render_frame(src, index=2))
    assert_bright_on_the_right(frame)


def test_write_preview_side_by_side(tmp_path: Path) -> None:
    src = save(tmp_path / "out.zarr", right_half_bright((T, H - 4, W - 6)), ("t", "y", "x"))
    other = save(tmp_path / "in.zarr", right_half_bright(), ("t", "y", "x"))
    image = iio.imread(write_preview(src, tmp_path / "cmp.png", compare_with=other))
    header = image.shape[0] - H  # the same grid (no OME placement): each panel as it is
    assert image.shape[1] == (W - 6) + PANEL_GAP + W and header > 0
    left, gap, right = (
        image[header:, : W - 6],
        image[:, W - 6 : W - 6 + PANEL_GAP],
        image[header:, W - 6 + PANEL_GAP :],
    )
    np.testing.assert_array_equal(gap, 255)
    assert left[: H - 4].std() > 0 and right.std() > 0
    np.testing.assert_array_equal(left[H - 4 :], 0)  # the shorter panel is padded below
    assert_bright_on_the_right(right)


def test_side_by_side_with_a_taller_left_panel() -> None:
    image = side_by_side(np.full((5, 2), 9, np.uint8), np.full((3, 4), 7, np.uint8))
    assert image.shape == (5, 2 + PANEL_GAP + 4)
    np.testing.assert_array_equal(image[3:, 2 + PANEL_GAP :], 0)


def test_compare_uses_the_channel_only_where_it_exists(tmp_path: Path) -> None:
    output = np.zeros((T, 6, H, W), np.float32)  # six kernel channels, named c
    output[:, 5, :, W // 2 :] = 1.0
    src = save(tmp_path / "out.zarr", output, ("t", "c", "y", "x"))
    rgb = np.moveaxis(right_half_bright((T, 3, H, W)), 1, -1)
    other = save(tmp_path / "in.zarr", rgb, ("t", "y", "x", "c"))
    image = iio.imread(write_preview(src, tmp_path / "cmp.png", channel=5, compare_with=other))[-H:]
    assert_bright_on_the_right(image[:, :W])
    assert_bright_on_the_right(image[:, W + PANEL_GAP :])  # the input's channel 0


def test_compare_index_out_of_range_names_the_comparison(tmp_path: Path) -> None:
    src = save(tmp_path / "out.zarr", right_half_bright((8, H, W)))
    other = save(tmp_path / "in.zarr", right_half_bright())
    with pytest.raises(InputError, match=r"in\.zarr: valid range 0\.\.4"):
        write_preview(src, tmp_path / "cmp.png", index=6, compare_with=other)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        pytest.param("frame.jpg", "must end in .png", id="suffix"),
        pytest.param("no/dir/f.png", "does not exist", id="folder"),
    ],
)
def test_write_preview_output_errors(tmp_path: Path, name: str, message: str) -> None:
    src = save(tmp_path / "a.zarr", right_half_bright())
    with pytest.raises(OutputError, match=message):
        write_preview(src, tmp_path / name)


def test_write_preview_constant_input(tmp_path: Path) -> None:
    src = save(tmp_path / "a.zarr", np.full((T, H, W), 3.0, np.float32))
    image = iio.imread(write_preview(src, tmp_path / "flat.png"))
    np.testing.assert_array_equal(image[-H:], CONSTANT_GREY)


# ----------------------------------------------------------------------------- labels and placement


def test_a_panel_is_labelled_with_its_frame_channel_and_range(tmp_path: Path) -> None:
    data = np.zeros((T, 2, H, W), np.float32)
    data[3, 1] = np.linspace(-2.5, 40.0, H * W).reshape(H, W)
    group = zarr.open_group(tmp_path / "out.zarr", mode="w")
    group.create_array("0", data=data, dimension_names=["t", "c", "y", "x"])
    group.attrs["ome"] = {
        "omero": {"channels": [{"label": "gx"}, {"label": "gy"}]},
        "multiscales": [
            {
                "axes": [
                    {"name": n, "type": t} for n, t in zip("tcyx", ["time", "channel", "space", "space"])
                ],
                "datasets": [
                    {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1, 1]}]}
                ],
            }
        ],
    }
    panel = render_panel(tmp_path / "out.zarr", index=3, channel=1)
    low, high = np.percentile(data[3, 1], [0.5, 99.5])
    assert panel.label == ("out.zarr", "t=3", "gy", f"[{low:.4g}, {high:.4g}]")
    assert render_panel(data, index=-1).label[1:3] == ("t=4", "0")  # unnamed: the index names the channel
    image = labelled([panel])
    assert image.shape[1] == W and (image.shape[0] - H) % LINE_HEIGHT == 0
    np.testing.assert_array_equal(image[-H:], panel.image)
    assert image[:-H].max() > 200 and np.median(image[:-H]) == 0


def test_labels_wrap_to_a_narrow_panel_and_the_panels_stay_aligned() -> None:
    narrow = Panel(np.full((5, 30), 7, np.uint8), ("a-long-source-name.zarr", "t=1", "sobel-x", "[0, 1]"))
    wide = Panel(np.full((3, 400), 9, np.uint8), ("in.zarr", "t=1", "[0, 1]"))
    image = labelled([narrow, wide])
    header = image.shape[0] - 5
    assert header >= 3 * LINE_HEIGHT  # the narrow label takes several lines, the wide one shares them
    np.testing.assert_array_equal(image[header:, :30], 7)
    np.testing.assert_array_equal(
        image[header : header + 3, 30 + PANEL_GAP :], 9
    )  # top-aligned below the header


def test_on_one_grid_draws_the_coarse_panel_over_the_fine_pixels_it_stands_for() -> None:
    coarse = Panel(np.arange(1, 7, dtype=np.uint8).reshape(2, 3), ("out",), (2.0, 3.0), (1.0, 1.0))
    fine = Panel(np.zeros((6, 9), np.uint8), ("in",), (1.0, 1.0), (0.0, 0.0))
    resampled, same = on_one_grid(coarse, fine)
    assert same is fine and resampled.scale == (1.0, 1.0)
    # Output pixel (i, j) is centred on input pixel (1 + 2 i, 1 + 3 j); nearest wins, ties upwards.
    expected = np.zeros((6, 9), np.uint8)
    for r in range(6):
        for c in range(9):
            i, j = int(np.floor((r - 1) / 2 + 0.5)), int(np.floor((c - 1) / 3 + 0.5))
            if 0 <= i < 2 and 0 <= j < 3:
                expected[r, c] = coarse.image[i, j]
    np.testing.assert_array_equal(resampled.image, expected)
    assert on_one_grid(fine, fine) == [fine, fine]


def test_compare_draws_a_strided_output_at_the_input_scale(tmp_path: Path) -> None:
    data = right_half_bright((T, 2 * H, 2 * W), "uint8")
    zarr.open_group(tmp_path / "in.zarr", mode="w").create_array(
        "0", data=data, dimension_names=["t", "y", "x"]
    )
    convpipe.run(
        {
            "input": {"path": str(tmp_path / "in.zarr")},
            "kernels": "sobel",
            "combine": "none",
            "stride": 2,
            "output": {"path": str(tmp_path / "out.zarr")},
        },
        progress=False,
    )
    output = zarr.open_group(tmp_path / "out.zarr", mode="r")["0"][...]  # (T, 2, Ho, Wo)
    image = iio.imread(
        write_preview(
            tmp_path / "out.zarr", tmp_path / "cmp.png", index=1, channel=1, compare_with=tmp_path / "in.zarr"
        )
    )
    height, width = data.shape[1:]
    assert image.shape[1] == 2 * width + PANEL_GAP  # the output drawn as wide as the input
    header = image.shape[0] - height
    left, right = image[header:, :width], image[header:, width + PANEL_GAP :]
    np.testing.assert_array_equal(right, stretch_to_uint8(data[1]))
    kernel = stretch_to_uint8(output[1, 1])
    ho, wo = kernel.shape
    # Window centre of output pixel i: input pixel 2 i + 1; it covers input pixels 2 i and 2 i + 1.
    np.testing.assert_array_equal(left[: 2 * ho, : 2 * wo], np.repeat(np.repeat(kernel, 2, 0), 2, 1))
    np.testing.assert_array_equal(left[2 * ho :], 0)
    np.testing.assert_array_equal(left[:, 2 * wo :], 0)
