"""Image files (PNG, JPEG, TIFF) as a lazy Dask stack.

A *source* is a folder of image files, a glob pattern, or a single image file
(a multi-page TIFF gives one frame per page). Opening a source reads only file
headers, so a frame whose shape or dtype differs from the first is reported at
once, by name. Pixels are decoded inside Dask tasks by a module-level function
taking plain arguments, so the graph can be shipped to worker processes.
Dask, tifffile and imageio are imported where they are used: a command that
only plans a Zarr input loads none of them.
"""

from __future__ import annotations

import glob
import os
import re
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
        The pixel type.
    ifd_offset
        File offset of the TIFF page's directory, so a task can seek to the page
        directly instead of walking every earlier page. ``None`` for PNG/JPEG.
    """

    path: str
    page: int
    shape: tuple[int, ...]
    dtype: np.dtype
    ifd_offset: int | None = None

    def __post_init__(self) -> None:
        grey = len(self.shape) == 2
        colour = len(self.shape) == 3 and 2 <= self.shape[2] <= 4
        if not (grey or colour):
            raise InputError(
                f"{self.label} has shape {self.shape}; expected a 2-D image (H, W) "
                "or a colour image (H, W, 2..4)"
            )

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
    if not os.path.exists(text) and GLOB_CHARACTERS & set(text):
        return True
    return _is_image_file(text)


def _is_image_file(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


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
        Nothing found, a file whose header cannot be read, a frame that is
        neither 2-D nor 2-D with 2 to 4 colour samples, or a frame whose shape
        or dtype differs from the first frame's (naming both).
    """
    text = os.fspath(path)
    frames: list[Frame] = []
    for file in source_files(text):
        if Path(file).suffix.lower() in TIFF_SUFFIXES:
            frames.extend(_tiff_frames(file))
        else:
            frames.append(_pillow_frame(file))
    if not frames:
        raise InputError(f"no image frames found in {text}")
    first = frames[0]
    for frame in frames[1:]:
        if frame.shape != first.shape or frame.dtype != first.dtype:
            raise InputError(
                f"{frame.label} has shape {frame.shape} and dtype {frame.dtype}, but the "
                f"first frame {first.label} has shape {first.shape} and dtype {first.dtype}; "
                "all frames must match"
            )
    return frames


def read_frame(frame: Frame) -> np.ndarray:
    """Decode one frame as a ``(1, *shape)`` block: a TIFF page with tifffile, a PNG/JPEG with imageio.

    The file is opened and closed here, so this can run in any process. Colour
    TIFF pages stored plane by plane come back channel-last, like PNG. The
    pixels are checked against the header seen at open time, so a file
    replaced in between gives an error naming it rather than a misshapen block.

    Raises
    ------
    InputError
        The file is missing, cannot be decoded, or no longer matches its header.
    """
    if frame.ifd_offset is not None:
        from convpipe.tiffpages import read_pages

        pixels = read_pages([(frame.path, frame.page, frame.ifd_offset)])[0]
    else:
        import imageio.v3 as iio

        try:
            pixels = iio.imread(frame.path, index=0, plugin="pillow")
        except Exception as exc:
            raise InputError(f"cannot read {frame.path}: {exc}") from exc
    if pixels.shape != frame.shape or pixels.dtype != frame.dtype:
        raise InputError(
            f"{frame.path} (page {frame.page}) decoded to shape {pixels.shape} and dtype {pixels.dtype}, "
            f"but its header said {frame.shape} and {frame.dtype}; did the file change?"
        )
    return pixels[np.newaxis]


def open_image_stack(path: str | os.PathLike[str]) -> da.Array:
    """An image source as a lazy Dask array, one frame per chunk.

    The result has shape ``(N, H, W)``, or ``(N, H, W, C)`` for colour frames,
    and a single graph layer of ``N`` tasks, each calling :func:`read_frame`
    on one :class:`Frame`, so the graph pickles for distributed workers. Only
    headers are read here; see :func:`list_frames` for the errors.
    """
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    frames = list_frames(path)
    first = frames[0]
    name = "imread-" + tokenize([_identity(frame) for frame in frames])
    zeros = (0,) * len(first.shape)
    graph = {(name, i, *zeros): (read_frame, frame) for i, frame in enumerate(frames)}
    chunks = ((1,) * len(frames), *((size,) for size in first.shape))
    return da.Array(
        HighLevelGraph.from_collections(name, graph, dependencies=()),
        name,
        chunks,
        dtype=first.dtype,
        meta=np.empty((0,) * (len(first.shape) + 1), dtype=first.dtype),
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
                if not entry.name.startswith(".") and entry.is_file() and _is_image_file(entry.name)
            ]
        if not found:
            raise InputError(f"no image files (.png, .tif, .tiff, .jpg, .jpeg) in folder {text}")
    elif os.path.isfile(text):
        if not _is_image_file(text):
            raise InputError(f"{text} is not a .png, .tif, .tiff, .jpg or .jpeg file")
        found = [os.path.abspath(text)]
    elif GLOB_CHARACTERS & set(text):
        matches = glob.glob(text, recursive=True)
        found = [os.path.abspath(m) for m in matches if os.path.isfile(m) and _is_image_file(m)]
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
            frames = [tiff_page_frame(file, page) for page in tif.pages if not page.is_reduced]
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read TIFF file {file}: {exc}") from exc
    if not frames:
        raise InputError(f"cannot read TIFF file {file}: no readable full-resolution page")
    return frames


def tiff_page_frame(file: str, page: tifffile.TiffPage) -> Frame:
    """The :class:`Frame` of a TIFF page, colour samples last even when stored plane by plane."""
    from convpipe.tiffpages import is_planar_colour

    if page.dtype is None:
        raise InputError(f"{file} (page {page.index}) has a pixel type tifffile cannot decode")
    shape = tuple(page.shape)
    if is_planar_colour(page):
        shape = (*shape[1:], shape[0])
    return Frame(file, page.index, shape, page.dtype, page.offset)


def _pillow_frame(file: str) -> Frame:
    import imageio.v3 as iio

    try:
        props = iio.improps(file, index=0, plugin="pillow")
    except Exception as exc:
        raise InputError(f"cannot read image file {file}: {exc}") from exc
    return Frame(file, 0, tuple(props.shape), props.dtype)


def _identity(frame: Frame) -> tuple[object, ...]:
    """What makes a task's result change: the frame and its file's size and time."""
    stat = os.stat(frame.path)
    return frame.path, frame.page, frame.ifd_offset, stat.st_size, stat.st_mtime_ns
