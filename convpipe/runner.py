"""Running a plan: create (or reopen) the output, write every missing block, finish (see :func:`run`)."""

from __future__ import annotations

import functools
import shlex
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from convpipe import __version__, planner
from convpipe.codecs import on_codec_pipelines
from convpipe.completion import BlockRecorder, block_name, fingerprint
from convpipe.config import Config, with_scheduler
from convpipe.errors import ClusterError, ConfigError, InputError, OutputError, ResumeError, storage_errors
from convpipe.geometry import Slab
from convpipe.integrity import MISSING, block_input_region, chunk_identities, first_change
from convpipe.locking import output_lock
from convpipe.metadata import ome_compatible, ome_multiscales, with_windows
from convpipe.outputs import (
    consolidate,
    create_output,
    is_replaceable,
    open_levels,
    open_output_array,
    read_record,
    recover_interrupted_swap,
    staging_path,
    swap_into_place,
    sweep_partial_writes,
)
from convpipe.padding import unpadded_chunks
from convpipe.paths import path_exists, remove_path, zarr_store
from convpipe.planner import Plan
from convpipe.pyramid import pyramid_layout
from convpipe.resources import worker_memory_problem
from convpipe.statistics import BlockMeasure, display_window, merge, sample_step

__all__ = ["RunSummary", "provenance", "resume_command", "run"]


@dataclass(frozen=True)
class RunSummary:
    """What a finished run did: its output, the frames and pixels it covers, the blocks it computed."""

    frames: int
    megapixels: float
    seconds: float
    output: str
    blocks_computed: int
    blocks_total: int
    shape: tuple[int, ...] = ()

    def line(self) -> str:
        computed = self.megapixels * self.blocks_computed / max(1, self.blocks_total)  # a resume's own share
        rate = computed / self.seconds if self.seconds > 0 else float("inf")
        resumed = ""
        if self.blocks_computed < self.blocks_total:
            resumed = f", resumed: {self.blocks_computed} of {self.blocks_total} blocks computed"
        return (
            f"done: {self.frames} frame(s), {self.megapixels:.1f} Mpx in {self.seconds:.2f} s "
            f"({rate:.1f} Mpx/s){resumed} -> {self.output}"
        )


def resume_command(plan: Plan, scheduler: str | None = None) -> str:
    """The shell command that finishes an interrupted run of ``plan`` (with its ``--scheduler`` override)."""
    command = ["convpipe", "run", plan.config.source, "--resume"]
    if scheduler:
        command += ["--scheduler", scheduler]
    return shlex.join(command)


def provenance(plan: Plan) -> dict[str, Any]:
    """The ``convpipe`` attribute of the output array; it repeats some fingerprint fields at its top level."""
    fields = plan.fingerprint_fields()
    return {
        "version": __version__,
        "config": plan.config.to_dict(),
        "kernels": plan.config.kernels.describe(),
        **{key: fields[key] for key in ("stride", "combine", "padding", "padding_mode", "dilation", "input")},
        "blocks": plan.geometry.n_tasks,
        "axes": [a.to_dict() for a in plan.output_axes],
        "complete": False,
        "fingerprint": fingerprint(fields),
        "determined_by": fields,
    }


