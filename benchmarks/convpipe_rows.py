"""Every use of convpipe's own code in the benchmark: its codec, its pipeline rows and its core rows.

The rest of the benchmark (data, reference, peers, timing, report) only
calls the functions here, so a change of convpipe's module layout is
followed by changing the imports below and nothing else.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import yaml

import convpipe
from convpipe.codecs import compressors_for
from convpipe.core import correlate_block

from checks import SOBEL_BANK, Reference, check_stack_output
from results import Results
from timing import Case, FrameRow, pipeline_case


def version() -> str:
    return convpipe.__version__


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
) -> dict:
    """A convpipe config for the Sobel magnitude (or ``combine``) of ``input_path``, as a mapping (``output.shards`` if given)."""
    output = {"path": str(output_path), "dtype": dtype, "codec": "blosc-lz4"}
    return {
        "input": {"path": str(input_path)},
        "kernels": "sobel",
        "stride": stride,
        "combine": combine,
        "output": output | ({"shards": shards} if shards else {}),
        "compute": {"scheduler": "threads"},
    }


def config_text(input_path: Path, output_path: Path, stride: int) -> str:
    """The same config as a YAML file's text."""
    return yaml.safe_dump(config(input_path, output_path, stride), sort_keys=False)


def run_command(config_path: Path) -> list[str]:
    """``convpipe run CONFIG -q`` in a fresh Python process."""
    return [sys.executable, "-m", "convpipe.cli", "run", str(config_path), "-q"]


def pipeline_cases(reference: Reference, results: Results, scratch: Path) -> list[Case]:
    """The whole pipeline from a config text, Sobel magnitude, stride 1 and 2, and stride 1 with ``shards: auto``."""
    input_path = reference.path
    cases = []
    for stride, shards in ((1, None), (2, None), (1, "auto")):
        name = f"convpipe stride {stride}" + (f", shards {shards}" if shards else "")
        plan = convpipe.plan(config(input_path, scratch / "plan.zarr", stride, shards=shards))
        g = plan.geometry
        results.note(
            f"{name} plan: {g.n_tasks} tasks, processing chunks "
            f"{tuple(c[0] for c in g.input_chunks)}, output Zarr chunks {g.zarr_chunks}"
            + (f", shards {plan.shards}" if plan.shards else "")
            + f", ~{plan.task_memory() / 2**20:.0f} MiB per task"
        )

        def run(output: Path, stride: int = stride, shards: str | None = shards) -> None:
            convpipe.run(config(input_path, output, stride, shards=shards), progress=False)

        def verify(output: Path, stride: int = stride, label: str = name) -> None:
            worst = check_stack_output(label, open_output(output), reference, stride)
            results.agree(
                f"{label}: {reference.frames_text()} vs the reference"
                + ("[::2, ::2]" if stride == 2 else "")
                + f" (max rel err {worst:.1e})"
            )

        cases.append(pipeline_case(name, "convpipe", reference.megapixels, run, verify, scratch))
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
