"""The compiled backend: the same bits as the NumPy core, exact against the direct loop.

Every distinct bank, stride, combine mode and pair of dtypes is one Numba
compilation (a fraction of a second for small banks), so each compiled kernel
is checked on several blocks and the example counts stay modest. Banks over
the unroll limit share one tap-table kernel per pair of dtypes, which makes
that path cheap to test on many banks. The on-disk kernel cache goes to a
temporary directory.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import SOBEL, correlate_loop, magnitude

from convpipe.core import compiled, correlate_block_numpy
from convpipe.core.compiled import correlate_block_compiled
from convpipe.geometry import output_length

INPUT_DTYPES = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float16", "float32", "float64"]
SOBEL_X = SOBEL[0, 0]
SLOW = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# Where kernels of fixed banks go: compiled on the first run of the suite, loaded from disk on the next.
KERNEL_CACHE = compiled.cache_dir()


@pytest.fixture(autouse=True, scope="module")
def kernel_cache_dir(tmp_path_factory):
    """Write generated kernels to a temporary directory: random banks would fill the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        directory = tmp_path_factory.mktemp("kernels")
        patch.setenv(compiled.CACHE_DIR_ENV, str(directory))
        yield directory


def assert_same_bits(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal shape, dtype and bytes (so -0.0 differs from 0.0 and NaN equals NaN)."""
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    assert actual.tobytes() == expected.tobytes()


def random_block(rng: np.random.Generator, shape: tuple[int, ...], dtype) -> np.ndarray:
    """Pixels over the whole range of an integer dtype, or floats over many magnitudes with signed zeros."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    values = rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 3, shape)
    values[rng.random(shape) < 0.1] = 0.0
    values[rng.random(shape) < 0.1] = -0.0
    return values.astype(dtype)


def random_bank(rng: np.random.Generator, shape: tuple[int, int, int, int], integer: bool) -> np.ndarray:
    """Weights with about a third of them zero."""
    weights = rng.integers(-3, 4, shape).astype(np.float64) if integer else rng.standard_normal(shape)
    return weights * (rng.random(shape) > 1 / 3)


@st.composite
def banks(draw, max_kernels=10, max_size=7):
    """Any bank: K 1..10, C 1..3, kh and kw 1..7 (even, 1xN, Nx1), integer or float weights."""
    shape = (
        draw(st.integers(1, max_kernels)),
        draw(st.integers(1, 3)),
        draw(st.integers(1, max_size)),
        draw(st.integers(1, max_size)),
    )
    return random_bank(np.random.default_rng(draw(st.integers(0, 2**32 - 1))), shape, draw(st.booleans()))


@st.composite
def calls(draw, bank_strategy=None):
    """A bank and the options of one call: one compilation."""
    weights = draw(banks() if bank_strategy is None else bank_strategy)
    kh, kw = weights.shape[2:]
    stride = draw(st.sampled_from([(1, 1), (2, 2), (1, 3), (5, 4), (3, 1), (kh + 7, kw + 9), (1000, 1000)]))
    options = {"stride": stride, "combine": draw(st.sampled_from(["none", "magnitude"]))}
    options["dtype"] = draw(st.sampled_from([np.float32, np.float64]))
    return weights, draw(st.sampled_from(INPUT_DTYPES)), options


def check_blocks(data, weights, input_dtype, options, count=3) -> None:
    """Both cores on several blocks (batch dims, sizes from the kernel up, views): one compilation, many inputs."""
    _, n_channels, kh, kw = weights.shape
    for _ in range(count):
        batch = data.draw(st.sampled_from([(), (2,), (2, 3)]))
        shape = batch + (n_channels, data.draw(st.integers(kh, kh + 20)), data.draw(st.integers(kw, kw + 20)))
        block = random_block(np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))), shape, input_dtype)
        if data.draw(st.booleans()):  # a non-contiguous view of a larger block
            block = np.concatenate([block, block], axis=-1)[..., ::2]
        with np.errstate(over="ignore", invalid="ignore"):  # full-range uint64 pixels overflow float32 squares
            expected = correlate_block_numpy(block, weights, **options)
        assert_same_bits(correlate_block_compiled(block, weights, **options), expected)


@settings(SLOW, max_examples=12)
@given(calls(), st.data())
def test_same_bits_as_numpy_core(call, data):
    check_blocks(data, *call)


