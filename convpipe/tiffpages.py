"""One TIFF page read by region, decoding only the tiles or strips under it.

:func:`read_pages` opens the file, builds each page from its directory
offset (no walk over the earlier pages), reads the bytes of the tiles (or
strips) the region crosses and decodes each with tifffile's own decoder
(``TiffPage.decode``). The file is opened and closed inside the call, so it
can run in any process. Every read of a TIFF frame goes through here
(:func:`convpipe.imagefiles.read_frames`).

Not through tifffile's Zarr store (``TiffPage.aszarr``), which reads the same
tiles with the same decoder, but with zarr's per-chunk machinery around each
tile: several times slower.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tifffile

from convpipe.errors import InputError

_PLANAR_SEPARATE = 2

#: One page: its file, its index and its directory's file offset.
PageRef = tuple[str, int, int]


def read_pages(
    pages: Sequence[PageRef], region: tuple[slice, ...] = (), key: str | None = None
) -> list[np.ndarray]:
    """``region`` (slices of ``y``, ``x`` and, for colour pages, samples) of each page, samples last.

    Each file is opened once for all its pages and closed before returning.
    A page that cannot be read or decoded (a truncated or corrupt tile) is an
    :class:`InputError` naming the page and the file, and carrying ``key``.
    """
    parts = []
    open_files: dict[str, tifffile.TiffFile] = {}
    try:
        for path, index, offset in pages:
            try:
                if path not in open_files:
                    open_files[path] = tifffile.TiffFile(path)
                parts.append(_read_page(open_files[path], index, offset, region))
            except Exception as exc:
                where = f"{key}: " if key else ""  # as the run prints it: no config file to lead it
                message = f"{where}cannot read page {index} of {path} ({type(exc).__name__}: {exc})"
                raise InputError(message, key=key) from exc
    finally:
        for tif in open_files.values():
            tif.close()
    return parts


def _read_page(tif: tifffile.TiffFile, index: int, offset: int, region: tuple[slice, ...]) -> np.ndarray:
    tif.filehandle.seek(offset)
    page = tifffile.TiffPage(tif, index=index)
    ys, xs, samples = (*region, slice(None), slice(None), slice(None))[:3]
    (y0, y1, sy), (x0, x1, sx) = ys.indices(page.imagelength), xs.indices(page.imagewidth)
    y1, x1 = max(y0, y1), max(x0, x1)
    pixels = _decode_box(page, y0, y1, x0, x1)  # (planes, h, w, contiguous samples)
    pixels = np.moveaxis(pixels, 0, -2).reshape(y1 - y0, x1 - x0, pixels.shape[0] * pixels.shape[3])[
        ::sy, ::sx
    ]
    return pixels[..., samples] if len(page.shape) == 3 else pixels[..., 0]


def _decode_box(page: tifffile.TiffPage, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Rows ``y0:y1``, columns ``x0:x1`` of a page, decoding only the tiles or strips they cross.

    Strile ``(plane * rows + row) * columns + column`` is decoded by
    ``TiffPage.decode`` (tifffile's own decoder for every compression,
    predictor and bit layout), padded to a whole tile or strip as tifffile's
    Zarr store does; absent striles read as the page's ``nodata`` value.
    """
    if page.imagedepth != 1:
        raise ValueError(f"volumetric tiles (depth {page.imagedepth}) are not supported")
    planes, contiguous = page.shaped[0], page.shaped[4]
    th, tw = page_chunks(page)
    rows, columns = -(-page.imagelength // th), -(-page.imagewidth // tw)
    box = np.full((planes, y1 - y0, x1 - x0, contiguous), page.nodata, page.dtype)
    extra = {"jpegtables": page.jpegtables, "jpegheader": page.jpegheader}
    decode_args = {name: value for name, value in extra.items() if value is not None}
    handle = page.parent.filehandle
    for plane in range(planes):
        for row in range(y0 // th, -(-y1 // th)):
            for column in range(x0 // tw, -(-x1 // tw)):
                strile = (plane * rows + row) * columns + column
                offset, size = page.dataoffsets[strile], page.databytecounts[strile]
                if not offset or not size:
                    continue
                handle.seek(offset)
                segment = page.decode(handle.read(size), strile, _fullsize=True, **decode_args)[0]
                segment = segment.reshape(th, tw, contiguous)
                top, left = row * th, column * tw
                ya, yb, xa, xb = max(y0, top), min(y1, top + th), max(x0, left), min(x1, left + tw)
                box[plane, ya - y0 : yb - y0, xa - x0 : xb - x0] = segment[
                    ya - top : yb - top, xa - left : xb - left
                ]
    return box


def is_planar_colour(page: tifffile.TiffPage) -> bool:
    """Colour samples stored plane by plane (``planarconfig`` 2), so the page reads as ``(S, H, W)``."""
    return page.planarconfig == _PLANAR_SEPARATE and page.samplesperpixel > 1 and page.ndim == 3


def page_chunks(page: tifffile.TiffPage) -> tuple[int, int]:
    """The ``(y, x)`` size of a page's stored chunk: its tile, or its strip of rows."""
    return tuple(page.chunks[-2:] if is_planar_colour(page) else page.chunks[:2])
