"""Plan a run (validate everything, write nothing) and execute it.

:func:`make_plan` opens the input lazily and checks the config against it;
:func:`execute` creates the output and runs the graph on the chosen scheduler
with a progress bar, then marks the output complete.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import zarr

from convpipe import __version__
from convpipe.completion import BlockRecorder, fingerprint
from convpipe.config import Config
from convpipe.errors import ConfigError, ConvpipeError, InputError, OutputError, ResumeError
from convpipe.geometry import StackGeometry, plan_geometry
from convpipe.metadata import (
    input_axis_names,
    kernel_axis_position,
    ome_compatible,
    ome_multiscales,
    output_axis_names,
)
from convpipe.store import (
    InputStack,
    check_output_location,
    consolidate,
    create_output,
    open_input,
    open_output_array,
    output_exists,
    remove_path,
    staging_path,
    swap_into_place,
)


@dataclass(frozen=True)
class Plan:
    """Everything a run will do, resolved and validated."""

    config: Config
    stack: InputStack
    geometry: StackGeometry
    weights: np.ndarray
    dimension_names: tuple[str, ...]

    @property
    def output_dtype(self) -> str:
        return self.config.output.dtype

    def task_memory(self) -> int:
        """Estimated peak bytes of one task: input block with halo, float copy, output."""
        g = self.geometry
        (ay, ax), (kh, kw) = g.spatial_axes, g.kernel_shape
        block_pixels = max(g.input_chunks[ay]) + kh - 1
        block_pixels *= max(g.input_chunks[ax]) + kw - 1
        for axis in g.batch_axes:
            block_pixels *= max(g.input_chunks[axis])
        out_item = np.dtype(self.output_dtype).itemsize
        out_block = int(np.prod([max(c) for c in g.output_chunks])) * out_item
        responses = out_block * (g.n_kernels if g.combine == "magnitude" else 1)
        return block_pixels * g.channels * self.stack.dtype.itemsize * 2 + responses + out_block

    def describe(self) -> str:
        """Human-readable plan, as printed by ``convpipe validate``."""
        g, c = self.geometry, self.config
        bank = c.bank_name or "custom"
        kh, kw = g.kernel_shape
        lines = [
            f"config      {c.source}",
            f"input       {self.stack.path}{f' [{self.stack.array_path}]' if self.stack.array_path else ''}",
            f"  shape     {self.stack.shape}  dtype {self.stack.dtype}  stored chunks {self.stack.stored_chunks}",
            (
                f"  axes      batch {g.batch_axes}  channel {g.channel_axis}  spatial {g.spatial_axes}"
                f"  ({g.frames} frame(s), {g.channels} channel(s))"
            ),
            (
                f"kernels     {bank}: {', '.join(c.kernels.names)}  ({len(c.kernels.names)} x {kh}x{kw},"
                f" {c.kernels.channels} channel(s))"
            ),
            f"stride      {g.stride[0]} x {g.stride[1]}   combine {g.combine}",
            f"processing  chunks {_chunk_text(g.input_chunks)}  halo (0, {kh - 1}) x (0, {kw - 1})",
            f"output      {c.output.path}",
            f"  shape     {g.output_shape}  dtype {c.output.dtype}  dims {list(self.dimension_names)}",
            f"  chunks    {g.zarr_chunks}  codec {c.output.codec}  format {c.output.format}",
            f"tasks       {g.n_tasks}",
            (
                f"memory      ~{_mib(self.task_memory())} per task, ~{_mib(self.task_memory() * _threads())}"
                f" in flight with {_threads()} thread(s)"
            ),
            f"scheduler   {c.compute.scheduler}",
        ]
        return "\n".join(lines)


def _threads() -> int:
    from convpipe.execution import local_threads  # imports Dask: only when a summary is printed

    return local_threads()


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _chunk_text(chunks: tuple[tuple[int, ...], ...]) -> str:
    return "(" + ", ".join(str(c[0]) if len(set(c[:-1])) <= 1 else str(c) for c in chunks) + ")"


def make_plan(config: Config) -> Plan:
    """Open the input and check the config against it; nothing is written.

    Errors name the config file and the YAML line of the key concerned.
    """
    try:
        stack = open_input(config.input.path, config.input.array)
    except ConvpipeError as exc:
        message = str(exc)
        key = "input.array" if message.startswith("input.array") else "input.path"
        if not message.startswith(key):
            message = f"{key}: {message}"
        raise type(exc)(f"{config.where(key)}: {message}") from None
    ndim = len(stack.shape)
    channel_axis = _channel_axis(config, ndim)
    names = input_axis_names(ndim, channel_axis, config.input.axes)
    others = [a for a in range(ndim) if a != channel_axis]
    if len(others) < 2:
        raise InputError(
            f"{config.where('input.channel_axis')}: input.channel_axis: the input {stack.shape} has no two "
            "spatial axes besides the channel axis"
        )
    channels = 1 if channel_axis is None else stack.shape[channel_axis]
    bank = config.kernels
    if bank.channels not in (1, channels):
        hint = (
            f"give [C][kh][kw] weights with C = {channels}"
            if channel_axis is not None
            else f"set input.channel_axis to the axis holding the {bank.channels} channels"
        )
        raise InputError(
            f"{config.where('kernels')}: kernels: the kernels have {bank.channels} channels but the input has "
            f"{channels} (shape {stack.shape}, input.channel_axis = {channel_axis}); {hint}"
        )
    kh, kw = bank.kernel_shape
    h, w = stack.shape[others[-2]], stack.shape[others[-1]]
    if kh > h or kw > w:
        raise InputError(
            f"{config.where('kernels')}: kernels: the kernels ({kh}x{kw}) are larger than the image "
            f"frames ({h}x{w})"
        )
    geometry = plan_geometry(
        stack.shape,
        stack.stored_chunks,
        stack.dtype.itemsize,
        np.dtype(config.output.dtype).itemsize,
        channel_axis,
        (kh, kw),
        len(bank.names),
        config.stride,
        config.combine,
        spatial_chunks=config.compute.chunks,
        kernel_position=kernel_axis_position(tuple(names[a] for a in others[:-2])),
    )
    try:
        check_output_location(config.output.path, config.input.path)
    except ConvpipeError as exc:
        raise type(exc)(f"{config.where('output.path')}: {exc}") from None
    weights = bank.for_channels(channels)
    return Plan(config, stack, geometry, weights, output_axis_names(geometry, names))


def _channel_axis(config: Config, ndim: int) -> int | None:
    axis = config.input.channel_axis
    axes = config.input.axes
    if axes is not None and len(axes) != ndim:
        raise ConfigError(
            f"{config.where('input.axes')}: input.axes: {axes!r} names {len(axes)} axes but the input has {ndim}"
        )
    if axis is None:
        return axes.index("c") if axes and "c" in axes else None
    if not -ndim <= axis < ndim:
        raise ConfigError(
            f"{config.where('input.channel_axis')}: input.channel_axis: {axis} is out of range for a "
            f"{ndim}-D input (valid: {-ndim}..{ndim - 1})"
        )
    axis %= ndim
    if axes is not None and axes[axis] != "c":
        raise ConfigError(
            f"{config.where('input.axes')}: input.axes: {axes!r} must have 'c' at the channel axis {axis}"
        )
    return axis


# --------------------------------------------------------------------------- execution


@dataclass(frozen=True)
class RunSummary:
    """What a finished run did."""

    frames: int
    megapixels: float
    seconds: float
    output: str
    blocks_computed: int
    blocks_total: int

    def line(self) -> str:
        rate = self.megapixels / self.seconds if self.seconds > 0 else float("inf")
        resumed = ""
        if self.blocks_computed < self.blocks_total:
            resumed = f", resumed: {self.blocks_computed} of {self.blocks_total} blocks computed"
        return (
            f"done: {self.frames} frame(s), {self.megapixels:.1f} Mpx in {self.seconds:.2f} s "
            f"({rate:.1f} Mpx/s){resumed} -> {self.output}"
        )


def fingerprint_fields(plan: Plan) -> dict[str, Any]:
    """What determines the output's bytes: a resumed run must match all of it."""
    c, g = plan.config, plan.geometry
    return {
        "kernels": {"names": list(c.kernels.names), "weights": plan.weights.tolist()},
        "stride": list(g.stride),
        "combine": g.combine,
        "dtype": c.output.dtype,
        "input": plan.stack.identity(),
        "output": {
            "shape": list(g.output_shape),
            "chunks": list(g.zarr_chunks),
            "format": c.output.format,
            "codec": c.output.codec,
        },
    }


