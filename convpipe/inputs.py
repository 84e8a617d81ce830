"""Opening the input stack lazily: a Zarr array or group, or image files.

:func:`open_zarr_array` is the one place that opens a Zarr store and picks
its array; the input, ``convpipe inspect``, ``convpipe preview`` and the
output's reopening all go through it.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import zarr

from convpipe import imagefiles
from convpipe.axes import SourceAxes, zarr_axes
from convpipe.codecs import is_decode_error
from convpipe.errors import InputError
from convpipe.integrity import stored_objects
from convpipe.paths import StorageOptions, local_path, unreachable_errors, zarr_store

INPUT_DTYPES = (
    "uint8",
    "int8",
    "uint16",
    "int16",
    "uint32",
    "int32",
    "uint64",
    "int64",
    "float16",
    "float32",
    "float64",
)


@dataclass(frozen=True)
class InputStack:
    """The input, opened lazily: its geometry and how to read it with Dask."""

    path: str
    array_path: str | None
    shape: tuple[int, ...]
    dtype: np.dtype
    stored_chunks: tuple[int, ...]
    source: Any  # a zarr.Array, or a FrameStack of image files (both read by region)
    axes: SourceAxes | None = None
    """What the input says about its axes (names, types, units, positions)."""
    order: tuple[int, ...] | None = None
    """Set by :meth:`transposed`: axis ``j`` of this stack is axis ``order[j]`` of ``source``."""

    def transposed(self, order: tuple[int, ...]) -> InputStack:
        """The same input read with its axes in ``order`` (lazily, by Dask)."""
        base = self.order or tuple(range(len(self.shape)))
        shape = tuple(self.shape[a] for a in order)
        chunks = tuple(self.stored_chunks[a] for a in order)
        return replace(self, shape=shape, stored_chunks=chunks, order=tuple(base[a] for a in order))

    def stored_region(self, region: tuple) -> tuple:
        """``region`` (or any per-axis values) of the stack as seen, in the stored axis order."""
        if self.order is None:
            return tuple(region)
        return tuple(region[self.order.index(a)] for a in range(len(region)))

    @property
    def source_shape(self) -> tuple[int, ...]:
        """The shape as stored (before :meth:`transposed`)."""
        return self.stored_region(self.shape)

    @property
    def source_chunks(self) -> tuple[int, ...]:
        """The stored chunks in stored axis order (before :meth:`transposed`)."""
        return self.stored_region(self.stored_chunks)

    def to_dask(self, chunks: tuple[tuple[int, ...], ...]):
        """The stack as a Dask array with the given explicit chunks."""
        import dask.array as da

        source_chunks = self.stored_region(chunks)
        if isinstance(self.source, zarr.Array):
            reader = CheckedReader(self.source, self.path)
            array = da.from_array(reader, chunks=source_chunks, asarray=False, lock=False)
        else:  # image files
            array = self.source.to_dask(source_chunks)
        return array if self.order is None else array.transpose(self.order)

    def identity(self) -> dict[str, Any]:
        """What identifies this input for provenance and resume fingerprints."""
        return {
            "path": self.path,
            "array": self.array_path,
            "shape": list(self.shape),
            "dtype": str(self.dtype),
            "chunks": list(self.stored_chunks),
            "sampled_content": self.content_signature(),
            **({} if isinstance(self.source, zarr.Array) else {"files": self.files_signature()}),
        }

    def files_signature(self) -> str:
        """Hash of the name, size and modification time of every image file of the source.

        Image-file inputs have no per-chunk identities in the completion
        records (see :mod:`convpipe.integrity`): any file rewritten between an
        interrupted run and its resume changes the fingerprint instead.
        """
        digest = hashlib.sha256()
        for file in dict.fromkeys(frame.path for frame in self.source.frames):  # in order, each once
            status = os.stat(file)
            digest.update(f"{file}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
        return digest.hexdigest()[:32]

    def content_signature(self, samples: int = 4) -> str:
        """Hash of a few stored chunks spread over the stack (first, last, between).

        Cheap (``samples`` chunk reads) and enough to notice an input rewritten
        in place between an interrupted run and its resume.
        """
        shape, stored_chunks = self.source_shape, self.source_chunks
        grid = [-(-n // c) for n, c in zip(shape, stored_chunks)]
        total = math.prod(grid)
        picks = sorted({round(i * (total - 1) / max(1, samples - 1)) for i in range(samples)})
        reader = CheckedReader(self.source, self.path) if isinstance(self.source, zarr.Array) else self.source
        digest = hashlib.sha256()
        for flat in picks:
            index = np.unravel_index(flat, grid)
            region = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(index, stored_chunks, shape))
            digest.update(np.ascontiguousarray(np.asarray(reader[region])).tobytes())
        return digest.hexdigest()[:32]


class CheckedReader:
    """A Zarr array read region by region, where a stored chunk that cannot be decoded is an ``InputError`` naming it.

    Without it a corrupt chunk surfaces as the codec's own error deep in a
    Dask traceback (``RuntimeError: Zstd decompression error``) naming no file.
    """

    def __init__(self, array: zarr.Array, path: str) -> None:
        self.array, self.path = array, path
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def __dask_tokenize__(self) -> tuple:
        return ("convpipe.CheckedReader", self.path, str(self.array.store_path), self.shape, str(self.dtype))

    def __getitem__(self, region: tuple[slice, ...]) -> np.ndarray:
        try:
            return self.array[region]
        except Exception as exc:
            if not is_decode_error(exc):
                raise
            culprit = self._undecodable(region) or "one of the stored chunks it covers"
            raise InputError(
                f"input.path: the stored chunk {culprit} of {self.path} cannot be decoded "
                f"({type(exc).__name__}: {exc})",
                key="input.path",
            ) from None

    def _undecodable(self, region: tuple[slice, ...]) -> str | None:
        """The first stored chunk of ``region`` that fails to decode on its own."""
        for key, chunk_region in stored_objects(self.array, region).items():
            try:
                self.array[chunk_region]
            except Exception as exc:
                if not is_decode_error(exc):
                    raise
                return key
        return None


def open_input(
    path: str, array: str | None = None, storage_options: StorageOptions | None = None
) -> InputStack:
    """Open a Zarr array or group (format 2 or 3), or an image-file source, lazily.

    ``storage_options`` are the fsspec options of a URL ``path``. Errors carry
    the config key they are about (``input.path`` or ``input.array``).
    """
    local = local_path(path)
    if local is not None and imagefiles.is_image_source(str(local)):
        from convpipe.tiffinput import open_image_input  # tifffile loads here, for image inputs only

        stack, image_axes = open_image_input(str(local))
        return InputStack(path, None, stack.shape, stack.dtype, stack.chunks, stack, image_axes)
    if local is not None and not local.exists():
        raise InputError(f"{path} does not exist", key="input.path")
    node, name = open_zarr_array(
        path, array, keys=("input.path", "input.array"), storage_options=storage_options
    )
    if node.ndim < 2:
        message = f"{path} has {node.ndim} dimension(s) {node.shape}; expected at least 2-D"
        raise InputError(message, key="input.path")
    if node.dtype.kind not in "uif":
        message = f"{path} has dtype {node.dtype}; expected one of {', '.join(INPUT_DTYPES)}"
        raise InputError(message, key="input.path")
    if 0 in node.shape or 0 in node.chunks:
        message = f"{path} has shape {node.shape} and chunks {node.chunks}; expected no empty axis and no empty chunk"
        raise InputError(message, key="input.path")
    axes = zarr_axes(node, *enclosing_group(path, name, storage_options))
    return InputStack(path, array, tuple(node.shape), np.dtype(node.dtype), tuple(node.chunks), node, axes)


def enclosing_group(
    path: str, name: str | None, storage_options: StorageOptions | None = None
) -> tuple[Any, str | None]:
    """The group holding the input array and the array's path in it (for OME-NGFF metadata), or (None, None)."""
    if name is None:
        parent, _, name = path.rstrip("/").rpartition("/")
        path = parent
    if not path:
        return None, None
    try:
        store = zarr_store(path, storage_options, read_only=True)
        return zarr.open_group(store=store, mode="r", use_consolidated=False), name
    except (FileNotFoundError, NotADirectoryError, ValueError, KeyError, TypeError):  # no group there
        return None, None


