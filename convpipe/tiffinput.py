"""Image inputs for a run: TIFF files read region by region, and TIFF metadata.

Every image source becomes a :class:`convpipe.imagefiles.FrameStack` whose
stored chunks are the pages' tiles (or strips), so each task decodes only the
tiles under it. A single OME-TIFF or ImageJ hyperstack keeps the axes its
metadata states (level 0 of a pyramid); other sources are ``t, y, x`` plus
``c`` for samples, one frame per full-resolution page.
"""

from __future__ import annotations

import math
from pathlib import Path

import tifffile

from convpipe.axes import NAME_TYPES, SAMPLE_LABELS, AxisInfo, SourceAxes, image_axes
from convpipe.errors import InputError
from convpipe.imagefiles import (
    TIFF_SUFFIXES,
    Frame,
    FrameStack,
    list_frames,
    source_files,
    tiff_page_frame,
)
from convpipe.tiffpages import page_chunks

#: Series whose metadata names the axes (tifffile's ``TiffPageSeries.kind``).
NAMED_SERIES = {"ome": "OME-TIFF", "imagej": "ImageJ TIFF"}


def open_image_input(path: str) -> tuple[FrameStack, SourceAxes]:
    """An image source as a :class:`FrameStack` for a run, and its axes, from the headers only.

    One TIFF file whose first series is an OME-TIFF or ImageJ hyperstack gives
    the series' shape and axes (level 0 of a pyramid); anything else gives one
    frame per full-resolution page, ``t, y, x`` (+ ``c``). Raises
    :class:`InputError` naming the file for anything unreadable or inconsistent.
    """
    files = source_files(path)
    is_tiff = Path(files[0]).suffix.lower() in TIFF_SUFFIXES
    named = _named_series(files[0]) if len(files) == 1 and is_tiff else None
    if named is not None:
        return named
    frames = list_frames(path)
    first = frames[0]
    tiled = all(frame.ifd_offset is not None for frame in frames)  # else frames are read whole
    chunks = _page_chunks(first) if tiled else first.shape
    stack = FrameStack(tuple(frames), (len(frames), *first.shape), (1, *chunks), key="input.path")
    samples = first.shape[2] if len(first.shape) == 3 else None
    return stack, image_axes(stack.ndim, samples)


def _named_series(file: str) -> tuple[FrameStack, SourceAxes] | None:
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
            letters = (
                series.axes[: len(lead_shape)]
                + page_axes.replace("S", "")
                + ("S" if "S" in page_axes else "")
            )
            pixels = _ome_pixels(tif) if series.kind == "ome" else {}
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read TIFF file {file}: {exc}", key="input.path") from exc
    shape = (*lead_shape, *first.shape)
    stack = FrameStack(frames, shape, (1,) * len(lead_shape) + _page_chunks(first), key="input.path")
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
