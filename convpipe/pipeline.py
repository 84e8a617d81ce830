"""Dask wiring: input stack -> map_overlap(core) -> one write task per output block.

This module only assembles the graph; the maths lives in :mod:`convpipe.core`
and :mod:`convpipe.geometry`, the storage in :mod:`convpipe.outputs`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

from convpipe.core import correlate_block
from convpipe.geometry import StackGeometry
from convpipe.padding import NUMPY_PAD_MODES, unpadded_chunks
from convpipe.pyramid import write_levels


def result_array(stack: da.Array, geometry: StackGeometry, weights: np.ndarray, dtype: str) -> da.Array:
    """The lazy result of correlating ``stack`` (chunked as :func:`~convpipe.padding.unpadded_chunks`).

    Blocks of the padded stack, in work order ``(batch..., C, H, W)`` with a
    trailing halo of ``window - 1`` pixels (no rechunking: the geometry's
    chunks are at least that large), go to the core, which returns exactly
    the blocks of ``geometry.work_output_chunks``; a lazy transpose then
    moves the kernel axis to ``geometry.output_order``.
    """
    if stack.chunks != unpadded_chunks(geometry):
        raise ValueError(f"stack chunks {stack.chunks} differ from the planned {unpadded_chunks(geometry)}")
    work = padded_stack(stack, geometry).transpose(geometry.work_order)
    if geometry.channel_axis is None:
        work = work[..., None, :, :]
    ndim = work.ndim
    depth = {axis: 0 for axis in range(ndim)}
    for axis, k in zip((ndim - 2, ndim - 1), geometry.kernel_shape):
        if len(work.chunks[axis]) > 1:  # a single tile (whole frames) needs no halo exchange
            depth[axis] = (0, k - 1)  # a trailing halo only
    core = functools.partial(
        correlate_block,
        weights=weights,
        stride=geometry.stride,
        combine=geometry.combine,
        dtype=dtype,
        dilation=geometry.dilation,
    )
    drop_axis = [] if geometry.has_kernel_axis else [ndim - 3]  # combined responses: no kernel axis
    out_ndim = ndim - len(drop_axis)
    result = da.map_overlap(
        core,
        work,
        depth=depth,
        boundary="none",
        trim=False,
        allow_rechunk=False,
        chunks=geometry.work_output_chunks,
        dtype=np.dtype(dtype),
        meta=np.empty((0,) * out_ndim, dtype=dtype),
        name=_result_name(work, depth, geometry, weights, dtype),
        drop_axis=drop_axis,
    )
    order = geometry.output_order
    return result if order == tuple(range(out_ndim)) else result.transpose(order)


def padded_stack(stack: da.Array, geometry: StackGeometry) -> da.Array:
    """``stack`` padded by ``geometry.padding`` (``numpy.pad``'s mode), lazily, in ``geometry.input_chunks``.

    ``dask.array.pad`` adds small chunks at the outer edges only; the rechunk
    merges them into the first and last blocks, leaving inner borders as they are.
    """
    if not any(geometry.padding):
        return stack
    (ay, ax), (top, bottom, left, right) = geometry.spatial_axes, geometry.padding
    widths = [(0, 0)] * stack.ndim
    widths[ay], widths[ax] = (top, bottom), (left, right)
    padded = da.pad(stack, widths, mode=NUMPY_PAD_MODES[geometry.padding_mode])
    return padded.rechunk(geometry.input_chunks)


def _result_name(
    work: da.Array, depth: dict, geometry: StackGeometry, weights: np.ndarray, dtype: str
) -> str:
    """The Dask name of a result: from the input's name and the weights' bytes, shape and strides.

    ``dask.base.tokenize`` gives an array and its transpose one token (dask
    2026.8), so a Sobel x kernel and its transpose in one graph would share
    keys and one result would silently replace the other.
    """
    weights_identity = (weights.tobytes(), weights.shape, weights.strides, weights.dtype.str)
    return "convpipe-correlate-" + tokenize(
        work.name,
        depth,
        geometry.stride,
        geometry.dilation,
        geometry.padding,
        geometry.padding_mode,
        geometry.combine,
        geometry.work_output_chunks,
        dtype,
        weights_identity,
    )


@dataclass(frozen=True)
class BlockWriter:
    """Writes one output block into the Zarr target (and its pyramid ``levels``), then records it as done.

    Picklable, with a cheap Dask token: Dask would otherwise walk and hash
    the whole zarr.Array (a dataclass) for every slab's graph.
    """

    target: Any
    on_written: Any = None
    origin: tuple[int, ...] | None = None
    block_origin: tuple[int, ...] | None = None
    levels: tuple = ()
    measure: Any = None

    def __dask_tokenize__(self):
        target = str(self.target.store_path)
        return ("convpipe.BlockWriter", target, self.origin, self.block_origin, len(self.levels))

    def __call__(self, block: np.ndarray, block_info=None) -> np.ndarray:
        """Store ``block`` and its pyramid levels, then record it (with its ``measure``); return a 1-element token."""
        location = block_info[0]["array-location"]
        origin = self.origin or (0,) * block.ndim
        region = tuple(slice(o + start, o + stop) for o, (start, stop) in zip(origin, location))
        self.target[region] = block
        write_levels(self.levels, block, region)  # from this block, not read back: no second pass
        if self.on_written is not None:
            block_origin = self.block_origin or (0,) * block.ndim
            index = tuple(o + i for o, i in zip(block_origin, block_info[0]["chunk-location"]))
            record = self.on_written
            if self.measure is not None:  # statistics of what was written, kept in the block's record
                record = record.with_statistics(index, self.measure(block, region))
            record(index)
        return np.ones((1,) * block.ndim, dtype=np.uint8)


def write_tasks(
    result: da.Array,
    target,
    on_written=None,
    origin: tuple[int, ...] | None = None,
    block_origin: tuple[int, ...] | None = None,
    levels: tuple = (),
    measure=None,
) -> da.Array:
    """One task per output block that writes it to ``target`` (a zarr.Array) and its pyramid ``levels``.

    ``result`` may be a slab of the whole output starting at element
    ``origin`` and block ``block_origin`` (used to name completion records).
    Every block must cover whole Zarr chunks (whole shards when sharded), so
    each stored object is written by exactly one task and a repeated task
    rewrites identical bytes without racing another. A task writes its
    region of every level (the 2 x 2 means of :mod:`convpipe.pyramid`) and,
    with ``measure`` (a :class:`~convpipe.statistics.BlockMeasure`), its
    statistics before recording the block (``on_written``, through its
    ``with_statistics``), so a record covers all of them. The returned array
    of tokens is what gets computed.
    """
    origin = origin or (0,) * result.ndim
    stored = getattr(target, "shards", None) or target.chunks  # a shard is one stored object: written whole
    for axis, (sizes, chunk, start) in enumerate(zip(result.chunks, stored, origin)):
        edges = start + np.cumsum((0,) + sizes)
        ends_inside = edges[-1] % chunk and edges[-1] != target.shape[axis]
        if np.any(edges[:-1] % chunk) or ends_inside:
            raise ValueError(f"Zarr chunks {stored} are not aligned with the Dask blocks {result.chunks}")
    return result.map_blocks(
        BlockWriter(target, on_written, origin, block_origin, tuple(levels), measure),
        dtype=np.uint8,
        chunks=tuple((1,) * len(chunks) for chunks in result.chunks),
        meta=np.empty((0,) * result.ndim, dtype=np.uint8),
        token="convpipe-write",
    )