def open_zarr_array(
    path: str,
    array: str | None = None,
    *,
    default: str | None = None,
    take_single: bool = True,
    mode: str = "r",
    keys: tuple[str, str] = ("path", "array"),
    storage_options: StorageOptions | None = None,
) -> tuple[zarr.Array, str | None]:
    """The Zarr array at ``path``, or the array ``array`` of the group there, and its name.

    Metadata is read as it is now, never from a consolidated copy (an
    unfinished output's attributes change). Without ``array``, a group gives
    its ``default`` array when it holds one, else its only array when
    ``take_single``. The name is None when ``path`` is an array itself.
    ``keys`` name the path and the array as the user gave them (config keys
    or options): errors carry one of them as their ``key`` and say how to
    choose an array with the second. ``storage_options`` are the fsspec
    options of a URL ``path``.
    """
    path_key, array_key = keys
    local = local_path(path)
    if local is not None and not local.exists():
        raise InputError(f"no such Zarr array or group: {path} (it does not exist)", key=path_key)
    try:
        store = zarr_store(path, storage_options, read_only=mode == "r")
        node = zarr.open(store=store, mode=mode, use_consolidated=False)
        if isinstance(node, zarr.Array):
            if array is not None:
                raise InputError(f"{path} is a single array, not a group; remove {array_key}", key=array_key)
            return node, None
        return pick_array(node, path, array, default=default, take_single=take_single, keys=keys)
    except (FileNotFoundError, NotADirectoryError, *UNREADABLE_METADATA) as exc:
        what = type(exc).__name__
        raise InputError(
            f"{path} is not a readable Zarr array or group ({what}: {exc})", key=path_key
        ) from None
    except unreachable_errors() as exc:
        if local is not None:
            raise  # a local disk's refusal: the storage-error policy decides
        raise InputError(f"cannot read {path} ({type(exc).__name__}: {exc})", key=path_key) from None


