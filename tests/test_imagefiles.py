"""Image files as a lazy stack, and their ingestion into Zarr, on real files."""

from __future__ import annotations

import pickle
from pathlib import Path

import cloudpickle
import dask
import dask.array as da
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr
from hypothesis import given
from hypothesis import strategies as st

from convpipe.errors import InputError, OutputError
from convpipe.imagefiles import is_image_source, list_frames, natural_sort_key, open_image_stack
from convpipe.ingest import default_ingest_chunks, ingest

N_FRAMES = 11  # frame10 must sort after frame2


def random_frames(shape: tuple[int, ...], dtype: str, n: int = N_FRAMES, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True) for _ in range(n)]


def write_frames(folder: Path, frames: list[np.ndarray], suffix: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(frames):
        path = folder / f"frame{i}{suffix}"
        if suffix in (".tif", ".tiff"):
            tifffile.imwrite(path, frame)
        else:
            iio.imwrite(path, frame)
        paths.append(path)
    return paths


@pytest.fixture
def png_folder(tmp_path: Path) -> tuple[Path, np.ndarray]:
    frames = random_frames((6, 9), "uint8")
    write_frames(tmp_path / "png", frames, ".png")
    return tmp_path / "png", np.stack(frames)


# ----------------------------------------------------------------------------- sources


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(lambda p: p.mkdir() or p, True, id="plain-folder"),
        pytest.param(lambda p: zarr.open_group(p, mode="w") and p, False, id="zarr3-group"),
        pytest.param(lambda p: zarr.open_group(p, mode="w", zarr_format=2) and p, False, id="zarr2-group"),
        pytest.param(lambda p: p / "*.png", True, id="glob"),
        pytest.param(lambda p: p / "frame[0-9].tif", True, id="glob-brackets"),
        pytest.param(lambda p: p / "stack.TIF", True, id="tif-upper-case"),
        pytest.param(lambda p: p / "one.jpeg", True, id="jpeg"),
        pytest.param(lambda p: p / "out.zarr", False, id="missing-zarr"),
        pytest.param(lambda p: "s3://bucket/stack.zarr", False, id="url"),
    ],
)
def test_is_image_source(tmp_path: Path, make, expected: bool) -> None:
    assert is_image_source(str(make(tmp_path / "source"))) is expected


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=30, unique=True))
def test_natural_sort_orders_numbers_by_value(numbers: list[int]) -> None:
    names = [f"frame{n}.png" for n in numbers]
    assert sorted(names, key=natural_sort_key) == [f"frame{n}.png" for n in sorted(numbers)]


def test_natural_sort_mixes_text_and_numbers() -> None:
    names = ["b1.png", "a10.png", "A2.png", "a2b.png", "3.png", "a02.png"]
    assert sorted(names, key=natural_sort_key) == [
        "3.png",
        "A2.png",
        "a02.png",
        "a2b.png",
        "a10.png",
        "b1.png",
    ]


def test_folder_ignores_other_files_and_sorts_naturally(png_folder) -> None:
    folder, _ = png_folder
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.png").write_bytes(b"macOS resource fork")
    (folder / "sub").mkdir()
    names = [Path(frame.path).name for frame in list_frames(folder)]
    assert names == [f"frame{i}.png" for i in range(N_FRAMES)]


def test_glob_selects_matching_files(png_folder) -> None:
    folder, stack = png_folder
    frames = list_frames(str(folder / "frame1*.png"))
    assert [Path(f.path).name for f in frames] == ["frame1.png", "frame10.png"]
    np.testing.assert_array_equal(open_image_stack(str(folder / "frame1*.png")), stack[[1, 10]])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(lambda p: p.mkdir() or p, "no image files", id="empty-folder"),
        pytest.param(lambda p: p / "missing", "not found", id="missing"),
        pytest.param(lambda p: p / "*.png", "match", id="glob-without-matches"),
    ],
)
def test_no_frames_is_an_input_error(tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path / "source")
    with pytest.raises(InputError, match=message) as info:
        list_frames(path)
    assert str(path) in str(info.value)


# ----------------------------------------------------------------------------- stacks


