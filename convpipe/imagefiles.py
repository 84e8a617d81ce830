"""Image files (PNG, JPEG, TIFF) as a lazy Dask stack.

A *source* is a folder of image files, a glob pattern, or a single image file
(a multi-page TIFF gives one frame per page). Frames are ordered by a natural
sort of their paths (``frame2`` before ``frame10``; case-insensitive, ties
broken by the plain path), then by page.

Opening a source reads only file headers: every frame's shape and dtype are
checked against the first one before any pixel is decoded, so a mismatched
file is reported at once, by name. Pixels are decoded inside Dask tasks, one
task per frame, by a module-level function taking plain arguments, so the
graph can be shipped to worker processes. Converting a source to Zarr is
:mod:`convpipe.ingest`. Dask, tifffile and imageio are imported where they
are used: a command that only plans a Zarr input loads none of them.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from convpipe.errors import InputError

if TYPE_CHECKING:
    import dask.array as da
    import tifffile

TIFF_SUFFIXES = frozenset({".tif", ".tiff"})
PILLOW_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
IMAGE_SUFFIXES = TIFF_SUFFIXES | PILLOW_SUFFIXES
ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")
GLOB_CHARACTERS = frozenset("*?[")


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
    files = source_files(text)
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
    if Path(path).suffix.lower() in TIFF_SUFFIXES:
        from convpipe.tiffpages import read_pages

        return read_pages([(path, page, ifd_offset)])[0]
    import imageio.v3 as iio

    try:
        return iio.imread(path, index=0, plugin="pillow")
    except Exception as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc


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
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    first = frames[0]
    name = "imread-" + tokenize([_identity(frame) for frame in frames])
    zeros = (0,) * len(first.shape)
    graph = {
        (name, i, *zeros): (read_frame_block, *frame_task_args(frame, first)) for i, frame in enumerate(frames)
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


def source_files(text: str) -> list[str]:
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
    import tifffile

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
                frames.append(tiff_page_frame(file, page))
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read TIFF file {file}: {exc}") from exc
    if not frames:
        raise InputError(f"cannot read TIFF file {file}: no readable full-resolution page")
    return frames


def tiff_page_frame(file: str, page: tifffile.TiffPage) -> Frame:
    from convpipe.tiffpages import is_planar_colour

    if page.dtype is None:
        raise InputError(f"{file} (page {page.index}) has a pixel type tifffile cannot decode")
    shape = tuple(page.shape)
    if is_planar_colour(page):
        shape = (*shape[1:], shape[0])
    frame = Frame(file, page.index, shape, page.dtype.str, page.offset)
    _check_frame_shape(frame)
    return frame


def _pillow_frame(file: str) -> Frame:
    import imageio.v3 as iio

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


def frame_task_args(frame: Frame, first: Frame) -> tuple[object, ...]:
    """The arguments of :func:`read_frame_block` for ``frame``, checked against the ``first`` frame's header."""
    return frame.path, frame.page, frame.ifd_offset, first.shape, first.dtype
