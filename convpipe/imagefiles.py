"""Image files (PNG, JPEG, TIFF) as a lazy Dask stack, and their ingestion into Zarr.

A *source* is a folder of image files, a glob pattern, or a single image file
(a multi-page TIFF gives one frame per page). Frames are ordered by a natural
sort of their paths (``frame2`` before ``frame10``; case-insensitive, ties
broken by the plain path), then by page.

Opening a source reads only file headers: every frame's shape and dtype are
checked against the first one before any pixel is decoded, so a mismatched
file is reported at once, by name. Pixels are decoded inside Dask tasks, one
task per frame, by a module-level function taking plain arguments, so the
graph can be shipped to worker processes.

:func:`ingest` copies a source into a chunked Zarr (format 3) stack: a group
holding the array ``0`` with ``dimension_names`` ``("t", "y", "x")``, or
``("t", "y", "x", "c")`` for RGB(A) frames.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import imageio.v3 as iio
import numpy as np
import tifffile
import zarr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph
from tqdm import tqdm

from convpipe.errors import InputError, OutputError
from convpipe.store import compressors_for

TIFF_SUFFIXES = frozenset({".tif", ".tiff"})
PILLOW_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
IMAGE_SUFFIXES = TIFF_SUFFIXES | PILLOW_SUFFIXES
ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")
GLOB_CHARACTERS = frozenset("*?[")

MAX_CHUNK_BYTES = 16 * 2**20
"""Upper bound for the default Zarr chunk of :func:`ingest` (16 MiB)."""
DEFAULT_TILE = 1024
"""Spatial tile edge used when a whole frame is larger than :data:`MAX_CHUNK_BYTES`."""

_TIFF_PLANAR_SEPARATE = 2


@dataclass(frozen=True)
class Frame:
    """One 2-D (or 2-D + colour) image of a source, described from its header only.

    Attributes
    ----------
    path
        Absolute path of the file holding the frame.
    page
        Page of a TIFF file; always 0 for PNG and JPEG.
    shape
        ``(H, W)`` or ``(H, W, C)`` with ``C`` in 2..4 (grey + alpha, RGB, RGBA).
    dtype
        NumPy dtype string, e.g. ``"|u1"``.
    ifd_offset
        File offset of the TIFF page's directory, so a task can seek to the page
        directly instead of walking every earlier page. ``None`` for PNG/JPEG.
    """

    path: str
    page: int
    shape: tuple[int, ...]
    dtype: str
    ifd_offset: int | None = None

    @property
    def label(self) -> str:
        """How errors name this frame: the file, plus the page for TIFF files."""
        return f"{self.path} (page {self.page})" if self.ifd_offset is not None else self.path


def is_image_source(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names image files rather than a Zarr store.

    True for a folder that is not a Zarr store (no ``zarr.json``, ``.zarray``
    or ``.zgroup`` inside), for a glob pattern (``*``, ``?`` or ``[``, unless the
    path exists as written) and for a path ending in .tif, .tiff, .png, .jpg or
    .jpeg (case-insensitive, whether or not it exists yet). URLs
    (``scheme://...``) are never image sources: only local files are read.

    Examples
    --------
    >>> is_image_source("frames/*.png")
    True
    >>> is_image_source("stack.zarr")
    False
    """
    text = os.fspath(path)
    if "://" in text:
        return False
    if os.path.isdir(text):
        return not any(os.path.exists(os.path.join(text, marker)) for marker in ZARR_MARKERS)
    if os.path.exists(text):
        return Path(text).suffix.lower() in IMAGE_SUFFIXES
    if GLOB_CHARACTERS & set(text):
        return True
    return Path(text).suffix.lower() in IMAGE_SUFFIXES


def natural_sort_key(text: str) -> tuple[tuple[object, ...], str]:
    """Sort key ordering runs of digits by value: ``frame2`` < ``frame10``.

    Letters compare case-insensitively; the plain text breaks ties, so
    ``frame01`` and ``frame1`` still have a fixed order.

    Examples
    --------
    >>> sorted(["f10.png", "f2.png", "F1.png"], key=natural_sort_key)
    ['F1.png', 'f2.png', 'f10.png']
    """
    parts = re.split(r"([0-9]+)", text)
    # re.split with one capturing group alternates text, digits, text, ...: the
    # types line up position by position, so tuples always compare.
    key = tuple(int(part) if i % 2 else part.casefold() for i, part in enumerate(parts))
    return key, text