@pytest.mark.parametrize(
    ("shape", "dtype", "suffix"),
    [
        pytest.param((6, 9), "uint8", ".png", id="png-uint8"),
        pytest.param((6, 9), "uint16", ".png", id="png-uint16"),
        pytest.param((5, 7, 3), "uint8", ".png", id="png-rgb"),
        pytest.param((5, 7, 4), "uint8", ".png", id="png-rgba"),
        pytest.param((6, 9), "uint16", ".tif", id="tiff-uint16"),
        pytest.param((6, 9), "int32", ".tiff", id="tiff-int32"),
    ],
)
def test_stack_equals_frames(tmp_path: Path, shape, dtype: str, suffix: str) -> None:
    frames = random_frames(shape, dtype)
    write_frames(tmp_path, frames, suffix)
    stack = open_image_stack(tmp_path)
    assert stack.shape == (N_FRAMES, *shape)
    assert stack.dtype == np.dtype(dtype)
    assert stack.chunks == ((1,) * N_FRAMES, *((n,) for n in shape))
    np.testing.assert_array_equal(stack.compute(), np.stack(frames))


def test_jpeg_stack_equals_decoded_files(tmp_path: Path) -> None:
    frames = [np.full((8, 8, 3), 40 * i, dtype=np.uint8) for i in range(4)]
    paths = write_frames(tmp_path, frames, ".jpg")
    stack = open_image_stack(tmp_path)
    assert stack.shape == (4, 8, 8, 3)
    np.testing.assert_array_equal(stack, np.stack([iio.imread(p) for p in paths]))
    np.testing.assert_allclose(stack, np.stack(frames), atol=3)  # lossy, but flat colours survive


def test_multipage_tiff_gives_one_frame_per_page(tmp_path: Path) -> None:
    pages = np.stack(random_frames((6, 9), "uint16", n=40))
    tifffile.imwrite(tmp_path / "stack.tif", pages, photometric="minisblack")
    stack = open_image_stack(tmp_path / "stack.tif")
    assert stack.shape == pages.shape
    assert stack.numblocks == (40, 1, 1)
    np.testing.assert_array_equal(stack[37].compute(), pages[37])  # one page read on its own
    np.testing.assert_array_equal(stack, pages)


def test_folder_of_multipage_tiffs_concatenates_pages(tmp_path: Path) -> None:
    first, second = (
        np.stack(random_frames((4, 5), "uint8", n=3)),
        np.stack(random_frames((4, 5), "uint8", n=2)),
    )
    tifffile.imwrite(tmp_path / "b10.tif", second, photometric="minisblack")
    tifffile.imwrite(tmp_path / "b2.tif", first, photometric="minisblack")
    frames = list_frames(tmp_path)
    assert [(Path(f.path).name, f.page) for f in frames] == [
        ("b2.tif", 0),
        ("b2.tif", 1),
        ("b2.tif", 2),
        ("b10.tif", 0),
        ("b10.tif", 1),
    ]
    np.testing.assert_array_equal(open_image_stack(tmp_path), np.concatenate([first, second]))


def test_planar_rgb_tiff_comes_back_channel_last(tmp_path: Path) -> None:
    planes = np.stack(random_frames((6, 9), "uint8", n=3))
    tifffile.imwrite(tmp_path / "rgb.tif", planes, photometric="rgb", planarconfig="separate")
    stack = open_image_stack(tmp_path / "rgb.tif")
    assert stack.shape == (1, 6, 9, 3)
    np.testing.assert_array_equal(stack[0], np.moveaxis(planes, 0, -1))


def test_graph_is_one_layer_with_one_read_task_per_frame(png_folder) -> None:
    folder, _ = png_folder
    stack = open_image_stack(folder)
    graph = stack.__dask_graph__()
    assert len(graph.layers) == 1
    assert len(graph) == N_FRAMES


def test_graph_pickles_and_computes_in_worker_processes(png_folder) -> None:
    folder, expected = png_folder
    stack = open_image_stack(folder)
    graph = dict(stack.__dask_graph__())
    assert pickle.loads(pickle.dumps(graph)).keys() == graph.keys()
    assert cloudpickle.loads(cloudpickle.dumps(graph)).keys() == graph.keys()
    with dask.config.set(scheduler="processes", num_workers=2):
        np.testing.assert_array_equal(stack[:3].compute(), expected[:3])


