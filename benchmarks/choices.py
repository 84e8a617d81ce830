"""Measure the defaults that are chosen by measurement: output codec, task size, tile size.

    python benchmarks/choices.py [--frames 32] [--size 2048] [--only codec,tasks,tiles]

Reads the benchmark's cached stacks (``bench.py`` generates them), then

1. ``codec``: writes the same float32 Sobel magnitude (computed once, in
   memory) with every ``output.codec``: seconds to write, MB/s and
   compression ratio;
2. ``tasks``: runs ``convpipe`` (threads) with several ``compute.task_mib``
   (target MiB per task; ``convpipe.geometry.DEFAULT_TASK_BYTES`` is the default): seconds;
3. ``tiles``: runs ``convpipe`` on frames too large for one task
   (``--tile-frames`` frames of ``--tile-size`` squared, stored in 1024x1024
   chunks) with several ``compute.chunks`` tile sizes, 1 to 8 Mpx (the
   automatic tile is the smallest of at least half a task,
   ``convpipe.geometry.MIN_TILE_FRACTION``): seconds.

Each figure is the median of ``--repeats`` runs. Prints a table.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from benchdata import stack_path

import this_tree  # noqa: F401  (before convpipe: this checkout's package)
import convpipe
from convpipe.codecs import compressors_for
from convpipe.config import CODECS
from convpipe.core import correlate_block
from convpipe.kernels import BUILTIN_BANKS


def median_seconds(action, repeats: int, prepare=None) -> float:
    """Median wall time of ``action()``; ``prepare()`` runs untimed before each call."""
    times = []
    for _ in range(repeats):
        if prepare is not None:
            prepare()
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def codec_rows(frames: np.ndarray, scratch: Path, repeats: int) -> list[tuple[str, float, float, float]]:
    """Every ``output.codec``, and Blosc LZ4 with byte shuffle (the bit shuffle's alternative)."""
    from zarr.codecs import BloscCodec

    candidates = {codec: compressors_for(codec, 3) for codec in CODECS}
    candidates["blosc-lz4, byte shuffle"] = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
    rows = []
    for index, (codec, compressors) in enumerate(candidates.items()):
        target = scratch / f"codec-{index}.zarr"

        def write(target: Path = target, compressors=compressors) -> None:
            if target.exists():
                shutil.rmtree(target)
            array = zarr.create_array(
                str(target),
                shape=frames.shape,
                chunks=(1,) + frames.shape[1:],
                dtype=frames.dtype,
                compressors=compressors,
            )
            array[:] = frames

        seconds = median_seconds(write, repeats)
        stored = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
        rows.append((codec, seconds, frames.nbytes / seconds / 1e6, frames.nbytes / stored))
    return rows


def timed_run(source: Path, scratch: Path, repeats: int, **compute):
    """The plan of a Sobel-magnitude run of ``source`` with ``compute`` keys and its median seconds."""
    out = scratch / "run.zarr"
    plan = convpipe.plan(
        {
            "input": {"path": str(source)},
            "kernels": "sobel",
            "combine": "magnitude",
            "output": {"path": str(out)},
            "compute": compute,
        }
    )

    def run() -> None:
        convpipe.run(plan, progress=False)

    def remove_output() -> None:  # deleting a GiB of chunks is not the run's cost
        shutil.rmtree(out, ignore_errors=True)

    remove_output()
    run()  # warm-up
    seconds = median_seconds(run, repeats, prepare=remove_output)
    remove_output()
    return plan, seconds


def task_size_rows(source: Path, scratch: Path, repeats: int) -> list[tuple[int, float, int]]:
    rows = []
    for mib in (8, 24, 48, 96, 192):
        plan, seconds = timed_run(source, scratch, repeats, task_mib=mib)
        rows.append((mib, seconds, plan.geometry.n_tasks))
    return rows


def tile_size_rows(source: Path, scratch: Path, repeats: int) -> list[tuple[tuple, float, int]]:
    rows = []
    for tile in ([1024, 1024], [1024, 2048], [2048, 2048], [2048, 4096]):
        plan, seconds = timed_run(source, scratch, repeats, chunks=tile)
        tile = tuple(plan.geometry.input_chunks[axis][0] for axis in plan.geometry.spatial_axes)
        rows.append((tile, seconds, plan.geometry.n_tasks))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tile-frames", type=int, default=4)
    parser.add_argument("--tile-size", type=int, default=8192)
    parser.add_argument("--data-dir", type=Path, default=REPO / "bench-data")
    parser.add_argument("--only", default="codec,tasks,tiles", help="comma-separated: codec,tasks,tiles")
    args = parser.parse_args()
    sections = set(args.only.split(","))
    sources = {}
    if sections & {"codec", "tasks"}:
        sources["stack"] = (stack_path(args.data_dir, args.frames, args.size, 1024, 0), args.frames, args.size)
    if "tiles" in sections:
        sources["tiles"] = (stack_path(args.data_dir, args.tile_frames, args.tile_size, 1024, 0),
                            args.tile_frames, args.tile_size)
    for source, frames, size in sources.values():
        if not source.exists():
            sys.exit(f"{source} missing: run `python benchmarks/bench.py --frames {frames} --size {size}` first")
    with tempfile.TemporaryDirectory(dir=args.data_dir) as scratch:
        if "codec" in sections:
            stack = zarr.open_array(str(sources["stack"][0]), mode="r")
            sample = stack[: min(8, args.frames)]
            weights = BUILTIN_BANKS["sobel"].weights
            magnitude = correlate_block(sample[:, None], weights, (1, 1), "magnitude", np.float32)
            print(f"output codec: writing {magnitude.shape} float32 Sobel magnitude, one frame per chunk")
            print(f"  {'codec':<24} {'seconds':>8} {'MB/s':>8} {'ratio':>6}")
            for codec, seconds, rate, ratio in codec_rows(magnitude, Path(scratch), args.repeats):
                print(f"  {codec:<24} {seconds:8.3f} {rate:8.0f} {ratio:6.2f}")
        if "tasks" in sections:
            source = sources["stack"][0]
            print(f"task size: convpipe run on {source.name} (threads)")
            print(f"  {'MiB/task':<12} {'seconds':>8} {'tasks':>6}")
            for mib, seconds, tasks in task_size_rows(source, Path(scratch), args.repeats):
                print(f"  {mib:<12} {seconds:8.3f} {tasks:6d}")
        if "tiles" in sections:
            source = sources["tiles"][0]
            print(f"tile size: convpipe run on {source.name} (threads)")
            print(f"  {'tile':>12} {'seconds':>8} {'tasks':>6}")
            for tile, seconds, tasks in tile_size_rows(source, Path(scratch), args.repeats):
                print(f"  {'x'.join(map(str, tile)):>12} {seconds:8.3f} {tasks:6d}")


if __name__ == "__main__":
    main()
