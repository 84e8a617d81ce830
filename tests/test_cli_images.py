"""Image files through the real pipeline, and the ``ingest``, ``inspect`` and
``preview`` commands, as a user runs them.

Runs on image sources (PNG folder, glob, multi-page TIFF, RGB PNG folder)
must give the same bits as the same run on the ingested Zarr stack, and the
SciPy result. The commands go through ``typer.testing.CliRunner``; two tests
run the installed ``convpipe`` console script as a real subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import yaml
import zarr
from helpers import assert_ok, assert_user_error, invoke, read_output, run_config, write_yaml
from reference import SOBEL, correlate_scipy

from convpipe.completion import MARKER_FOLDER
from convpipe.preview import LINE_HEIGHT, PANEL_GAP, stretch_to_uint8
from convpipe.sample import sample_stack

FRAMES, HEIGHT, WIDTH = 3, 20, 26
CONVPIPE = Path(sys.executable).parent / "convpipe"  # the installed console script


def grey_frames() -> np.ndarray:
    return sample_stack(FRAMES, HEIGHT, WIDTH)


def rgb_frames() -> np.ndarray:
    return np.stack([sample_stack(FRAMES, HEIGHT, WIDTH, seed=s) for s in range(3)], axis=-1)


def write_pngs(folder: Path, frames: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        iio.imwrite(folder / f"frame{i}.png", frame)
    return folder


def read_png(path: Path) -> np.ndarray:
    image = iio.imread(path)
    assert image.dtype == np.uint8 and image.ndim == 2
    assert image.std() > 0, "blank preview"
    return image


def image_config(
    path: Path, source: str | Path, output: Path, source_case: Source | None = None, **options
) -> Path:
    """A YAML run config at ``path``: stride (1, 2), combine none, float64, whole frames unless told so.

    ``source_case`` gives the kernels and further input keys of an image source.
    """
    options = {"stride": [1, 2], "combine": "none", "dtype": "float64", "chunks": None, **options}
    if source_case is not None:
        options["kernels"] = yaml.safe_load(source_case.kernels)
    config = run_config(source, output, **options)
    if source_case is not None:
        config["input"].update(source_case.input_options)
    return write_yaml(path, config)


# --------------------------------------------------------------------------- image sources, end to end

RGB_KERNEL = """
  - name: red-minus-blue-dx
    weights:
      - [[-1, 1], [-1, 1]]
      - [[0, 0], [0, 0]]
      - [[1, -1], [1, -1]]
  - name: green-dy
    weights:
      - [[0, 0], [0, 0]]
      - [[-1, -1], [1, 2]]
      - [[0, 0], [0, 0]]"""


@dataclass(frozen=True)
class Source:
    make: Callable[[Path], str]  # writes the files under a folder, returns input.path
    frames: Callable[[], np.ndarray]  # (N, H, W) or (N, H, W, 3)
    kernels: str = "sobel"  # YAML
    input_options: dict = field(default_factory=dict)  # further input keys


def _multipage_tiff(folder: Path) -> str:
    path = folder / "stack.tif"
    tifffile.imwrite(path, grey_frames(), photometric="minisblack")  # one page per frame
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == FRAMES
    return str(path)


SOURCES = {
    "png-folder": Source(lambda d: str(write_pngs(d / "frames", grey_frames())), grey_frames),
    "png-glob": Source(lambda d: str(write_pngs(d / "frames", grey_frames()) / "frame*.png"), grey_frames),
    "multipage-tiff": Source(_multipage_tiff, grey_frames),
    "rgb-pngs-2d-kernel-summed-over-channels": Source(
        lambda d: str(write_pngs(d / "frames", rgb_frames())), rgb_frames, input_options={"channel_axis": 3}
    ),
    "rgb-pngs-3d-kernel": Source(
        lambda d: str(write_pngs(d / "frames", rgb_frames())), rgb_frames, RGB_KERNEL, {"channel_axis": 3}
    ),
}


@pytest.mark.parametrize("source", SOURCES.values(), ids=SOURCES.keys())
def test_image_source_run_equals_ingested_run_and_scipy(tmp_path: Path, source: Source) -> None:
    input_path = source.make(tmp_path)
    frames = source.frames()

    direct = tmp_path / "direct.zarr"
    assert_ok(invoke("run", image_config(tmp_path / "images.yaml", input_path, direct, source), "-q"))

    # The same run on the ingested stack, stored in tiles unlike the one-frame image chunks.
    ingested = tmp_path / "ingested.zarr"
    assert_ok(invoke("ingest", input_path, ingested, "--chunks", "2,8,8", "-q"))
    np.testing.assert_array_equal(read_output(ingested), frames)
    via_zarr = tmp_path / "via-zarr.zarr"
    assert_ok(invoke("run", image_config(tmp_path / "zarr.yaml", ingested, via_zarr, source), "-q"))

    result = read_output(direct)
    assert result.tobytes() == read_output(via_zarr).tobytes()

    channels_first = frames[:, None] if frames.ndim == 3 else np.moveaxis(frames, -1, 1)
    if source.kernels == "sobel":
        weights = np.repeat(SOBEL, channels_first.shape[1], axis=1)
    else:
        weights = np.array([kernel["weights"] for kernel in yaml.safe_load(source.kernels)], dtype=float)
    expected = correlate_scipy(channels_first, weights, (1, 2))
    assert result.shape == expected.shape
    np.testing.assert_array_equal(result, expected)  # integer data, float64 sums: exact


# --------------------------------------------------------------------------- ingest


def test_ingest_writes_a_chunked_stack_with_a_progress_bar(tmp_path: Path) -> None:
    frames = grey_frames()
    folder = write_pngs(tmp_path / "frames", frames)
    result = assert_ok(invoke("ingest", folder, tmp_path / "stack.zarr", "--chunks", "1,16,16"))
    assert f"{FRAMES}/{FRAMES}" in result.stderr and "100%" in result.stderr  # tqdm's bar
    array = zarr.open_group(str(tmp_path / "stack.zarr"), mode="r")["0"]
    assert array.chunks == (1, 16, 16)
    assert array.metadata.dimension_names == ("t", "y", "x")
    np.testing.assert_array_equal(array[...], frames)


def test_ingest_refuses_an_existing_dest_until_overwrite(tmp_path: Path) -> None:
    frames = grey_frames()
    dest = tmp_path / "stack.zarr"
    assert_ok(invoke("ingest", write_pngs(tmp_path / "a", frames), dest, "-q"))
    before = sorted(p.relative_to(dest) for p in dest.rglob("*"))

    other = write_pngs(tmp_path / "b", frames[::-1])
    assert_user_error(invoke("ingest", other, dest), str(dest), "already exists", "--overwrite")
    assert sorted(p.relative_to(dest) for p in dest.rglob("*")) == before
    np.testing.assert_array_equal(read_output(dest), frames)  # untouched

    assert_ok(invoke("ingest", other, dest, "--overwrite", "-q"))
    np.testing.assert_array_equal(read_output(dest), frames[::-1])


def test_ingest_names_the_frame_whose_shape_differs(tmp_path: Path) -> None:
    folder = write_pngs(tmp_path / "frames", grey_frames())
    iio.imwrite(folder / "frame9.png", np.zeros((HEIGHT + 1, WIDTH), np.uint8))
    assert_user_error(
        invoke("ingest", folder, tmp_path / "stack.zarr"), "frame9.png", str((HEIGHT + 1, WIDTH))
    )
    assert not (tmp_path / "stack.zarr").exists()


def test_ingest_refuses_bad_chunks(tmp_path: Path) -> None:
    folder = write_pngs(tmp_path / "frames", grey_frames())
    assert_user_error(invoke("ingest", folder, tmp_path / "stack.zarr", "--chunks", "1,0,16"), "--chunks")
    assert not (tmp_path / "stack.zarr").exists()


def test_ingest_console_script(tmp_path: Path) -> None:
    frames = grey_frames()
    folder = write_pngs(tmp_path / "frames", frames)
    done = subprocess.run(
        [str(CONVPIPE), "ingest", str(folder), "stack.zarr", "--chunks", "1,16,16"],
        cwd=tmp_path,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote (3, 20, 26) uint8 chunks (1, 16, 16)" in done.stderr
    np.testing.assert_array_equal(read_output(tmp_path / "stack.zarr"), frames)


# --------------------------------------------------------------------------- inspect


@pytest.fixture
def sobel_output(tmp_path: Path, sample_zarr: Path) -> Path:
    """A finished combine-none Sobel run on the (4, 32, 40) sample, in blocks of about 16x16 pixels."""
    out = tmp_path / "out.zarr"
    config = image_config(tmp_path / "run.yaml", sample_zarr, out, stride=1, chunks=(16, 16))
    assert_ok(invoke("run", config, "-q"))
    return out


def fields(text: str) -> dict[str, str]:
    """``inspect`` text output as {first word: rest of the line}."""
    return dict(line.split(None, 1) for line in text.splitlines())


def test_inspect_reports_a_finished_output(sobel_output: Path, sample_zarr: Path) -> None:
    array = zarr.open_group(str(sobel_output), mode="r")["0"]
    report = fields(assert_ok(invoke("inspect", sobel_output)).stdout)
    assert report["shape"] == str(array.shape) == "(4, 2, 30, 38)"
    assert report["dims"] == "['t', 'c', 'y', 'x']"
    assert report["dtype"] == "float64"
    assert report["chunks"] == str(array.chunks)
    assert report["codec"] == "BloscCodec(lz4, bitshuffle)"
    assert report["size"].endswith("on disk, 71.2 KiB in memory")  # 4*2*30*38*8 bytes
    assert report["status"] == "complete"
    assert report["kernels"] == "sobel-x, sobel-y"
    assert report["input"].startswith(f"{sample_zarr}  shape [4, 32, 40]  dtype uint8")
    assert report["written"].startswith("by  convpipe ")


@pytest.mark.parametrize("where", ["group", "array"])
def test_inspect_reports_an_incomplete_output(sobel_output: Path, where: str) -> None:
    markers = sorted((sobel_output / MARKER_FOLDER).iterdir())
    total = len(markers)
    assert total > 1
    markers[0].unlink()
    array = zarr.open_group(str(sobel_output), mode="r+")["0"]
    array.attrs["convpipe"] = {**array.attrs["convpipe"], "complete": False}

    path = sobel_output if where == "group" else sobel_output / "0"
    report = fields(assert_ok(invoke("inspect", path)).stdout)
    assert report["status"] == f"INCOMPLETE: {total - 1} of {total} blocks written"
    as_json = json.loads(assert_ok(invoke("inspect", path, "--json")).stdout)
    assert (as_json["complete"], as_json["blocks_done"], as_json["blocks_total"]) == (False, total - 1, total)


def test_inspect_json(sobel_output: Path) -> None:
    report = json.loads(assert_ok(invoke("inspect", sobel_output, "--json")).stdout)
    array = zarr.open_group(str(sobel_output), mode="r")["0"]
    assert report["shape"] == list(array.shape)
    assert report["chunks"] == list(array.chunks)
    assert report["dims"] == ["t", "c", "y", "x"]
    assert report["zarr_format"] == 3
    assert report["size_on_disk"] == sum(f.stat().st_size for f in sobel_output.rglob("*") if f.is_file())
    blocks = len(list((sobel_output / MARKER_FOLDER).iterdir()))
    assert report["complete"] is True and report["blocks_done"] == report["blocks_total"] == blocks > 1
    assert report["provenance"]["kernels"]["names"] == ["sobel-x", "sobel-y"]
    assert report["provenance"]["stride"] == [1, 1]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_inspect_a_plain_zarr_array(tmp_path: Path, zarr_format: int) -> None:
    path = tmp_path / "plain.zarr"
    zarr.create_array(str(path), shape=(5, 6), chunks=(2, 3), dtype="int16", zarr_format=zarr_format)[...] = 7
    text = assert_ok(invoke("inspect", path)).stdout
    report = fields(text)
    assert (report["shape"], report["chunks"], report["dtype"]) == ("(5, 6)", "(2, 3)", "int16")
    assert report["format"] == f"zarr v{zarr_format}"
    assert report["dims"] == "unnamed"
    assert "status" not in report and "kernels" not in report  # no convpipe record
    as_json = json.loads(assert_ok(invoke("inspect", path, "--json")).stdout)
    assert as_json["array"] is None and "complete" not in as_json


def test_inspect_a_missing_path(tmp_path: Path) -> None:
    assert_user_error(invoke("inspect", tmp_path / "nope.zarr"), "nope.zarr", "does not exist")


# --------------------------------------------------------------------------- preview


def test_preview_channel_selects_the_kernel(sobel_output: Path, sample_zarr: Path, tmp_path: Path) -> None:
    stored = read_output(sobel_output)
    images = []
    for channel in (0, 1):
        png = tmp_path / f"k{channel}.png"
        assert_ok(invoke("preview", sobel_output, "--index", "2", "--channel", channel, "-o", png))
        height, width = stored.shape[-2:]
        image = read_png(png)[-height:]  # below its label
        assert image.shape == (height, width)
        np.testing.assert_array_equal(image, stretch_to_uint8(stored[2, channel]))
        images.append(image.astype(int))
    # sobel-x answers to vertical edges, sobel-y to horizontal ones: different pictures.
    assert not np.array_equal(images[0], images[1])
    assert np.corrcoef(images[0].ravel(), images[1].ravel())[0, 1] < 0.9


def test_preview_index_selects_the_frame(sobel_output: Path, tmp_path: Path) -> None:
    stored = read_output(sobel_output)
    assert_ok(invoke("preview", sobel_output, "-o", tmp_path / "default.png"))
    height = stored.shape[-2]
    np.testing.assert_array_equal(
        read_png(tmp_path / "default.png")[-height:], stretch_to_uint8(stored[2, 0])
    )  # middle
    assert_ok(invoke("preview", sobel_output, "--index", "0", "-o", tmp_path / "first.png"))
    np.testing.assert_array_equal(read_png(tmp_path / "first.png")[-height:], stretch_to_uint8(stored[0, 0]))


@pytest.mark.parametrize("order", ["output-left", "input-left"])
def test_preview_compare_sets_input_and_kernel_side_by_side(
    sobel_output: Path, sample_zarr: Path, tmp_path: Path, order: str
) -> None:
    stored, frames = read_output(sobel_output), read_output(sample_zarr)
    kernel, frame = stretch_to_uint8(stored[1, 1]), stretch_to_uint8(frames[1])
    png = tmp_path / "compare.png"
    first, second = (sobel_output, sample_zarr) if order == "output-left" else (sample_zarr, sobel_output)
    assert_ok(invoke("preview", first, "--compare", second, "--index", "1", "--channel", "1", "-o", png))
    # The output is drawn on the input's grid: each response over the centre of its 3x3 window.
    on_input_grid = np.zeros_like(frame)
    on_input_grid[1:-1, 1:-1] = kernel
    left, right = (on_input_grid, frame) if order == "output-left" else (frame, on_input_grid)
    image = read_png(png)
    height, width = frame.shape
    assert image.shape[1] == 2 * width + PANEL_GAP
    image = image[-height:]  # below the labels
    np.testing.assert_array_equal(image[:, :width], left)
    assert (image[:, width : width + PANEL_GAP] == 255).all()
    np.testing.assert_array_equal(image[:, width + PANEL_GAP :], right)


def test_preview_of_image_files(tmp_path: Path) -> None:
    frames = grey_frames()
    folder = write_pngs(tmp_path / "frames", frames)
    assert_ok(invoke("preview", folder, "--index", "1", "-o", tmp_path / "p.png"))
    np.testing.assert_array_equal(read_png(tmp_path / "p.png")[-frames.shape[1] :], stretch_to_uint8(frames[1]))


def test_preview_refuses_a_channel_nobody_has(sample_zarr: Path, tmp_path: Path) -> None:
    assert_user_error(invoke("preview", sample_zarr, "--channel", "1", "-o", tmp_path / "p.png"), "channel 1")
    assert not (tmp_path / "p.png").exists()


def test_preview_console_script(sobel_output: Path, sample_zarr: Path, tmp_path: Path) -> None:
    png = tmp_path / "preview.png"
    done = subprocess.run(
        [
            str(CONVPIPE),
            "preview",
            str(sobel_output),
            "--channel",
            "1",
            "--compare",
            str(sample_zarr),
            "-o",
            str(png),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": f"{CONVPIPE.parent}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    assert done.returncode == 0, done.stderr
    assert f"wrote {png}" in done.stderr
    image = read_png(png)
    assert image.shape[1] == 40 + PANEL_GAP + 40  # output (30, 38) drawn on the grid of the input (32, 40)
    assert (image.shape[0] - 32) % LINE_HEIGHT == 0 and image.shape[0] > 32  # below their labels


def test_a_png_cut_short_after_listing_is_one_line_naming_it_and_its_key(tmp_path: Path) -> None:
    """Headers read at planning, pixels cut off later: the run names the key and the file, like a TIFF tile."""
    folder = write_pngs(tmp_path / "frames", grey_frames())
    broken = folder / "frame2.png"
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])  # header intact, pixel data cut off
    config = image_config(tmp_path / "run.yaml", folder, tmp_path / "out.zarr")
    assert_user_error(invoke("run", str(config)), "input.path: ", "cannot read", str(broken))