def list_frames(path: str | os.PathLike[str]) -> list[Frame]:
    """Every frame of an image source, in order, from file headers only.

    Files are ordered by :func:`natural_sort_key` of their absolute paths (in a
    single folder: by file name), the pages of a multi-page TIFF in page order.
    In a folder, only files ending in .png, .tif, .tiff, .jpg or .jpeg (any
    case) count; hidden files and sub-folders are skipped. A glob pattern
    (``**`` recursive) keeps the matching files with those endings. Reduced
    resolution pages of a TIFF (thumbnails) are skipped.

    Raises
    ------
    InputError
        Nothing found, a file whose header cannot be read, or a frame that is
        neither 2-D nor 2-D with 2 to 4 colour samples.
    """
    text = os.fspath(path)
    files = _source_files(text)
    frames: list[Frame] = []
    for file in files:
        suffix = Path(file).suffix.lower()
        if suffix in TIFF_SUFFIXES:
            frames.extend(_tiff_frames(file))
        else:
            frames.append(_pillow_frame(file))
    if not frames:
        raise InputError(f"no image frames found in {text}")
    return frames


def read_frame(path: str, page: int = 0, ifd_offset: int | None = None) -> np.ndarray:
    """Decode one frame: a TIFF page with tifffile, a PNG/JPEG with imageio (Pillow).

    The file is opened and closed here, so this can run in any process. Colour
    TIFF pages stored plane by plane come back channel-last, like PNG.

    Raises
    ------
    InputError
        The file is missing or cannot be decoded.
    """
    try:
        if Path(path).suffix.lower() in TIFF_SUFFIXES:
            with tifffile.TiffFile(path) as tif:
                if ifd_offset is None:
                    tiff_page = tif.pages[page]
                else:
                    tif.filehandle.seek(ifd_offset)
                    tiff_page = tifffile.TiffPage(tif, index=page)
                pixels = tiff_page.asarray()
                if _is_planar_colour(tiff_page):
                    pixels = np.moveaxis(pixels, 0, -1)
                return pixels
        return iio.imread(path, index=0, plugin="pillow")
    except Exception as exc:
        where = f"page {page} of {path}" if Path(path).suffix.lower() in TIFF_SUFFIXES else path
        raise InputError(f"cannot read {where}: {exc}") from exc


def read_frame_block(
    path: str, page: int, ifd_offset: int | None, shape: tuple[int, ...], dtype: str
) -> np.ndarray:
    """The Dask task of :func:`open_image_stack`: one frame as a ``(1, *shape)`` block.

    Checks the decoded frame against the header seen at open time, so a file
    replaced in between gives an error naming it rather than a misshapen block.
    """
    pixels = read_frame(path, page, ifd_offset)
    if pixels.shape != tuple(shape) or pixels.dtype != np.dtype(dtype):
        raise InputError(
            f"{path} (page {page}) decoded to shape {pixels.shape} and dtype {pixels.dtype}, "
            f"but its header said {tuple(shape)} and {np.dtype(dtype)}; did the file change?"
        )
    return pixels[np.newaxis]


def open_image_stack(path: str | os.PathLike[str]) -> da.Array:
    """An image source as a lazy Dask array, one frame per chunk.

    The result has shape ``(N, H, W)``, or ``(N, H, W, C)`` for colour frames,
    and a single graph layer of ``N`` tasks, each calling
    :func:`read_frame_block` with plain arguments (paths, ints, tuples), so the
    graph pickles for distributed workers. Only headers are read here.

    Raises
    ------
    InputError
        See :func:`list_frames`; also a frame whose shape or dtype differs from
        the first frame's, naming both files.

    Examples
    --------
    >>> stack = open_image_stack("frames/")  # doctest: +SKIP
    >>> stack.chunksize  # doctest: +SKIP
    (1, 512, 512)
    """
    frames = list_frames(path)
    check_frames_match(frames)
    return stack_frames(frames)


