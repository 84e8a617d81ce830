"""The compiled core: one fused, Numba-compiled pass per output row.

:func:`correlate_block_compiled` has exactly the contract of
:func:`convpipe.core.correlate_block_numpy` and returns the same bits. Every
output pixel is still summed in the fixed order of the NumPy core::

    acc = 0
    for c, u, v (row-major), skipping zero weights:
        acc += dtype(x[c, i*sy + u, j*sx + v]) * w[k, c, u, v]
    magnitude = sqrt(acc_0 * acc_0 + acc_1 * acc_1 + ...)   # left to right

with one rounding per multiply and per add: no ``fastmath``, so LLVM may
neither reassociate nor contract a multiply and an add into an FMA.

Generated kernels
-----------------
For each kernel bank (cast to the output dtype), stride and combine mode,
:func:`generate_source` writes a small Python module specialised for that
bank, which Numba compiles:

* the weights are literal constants and zero weights produce no code, so a
  Sobel pair costs 12 multiply-adds per pixel, not 18;
* the kernel window is unrolled; each output row is one loop over the output
  columns ``j`` that loads every tap it needs once, keeps the accumulators
  of several kernels in registers, and stores the responses, or directly
  their magnitude, so the intermediate responses never reach memory. Large
  banks take several such loops per row (see :func:`_kernel_groups`: LLVM
  stops vectorising a loop with too many stored and loaded rows);
* every load in that loop is ``row[j + q]`` on a contiguous row, so LLVM
  vectorises the loop over ``j``. At column strides 1 and 2, though, the
  loop only finishes each row: :mod:`convpipe.simd` computes the rest in
  blocks of one 64-byte vector, written directly in LLVM IR (the next
  output row's input and output rows prefetched, and at stride 2 pixels
  deinterleaved within 128-bit lanes, a row's blocks in one loop that
  carries a loaded vector from each block to the next). Against the
  loops on a 2048-square frame (``benchmarks/kernels.py``): float32 Sobel
  1.5x faster at stride 1 and 1.9x at stride 2, a 5x5 bank 1.5x and a
  3-channel bank 4.7x at stride 2, uint16 pixels 1.0-1.7x; on float32
  frames that fit in the cache the loops are faster at stride 1 (README).
  With a column stride ``sx > 2`` the loop
  reads, per input row, the ``sx`` consecutive pixels ``row[j*sx + o]`` of a
  window ending at the row's last tap; taps further left are the same
  phase's pixels of earlier iterations, carried in variables (*direct
  mode*, see :func:`_phase_windows`). LLVM turns these into wide loads,
  shuffles and vector splices, so no row is split into memory first.
  Kernels wider than ``2 * sx`` (a pixel carried more than
  ``MAX_CARRIED_DEPTH`` iterations) or with a row whose last tap comes
  before column ``sx - 1`` (the window would start left of the row) fall
  back to the split: each
  input row is first split into its ``sx`` phases (``phase_p = row[p::sx]``,
  converted to the output dtype), after which
  ``x[r, j*sx + v] == phase_(v % sx)[j + v // sx]`` is contiguous in ``j``;
  the split rows live in a ring of ``kh`` rows, so each input row is split
  once even when consecutive output rows share it;
* with a row stride ``sy > 1`` only the kept output rows are computed.

Banks with more than ``MAX_UNROLLED_TAPS`` non-zero weights would take long
to compile unrolled (Numba's compile time grows with every tap); they run
through one generic kernel, compiled once per pair of dtypes, that takes a
table of the non-zero taps and adds four taps per pass over each output row,
in the same order. It is 1.5-3x slower than an unrolled kernel.

Compile cache
-------------
Compiled kernels are cached in the process (keyed by the bank's bytes and
shape, the stride, the combine mode and both dtypes; the lookup is
thread-safe) and on disk: the generated module is written, under a name
derived from the hash of its source, to :func:`cache_dir`, imported from
there and compiled with ``cache=True``, so a second process (a Dask worker,
the next run) loads machine code instead of compiling. Files are written
atomically (temporary file, then ``os.replace``) with a fixed modification
time, so processes that race to write the same module agree on Numba's cache
index. The generic kernel is cached by Numba next to this module (or under
``$NUMBA_CACHE_DIR``). The kernels release the GIL (``nogil=True``): Dask
threads run them in parallel.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import sys
import tempfile
import threading
import types
from pathlib import Path

import numba
import numpy as np

from convpipe import simd
from convpipe.core import Combine, check_block_arguments, output_shape

#: Environment variable naming the directory of the on-disk kernel cache.
CACHE_DIR_ENV = "CONVPIPE_CACHE_DIR"

#: Banks with more non-zero weights than this use the generic kernel.
MAX_UNROLLED_TAPS = 256

#: Accumulators kept in registers by one loop over an output row.
KERNELS_PER_PASS = 8

#: Most (stored rows x loaded taps) pairs in one loop over an output row.
#: LLVM's loop vectorizer gives up on loops with more possible dependences
#: between stores and loads (its ``max-dependences`` is 100).
MAX_STORE_LOAD_PAIRS = 96

#: Direct mode (see :func:`_phase_windows`) carries a pixel at most this many
#: iterations; deeper windows run as fast or faster on split rows (measured
#: at stride 2, before it moved to SIMD blocks: 7x7 was 1.6x slower direct).
MAX_CARRIED_DEPTH = 1

#: Column strides computed in SIMD blocks (see convpipe.simd).
SIMD_STRIDES = (1, 2)

#: How many output rows ahead SIMD blocks prefetch the input rows. On 2048-wide
#: float32 rows, stride 2: 0.75-0.83 ms per frame without, 0.49-0.55 with 1 or 2,
#: 0.52-0.56 with 4; stride 1: 1.65 ms without, 1.32-1.35 with 1 or 2. Since the
#: stride-2 blocks shift phase vectors (fewer shuffles), 1 row beats 2 there by
#: 7 % (Sobel pair; interleaved, 4 runs); stride 1, uint16 and 5x5 banks even.
PREFETCH_ROWS = 1

_SOURCE_MTIME = 946684800  # fixed mtime (2000-01-01) of generated modules: see _write_once
_KERNELS: dict[tuple, numba.core.dispatcher.Dispatcher] = {}
_KERNELS_LOCK = threading.Lock()


def correlate_block_compiled(
    block: np.ndarray,
    weights: np.ndarray,
    stride: tuple[int, int] = (1, 1),
    combine: Combine = "none",
    dtype: np.dtype | type = np.float32,
) -> np.ndarray:
    """Valid strided cross-correlation of one block with a bank, compiled.

    Same parameters, result and bits as
    :func:`convpipe.core.correlate_block_numpy`; see the module docstring
    for how the kernel is built.

    Examples
    --------
    >>> x = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
    >>> w = np.ones((1, 1, 3, 3))
    >>> correlate_block_compiled(x, w)
    array([[[45., 54.],
            [81., 90.]]], dtype=float32)
    """
    dtype = np.dtype(dtype)
    stride = (int(stride[0]), int(stride[1]))
    check_block_arguments(block, weights, stride, combine, dtype)
    block = _native_block(block, dtype)
    bank = np.ascontiguousarray(weights, dtype=dtype)
    n_kernels, _, kh, kw = bank.shape
    ho, wo = output_shape(block.shape, (kh, kw), stride)
    batch_shape = block.shape[:-3]
    x = block.reshape((math.prod(batch_shape),) + block.shape[-3:])  # math.prod: 2 us less per call than np.prod
    kernel_axis = (n_kernels,) if combine == "none" else ()
    out = np.empty(x.shape[:1] + kernel_axis + (ho, wo), dtype=dtype)
    if np.count_nonzero(bank) <= MAX_UNROLLED_TAPS:
        compiled_kernel(bank, stride, combine, x.dtype)(x, out)
    else:
        _correlate_with_tap_table(x, bank, stride, out)
    return out.reshape(batch_shape + kernel_axis + (ho, wo))


def _native_block(block: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The block as an aligned, C-contiguous array of a dtype Numba reads.

    Copies only when needed. Half floats are widened to ``dtype`` (exact, as
    the NumPy core does tap by tap); non-native byte order is swapped.
    """
    if block.dtype.kind not in "biuf":
        raise TypeError(f"block must hold real numbers, got dtype {block.dtype}")
    if block.flags.c_contiguous and block.flags.aligned and block.dtype.isnative and block.dtype != np.float16:
        return block  # the common case, without np.require's 1 us
    native = dtype if block.dtype == np.float16 else block.dtype.newbyteorder("=")
    return np.require(block, dtype=native, requirements=["C", "A"])


