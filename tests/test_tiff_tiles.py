"""Tiled TIFF inputs read tile by tile: values, axes, which tiles a task decodes, damaged tiles.

Real files written with tifffile (tiles of 256 × 256): a 2-D image, a
multi-page stack, RGB with samples per pixel (interleaved and planar), an
OME-TIFF with named axes and a pyramidal OME-TIFF (level 0 is read). The
reference is the same file read whole by ``tifffile.imread``, correlated by
``tests/reference.py``. Which tiles a read decodes is shown with the file
itself: every tile outside a region is overwritten with bytes that cannot be
decoded, and the region still reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import pytest
import tifffile
from helpers import assert_user_error, invoke, make_config, read_output, run_in_process
from reference import SOBEL, correlate_scipy, magnitude

import convpipe
from convpipe.errors import InputError
from convpipe.inputs import open_input

TILE = (256, 256)
H, W = 300, 520  # 2 × 3 tiles, the last row and column partial
RNG = np.random.default_rng(15)


def pixels(*shape: int, dtype: str = "uint16") -> np.ndarray:
    return RNG.integers(0, 4000 if dtype == "uint16" else 256, size=shape, dtype=dtype)


@dataclass(frozen=True)
class TiffCase:
    """How to write one kind of TIFF file, and what convpipe must make of it."""

    write: dict
    data: np.ndarray
    names: tuple[str, ...]
    channels_last: bool = False
    """The file stores samples first (planar): the stack has them last."""
    leading: int = 0
    """Leading axes added by convpipe (one frame axis ``t`` for a single plain page)."""


def _cases() -> dict[str, TiffCase]:
    grey = {"photometric": "minisblack"}
    return {
        "2-D": TiffCase(grey, pixels(H, W), ("t", "y", "x"), leading=1),
        "stack": TiffCase(grey, pixels(5, H, W), ("t", "y", "x")),
        "rgb": TiffCase({"photometric": "rgb"}, pixels(H, W, 3, dtype="uint8"), ("t", "y", "x", "c"), leading=1),
        "rgb-planar": TiffCase(
            {"photometric": "rgb", "planarconfig": "separate"},
            pixels(3, H, W, dtype="uint8"),
            ("t", "y", "x", "c"),
            channels_last=True,
            leading=1,
        ),
        "ome-zcyx": TiffCase({**grey, "metadata": {"axes": "ZCYX"}}, pixels(3, 2, H, W), ("z", "c", "y", "x")),
        "ome-tyxs": TiffCase(
            {"photometric": "rgb", "metadata": {"axes": "TYXS"}}, pixels(2, H, W, 3, dtype="uint8"), ("t", "y", "x", "c")
        ),
    }


CASES = _cases()


def write_case(folder: Path, case: TiffCase, compression: str | None = None) -> Path:
    suffix = ".ome.tif" if "metadata" in case.write else ".tif"
    path = folder / f"image{suffix}"
    tifffile.imwrite(path, case.data, tile=TILE, compression=compression, **case.write)
    return path


def as_stack(case: TiffCase, whole: np.ndarray) -> np.ndarray:
    """The array convpipe should present, from the file read whole by tifffile."""
    if case.channels_last:
        whole = np.moveaxis(whole, 0, -1)
    return whole.reshape((1,) * case.leading + whole.shape)


def sobel_of(stack: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """Sobel magnitude with channels summed: frames (batch, C, H, W) through the reference."""
    if "c" in names:
        stack = np.moveaxis(stack, names.index("c"), -3)
    else:
        stack = stack[..., None, :, :]
    bank = np.repeat(SOBEL, stack.shape[-3], axis=1)
    return magnitude(correlate_scipy(stack, bank, (1, 1)))


def explicit_chunks(shape: tuple[int, ...], chunks: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(min(c, n - i) for i in range(0, n, c)) for n, c in zip(shape, chunks))


@pytest.mark.parametrize("name", list(CASES))
def test_tiled_tiff_reads_as_the_file_read_whole(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    path = write_case(tmp_path, case, compression="zlib")
    expected = as_stack(case, tifffile.imread(path))
    stack = open_input(str(path))
    assert stack.shape == expected.shape and stack.dtype == expected.dtype
    assert [a.name for a in stack.axes.axes] == list(case.names)
    y = case.names.index("y")
    assert stack.stored_chunks[y : y + 2] == TILE
    # regions that cut across tiles, one frame or several per block
    for chunks in ((1,) * (len(stack.shape) - 2) + (100, 150), stack.shape[:-2] + (300, 300)):
        blocks = stack.to_dask(explicit_chunks(stack.shape, chunks))
        np.testing.assert_array_equal(blocks.compute(), expected)


@pytest.mark.parametrize("name", ["2-D", "stack", "rgb-planar", "ome-zcyx", "ome-tyxs"])
def test_pipeline_on_a_tiled_tiff_equals_the_reference(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    path = write_case(tmp_path, case)
    expected = sobel_of(as_stack(case, tifffile.imread(path)), case.names)
    run_in_process(path, tmp_path / "out.zarr", chunks=(128, 192))
    np.testing.assert_allclose(read_output(tmp_path / "out.zarr"), expected, rtol=1e-6, atol=1e-9)


def test_pyramidal_ome_tiff_reads_level_zero(tmp_path: Path) -> None:
    image = pixels(2, H, W)
    path = tmp_path / "pyramid.ome.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=TILE, subifds=1, metadata={"axes": "CYX"}, photometric="minisblack")
        tif.write(image[:, ::2, ::2], tile=TILE, subfiletype=1, photometric="minisblack")
    stack = open_input(str(path))
    assert stack.shape == (2, H, W)
    assert [a.name for a in stack.axes.axes] == ["c", "y", "x"]
    run_in_process(path, tmp_path / "out.zarr")
    np.testing.assert_allclose(read_output(tmp_path / "out.zarr"), sobel_of(image, ("c", "y", "x")), rtol=1e-6, atol=1e-9)


def test_rgb_samples_are_labelled_channels(tmp_path: Path) -> None:
    stack = open_input(str(write_case(tmp_path, CASES["rgb"])))
    assert stack.axes.channel_labels == ("R", "G", "B")
    assert stack.axes.axes[-1].type == "channel"


def damage_tiles_except(path: Path, page: int, keep: set[int]) -> None:
    """Overwrite every tile of ``page`` except those numbered in ``keep`` with undecodable bytes."""
    with tifffile.TiffFile(path) as tif:
        segments = list(zip(tif.pages[page].dataoffsets, tif.pages[page].databytecounts))
    with open(path, "r+b") as file:
        for number, (offset, size) in enumerate(segments):
            if number not in keep:
                file.seek(offset)
                file.write(b"\xff" * size)


def test_a_read_decodes_only_the_tiles_under_its_region(tmp_path: Path) -> None:
    image = pixels(2, 768, 768)
    path = tmp_path / "tiles.tif"
    tifffile.imwrite(path, image, tile=TILE, compression="zlib", photometric="minisblack")
    damage_tiles_except(path, page=1, keep={4})  # page 1: only its centre tile (256:512, 256:512) is intact
    stack = open_input(str(path))
    np.testing.assert_array_equal(stack.source[1:2, 300:500, 260:510], image[1:2, 300:500, 260:510])
    blocks = stack.to_dask(explicit_chunks(stack.shape, (1, 256, 256)))
    np.testing.assert_array_equal(blocks.blocks[1, 1, 1].compute(), image[1:2, 256:512, 256:512])
    np.testing.assert_array_equal(blocks[0].compute(), image[0])  # page 0 is untouched
    with pytest.raises(InputError, match=r"cannot read page 1 of .*tiles\.tif"):
        blocks.blocks[1, 0, 1].compute()


def test_a_striped_page_is_decoded_once_whatever_the_tiling(tmp_path: Path) -> None:
    """One strip per page cannot be read in parts: each page is read once and split by Dask."""
    image = pixels(3, H, W)
    path = tmp_path / "striped.tif"
    tifffile.imwrite(path, image, photometric="minisblack", rowsperstrip=H, compression="zlib")
    stack = open_input(str(path))
    assert stack.stored_chunks == (1, H, W)
    blocks = stack.to_dask(explicit_chunks(stack.shape, (1, 100, 100)))
    reads = [key for key in dict(blocks.__dask_graph__()) if isinstance(key, tuple) and key[0].startswith("tiff-")]
    assert len(reads) == 3
    np.testing.assert_array_equal(blocks.compute(), image)


def test_stack_reads_in_worker_processes(tmp_path: Path) -> None:
    """Nothing unpicklable in the graph: each process opens the file itself."""
    case = CASES["ome-zcyx"]
    path = write_case(tmp_path, case)
    stack = open_input(str(path))
    with dask.config.set(scheduler="processes", num_workers=2):
        blocks = stack.to_dask(explicit_chunks(stack.shape, (1, 2, 128, 256)))
        np.testing.assert_array_equal(blocks.compute(), tifffile.imread(path))


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_truncated_tile_is_one_line_naming_the_file(tmp_path: Path, compression: str | None) -> None:
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, pixels(2, H, W), tile=TILE, compression=compression, photometric="minisblack")
    with tifffile.TiffFile(path) as tif:
        last = tif.pages[-1]
        cut = last.dataoffsets[-1] + last.databytecounts[-1] // 2
    os.truncate(path, cut)
    result = invoke("run", make_config(tmp_path / "run.yaml", path, tmp_path / "out.zarr"))
    assert_user_error(result, "input.path", "page 1", str(path))


def test_corrupt_tile_is_one_line_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.tif"
    tifffile.imwrite(path, pixels(H, W), tile=TILE, compression="zlib", photometric="minisblack")
    damage_tiles_except(path, page=0, keep={0, 1, 2, 3, 4})
    result = invoke("run", make_config(tmp_path / "run.yaml", path, tmp_path / "out.zarr"))
    assert_user_error(result, "input.path", "page 0", str(path))


def test_rewritten_tiff_changes_the_input_identity(tmp_path: Path) -> None:
    """Resume fingerprints: the same file name with other pixels is another input."""
    path = write_case(tmp_path, CASES["stack"])
    before = open_input(str(path)).identity()
    tifffile.imwrite(path, CASES["stack"].data[::-1], tile=TILE, photometric="minisblack")
    after = open_input(str(path)).identity()
    assert before["files"] != after["files"]
    assert before["sampled_content"] != after["sampled_content"]


def test_ome_physical_sizes_and_channel_names_reach_the_output(tmp_path: Path) -> None:
    image = pixels(3, 2, H, W)
    path = tmp_path / "sized.ome.tif"
    metadata = {
        "axes": "ZCYX",
        "PhysicalSizeX": 0.5,
        "PhysicalSizeXUnit": "nm",
        "PhysicalSizeY": 0.5,
        "PhysicalSizeYUnit": "nm",
        "PhysicalSizeZ": 2.0,
        "Channel": {"Name": ["DAPI", "GFP"]},
    }
    tifffile.imwrite(path, image, tile=TILE, photometric="minisblack", metadata=metadata)
    out = tmp_path / "out.zarr"
    config = {"input": {"path": str(path)}, "kernels": "sobel", "channels": "each", "combine": "magnitude"}
    convpipe.run({**config, "output": {"path": str(out)}}, progress=False)
    result = convpipe.open_output(str(out))
    assert result.dims == ("c", "z", "y", "x")
    assert list(result.coords["c"].values) == ["DAPI", "GFP"]
    assert result.coords["z"].attrs["units"] == "micrometer"  # OME's default unit of PhysicalSizeZ
    assert result.coords["x"].attrs["units"] == "nanometer"
    np.testing.assert_allclose(result.coords["z"].values, [0.0, 2.0, 4.0])
    np.testing.assert_allclose(result.coords["x"].values[:2], [0.5, 1.0])  # window centres, 0.5 nm apart
    expected = np.stack([sobel_of(image[:, c], ("z", "y", "x")) for c in range(2)])
    np.testing.assert_allclose(result.values, expected, rtol=1e-6, atol=1e-9)


LAYOUTS = {
    "tiles-zlib-predictor": {"tile": (32, 48), "compression": "zlib", "predictor": True},
    "tiles-uncompressed": {"tile": (32, 48)},
    "strips-zlib": {"rowsperstrip": 7, "compression": "zlib"},
    "strips-uncompressed": {"rowsperstrip": 7},
    "tiles-planar-rgb": {"tile": (16, 16), "compression": "zlib", "planarconfig": "separate"},
    "tiles-rgb": {"tile": (16, 32), "compression": "zlib"},
}


LAYOUT_CASES = [
    pytest.param(layout, dtype, id=f"{layout}-{dtype}")
    for layout in LAYOUTS
    for dtype in ["uint8", "int16", "float32"]
    if not ("rgb" in layout and dtype != "uint8")  # tifffile writes RGB as uint8
    and not ("predictor" in layout and dtype == "float32")  # a float predictor needs imagecodecs
]


@pytest.mark.parametrize(("layout", "dtype"), LAYOUT_CASES)
def test_any_region_of_any_layout_equals_the_whole_read(tmp_path: Path, layout: str, dtype: str) -> None:
    colour, planar = "rgb" in layout, "planar" in layout
    shape = (3, 70, 90, 3) if colour else (3, 70, 90)
    data = RNG.normal(100, 40, size=shape).astype(dtype)
    photometric = "rgb" if colour else "minisblack"
    path = tmp_path / "layout.tif"
    tifffile.imwrite(path, np.moveaxis(data, -1, 1) if planar else data, photometric=photometric, **LAYOUTS[layout])
    whole = np.moveaxis(tifffile.imread(path), 1, -1) if planar else tifffile.imread(path)
    np.testing.assert_array_equal(whole, data)
    stack = open_input(str(path))
    assert stack.shape == whole.shape
    for _ in range(40):
        region = tuple(slice(int(a), int(b)) for a, b in (sorted(RNG.integers(0, n + 1, 2)) for n in shape))
        np.testing.assert_array_equal(stack.source[region], whole[region])
    np.testing.assert_array_equal(stack.source[1, 5:60:3, ::4], whole[1, 5:60:3, ::4])
