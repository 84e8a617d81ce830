"""Converting image files into a chunked Zarr stack (``convpipe ingest``).

Repeated runs then read Zarr instead of decoding image files.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zarr
from tqdm import tqdm

from convpipe.codecs import compressors_for
from convpipe.errors import ConvpipeError, OutputError, storage_errors
from convpipe.imagefiles import ZARR_MARKERS, Frame, list_frames, read_frames

MAX_CHUNK_BYTES = 16 * 2**20
"""Upper bound for the default Zarr chunk of :func:`ingest` (16 MiB)."""
DEFAULT_TILE = 1024
"""Spatial tile edge used when a whole frame is larger than :data:`MAX_CHUNK_BYTES`."""


def default_ingest_chunks(frame_shape: tuple[int, ...], dtype: np.dtype | str) -> tuple[int, ...]:
    """Zarr chunks for a stack of frames: one whole frame, or square tiles of it.

    A chunk is ``(1, H, W[, C])`` when that fits in :data:`MAX_CHUNK_BYTES`;
    otherwise the frame is cut into :data:`DEFAULT_TILE` square tiles (halved
    until they fit), colour samples always kept together.

    Examples
    --------
    >>> default_ingest_chunks((512, 512), "uint16")
    (1, 512, 512)
    >>> default_ingest_chunks((8192, 8192, 3), "uint8")
    (1, 1024, 1024, 3)
    """
    itemsize = np.dtype(dtype).itemsize
    height, width, *colour = frame_shape
    samples = math.prod(colour)
    if height * width * samples * itemsize <= MAX_CHUNK_BYTES:
        return (1, height, width, *colour)
    tile = DEFAULT_TILE
    while tile > 1 and tile * tile * samples * itemsize > MAX_CHUNK_BYTES:
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
    ``("t", "y", "x", "c")``; the source dtype; the default ``blosc-lz4`` codec
    (bit shuffle, which compresses integer frames better than byte shuffle).
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
        The source cannot be opened; see :func:`list_frames`.
    OutputError
        ``dest`` exists (without ``overwrite``), is not a Zarr store, would
        overlap the source, invalid ``chunks``, or writing failed.
    StorageError
        The storage refused (see :func:`convpipe.errors.storage_errors`).
    """
    with storage_errors(writing=os.fspath(dest)):
        frames = list_frames(source)
        shape, dtype = (len(frames), *frames[0].shape), frames[0].dtype
        chunk_shape = _parse_chunks(chunks, shape, dtype)
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
        try:
            group = zarr.open_group(str(dest_path), mode="w-", zarr_format=3)
            array = group.create_array(
                "0",
                shape=shape,
                dtype=dtype,
                chunks=chunk_shape,
                compressors=compressors_for("blosc-lz4", 3),
                fill_value=0,
                dimension_names=("t", "y", "x", "c")[: len(shape)],
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


def parse_chunks_text(text: str | None) -> tuple[int, ...] | None:
    """``--chunks`` text such as ``1,1024,1024`` (or ``1x1024x1024``) as a chunk shape; None stays None.

    Examples
    --------
    >>> parse_chunks_text("1,512x512")
    (1, 512, 512)
    """
    if text is None:
        return None
    try:
        chunks = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        raise ConvpipeError(
            f"--chunks: expected comma-separated positive integers such as 1,1024,1024, got {text!r}",
            key="--chunks",
        ) from None
    if any(c < 1 for c in chunks):
        raise ConvpipeError(f"--chunks: chunk sizes must be positive, got {text!r}", key="--chunks")
    return chunks


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
    files = {Path(frame.path) for frame in frames}
    if any(dest == file or dest in file.parents for file in files):
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
        return np.stack(read_frames(frames[start : start + slab]))

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