def run(
    config: Plan | Config | str | Path | Mapping[str, Any],
    *,
    overwrite: bool = False,
    resume: bool = False,
    scheduler: str | None = None,
    progress: bool = True,
) -> RunSummary:
    """Run a config (a YAML file, a mapping, a ``Config`` or a ``Plan``): what ``convpipe run`` does.

    Creates (or reopens) the output Zarr, writes every missing block and
    returns a :class:`RunSummary`. An existing output is replaced only with
    ``overwrite`` (or ``output.overwrite``); the replacement is built beside
    it and swapped in at the end, so a failed run leaves the previous output
    as it was. With ``resume`` an unfinished output of the same run (same
    fingerprint) is completed, computing only unrecorded blocks.
    ``scheduler`` overrides ``compute.scheduler``; ``progress`` shows a
    progress bar on stderr. When the storage refuses, the finished blocks are
    kept and the error says how to resume.
    """
    if overwrite and resume:
        raise ConfigError(
            "--resume and --overwrite exclude each other: resume keeps the finished blocks, "
            "overwrite starts again; pass one of them"
        )
    plan = config if isinstance(config, Plan) else planner.plan(config)
    config = plan.config if scheduler is None else with_scheduler(plan.config, scheduler)
    overwrite = overwrite or config.output.overwrite
    opened: list[str] = []  # the output being written, once it exists
    hint = functools.partial(_resume_hint, plan, scheduler, opened)
    with storage_errors(writing=config.output.path, hint=hint):
        started = time.perf_counter()
        g = plan.geometry
        final, options = config.output.path, config.output.storage_options
        _check_before_writing(plan, config)
        with output_lock(final, options):  # one run at a time on this output and its staging copy
            note = recover_interrupted_swap(final, options)
            if note:
                print(f"convpipe: {note}", file=sys.stderr)
            target_path, target, done = _open_target(plan, overwrite, resume)
            opened.append(target_path)
            choice, codec = config.compute.codec_pipeline, config.output.codec
            source, target, pipelines = on_codec_pipelines(plan.stack.source, target, choice, codec)
            io_plan = replace(plan, stack=replace(plan.stack, source=source))  # arrays on those pipelines
            recorder = BlockRecorder(target_path, storage_options=options)
            todo = _write_missing_blocks(io_plan, config, target, recorder, done, progress, hint)
            _write_display_windows(target_path, recorder)
            finished = {"complete": True, "codec_pipeline": pipelines}  # those of the run that finished it
            target.attrs["convpipe"] = {**target.attrs["convpipe"], **finished}
            consolidate(target_path, options)
            if target_path != final:
                swap_into_place(target_path, final, options)
    seconds = time.perf_counter() - started
    h, w = (plan.stack.shape[a] for a in g.spatial_axes)
    return RunSummary(g.frames, g.frames * h * w / 1e6, seconds, final, todo, g.n_tasks, g.output_shape)


def _resume_hint(plan: Plan, scheduler: str | None, opened: list[str]) -> str:
    """How to go on after a failure: the resume command, when finished blocks are there to resume from."""
    if not opened or not BlockRecorder(opened[0], storage_options=plan.config.output.storage_options).done():
        return ""
    return f"; finished blocks are kept. Once fixed, resume with: {resume_command(plan, scheduler)}"


def _check_before_writing(plan: Plan, config: Config) -> None:
    """Print the plan's warnings; refuse a cluster that does not answer or cannot hold the tasks."""
    from convpipe.execution import check_scheduler

    for warning in plan.warnings:
        print(f"convpipe: warning: {warning}", file=sys.stderr)
    if "://" in config.compute.scheduler:
        scheduler_info = check_scheduler(config.compute.scheduler, config.compute.connect_timeout)
        problem = worker_memory_problem(plan.task_memory(), scheduler_info.get("workers", {}))
        if problem:
            raise ConfigError.about("compute.scheduler", problem)


def _write_missing_blocks(plan, config, target, recorder, done, progress, hint) -> int:
    """Compute and write every block not yet done (after checking its inputs); the number written."""
    from convpipe.execution import run_jobs

    g = plan.geometry
    records = recorder.read_all(done)
    done = {block for block in done if records[block].statistics is not None}  # windows need them
    done = _unchanged_inputs(plan, {block: records[block].inputs for block in done})
    todo = g.n_tasks - len(done)
    # Every block's input identities, taken before any block runs: os.stat releases the GIL, and taken
    # while the workers compute, each call would wait for the GIL.
    inputs = {
        block: _inputs_of(plan, block)
        for block in np.ndindex(*(len(c) for c in g.output_chunks))
        if block not in done
    }
    missing_chunks = {key for ids in inputs.values() for key, identity in ids.items() if identity == MISSING}
    if todo:
        slabs = g.slabs()
        jobs = _slab_jobs(plan, slabs, target, recorder, done, inputs)
        try:
            run_jobs(jobs, len(slabs), todo, config.compute, progress=progress)
        except (InputError, ClusterError) as exc:  # a chunk that cannot be decoded, a lost scheduler
            raise type(exc)(f"{exc}{hint()}", key=exc.key) from None
    if missing_chunks:
        fill = getattr(plan.stack.source, "fill_value", None)
        print(
            f"convpipe: warning: {len(missing_chunks)} input chunk(s) of {plan.stack.path} are not "
            f"stored and were read as the fill value {fill} (first: {min(missing_chunks)})",
            file=sys.stderr,
        )
    unrecorded = g.n_tasks - len(recorder.done())
    if unrecorded:
        raise RuntimeError(f"{recorder.output_path}: {unrecorded} blocks have no record")
    return todo