def stack_frames(frames: Sequence[Frame]) -> da.Array:
    """Lazy stack of frames already listed and checked (see :func:`open_image_stack`)."""
    first = frames[0]
    name = "imread-" + tokenize([_identity(frame) for frame in frames])
    zeros = (0,) * len(first.shape)
    graph = {
        (name, i, *zeros): (read_frame_block, *_task_args(frame, first)) for i, frame in enumerate(frames)
    }
    chunks = ((1,) * len(frames), *((size,) for size in first.shape))
    dtype = np.dtype(first.dtype)
    return da.Array(
        HighLevelGraph.from_collections(name, graph, dependencies=()),
        name,
        chunks,
        dtype=dtype,
        meta=np.empty((0,) * (len(first.shape) + 1), dtype=dtype),
    )


def check_frames_match(frames: Sequence[Frame]) -> None:
    """Raise :class:`InputError` unless every frame has the first frame's shape and dtype."""
    first = frames[0]
    for frame in frames[1:]:
        if frame.shape != first.shape or frame.dtype != first.dtype:
            raise InputError(
                f"{frame.label} has shape {frame.shape} and dtype {np.dtype(frame.dtype)}, but the "
                f"first frame {first.label} has shape {first.shape} and dtype {np.dtype(first.dtype)}; "
                "all frames must match"
            )


def default_ingest_chunks(
    frame_shape: tuple[int, ...],
    dtype: np.dtype | str,
    max_bytes: int = MAX_CHUNK_BYTES,
    tile: int = DEFAULT_TILE,
) -> tuple[int, ...]:
    """Zarr chunks for a stack of frames: one whole frame, or square tiles of it.

    A chunk is ``(1, H, W[, C])`` when that fits in ``max_bytes``; otherwise the
    frame is cut into ``tile`` x ``tile`` tiles (halved until they fit), colour
    samples always kept together.

    Examples
    --------
    >>> default_ingest_chunks((512, 512), "uint16")
    (1, 512, 512)
    >>> default_ingest_chunks((8192, 8192, 3), "uint8")
    (1, 1024, 1024, 3)
    """
    itemsize = np.dtype(dtype).itemsize
    height, width, *colour = frame_shape
    samples = int(np.prod(colour, dtype=np.int64))
    if height * width * samples * itemsize <= max_bytes:
        return (1, height, width, *colour)
    while tile > 1 and tile * tile * samples * itemsize > max_bytes:
        tile //= 2
    return (1, min(height, tile), min(width, tile), *colour)


