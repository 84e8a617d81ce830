"""Which stored input chunks each output block reads, and whether they are still what the block read.

A block's completion record holds the identity (size and modification time,
or ETag) of every stored input chunk the block read. ``--resume`` trusts a
recorded block only if each of them is unchanged, so that an output is never
half from an old input and half from a new one.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

from convpipe.geometry import StackGeometry

MISSING = "missing"


def block_input_region(g: StackGeometry, block: tuple[int, ...]) -> tuple[slice, ...]:
    """The input pixels output block ``block`` (an index in the output's block grid) reads, halo included."""
    work = [block[g.output_order.index(w)] for w in range(len(block))]  # the block index in work order
    indices = dict(zip(g.batch_axes, work[: len(g.batch_axes)]))
    indices.update(zip(g.spatial_axes, work[-2:]))
    halos = dict(zip(g.spatial_axes, (k - 1 for k in g.kernel_shape)))
    region = []
    for axis, n in enumerate(g.input_shape):
        if axis not in indices:  # the channel axis: read whole
            region.append(slice(0, n))
            continue
        chunks = g.input_chunks[axis]
        start = sum(chunks[: indices[axis]])
        stop = min(n, start + chunks[indices[axis]] + halos.get(axis, 0))
        region.append(slice(start, stop))
    return tuple(region)


def chunk_identities(array: Any, region: tuple[slice, ...]) -> dict[str, str]:
    """Stored key -> identity (``size:mtime_ns``, or ``missing``) of each stored object ``region`` touches.

    ``array`` is a ``zarr.Array`` on a local or fsspec store; with sharding
    the stored objects are shards.
    """
    keys = list(stored_objects(array, region))
    prefix = f"{array.path}/" if array.path else ""
    root = getattr(array.store, "root", None)
    if root is not None:  # a local store: one stat per object
        return {key: _local_identity(os.path.join(root, prefix + key)) for key in keys}
    fs, base = array.store.fs, array.store.path.rstrip("/")  # zarr's asynchronous filesystem
    return {key: _remote_identity(fs, f"{base}/{prefix}{key}") for key in keys}


def stored_objects(array: Any, region: tuple[slice, ...]) -> dict[str, tuple[slice, ...]]:
    """Stored key -> the region it holds, for each stored object (chunk or shard) ``region`` touches."""
    grid = getattr(array, "shards", None) or array.chunks
    ranges = [range(r.start // c, -(-r.stop // c)) for r, c in zip(region, grid)]
    return {
        array.metadata.encode_chunk_key(coords): tuple(
            slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(coords, grid, array.shape)
        )
        for coords in itertools.product(*ranges)
    }


def first_change(recorded: dict[str, str], current: dict[str, str]) -> str | None:
    """The first stored key whose identity differs between two records, or None."""
    return next((key for key in sorted(recorded) if current.get(key) != recorded[key]), None)


def _local_identity(path: str) -> str:
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return MISSING
    return f"{status.st_size}:{status.st_mtime_ns}"


def _remote_identity(fs: Any, path: str) -> str:
    from zarr.core.sync import sync

    try:
        info = sync(fs._info(path))
    except FileNotFoundError:
        return MISSING
    stamp = info.get("ETag") or info.get("mtime") or info.get("LastModified") or info.get("created") or ""
    return f"{info.get('size')}:{stamp}"