def _slab_jobs(plan: Plan, slabs: list[Slab], target, recorder, done: set, inputs: dict) -> Iterator[list]:
    """Per slab (batch chunk, or column band of a wide one): the Delayed write tasks of its blocks not done.

    Each slab's graph is built only when it is about to run, so memory is
    bounded by the slabs in flight (see :mod:`convpipe.execution`). Its
    recorder writes its blocks' ``inputs`` (identities of the input chunks
    read) into their completion records.
    """
    from convpipe.pipeline import result_array, write_tasks

    g, dtype = plan.geometry, plan.output_dtype
    stack = plan.stack.to_dask(unpadded_chunks(g))
    channel_axis = next((a for a, axis in enumerate(plan.output_axes) if axis.type == "channel"), None)
    channels = 1 if channel_axis is None else g.output_shape[channel_axis]
    measure = BlockMeasure(channel_axis, sample_step(g.output_shape, channels))
    levels = open_levels(target, plan.levels)
    for slab in slabs:
        blocks_of_slab = {
            index: tuple(o + i for o, i in zip(slab.block_origin, index))
            for index in np.ndindex(*(len(c) for c in slab.geometry.output_chunks))
        }
        todo = {index: block for index, block in blocks_of_slab.items() if block not in done}
        if not todo:
            continue
        # a band's halo joins its last tile
        slab_input = stack[slab.input_slices].rechunk(unpadded_chunks(slab.geometry))
        tokens = write_tasks(
            result_array(slab_input, slab.geometry, plan.weights, dtype),
            target,
            on_written=recorder.with_inputs({block: inputs[block] for block in todo.values()}),
            origin=slab.output_origin,
            block_origin=slab.block_origin,
            levels=levels,
            measure=measure,
        )
        delayed = tokens.to_delayed()
        yield [delayed[index] for index in todo]


def _write_display_windows(path: str, recorder: BlockRecorder) -> None:
    """Put the omero channels' display windows, made from the statistics in every block's record, in place."""
    group = zarr.open_group(zarr_store(path, recorder.storage_options), mode="r+")
    attrs = group.attrs.asdict()
    ome = attrs.get("ome", attrs)  # NGFF 0.5 keeps it under "ome", 0.4 on the group itself
    if "omero" not in ome:
        return  # not an OME-NGFF output
    records = recorder.read_all(recorder.done())
    merged = merge(filter(None, (records[block].statistics for block in sorted(records))))
    channels = range(len(ome["omero"]["channels"]))
    group.attrs.update(with_windows(attrs, [display_window(merged[str(c)]) for c in channels]))


def _inputs_of(plan: Plan, block: tuple[int, ...]) -> dict[str, str]:
    """Identities of the stored input chunks ``block`` reads (Zarr inputs; image files are fingerprinted)."""
    if not isinstance(plan.stack.source, zarr.Array):
        return {}
    region = plan.stack.stored_region(block_input_region(plan.geometry, block))
    return chunk_identities(plan.stack.source, region)


