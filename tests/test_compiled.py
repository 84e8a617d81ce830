"""Tests of the compiled core: the same bits as the NumPy core, exact against SciPy.

Every distinct bank, stride, combine mode and pair of dtypes is one Numba
compilation (a fraction of a second for the small banks used here), so the
property tests draw most banks from a small pool and keep the example counts
moderate. The on-disk kernel cache goes to a temporary directory.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.signal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convpipe import compiled, simd
from convpipe.compiled import correlate_block_compiled
from convpipe.core import correlate_block_numpy

INPUT_DTYPES = [np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64]
SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
SOBEL = np.stack([SOBEL_X, SOBEL_X.T])[:, None]


def _bank(shape, seed, integer=True):
    """A reproducible bank with about a third of its weights zero."""
    rng = np.random.default_rng(seed)
    weights = rng.integers(-3, 4, shape).astype(np.float64) if integer else rng.standard_normal(shape)
    return weights * (rng.random(shape) > 1 / 3)


# Small pool of banks: even, non-square, 1xN, Nx1 and 1x1 kernels, K 1..4, C 1..3.
BANK_POOL = [
    SOBEL,
    _bank((1, 1, 1, 1), 1),
    _bank((3, 2, 2, 4), 2),
    _bank((1, 3, 1, 5), 3, integer=False),
    _bank((4, 1, 5, 1), 4, integer=False),
    _bank((2, 3, 3, 2), 5, integer=False),
    _bank((4, 2, 2, 2), 6),
    _bank((1, 1, 4, 3), 7, integer=False),
]


@pytest.fixture(autouse=True, scope="module")
def kernel_cache_dir(tmp_path_factory):
    """Write generated kernels to a temporary directory, not the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        directory = tmp_path_factory.mktemp("kernels")
        patch.setenv(compiled.CACHE_DIR_ENV, str(directory))
        yield directory