def compiled_kernel(
    bank: np.ndarray,
    stride: tuple[int, int],
    combine: Combine,
    input_dtype: np.dtype,
) -> numba.core.dispatcher.Dispatcher:
    """The compiled kernel for a bank, from the process cache or built once.

    ``bank`` is the ``(K, C, kh, kw)`` weights already cast to the output
    dtype. The kernel is called as ``kernel(x, out)`` with ``x`` of shape
    ``(N, C, H, W)`` and ``input_dtype``, ``out`` C-contiguous of shape
    ``(N, K, Ho, Wo)``, or ``(N, Ho, Wo)`` for ``combine="magnitude"``.
    """

    def build():
        module = _import_generated(generate_source(bank, stride, combine, input_dtype))
        out_ndim = 4 if combine == "none" else 3
        signature = (_readonly_array(input_dtype, 4), _array(bank.dtype, out_ndim))
        return _jit(module.correlate_bank, signature, cache=module.__file__ is not None)

    key = (bank.shape, bank.tobytes(), bank.dtype.str, stride, combine, np.dtype(input_dtype).str)
    return _cached_kernel(key, build)


def _cached_kernel(key: tuple, build) -> numba.core.dispatcher.Dispatcher:
    """``_KERNELS[key]``, built by ``build()`` by the first thread that asks for it."""
    kernel = _KERNELS.get(key)
    if kernel is None:
        with _KERNELS_LOCK:  # one build per key; Numba compiles one function at a time anyway
            kernel = _KERNELS.get(key)
            if kernel is None:
                kernel = _KERNELS[key] = build()
    return kernel