def test_truncated_later_frame_fails_only_when_computed(png_folder) -> None:
    folder, expected = png_folder
    broken = folder / "frame7.png"
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])  # header intact, pixel data cut off
    stack = open_image_stack(folder)  # headers only: no error yet
    np.testing.assert_array_equal(stack[:7].compute(), expected[:7])
    with pytest.raises(InputError, match=r"frame7\.png"):
        stack[7].compute()


def test_unreadable_file_fails_at_open_naming_it(png_folder) -> None:
    folder, _ = png_folder
    (folder / "frame5.png").write_bytes(b"this is not a PNG")
    with pytest.raises(InputError, match=r"cannot read .*frame5\.png"):
        open_image_stack(folder)


def test_corrupt_tiff_fails_at_open_naming_it(tmp_path: Path) -> None:
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(InputError, match=r"bad\.tif"):
        open_image_stack(tmp_path)


@pytest.mark.parametrize(
    ("odd_frame", "what"),
    [
        pytest.param(np.zeros((6, 8), np.uint8), "shape", id="shape"),
        pytest.param(np.zeros((6, 9), np.uint16), "dtype", id="dtype"),
        pytest.param(np.zeros((6, 9, 3), np.uint8), "shape", id="rgb-among-grey"),
    ],
)
def test_mismatched_frame_is_named_at_open(png_folder, odd_frame: np.ndarray, what: str) -> None:
    folder, _ = png_folder
    iio.imwrite(folder / "frame4.png", odd_frame)
    with pytest.raises(InputError, match=rf"frame4\.png.*{what}|{what}.*frame4\.png") as info:
        open_image_stack(folder)
    assert "frame0.png" in str(info.value)  # the reference frame is named too


def test_mismatched_tiff_page_is_named(tmp_path: Path) -> None:
    with tifffile.TiffWriter(tmp_path / "mixed.tif") as tif:
        tif.write(np.zeros((6, 9), np.uint16))
        tif.write(np.zeros((6, 10), np.uint16))
    with pytest.raises(InputError, match=r"mixed\.tif \(page 1\)"):
        open_image_stack(tmp_path / "mixed.tif")


# ----------------------------------------------------------------------------- ingest


def test_ingest_round_trip(png_folder, tmp_path: Path) -> None:
    folder, expected = png_folder
    dest = tmp_path / "out.zarr"
    array = ingest(folder, dest, progress=False)
    assert array.shape == expected.shape

    group = zarr.open_group(dest, mode="r")
    stored = group["0"]
    assert stored.metadata.zarr_format == 3
    assert stored.metadata.dimension_names == ("t", "y", "x")
    assert stored.chunks == (1, 6, 9)
    (codec,) = stored.compressors
    assert isinstance(codec, zarr.codecs.BloscCodec) and codec.cname.value == "lz4"
    record = stored.attrs["convpipe_ingest"]
    assert record["source"] == str(folder.resolve())
    assert (record["frame_count"], record["file_count"]) == (N_FRAMES, N_FRAMES)
    assert (record["first_file"], record["last_file"]) == ("frame0.png", "frame10.png")
    assert record["complete"] is True
    np.testing.assert_array_equal(da.from_zarr(stored).compute(), expected)


def test_ingest_rgb_names_the_channel_axis(tmp_path: Path) -> None:
    frames = random_frames((5, 7, 3), "uint8", n=3)
    write_frames(tmp_path / "rgb", frames, ".png")
    array = ingest(tmp_path / "rgb", tmp_path / "rgb.zarr", progress=False)
    assert array.metadata.dimension_names == ("t", "y", "x", "c")
    assert array.chunks == (1, 5, 7, 3)
    np.testing.assert_array_equal(array[:], np.stack(frames))


