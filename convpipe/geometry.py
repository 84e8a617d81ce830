"""Pure integer geometry of a strided valid correlation over a chunked stack.

Along one spatial axis of length ``n``, a kernel of size ``k`` moved by a
stride ``s`` has ``(n - k) // s + 1`` valid positions. Output ``i`` reads
input ``i*s .. i*s + k - 1``. If input chunks start on multiples of ``s`` and
each chunk borrows a *trailing* halo of ``k - 1`` pixels from its neighbour,
the chunk that starts at ``a`` produces exactly the outputs ``a/s ..`` up to
the next chunk's first output, so output chunks are ``c / s`` long for an
input chunk of ``c`` pixels and every output pixel is computed exactly once.

The last chunk is merged into its neighbour when it is too short to produce an
output on its own (shorter than the kernel); all chunks are then at least as
long as the halo, which is what ``dask.array.map_overlap`` needs to take the
halo from the next chunk only. Everything here is plain integer arithmetic.
"""

from __future__ import annotations

import itertools
import math
import typing
from dataclasses import dataclass, replace

#: How a bank's responses are combined: one channel per kernel, the root of their sum of squares, or
#: the angle ``atan2(O_1, O_0)`` of a bank of two.
Combine = typing.Literal["none", "magnitude", "direction"]
COMBINES: tuple[str, ...] = typing.get_args(Combine)


def output_length(n: int, k: int, s: int) -> int:
    """Number of valid kernel positions along an axis (may be <= 0 if ``k > n``).

    Examples
    --------
    >>> output_length(4, 3, 1)
    2
    >>> output_length(10, 3, 2)
    4
    """
    return (n - k) // s + 1


