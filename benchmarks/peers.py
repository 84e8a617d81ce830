"""What convpipe is measured against: the I/O floor, dask-image, and SciPy and OpenCV on one frame.

Each peer is the code a user would write with that library. Every stack
pipeline writes with convpipe's default codec and the threads scheduler, so
only the computation differs between rows. A peer that is not installed is
skipped with a note, and the ratios that need it print ``n/a``.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from checks import SOBEL_X, SOBEL_Y, BenchmarkError, Reference, SameBytes, check_stack_output, stored_chunks_digest
from convpipe_rows import StoredOutput, default_compressors
from results import Results
from timing import Case, FrameRow, pipeline_case


def threads_scheduler():
    import dask

    return dask.config.set(scheduler="threads")


def create_output_array(path: Path, shape, chunks):
    """An empty float32 Zarr v3 array with convpipe's default codec (dimensions ``t, y, x`` or ``y, x``)."""
    import zarr

    dimension_names = ("t", "y", "x")[-len(shape) :]

    return zarr.create_array(
        store=str(path),
        shape=shape,
        chunks=chunks,
        dtype="float32",
        compressors=default_compressors(),
        fill_value=np.nan,
        dimension_names=list(dimension_names),
    )


FLOOR_NAME = "I/O floor (read, cast, write)"
ZARRS_FLOOR_NAME = "I/O floor with zarrs (read, cast, write)"
SAME_BYTES_FLOOR_NAME = "I/O floor, convpipe's bytes (read input, write its output)"
SAME_BYTES_PLAIN_FLOOR_NAME = "I/O floor, convpipe's bytes, zarr-python's pipeline"
ZARR_PYTHON_PIPELINE = "zarr.core.codec_pipeline.BatchedCodecPipeline"


def floor_cases(reference: Reference, results: Results, floor_writer: str, scratch: Path) -> list[Case]:
    """The I/O floor as users write it with plain zarr-python, then the same after enabling zarrs.

    The second is what a user gets from zarrs's one line,
    ``zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"})``, around
    opening the arrays (zarr-python binds the pipeline to an array when it is opened).
    Both must store the same bytes.
    """
    same = SameBytes("I/O floor rows")
    cases = [floor_case(reference, results, floor_writer, scratch, None, same)]
    if importlib.util.find_spec("zarrs") is None:
        results.note("zarrs is not installed: skipping the I/O floor with zarrs")
        return cases
    cases.append(floor_case(reference, results, floor_writer, scratch, "zarrs.ZarrsCodecPipeline", same))
    results.agree(same.text())
    return cases


def floor_case(
    reference: Reference, results: Results, floor_writer: str, scratch: Path, pipeline: str | None, same: SameBytes
) -> Case:
    """Read, cast to float32, write with the input's chunks: the cost of the I/O alone."""
    import contextlib

    import dask.array as da
    import zarr

    name = FLOOR_NAME if pipeline is None else ZARRS_FLOOR_NAME

    def run(output: Path) -> None:
        with zarr.config.set({"codec_pipeline.path": pipeline}) if pipeline else contextlib.nullcontext():
            source = zarr.open_array(str(reference.path), mode="r")
            target = create_output_array(output, source.shape, source.chunks)
        stack = da.from_zarr(source)  # one Dask block per stored chunk
        with threads_scheduler():
            if floor_writer == "to_zarr":
                da.to_zarr(stack.astype(np.float32), target)
            else:
                # Into an existing array, da.to_zarr first rechunks to "auto" blocks (8 frames,
                # 128 MiB here): another task layout. da.store writes blocks == chunks as they are.
                da.store(stack.astype(np.float32), target, lock=False)

    def verify(output: Path) -> None:
        source = reference.array
        written = zarr.open_array(str(output), mode="r")
        for index in reference.input_samples():
            if not np.array_equal(written[index], source[index].astype(np.float32)):
                raise BenchmarkError(f"{name}: the output at {index} is not the input cast to float32")
        results.agree(f"{name}: {reference.frames_text()} equal the input cast to float32")
        same.record(name, output)

    return pipeline_case(name, "floor", reference.megapixels, run, verify, scratch, f"da.{floor_writer}")


