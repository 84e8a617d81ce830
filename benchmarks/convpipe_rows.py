"""Every use of convpipe's own code in the benchmark: its codec, its pipeline rows and its core rows.

The rest of the benchmark (data, reference, peers, timing, report) only
calls the functions here, so a change of convpipe's module layout is
followed by changing the imports below and nothing else.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import yaml
import zarr

import this_tree  # noqa: F401  (before convpipe: this checkout's package)
import convpipe
from convpipe.codecs import ZARR_PIPELINE, ZARRS_PIPELINE, compressors_for
from convpipe.core import correlate_block

from checks import SOBEL_BANK, Reference, SameBytes, check_stack_output, stored_chunks_digest
from results import Results
from timing import Case, FrameRow, pipeline_case


def version() -> str:
    return convpipe.__version__


def package_folder() -> str:
    """Where the timed convpipe was imported from (this checkout's ``convpipe/``: see ``this_tree.py``)."""
    return str(Path(convpipe.__file__).resolve().parent)


def default_compressors():
    """convpipe's default output codec (Blosc LZ4, bit shuffle), used by every row and the input."""
    return compressors_for("blosc-lz4", 3)


def open_output(path: Path):
    """A finished convpipe output, read-only (a lazy DataArray)."""
    return convpipe.open_output(str(path))


def config(
    input_path: Path,
    output_path: Path,
    stride: int,
    combine: str = "magnitude",
    dtype: str = "float32",
    shards: str | None = None,
    codec_pipeline: str = "auto",
    task_mib: int | None = None,
) -> dict:
    """A convpipe config for the Sobel magnitude (or ``combine``) of ``input_path``, as a mapping.

    ``task_mib`` (default: convpipe's) is only set by quick geometry runs, so
    that tiny images are still cut into tiles and column bands.
    """
    output = {"path": str(output_path), "dtype": dtype, "codec": "blosc-lz4"}
    compute = {"scheduler": "threads", "codec_pipeline": codec_pipeline}
    return {
        "input": {"path": str(input_path)},
        "kernels": "sobel",
        "stride": stride,
        "combine": combine,
        "output": output | ({"shards": shards} if shards else {}),
        "compute": compute | ({"task_mib": task_mib} if task_mib else {}),
    }


def config_text(input_path: Path, output_path: Path, stride: int, task_mib: int | None = None) -> str:
    """The same config as a YAML file's text."""
    return yaml.safe_dump(config(input_path, output_path, stride, task_mib=task_mib), sort_keys=False)


def run_command(config_path: Path) -> list[str]:
    """``convpipe run CONFIG -q`` in a fresh Python process."""
    return [sys.executable, "-m", "convpipe.cli", "run", str(config_path), "-q"]


ZARR_PYTHON_ROW = "convpipe stride 1, zarr-python pipeline"


@dataclass
class StoredOutput:
    """convpipe's stride-1 output held in memory, and how it was stored: what the same-bytes floor writes.

    ``array_spec`` holds the keyword arguments of ``zarr.create_array`` that
    reproduce convpipe's output array (shape, chunks, dtype, every codec, fill
    value), ``pipeline`` the codec pipeline convpipe wrote it with, and
    ``digest`` a hash of its stored chunk files, which the floor must equal.
    """

    values: np.ndarray
    array_spec: dict
    pipeline: str
    digest: str


def stride_1_output(reference: Reference, scratch: Path, task_mib: int | None = None) -> StoredOutput:
    """Run convpipe at stride 1 once and keep its output values (in memory) and storage."""
    out = scratch / "same-bytes.zarr"
    convpipe.run(config(reference.path, out, 1, task_mib=task_mib), progress=False)
    array = zarr.open_array(str(out / "0"), mode="r")
    spec = {
        "shape": array.shape,
        "chunks": array.chunks,
        "dtype": array.dtype,
        "compressors": array.compressors,
        "filters": array.filters,
        "serializer": array.serializer,
        "fill_value": array.fill_value,
        "dimension_names": array.metadata.dimension_names,
    }
    used = array.attrs["convpipe"]["codec_pipeline"]["output"]
    pipeline = ZARRS_PIPELINE if used == "zarrs" else ZARR_PIPELINE
    stored = StoredOutput(array[...], spec, pipeline, stored_chunks_digest(out / "0"))
    shutil.rmtree(out, ignore_errors=True)
    return stored


def pipeline_cases(reference: Reference, results: Results, scratch: Path) -> list[Case]:
    """The whole pipeline from a config text, Sobel magnitude: stride 1 and 2 with the default codec
    pipeline (``auto``: zarrs here), stride 1 with zarr-python's, which must store the same bytes, and
    stride 1 with ``shards: auto``."""
    input_path = reference.path
    same = SameBytes("convpipe stride 1 rows")
    cases = []
    for name, stride, pipeline, shards in (
        ("convpipe stride 1", 1, "auto", None),
        (ZARR_PYTHON_ROW, 1, "zarr", None),
        ("convpipe stride 2", 2, "auto", None),
        ("convpipe stride 1, shards auto", 1, "auto", "auto"),
    ):
        plan = convpipe.plan(config(input_path, scratch / "plan.zarr", stride, shards=shards, codec_pipeline=pipeline))
        g = plan.geometry
        results.note(
            f"{name} plan: {g.n_tasks} tasks, processing chunks "
            f"{tuple(c[0] for c in g.input_chunks)}, output Zarr chunks {g.zarr_chunks}"
            + (f", shards {plan.shards}" if plan.shards else "")
            + f", ~{plan.task_memory() / 2**20:.0f} MiB per task"
        )

        def run(output: Path, stride: int = stride, pipeline: str = pipeline, shards: str | None = shards) -> None:
            convpipe.run(config(input_path, output, stride, shards=shards, codec_pipeline=pipeline), progress=False)

        def verify(output: Path, stride: int = stride, name: str = name, shards: str | None = shards) -> None:
            worst = check_stack_output(name, open_output(output), reference, stride)
            used = zarr.open_array(str(output / "0"), mode="r").attrs["convpipe"]["codec_pipeline"]
            results.agree(
                f"{name}: {reference.frames_text()} vs the reference"
                + ("[::2, ::2]" if stride == 2 else "")
                + f" (max rel err {worst:.1e}); codec pipeline: input {used['input']}, output {used['output']}"
            )
            if stride == 1 and not shards:
                same.record(name, output / "0")

        cases.append(pipeline_case(name, "convpipe", reference.megapixels, run, verify, scratch))
    results.agree(same.text())
    return cases


def plan_note(input_path: Path, scratch: Path, task_mib: int | None = None) -> str:
    """How convpipe cuts ``input_path`` at stride 1: tasks, slabs (frames or column bands), chunks, memory."""
    plan = convpipe.plan(config(input_path, scratch / "plan.zarr", 1, task_mib=task_mib))
    g = plan.geometry
    return (
        f"convpipe plan: {g.n_tasks} tasks in {len(g.slabs())} slabs, processing chunks "
        f"{tuple(c[0] for c in g.input_chunks)}, output Zarr chunks {g.zarr_chunks}, "
        f"~{plan.task_memory() / 2**20:.0f} MiB per task"
    )


def stride_1_case(reference, results: Results, scratch: Path, task_mib: int | None = None) -> Case:
    """convpipe at stride 1 with default settings (``task_mib`` aside), checked against ``reference``."""
    name = "convpipe stride 1"

    def run(output: Path) -> None:
        convpipe.run(config(reference.path, output, 1, task_mib=task_mib), progress=False)

    def verify(output: Path) -> None:
        worst = check_stack_output(name, open_output(output), reference)
        results.agree(f"{name}: {reference.frames_text()} vs the reference (max rel err {worst:.1e})")

    return pipeline_case(name, "convpipe", reference.megapixels, run, verify, scratch)


TIFF_ROWS = ("convpipe stride 1, tiled TIFF input", "convpipe stride 1, same data in Zarr")
"""The ``tiff`` section's pair of rows: the same pixels read from a tiled TIFF and from the Zarr stack."""


def tiff_cases(reference: Reference, tiff_path: Path, results: Results, scratch: Path) -> list[Case]:
    """The whole pipeline (stride 1) on the tiled TIFF copy of the stack and on the Zarr stack itself."""
    cases = []
    for name, input_path in zip(TIFF_ROWS, (tiff_path, reference.path)):
        plan = convpipe.plan(config(input_path, scratch / "plan.zarr", 1))
        results.note(
            f"{name}: input chunks {plan.stack.stored_chunks}, {plan.geometry.n_tasks} tasks, "
            f"~{plan.task_memory() / 2**20:.0f} MiB per task"
        )

        def run(output: Path, input_path: Path = input_path) -> None:
            convpipe.run(config(input_path, output, 1), progress=False)

        def verify(output: Path, name: str = name) -> None:
            worst = check_stack_output(name, open_output(output), reference, 1)
            results.agree(f"{name}: {reference.frames_text()} vs the reference (max rel err {worst:.1e})")

        cases.append(pipeline_case(name, "tiff", reference.megapixels, run, verify, scratch))
    return cases


def response_cases(reference: Reference, results: Results, scratch: Path) -> list[Case]:
    """Both Sobel responses (``combine: none``) stored as float32 and as ``dtype: auto`` (exact integers)."""
    input_path = reference.path
    cases = []
    for dtype in ("float32", "auto"):
        chosen = convpipe.plan(config(input_path, scratch / "plan.zarr", 1, "none", dtype)).output_dtype

        def run(output: Path, dtype: str = dtype) -> None:
            convpipe.run(config(input_path, output, 1, "none", dtype), progress=False)

        def verify(output: Path, label: str = f"convpipe responses {chosen}") -> None:
            responses = open_output(output)
            magnitude = np.hypot(*(responses[:, k].astype(np.float64) for k in range(2)))
            worst = check_stack_output(label, magnitude, reference)
            results.agree(f"{label}: hypot of the two responses, {reference.frames_text()} (max rel err {worst:.1e})")

        name = f"convpipe responses dtype {dtype}"
        cases.append(pipeline_case(name, "dtypes", reference.megapixels, run, verify, scratch, f"stored as {chosen}"))
    return cases


def core_rows(frame: np.ndarray, raw: np.ndarray, want: np.ndarray) -> list[FrameRow]:
    """The core alone on one frame, stride 1 and 2: the float32 ``frame``, then the stack's own ``raw`` frame.

    ``want`` is the reference magnitude of that frame. The raw frame is what
    the pipeline hands the core (pixels converted tap by tap).
    """

    def core(pixels: np.ndarray, stride: int):
        block = pixels[None]  # (C=1, H, W)
        return lambda: correlate_block(block, SOBEL_BANK, (stride, stride), "magnitude", np.float32)

    rows = [FrameRow(f"convpipe core stride {s}", core(frame, s), want[::s, ::s]) for s in (1, 2)]
    rows += [
        FrameRow(f"convpipe core stride {s}, {raw.dtype} frame", core(raw, s), want[::s, ::s]) for s in (1, 2)
    ]
    return rows
