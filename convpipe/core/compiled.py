"""The compiled backend: one generated, Numba-compiled loop per output row.

:func:`correlate_block_compiled` has the contract of
:func:`convpipe.core.reference.correlate_block_numpy` and returns the same
bits: the reference's summation order, one rounding per operation (no
``fastmath``: LLVM may neither reassociate nor contract into FMAs).

A bank is a list of **taps** ``(channel, row offset, column offset, weight)``
per kernel, zero weights dropped (:func:`bank_taps`); a dilated kernel is the
same taps at other offsets. :func:`generate_source` writes, per output row,
one loop over the output columns ``j`` with the weights as literals::

    for j in range(wo):
        x_0_1_0 = DTYPE(row_0_1[j * sx + 0])               # each pixel loaded once
        acc0 = ZERO + x_0_0_0 * W0_0 + x_0_1_0 * W0_1 ...
        out_row[j] = np.sqrt(acc0 * acc0 + acc1 * acc1)    # or out0[j] = acc0; ...

The bank and its magnitude or direction take one pass; the code does not
grow with the stride or the dilation. LLVM vectorises the loop (strided
loads need the bound of :func:`_max_columns`). Banks with more non-zero
weights than ``MAX_UNROLLED_TAPS`` run through one generic kernel per pair
of dtypes that takes a table of the taps. Kernels are cached in the process
and on disk (:func:`cache_dir`, under the hash of their source) and release
the GIL.
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
from typing import NamedTuple

import numba
import numpy as np

from convpipe.core.reference import check_block_arguments, combine_responses
from convpipe.geometry import Combine

#: Environment variable naming the directory of the on-disk kernel cache.
CACHE_DIR_ENV = "CONVPIPE_CACHE_DIR"

#: Banks with more non-zero weights than this use the generic tap-table kernel.
MAX_UNROLLED_TAPS = 256

#: With ``combine="none"``, most kernels (stored rows) in one loop over an output row.
KERNELS_PER_PASS = 8

#: With ``combine="none"``, most (stored rows x loaded pixels) pairs in one loop.
#: LLVM's loop vectoriser gives up on loops with more possible dependences
#: between stores and loads (its ``max-dependences`` is 100): 11 Sobel-sized
#: kernels in one loop ran 4x slower than in two.
MAX_STORE_LOAD_PAIRS = 100

_SOURCE_MTIME = 946684800  # fixed mtime (2000-01-01) of generated modules: see _write_once
_KERNELS: dict[tuple, numba.core.dispatcher.Dispatcher] = {}
_KERNELS_LOCK = threading.Lock()


class Tap(NamedTuple):
    """One non-zero weight of a kernel and the pixel it multiplies, relative to the window's corner."""

    channel: int
    row: int
    column: int
    weight: float


def bank_taps(bank: np.ndarray, dilation: tuple[int, int] = (1, 1)) -> list[list[Tap]]:
    """Per kernel, its non-zero taps in summation order (channel, row, column: row-major).

    The one place that maps weights to pixel offsets: tap ``(u, v)`` reads
    the pixel ``(u * dy, v * dx)`` from the window's corner.
    """
    dy, dx = dilation
    return [
        [Tap(int(c), int(u) * dy, int(v) * dx, float(kernel[c, u, v])) for c, u, v in zip(*np.nonzero(kernel))]
        for kernel in bank
    ]


def correlate_block_compiled(
    block: np.ndarray,
    weights: np.ndarray,
    stride: tuple[int, int] = (1, 1),
    combine: Combine = "none",
    dtype: np.dtype | type = np.float32,
    dilation: tuple[int, int] = (1, 1),
) -> np.ndarray:
    """Valid strided, dilated cross-correlation of one block with a bank, compiled.

    Same parameters, result and bits as :func:`convpipe.core.reference.correlate_block_numpy`.
    """
    dtype = np.dtype(dtype)
    stride, dilation = (int(stride[0]), int(stride[1])), (int(dilation[0]), int(dilation[1]))
    ho, wo = check_block_arguments(block, weights, stride, combine, dtype, dilation)
    block = _native_block(block, dtype)
    bank = np.ascontiguousarray(weights, dtype=dtype)
    batch_shape = block.shape[:-3]
    x = block.reshape((math.prod(batch_shape),) + block.shape[-3:])
    kernel_axis = (bank.shape[0],) if combine == "none" else ()
    out = np.empty(x.shape[:1] + kernel_axis + (ho, wo), dtype=dtype)
    if np.count_nonzero(bank) <= MAX_UNROLLED_TAPS:
        compiled_kernel(bank, stride, combine, x.dtype, dilation)(x, out)
    else:
        _correlate_with_tap_table(x, bank, stride, out, combine, dilation)
    return out.reshape(batch_shape + kernel_axis + (ho, wo))


