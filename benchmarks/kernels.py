"""Time the compiled core's SIMD blocks against its plain loops, and stride 2 against a memory floor.

    python benchmarks/kernels.py [--size 2048] [--rounds 5]

One frame in memory, one thread. For each bank, pixel dtype and stride,
builds the kernel twice from :func:`convpipe.compiled.generate_source`: as
convpipe builds it (SIMD blocks for column strides 1 and 2) and with
``SIMD_STRIDES = ()`` (the generated loops alone, which LLVM vectorises),
checks that both give the same bits, and times them in interleaved rounds.

Then the float32 Sobel pair at stride 2 against its memory floor: a 2x2
box sum at stride 2, which reads every pixel of the frame once and writes a
quarter as many outputs, with almost no arithmetic.

Prints the best and the median of the rounds (on a shared machine single
rounds of the same kernel differ by up to 30 %; the best is the steadier
figure for comparing two kernels).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numba
import numpy as np

from convpipe import compiled

SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
SOBEL = np.stack([SOBEL_X, SOBEL_X.T])[:, None]


def banks() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "Sobel magnitude": SOBEL,
        "3 channels, 3x3, 2 kernels, magnitude": rng.integers(-3, 4, (2, 3, 3, 3)).astype(np.float64),
        "5x5, 4 kernels, magnitude": rng.integers(-3, 4, (4, 1, 5, 5)).astype(np.float64),
    }


def build(bank: np.ndarray, stride: int, combine: str, input_dtype: np.dtype, simd: bool):
    """The kernel convpipe generates, or the same without SIMD blocks (sources in the kernel cache, machine code not)."""
    saved = compiled.SIMD_STRIDES
    compiled.SIMD_STRIDES = saved if simd else ()
    try:
        source = compiled.generate_source(bank.astype(np.float32), (stride, stride), combine, input_dtype)
    finally:
        compiled.SIMD_STRIDES = saved
    return numba.njit(nogil=True)(compiled._import_generated(source).correlate_bank)


def output_for(bank: np.ndarray, stride: int, combine: str, size: int) -> np.ndarray:
    kh, kw = bank.shape[2:]
    kernels = (bank.shape[0],) if combine == "none" else ()
    return np.empty((1, *kernels, (size - kh) // stride + 1, (size - kw) // stride + 1), np.float32)


def time_interleaved(calls: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each entry, ``rounds`` times, round-robin; each round lasts about 0.1 s per entry."""
    counts = {}
    for name, call in calls.items():
        started = time.perf_counter()
        call()
        counts[name] = max(1, int(0.1 / max(time.perf_counter() - started, 1e-6)))
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            started = time.perf_counter()
            for _ in range(counts[name]):
                call()
            seconds[name].append((time.perf_counter() - started) / counts[name])
    return seconds


def simd_against_loops(size: int, rounds: int) -> None:
    print(f"one {size}x{size} frame, one thread: ms per call, best / median of {rounds} interleaved rounds")
    print(f"{'bank':40}{'pixels':>9}{'stride':>7}{'loops':>17}{'SIMD blocks':>17}{'speed-up':>10}")
    rng = np.random.default_rng(0)
    for name, bank in banks().items():
        for dtype in (np.float32, np.uint16):
            frame = (rng.random((1, bank.shape[1], size, size)) * 4000).astype(dtype)
            for stride in (1, 2):
                kernels = {simd: build(bank, stride, "magnitude", np.dtype(dtype), simd) for simd in (False, True)}
                outs = {simd: output_for(bank, stride, "magnitude", size) for simd in kernels}
                for simd, kernel in kernels.items():
                    kernel(frame, outs[simd])
                if outs[False].tobytes() != outs[True].tobytes():
                    raise SystemExit(f"{name}, {np.dtype(dtype).name}, stride {stride}: SIMD blocks and loops differ")
                seconds = time_interleaved(
                    {simd: (lambda k=kernel, o=outs[simd], x=frame: k(x, o)) for simd, kernel in kernels.items()}, rounds
                )
                loops, blocks = (seconds[False], seconds[True])
                print(
                    f"{name:40}{np.dtype(dtype).name:>9}{stride:>7}"
                    f"{_ms(loops):>17}{_ms(blocks):>17}{min(loops) / min(blocks):>10.2f}"
                )


def stride_two_against_memory(size: int, rounds: int) -> None:
    print()
    print(f"float32 {size}x{size} frame: Sobel magnitude against a 2x2 box sum at stride 2 (reads every pixel once)")
    frame = (np.random.default_rng(0).random((1, 1, size, size)) * 4000).astype(np.float32)
    box = np.ones((1, 1, 2, 2))
    cases = {
        "Sobel magnitude, stride 1": (SOBEL, 1, "magnitude"),
        "Sobel magnitude, stride 2": (SOBEL, 2, "magnitude"),
        "2x2 box sum, stride 2 (memory floor)": (box, 2, "none"),
    }
    calls = {}
    for name, (bank, stride, combine) in cases.items():
        kernel, out = build(bank, stride, combine, np.dtype(np.float32), True), output_for(bank, stride, combine, size)
        kernel(frame, out)
        calls[name] = lambda k=kernel, o=out: k(frame, o)
    seconds = time_interleaved(calls, rounds)
    for name, values in seconds.items():
        print(f"  {name:40}{_ms(values):>17}")
    s1, s2, floor = (min(values) for values in seconds.values())
    print(f"  stride 2 / stride 1 {s2 / s1:.2f}, stride 2 / memory floor {s2 / floor:.2f}, floor / stride 1 {floor / s1:.2f}")


def _ms(seconds: list[float]) -> str:
    return f"{min(seconds) * 1e3:.3f} / {statistics.median(seconds) * 1e3:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2048, help="height = width of the frame (default 2048)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    args = parser.parse_args()
    simd_against_loops(args.size, args.rounds)
    stride_two_against_memory(args.size, args.rounds)


if __name__ == "__main__":
    main()