def _array(dtype: np.dtype, ndim: int) -> numba.types.Array:
    return numba.types.Array(numba.from_dtype(np.dtype(dtype)), ndim, "C")


def _readonly_array(dtype: np.dtype, ndim: int) -> numba.types.Array:
    """Array type that also accepts writable arrays: one compilation for both."""
    return numba.types.Array(numba.from_dtype(np.dtype(dtype)), ndim, "C", readonly=True)


def _jit(function, signature: tuple, cache: bool) -> numba.core.dispatcher.Dispatcher:
    """Compile ``function`` for exactly one signature (or load it from disk)."""
    return numba.njit(signature, nogil=True, cache=cache)(function)


# --------------------------------------------------------------------------
# Source generation
# --------------------------------------------------------------------------


def generate_source(
    bank: np.ndarray,
    stride: tuple[int, int],
    combine: Combine,
    input_dtype: np.dtype,
) -> str:
    """Python source of a module whose ``correlate_bank(x, out)`` applies ``bank``.

    ``bank`` has shape ``(K, C, kh, kw)`` and the output dtype; input pixels
    are converted to it as they are read, unless ``input_dtype`` is the same
    (fewer calls for Numba to type). The source is plain Python (it runs,
    slowly, without Numba) and depends only on the arguments, so its hash
    names the compiled kernel.
    """
    convert = np.dtype(input_dtype) != bank.dtype
    n_kernels, _, kh, kw = bank.shape
    sy, sx = stride
    taps = _nonzero_taps(bank)
    fused_magnitude = combine == "magnitude" and n_kernels <= KERNELS_PER_PASS
    groups = [list(range(n_kernels))] if fused_magnitude else _kernel_groups(taps)
    rows = _group_rows(taps, range(n_kernels))  # every input row a tap reads
    channels = sorted({c for c, _ in rows})
    in_simd = sx in SIMD_STRIDES and bool(rows) and simd.supports(input_dtype, bank.dtype)
    overlap = in_simd and _overlaps_last_block(input_dtype)
    runs = [in_simd and _runs_blocks(bank, taps, group, sx, input_dtype) for group in groups]
    block_constants = _simd_block_constants(bank, taps, groups, runs, sx, fused_magnitude, input_dtype) if in_simd else []
    lines = [
        f'"""Generated by convpipe.compiled: bank of shape {bank.shape}, stride {stride},',
        f"combine {combine!r}, {np.dtype(input_dtype).name} pixels in, {bank.dtype.name} out.",
        'Do not edit: the file name is the hash of this source."""',
        "",
        "import numpy as np",
        *([f"from convpipe.simd import simd_block, simd_blocks  # convpipe.simd {simd.source_digest()}"] if in_simd else []),
        "",
        f"DTYPE = np.{bank.dtype.name}",
        f"CHANNELS = {tuple(channels)}  # channels with a non-zero weight",
        *_weight_constants(bank, taps),
        *block_constants,
        "",
        "",
        "def correlate_bank(x, out):",
        "    n_batch, _, height, width = x.shape",
        f"    ho = (height - {kh}) // {sy} + 1",
        f"    wo = (width - {kw}) // {sx} + 1",
    ]
    windows = [_phase_windows(taps, group, sx) for group in groups] if sx > 1 and not in_simd else []
    direct = bool(windows) and all(window is not None for window in windows)
    split = sx > 1 and bool(rows) and not direct and not in_simd  # an all-zero bank reads no row
    if in_simd:
        lines += _simd_vector_end(taps, sx, kw, bank.dtype, input_dtype, overlap)
    if split:
        lines += _phase_buffers(taps, kh, sx)
    if direct and any(unused for window in windows for row in window.values() for _, unused in row.values()):
        lines.append("    scratch = np.empty(wo, x.dtype)  # keeps unused phases loaded: see _direct_loads")
    if combine == "magnitude" and not fused_magnitude:
        lines.append(f"    responses = np.empty(({n_kernels}, wo), DTYPE)")
        lines += [f"    response{k} = responses[{k}]" for k in range(n_kernels)]
    lines += [
        "    for n in range(n_batch):",
        "        for i in range(ho):",
    ]
    if not split:  # stride 1 in x, direct or SIMD blocks: rows read as they are
        lines += [f"            row_c{c}_u{u} = x[n, {c}, {_affine('i', sy, u)}]" for c, u in rows]
    else:
        lines += _split_new_rows(kh, sy, sx, convert)
        lines += [
            f"            phase_c{c}_u{u}_p{p} = phases[{channels.index(c)}, {_ring_slot(sy, u, kh)}, {p}]"
            for c, u, p in _phase_reach(taps, sx)
        ]
    if in_simd:
        lines += _rows_ahead(rows, sy)
    if combine == "none":
        lines += [f"            out{k} = out[n, {k}, i]" for k in range(n_kernels)]
        if in_simd:
            lines += [f"            out{k}_ahead = out[n, {k}, later]" for k in range(n_kernels)]
    else:
        lines.append("            out_row = out[n, i]")
        if in_simd and fused_magnitude:
            lines.append("            out_row_ahead = out[n, later]")
    for index, group in enumerate(groups):
        window = windows[index] if direct else None
        if in_simd:
            lines += _simd_loop(taps, group, index, combine, fused_magnitude, bank.dtype, overlap, runs[index])
        first = ("tail_start" if overlap else "vector_end") if in_simd else "0"
        lines += _row_loop(taps, group, sx, convert, combine, fused_magnitude, window, split, first)
    if combine == "magnitude" and not fused_magnitude:
        squares = " + ".join(f"response{k}[j] * response{k}[j]" for k in range(n_kernels))
        lines += ["            for j in range(wo):", f"                out_row[j] = np.sqrt({squares})"]
    return "\n".join(lines) + "\n"