def _native_block(block: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The block C-contiguous, aligned, native; half floats widened to ``dtype`` (exact). Copied only if needed."""
    if block.flags.c_contiguous and block.flags.aligned and block.dtype.isnative and block.dtype != np.float16:
        return block
    native = dtype if block.dtype == np.float16 else block.dtype.newbyteorder("=")
    return np.require(block, dtype=native, requirements=["C", "A"])


def compiled_kernel(
    bank: np.ndarray, stride: tuple[int, int], combine: Combine, input_dtype: np.dtype, dilation=(1, 1)
) -> numba.core.dispatcher.Dispatcher:
    """The kernel ``kernel(x, out)`` for a bank (already in the output dtype), built once per process.

    ``x`` has shape ``(N, C, H, W)`` and ``input_dtype``; ``out`` is
    C-contiguous, ``(N, K, Ho, Wo)``, or ``(N, Ho, Wo)`` for a magnitude or direction.
    """

    def build():
        module = _import_generated(generate_source(bank, stride, combine, input_dtype, dilation))
        signature = (_array(input_dtype, 4, readonly=True), _array(bank.dtype, 4 if combine == "none" else 3))
        return numba.njit(signature, nogil=True, cache=module.__file__ is not None)(module.correlate_bank)

    key = (bank.shape, bank.tobytes(), bank.dtype.str, stride, combine, np.dtype(input_dtype).str, dilation)
    return _cached_kernel(key, build)


def _cached_kernel(key: tuple, build) -> numba.core.dispatcher.Dispatcher:
    """``_KERNELS[key]``, built by ``build()`` by the first thread that asks for it."""
    kernel = _KERNELS.get(key)
    if kernel is None:
        with _KERNELS_LOCK:
            kernel = _KERNELS.get(key)
            if kernel is None:
                kernel = _KERNELS[key] = build()
    return kernel


def _array(dtype: np.dtype, ndim: int, readonly: bool = False) -> numba.types.Array:
    """A C-contiguous array type; a read-only one also accepts writable arrays (one compilation for both)."""
    return numba.types.Array(numba.from_dtype(np.dtype(dtype)), ndim, "C", readonly=readonly)


def generate_source(
    bank: np.ndarray, stride: tuple[int, int], combine: Combine, input_dtype: np.dtype, dilation=(1, 1)
) -> str:
    """Python source of a module whose ``correlate_bank(x, out)`` applies ``bank``.

    ``bank`` has shape ``(K, C, kh, kw)`` and the output dtype. The source
    depends only on the arguments (its hash names the compiled kernel) and
    is plain Python: it runs, slowly, without Numba.
    """
    taps = bank_taps(bank, dilation)
    n_kernels = len(taps)
    sy, sx = stride
    convert = np.dtype(input_dtype) != bank.dtype
    fused = combine != "none"  # one store per pixel: the whole bank in one loop, however large
    groups = [list(range(n_kernels))] if fused else _kernel_groups(taps)
    rows = sorted({(t.channel, t.row) for kernel in taps for t in kernel})
    lines = [
        f'"""Generated by convpipe.core.compiled: bank {bank.shape}, stride {stride}, dilation {dilation},',
        f"combine {combine!r}, {np.dtype(input_dtype).name} pixels in, {bank.dtype.name} out.",
        'The file name is the hash of this source."""',
        "",
        "import math",
        "import numpy as np",
        "",
        f"DTYPE = np.{bank.dtype.name}",
        "ZERO = DTYPE(0.0)",
    ]
    for k, kernel in enumerate(taps):  # module globals are frozen into the machine code: literals to LLVM
        lines += [f"W{k}_{t} = DTYPE({_literal(tap.weight)})" for t, tap in enumerate(kernel)]
    lines += [
        "",
        "",
        "def correlate_bank(x, out):",
        f"    ho, wo = out.shape[-2], min(out.shape[-1], {_max_columns(sx, input_dtype)})  # = out.shape[-1]",
    ]
    lines += ["    for n in range(x.shape[0]):", "        for i in range(ho):"]
    lines += [f"            row_{c}_{u} = x[n, {c}, {_affine('i', sy, u)}]" for c, u in rows]
    if combine == "none":
        lines += [f"            out{k} = out[n, {k}, i]" for k in range(n_kernels)]
    else:
        lines.append("            out_row = out[n, i]")
    for group in groups:
        lines += _row_loop(taps, group, sx, convert, combine)
    return "\n".join(lines) + "\n"


