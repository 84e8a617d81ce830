"""``--geometry``: the same rows on stacks and images of other shapes, each with its floors and peak RSS.

Each geometry gets, timed in interleaved rounds of its own: the plain
read-cast-write floor, the same-bytes floor (convpipe's own output values
written with convpipe's codec pipeline and with zarr-python's own, see
``peers.same_bytes_floor_case``),
convpipe at stride 1 with default settings, and the dask-image pipeline;
then the peak RSS of ``convpipe run`` in a fresh process. Its ratios carry
issue 17's targets where they apply (see :func:`geometry_ratios`).

``--quick`` swaps every geometry for a tiny one with the same layout
(stored chunks smaller than a frame, several tiles per frame, column bands
on the wide image; convpipe's ``task_mib`` is lowered so that tiny images
are still cut), so that every code path runs in seconds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from benchdata import ensure_stack, ensure_wide
from checks import Reference, SampledReference, SameBytes
from convpipe_rows import open_output, plan_note, stride_1_case, stride_1_output
from peak_memory import convpipe_peak
from peers import (
    FLOOR_NAME,
    SAME_BYTES_FLOOR_NAME,
    SAME_BYTES_PLAIN_FLOOR_NAME,
    daskimage_cases,
    floor_case,
    same_bytes_floor_case,
)
from results import Ratio, Results, Target
from timing import Case, scratch_dir, time_cases

WHOLE_FRAME_CHECK_MAX = 2048
"""Frames up to this side are checked whole (first and last); larger ones, and 2-D images, in sampled regions."""
SAME_BYTES_MEMORY_FRACTION = 0.25
"""The same-bytes floor holds convpipe's output in memory: skipped when it exceeds this share of the RAM."""
PEAK_TARGET = Target(1.5, at_most=True)
"""Peak RSS of ``convpipe run`` in GiB, on every geometry (issue 17, item 3)."""
LONG_STACK_FRAMES = 96
"""The same-bytes and dask-image targets hold from this many frames on (beyond what the page cache hides)."""


@dataclass(frozen=True)
class Geometry:
    """A benchmark input: ``frames`` of ``height x width`` (None: one 2-D image), stored in ``chunk`` squares."""

    name: str
    frames: int | None
    height: int
    width: int
    chunk: int
    task_mib: int | None = None
    """convpipe's ``compute.task_mib`` (None: its default). Only quick geometries set it."""

    @property
    def label(self) -> str:
        shape = f"{self.height}²" if self.height == self.width else f"{self.height} x {self.width}"
        what = f"{self.frames} x {shape}" if self.frames else f"one 2-D image {shape}"
        return f"{what} uint16, {self.chunk}² chunks"

    def ensure(self, data_dir: Path, seed: int) -> Path:
        """The input, generated once and cached in ``data_dir``."""
        if self.frames is None:
            return ensure_wide(data_dir, self.height, self.width, self.chunk, seed)
        if self.height != self.width:
            raise ValueError(f"stack geometries have square frames, got {self.height} x {self.width}")
        return ensure_stack(data_dir, self.frames, self.height, self.chunk, seed)

    def reference(self, input_path: Path) -> Reference | SampledReference:
        if self.frames is not None and max(self.height, self.width) <= WHOLE_FRAME_CHECK_MAX:
            return Reference(input_path)
        return SampledReference(input_path, self.chunk)

    def output_bytes(self) -> int:
        """Bytes of the float32 valid output, uncompressed."""
        return 4 * (self.frames or 1) * (self.height - 2) * (self.width - 2)


GEOMETRIES = {
    g.name: g
    for g in (
        Geometry("32x2048", 32, 2048, 2048, 1024),
        Geometry("96x2048", 96, 2048, 2048, 1024),
        Geometry("200x1024", 200, 1024, 1024, 512),
        Geometry("4x8192", 4, 8192, 8192, 1024),
        Geometry("wide", None, 8192, 262144, 2048),
    )
}
"""Every geometry by name; ``wide`` (a 4 GiB input) runs only when named or with ``--huge``."""
DEFAULT_GEOMETRIES = ("32x2048", "96x2048", "200x1024", "4x8192")

QUICK_GEOMETRIES = {
    "32x2048": Geometry("32x2048", 2, 64, 64, 32),
    "96x2048": Geometry("96x2048", 3, 64, 64, 32),
    "200x1024": Geometry("200x1024", 4, 48, 48, 16),
    "4x8192": Geometry("4x8192", 1, 512, 512, 64, task_mib=1),
    "wide": Geometry("wide", None, 256, 8192, 128, task_mib=1),
}
"""Tiny stand-ins with the same layout, for ``--quick``: tiles on ``4x8192``, tiles and column bands on ``wide``."""