def test_ingest_with_chunks_spanning_frames_and_tiles(png_folder, tmp_path: Path) -> None:
    folder, expected = png_folder
    array = ingest(folder, tmp_path / "out.zarr", chunks=(4, 4, 5), progress=False)
    assert array.chunks == (4, 4, 5)
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "out.zarr" / "0", mode="r")[:], expected)


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param((1, 0, 9), id="zero"),
        pytest.param((1, 6), id="too-few"),
        pytest.param((1.5, 6, 9), id="float"),
    ],
)
def test_ingest_refuses_bad_chunks(png_folder, tmp_path: Path, chunks) -> None:
    folder, _ = png_folder
    with pytest.raises(OutputError, match="chunks"):
        ingest(folder, tmp_path / "out.zarr", chunks=chunks, progress=False)
    assert not (tmp_path / "out.zarr").exists()


@pytest.mark.parametrize(
    ("frame_shape", "dtype", "expected"),
    [
        pytest.param((512, 512), "uint16", (1, 512, 512), id="small-frame-whole"),
        pytest.param((2048, 4096), "uint16", (1, 2048, 4096), id="16MiB-frame-whole"),
        pytest.param((4096, 4096), "uint16", (1, 1024, 1024), id="large-frame-tiled"),
        pytest.param((8192, 300), "float64", (1, 1024, 300), id="narrow-frame"),
        pytest.param((8192, 8192, 4), "float64", (1, 512, 512, 4), id="tile-halved-to-fit"),
    ],
)
def test_default_ingest_chunks(frame_shape, dtype: str, expected) -> None:
    chunks = default_ingest_chunks(frame_shape, dtype)
    assert chunks == expected
    assert np.prod(chunks) * np.dtype(dtype).itemsize <= 16 * 2**20


def test_ingest_refuses_existing_dest(png_folder, tmp_path: Path) -> None:
    folder, _ = png_folder
    dest = tmp_path / "out.zarr"
    ingest(folder, dest, progress=False)
    with pytest.raises(OutputError, match="already exists") as info:
        ingest(folder, dest, progress=False)
    assert str(dest) in str(info.value)


def test_ingest_overwrite_replaces_a_zarr_store(png_folder, tmp_path: Path) -> None:
    folder, expected = png_folder
    dest = tmp_path / "out.zarr"
    zarr.create_array(dest, shape=(2, 2), dtype="float32")
    array = ingest(folder, dest, overwrite=True, progress=False)
    np.testing.assert_array_equal(array[:], expected)


def test_ingest_overwrite_keeps_old_store_when_source_is_invalid(tmp_path: Path) -> None:
    dest = tmp_path / "out.zarr"
    zarr.create_array(dest, shape=(2, 2), dtype="float32")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError):
        ingest(tmp_path / "empty", dest, overwrite=True, progress=False)
    assert zarr.open_array(dest, mode="r").shape == (2, 2)


def test_ingest_overwrite_never_deletes_a_folder_that_is_not_zarr(png_folder, tmp_path: Path) -> None:
    folder, _ = png_folder
    precious = tmp_path / "results"
    precious.mkdir()
    (precious / "thesis.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not a Zarr store"):
        ingest(folder, precious, overwrite=True, progress=False)
    assert (precious / "thesis.txt").exists()


@pytest.mark.parametrize("dest", [pytest.param(".", id="source-folder"), pytest.param("..", id="its-parent")])
def test_ingest_never_overwrites_the_source(png_folder, dest: str) -> None:
    folder, _ = png_folder
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(OutputError, match="source"):
        ingest(folder, folder / dest, overwrite=True, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == before


def test_failed_ingest_leaves_no_partial_output(png_folder, tmp_path: Path) -> None:
    folder, _ = png_folder
    broken = folder / "frame9.png"
    broken.write_bytes(broken.read_bytes()[:60])
    with pytest.raises(InputError, match=r"frame9\.png"):
        ingest(folder, tmp_path / "out.zarr", progress=False)
    assert not (tmp_path / "out.zarr").exists()


@pytest.mark.parametrize("progress", [True, False])
def test_ingest_progress_bar_goes_to_stderr(png_folder, tmp_path: Path, capsys, progress: bool) -> None:
    folder, _ = png_folder
    ingest(folder, tmp_path / "out.zarr", progress=progress)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (f"{N_FRAMES}/{N_FRAMES}" in captured.err) is progress