def ingest(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    chunks: Sequence[int] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> zarr.Array:
    """Copy an image source into a new Zarr (format 3) stack at ``dest``.

    ``dest`` becomes a group holding the array ``0``: shape ``(N, H, W)`` with
    ``dimension_names`` ``("t", "y", "x")``, or ``(N, H, W, C)`` with
    ``("t", "y", "x", "c")``; the source dtype; the default ``blosc-lz4`` codec (bit shuffle:
    on uint16 frames a ratio of 1.27 against 1.03 with byte shuffle).
    Frames are written in slabs of ``chunks[0]`` frames (one frame by default),
    so memory stays bounded. The array's ``convpipe_ingest`` attribute records
    the source path, frame and file counts, first and last file names, and
    ``complete`` (set to true only after the last frame is written). If writing
    fails, the partly written ``dest`` is removed. The source is never modified.

    Parameters
    ----------
    source
        Folder, glob pattern or image file; see :func:`list_frames`.
    dest
        Local path of the new Zarr group.
    chunks
        Zarr chunk shape, one positive int per axis; for colour stacks the
        channel entry may be left out (channels stay in one chunk). Default:
        :func:`default_ingest_chunks`.
    overwrite
        Replace an existing Zarr store at ``dest``. It is removed only after the
        source, the chunks and ``dest`` have been validated. Folders that are not
        Zarr stores (and are not empty) are never removed.
    progress
        Show a tqdm progress bar on stderr.

    Raises
    ------
    InputError
        The source cannot be opened; see :func:`open_image_stack`.
    OutputError
        ``dest`` exists (without ``overwrite``), is not a Zarr store, would
        overlap the source, invalid ``chunks``, or writing failed.
    """
    frames = list_frames(source)
    check_frames_match(frames)
    stack = stack_frames(frames)
    chunk_shape = _parse_chunks(chunks, stack.shape, stack.dtype)
    dest_path = Path(os.path.abspath(os.fspath(dest)))
    _check_dest(dest_path, frames, overwrite)
    if dest_path.exists():
        shutil.rmtree(dest_path)

    files = list(dict.fromkeys(frame.path for frame in frames))
    provenance = {
        "source": os.path.abspath(os.fspath(source)),
        "frame_count": len(frames),
        "file_count": len(files),
        "first_file": os.path.basename(files[0]),
        "last_file": os.path.basename(files[-1]),
        "frame_order": "natural sort of file paths, then TIFF page",
        "complete": False,
    }
    dimension_names = ("t", "y", "x", "c")[: stack.ndim]
    try:
        group = zarr.open_group(str(dest_path), mode="w-", zarr_format=3)
        array = group.create_array(
            "0",
            shape=stack.shape,
            dtype=stack.dtype,
            chunks=chunk_shape,
            compressors=compressors_for("blosc-lz4", 3),
            fill_value=0,
            dimension_names=dimension_names,
            attributes={"convpipe_ingest": provenance},
        )
        _write_frames(frames, array, chunk_shape[0], progress, desc=f"ingest {dest_path.name}")
        array.update_attributes({"convpipe_ingest": {**provenance, "complete": True}})
    except BaseException as exc:
        shutil.rmtree(dest_path, ignore_errors=True)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {dest_path}: {exc}") from exc
        raise
    return array


def _source_files(text: str) -> list[str]:
    """Absolute paths of the image files of a source, naturally sorted."""
    if os.path.isdir(text):
        if not is_image_source(text):
            raise InputError(f"{text} is a Zarr store, not a folder of image files")
        with os.scandir(text) as entries:
            found = [
                os.path.abspath(entry.path)
                for entry in entries
                if not entry.name.startswith(".")
                and entry.is_file()
                and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES
            ]
        if not found:
            raise InputError(f"no image files (.png, .tif, .tiff, .jpg, .jpeg) in folder {text}")
    elif os.path.isfile(text):
        if Path(text).suffix.lower() not in IMAGE_SUFFIXES:
            raise InputError(f"{text} is not a .png, .tif, .tiff, .jpg or .jpeg file")
        found = [os.path.abspath(text)]
    elif GLOB_CHARACTERS & set(text):
        found = [
            os.path.abspath(match)
            for match in glob.glob(text, recursive=True)
            if os.path.isfile(match) and Path(match).suffix.lower() in IMAGE_SUFFIXES
        ]
        if not found:
            raise InputError(f"no image files (.png, .tif, .tiff, .jpg, .jpeg) match {text}")
    else:
        raise InputError(f"image source not found: {text}")
    return sorted(found, key=natural_sort_key)


def _tiff_frames(file: str) -> list[Frame]:
    """One frame per full-resolution page of a TIFF file, from the page headers."""
    try:
        with tifffile.TiffFile(file) as tif:
            tif.pages.cache = False  # keep memory flat for files with very many pages
            page_count = len(tif.pages)
            if tif.is_imagej and (tif.imagej_metadata or {}).get("images", 1) > page_count:
                raise InputError(
                    f"{file} is an ImageJ hyperstack with {tif.imagej_metadata['images']} images "
                    f"but only {page_count} page header(s) (a truncated file over 4 GiB?); "
                    "save it as a multi-page TIFF with one page per frame"
                )
            frames = []
            for page in tif.pages:
                if page.is_reduced:
                    continue
                frames.append(_tiff_page_frame(file, page))
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read TIFF file {file}: {exc}") from exc
    if not frames:
        raise InputError(f"cannot read TIFF file {file}: no readable full-resolution page")
    return frames


def _tiff_page_frame(file: str, page: tifffile.TiffPage) -> Frame:
    if page.dtype is None:
        raise InputError(f"{file} (page {page.index}) has a pixel type tifffile cannot decode")
    shape = tuple(page.shape)
    if _is_planar_colour(page):
        shape = (*shape[1:], shape[0])
    frame = Frame(file, page.index, shape, page.dtype.str, page.offset)
    _check_frame_shape(frame)
    return frame


def _is_planar_colour(page: tifffile.TiffPage) -> bool:
    return page.planarconfig == _TIFF_PLANAR_SEPARATE and page.samplesperpixel > 1 and page.ndim == 3


def _pillow_frame(file: str) -> Frame:
    try:
        props = iio.improps(file, index=0, plugin="pillow")
    except Exception as exc:
        raise InputError(f"cannot read image file {file}: {exc}") from exc
    frame = Frame(file, 0, tuple(props.shape), props.dtype.str)
    _check_frame_shape(frame)
    return frame


def _check_frame_shape(frame: Frame) -> None:
    grey = len(frame.shape) == 2
    colour = len(frame.shape) == 3 and 2 <= frame.shape[2] <= 4
    if not (grey or colour):
        raise InputError(
            f"{frame.label} has shape {frame.shape}; expected a 2-D image (H, W) "
            "or a colour image (H, W, 2..4)"
        )


def _identity(frame: Frame) -> tuple[object, ...]:
    """What makes a task's result change: the frame and its file's size and time."""
    stat = os.stat(frame.path)
    return frame.path, frame.page, frame.ifd_offset, stat.st_size, stat.st_mtime_ns


def _parse_chunks(chunks: Sequence[int] | None, shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
    if chunks is None:
        return default_ingest_chunks(shape[1:], dtype)
    values = tuple(chunks)
    if len(values) == len(shape) - 1 == 3:
        values = (*values, shape[3])
    if len(values) != len(shape) or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in values
    ):
        names = ", ".join(("t", "y", "x", "c")[: len(shape)])
        raise OutputError(
            f"chunks must be {len(shape)} positive integers ({names}) for a stack of shape "
            f"{shape}, got {list(chunks)}"
        )
    return tuple(min(int(v), size) for v, size in zip(values, shape, strict=True))


def _check_dest(dest: Path, frames: Sequence[Frame], overwrite: bool) -> None:
    """Refuse a destination that exists (unless overwriting a Zarr store) or holds the source."""
    folders = {Path(frame.path).parent for frame in frames}
    if any(dest == Path(frame.path) for frame in frames) or any(
        dest == folder or dest in folder.parents for folder in folders
    ):
        raise OutputError(f"output {dest} would overwrite the image source; choose another path")
    if not (dest.exists() or dest.is_symlink()):
        return
    if not overwrite:
        raise OutputError(f"output {dest} already exists; pass --overwrite (overwrite=True) to replace it")
    is_store = (
        dest.is_dir()
        and not dest.is_symlink()
        and (any((dest / marker).exists() for marker in ZARR_MARKERS) or not any(dest.iterdir()))
    )
    if not is_store:
        raise OutputError(f"output {dest} exists and is not a Zarr store; refusing to delete it")


def _write_frames(frames: Sequence[Frame], array: zarr.Array, slab: int, progress: bool, desc: str) -> None:
    """Write frames in slabs of ``slab`` frames, decoding the next slab while writing one."""

    def read_slab(start: int) -> np.ndarray:
        return np.concatenate(
            [read_frame_block(*_task_args(frame, frames[0])) for frame in frames[start : start + slab]]
        )

    with (
        tqdm(total=len(frames), desc=desc, unit="frame", file=sys.stderr, disable=not progress) as bar,
        ThreadPoolExecutor(max_workers=1) as reader,
    ):
        pending = reader.submit(read_slab, 0)
        for start in range(0, len(frames), slab):
            pixels = pending.result()
            if start + slab < len(frames):
                pending = reader.submit(read_slab, start + slab)
            array[start : start + len(pixels)] = pixels
            bar.update(len(pixels))


def _task_args(frame: Frame, first: Frame) -> tuple[object, ...]:
    return frame.path, frame.page, frame.ifd_offset, first.shape, first.dtype