def _row_loop(taps: list[list[Tap]], group: list[int], sx: int, convert: bool, combine: Combine) -> list[str]:
    """One loop over the output columns computing the kernels of ``group``, combined as ``combine`` says."""
    pixels = sorted({(t.channel, t.row, t.column) for k in group for t in taps[k]})
    lines = ["            for j in range(wo):"]
    for c, u, v in pixels:
        item = f"row_{c}_{u}[{_affine('j', sx, v)}]"
        lines.append(f"                x_{c}_{u}_{v} = {f'DTYPE({item})' if convert else item}")
    for k in group:  # one expression per kernel: summed left to right, and quick for Numba to type
        terms = "".join(f" + x_{t.channel}_{t.row}_{t.column} * W{k}_{i}" for i, t in enumerate(taps[k]))
        lines.append(f"                acc{k} = ZERO{terms}")
    if combine == "magnitude":
        squares = " + ".join(f"acc{k} * acc{k}" for k in group)
        lines.append(f"                out_row[j] = np.sqrt({squares})")
    elif combine == "direction":  # + ZERO: a -0 becomes +0, so both 0 give 0 (see the reference)
        angle = "math.atan2(np.float64(acc1 + ZERO), np.float64(acc0 + ZERO))"
        lines.append(f"                out_row[j] = DTYPE({angle})")
    else:
        lines += [f"                out{k}[j] = acc{k}" for k in group]
    return lines


def _max_columns(sx: int, input_dtype: np.dtype) -> int:
    """An upper bound of the output width that holds for every valid call, written into the kernel for LLVM.

    A row holds at least ``(wo - 1) * sx + 1`` pixels and no array more than
    ``2**63 - 1`` bytes, so ``min(wo, bound)`` is ``wo``; the bound proves to
    LLVM that the loads' byte offsets cannot overflow (Numba's addressing is
    not ``inbounds``), without which strided loads of 4- and 8-byte pixels
    stay scalar.
    """
    return (2**63 - 1) // (sx * np.dtype(input_dtype).itemsize) + 1


def _kernel_groups(taps: list[list[Tap]]) -> list[list[int]]:
    """Split the kernels of ``combine="none"`` into runs computed by one loop each, in order.

    A run grows while it has at most ``KERNELS_PER_PASS`` kernels and
    ``MAX_STORE_LOAD_PAIRS`` pairs of a stored row (one per kernel) and a
    loaded pixel, so that LLVM still vectorises the loop.
    """
    groups: list[list[int]] = []
    for k in range(len(taps)):
        if groups:
            candidate = groups[-1] + [k]
            loaded = {(t.channel, t.row, t.column) for j in candidate for t in taps[j]}
            if len(candidate) <= KERNELS_PER_PASS and len(candidate) * len(loaded) <= MAX_STORE_LOAD_PAIRS:
                groups[-1] = candidate
                continue
        groups.append([k])
    return groups


def _literal(value: float) -> str:
    """Source text of a float that reads back as exactly ``value``."""
    return repr(value) if math.isfinite(value) else f'float("{value}")'


def _affine(name: str, scale: int, offset: int) -> str:
    """``name * scale + offset`` as short source text."""
    term = name if scale == 1 else f"{name} * {scale}"
    return term if offset == 0 else f"{term} + {offset}"


# -------------------------------------------------------------------------- generic kernel for large banks

