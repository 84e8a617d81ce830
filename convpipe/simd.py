"""SIMD blocks of the compiled core, written directly in LLVM IR.

For column strides 1 and 2, :mod:`convpipe.compiled` computes each output row
in blocks of :func:`block_width` outputs (one 64-byte vector) with a Numba
intrinsic from :func:`simd_block` (one block per call) or :func:`simd_blocks`
(a row's blocks per call), and only the last columns in its Python loop. A block has the same taps, weights, summation order and roundings as
that loop, so the same bits; what it adds:

* **Column stride 2 without cross-lane permutes.** Output ``j`` reads
  ``x[r, 2*j + v]``: the even or odd pixels of a row. Deinterleaving them
  into column order takes a cross-lane permute per tap (``vpermt2ps``); a
  Sobel pair spent most of its time on those. Here the pixels are
  deinterleaved *within* each 128-bit lane (one ``shufps`` of two loads),
  which leaves the outputs in a fixed permuted order (:func:`lane_order`).
  Every tap is in that order, so sums, squares and square roots are
  computed in it as they are, and one permute per stored vector restores
  column order. A tap ``v = 2*q + p`` is phase ``p`` shifted by ``q``
  outputs: one two-source shuffle of the phase vector and the next vector
  of raw pixels, whose phase-``p`` pixels enter on the right. It replaced
  two splices and a deinterleave per tap: on 2048-square float32 frames
  (interleaved runs, AMD EPYC Zen 5) a Sobel pair 8-13 % faster, 5x5 banks and
  21-wide kernels about 20 %. Integer pixels of up to 4 bytes need no
  shuffle at all: a pair of pixels is read as one word twice as wide, and
  the even pixel is its low half (little-endian), the odd one its high
  half, in column order.
* **Loads carried to the next block.** At stride 2 the raw vector that
  shifts a block's phase vectors is the first one the next block loads;
  :func:`simd_blocks` runs a row's blocks in one loop that keeps it in a
  register (:func:`carried_loads`): a float32 Sobel block loads 6 vectors
  instead of 9 and ran 9-17 % faster on 2048-square frames.
* **Prefetching.** Each block prefetches the same columns of the input
  rows that a later output row reads first, and of that output row's rows
  to write them: the hardware prefetcher starts each new row late, and at
  stride 2 the loop is quick enough to wait on memory. Prefetching the
  output rows too (issued just before the block's stores; at the start of
  the block it gained less) made float32 Sobel 15 % faster at stride 1 and
  5 % at stride 2, with two outputs 16 % and 12 %, float64 5 %, uint16 and
  5x5 banks at stride 1 about 2 % (2048-square frames, interleaved runs);
  a 3-channel bank at stride 2 got 3 % slower.

LLVM lowers the generic vector IR for the CPU at hand (AVX-512, AVX2, SSE2).
"""

from __future__ import annotations

import functools
import hashlib
import sys
from pathlib import Path

import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

#: Bytes per vector block: one AVX-512 register (two AVX2 registers). Blocks
#: of 32 bytes ran at the same speed for float32 and 1.4-1.7x slower for uint16.
BLOCK_BYTES = 64

#: Bytes per lane that shuffles do not cross (SSE/AVX/AVX-512 all use 128-bit lanes).
LANE_BYTES = 16

#: Cache line size, the unit of a prefetch.
LINE_BYTES = 64


_FLOAT_TYPES = {4: ir.FloatType(), 8: ir.DoubleType()}  # by itemsize


def block_width(dtype: np.dtype) -> int:
    """Outputs per vector block for an output dtype (16 for float32, 8 for float64)."""
    return BLOCK_BYTES // np.dtype(dtype).itemsize


def supports(input_dtype: np.dtype, dtype: np.dtype) -> bool:
    """Whether vector blocks exist for these input and output dtypes."""
    input_dtype, dtype = np.dtype(input_dtype), np.dtype(dtype)
    return dtype.kind == "f" and dtype.itemsize in (4, 8) and input_dtype.kind in "iuf" and input_dtype.itemsize <= 8