def assert_same_bits(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal shape, dtype and bytes (so -0.0 differs from 0.0)."""
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    np.testing.assert_array_equal(actual, expected)
    unsigned = np.uint32 if actual.dtype == np.float32 else np.uint64
    np.testing.assert_array_equal(actual.view(unsigned), expected.view(unsigned))


def random_block(rng, shape, dtype):
    """Random pixels over the whole range of an integer dtype, or random floats.

    Floats span several orders of magnitude and include +0.0 and -0.0, so
    rounding, FMA contraction and the sign of zero sums would all show.
    """
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    values = rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 3, shape)
    values[rng.random(shape) < 0.1] = 0.0
    values[rng.random(shape) < 0.1] = -0.0
    return values.astype(dtype)


POOLED_BANKS = st.sampled_from(BANK_POOL)


@st.composite
def configurations(draw, banks=POOLED_BANKS):
    """A bank and the options of one call: each draw is one compilation."""
    weights = draw(banks)
    options = {
        "stride": (draw(st.integers(1, 4)), draw(st.integers(1, 4))),
        "combine": draw(st.sampled_from(["none", "magnitude"])),
        "dtype": draw(st.sampled_from([np.float32, np.float64])),
    }
    return weights, draw(st.sampled_from(INPUT_DTYPES)), options


@st.composite
def blocks(draw, weights, dtype):
    """A random block for ``weights``: batch shape none, (2,) or (2, 3); H, W from the kernel to 30."""
    _, n_channels, kh, kw = weights.shape
    batch = draw(st.sampled_from([(), (2,), (2, 3)]))
    shape = batch + (n_channels, draw(st.integers(kh, 30)), draw(st.integers(kw, 30)))
    return random_block(np.random.default_rng(draw(st.integers(0, 2**32 - 1))), shape, dtype)


@st.composite
def random_banks(draw):
    """Any small bank: shape, integer or float weights, zeros anywhere."""
    shape = (
        draw(st.integers(1, 4)),
        draw(st.integers(1, 3)),
        draw(st.integers(1, 4)),
        draw(st.integers(1, 4)),
    )
    return _bank(shape, draw(st.integers(0, 2**32 - 1)), integer=draw(st.booleans()))


def check_blocks(data, weights, dtype, options, count=4):
    """Compare both cores on several blocks: one compilation, many inputs."""
    for _ in range(count):
        block = data.draw(blocks(weights, dtype))
        expected = correlate_block_numpy(block, weights, **options)
        assert_same_bits(correlate_block_compiled(block, weights, **options), expected)


@settings(max_examples=35, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configurations(), st.data())
def test_same_bits_as_numpy_core(configuration, data):
    check_blocks(data, *configuration)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configurations(banks=random_banks()), st.data())
def test_same_bits_as_numpy_core_for_any_bank(configuration, data):
    check_blocks(data, *configuration)


@pytest.mark.parametrize("zero", [0.0, -0.0], ids=["+0", "-0"])
@pytest.mark.parametrize("stride", [(1, 1), (2, 3)], ids=str)
def test_sums_of_zeros_are_positive_zero(zero, stride):
    """Every sum starts at +0.0, as in NumPy: a window of signed zeros gives +0.0, not -0.0."""
    weights = np.stack([np.full((1, 2, 3), -1.5), np.full((1, 2, 3), 2.0)])
    block = np.full((2, 1, 7, 9), zero, dtype=np.float32)
    for dtype in (np.float32, np.float64):
        result = correlate_block_compiled(block, weights, stride, "none", dtype)
        assert_same_bits(result, correlate_block_numpy(block, weights, stride, "none", dtype))
        assert not np.signbit(result).any()


@pytest.mark.parametrize("stride", [(1, 1), (2, 2), (1, 3), (4, 2)], ids=str)
@pytest.mark.parametrize("combine", ["none", "magnitude"])
def test_generic_kernel_for_large_banks(monkeypatch, stride, combine):
    """Banks over MAX_UNROLLED_TAPS run through the generic kernel, same bits."""
    monkeypatch.setattr(compiled, "MAX_UNROLLED_TAPS", 0)
    rng = np.random.default_rng(8)
    for weights in [_bank((3, 2, 4, 3), 8, integer=False), _bank((1, 1, 3, 3), 8, integer=False)]:
        block = random_block(rng, (2, weights.shape[1], 17, 23), np.float64)
        for dtype in (np.float32, np.float64):
            expected = correlate_block_numpy(block, weights, stride, combine, dtype)
            assert_same_bits(correlate_block_compiled(block, weights, stride, combine, dtype), expected)


@pytest.mark.parametrize("combine", ["none", "magnitude"])
@pytest.mark.parametrize("input_dtype", [np.float32, np.uint16], ids=["float32", "uint16"])  # uint16: overlapping last block
def test_banks_longer_than_one_pass(combine, input_dtype):
    """More kernels than KERNELS_PER_PASS: several loops per row, then the magnitude."""
    weights = _bank((compiled.KERNELS_PER_PASS + 3, 1, 1, 2), 9, integer=False)
    block = random_block(np.random.default_rng(9), (1, 12, 45), input_dtype)
    for stride in [(1, 1), (2, 3), (2, 2)]:  # SIMD blocks, rows split, SIMD blocks
        expected = correlate_block_numpy(block, weights, stride, combine)
        assert_same_bits(correlate_block_compiled(block, weights, stride, combine), expected)


MODE_CASES = {
    # name: (kernel width, column stride, zeroed columns, mode the generator must pick)
    "3-wide-stride2": (3, 2, (), "simd"),
    "5-wide-stride2-middle-column-zero": (5, 2, (2,), "simd"),
    "3-wide-stride3-middle-column-zero": (3, 3, (1,), "direct"),  # a phase loaded only to scratch
    "4-wide-stride4": (4, 4, (), "direct"),
    "4-wide-stride3-sparse": (4, 3, (0, 2), "direct"),
    "2-wide-stride3": (2, 3, (), "split"),  # the window would start left of the row
    "7-wide-stride3": (7, 3, (), "split"),  # carried two iterations
    "7-wide-stride3-last-column-zero": (7, 3, (6,), "direct"),  # window ends at the last tap
}


@pytest.mark.parametrize("case", MODE_CASES.values(), ids=MODE_CASES.keys())
@pytest.mark.parametrize("input_dtype", [np.float32, np.uint16])
def test_each_way_of_reading_a_column_stride_gives_the_numpy_bits(case, input_dtype):
    """Lane blocks (stride 2), direct and split loops (see compiled._phase_windows), each where it applies."""
    kw, sx, zero_columns, mode = case
    weights = _bank((3, 2, 3, kw), 11, integer=False)
    weights[..., list(zero_columns)] = 0.0
    source = compiled.generate_source(weights.astype(np.float32), (2, sx), "none", np.dtype(input_dtype))
    assert ("carry_" in source or "scratch" in source or "now_" in source) == (mode == "direct")
    assert ("phases = np.empty" in source) == (mode == "split")
    assert ("= simd_block" in source) == (mode == "simd")  # simd_block( or simd_blocks(
    rng = np.random.default_rng(kw * 10 + sx)
    for shape in [(2, 2, 9, kw), (3, 2, 11, 41), (2, 5, kw + 3 * sx - 1), (1, 2, 4, 16 * sx + kw + 5)]:
        block = random_block(rng, shape, input_dtype)
        for combine in ("none", "magnitude"):
            expected = correlate_block_numpy(block, weights, (2, sx), combine)
            assert_same_bits(correlate_block_compiled(block, weights, (2, sx), combine), expected)


SIMD_BANKS = [  # (weights, row stride): odd and even widths, several channels, zero taps
    (SOBEL, 2),
    (_bank((3, 2, 4, 5), 21, integer=False), 1),
    (_bank((2, 1, 2, 6), 22), 3),
    (_bank((1, 3, 1, 1), 23, integer=False), 2),
]
SIMD_DTYPES = [(t, np.float32) for t in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32)] + [
    (t, d) for t in (np.int64, np.float16, np.float32, np.float64) for d in (np.float32, np.float64)
] + [(np.uint16, np.float64), (np.int32, np.float64)]


def simd_widths(weights, input_dtype, dtype, sx: int) -> list[int]:
    """Block widths around the edge of the first SIMD block, and one with no block at all."""
    block = simd.block_width(dtype)
    kw = weights.shape[-1]
    # the narrowest width with one whole block: block outputs, and the pixels a block reads
    edge = max(sx * (block - 1) + kw, simd.extent(kw - 1, sx, np.dtype(input_dtype).name, np.dtype(dtype).name))
    return [kw, edge - 1, edge, edge + 1, 3 * block + edge + 3, 6 * block + 7]


@pytest.mark.parametrize("input_dtype, dtype", SIMD_DTYPES, ids=lambda t: np.dtype(t).name)
def test_simd_blocks_give_the_numpy_bits(input_dtype, dtype):
    """Column strides 1 and 2 (convpipe.simd): every input dtype, each reader, widths around the blocks."""
    numbers = np.dtype(input_dtype).num + np.dtype(dtype).num
    rng = np.random.default_rng(numbers)
    for index, (weights, sy) in enumerate(SIMD_BANKS[:2] if numbers % 2 else SIMD_BANKS[2:]):
        combine = ("none", "magnitude")[(index + numbers // 2) % 2]
        stride = (sy, 1 + (index + numbers // 4) % 2)
        bank = weights.astype(dtype)
        source = compiled.generate_source(bank, stride, combine, np.dtype(input_dtype))
        assert "= simd_block" in source
        assert ("last_block" in source) == (np.dtype(input_dtype).itemsize <= 2)  # the overlapping last block
        for width in simd_widths(weights, input_dtype, dtype, stride[1]):
            block = random_block(rng, (2, weights.shape[1], weights.shape[2] + 2 * sy, width), input_dtype)
            with np.errstate(over="ignore"):  # 64-bit integers squared overflow float32: inf, in both cores
                expected = correlate_block_numpy(block, weights, stride, combine, dtype)
            assert_same_bits(correlate_block_compiled(block, weights, stride, combine, dtype), expected)


@pytest.mark.parametrize("kw", [9, 18, 19, 35])
@pytest.mark.parametrize("input_dtype, dtype", [(np.float32, np.float32), (np.float64, np.float64), (np.uint8, np.float32)], ids=["f32", "f64", "u8"])
def test_simd_blocks_of_wide_kernels_give_the_numpy_bits(kw, input_dtype, dtype):
    """Taps a phase vector or more right of the block (stride 2: v >= block width), every shift of both phases."""
    rng = np.random.default_rng(kw)
    weights = rng.standard_normal((2, 1, 2, kw))  # no zero weight: every tap is read
    for width in simd_widths(weights, input_dtype, dtype, 2):
        block = random_block(rng, (1, 1, 5, width), input_dtype)
        for combine in ("none", "magnitude"):
            expected = correlate_block_numpy(block, weights, (1, 2), combine, dtype)
            assert_same_bits(correlate_block_compiled(block, weights, (1, 2), combine, dtype), expected)


SIMD_CHECK_SCRIPT = """
import numpy as np
from convpipe.compiled import correlate_block_compiled
from convpipe.core import correlate_block_numpy
rng = np.random.default_rng(5)
weights = np.round(rng.standard_normal((3, 2, 3, 4)), 1)
for input_dtype, dtype in [(np.float32, np.float32), (np.uint16, np.float32), (np.float64, np.float64)]:
    block = (rng.standard_normal((2, 7, 77)) * 1000).astype(input_dtype)
    for stride, combine in [((2, 2), "none"), ((2, 2), "magnitude"), ((1, 1), "magnitude")]:
        actual = correlate_block_compiled(block, weights, stride, combine, dtype)
        expected = correlate_block_numpy(block, weights, stride, combine, dtype)
        assert actual.tobytes() == expected.tobytes(), (input_dtype, dtype, stride, combine)
print("same bits")
"""


@pytest.mark.parametrize("cpu", ["haswell", "x86-64"], ids=["avx2", "sse2"])
def test_simd_blocks_on_older_cpus(cpu, tmp_path):
    """The SIMD blocks' IR is generic: compiled for AVX2 or SSE2 only, it gives the same bits."""
    env = {**os.environ, compiled.CACHE_DIR_ENV: str(tmp_path), "NUMBA_CPU_NAME": cpu, "NUMBA_CPU_FEATURES": ""}
    result = subprocess.run([sys.executable, "-c", SIMD_CHECK_SCRIPT], check=False, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "same bits"


@pytest.mark.parametrize(
    "weights, stride, input_dtype, runs",
    [
        (SOBEL, 2, np.float32, True),  # taps v = 2 shift phase vectors by the vector after them
        (SOBEL, 2, np.float64, True),
        (SOBEL, 2, np.int64, True),
        (np.ones((1, 1, 2, 2)), 2, np.float32, False),  # v <= 1: no shift, nothing to carry
        (SOBEL, 2, np.uint16, False),  # pixels read as pairs
        (SOBEL, 1, np.float32, False),
    ],
    ids=["f32", "f64", "i64", "2x2-f32", "u16", "stride1"],
)
def test_blocks_that_reload_a_vector_run_as_one_loop_per_row(weights, stride, input_dtype, runs):
    """simd_blocks (the next block reuses a loaded vector) exactly where simd.carried_loads finds one."""
    source = compiled.generate_source(weights.astype(np.float32), (1, stride), "magnitude", np.dtype(input_dtype))
    assert ("= simd_blocks(" in source) == runs
    assert ("= simd_block(" in source) == (not runs)
    assert ("0, vector_end)" in source) == runs  # called once per row


@pytest.mark.parametrize("combine, n_written", [("magnitude", 1), ("none", 2)])
def test_simd_blocks_prefetch_the_rows_of_a_later_output_row(combine, n_written):
    """Each block prefetches the later row's new input rows (to read) and its output rows (to write)."""
    kernel = compiled.compiled_kernel(SOBEL.astype(np.float32), (2, 2), combine, np.dtype(np.float32))
    llvm = "\n".join(kernel.inspect_llvm().values())
    calls = re.findall(r"call void @llvm\.prefetch[.\w]*\([^,]+, i32 (\d), i32 3, i32 1\)", llvm)
    # per block (LLVM unrolls the loop): input rows 2i+3 and 2i+4, two cache lines each
    # (32 float32 pixels), and one line per output row
    reads, writes = calls.count("0"), calls.count("1")
    assert writes >= n_written and reads * n_written == 4 * writes


GUARD_PAGE_SCRIPT = """
import ctypes
import mmap
import numpy as np
from convpipe.compiled import correlate_block_compiled


def before_guard_page(values):
    # A copy of values that ends where an unreadable page begins.
    pages = -(-values.nbytes // mmap.PAGESIZE) + 1
    buffer = mmap.mmap(-1, pages * mmap.PAGESIZE)
    start = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    guard = ctypes.c_void_p(start + (pages - 1) * mmap.PAGESIZE)
    assert ctypes.CDLL(None).mprotect(guard, mmap.PAGESIZE, 0) == 0  # PROT_NONE
    offset = (pages - 1) * mmap.PAGESIZE - values.nbytes
    copy = np.frombuffer(buffer, values.dtype, values.size, offset).reshape(values.shape)
    copy[...] = values
    return copy


rng = np.random.default_rng(6)
for kw in (1, 2, 3, 4, 5, 16, 19):
    weights = rng.standard_normal((2, 1, 2, kw))
    for input_dtype in (np.float32, np.uint16, np.float64):
        for width in range(kw, 80 + kw):
            block = before_guard_page((rng.random((1, 3, width)) * 100).astype(input_dtype))
            correlate_block_compiled(block, weights, (1, 2), "none")
            correlate_block_compiled(block, weights, (1, 2), "magnitude", np.float64)
            correlate_block_compiled(block, weights, (2, 1), "magnitude")
print("no read past the block")
"""


def test_simd_blocks_read_nothing_past_the_block(tmp_path):
    """Blocks end right before an unreadable page: a read past the last row would crash the process."""
    env = {**os.environ, compiled.CACHE_DIR_ENV: str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", GUARD_PAGE_SCRIPT], check=False, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert result.stdout.strip() == "no read past the block"


@pytest.mark.parametrize(
    "weights, stride",
    [
        (SOBEL, (1, 1)),
        (SOBEL, (2, 2)),
        (BANK_POOL[2], (3, 1)),
        (BANK_POOL[6], (1, 4)),
        (BANK_POOL[1], (2, 3)),
    ],
    ids=["sobel", "sobel-stride2", "2x4-stride3x1", "2x2-stride1x4", "1x1-stride2x3"],
)
def test_exact_against_scipy_for_integer_data(weights, stride):
    """Integer data and weights: the exact sum, as SciPy's direct correlation gives it."""
    sy, sx = stride
    block = np.random.default_rng(10).integers(-500, 500, (2, weights.shape[1], 19, 26)).astype(np.int32)
    expected = np.stack(
        [
            [
                sum(
                    scipy.signal.correlate(image[c], weights[k, c], mode="valid", method="direct")
                    for c in range(weights.shape[1])
                )[::sy, ::sx]
                for k in range(weights.shape[0])
            ]
            for image in block
        ]
    ).astype(np.float64)
    actual = correlate_block_compiled(block, weights, stride, "none", np.float64)
    np.testing.assert_array_equal(actual, expected)
    magnitude = correlate_block_compiled(block, weights, stride, "magnitude", np.float64)
    np.testing.assert_array_equal(magnitude, np.sqrt(np.sum(expected * expected, axis=1)))


@pytest.mark.parametrize(
    "view",
    [
        lambda a: a[..., ::2, 1:],
        lambda a: a[..., ::-1, ::3],
        lambda a: np.asfortranarray(a),
        lambda a: a.swapaxes(-1, -2),
        lambda a: a.astype(a.dtype.newbyteorder(">")),
    ],
    ids=["strided", "reversed", "fortran", "transposed", "big-endian"],
)
def test_non_contiguous_input(view):
    block = view(random_block(np.random.default_rng(11), (2, 1, 24, 24), np.float32))
    assert not (block.flags.c_contiguous and block.dtype.isnative)
    for stride in [(1, 1), (2, 2)]:
        expected = correlate_block_numpy(block, SOBEL, stride, "magnitude")
        assert_same_bits(correlate_block_compiled(block, SOBEL, stride, "magnitude"), expected)


@pytest.mark.parametrize("dtype", [np.int8, np.uint32, np.int64, np.float16, np.bool_])
def test_other_input_dtypes(dtype):
    block = random_block(np.random.default_rng(12), (1, 11, 13), np.float64 if dtype == np.float16 else dtype)
    block = block.astype(dtype)
    expected = correlate_block_numpy(block, SOBEL, (1, 2), "none")
    assert_same_bits(correlate_block_compiled(block, SOBEL, (1, 2), "none"), expected)


def test_same_bank_is_compiled_once():
    weights = BANK_POOL[3] * 0.5  # a bank no other test uses
    block = random_block(np.random.default_rng(13), (3, 9, 9), np.float32)
    first = correlate_block_compiled(block, weights)
    bank = weights.astype(np.float32)
    kernel = compiled.compiled_kernel(bank, (1, 1), "none", np.dtype(np.float32))
    assert compiled.compiled_kernel(bank.copy(), (1, 1), "none", np.dtype(np.float32)) is kernel
    block.flags.writeable = False  # a read-only block needs no second compilation either
    assert_same_bits(correlate_block_compiled(block, weights), first)
    assert len(kernel.signatures) == 1


def test_concurrent_calls_from_threads():
    weights = BANK_POOL[5] * 0.25  # compiled here, by whichever thread comes first
    blocks = [random_block(np.random.default_rng(seed), (3, 20, 20), np.uint16) for seed in range(8)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda b: correlate_block_compiled(b, weights, (2, 1), "magnitude"), blocks))
    for block, result in zip(blocks, results):
        assert_same_bits(result, correlate_block_numpy(block, weights, (2, 1), "magnitude"))


def test_pickled_by_reference_for_worker_processes():
    """Dask ships the function by name; each worker compiles or loads its own kernels."""
    assert pickle.loads(pickle.dumps(correlate_block_compiled)) is correlate_block_compiled


def test_second_process_loads_machine_code_from_disk(tmp_path):
    script = textwrap.dedent(
        """
        import numpy as np
        from convpipe import compiled, simd
        bank = np.full((2, 1, 2, 3), 0.75, dtype=np.float32)
        kernel = compiled.compiled_kernel(bank, (2, 1), "magnitude", np.dtype(np.uint8))
        print(sum(kernel.stats.cache_hits.values()))
        """
    )
    env = {**os.environ, compiled.CACHE_DIR_ENV: str(tmp_path)}
    hits = [
        subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    ]
    assert [int(h) for h in hits] == [0, 1]
    assert len(list(tmp_path.glob("convpipe_kernel_*.py"))) == 1


def test_generated_module_is_written_once(tmp_path):
    source = compiled.generate_source(SOBEL.astype(np.float32), (1, 1), "none", np.dtype(np.uint8))
    path = tmp_path / "kernel.py"
    compiled._write_once(path, source)
    stamp = path.stat()
    compiled._write_once(path, source)
    assert path.read_text() == source
    assert (path.stat().st_mtime, path.stat().st_ino) == (stamp.st_mtime, stamp.st_ino)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


@pytest.mark.parametrize(
    "block_shape, weights_shape, options, message",
    [
        ((2, 8, 8), (1, 3, 3, 3), {}, "channels"),
        ((1, 2, 8), (1, 1, 3, 3), {}, "smaller than the kernel"),
        ((8, 8), (1, 1, 3, 3), {}, "shape"),
        ((1, 8, 8), (1, 1, 3, 3), {"stride": (0, 1)}, "stride"),
        ((1, 8, 8), (1, 1, 3, 3), {"combine": "sum"}, "combine"),
        ((1, 8, 8), (1, 1, 3, 3), {"dtype": np.float16}, "dtype"),
    ],
    ids=["channels", "too-small", "no-channel-axis", "stride", "combine", "dtype"],
)
def test_invalid_arguments(block_shape, weights_shape, options, message):
    with pytest.raises(ValueError, match=message):
        correlate_block_compiled(np.zeros(block_shape, np.uint8), np.ones(weights_shape), **options)