def _kernel_groups(taps) -> list[list[int]]:
    """Split the kernels into runs computed by one loop each, in order.

    A run grows while it has at most ``KERNELS_PER_PASS`` kernels and
    ``MAX_STORE_LOAD_PAIRS`` pairs of a stored row (one per kernel) and a
    loaded tap, so that LLVM still vectorises the loop.
    """
    groups: list[list[int]] = []
    for k in range(len(taps)):
        if groups:
            candidate = groups[-1] + [k]
            loaded = {(c, u, v) for j in candidate for c, u, v, _ in taps[j]}
            if len(candidate) <= KERNELS_PER_PASS and len(candidate) * len(loaded) <= MAX_STORE_LOAD_PAIRS:
                groups[-1] = candidate
                continue
        groups.append([k])
    return groups


def _nonzero_taps(bank: np.ndarray) -> list[list[tuple[int, int, int, str]]]:
    """Per kernel, its ``(c, u, v, name)`` taps with non-zero weight, in summation order."""
    return [
        [(int(c), int(u), int(v), f"W{k}_c{c}_u{u}_v{v}") for c, u, v in zip(*np.nonzero(bank[k]))]
        for k in range(bank.shape[0])
    ]


def _weight_constants(bank: np.ndarray, taps) -> list[str]:
    """One module constant per non-zero weight, exactly its value in DTYPE.

    Numba freezes module globals into the machine code, so these are
    literals to LLVM (a weight of 1 costs no multiply); as constants rather
    than inline ``DTYPE(...)`` calls they also keep Numba's typing fast.
    """
    lines = ["ZERO = DTYPE(0.0)"]
    for k, kernel_taps in enumerate(taps):
        for c, u, v, name in kernel_taps:
            value = float(bank[k, c, u, v])
            text = repr(value) if np.isfinite(value) else f'float("{value}")'
            lines.append(f"{name} = DTYPE({text})")
    return lines


def _affine(name: str, scale: int, offset: int) -> str:
    """``name * scale + offset`` as short source text."""
    term = name if scale == 1 else f"{name} * {scale}"
    return term if offset == 0 else f"{term} + {offset}"


def _load(item: str, convert: bool) -> str:
    """Source reading an input pixel, converted to DTYPE if it is not one already."""
    return f"DTYPE({item})" if convert else item


def _ring_slot(sy: int, u: int, kh: int) -> str:
    """Slot of input row ``i * sy + u`` in the ring of the last ``kh`` split rows."""
    return "0" if kh == 1 else f"({_affine('i', sy, u)}) % {kh}"


