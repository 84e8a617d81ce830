"""One TIFF page read by region, through tifffile's Zarr store of the page.

:func:`read_pages` opens the file, builds each page from its directory
offset (no walk over the earlier pages) and reads a region through
``TiffPage.aszarr``: only the tiles or strips under the region are read and
decoded. The file is opened and closed inside the call, so it can run in
any process: tifffile's store holds an open file and cannot be pickled.
Whole frames (:func:`convpipe.imagefiles.read_frame`) and regions of a
:class:`convpipe.tiffinput.TiffStack` both go through here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tifffile
import zarr

from convpipe.errors import InputError

DECODE_THREADS = 2
"""Above 1, tifffile's store decodes compressed tiles off zarr's single event-loop thread, so that
concurrent tasks decode in parallel (measured on zlib tiles: faster with 2 than with 1). Uncompressed
tiles are read with 1: their decoding is a copy, and handing it to a thread made reading slower."""
_UNCOMPRESSED = 1

_PLANAR_SEPARATE = 2

#: One page: its file, its index and its directory's file offset (None: find it by index).
PageRef = tuple[str, int, "int | None"]


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


def _read_page(tif: tifffile.TiffFile, index: int, offset: int | None, region: tuple[slice, ...]) -> np.ndarray:
    if offset is None:
        page = tif.pages[index]
    else:
        tif.filehandle.seek(offset)
        page = tifffile.TiffPage(tif, index=index)
    store = page.aszarr(maxworkers=1 if page.compression == _UNCOMPRESSED else DECODE_THREADS)
    try:
        pixels = zarr.open_array(store, mode="r", zarr_format=2)
        if is_planar_colour(page):  # stored (S, H, W): read the planes, then put the samples last
            ys, xs, samples = (*region, slice(None), slice(None), slice(None))[:3]
            return np.moveaxis(pixels[:, ys, xs], 0, -1)[..., samples]
        return pixels[region]
    finally:
        store.close()


def is_planar_colour(page: tifffile.TiffPage) -> bool:
    """Colour samples stored plane by plane (``planarconfig`` 2), so the page reads as ``(S, H, W)``."""
    return page.planarconfig == _PLANAR_SEPARATE and page.samplesperpixel > 1 and page.ndim == 3


def page_chunks(page: tifffile.TiffPage) -> tuple[int, int]:
    """The ``(y, x)`` size of a page's stored chunk: its tile, or its strip of rows."""
    return tuple(page.chunks[-2:] if is_planar_colour(page) else page.chunks[:2])