def same_bytes_floor_case(
    reference: Reference, stored: StoredOutput, results: Results, scratch: Path, plain: bool = False
) -> Case:
    """Read the input and write convpipe's own output values (``stored``, computed beforehand) as convpipe did.

    The plainest fast way to write those bytes with zarr-python: the values
    are already in memory, the output array has convpipe's chunks, codecs and
    codec pipeline, and a pool of one thread per core reads (decodes) every
    stored chunk of the input and writes every chunk of the output, one
    ``zarr.Array`` item access per chunk. No Dask, no arithmetic: the physical
    limit of a convpipe run on this machine. Its stored chunk files must be
    byte-identical to convpipe's. ``plain`` writes with zarr-python's own
    codec pipeline instead of convpipe's (zarrs): the floor a user without
    zarrs would have.
    """
    import zarr

    values = stored.values
    pipeline_path = ZARR_PYTHON_PIPELINE if plain else stored.pipeline
    name = SAME_BYTES_PLAIN_FLOOR_NAME if plain else SAME_BYTES_FLOOR_NAME

    def run(output: Path) -> None:
        with zarr.config.set({"codec_pipeline.path": pipeline_path, "codec_pipeline.strict": False}):
            source = zarr.open_array(str(reference.path), mode="r")
            target = zarr.create_array(store=str(output), **stored.array_spec)

        def read(index: tuple) -> None:
            source[index]

        def write(index: tuple) -> None:
            target[index] = values[index]

        jobs = [(read, index) for index in chunk_indices(source.shape, source.chunks)]
        jobs += [(write, index) for index in chunk_indices(target.shape, target.chunks)]
        with ThreadPoolExecutor(os.cpu_count()) as pool:
            for _ in pool.map(lambda job: job[0](job[1]), jobs):
                pass

    def verify(output: Path) -> None:
        if stored_chunks_digest(output) != stored.digest:
            raise BenchmarkError(f"{name}: its stored chunks differ from convpipe's")
        results.agree(f"{name}: stored chunk files identical to convpipe's stride 1 output")

    pipeline = "zarrs" if pipeline_path.startswith("zarrs") else "zarr-python"
    return pipeline_case(name, "floor", reference.megapixels, run, verify, scratch, f"{pipeline} codec pipeline")


def chunk_indices(shape: tuple[int, ...], chunks: tuple[int, ...]) -> list[tuple[slice, ...]]:
    """The region of every chunk of an array, in C order."""
    starts = itertools.product(*(range(0, n, c) for n, c in zip(shape, chunks)))
    return [tuple(slice(s, min(s + c, n)) for s, c, n in zip(start, chunks, shape)) for start in starts]


def daskimage_cases(reference: Reference, results: Results, scratch: Path) -> list[Case]:
    """The dask-image pipeline a user would write: correlate each kernel, crop, hypot, store.

    No row (and a note) when dask-image is not installed.
    """
    try:
        from dask_image import ndfilters
    except ImportError:
        results.note("dask-image is not installed (pip install -e '.[bench]'): skipping its row")
        return []
    import dask.array as da
    import zarr

    source = reference.array

    def pipeline():
        x = da.from_zarr(source).astype(np.float32)
        leading = (1,) * (x.ndim - 2)  # the kernels span no frames
        gx = ndfilters.correlate(x, SOBEL_X.reshape(leading + (3, 3)).astype(np.float32))
        gy = ndfilters.correlate(x, SOBEL_Y.reshape(leading + (3, 3)).astype(np.float32))
        magnitude = da.hypot(gx, gy)[..., 1:-1, 1:-1]  # crop to the valid region
        # Cropping makes the first and last blocks one pixel shorter; store with blocks == chunks.
        if any(len(set(c[:-1])) > 1 or c[-1] > c[0] for c in magnitude.chunks):
            magnitude = magnitude.rechunk(tuple(max(c) for c in magnitude.chunks))
        return magnitude

    def run(output: Path) -> None:
        magnitude = pipeline()
        target = create_output_array(output, magnitude.shape, tuple(c[0] for c in magnitude.chunks))
        with threads_scheduler():
            da.store(magnitude, target, lock=False)

    def verify(output: Path) -> None:
        worst = check_stack_output("dask-image", zarr.open_array(str(output), mode="r"), reference)
        results.agree(f"dask-image: {reference.frames_text()} vs the reference (max rel err {worst:.1e})")

    chunks = tuple(c[0] for c in pipeline().chunks)
    name = "dask-image (2 x correlate, hypot)"
    return [pipeline_case(name, "daskimage", reference.megapixels, run, verify, scratch, f"chunks {chunks}")]


def frame_peer_rows(frame: np.ndarray, want: np.ndarray, results: Results) -> list[FrameRow]:
    """SciPy and OpenCV on one float32 frame, one thread, each cropped to the valid region."""
    kx, ky = SOBEL_X.astype(np.float32), SOBEL_Y.astype(np.float32)
    rows = []
    try:
        from scipy import ndimage
    except ImportError:
        results.note("SciPy is not installed: skipping the scipy.ndimage row")
    else:

        def scipy_sobel() -> np.ndarray:
            gx = ndimage.correlate(frame, kx, output=np.float32)[1:-1, 1:-1]
            gy = ndimage.correlate(frame, ky, output=np.float32)[1:-1, 1:-1]
            return np.hypot(gx, gy)

        rows.append(FrameRow("scipy.ndimage.correlate x2 + hypot", scipy_sobel, want))

    try:
        import cv2
    except ImportError:
        results.note("OpenCV is not installed (pip install -e '.[bench]'): skipping its row")
    else:
        cv2.setNumThreads(1)

        def opencv_sobel() -> np.ndarray:
            gx = cv2.filter2D(frame, cv2.CV_32F, kx, borderType=cv2.BORDER_ISOLATED)
            gy = cv2.filter2D(frame, cv2.CV_32F, ky, borderType=cv2.BORDER_ISOLATED)
            return cv2.magnitude(gx, gy)[1:-1, 1:-1]

        rows.append(FrameRow("OpenCV filter2D x2 + magnitude", opencv_sobel, want))
    return rows