def _phase_reach(taps, sx: int) -> dict[tuple[int, int, int], int]:
    """For each phase row ``(c, u, p)`` read by a tap, the largest offset ``v // sx`` read in it."""
    reach: dict[tuple[int, int, int], int] = {}
    for kernel_taps in taps:
        for c, u, v, _ in kernel_taps:
            key = (c, u, v % sx)
            reach[key] = max(reach.get(key, 0), v // sx)
    return dict(sorted(reach.items()))


def _phase_buffers(taps, kh: int, sx: int) -> list[str]:
    """Allocate, once per call, the ring of split input rows.

    ``phases[slot, r % kh, p]`` holds phase ``p`` of input row ``r`` of
    channel ``CHANNELS[slot]``, of which the first ``span`` elements may be
    read; ``filled`` elements of every phase can be split in one loop
    without reading past the row.
    """
    longest = max(_phase_reach(taps, sx).values(), default=0)
    return [
        f"    span = wo + {longest}",
        f"    phases = np.empty((len(CHANNELS), {kh}, {sx}, span), DTYPE)",
        f"    filled = min(width // {sx}, span)",
    ]


def _split_new_rows(kh: int, sy: int, sx: int, convert: bool) -> list[str]:
    """Split the input rows that output row ``i`` needs and its predecessor did not.

    One loop fills all ``sx`` phases up to ``filled``: LLVM turns its
    strided loads into wide loads and shuffles (a loop over a single phase
    would use slow gathers). A short loop per phase finishes the phases
    that hold more elements, up to ``span``.
    """
    overlap = max(kh - sy, 0)
    first = _affine("i", sy, 0) + (f" + ({overlap} if i > 0 else 0)" if overlap else "")
    split_all = [f"phase[{p}, m] = {_load('row[' + _affine('m', sx, p) + ']', convert)}" for p in range(sx)]
    return [
        f"            for r in range({first}, {_affine('i', sy, kh)}):",
        "                for slot in range(len(CHANNELS)):",
        "                    row = x[n, CHANNELS[slot], r]",
        f"                    phase = phases[slot, r % {kh}]",
        "                    for m in range(filled):",
        *[" " * 24 + line for line in split_all],
        f"                    for p in range({sx}):",
        f"                        for m in range(filled, min((width - p + {sx - 1}) // {sx}, span)):",
        f"                            phase[p, m] = {_load(f'row[m * {sx} + p]', convert)}",
    ]


def _row_loop(
    taps,
    group: list[int],
    sx: int,
    convert: bool,
    combine: Combine,
    fused_magnitude: bool,
    window: dict | None = None,
    split: bool = False,
    first: str = "0",
) -> list[str]:
    """One loop over the output columns ``first:wo`` computing the kernels of ``group``.

    ``window`` (from :func:`_phase_windows`) selects the direct mode for a
    column stride ``sx > 1``; ``split`` reads split rows; otherwise the
    loop reads ``row[j * sx + v]`` (the scalar tail after SIMD blocks).
    """
    used = sorted({(c, u, v) for k in group for c, u, v, _ in taps[k]})
    lines = []
    if window is not None:
        lines += _direct_start(window, sx, convert)
    lines.append("            for j in range(wo):" if first == "0" else f"            for j in range({first}, wo):")
    if window is not None:
        lines += _direct_loads(used, window, sx, convert)
    else:
        for c, u, v in used:
            if split:
                load = f"phase_c{c}_u{u}_p{v % sx}[{_affine('j', 1, v // sx)}]"
            else:
                load = _load(f"row_c{c}_u{u}[{_affine('j', sx, v)}]", convert)
            lines.append(f"                x_c{c}_u{u}_v{v} = {load}")
    for k in group:
        if taps[k]:  # one expression per kernel: summed left to right, cheap for Numba to type
            lines += [f"                acc{k} = (", "                    ZERO"]
            lines += [f"                    + x_c{c}_u{u}_v{v} * {weight}" for c, u, v, weight in taps[k]]
            lines.append("                )")
        else:
            lines.append(f"                acc{k} = ZERO")
    if fused_magnitude:
        squares = " + ".join(f"acc{k} * acc{k}" for k in group)
        lines.append(f"                out_row[j] = np.sqrt({squares})")
    elif combine == "none":
        lines += [f"                out{k}[j] = acc{k}" for k in group]
    else:
        lines += [f"                response{k}[j] = acc{k}" for k in group]
    if window is not None:
        lines += _direct_shift(window)
    return lines


# Direct mode for a column stride sx > 1 ----------------------------------
#
# Output column j reads x[r, j*sx + v]. Per input row, each iteration loads
# the sx consecutive pixels x[r, j*sx + o] for o in a window
# [end - sx, end) (end = the row's last tap + 1): one pixel of every phase
# o % sx. A tap v of the same phase further left, v = o - d*sx, is the pixel
# loaded d iterations earlier, carried in a variable (a recurrence). LLVM
# turns the sx strided loads of a row into wide loads and shuffles, and the
# carried values into vector splices, so no row is split into memory first.
# A window pixel no tap reads is still loaded and stored to a scratch row:
# without it LLVM would read the remaining phases with slow gathers.


def _phase_windows(taps, group: list[int], sx: int) -> dict | None:
    """Per input row ``(c, u)`` of ``group``, its window: ``{o: (depth, unused)}``.

    ``depth`` is the most iterations a pixel of phase ``o % sx`` is carried;
    ``unused`` marks a window pixel that no tap reads. None when some row's
    window would start left of the row (its last tap is before ``sx - 1``) or
    a pixel would be carried more than ``MAX_CARRIED_DEPTH`` iterations: the
    caller then splits rows instead.
    """
    rows: dict[tuple[int, int], set[int]] = {}
    for k in group:
        for c, u, v, _ in taps[k]:
            rows.setdefault((c, u), set()).add(v)
    windows = {}
    for (c, u), offsets in sorted(rows.items()):
        end = max(offsets) + 1
        if end < sx:
            return None
        window = {}
        for o in range(end - sx, end):
            depths = [(o - v) // sx for v in offsets if v % sx == o % sx and v <= o]
            window[o] = (max(depths, default=0), not depths)
        if max(depth for depth, _ in window.values()) > MAX_CARRIED_DEPTH:
            return None
        windows[(c, u)] = window
    return windows


def _carried(c: int, u: int, o: int, d: int) -> str:
    """Name of the pixel of window offset ``o`` loaded ``d`` iterations ago."""
    return f"carry_c{c}_u{u}_o{o}_d{d}"


def _direct_start(window: dict, sx: int, convert: bool) -> list[str]:
    """Before the loop: the carried pixels as they are at ``j = 0``."""
    lines = []
    for (c, u), offsets in window.items():
        for o, (depth, _) in offsets.items():
            for d in range(1, depth + 1):
                lines.append(f"            {_carried(c, u, o, d)} = {_load(f'row_c{c}_u{u}[{o - d * sx}]', convert)}")
    return lines


def _direct_loads(used, window: dict, sx: int, convert: bool) -> list[str]:
    """Loop body head: load each row's window, name every tap's pixel."""
    lines = []
    for (c, u), offsets in window.items():
        for o, (_, unused) in offsets.items():
            item = f"row_c{c}_u{u}[{_affine('j', sx, o)}]"
            if unused:
                lines.append(f"                scratch[j] = {item}")
            else:
                lines.append(f"                now_c{c}_u{u}_o{o} = {_load(item, convert)}")
    for c, u, v in used:
        o = next(o for o in window[(c, u)] if o % sx == v % sx)
        d = (o - v) // sx
        source = f"now_c{c}_u{u}_o{o}" if d == 0 else _carried(c, u, o, d)
        lines.append(f"                x_c{c}_u{u}_v{v} = {source}")
    return lines


def _direct_shift(window: dict) -> list[str]:
    """Loop body tail: every carried pixel moves one iteration older."""
    lines = []
    for (c, u), offsets in window.items():
        for o, (depth, _) in offsets.items():
            for d in range(depth, 1, -1):
                lines.append(f"                {_carried(c, u, o, d)} = {_carried(c, u, o, d - 1)}")
            if depth:
                lines.append(f"                {_carried(c, u, o, 1)} = now_c{c}_u{u}_o{o}")
    return lines


# SIMD blocks for column strides 1 and 2 ----------------------------------
#
# Each output row runs blocks of simd.block_width outputs (LLVM IR from
# convpipe.simd) up to vector_end, then the Python loop for the rest.


def _simd_block_constants(bank: np.ndarray, taps, groups, runs, sx: int, fused: bool, input_dtype) -> list[str]:
    """Module constants: one ``simd_block`` intrinsic per kernel group, ``simd_blocks`` where ``runs[index]``."""
    lines = []
    for index, group in enumerate(groups):
        factory = "simd_blocks" if runs[index] else "simd_block"
        lines += [
            "",
            f"BLOCK{index} = {factory}(",
            f"    {bank.dtype.name!r},",
            f"    {np.dtype(input_dtype).name!r},",
            "    (  # per kernel: (row, v, weight) for row_c{c}_u{u} in the order of the call",
        ]
        for kernel_taps in _block_taps(taps, group):
            text = ", ".join(f"({row}, {v}, {name})" for row, v, name in kernel_taps)
            lines.append(f"        ({text},)," if text else "        (),")
        lines += ["    ),", f"    magnitude={fused},", f"    stride={sx},", ")"]
    return lines


def _block_taps(taps, group) -> list[list[tuple[int, int, str]]]:
    """Per kernel of ``group``, its taps as a block takes them: ``(row index, v, weight name)``."""
    group_rows = _group_rows(taps, group)
    return [[(group_rows.index((c, u)), v, name) for c, u, v, name in taps[k]] for k in group]


def _runs_blocks(bank: np.ndarray, taps, group, sx: int, input_dtype) -> bool:
    """Whether the group's blocks run as one ``simd_blocks`` loop per row (they carry loads: see convpipe.simd)."""
    kernels = _block_taps(taps, group)
    return bool(simd.carried_loads(bank.dtype.name, np.dtype(input_dtype).name, kernels, sx))


def _group_rows(taps, group) -> list[tuple[int, int]]:
    """Input rows ``(c, u)`` read by the kernels of ``group``, in order."""
    return sorted({(c, u) for k in group for c, u, _, _ in taps[k]})


def _simd_vector_end(taps, sx: int, kw: int, dtype: np.dtype, input_dtype, overlap: bool) -> list[str]:
    """Source setting ``vector_end``, the end of the aligned SIMD blocks (and what an overlapping block needs).

    A block at ``j`` reads ``simd.extent`` pixels from column ``sx * j``,
    ``spill`` more than its own ``sx * width``; a block may start anywhere
    up to ``vector_limit - width`` without reading past its row. With
    ``overlap`` (see :func:`_overlaps_last_block`) one more block at
    ``last_block = vector_limit - width`` overlaps the last aligned one and
    the loop finishes the row from ``tail_start`` (``vector_limit``, or 0
    if no block fits); otherwise from ``vector_end``. The form matters:
    clamping ``vector_end`` at 0 with ``max`` or an ``if`` made the whole
    kernel 18-45 % slower (measured; ``min`` costs nothing), so a row
    narrower than ``spill`` is handled by ``min(width, spill)`` instead.
    """
    width = simd.block_width(dtype)
    last_column = max(v for kernel_taps in taps for _, _, v, _ in kernel_taps)
    spill = simd.extent(last_column, sx, np.dtype(input_dtype).name, dtype.name) - sx * width
    if sx == 1 and spill <= kw - 1:  # then width - spill >= wo
        limit = "wo"
    else:
        if spill == 0:
            readable = "width"
        else:  # never negative
            readable = f"(width - {spill})" if spill <= kw else f"(width - min(width, {spill}))"
        limit = f"min(wo, {readable} // {sx})"
    if not overlap:
        return [f"    vector_end = {limit} // {width} * {width}"]
    return [
        f"    vector_limit = {limit}",
        f"    vector_end = vector_limit // {width} * {width}",
        f"    last_block = vector_limit - {width}",
        "    tail_start = vector_limit if vector_end > 0 else 0",
    ]


def _overlaps_last_block(input_dtype) -> bool:
    """Whether a row's last columns run as one more block overlapping the one before (1- and 2-byte pixels).

    The loop after the blocks converts every tap's pixel one at a time;
    replacing it with an overlapping block made uint16/uint8 Sobel 7-16 %
    faster on one 2048-square frame and 23-36 % on stacks of 512- and
    256-square frames (interleaved runs, both strides). With 4- and 8-byte
    pixels the same block made 2048-wide rows 9-21 % slower (float32,
    int32, float64; those loops wait on memory, and removing the tail
    loop altogether made them slower still), so they keep the loop.
    """
    return np.dtype(input_dtype).itemsize <= 2


def _rows_ahead(rows, sy: int) -> list[str]:
    """``later``, output row ``i + PREFETCH_ROWS``, and the input rows it reads and its predecessor does not."""
    new = [(c, u) for c, u in rows if (c, u + sy) not in rows]
    items = "".join(f"x[n, {c}, {_affine('later', sy, u)}], " for c, u in new)
    return [
        f"            later = min(i + {PREFETCH_ROWS}, ho - 1)",
        f"            rows_ahead = ({items})",
    ]


def _simd_loop(
    taps, group: list[int], index: int, combine: Combine, fused: bool, dtype: np.dtype, overlap: bool, runs: bool
) -> list[str]:
    """The vector blocks of one kernel group over ``0:vector_end``, and the overlapping one if ``overlap``.

    ``runs``: the group's intrinsic is a ``simd_blocks`` loop, called once.

    Each block prefetches the input rows of output row ``later`` (the first
    group's blocks) and the rows of ``later`` it writes itself (responses
    for a magnitude over several groups are scratch rows, in cache).
    """
    rows = "".join(f"row_c{c}_u{u}, " for c, u in _group_rows(taps, group))
    if fused:
        outs, outs_ahead = "out_row, ", "out_row_ahead, "
    elif combine == "none":
        outs, outs_ahead = "".join(f"out{k}, " for k in group), "".join(f"out{k}_ahead, " for k in group)
    else:
        outs, outs_ahead = "".join(f"response{k}, " for k in group), ""
    ahead = "rows_ahead" if index == 0 else "()"
    width = simd.block_width(dtype)
    arguments = f"({rows}), ({outs}), {ahead}, ({outs_ahead})"
    if runs:
        lines = [f"            BLOCK{index}({arguments}, 0, vector_end)"]
        last = f"last_block, last_block + {width}"
    else:
        lines = [f"            for j in range(0, vector_end, {width}):", f"                BLOCK{index}({arguments}, j)"]
        last = "last_block"
    if overlap:  # at most once: see _simd_vector_end
        lines += [
            f"            for j in range(vector_end, tail_start, {width}):",
            f"                BLOCK{index}({arguments}, {last})",
        ]
    return lines


# --------------------------------------------------------------------------
# Generated modules on disk
# --------------------------------------------------------------------------


def cache_dir() -> Path:
    """Directory of the generated kernels and of their compiled machine code.

    ``$CONVPIPE_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/convpipe/numba``,
    else ``~/.cache/convpipe/numba``.
    """
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "convpipe" / "numba"


def _import_generated(source: str) -> types.ModuleType:
    """Import generated source as a module, from a file in :func:`cache_dir` if possible.

    When the cache directory cannot be written the module lives in memory
    only (``module.__file__`` is None) and its kernel is compiled without
    disk cache.
    """
    name = "convpipe_kernel_" + hashlib.sha256(source.encode()).hexdigest()[:32]
    if name in sys.modules:
        return sys.modules[name]
    path = cache_dir() / f"{name}.py"
    try:
        _write_once(path, source)
    except OSError:
        module = types.ModuleType(name)
        module.__file__ = None
        exec(compile(source, f"<{name}>", "exec"), module.__dict__)  # noqa: S102 (our generated source)
        return module
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


def _write_once(path: Path, source: str) -> None:
    """Write ``source`` to ``path`` atomically, unless it is already there.

    The modification time is fixed: Numba invalidates its on-disk cache
    when the source file's (mtime, size) changes, and two processes that
    write the same module at the same time must not invalidate each other.
    """
    data = source.encode()
    try:
        if path.read_bytes() == data:
            return
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.utime(temporary, (_SOURCE_MTIME, _SOURCE_MTIME))
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


# --------------------------------------------------------------------------
# Generic kernel for large banks
# --------------------------------------------------------------------------


def _correlate_with_tap_table(
    x: np.ndarray, bank: np.ndarray, stride: tuple[int, int], out: np.ndarray
) -> None:
    """Run the generic kernel: the bank goes in as a table of its non-zero taps.

    Tap ``t`` multiplies ``phases[rows[t], j + offsets[t]]`` by ``weights[t]``;
    the taps of kernel ``k`` are ``starts[k]:starts[k + 1]``, in summation
    order (``np.nonzero`` is row-major).
    """
    n_kernels, _, kh, kw = bank.shape
    sx = stride[1]
    k, c, u, v = np.nonzero(bank)
    rows = (c * kh + u) * sx + v % sx
    starts = np.searchsorted(k, np.arange(n_kernels + 1))
    kernel = _generic_kernel(x.dtype, bank.dtype)
    magnitude = out.ndim == 3
    out4 = out[:, None] if magnitude else out
    kernel(x, rows, v // sx, bank[k, c, u, v], starts, (kh, kw), stride, magnitude, out4)


def _correlate_any_bank(x, rows, offsets, weights, starts, kernel_shape, stride, magnitude, out):
    """Generic kernel: per output row, split the input rows, then sum each response tap by tap."""
    n_batch, n_channels, _, _ = x.shape
    kh, kw = kernel_shape
    sy, sx = stride
    n_kernels = starts.shape[0] - 1
    wo = out.shape[3]
    phases = np.empty((n_channels * kh * sx, wo + (kw - 1) // sx), weights.dtype)
    responses = np.empty((n_kernels if magnitude else 0, wo), weights.dtype)
    for n in range(n_batch):
        for i in range(out.shape[2]):
            _split_window(x[n, :, i * sy : i * sy + kh], sx, phases)
            for k in range(n_kernels):
                acc = responses[k] if magnitude else out[n, k, i]
                _accumulate(phases, rows, offsets, weights, starts[k], starts[k + 1], acc)
            if magnitude:
                _store_magnitude(responses, out[n, 0, i])


@numba.njit(nogil=True, cache=True)
def _split_window(window, sx, phases):
    """``phases[(c * kh + u) * sx + p, m] = window[c, u, m * sx + p]``, converted."""
    n_channels, kh, _ = window.shape
    for c in range(n_channels):
        for u in range(kh):
            for p in range(sx):
                phase = phases[(c * kh + u) * sx + p]
                column = window[c, u, p::sx]
                for m in range(min(column.shape[0], phase.shape[0])):
                    phase[m] = column[m]  # converted by the store


@numba.njit(nogil=True, cache=True)
def _accumulate(phases, rows, offsets, weights, start, stop, acc):
    """``acc = 0``, then add the taps ``start:stop`` in order, four per pass over the row.

    Rows are sliced at the tap offset (not indexed ``j + offset``): LLVM
    cannot tell a run-time offset is not negative, and the wraparound test
    would keep it from vectorising.
    """
    acc[:] = 0
    t = start
    while t + 4 <= stop:
        r0, r1 = phases[rows[t], offsets[t] :], phases[rows[t + 1], offsets[t + 1] :]
        r2, r3 = phases[rows[t + 2], offsets[t + 2] :], phases[rows[t + 3], offsets[t + 3] :]
        w0, w1, w2, w3 = weights[t], weights[t + 1], weights[t + 2], weights[t + 3]
        for j in range(acc.shape[0]):
            total = acc[j]
            total += r0[j] * w0
            total += r1[j] * w1
            total += r2[j] * w2
            total += r3[j] * w3
            acc[j] = total
        t += 4
    for last in range(t, stop):
        tap_row, weight = phases[rows[last], offsets[last] :], weights[last]
        for j in range(acc.shape[0]):
            acc[j] += tap_row[j] * weight


@numba.njit(nogil=True, cache=True)
def _store_magnitude(responses, out_row):
    """``out_row = sqrt(r0 * r0 + r1 * r1 + ...)``, summed left to right."""
    for j in range(out_row.shape[0]):
        out_row[j] = responses[0, j] * responses[0, j]
    for k in range(1, responses.shape[0]):
        for j in range(out_row.shape[0]):
            out_row[j] += responses[k, j] * responses[k, j]
    for j in range(out_row.shape[0]):
        out_row[j] = np.sqrt(out_row[j])


def _generic_kernel(input_dtype: np.dtype, dtype: np.dtype) -> numba.core.dispatcher.Dispatcher:
    """The generic kernel compiled for one pair of dtypes (cached like the generated ones)."""

    def build():
        index = _readonly_array(np.intp, 1)
        pair = numba.types.UniTuple(numba.types.intp, 2)
        signature = (
            _readonly_array(input_dtype, 4),  # x
            index,  # rows
            index,  # offsets
            _readonly_array(dtype, 1),  # weights
            index,  # starts
            pair,  # kernel_shape
            pair,  # stride
            numba.types.boolean,  # magnitude
            _array(dtype, 4),  # out
        )
        return _jit(_correlate_any_bank, signature, cache=True)

    return _cached_kernel(("generic", np.dtype(input_dtype).str, dtype.str), build)