def provenance(plan: Plan) -> dict[str, Any]:
    """The ``convpipe`` attribute of the output array."""
    c = plan.config
    fields = fingerprint_fields(plan)
    return {
        "version": __version__,
        "config": c.to_dict(),
        "kernels": c.kernels.describe(),
        "stride": list(c.stride),
        "combine": c.combine,
        "input": plan.stack.identity(),
        "blocks": plan.geometry.n_tasks,
        "complete": False,
        "fingerprint": fingerprint(fields),
        "determined_by": fields,
    }


def read_record(path: str) -> dict[str, Any] | None:
    """The ``convpipe`` attribute of an existing output, or None if it is not one."""
    try:
        return dict(open_output_array(path).attrs["convpipe"])
    except (OSError, KeyError, ValueError, TypeError, zarr.errors.BaseZarrError):
        return None  # not a Zarr group, no array 0, no attribute: not a convpipe output


def execute(
    plan: Plan,
    overwrite: bool | None = None,
    scheduler: str | None = None,
    progress: bool = True,
    resume: bool = False,
) -> RunSummary:
    """Run ``plan``: create (or reopen) the output, write every missing block, finish.

    An existing output is replaced only with ``overwrite``; the replacement is
    built beside it and swapped in at the end, so a failed run leaves the
    previous output as it was. With ``resume`` an unfinished output of the
    same run (same fingerprint) is completed, computing only unrecorded blocks.
    """
    from convpipe.execution import check_scheduler, run_jobs

    config = plan.config
    if scheduler is not None:
        config = replace(config, compute=replace(config.compute, scheduler=scheduler))
    overwrite = config.output.overwrite if overwrite is None else overwrite
    started = time.perf_counter()
    g = plan.geometry
    final = config.output.path
    if "://" in config.compute.scheduler:  # an unreachable scheduler is refused before anything is written
        check_scheduler(config.compute.scheduler, config.compute.connect_timeout)
    target_path, target, done = _open_target(plan, overwrite, resume)
    recorder = BlockRecorder(target_path)
    todo = g.n_tasks - len(done)
    if todo:
        jobs = _slab_jobs(plan, target, recorder, done)
        run_jobs(jobs, todo, config.compute, progress=progress, n_jobs=len(g.batch_groups()))
    if len(recorder.done()) != g.n_tasks:
        raise RuntimeError(f"{target_path}: {g.n_tasks - len(recorder.done())} blocks have no completion record")
    record = dict(target.attrs["convpipe"])
    record["complete"] = True
    target.attrs["convpipe"] = record
    consolidate(target_path)
    if target_path != final:
        swap_into_place(target_path, final)
    seconds = time.perf_counter() - started
    h, w = (plan.stack.shape[a] for a in g.spatial_axes)
    return RunSummary(g.frames, g.frames * h * w / 1e6, seconds, final, todo, g.n_tasks)