#: What zarr raises for metadata it cannot read: truncated JSON, a negative shape, a zero chunk, an unknown codec.
UNREADABLE_METADATA = (ValueError, KeyError, TypeError, ZeroDivisionError, zarr.errors.BaseZarrError)


def pick_array(
    group: zarr.Group,
    path: str,
    array: str | None = None,
    *,
    default: str | None = None,
    take_single: bool = True,
    keys: tuple[str, str] = ("path", "array"),
) -> tuple[zarr.Array, str]:
    """The array ``array`` of ``group`` (a path such as ``s0/image`` too); see :func:`open_zarr_array`."""
    path_key, array_key = keys
    names = sorted(group.array_keys())
    name = default if array is None and default in names else array
    if name is None and default is not None and not take_single:
        listed = ", ".join(repr(n) for n in names) or "none"
        message = f"{path} has no array {default!r} (arrays: {listed}); choose one with {array_key}"
        raise InputError(message, key=array_key)
    if name is None and len(names) == 1:
        name = names[0]
    elif name is None and not names:
        raise InputError(f"the Zarr group {path} holds no array", key=path_key)
    elif name is None:
        message = (
            f"the Zarr group {path} holds several arrays ({', '.join(names)}); "
            f"set {array_key} to the one to read"
        )
        raise InputError(message, key=array_key)
    try:
        node = group[name]
    except (KeyError, ValueError):  # not there, or not a path inside the group ('../x')
        node = None
    if not isinstance(node, zarr.Array):
        message = f"no array {name!r} in {path}; arrays there: {', '.join(names) or 'none'}"
        raise InputError(message, key=array_key)
    return node, name
