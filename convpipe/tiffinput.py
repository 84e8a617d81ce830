"""TIFF inputs read region by region, through the tiles (or strips) under each task.

A TIFF source (one file, a folder or a glob of TIFF files) becomes a
:class:`TiffStack`, a picklable list of page references (path, page index,
directory offset): no open file handle travels through a Dask graph, and each
read opens the file itself (:func:`convpipe.tiffpages.read_pages`). A single
OME-TIFF or ImageJ hyperstack keeps the axes its metadata states (level 0 of
a pyramid); other files are ``t, y, x`` plus ``c`` for samples, one frame per
full-resolution page, like every image source (:mod:`convpipe.imagefiles`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from dask.base import tokenize

from convpipe.axes import NAME_TYPES, SAMPLE_LABELS, AxisInfo, SourceAxes, image_axes
from convpipe.errors import InputError
from convpipe.imagefiles import TIFF_SUFFIXES, Frame, list_frames, source_files, tiff_page_frame
from convpipe.tiffpages import page_chunks, read_pages

#: Series whose metadata names the axes (tifffile's ``TiffPageSeries.kind``).
NAMED_SERIES = {"ome": "OME-TIFF", "imagej": "ImageJ TIFF"}


@dataclass(frozen=True, eq=False)
class TiffStack:
    """A TIFF source as a stack of pages, read region by region.

    Attributes
    ----------
    frames
        The pages in C order of the leading axes: frame ``i`` holds the
        ``i``-th index of ``shape[:-frame_ndim]``.
    shape
        Leading axes, then the page's ``(H, W)`` or ``(H, W, C)``.
    dtype
        The pixel type.
    chunks
        Stored chunks: 1 per leading axis, the page's tile (or strip) along
        ``y`` and ``x``, every sample.
    """

    frames: tuple[Frame, ...]
    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def frame_ndim(self) -> int:
        return len(self.frames[0].shape)

    def __dask_tokenize__(self) -> tuple:
        files = dict.fromkeys(frame.path for frame in self.frames)
        stamps = [(file, os.stat(file).st_size, os.stat(file).st_mtime_ns) for file in files]
        pages = [(frame.path, frame.page, frame.ifd_offset) for frame in self.frames]
        return ("convpipe.TiffStack", tokenize(stamps, pages), self.shape, self.dtype.str)

    def __getitem__(self, region: tuple[slice | int, ...]) -> np.ndarray:
        """Read ``region`` (a slice or an index per axis), decoding only the tiles or strips under it."""
        region = tuple(region) + (slice(None),) * (self.ndim - len(region))
        dropped = tuple(a for a, s in enumerate(region) if not isinstance(s, slice))
        region = tuple(s if isinstance(s, slice) else slice(s, s + 1) for s in region)
        lead = self.ndim - self.frame_ndim
        positions = np.arange(len(self.frames)).reshape(self.shape[:lead])[region[:lead]]
        if positions.size == 0:  # an empty selection
            return np.empty(tuple(len(range(*s.indices(n))) for s, n in zip(region, self.shape)), self.dtype)
        frames = [self.frames[i] for i in positions.flat]
        parts = read_pages([(f.path, f.page, f.ifd_offset) for f in frames], region[lead:], key="input.path")
        _check_parts(parts, frames, region[lead:], self.dtype)
        block = np.stack(parts).reshape(*positions.shape, *parts[0].shape)
        return block.squeeze(axis=dropped) if dropped else block

    def to_dask(self, chunks: tuple[tuple[int, ...], ...]):
        """The stack as a Dask array with the given explicit chunks, one read per chunk.

        A page stored as a single chunk (one strip) cannot be read in parts:
        then each task reads whole pages and Dask splits them, so a page is
        decoded once, not once per tile.
        """
        import dask.array as da

        frame_axes = range(self.ndim - self.frame_ndim, self.ndim)
        whole = all(self.chunks[a] >= self.shape[a] for a in frame_axes)
        read_chunks = (
            tuple(c if a not in frame_axes else (self.shape[a],) for a, c in enumerate(chunks)) if whole else chunks
        )
        name = "tiff-" + tokenize(self, read_chunks)
        array = da.from_array(self, chunks=read_chunks, asarray=False, lock=False, name=name)
        return array.rechunk(chunks) if whole else array


def _check_parts(parts: list[np.ndarray], frames: list[Frame], region: tuple[slice, ...], dtype: np.dtype) -> None:
    """Every decoded part must have the shape and dtype the headers promised (else the file changed)."""
    for part, frame in zip(parts, frames):
        want = tuple(len(range(*s.indices(n))) for s, n in zip(region, frame.shape))
        if part.shape != want or part.dtype != dtype:
            raise InputError(
                f"input.path: page {frame.page} of {frame.path} decoded to shape {part.shape} and dtype "
                f"{part.dtype}, but its header said {want} and {dtype}; did the file change?",
                key="input.path",
            )


def is_tiff_source(path: str) -> bool:
    """Whether every file of the image source ``path`` is a TIFF file."""
    return all(Path(file).suffix.lower() in TIFF_SUFFIXES for file in source_files(path))


def open_tiff_stack(path: str) -> tuple[TiffStack, SourceAxes]:
    """A TIFF source as a :class:`TiffStack` and its axes, from the headers only.

    One file whose first series is an OME-TIFF or ImageJ hyperstack gives
    the series' shape and axes (level 0 of a pyramid); anything else gives
    one frame per full-resolution page, ``t, y, x`` (+ ``c``), like every
    image source. Raises :class:`InputError` naming the file for anything
    unreadable or inconsistent.
    """
    files = source_files(path)
    named = _named_series(files[0]) if len(files) == 1 else None
    if named is not None:
        return named
    frames = list_frames(path)
    first = frames[0]
    stack = TiffStack(tuple(frames), (len(frames), *first.shape), first.dtype, (1, *_page_chunks(first)))
    samples = first.shape[2] if len(first.shape) == 3 else None
    return stack, image_axes(stack.ndim, samples)


def _named_series(file: str) -> tuple[TiffStack, SourceAxes] | None:
    """The OME or ImageJ series of ``file`` as a stack, or None when the file names no axes."""
    try:
        with tifffile.TiffFile(file) as tif:
            series = tif.series[0] if tif.series else None
            if series is None or series.kind not in NAMED_SERIES:
                return None
            origin = f"{NAMED_SERIES[series.kind]} axes"
            keyframe = series.keyframe
            page_axes = keyframe.axes
            lead_shape = tuple(series.shape[: len(series.shape) - len(page_axes)])
            pages = list(series.pages)
            if (
                series.is_multifile
                or not series.axes.endswith(page_axes)
                or math.prod(lead_shape) != len(pages)
                or any(page is None or page.parent is not tif for page in pages)
            ):
                raise InputError(
                    f"{file}: the {origin} ({series.axes} {series.shape}) do not map one page per plane of "
                    "this file (a multi-file or incomplete series?); convert it with `convpipe ingest`",
                    key="input.path",
                )
            first = tiff_page_frame(file, keyframe)
            frames = tuple(Frame(file, page.index, first.shape, first.dtype, page.offset) for page in pages)
            letters = series.axes[: len(lead_shape)] + page_axes.replace("S", "") + ("S" if "S" in page_axes else "")
            pixels = _ome_pixels(tif) if series.kind == "ome" else {}
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read TIFF file {file}: {exc}", key="input.path") from exc
    shape = (*lead_shape, *first.shape)
    stack = TiffStack(frames, shape, first.dtype, (1,) * len(lead_shape) + _page_chunks(first))
    return stack, tiff_axes(letters, shape, origin, pixels)


def _ome_pixels(tif: tifffile.TiffFile) -> dict:
    """The ``Pixels`` element of the first OME ``Image`` (physical sizes, channels), as a dict."""
    image = tifffile.xml2dict(tif.ome_metadata).get("OME", {}).get("Image") or {}
    image = image[0] if isinstance(image, list) else image
    return image.get("Pixels") or {}


def _page_chunks(frame: Frame) -> tuple[int, ...]:
    """The stored chunk of a page (tile, or strip of rows) with every sample, from its directory."""
    with tifffile.TiffFile(frame.path) as tif:
        tif.filehandle.seek(frame.ifd_offset)
        chunks = page_chunks(tifffile.TiffPage(tif, index=frame.page))
    return (*chunks, *frame.shape[2:])


#: OME-XML unit symbols as OME-NGFF unit names; another symbol leaves the axis without a unit.
OME_UNITS = {
    "nm": "nanometer", "µm": "micrometer", "um": "micrometer", "mm": "millimeter", "cm": "centimeter",
    "m": "meter", "Å": "angstrom", "ns": "nanosecond", "µs": "microsecond", "ms": "millisecond",
    "s": "second", "min": "minute", "h": "hour",
}  # fmt: skip
#: Where OME-XML keeps the step of an axis, and its unit when the XML names none (the schema's defaults).
OME_STEPS = {"X": ("PhysicalSizeX", "µm"), "Y": ("PhysicalSizeY", "µm"), "Z": ("PhysicalSizeZ", "µm"),
             "T": ("TimeIncrement", "s")}  # fmt: skip


def tiff_axes(letters: str, shape: tuple[int, ...], origin: str, pixels: dict) -> SourceAxes:
    """A series' axes from tifffile's letters: ``T`` time, ``Z`` space, ``C`` and ``S`` (samples) channel.

    ``Y``, ``X`` are space; other letters (``Q``, ``I``: unknown) name nothing.
    ``pixels`` (OME-XML ``Pixels``) gives the physical step and unit of
    ``X``, ``Y``, ``Z`` and ``T``, and the channels' names (empty for ImageJ files).
    """
    infos = []
    for letter in letters:
        name = {"S": "c", "Q": None, "I": None}.get(letter, letter.lower())
        step_key, default_unit = OME_STEPS.get(letter, (None, None))
        step = pixels.get(step_key)
        unit = OME_UNITS.get(str(pixels.get(f"{step_key}Unit", default_unit))) if step is not None else None
        infos.append(AxisInfo(name, NAME_TYPES.get(name) if name else None, unit, float(step or 1.0)))
    return SourceAxes(tuple(infos), origin, _channel_labels(letters, shape, pixels))


def _channel_labels(letters: str, shape: tuple[int, ...], pixels: dict) -> tuple[str, ...] | None:
    """OME channel names of the ``C`` axis, else R, G, B(, A) for samples, else None."""
    if "C" in letters:
        channels = pixels.get("Channel") or []
        channels = channels if isinstance(channels, list) else [channels]
        names = tuple(str(c.get("Name") or "") for c in channels if isinstance(c, dict))
        return names if len(names) == shape[letters.index("C")] and all(names) else None
    return SAMPLE_LABELS.get(shape[-1]) if letters.endswith("S") else None