def _slab_jobs(plan: Plan, target, recorder: BlockRecorder, done: set[tuple[int, ...]]) -> Iterator[list]:
    """Per slab (batch chunk), the write tasks of its blocks not yet done, as Delayed objects.

    Slabs are independent (halos never cross batch chunks), so running a
    bounded number of them at a time bounds memory by the slabs in flight,
    never by the length of the stack; each slab's graph is built only when
    it is about to run.
    """
    from convpipe.pipeline import result_array, write_tasks

    g, dtype = plan.geometry, plan.config.output.dtype
    stack = plan.stack.to_dask(g.input_chunks)
    for group in g.batch_groups():
        slab = g.slab(group)
        tokens = write_tasks(
            result_array(stack[slab.input_slices], slab.geometry, plan.weights, dtype),
            target,
            on_written=recorder,
            origin=slab.output_origin,
            block_origin=slab.block_origin,
        )
        blocks = tokens.to_delayed()
        missing = [
            blocks[index]
            for index in np.ndindex(*tokens.numblocks)
            if tuple(o + i for o, i in zip(slab.block_origin, index)) not in done
        ]
        if missing:
            yield missing


def _open_target(plan: Plan, overwrite: bool, resume: bool):
    """The output array to write into, its path, and the blocks already done."""
    final = plan.config.output.path
    staged = staging_path(final)
    if resume:
        refusal = None
        for candidate in (staged, final):  # an interrupted replacement first
            if output_exists(candidate):
                try:
                    array = _reopen_for_resume(plan, candidate)
                except ResumeError as error:  # another run's; the other candidate may still be ours
                    refusal = error
                    continue
                return candidate, array, BlockRecorder(candidate).done()
        if refusal is not None:
            raise refusal  # the output's own reason when it exists (it is examined last)
    if output_exists(final) and not overwrite:
        record = read_record(final)
        if record is not None and not record.get("complete"):
            raise OutputError(
                f"output.path: {final} is an unfinished convpipe output; pass --resume to finish it "
                "or --overwrite to start again"
            )
        raise OutputError(f"output.path: {final} already exists; pass --overwrite (or output.overwrite: true)")
    target_path = staged if output_exists(final) else final
    if output_exists(target_path):
        remove_path(target_path)  # a stale, abandoned replacement
    return target_path, _create_target(plan, target_path), set()


def _reopen_for_resume(plan: Plan, path: str):
    record = read_record(path)
    if record is None:
        raise ResumeError(f"output.path: {path} exists but is not a convpipe output; cannot resume it")
    expected = fingerprint_fields(plan)
    if record.get("fingerprint") != fingerprint(expected):
        recorded = record.get("determined_by", {})
        differing = sorted(k for k in expected if recorded.get(k) != expected[k]) or ["version"]
        raise ResumeError(
            f"output.path: {path} was written by a different run (differs in: {', '.join(differing)}); "
            "cannot resume; pass --overwrite to start again"
        )
    return open_output_array(path, mode="r+")


def _create_target(plan: Plan, path: str):
    config, g = plan.config, plan.geometry
    zarr_format = 2 if config.output.format == "zarr2" else 3
    group_attrs: dict[str, Any] = {}
    if ome_compatible(plan.dimension_names):
        version = "0.4" if zarr_format == 2 else "0.5"
        group_attrs = ome_multiscales(plan.dimension_names, g, config.kernels.names, version)
    return create_output(
        path,
        g.output_shape,
        g.zarr_chunks,
        config.output.dtype,
        plan.dimension_names,
        {"convpipe": provenance(plan)},
        group_attrs,
        codec=config.output.codec,
        zarr_format=zarr_format,
        labels={"c": list(config.kernels.names)} if g.combine == "none" else None,
    )