_TAP_TABLE_SOURCE = '''"""Generated by convpipe.core.compiled: the tap-table kernel, {input} pixels in, {output} out."""

import numpy as np

DTYPE = np.{output}


def correlate_taps(x, channels, rows, columns, weights, starts, stride, out):
    """Kernel k sums taps starts[k]:starts[k + 1] into out[n, k, i]."""
    sy, sx = stride
    ho, wo = out.shape[2], out.shape[3]
    for n in range(x.shape[0]):
        for i in range(ho):
            for k in range(starts.shape[0] - 1):
                acc = out[n, k, i]
                acc[:] = 0
                t, stop = starts[k], starts[k + 1]
                while t < stop:  # up to four taps per pass; rows sliced at the offset so j * sx is never negative
                    r0 = x[n, channels[t], i * sy + rows[t], columns[t]:]
                    w0 = weights[t]
                    if t + 4 <= stop:
                        r1 = x[n, channels[t + 1], i * sy + rows[t + 1], columns[t + 1]:]
                        r2 = x[n, channels[t + 2], i * sy + rows[t + 2], columns[t + 2]:]
                        r3 = x[n, channels[t + 3], i * sy + rows[t + 3], columns[t + 3]:]
                        w1, w2, w3 = weights[t + 1], weights[t + 2], weights[t + 3]
                        for j in range(wo):
                            total = acc[j] + DTYPE(r0[j * sx]) * w0
                            total = total + DTYPE(r1[j * sx]) * w1
                            total = total + DTYPE(r2[j * sx]) * w2
                            acc[j] = total + DTYPE(r3[j * sx]) * w3
                        t += 4
                    else:
                        for j in range(wo):
                            acc[j] = acc[j] + DTYPE(r0[j * sx]) * w0
                        t += 1
'''


def _correlate_with_tap_table(x, bank, stride, out, combine: Combine, dilation: tuple[int, int]) -> None:
    """Run the generic kernel on a table of the bank's taps (kernel ``k``'s are ``starts[k]:starts[k + 1]``).

    A magnitude or direction is computed from the whole block's responses, as the reference does.
    """
    taps = bank_taps(bank, dilation)
    responses = out if combine == "none" else np.empty(out.shape[:1] + (len(taps),) + out.shape[1:], out.dtype)
    table = [tap for kernel in taps for tap in kernel]
    channels, rows, columns = (np.array([tap[f] for tap in table], dtype=np.intp) for f in range(3))
    weights = np.array([tap.weight for tap in table], dtype=bank.dtype)
    starts = np.cumsum([0] + [len(kernel) for kernel in taps]).astype(np.intp)
    _tap_table_kernel(x.dtype, bank.dtype)(x, channels, rows, columns, weights, starts, stride, responses)
    if combine != "none":
        with np.errstate(all="ignore"):  # silent on overflow, as the generated kernels are
            out[...] = combine_responses(responses, combine)


def _tap_table_kernel(input_dtype: np.dtype, dtype: np.dtype) -> numba.core.dispatcher.Dispatcher:
    """The generic kernel compiled for one pair of dtypes (cached like the generated ones)."""

    def build():
        module = _import_generated(_TAP_TABLE_SOURCE.format(input=np.dtype(input_dtype).name, output=dtype.name))
        index = _array(np.intp, 1, readonly=True)
        pair = numba.types.UniTuple(numba.types.intp, 2)
        weights, out = _array(dtype, 1, readonly=True), _array(dtype, 4)  # out (N, K, Ho, Wo)
        signature = (_array(input_dtype, 4, readonly=True), index, index, index, weights, index, pair, out)
        return numba.njit(signature, nogil=True, cache=module.__file__ is not None)(module.correlate_taps)

    return _cached_kernel(("tap table", np.dtype(input_dtype).str, dtype.str), build)


def cache_dir() -> Path:
    """Directory of the generated kernels: ``$CONVPIPE_CACHE_DIR``,
    else ``convpipe/numba`` in ``$XDG_CACHE_HOME`` or ``~/.cache``."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "convpipe" / "numba"


def _import_generated(source: str) -> types.ModuleType:
    """Import generated source as a module, from a file in :func:`cache_dir` if it can be written,
    else in memory only (``module.__file__`` is None: its kernel is compiled without disk cache)."""
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

    The mtime is fixed: Numba's disk cache is keyed on the source's (mtime, size),
    and two processes writing the same module at once must not invalidate each other.
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
