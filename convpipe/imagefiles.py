"""Image files (PNG, JPEG, TIFF) as a lazy Dask stack.

A *source* is a folder of image files, a glob pattern, or a single image file
(a multi-page TIFF gives one frame per page). Opening a source reads only file
headers, so a frame whose shape or dtype differs from the first is reported at
once, by name. Pixels are decoded inside Dask tasks by a :class:`FrameStack`,
a picklable list of frame references, so the graph can be shipped to worker
processes.
Dask, tifffile and imageio are imported where they are used: a command that
only plans a Zarr input loads none of them.
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
    frames: list[Frame] = []
    for file in source_files(os.fspath(path)):
        if Path(file).suffix.lower() in TIFF_SUFFIXES:
            frames.extend(_tiff_frames(file))
        else:
            frames.append(_pillow_frame(file))
    first = frames[0]  # source_files found a file, and a TIFF file without a page is refused
    for frame in frames[1:]:
        if frame.shape != first.shape or frame.dtype != first.dtype:
            raise InputError(
                f"{frame.label} has shape {frame.shape} and dtype {frame.dtype}, but the "
                f"first frame {first.label} has shape {first.shape} and dtype {first.dtype}; "
                "all frames must match"
            )
    return frames


@dataclass(frozen=True, eq=False)
class FrameStack:
    """Frames of an image source as one array, read region by region.

    A picklable list of frame references (path, page, TIFF directory offset):
    no open file handle travels through a Dask graph, and each read opens its
    files itself. TIFF pages decode only the tiles (or strips) under a region
    (:func:`convpipe.tiffpages.read_pages`); PNG and JPEG files decode whole.

    Attributes
    ----------
    frames
        In C order of the leading axes: frame ``i`` holds the ``i``-th index
        of ``shape[:-frame_ndim]``.
    shape
        Leading axes, then the frame's ``(H, W)`` or ``(H, W, C)``.
    chunks
        Stored chunks: 1 per leading axis, the page's tile (or strip) along
        ``y`` and ``x`` (a whole PNG or JPEG frame), every sample.
    key
        The config key read errors carry (``input.path`` in a run; none for
        ``ingest`` and previews, which have no config).
    """

    frames: tuple[Frame, ...]
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    key: str | None = None

    @property
    def dtype(self) -> np.dtype:
        return self.frames[0].dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def frame_ndim(self) -> int:
        return len(self.frames[0].shape)

    def __dask_tokenize__(self) -> tuple:
        from dask.base import tokenize

        files = dict.fromkeys(frame.path for frame in self.frames)
        stamps = [(file, os.stat(file).st_size, os.stat(file).st_mtime_ns) for file in files]
        pages = [(frame.path, frame.page, frame.ifd_offset) for frame in self.frames]
        return ("convpipe.FrameStack", tokenize(stamps, pages), self.shape, self.dtype.str)

    def __getitem__(self, region: tuple[slice | int, ...]) -> np.ndarray:
        """Read ``region`` (a slice or an index per axis), decoding only the tiles or strips under it."""
        region = tuple(region) + (slice(None),) * (self.ndim - len(region))
        dropped = tuple(a for a, s in enumerate(region) if not isinstance(s, slice))
        region = tuple(s if isinstance(s, slice) else slice(s, s + 1) for s in region)
        lead = self.ndim - self.frame_ndim
        positions = np.arange(len(self.frames)).reshape(self.shape[:lead])[region[:lead]]
        if positions.size == 0:  # an empty selection
            return np.empty(_region_shape(region, self.shape), self.dtype)
        parts = read_frames([self.frames[i] for i in positions.flat], region[lead:], self.key)
        block = np.stack(parts).reshape(*positions.shape, *parts[0].shape)
        return block.squeeze(axis=dropped) if dropped else block

    def to_dask(self, chunks: tuple[tuple[int, ...], ...]):
        """The stack as a Dask array with the given explicit chunks, one read per chunk.

        A frame stored as a single chunk (one strip, a PNG) cannot be read in
        parts: then each task reads whole frames and Dask splits them, so a
        frame is decoded once, not once per tile.
        """
        import dask.array as da
        from dask.base import tokenize

        frame_axes = range(self.ndim - self.frame_ndim, self.ndim)
        whole = all(self.chunks[a] >= self.shape[a] for a in frame_axes)
        if whole:
            read_chunks = tuple((self.shape[a],) if a in frame_axes else c for a, c in enumerate(chunks))
        else:
            read_chunks = chunks
        prefix = "tiff-" if self.frames[0].ifd_offset is not None else "imread-"
        name = prefix + tokenize(self, read_chunks)
        array = da.from_array(self, chunks=read_chunks, asarray=False, lock=False, name=name)
        return array.rechunk(chunks) if whole else array


def read_frames(
    frames: Sequence[Frame], region: tuple[slice, ...] = (), key: str | None = None
) -> list[np.ndarray]:
    """``region`` (of ``y``, ``x`` and samples) of each frame, samples last.

    TIFF pages go through :func:`convpipe.tiffpages.read_pages`, each file
    opened once; PNG and JPEG files are decoded whole by imageio (Pillow).
    What is decoded is checked against the frame's header, so a file replaced
    since it was listed gives an error naming it rather than a misshapen
    block. Errors are :class:`InputError` carrying ``key``.
    """
    tiff = [frame for frame in frames if frame.ifd_offset is not None]
    pages: dict[Frame, np.ndarray] = {}
    if tiff:
        from convpipe.tiffpages import read_pages

        refs = [(frame.path, frame.page, frame.ifd_offset) for frame in tiff]
        pages = dict(zip(tiff, read_pages(refs, region, key=key)))
    parts = []
    for frame in frames:
        whole = frame not in pages  # a PNG or JPEG: checked whole, then cut
        part = _read_image(frame, key) if whole else pages[frame]
        want = frame.shape if whole else _region_shape(region, frame.shape)
        if part.shape != want or part.dtype != frame.dtype:
            where = f"{key}: " if key else ""  # as the run prints it: no config file to lead it
            raise InputError(
                f"{where}{frame.label} decoded to shape {part.shape} and dtype {part.dtype}, "
                f"but its header said {want} and {frame.dtype}; did the file change?",
                key=key,
            )
        parts.append(part[region] if whole else part)
    return parts


def _region_shape(region: tuple[slice, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of ``array[region]`` for an array of ``shape`` (``region`` may leave out trailing axes)."""
    return tuple(len(range(*s.indices(n))) for s, n in zip(region, shape)) + shape[len(region) :]


def _read_image(frame: Frame, key: str | None = None) -> np.ndarray:
    import imageio.v3 as iio

    try:
        return iio.imread(frame.path, index=0, plugin="pillow")
    except Exception as exc:
        where = f"{key}: " if key else ""  # as the run prints it, like a TIFF page's error
        raise InputError(f"{where}cannot read {frame.path}: {exc}", key=key) from exc


def open_image_stack(path: str | os.PathLike[str]) -> da.Array:
    """An image source as a lazy Dask array, one frame per chunk.

    The result has shape ``(N, H, W)``, or ``(N, H, W, C)`` for colour frames,
    and a single graph layer of ``N`` tasks, each reading one frame of a
    :class:`FrameStack`, so the graph pickles for distributed workers. Only
    headers are read here; see :func:`list_frames` for the errors.
    """
    import dask.array as da
    from dask.base import tokenize

    frames = list_frames(path)
    stack = FrameStack(tuple(frames), (len(frames), *frames[0].shape), (1, *frames[0].shape))
    chunks = ((1,) * len(frames), *((n,) for n in frames[0].shape))
    name = "imread-" + tokenize(stack)
    return da.from_array(stack, chunks=chunks, asarray=False, lock=False, name=name, inline_array=True)


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