@settings(SLOW, max_examples=40)
@given(calls(), st.data())
def test_tap_table_kernel_gives_the_same_bits(call, data):
    """With the unroll limit at zero every bank runs through the generic kernel (one compilation per dtype pair)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compiled, "MAX_UNROLLED_TAPS", 0)
        patch.setenv(compiled.CACHE_DIR_ENV, str(KERNEL_CACHE))  # one kernel per dtype pair, whatever the bank
        check_blocks(data, *call)


@pytest.mark.parametrize("input_dtype", INPUT_DTYPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_every_input_dtype(input_dtype, dtype, monkeypatch):
    monkeypatch.setenv(compiled.CACHE_DIR_ENV, str(KERNEL_CACHE))  # always the same 44 kernels
    rng = np.random.default_rng(3)
    weights = random_bank(rng, (2, 2, 2, 3), integer=False)  # small: 44 compilations
    block = random_block(rng, (2, 2, 17, 21), input_dtype)
    for stride, combine in [((1, 1), "none"), ((2, 3), "magnitude")]:
        with np.errstate(over="ignore"):  # full-range 64-bit pixels overflow float32 squares
            expected = correlate_block_numpy(block, weights, stride, combine, dtype)
        assert_same_bits(correlate_block_compiled(block, weights, stride, combine, dtype), expected)


@settings(SLOW, max_examples=8)
@given(calls(banks(max_kernels=4, max_size=5)), st.data())
def test_exact_for_integer_data_and_weights(call, data):
    """Integer pixels and weights: the exact sums of the direct loop (float64 output)."""
    weights, _, options = call
    weights = np.round(weights)
    shape = (2, weights.shape[1], data.draw(st.integers(weights.shape[2], 20)), data.draw(st.integers(weights.shape[3], 20)))
    block = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).integers(-500, 500, shape).astype(np.int32)
    stride = options["stride"]
    expected = correlate_loop(block, weights, stride)
    np.testing.assert_array_equal(correlate_block_compiled(block, weights, stride, "none", np.float64), expected)
    got = correlate_block_compiled(block, weights, stride, "magnitude", np.float64)
    np.testing.assert_allclose(got, magnitude(expected), rtol=1e-15)


@pytest.mark.parametrize("limit", [compiled.MAX_UNROLLED_TAPS, 0], ids=["unrolled", "tap-table"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=str)
def test_pixels_under_zero_weights_do_not_reach_the_result(monkeypatch, limit, bad):
    """Zero weights are skipped: NaN * 0 would be NaN, inf * 0 NaN. Sobel x has a zero middle column."""
    monkeypatch.setattr(compiled, "MAX_UNROLLED_TAPS", limit)
    block = np.random.default_rng(4).random((1, 9, 12)).astype(np.float32)
    poisoned = block.copy()
    poisoned[..., 1::2] = bad  # at column stride 2, every odd column sits under the middle column
    weights = SOBEL_X[None, None]
    for combine in ["none", "magnitude"]:
        expected = correlate_block_numpy(np.where(np.isfinite(poisoned), poisoned, 0), weights, (1, 2), combine)
        assert np.isfinite(expected).all()
        assert_same_bits(correlate_block_compiled(poisoned, weights, (1, 2), combine), expected)
        assert_same_bits(correlate_block_numpy(poisoned, weights, (1, 2), combine), expected)


@pytest.mark.parametrize("zero", [0.0, -0.0], ids=["+0", "-0"])
def test_sums_of_zeros_are_positive_zero(zero):
    """Every sum starts at +0.0, as in NumPy: a window of signed zeros gives +0.0, not -0.0."""
    weights = np.stack([np.full((1, 2, 3), -1.5), np.full((1, 2, 3), 2.0)])
    block = np.full((2, 1, 7, 9), zero, dtype=np.float32)
    for stride in [(1, 1), (2, 3)]:
        result = correlate_block_compiled(block, weights, stride, "none")
        assert_same_bits(result, correlate_block_numpy(block, weights, stride, "none"))
        assert not np.signbit(result).any()


@pytest.mark.parametrize("combine", ["none", "magnitude"])
def test_banks_longer_than_one_pass(combine):
    """More kernels than one loop keeps in registers: several loops per row, then the magnitude."""
    weights = random_bank(np.random.default_rng(9), (compiled.KERNELS_PER_PASS + 3, 1, 2, 3), integer=False)
    block = random_block(np.random.default_rng(9), (2, 1, 12, 45), np.uint16)
    for stride in [(1, 1), (2, 3)]:
        expected = correlate_block_numpy(block, weights, stride, combine)
        assert_same_bits(correlate_block_compiled(block, weights, stride, combine), expected)


@pytest.mark.parametrize("stride", [(1, 10**6), (10**6, 1), (10**6, 10**6)], ids=str)
def test_stride_larger_than_the_block_is_one_output_row_or_column(stride):
    """The generated code does not grow with the stride: a huge stride compiles as fast as a small one."""
    block = np.random.default_rng(5).random((1, 256, 256)).astype(np.float32)
    started = time.perf_counter()
    result = correlate_block_compiled(block, SOBEL, stride, "magnitude")
    assert time.perf_counter() - started < 30
    assert result.shape == (1 if stride[0] > 256 else 254, 1 if stride[1] > 256 else 254)
    assert_same_bits(result, correlate_block_numpy(block, SOBEL, stride, "magnitude"))


@pytest.mark.parametrize("sx", [1, 2, 3, 7, 10**6])
@pytest.mark.parametrize("input_dtype", ["uint8", "uint16", "float32", "float64"])
def test_column_bound_in_the_kernels_never_cuts_a_row(sx, input_dtype):
    """``min(wo, _max_columns)`` is ``wo`` even for the widest row NumPy allows (2**63 - 1 bytes)."""
    itemsize = np.dtype(input_dtype).itemsize
    for width in [(2**63 - 1) // itemsize, (2**63 - 1) // itemsize - sx]:
        for kernel_width in [1, 3]:
            assert output_length(width, kernel_width, sx) <= compiled._max_columns(sx, np.dtype(input_dtype))


@pytest.mark.parametrize("input_dtype", ["float32", "float64"])
def test_strided_loops_of_wide_pixels_are_vectorised(input_dtype):
    """With the column bound LLVM vectorises the loop of 4- and 8-byte pixels at stride 2, 25 taps."""
    bank = np.random.default_rng(3).integers(-3, 4, (4, 1, 5, 5)).astype(np.float32)
    kernel = compiled.compiled_kernel(bank, (2, 2), "magnitude", np.dtype(input_dtype))
    (llvm_ir,) = kernel.inspect_llvm().values()
    assert "vector.body" in llvm_ir


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


def test_same_bank_is_compiled_once():
    weights = np.full((1, 1, 2, 2), 0.375)  # a bank no other test uses
    block = random_block(np.random.default_rng(13), (1, 9, 9), np.float32)
    first = correlate_block_compiled(block, weights)
    bank = weights.astype(np.float32)
    kernel = compiled.compiled_kernel(bank, (1, 1), "none", np.dtype(np.float32))
    assert compiled.compiled_kernel(bank.copy(), (1, 1), "none", np.dtype(np.float32)) is kernel
    block.flags.writeable = False  # a read-only block needs no second compilation either
    assert_same_bits(correlate_block_compiled(block, weights), first)
    assert len(kernel.signatures) == 1


def test_concurrent_calls_from_threads():
    weights = random_bank(np.random.default_rng(14), (2, 3, 3, 2), integer=False)  # compiled by whichever thread comes first
    blocks = [random_block(np.random.default_rng(seed), (3, 20, 20), np.uint16) for seed in range(8)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda b: correlate_block_compiled(b, weights, (2, 1), "magnitude"), blocks))
    for block, result in zip(blocks, results):
        assert_same_bits(result, correlate_block_numpy(block, weights, (2, 1), "magnitude"))


def test_pickled_by_reference_for_worker_processes():
    """Dask ships the function by name; each worker compiles or loads its own kernels."""
    assert pickle.loads(pickle.dumps(correlate_block_compiled)) is correlate_block_compiled


CACHE_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from convpipe.core import compiled
    bank = np.full((2, 1, 2, 3), float(sys.argv[1]), dtype=np.float32)
    stride = (int(sys.argv[2]), 1)
    kernel = compiled.compiled_kernel(bank, stride, "magnitude", np.dtype(sys.argv[3]))
    print(sum(kernel.stats.cache_hits.values()))
    """
)