def run_geometry(
    geometry: Geometry, data_dir: Path, seed: int, repeats: int, results: Results, total_memory: int | None
) -> None:
    """Generate (or reuse) the input, verify and time every row of ``geometry``, then measure convpipe's peak RSS."""
    print(f"geometry {geometry.name}: {geometry.label}", flush=True)
    input_path = geometry.ensure(data_dir, seed)
    reference = geometry.reference(input_path)
    with scratch_dir(data_dir) as scratch:
        cases = geometry_cases(geometry, reference, results, scratch, total_memory)
        print(f"  timing {len(cases)} row(s), {repeats} round(s)", flush=True)
        time_cases(cases, repeats, results)
        peak, seconds, output = convpipe_peak(input_path, scratch, geometry.task_mib)
        worst = reference.check(f"[{geometry.name}] convpipe run", open_output(output))
    results.agree(
        f"[{geometry.name}] convpipe run (fresh process): {reference.frames_text()} (max rel err {worst:.1e})"
    )
    results.geometry_peaks[geometry.name] = {"peak_bytes": peak, "seconds": seconds}
    print(f"  peak RSS of convpipe run: {peak / 2**30:.3f} GiB ({seconds:.1f} s)", flush=True)
    geometry_ratios(geometry, results)


def geometry_cases(
    geometry: Geometry,
    reference: Reference | SampledReference,
    results: Results,
    scratch: Path,
    total_memory: int | None,
) -> list[Case]:
    """The verified rows of one geometry, named ``[name] row`` and in the section ``geometry name``."""
    cases = [floor_case(reference, results, "store", scratch, None, SameBytes(f"[{geometry.name}] floor"))]
    if total_memory is not None and geometry.output_bytes() > SAME_BYTES_MEMORY_FRACTION * total_memory:
        results.note(
            f"[{geometry.name}] no same-bytes floor: it holds convpipe's output in memory "
            f"({geometry.output_bytes() / 2**30:.1f} GiB, over {SAME_BYTES_MEMORY_FRACTION:.0%} of the RAM)"
        )
    else:
        stored = stride_1_output(reference, scratch, geometry.task_mib)
        cases += [same_bytes_floor_case(reference, stored, results, scratch, plain) for plain in (False, True)]
    results.note(f"[{geometry.name}] " + plan_note(reference.path, scratch, geometry.task_mib))
    cases.append(stride_1_case(reference, results, scratch, geometry.task_mib))
    cases += daskimage_cases(reference, results, scratch)
    section = f"geometry {geometry.name}"
    return [
        dataclasses.replace(case, name=f"[{geometry.name}] {case.name}", section=section) for case in cases
    ]


CONVPIPE_ROW = "convpipe stride 1"
DASKIMAGE_ROW = "dask-image (2 x correlate, hypot)"


def geometry_ratios(geometry: Geometry, results: Results) -> None:
    """convpipe against each floor and dask-image on ``geometry``, and its peak RSS, with the targets that apply.

    Issue 17's targets: convpipe <= 1.0 x the read-cast-write floor where it
    writes no more bytes than the floor; <= 0.90 x the same-bytes floor
    written by plain zarr-python and
    dask-image >= 2 x slower from :data:`LONG_STACK_FRAMES` frames on; peak
    RSS <= 1.5 GiB everywhere.
    """
    name = geometry.name

    def timing(row: str):
        return results.timing(f"[{name}] {row}")

    convpipe, floor = timing(CONVPIPE_ROW), timing(FLOOR_NAME)
    same, same_plain = timing(SAME_BYTES_FLOOR_NAME), timing(SAME_BYTES_PLAIN_FLOOR_NAME)
    daskimage = timing(DASKIMAGE_ROW)
    long_stack = (geometry.frames or 0) >= LONG_STACK_FRAMES
    smaller = convpipe and floor and convpipe.stored_bytes <= floor.stored_bytes
    rows = [
        (
            "convpipe / read-cast-write floor (time)",
            convpipe,
            floor,
            Target(1.0, True) if smaller else None,
            "t(convpipe) / t(floor)" + ("" if smaller else "; writes more bytes than the floor: no target"),
        ),
        (
            "convpipe / same-bytes floor, zarr-python (time)",
            convpipe,
            same_plain,
            Target(0.90, True) if long_stack else None,
            "t(convpipe) / t(same-bytes floor written by plain zarr-python)",
        ),
        (
            "convpipe / same-bytes floor, zarrs (time)",
            convpipe,
            same,
            None,
            "t(convpipe) / t(same-bytes floor written with convpipe's pipeline, zarrs): stricter",
        ),
        (
            "dask-image / convpipe (time)",
            daskimage,
            convpipe,
            Target(2.0, False) if long_stack else None,
            "t(dask-image) / t(convpipe)",
        ),
    ]
    for label, numerator, denominator, target, formula in rows:
        value = numerator.median / denominator.median if numerator and denominator else None
        results.ratios.append(Ratio(f"[{name}] {label}", value, target, formula))
    if convpipe and floor:
        results.ratios.append(
            Ratio(
                f"[{name}] bytes written, convpipe / floor",
                convpipe.stored_bytes / floor.stored_bytes,
                None,
                "stored bytes of the outputs",
            )
        )
    peak = results.geometry_peaks.get(name)
    if peak:
        results.ratios.append(
            Ratio(
                f"[{name}] peak RSS of convpipe run (GiB)",
                peak["peak_bytes"] / 2**30,
                PEAK_TARGET,
                "fresh process, default settings"
                if geometry.task_mib is None
                else f"task_mib {geometry.task_mib}",
            )
        )