def round_chunk(c: int, k: int, s: int) -> int:
    """Smallest valid processing chunk >= ``c``: a multiple of ``s``, at least ``k``.

    Examples
    --------
    >>> round_chunk(100, 3, 3)
    102
    >>> round_chunk(1, 5, 2)
    6
    """
    c = max(c, k, 1)
    return -(-c // s) * s


def stride_aligned_chunks(n: int, c: int, k: int, s: int) -> tuple[int, ...]:
    """Chunks of ``c`` (a multiple of ``s``, at least ``k``) along an axis, a tail shorter than ``k`` merged.

    Examples
    --------
    >>> stride_aligned_chunks(10, 4, 3, 2)
    (4, 6)
    >>> stride_aligned_chunks(12, 4, 3, 1)
    (4, 4, 4)
    """
    if c % s or c < k:
        raise ValueError(f"chunk {c} must be a multiple of the stride {s} and at least the kernel size {k}")
    if n < k:
        raise ValueError(f"axis of length {n} is shorter than the kernel ({k})")
    chunks = list(regular_chunks(n, c))
    if len(chunks) > 1 and chunks[-1] < k:  # too short for an output of its own
        tail = chunks.pop()
        chunks[-1] += tail
    return tuple(chunks)


def output_chunks(chunks: tuple[int, ...], k: int, s: int) -> tuple[int, ...]:
    """Output chunks produced by input ``chunks`` with trailing halos of ``k - 1``.

    Examples
    --------
    >>> output_chunks((4, 6), 3, 2)
    (2, 2)
    >>> sum(output_chunks((4, 4, 4), 3, 1)) == output_length(12, 3, 1)
    True
    """
    firsts = [a // s for a in itertools.accumulate(chunks[:-1], initial=0)]
    firsts.append(output_length(sum(chunks), k, s))
    return tuple(b - a for a, b in itertools.pairwise(firsts))


def effective_kernel(kernel_shape: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int]:
    """The window a dilated kernel covers: ``d * (k - 1) + 1`` per axis.

    Examples
    --------
    >>> effective_kernel((3, 2), (2, 1))
    (5, 2)
    """
    return tuple(d * (k - 1) + 1 for k, d in zip(kernel_shape, dilation))


def regular_chunks(n: int, c: int) -> tuple[int, ...]:
    """``n`` split into chunks of ``c`` (the last one shorter).

    Examples
    --------
    >>> regular_chunks(10, 4)
    (4, 4, 2)
    """
    c = max(1, min(c, n))
    return (c,) * (n // c) + ((n % c,) if n % c else ())


def aligned_spatial_chunk(stored: int, n: int, k: int, s: int) -> int:
    """Processing chunk aligned with the stored chunk ``stored`` where the stride allows.

    The smallest multiple of ``lcm(stored, s)`` that is at least ``k`` (``stored``
    itself when it is a multiple of ``s``), so each task decodes whole stored
    chunks; if that exceeds the axis, a stride multiple close to ``stored``.

    Examples
    --------
    >>> aligned_spatial_chunk(1024, 2048, 3, 2)
    1024
    >>> aligned_spatial_chunk(100, 1000, 3, 3)
    300
    """
    stored = min(stored, n)
    common = math.lcm(stored, s)
    c = common * max(1, -(-k // common))
    if c <= n:
        return c
    return round_chunk(stored, k, s)


# --------------------------------------------------------------------------- the whole stack

DEFAULT_TASK_BYTES = 48 * 2**20
"""Target bytes per task (input block + output block): tens of MiB, few tasks."""

MIN_TASKS = 4
"""A small stack is still cut into at least this many tasks (never the whole stack in one)."""

MAX_BAND_TILES = 16
"""Widest column band of a frame, in tiles: what Dask keeps alive is about one row of a band."""

MIN_TILE_FRACTION = 2
"""A tile grows until one frame of it is at least ``task_bytes / 2``: larger tiles read and write several
stored chunks at once, concurrently (``benchmarks/choices.py --only tiles`` times tile sizes)."""


@dataclass(frozen=True)
class StackGeometry:
    """How an N-D stack is cut into tasks, and the shape of what comes out.

    The *spatial* axes are the last two axes besides the optional *channel*
    axis; every other axis is a *batch* axis. The core sees each block in
    *work order* ``(batch..., C, H, W)``. Shapes and chunks are those of the
    padded input; ``kernel_shape`` is the window of a (dilated) kernel.
    """

    input_shape: tuple[int, ...]
    channel_axis: int | None
    kernel_shape: tuple[int, int]
    n_kernels: int
    stride: tuple[int, int]
    combine: Combine
    input_chunks: tuple[tuple[int, ...], ...]
    """Processing chunks of the input, in the input's own axis order."""
    batch_zarr_chunks: tuple[int, ...] = ()
    """Zarr chunk of each batch axis of the output (divides the processing chunk)."""
    kernel_position: int | None = None
    """How many batch axes precede the kernel axis (``combine: none``) in the output; None: all of them.
    A z stack puts it before ``z``, as OME-NGFF orders t, c, z."""
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    """Pixels added (top, bottom, left, right) by ``padding_mode`` around each frame."""
    padding_mode: str = "zeros"
    dilation: tuple[int, int] = (1, 1)
    inner_chunks: tuple[int, ...] | None = None
    """Zarr chunk shape of the output when blocks were enlarged around it (whole shards, see
    :mod:`convpipe.shards`); None: derived from the blocks (:attr:`zarr_chunks`)."""

    @property
    def has_kernel_axis(self) -> bool:
        """Whether the output has one channel per kernel (``combine: none``), not one combined value."""
        return self.combine == "none"

    @property
    def spatial_axes(self) -> tuple[int, int]:
        others = [a for a in range(len(self.input_shape)) if a != self.channel_axis]
        return others[-2], others[-1]

    @property
    def batch_axes(self) -> tuple[int, ...]:
        others = [a for a in range(len(self.input_shape)) if a != self.channel_axis]
        return tuple(others[:-2])

    @property
    def work_order(self) -> tuple[int, ...]:
        """Transpose that takes the input to ``(batch..., [C], H, W)``."""
        channel = () if self.channel_axis is None else (self.channel_axis,)
        return self.batch_axes + channel + self.spatial_axes

    @property
    def channels(self) -> int:
        return 1 if self.channel_axis is None else self.input_shape[self.channel_axis]

    @property
    def frames(self) -> int:
        """Number of 2-D frames (product of the batch axes)."""
        return math.prod(self.input_shape[a] for a in self.batch_axes)

    @property
    def work_output_chunks(self) -> tuple[tuple[int, ...], ...]:
        """Chunks of the core's output, in work order ``(batch..., [K], Ho, Wo)``."""
        spatial = tuple(
            output_chunks(self.input_chunks[a], k, s)
            for a, k, s in zip(self.spatial_axes, self.kernel_shape, self.stride)
        )
        batch = tuple(self.input_chunks[a] for a in self.batch_axes)
        kernel = ((self.n_kernels,),) if self.has_kernel_axis else ()
        return batch + kernel + spatial

    @property
    def output_order(self) -> tuple[int, ...]:
        """Transpose from work order to output order (moves the kernel axis)."""
        order = list(range(len(self.work_output_chunks)))
        if self.has_kernel_axis and self.kernel_position is not None:
            order.insert(self.kernel_position, order.pop(len(self.batch_axes)))
        return tuple(order)

    @property
    def output_chunks(self) -> tuple[tuple[int, ...], ...]:
        """Chunks of the Dask output, one block per task, in output axis order."""
        work = self.work_output_chunks
        return tuple(work[a] for a in self.output_order)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(sum(chunks) for chunks in self.output_chunks)

    @property
    def zarr_chunks(self) -> tuple[int, ...]:
        """Zarr chunk shape of the output: a block spatially and along the kernel axis, a divisor of it
        along batch axes (one frame if the input stores one per chunk), so no two tasks write one chunk."""
        if self.inner_chunks is not None:
            return self.inner_chunks
        work = [chunks[0] for chunks in self.work_output_chunks]
        work[: len(self.batch_zarr_chunks)] = self.batch_zarr_chunks
        return tuple(work[a] for a in self.output_order)

    @property
    def n_tasks(self) -> int:
        return math.prod(len(chunks) for chunks in self.input_chunks)

    def slabs(self, band_tiles: int | None = None) -> list[Slab]:
        """The independent units of work: per batch chunk, bands of at most ``band_tiles`` tile columns.

        Halos only cross spatial block edges, so a batch chunk depends on nothing outside it. Dask
        keeps about a row of tiles of a graph alive, so wide frames are cut into bands of
        :data:`MAX_BAND_TILES` tiles, each reading the next band's first ``kw - 1`` columns as its
        halo (stored chunks under a band edge are decoded twice); circular padding on x is not cut.
        """
        columns = len(self.input_chunks[self.spatial_axes[1]])
        wraps = self.padding_mode == "circular" and any(self.padding[2:])
        band_tiles = columns if wraps else band_tiles or MAX_BAND_TILES
        bands = [(c, min(c + band_tiles, columns)) for c in range(0, columns, band_tiles)]
        groups = itertools.product(*(range(len(self.input_chunks[a])) for a in self.batch_axes))
        return [self._slab(group, band) for group in groups for band in bands]

    def _slab(self, group: tuple[int, ...], band: tuple[int, int]) -> Slab:
        slices = [slice(None)] * len(self.input_shape)
        chunks = list(self.input_chunks)
        for axis, index in zip(self.batch_axes, group):
            start = sum(self.input_chunks[axis][:index])
            chunks[axis] = (self.input_chunks[axis][index],)
            slices[axis] = slice(start, start + chunks[axis][0])
        ax, (first, last), (top, bottom, left, right) = self.spatial_axes[1], band, self.padding
        columns = self.input_chunks[ax]
        halo_columns = 0 if last == len(columns) else self.kernel_shape[1] - 1
        x0, x1 = sum(columns[:first]), sum(columns[:last]) + halo_columns
        chunks[ax] = columns[first : last - 1] + (columns[last - 1] + halo_columns,)
        width = self.input_shape[ax] - left - right  # the stored input's: slices are taken before padding
        slices[ax] = slice(max(0, x0 - left), min(width, x1 - left))
        padding = (top, bottom, left if first == 0 else 0, right if last == len(columns) else 0)
        shape = tuple(sum(c) for c in chunks)
        geometry = replace(self, input_shape=shape, input_chunks=tuple(chunks), padding=padding)
        block_origin = [group[a] if a < len(group) else 0 for a in self.output_order]
        block_origin[-1] = first
        output_origin = tuple(sum(chunks[:i]) for chunks, i in zip(self.output_chunks, block_origin))
        return Slab(tuple(slices), geometry, tuple(block_origin), output_origin)


@dataclass(frozen=True)
class Slab:
    """One batch chunk of the stack, or a column band of it: an independent unit of work."""

    input_slices: tuple[slice, ...]
    """Where its input is in the stored (unpadded) input."""
    geometry: StackGeometry
    block_origin: tuple[int, ...]
    """Index of the slab's first output block in the whole output's block grid."""
    output_origin: tuple[int, ...]
    """Index of the slab's first output element in the whole output."""


def plan_geometry(
    input_shape: tuple[int, ...],
    stored_chunks: tuple[int, ...],
    input_itemsize: int,
    output_itemsize: int,
    channel_axis: int | None,
    kernel_shape: tuple[int, int],
    n_kernels: int,
    stride: tuple[int, int],
    combine: Combine,
    spatial_chunks: tuple[int, int] | None = None,
    task_bytes: int | None = None,
    kernel_position: int | None = None,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),
    padding_mode: str = "zeros",
    dilation: tuple[int, int] = (1, 1),
    block_multiple: int = 1,
) -> StackGeometry:
    """Choose processing chunks and derive the output layout of the window (the dilated ``kernel_shape``)
    over the padded input (the caller has checked that it fits and that ``channel_axis`` is valid).

    Frames that fit in ``task_bytes`` are taken whole, as many per task as
    fit (whole stored chunks of the innermost batch axis). Larger frames are
    tiled, one frame per slab: tiles follow the stored chunks where the
    stride allows (:func:`aligned_spatial_chunk`), or ``spatial_chunks``
    rounded to the stride, then grow by whole tiles up to ``task_bytes /
    MIN_TILE_FRACTION`` per frame or halve down to ``2 * task_bytes``. Output
    blocks but the last span a multiple of ``block_multiple`` pixels along y
    and x (``2**N`` for an N-level pyramid).
    """
    task_bytes = DEFAULT_TASK_BYTES if task_bytes is None else task_bytes
    window = effective_kernel(kernel_shape, dilation)
    geometry = StackGeometry(input_shape, channel_axis, window, n_kernels, stride, combine, ())
    (ay, ax), (kh, kw), (sy, sx) = geometry.spatial_axes, window, stride
    qy, qx = sy * block_multiple, sx * block_multiple  # processing chunks are multiples of these
    shape = list(input_shape)
    shape[ay] += padding[0] + padding[1]
    shape[ax] += padding[2] + padding[3]
    h, w = shape[ay], shape[ax]
    out_per_pixel = output_itemsize * (n_kernels if geometry.has_kernel_axis else 1) / (sy * sx)
    per_pixel = input_itemsize * geometry.channels + out_per_pixel

    if spatial_chunks is not None:
        cy, cx = round_chunk(spatial_chunks[0], kh, qy), round_chunk(spatial_chunks[1], kw, qx)
    elif h * w * per_pixel <= task_bytes:  # whole frames: no halo exchange at all
        cy, cx = round_chunk(h, kh, sy), round_chunk(w, kw, sx)
    else:
        cy = aligned_spatial_chunk(stored_chunks[ay], h, kh, qy)
        cx = aligned_spatial_chunk(stored_chunks[ax], w, kw, qx)
        step_y, step_x = cy, cx
        while cy * cx * per_pixel * MIN_TILE_FRACTION < task_bytes and (cy < h or cx < w):
            if (cx < w and cx <= cy) or cy >= h:
                cx += step_x
            else:
                cy += step_y
        while cy * cx * per_pixel > 2 * task_bytes:
            # Halve the longer side of the tile; a side at its least (the window, two strides) stays.
            half_y = round_chunk(cy // 2, kh, qy) if cy > 2 * qy else cy
            half_x = round_chunk(cx // 2, kw, qx) if cx > 2 * qx else cx
            if half_y < cy and (cy >= cx or half_x == cx):
                cy = half_y
            elif half_x < cx:
                cx = half_x
            else:
                break
    cy, cx = min(cy, round_chunk(h, kh, sy)), min(cx, round_chunk(w, kw, sx))

    chunks = [(n,) for n in shape]  # the channel axis whole; the others are set below
    chunks[ay] = stride_aligned_chunks(h, cy, kh, sy)
    chunks[ax] = stride_aligned_chunks(w, cx, kw, sx)
    frame_bytes = min(cy, h) * min(cx, w) * per_pixel
    tiled = cy < h or cx < w  # a slab is every tile of its frames: keep it to one frame
    batch_zarr_chunks = []
    for axis in geometry.batch_axes:
        n = shape[axis]
        stored = max(1, min(stored_chunks[axis], n))
        batch = 1
        if axis == geometry.batch_axes[-1] and not tiled:  # the innermost batch axis takes the frames
            fair_share = -(-n // MIN_TASKS)  # small stacks still spread over several tasks
            fitting = min(n, max(stored, fair_share), int(task_bytes // frame_bytes))
            batch = max(1, fitting // stored) * stored
            if batch * frame_bytes > 2 * task_bytes:
                batch = max(1, int(task_bytes // frame_bytes))
        chunks[axis] = regular_chunks(n, batch)
        batch_zarr_chunks.append(math.gcd(chunks[axis][0], stored))
    return replace(
        geometry,
        input_shape=tuple(shape),
        input_chunks=tuple(chunks),
        batch_zarr_chunks=tuple(batch_zarr_chunks),
        kernel_position=kernel_position,
        padding=padding,
        padding_mode=padding_mode,
        dilation=dilation,
    )
