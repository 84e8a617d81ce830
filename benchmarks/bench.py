#!/usr/bin/env python
"""Benchmark convpipe against the I/O floor, dask-image, SciPy and OpenCV; print ratios.

Every figure is relative to something timed in the same run, on the same
machine, the same data, the same chunks and the same output codec (Blosc
LZ4, convpipe's default), so the ratios mean something even where the
absolute seconds do not carry over to another machine:

* **I/O floor**: read the stack, cast it to float32, write it to Zarr; no
  arithmetic at all. convpipe cannot be faster than this.
* **convpipe**: the whole pipeline from a config, Sobel bank,
  ``combine: magnitude``, stride 1 and stride 2.
* **dask-image**: the pipeline a user would write with
  ``dask_image.ndfilters.correlate``, cropped to the valid region.
* **tiled TIFF input**: the pipeline (stride 1) on an uncompressed tiled
  TIFF copy of the stack, paired with the same data in Zarr: time and peak RSS.
* **one frame in memory, one thread**: ``scipy.ndimage.correlate``,
  OpenCV ``filter2D`` and the convpipe core alone.

Every pipeline's output is compared with an independent float64 reference
(``scipy.signal.correlate(mode="valid")``) before it is timed; a mismatch
aborts the run with exit code 1. After one warm-up per row, the timed
repetitions are interleaved (round-robin over the rows) so that a change in
background load hits every row alike.

``--memory`` measures the peak resident memory of ``convpipe run`` on 64 and
on 256 frames: it must not grow with the stack.

This file holds the command line and the order of the run; the modules
beside it do the work (see ``benchmarks/README.md``):

* ``benchdata.py``: the generated input stack, cached in ``bench-data/``;
* ``checks.py``: the float64 reference and the comparison with it;
* ``peers.py``: the I/O floor, dask-image, SciPy and OpenCV;
* ``convpipe_rows.py``: every use of convpipe's own code;
* ``timing.py``: warm-up, verification and interleaved repetitions;
* ``peak_memory.py``: ``--memory``;
* ``results.py`` and ``report.py``: what was measured, the ratios, the report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchdata import ensure_stack, ensure_tiff
from checks import RTOL, BenchmarkError, Reference, reference_name
from geometries import DEFAULT_GEOMETRIES, GEOMETRIES, QUICK_GEOMETRIES, run_geometry
from convpipe_rows import TIFF_ROWS, core_rows, pipeline_cases, response_cases, stride_1_output, tiff_cases
from peak_memory import bench_memory, paired_peaks
from peers import daskimage_cases, floor_cases, frame_peer_rows, same_bytes_floor_case
from report import compute_ratios, load_average, machine_info, print_report, to_json
from results import Results
from timing import Case, frame_case, scratch_dir, time_cases

DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / "bench-data"

SECTIONS = ("floor", "convpipe", "daskimage", "tiff", "core", "dtypes")
"""Timed sections, as named by ``--only``."""


def stack_cases(
    sections: list[str], reference: Reference, results: Results, args: argparse.Namespace, scratch: Path
) -> list[Case]:
    """The disk-to-disk rows of the requested sections, verified, in the order they are timed."""
    cases = []
    if "floor" in sections:
        cases += floor_cases(reference, results, args.floor_writer, scratch)
        cases.append(same_bytes_floor_case(reference, stride_1_output(reference, scratch), results, scratch))
    if "convpipe" in sections:
        cases += pipeline_cases(reference, results, scratch)
    if "daskimage" in sections:
        cases += daskimage_cases(reference, results, scratch)
    if "tiff" in sections:
        cases += tiff_cases(reference, ensure_tiff(reference.path), results, scratch)
    if "dtypes" in sections:
        cases += response_cases(reference, results, scratch)
    return cases


def frame_cases(reference: Reference, results: Results) -> list[Case]:
    """The ``core`` section: one frame in memory, one thread: SciPy, OpenCV and the convpipe core."""
    t = reference.frames[0]
    raw = np.ascontiguousarray(reference.array[t])
    frame = raw.astype(np.float32)
    want = reference.magnitude(t)
    rows = frame_peer_rows(frame, want, results) + core_rows(frame, raw, want)
    return [frame_case(row, t, frame.size / 1e6, results) for row in rows]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _sections(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of {','.join(SECTIONS)}, got {text!r}"
        )
    return names


def _frame_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if len(counts) < 1 or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected frame counts such as 64,256, got {text!r}")
    return counts


def _geometries(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    names = [n for name in names for n in (DEFAULT_GEOMETRIES if name == "default" else (name,))]
    unknown = [name for name in names if name not in GEOMETRIES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of default,{','.join(GEOMETRIES)}, got {text!r}"
        )
    return list(dict.fromkeys(names))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time convpipe against the I/O floor, dask-image, SciPy and OpenCV, and print the ratios.",
        epilog="Targets and the meaning of each row: benchmarks/README.md",
    )
    parser.add_argument("--frames", type=_positive, help="frames of the stack (default 32)")
    parser.add_argument("--size", type=_positive, help="height = width of a frame (default 2048)")
    parser.add_argument(
        "--chunk", type=_positive, default=1024, help="stored chunk (1, CHUNK, CHUNK) (default 1024)"
    )
    parser.add_argument("--repeats", type=_positive, help="timed repetitions after the warm-up (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated noise (default 0)")
    parser.add_argument(
        "--quick", action="store_true", help="small run: --frames 4 --size 512 --repeats 1 unless given"
    )
    parser.add_argument(
        "--only", type=_sections, default=None, help=f"comma-separated sections to time: {','.join(SECTIONS)}"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="where the generated stacks are cached and outputs written (default: bench-data/ in the repository)",
    )
    parser.add_argument(
        "--memory",
        action="store_true",
        help="measure the peak RSS of `convpipe run` on --memory-frames stacks (only this, unless --only is given)",
    )
    parser.add_argument(
        "--memory-frames",
        type=_frame_counts,
        default=[64, 256],
        help="frame counts of --memory (default 64,256)",
    )
    parser.add_argument(
        "--memory-size", type=_positive, default=2048, help="frame size of --memory (default 2048)"
    )
    parser.add_argument(
        "--geometry",
        type=_geometries,
        nargs="?",
        const=list(DEFAULT_GEOMETRIES),
        help="time the geometry rows (floors, convpipe, dask-image, peak RSS) on these inputs: "
        f"{','.join(GEOMETRIES)} or default (= {','.join(DEFAULT_GEOMETRIES)}, also without a value); "
        "only these unless --only is given",
    )
    parser.add_argument(
        "--huge",
        action="store_true",
        help="add the wide geometry (one 8192 x 262144 uint16 image, 4 GiB, generated once) to --geometry",
    )
    parser.add_argument(
        "--floor-writer",
        choices=("store", "to_zarr"),
        default="store",
        help="how the I/O floor writes: da.store (blocks == stored chunks, default) or da.to_zarr "
        "(which rechunks to dask's 'auto' blocks first)",
    )
    parser.add_argument("--json", type=Path, help="also save the results to this JSON file")
    args = parser.parse_args(argv)
    quick = {"frames": 4, "size": 512, "repeats": 1} if args.quick else {}
    for name, default in (("frames", 32), ("size", 2048), ("repeats", 3)):
        if getattr(args, name) is None:
            setattr(args, name, quick.get(name, default))
    if args.size < 3 or args.memory_size < 3:
        parser.error("frames must be at least 3 x 3 pixels for a 3 x 3 kernel")
    if args.huge:
        args.geometry = list(dict.fromkeys([*(args.geometry or DEFAULT_GEOMETRIES), "wide"]))
    if args.only is None:
        args.only = [] if args.memory or args.geometry else list(SECTIONS)
    args.data_dir = args.data_dir.resolve()
    return args


def total_memory() -> int | None:
    """Bytes of RAM of the machine (None without psutil)."""
    try:
        import psutil
    except ImportError:
        return None
    return psutil.virtual_memory().total


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chunk = min(args.chunk, args.size)
    settings: dict[str, Any] = {
        "sections": args.only,
        "memory": args.memory,
        "data_dir": str(args.data_dir),
    }
    geometries = [(QUICK_GEOMETRIES if args.quick else GEOMETRIES)[name] for name in args.geometry or []]
    if geometries:
        settings.update(geometries={g.name: g.label for g in geometries}, repeats=args.repeats, seed=args.seed)
    if args.only:
        settings.update(
            frames=args.frames,
            size=args.size,
            input_chunks=[1, chunk, chunk],
            repeats=args.repeats,
            seed=args.seed,
            floor_writer=args.floor_writer,
        )
    results = Results(machine_info(), settings)
    try:
        if args.only:
            print("data", flush=True)
            input_path = ensure_stack(args.data_dir, args.frames, args.size, args.chunk, args.seed)
            reference = Reference(input_path)
            print(f"checks (reference: {reference_name()}; rtol {RTOL:g})", flush=True)
            with scratch_dir(args.data_dir) as scratch:
                cases = stack_cases(args.only, reference, results, args, scratch)
                if cases:
                    print(f"timing {len(cases)} stack pipeline(s), {args.repeats} round(s)", flush=True)
                    time_cases(cases, args.repeats, results)
            if "tiff" in args.only:
                print("memory of the tiff pair", flush=True)
                pair = (ensure_tiff(input_path), input_path)
                paired_peaks(results, "peak RSS, tiled TIFF / Zarr input", TIFF_ROWS, pair, args.data_dir)
            if "core" in args.only:
                cases = frame_cases(reference, results)
                print(f"timing {len(cases)} one-frame row(s), {args.repeats} round(s)", flush=True)
                time_cases(cases, args.repeats, results)
        for geometry in geometries:
            run_geometry(geometry, args.data_dir, args.seed, args.repeats, results, total_memory())
        if args.memory:
            print("memory", flush=True)
            bench_memory(results, args.data_dir, args.memory_frames, args.memory_size, args.chunk, args.seed)
    except BenchmarkError as exc:
        print(f"\nMISMATCH, benchmark aborted: {exc}", file=sys.stderr)
        return 1
    settings["load_average_end"] = load_average()
    compute_ratios(results, args.only)
    print_report(results)
    if args.json:
        args.json.write_text(json.dumps(to_json(results), indent=2) + "\n", encoding="utf-8")
        print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
