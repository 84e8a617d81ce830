"""Channels and axes read from the data, never guessed; units and positions carried to the output.

Real files throughout: PNG folders, convpipe's own ingested Zarr, a TIFF with
samples per pixel, an OME-Zarr with units, xarray-written Zarr; values
against the reference loop of ``tests/reference.py``.
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import xarray as xr
import zarr
from helpers import assert_user_error, invoke
from reference import correlate_loop, magnitude

import convpipe
from convpipe.ingest import ingest
from convpipe.kernels import BUILTIN_BANKS

SOBEL = BUILTIN_BANKS["sobel"].weights  # (2, 1, 3, 3)
RNG = np.random.default_rng(14)


def rgb_frames(n: int = 2, h: int = 20, w: int = 24) -> np.ndarray:
    return RNG.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def run(tmp_path: Path, source: Path, **top) -> xr.DataArray:
    """Run Sobel on ``source`` with the config ``top`` keys; the output opened by ``convpipe.open_output``."""
    out = tmp_path / "out.zarr"
    config = {"input": {"path": str(source)}, "kernels": "sobel", "output": {"path": str(out)}, **top}
    convpipe.run(config, progress=False)
    return convpipe.open_output(str(out))


def summed_reference(frames_thwc: np.ndarray, stride=(1, 1)) -> np.ndarray:
    """Sobel responses of every frame, summed over its colour channels: (T, K, Ho, Wo)."""
    x = np.moveaxis(frames_thwc, -1, -3)  # (T, C, H, W)
    w = np.repeat(SOBEL, x.shape[-3], axis=1)
    return correlate_loop(x, w, stride)


def test_an_rgb_png_folder_sums_its_colour_channels(tmp_path: Path) -> None:
    frames = rgb_frames()
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, frame in enumerate(frames):
        iio.imwrite(folder / f"frame{i}.png", frame)
    result = run(tmp_path, folder)
    assert result.dims == ("t", "c", "y", "x")
    assert result.shape == (2, 2, 18, 22)
    np.testing.assert_array_equal(result.values, summed_reference(frames))


def test_convpipe_ingested_rgb_zarr_reads_its_channel_axis(tmp_path: Path) -> None:
    frames = rgb_frames()
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, frame in enumerate(frames):
        iio.imwrite(folder / f"f{i}.png", frame)
    ingest(folder, tmp_path / "stack.zarr", progress=False)
    result = run(tmp_path, tmp_path / "stack.zarr", combine="magnitude")
    assert result.dims == ("t", "y", "x")
    np.testing.assert_allclose(result.values, magnitude(summed_reference(frames)), rtol=1e-6)


def test_a_tiff_with_samples_per_pixel_is_one_colour_image(tmp_path: Path) -> None:
    """Three uint8 planes written as one RGB page: one frame of three channels, not three frames."""
    planes = RNG.integers(0, 256, size=(3, 20, 24), dtype=np.uint8)
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, planes, photometric="rgb", planarconfig="separate")
    result = run(tmp_path, path)
    assert result.shape == (1, 2, 18, 22)
    np.testing.assert_array_equal(result.values, summed_reference(np.moveaxis(planes, 0, -1)[None]))


@pytest.mark.parametrize("command", ["validate", "run"])
def test_an_unnamed_colour_like_input_is_refused_in_one_line(tmp_path: Path, command: str) -> None:
    zarr.create_array(str(tmp_path / "in.zarr"), data=rgb_frames())  # (2, 20, 24, 3), no names
    config = tmp_path / "config.yaml"
    config.write_text(f"input:\n  path: in.zarr\nkernels: sobel\noutput:\n  path: {tmp_path / 'out.zarr'}\n")
    assert_user_error(invoke(command, config), "input.axes:", "names no axes", "tyxc", "input.channel_axis")
    assert not (tmp_path / "out.zarr").exists()


def test_naming_the_axes_of_an_unnamed_input_unlocks_it(tmp_path: Path) -> None:
    frames = rgb_frames()
    zarr.create_array(str(tmp_path / "in.zarr"), data=frames)
    result = run(tmp_path, tmp_path / "in.zarr", input={"path": str(tmp_path / "in.zarr"), "axes": "tyxc"})
    np.testing.assert_array_equal(result.values, summed_reference(frames))


def write_ome_zyx(path: Path, data: np.ndarray, version: str) -> None:
    """An OME-NGFF image: z, y, x in micrometres, voxels 2 x 0.5 x 0.25 µm, offset (1, 10, 20) µm."""
    axes = [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
    transforms = [
        {"type": "scale", "scale": [2.0, 0.5, 0.25]},
        {"type": "translation", "translation": [1.0, 10.0, 20.0]},
    ]
    multiscale = {"axes": axes, "datasets": [{"path": "0", "coordinateTransformations": transforms}]}
    if version == "0.5":
        group = zarr.open_group(str(path), mode="w", zarr_format=3)
        group.attrs["ome"] = {"version": "0.5", "multiscales": [multiscale]}
        group.create_array("0", data=data, dimension_names=["z", "y", "x"])
    else:
        group = zarr.open_group(str(path), mode="w", zarr_format=2)
        group.attrs["multiscales"] = [{**multiscale, "version": "0.4"}]
        group.create_array("0", data=data)


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_a_zyx_ome_zarr_keeps_names_types_units_scaled_by_the_stride(tmp_path: Path, version: str) -> None:
    data = RNG.integers(0, 1000, size=(3, 21, 25), dtype=np.uint16)
    write_ome_zyx(tmp_path / "in.ome.zarr", data, version)
    result = run(tmp_path, tmp_path / "in.ome.zarr", stride=2, combine="magnitude")
    ome = zarr.open_group(str(tmp_path / "out.zarr"), mode="r").attrs["ome"]
    [multiscale] = ome["multiscales"]
    assert multiscale["axes"] == [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
    [scale] = multiscale["datasets"][0]["coordinateTransformations"]
    translation = multiscale["coordinateTransformations"][1]  # applied after the dataset's scale
    assert scale["scale"] == [2.0, 1.0, 0.5]  # input voxel x stride (z is not strided)
    assert translation["translation"] == [1.0, 10.0 + 0.5 * 1, 20.0 + 0.25 * 1]  # the 3x3 window's centre
    assert result.dims == ("z", "y", "x")
    np.testing.assert_allclose(result["y"].values, 10.5 + np.arange(10) * 1.0)
    np.testing.assert_allclose(result["x"].values, 20.25 + np.arange(12) * 0.5)
    assert result["x"].attrs["units"] == "micrometer"
    np.testing.assert_allclose(result["z"].values, [1.0, 3.0, 5.0])
    expected = magnitude(correlate_loop(data[:, None], SOBEL, (2, 2)))
    np.testing.assert_allclose(result.values, expected, rtol=1e-6)


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_an_xarray_written_zarr_keeps_its_dim_names(tmp_path: Path, zarr_format: int) -> None:
    data = RNG.integers(0, 100, size=(3, 2, 20, 24)).astype(np.float32)  # z, channel, y, x
    xr.DataArray(data, dims=("z", "channel", "y", "x"), name="image").to_dataset().to_zarr(
        tmp_path / "in.zarr", zarr_format=zarr_format, consolidated=False
    )
    source = {"path": str(tmp_path / "in.zarr"), "array": "image"}
    result = run(tmp_path, tmp_path / "in.zarr", input=source, combine="none")
    assert result.dims == ("c", "z", "y", "x")  # OME order: the kernel axis before z
    expected = correlate_loop(data, np.repeat(SOBEL, 2, axis=1), (1, 1))  # channels summed
    np.testing.assert_array_equal(result.values, np.moveaxis(expected, 1, 0))
    axes = zarr.open_group(str(tmp_path / "out.zarr"), mode="r").attrs.asdict()
    axes = (axes.get("ome") or axes)["multiscales"][0]["axes"]
    assert [(a["name"], a["type"]) for a in axes] == [
        ("c", "channel"),
        ("z", "space"),
        ("y", "space"),
        ("x", "space"),
    ]


def test_channels_each_with_combine_none_labels_channel_and_kernel(tmp_path: Path) -> None:
    frames = rgb_frames()
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, frame in enumerate(frames):
        iio.imwrite(folder / f"frame{i}.png", frame)
    result = run(tmp_path, folder, channels="each", stride=[1, 2])
    labels = [f"{c}/{k}" for c in "RGB" for k in ("sobel-x", "sobel-y")]
    assert result.dims == ("t", "c", "y", "x")
    assert list(result["c"].values) == labels
    x = np.moveaxis(frames, -1, -3)[:, :, None]  # (T, C, 1, H, W): each channel alone
    expected = correlate_loop(x, SOBEL, (1, 2))  # (T, C, K, Ho, Wo)
    np.testing.assert_array_equal(result.values, expected.reshape(2, 6, *expected.shape[-2:]))


def test_channels_each_with_magnitude_gives_one_map_per_channel(tmp_path: Path) -> None:
    frames = rgb_frames()
    zarr.open_group(str(tmp_path / "in.zarr"), mode="w").create_array(
        "0", data=frames, dimension_names=["t", "y", "x", "c"]
    )
    result = run(tmp_path, tmp_path / "in.zarr", channels="each", combine="magnitude")
    assert result.dims == ("t", "c", "y", "x")
    assert list(result["c"].values) == ["0", "1", "2"]
    x = np.moveaxis(frames, -1, -3)[:, :, None]
    np.testing.assert_allclose(result.values, magnitude(correlate_loop(x, SOBEL, (1, 1))), rtol=1e-6)
    [multiscale] = zarr.open_group(str(tmp_path / "out.zarr"), mode="r").attrs["ome"]["multiscales"]
    assert [a["type"] for a in multiscale["axes"]] == ["time", "channel", "space", "space"]


def test_channels_each_needs_a_channel_axis(tmp_path: Path, sample_zarr: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"input:\n  path: {sample_zarr}\nkernels: sobel\nchannels: each\noutput:\n  path: {tmp_path / 'o.zarr'}\n"
    )
    assert_user_error(invoke("validate", config), "channels:", "no channel axis")


def test_validate_and_inspect_print_roles_and_units(tmp_path: Path) -> None:
    data = RNG.integers(0, 1000, size=(3, 21, 25), dtype=np.uint16)
    write_ome_zyx(tmp_path / "in.ome.zarr", data, "0.5")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"input:\n  path: {tmp_path / 'in.ome.zarr'}\nkernels: sobel\nstride: 2\noutput:\n  path: {tmp_path / 'o.zarr'}\n"
    )
    plan_text = invoke("validate", config).stdout
    assert "z batch (3, 2 micrometer)  y spatial (21, 0.5 micrometer)" in plan_text
    assert "[names from OME-NGFF]" in plan_text
    report = invoke("inspect", tmp_path / "in.ome.zarr").stdout
    assert "z batch (2 micrometer)  y spatial (0.5 micrometer)  x spatial (0.25 micrometer)" in report


REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_the_shipped_configs_plan_on_the_shipped_data(name: str) -> None:
    plan = convpipe.plan(REPO / "configs" / name)
    expected = {"rgb-multichannel.yaml": 3}.get(name)
    assert plan.axes.channel_axis == expected
    assert plan.dimension_names[0] == "t"


def test_the_rgb_sample_needs_no_channel_axis_key(tmp_path: Path) -> None:
    text = (REPO / "configs" / "rgb-multichannel.yaml").read_text().replace("  channel_axis: 3\n", "")
    text = text.replace("../data/", f"{REPO}/data/").replace("../out/", f"{tmp_path}/")
    config = tmp_path / "rgb.yaml"
    config.write_text(text)
    plan = convpipe.plan(config)
    assert plan.axes.channel_axis == 3 and plan.geometry.channels == 3