def extent(last_column: int, stride: int, input: str, output: str) -> int:
    """Pixels a block of ``simd_block`` reads from its first column ``stride * j``.

    ``last_column`` is the largest column offset ``v`` of the bank's taps. At
    stride 1 a tap ``v`` reads ``width`` pixels from ``v``; paired integers,
    ``2 * width`` from ``2 * (v // 2)``; other pixels at stride 2, the two
    vectors of its phase vector and, unless the tap starts one, the next.
    """
    width = block_width(output)
    reach = last_column // stride
    if stride == 1:
        return reach + width
    if _paired(np.dtype(input), stride):
        return 2 * reach + 2 * width
    group, shift = divmod(reach, width // 2)
    return width * (group + 2 + (shift > 0))


def _paired(in_dtype: np.dtype, stride: int) -> bool:
    """Whether stride-2 pixels are read as words of two (integers of up to 4 bytes, little-endian)."""
    return stride == 2 and in_dtype.kind in "iu" and in_dtype.itemsize <= 4 and sys.byteorder == "little"


def lane_order(width: int, itemsize: int) -> list[int]:
    """Output offset (``j - j0``) held by each position of a deinterleaved vector.

    Lane ``k`` of the phase-``p`` shuffle of vectors ``A`` (pixels from
    ``2*j0``) and ``B`` (from ``2*j0 + width``) holds the lane's phase-``p``
    pixels of ``A``, then those of ``B``.

    Examples
    --------
    >>> lane_order(16, 4)
    [0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15]
    """
    per_lane = LANE_BYTES // itemsize
    order = []
    for lane in range(width // per_lane):
        for half in (0, width // 2):
            order += [half + lane * per_lane // 2 + m for m in range(per_lane // 2)]
    return order


def _shifted(offset: int, order: list[int], phase: int) -> int:
    """Where output offset ``offset`` of a phase is, in ``phase vector ++ next raw vector``.

    Offsets below ``width`` are in the phase vector (at their lane-order
    position); output ``width + m`` reads raw pixel ``2*m + phase`` after it.
    """
    width = len(order)
    return order.index(offset) if offset < width else width + 2 * (offset - width) + phase


def _phase_mask(width: int, itemsize: int, phase: int) -> list[int]:
    """``shufflevector`` mask taking phase ``phase`` of ``A ++ B`` in :func:`lane_order`."""
    per_lane = LANE_BYTES // itemsize
    mask = []
    for lane in range(width // per_lane):
        for half in (0, width):
            mask += [half + lane * per_lane + 2 * m + phase for m in range(per_lane // 2)]
    return mask


def carried_loads(output: str, input: str, kernels: tuple, stride: int) -> list[tuple[int, int]]:
    """The ``(row, offset)`` vectors a block loads that the next block loads again.

    Only stride-2 phase vectors (pixels not read as pairs) have them: a block
    reads the raw vectors at ``group * width`` and ``(group + 1) * width``
    pixels of its first column for its phase vectors, and the one at
    ``(group + 2) * width`` to shift them; the next block starts
    ``2 * width`` pixels later, so that last load is its ``group * width``.
    """
    dtype, in_dtype = np.dtype(output), np.dtype(input)
    width = block_width(dtype)
    if stride != 2 or _paired(in_dtype, stride):
        return []
    offsets: dict[int, set[int]] = {}
    for kernel in kernels:
        for row, v, _ in kernel:
            group, shift = divmod(v // 2, width // 2)
            loads = offsets.setdefault(row, set())
            loads.update({group * width, (group + 1) * width})
            if shift:
                loads.add((group + 2) * width)
    return sorted((row, o) for row, loads in offsets.items() for o in loads if o + 2 * width in loads)


def simd_block(output: str, input: str, kernels: tuple, magnitude: bool, stride: int):
    """A Numba intrinsic ``block(rows, outs, ahead, outs_ahead, j)`` for one bank at column stride 1 or 2.

    Parameters
    ----------
    output, input : str
        Names of the output and input dtypes.
    kernels : tuple
        Per kernel, its non-zero taps in summation order as
        ``(row, v, weight)``: ``rows[row]`` is the input row, ``v`` the
        column offset.
    magnitude : bool
        Store ``sqrt(sum of squares)`` of all kernels in ``outs[0]``;
        otherwise kernel ``k`` goes to ``outs[k]``.
    stride : int
        The column stride, 1 or 2.

    The intrinsic reads ``rows[r][stride*j + i]`` for ``i <`` :func:`extent`,
    writes ``outs[k][j : j + width]`` (``width = block_width(output)``) and
    prefetches the same columns of the input rows in ``ahead`` (to read) and
    of the output rows in ``outs_ahead`` (to write). The caller keeps the
    reads inside the rows; a prefetch never faults.
    """
    code = _BlockCode(output, input, kernels, magnitude, stride)

    def codegen(context, builder, signature, args):
        rows, outs, ahead, outs_ahead = code.arrays(context, builder, signature, args)
        code.emit(builder, rows, outs, ahead, outs_ahead, args[4], {})
        return context.get_dummy_value()

    def typer(typingctx, rows, outs, ahead, outs_ahead, j):
        return types.void(rows, outs, ahead, outs_ahead, j), codegen

    return intrinsic(typer)


def simd_blocks(output: str, input: str, kernels: tuple, magnitude: bool, stride: int):
    """A Numba intrinsic ``blocks(rows, outs, ahead, outs_ahead, start, end)``: the blocks ``j = start, start + width, ... < end``.

    The same blocks as :func:`simd_block`, in one loop that keeps each
    :func:`carried_loads` vector in a register for the next block instead of
    loading it again: 6 loads per float32 Sobel block at stride 2 instead of
    9, which made it 9-17 % faster on 2048-square frames (paired
    interleaved runs); 3-channel banks 4 %, 5x5 banks even. Used only where
    there is something to carry: the same loop without carried loads ran
    stride 1 and uint16 blocks 5-25 % slower than the per-block calls.
    """
    code = _BlockCode(output, input, kernels, magnitude, stride)
    carried = carried_loads(output, input, kernels, stride)
    width = code.width

    def codegen(context, builder, signature, args):
        rows, outs, ahead, outs_ahead = code.arrays(context, builder, signature, args)
        start, end = args[4], args[5]
        first_block = builder.append_basic_block("first_block")
        loop = builder.append_basic_block("blocks")
        done = builder.append_basic_block("done")
        builder.cbranch(builder.icmp_signed("<", start, end), first_block, done)  # no load unless a block runs
        builder.position_at_end(first_block)
        initial = {key: code.load(builder, rows, start, *key) for key in carried}
        builder.branch(loop)
        builder.position_at_end(loop)
        j = builder.phi(start.type)
        j.add_incoming(start, first_block)
        carried_in = {}
        for key in carried:
            carried_in[key] = builder.phi(code.vector)
            carried_in[key].add_incoming(initial[key], first_block)
        loaded = code.emit(builder, rows, outs, ahead, outs_ahead, j, dict(carried_in))
        for (row, offset), phi in carried_in.items():
            phi.add_incoming(loaded[row, offset + 2 * width], builder.basic_block)
        following = builder.add(j, ir.Constant(j.type, width))
        j.add_incoming(following, builder.basic_block)
        builder.cbranch(builder.icmp_signed("<", following, end), loop, done)
        builder.position_at_end(done)
        return context.get_dummy_value()

    def typer(typingctx, rows, outs, ahead, outs_ahead, start, end):
        return types.void(rows, outs, ahead, outs_ahead, start, end), codegen

    return intrinsic(typer)


class _BlockCode:
    """The LLVM IR of one block of a bank: constants built once, :meth:`emit` per use."""

    def __init__(self, output: str, input: str, kernels: tuple, magnitude: bool, stride: int) -> None:
        self.dtype, self.in_dtype = dtype, in_dtype = np.dtype(output), np.dtype(input)
        self.kernels, self.magnitude, self.stride = kernels, magnitude, stride
        self.width = width = block_width(dtype)
        self.vector = vector = ir.VectorType(_FLOAT_TYPES[dtype.itemsize], width)
        self.in_vector = ir.VectorType(_scalar_ir_type(in_dtype), width)
        self.bits = 8 * in_dtype.itemsize
        self.paired = _paired(in_dtype, stride)
        self.natural_order = stride == 1 or self.paired
        self.words = ir.VectorType(ir.IntType(2 * self.bits), width)
        mask_type = ir.VectorType(ir.IntType(32), width)
        self.masks = [ir.Constant(mask_type, _phase_mask(width, dtype.itemsize, p)) for p in (0, 1)]
        order = lane_order(width, dtype.itemsize)
        self.restore = ir.Constant(mask_type, [order.index(o) for o in range(width)])
        self.shifts = {  # phase vector (lane order) shifted by `shift` outputs; the last ones from the raw vector after it
            (shift, p): ir.Constant(mask_type, [_shifted(o + shift, order, p) for o in order])
            for shift in range(1, width // 2)
            for p in (0, 1)
        }
        self.weights = {w: ir.Constant(vector, [float(w)] * width) for kernel in kernels for _, _, w in kernel}
        self.zero = ir.Constant(vector, [0.0] * width)

    @staticmethod
    def arrays(context, builder: ir.IRBuilder, signature, args) -> list[list[ir.Value]]:
        """Data pointers of the four tuples of rows: input, output, input ahead, output ahead."""
        return [
            [_data(context, builder, tuple_type, item) for item in _items(builder, tuple_type, value)]
            for tuple_type, value in zip(signature.args[:4], args[:4])
        ]

    def load(self, builder: ir.IRBuilder, rows: list, j: ir.Value, row: int, offset: int) -> ir.Value:
        """The ``width`` pixels of ``rows[row]`` from column ``stride * j + offset``, converted."""
        first = builder.mul(j, ir.Constant(j.type, self.stride))
        address = builder.gep(rows[row], [builder.add(first, ir.Constant(j.type, offset))])
        raw = builder.load(builder.bitcast(address, self.in_vector.as_pointer()), align=self.in_dtype.itemsize)
        return _convert(builder, raw, self.in_dtype, self.dtype, self.vector)

    def emit(self, builder: ir.IRBuilder, rows, outs, ahead, outs_ahead, j: ir.Value, loaded: dict) -> dict:
        """Emit the block at output column ``j``; ``loaded`` holds vectors already loaded, by ``(row, offset)``.

        Returns ``loaded`` with every vector the block loaded.
        """
        dtype, in_dtype, width, stride = self.dtype, self.in_dtype, self.width, self.stride
        vector = self.vector
        first = builder.mul(j, ir.Constant(j.type, stride))  # the block's first column
        taps = {}

        def load(row: int, offset: int) -> ir.Value:
            if (row, offset) not in loaded:
                loaded[row, offset] = self.load(builder, rows, j, row, offset)
            return loaded[row, offset]

        def load_words(row: int, offset: int) -> ir.Value:
            if (row, offset) not in loaded:
                address = builder.gep(rows[row], [builder.add(first, ir.Constant(j.type, offset))])
                words = builder.bitcast(address, self.words.as_pointer())
                loaded[row, offset] = builder.load(words, align=in_dtype.itemsize)
            return loaded[row, offset]

        def phase(row: int, group: int, p: int) -> ir.Value:
            """Phase ``p`` of the ``2 * width`` pixels from ``first + group * width``, in lane order."""
            if (row, group, p) not in taps:
                pair = load(row, group * width), load(row, (group + 1) * width)
                taps[row, group, p] = builder.shuffle_vector(*pair, self.masks[p])
            return taps[row, group, p]

        def tap(row: int, v: int) -> ir.Value:
            if (row, v) not in taps:
                q, p = divmod(v, 2)
                if stride == 1:
                    taps[row, v] = load(row, v)
                elif self.paired:  # pixel 2*m is the low half of word m (little-endian)
                    word = load_words(row, 2 * q)
                    half = builder.lshr(word, ir.Constant(self.words, [self.bits] * width)) if p else word
                    pixels = builder.trunc(half, self.in_vector)
                    taps[row, v] = _convert(builder, pixels, in_dtype, dtype, vector)
                else:  # q = group * width/2 + shift outputs right of the block's phase vector
                    group, shift = divmod(q, width // 2)
                    base = phase(row, group, p)
                    if shift:
                        following = load(row, (group + 2) * width)
                        base = builder.shuffle_vector(base, following, self.shifts[shift, p])
                    taps[row, v] = base
            return taps[row, v]

        _prefetch(builder, ahead, first, stride * width * in_dtype.itemsize)
        sums = []
        for kernel in self.kernels:
            acc = self.zero
            for row, v, weight in kernel:
                acc = builder.fadd(acc, builder.fmul(tap(row, v), self.weights[weight]))
            sums.append(acc)
        if self.magnitude:
            total = builder.fmul(sums[0], sums[0])
            for acc in sums[1:]:
                total = builder.fadd(total, builder.fmul(acc, acc))
            name = f"llvm.sqrt.v{width}f{dtype.itemsize * 8}"
            sqrt = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector]), name)
            sums = [builder.call(sqrt, [total])]
        _prefetch(builder, outs_ahead, j, width * dtype.itemsize, write=True)
        for out, values in zip(outs, sums):
            in_order = values
            if not self.natural_order:
                in_order = builder.shuffle_vector(values, ir.Constant(vector, ir.Undefined), self.restore)
            address = builder.bitcast(builder.gep(out, [j]), vector.as_pointer())
            builder.store(in_order, address, align=dtype.itemsize)
        return loaded


def _scalar_ir_type(dtype: np.dtype) -> ir.Type:
    if dtype.kind == "f":
        return _FLOAT_TYPES[dtype.itemsize]
    return ir.IntType(8 * dtype.itemsize)


def _convert(builder: ir.IRBuilder, raw: ir.Value, in_dtype: np.dtype, dtype: np.dtype, vector: ir.Type) -> ir.Value:
    """Pixels converted to the output dtype exactly as Numba converts a scalar."""
    if in_dtype == dtype:
        return raw
    if in_dtype.kind == "f":
        return builder.fpext(raw, vector) if in_dtype.itemsize < dtype.itemsize else builder.fptrunc(raw, vector)
    return builder.sitofp(raw, vector) if in_dtype.kind == "i" else builder.uitofp(raw, vector)


def _items(builder: ir.IRBuilder, tuple_type, value) -> list:
    return cgutils.unpack_tuple(builder, value, len(tuple_type))


def _data(context, builder: ir.IRBuilder, tuple_type, item) -> ir.Value:
    """Pointer to the first element of a 1-D array held in a Numba tuple (all of one array type)."""
    return context.make_array(tuple_type.dtype)(context, builder, value=item).data


def _prefetch(builder: ir.IRBuilder, rows: list, start: ir.Value, span_bytes: int, write: bool = False) -> None:
    """Prefetch (to read or write, keep in all cache levels) ``span_bytes`` of each row from element ``start``."""
    if not rows:
        return
    byte_pointer = ir.IntType(8).as_pointer()
    i32 = ir.IntType(32)
    signature = ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32])
    prefetch = cgutils.get_or_insert_function(builder.module, signature, "llvm.prefetch.p0i8")
    for row in rows:
        first = builder.bitcast(builder.gep(row, [start]), byte_pointer)
        for offset in range(0, span_bytes, LINE_BYTES):
            address = builder.gep(first, [ir.Constant(ir.IntType(64), offset)])
            builder.call(prefetch, [address, ir.Constant(i32, int(write)), ir.Constant(i32, 3), ir.Constant(i32, 1)])


@functools.cache
def source_digest() -> str:
    """Hash of this module's source: generated kernels name it, so editing it invalidates their cache."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