def _unchanged_inputs(plan: Plan, recorded_inputs: dict[tuple, dict | None]) -> set[tuple[int, ...]]:
    """The recorded blocks to trust: every input chunk they read (``recorded_inputs``) is unchanged.

    A block recorded without input identities is computed again; a changed
    input chunk refuses the resume (the output would mix two inputs).
    """
    if not isinstance(plan.stack.source, zarr.Array):
        return set(recorded_inputs)
    trusted = set()
    for block, recorded in sorted(recorded_inputs.items()):
        if recorded is None:
            continue
        changed = first_change(recorded, _inputs_of(plan, block))
        if changed is not None:
            raise ResumeError.about(
                "input.path",
                f"the input chunk {changed} of {plan.stack.path} changed after block {block_name(block)} was "
                "computed from it; resuming would mix the old and the new input; "
                "pass --overwrite to start again",
            )
        trusted.add(block)
    return trusted


def _open_target(plan: Plan, overwrite: bool, resume: bool):
    """The output array to write into, its path, and the blocks already done."""
    final, options = plan.config.output.path, plan.config.output.storage_options
    staged = staging_path(final)
    exists = functools.partial(path_exists, storage_options=options)
    if resume:
        refusal = None
        for candidate in (staged, final):  # an interrupted replacement first
            if exists(candidate):
                try:
                    array = _reopen_for_resume(plan, candidate)
                except ResumeError as error:  # another run's; the other candidate may still be ours
                    refusal = error
                    continue
                sweep_partial_writes(candidate)  # chunk files a killed write left half-written
                return candidate, array, BlockRecorder(candidate, storage_options=options).done()
        if refusal is not None:
            raise refusal  # the output's own reason when it exists (it is examined last)
    if not exists(final):
        return final, _create_target(plan, final), set()
    if not overwrite:
        record = read_record(final, options)
        if record is not None and not record.get("complete"):
            unfinished = f"{final} is an unfinished convpipe output"
            message = f"{unfinished}; pass --resume to finish it or --overwrite to start again"
            raise OutputError.about("output.path", message)
        message = f"{final} already exists; pass --overwrite (or output.overwrite: true)"
        raise OutputError.about("output.path", message)
    if not is_replaceable(final, options):
        raise OutputError.about(
            "output.path",
            f"{final} exists and is not a convpipe output; convpipe replaces only its own outputs: "
            "choose another output.path, or remove it yourself",
        )
    if exists(staged):  # an abandoned replacement
        if not is_replaceable(staged, options):
            message = f"{staged} (where the replacement is built) exists and is not a convpipe output"
            raise OutputError.about("output.path", f"{message}; remove or rename it")
        remove_path(staged, options)
    return staged, _create_target(plan, staged), set()


def _reopen_for_resume(plan: Plan, path: str):
    options = plan.config.output.storage_options
    record = read_record(path, options)
    if record is None:
        message = f"{path} exists but is not a convpipe output; cannot resume it"
        raise ResumeError.about("output.path", message)
    expected = plan.fingerprint_fields()
    if record.get("fingerprint") != fingerprint(expected):
        recorded = record.get("determined_by", {})
        differing = sorted(k for k in expected if recorded.get(k) != expected[k]) or ["version"]
        raise ResumeError.about(
            "output.path",
            f"{path} was written by a different run (differs in: {', '.join(differing)}); "
            "cannot resume; pass --overwrite to start again",
        )
    return open_output_array(path, mode="r+", storage_options=options)


def _create_target(plan: Plan, path: str):
    config, g = plan.config, plan.geometry
    zarr_format = 2 if config.output.format == "zarr2" else 3
    group_attrs: dict[str, Any] = {}
    if ome_compatible(plan.output_axes):
        version = "0.4" if zarr_format == 2 else "0.5"
        group_attrs = ome_multiscales(plan.output_axes, version, config.combine, levels=plan.levels)
    return create_output(
        path,
        g.output_shape,
        g.zarr_chunks,
        plan.output_dtype,
        plan.dimension_names,
        {"convpipe": provenance(plan)},
        group_attrs,
        codec=config.output.codec,
        zarr_format=zarr_format,
        labels={a.name: list(a.labels) for a in plan.output_axes if a.labels},
        storage_options=config.output.storage_options,
        shards=plan.shards,
        levels=pyramid_layout(g.output_shape, g.zarr_chunks, g.output_chunks, plan.levels),
    )
