"""Sharded output (Zarr v3): the shard shape, and blocks that each cover whole shards.

zarr-python writes a shard in one go only when a single write covers all of
it; a write to part of a shard reads the whole shard, changes it and writes
it back, so two tasks writing different chunks of one shard race and one
update is silently lost. Here the blocks of the unsharded plan are enlarged
(along the batch and spatial axes) to whole shards, and the Zarr chunks
inside the shards stay those of the unsharded plan
(:attr:`StackGeometry.inner_chunks`): a shard is written once, by one task,
and a repeated task rewrites identical bytes.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from convpipe.geometry import StackGeometry, regular_chunks, round_chunk, stride_aligned_chunks
from convpipe.yamldoc import is_int, show

AUTO = "auto"
AUTO_SHARD_BYTES = 2**30
"""Target size of an ``auto`` shard (uncompressed): few files, and still a task's worth of work."""

AUTO_MIN_SHARDS = 16
"""An ``auto`` shard holds at most 1 / this of the output: a shard is one task, and a small output
cut into a few large tasks leaves threads idle at the end of the run while the last shards are
computed and written (zarr-python encodes and stores a shard as one object)."""

Shards = tuple[int, ...] | str | None


def parse_shards(value: Any, output_format: str) -> Shards:
    """``output.shards``: None, ``"auto"`` or positive ints (Zarr v3 only); ValueError otherwise."""
    if value is None:
        return None
    expected = "null, auto, or a list of positive integers, one per output axis (e.g. [8, 1024, 1024])"
    lengths = isinstance(value, (list, tuple)) and value and all(is_int(v) and v >= 1 for v in value)
    if value != AUTO and not lengths:
        raise ValueError(f"must be {expected}, got {show(value)}")
    if output_format != "zarr3":
        raise ValueError(f"needs output.format: zarr3 (Zarr 2 has no shards), got format {output_format}")
    return value if value == AUTO else tuple(int(v) for v in value)


def shard_layout(
    g: StackGeometry, requested: str | tuple[int, ...], itemsize: int, names: tuple[str, ...]
) -> tuple[StackGeometry, tuple[int, ...]]:
    """The shard shape for ``requested`` and the geometry whose blocks cover whole shards.

    ``names`` are the output's dimension names (for messages). Raises
    ``ValueError`` (one line) when an explicit shape does not fit the output.
    """
    chunks, shape = g.zarr_chunks, g.output_shape
    if requested == AUTO:
        shards = auto_shards(g, itemsize)
    else:
        shards = tuple(requested)
        if len(shards) != len(shape):
            raise ValueError(
                f"has {len(shards)} entries but the output has {len(shape)} axes ({', '.join(names)}); "
                "give one shard length per axis, or auto"
            )
        if any(s % c for s, c in zip(shards, chunks)):
            raise ValueError(
                f"{list(shards)} is not a multiple of the output's Zarr chunks {list(chunks)} "
                f"(axes {', '.join(names)}); give multiples of them, or auto"
            )
    # No larger than the output (in whole chunks).
    shards = tuple(min(s, -(-n // c) * c) for s, c, n in zip(shards, chunks, shape))
    return blocks_of_whole_shards(g, shards), shards


def auto_shards(g: StackGeometry, itemsize: int) -> tuple[int, ...]:
    """Shards of whole blocks of ``g``, about :data:`AUTO_SHARD_BYTES` each.

    None holds more than 1 / :data:`AUTO_MIN_SHARDS` of the output. A shard
    grows block by block along x, then y (towards whole frames), then the
    batch axes from the innermost out; an axis grows only once the ones
    before it are whole.
    """
    blocks = [c[0] for c in g.output_chunks]
    counts = [len(c) for c in g.output_chunks]
    # In work axes: x and y are the last two, the batch axes the first ones.
    work_axes = (len(blocks) - 1, len(blocks) - 2, *reversed(range(len(g.batch_axes))))
    growth = [g.output_order.index(w) for w in work_axes]
    whole_chunks = math.prod(-(-n // c) * c for n, c in zip(g.output_shape, g.zarr_chunks))  # as shards count
    target = min(AUTO_SHARD_BYTES, whole_chunks * itemsize // AUTO_MIN_SHARDS)
    shards = list(blocks)
    for axis in growth:
        others = math.prod(shards) // shards[axis] * itemsize
        fits = target // (others * blocks[axis])
        shards[axis] = blocks[axis] * max(1, min(fits, counts[axis]))
        if shards[axis] < blocks[axis] * counts[axis]:
            break
    return tuple(shards)


def blocks_of_whole_shards(g: StackGeometry, shards: tuple[int, ...]) -> StackGeometry:
    """``g`` with every block enlarged to a whole number of ``shards`` (output order); Zarr chunks kept.

    Batch blocks become multiples of the shard length; spatial blocks become
    one shard (a shard is a multiple of the spatial Zarr chunk, which is one
    block of ``g``), i.e. processing chunks of ``shard * stride`` input pixels.
    """
    chunks = list(g.input_chunks)
    work = [shards[g.output_order.index(w)] for w in range(len(shards))]  # in work order
    blocks = [c[0] for c in g.work_output_chunks]
    for position, axis in enumerate(g.batch_axes):
        shard = work[position]
        chunks[axis] = regular_chunks(g.input_shape[axis], -(-blocks[position] // shard) * shard)
    for axis, shard, k, s in zip(g.spatial_axes, work[-2:], g.kernel_shape, g.stride):
        chunks[axis] = stride_aligned_chunks(g.input_shape[axis], round_chunk(shard * s, k, s), k, s)
    return replace(g, input_chunks=tuple(chunks), inner_chunks=g.zarr_chunks)


def shard_files(g: StackGeometry, shards: tuple[int, ...] | None) -> int:
    """How many stored objects the output's array has: shards, or Zarr chunks when unsharded."""
    grid = shards or g.zarr_chunks
    return math.prod(-(-n // c) for n, c in zip(g.output_shape, grid))