def test_second_process_loads_the_kernel_from_the_disk_cache(tmp_path):
    """The first process compiles and writes; the next loads machine code. Another bank, stride or dtype is another entry."""
    env = {**os.environ, compiled.CACHE_DIR_ENV: str(tmp_path)}

    def run(*arguments: str) -> int:
        command = [sys.executable, "-c", CACHE_SCRIPT, *arguments]
        return int(subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout)

    assert run("0.75", "2", "uint8") == 0
    entries = sorted(path.name for path in tmp_path.iterdir())
    assert len(list(tmp_path.glob("convpipe_kernel_*.py"))) == 1
    assert run("0.75", "2", "uint8") == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == entries  # reused, nothing rewritten or added
    for arguments in [("0.5", "2", "uint8"), ("0.75", "3", "uint8"), ("0.75", "2", "float32")]:
        assert run(*arguments) == 0
    assert len(list(tmp_path.glob("convpipe_kernel_*.py"))) == 4


def test_generated_module_is_written_once(tmp_path):
    source = compiled.generate_source(SOBEL.astype(np.float32), (1, 1), "none", np.dtype(np.uint8))
    path = tmp_path / "kernel.py"
    compiled._write_once(path, source)
    stamp = path.stat()
    compiled._write_once(path, source)
    assert path.read_text() == source
    assert (path.stat().st_mtime, path.stat().st_ino) == (stamp.st_mtime, stamp.st_ino)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
