"""Running a plan: create (or reopen) the output, write every missing block, finish.

The output's life: a new output is created with its provenance; an existing
one is replaced only with ``overwrite``, by a copy built at the staging path
and swapped in at the end; an unfinished one is completed with ``resume``
(same fingerprint, only unrecorded blocks computed). Storage refusals become
:class:`~convpipe.errors.StorageError` with the command that resumes the run.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convpipe import __version__
from convpipe.completion import BlockRecorder, fingerprint
from convpipe.config import Config, with_scheduler
from convpipe.errors import ConfigError, OutputError, ResumeError, storage_errors
from convpipe.locking import output_lock
from convpipe.metadata import ome_compatible, ome_multiscales
from convpipe.outputs import (
    consolidate,
    create_output,
    is_replaceable,
    open_output_array,
    read_record,
    recover_interrupted_swap,
    staging_path,
    swap_into_place,
    sweep_partial_writes,
)
from convpipe.paths import path_exists, remove_path
from convpipe.planner import Plan, plan

__all__ = ["RunSummary", "execute", "provenance", "resume_command", "run"]


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


def run(
    config: Plan | Config | str | Path | Mapping[str, Any],
    *,
    overwrite: bool = False,
    resume: bool = False,
    scheduler: str | None = None,
    progress: bool = True,
) -> RunSummary:
    """Run a config (a YAML file, a mapping with its keys, a ``Config`` or a ``Plan``): what ``convpipe run`` does.

    Writes the output Zarr and returns a :class:`RunSummary`. ``overwrite``
    replaces an existing output (built beside it, swapped in at the end);
    ``resume`` finishes an interrupted run; ``scheduler`` overrides
    ``compute.scheduler``; ``progress`` shows a progress bar on stderr.
    """
    if overwrite and resume:
        raise ConfigError("--resume and --overwrite exclude each other: resume keeps the finished blocks, "
                          "overwrite starts again; pass one of them")
    the_plan = config if isinstance(config, Plan) else plan(config)
    return execute(the_plan, overwrite=overwrite or None, scheduler=scheduler, progress=progress, resume=resume)


def resume_command(plan: Plan, scheduler: str | None = None) -> str:
    """The shell command that finishes an interrupted run of ``plan`` (with its ``--scheduler`` override)."""
    command = ["convpipe", "run", plan.config.source, "--resume"] + (["--scheduler", scheduler] if scheduler else [])
    return shlex.join(command)


def provenance(plan: Plan) -> dict[str, Any]:
    """The ``convpipe`` attribute of the output array."""
    c = plan.config
    fields = plan.fingerprint_fields()
    return {
        "version": __version__,
        "config": c.to_dict(),
        "kernels": c.kernels.describe(),
        "stride": list(c.stride),
        "combine": c.combine,
        "padding": list(plan.geometry.padding),
        "padding_mode": plan.geometry.padding_mode,
        "dilation": list(plan.geometry.dilation),
        "input": plan.stack.identity(),
        "blocks": plan.geometry.n_tasks,
        "complete": False,
        "fingerprint": fingerprint(fields),
        "determined_by": fields,
    }


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
    ``scheduler`` overrides ``compute.scheduler``. When the storage refuses,
    the finished blocks are kept and the error says how to resume.
    """
    from convpipe.execution import check_scheduler, run_jobs

    config = plan.config if scheduler is None else with_scheduler(plan.config, scheduler)
    hint = f"; finished blocks are kept. Once fixed, resume with: {resume_command(plan, scheduler)}"
    with storage_errors(writing=config.output.path, hint=hint):
        overwrite = config.output.overwrite if overwrite is None else overwrite
        started = time.perf_counter()
        g = plan.geometry
        final = config.output.path
        if "://" in config.compute.scheduler:  # an unreachable scheduler is refused before anything is written
            check_scheduler(config.compute.scheduler, config.compute.connect_timeout)
        with output_lock(final):  # one run at a time on this output and its staging copy
            note = recover_interrupted_swap(final, _is_whole)
            if note:
                print(f"convpipe: {note}", file=sys.stderr)
            target_path, target, done = _open_target(plan, overwrite, resume)
            recorder = BlockRecorder(target_path)
            todo = g.n_tasks - len(done)
            if todo:
                jobs = _slab_jobs(plan, target, recorder, done)
                run_jobs(jobs, todo, config.compute, progress=progress, n_jobs=len(g.batch_groups()))
            if len(recorder.done()) != g.n_tasks:
                missing = g.n_tasks - len(recorder.done())
                raise RuntimeError(f"{target_path}: {missing} blocks have no completion record")
            record = dict(target.attrs["convpipe"])
            record["complete"] = True
            target.attrs["convpipe"] = record
            consolidate(target_path)
            if target_path != final:
                swap_into_place(target_path, final)
    seconds = time.perf_counter() - started
    h, w = (plan.stack.shape[a] for a in g.spatial_axes)
    return RunSummary(g.frames, g.frames * h * w / 1e6, seconds, final, todo, g.n_tasks, g.output_shape)


def _slab_jobs(plan: Plan, target, recorder: BlockRecorder, done: set[tuple[int, ...]]) -> Iterator[list]:
    """Per slab (batch chunk), the write tasks of its blocks not yet done, as Delayed objects.

    Slabs are independent (halos never cross batch chunks), so running a
    bounded number of them at a time bounds memory by the slabs in flight,
    never by the length of the stack; each slab's graph is built only when
    it is about to run.
    """
    from convpipe.padding import unpadded_chunks
    from convpipe.pipeline import result_array, write_tasks

    g, dtype = plan.geometry, plan.config.output.dtype
    stack = plan.stack.to_dask(unpadded_chunks(g))
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
            if path_exists(candidate):
                try:
                    array = _reopen_for_resume(plan, candidate)
                except ResumeError as error:  # another run's; the other candidate may still be ours
                    refusal = error
                    continue
                sweep_partial_writes(candidate)  # chunk files a killed write left half-written
                return candidate, array, BlockRecorder(candidate).done()
        if refusal is not None:
            raise refusal  # the output's own reason when it exists (it is examined last)
    if path_exists(final) and not overwrite:
        record = read_record(final)
        if record is not None and not record.get("complete"):
            raise OutputError(
                f"output.path: {final} is an unfinished convpipe output; pass --resume to finish it "
                "or --overwrite to start again",
                key="output.path",
            )
        message = f"output.path: {final} already exists; pass --overwrite (or output.overwrite: true)"
        raise OutputError(message, key="output.path")
    if path_exists(final) and not is_replaceable(final):
        raise OutputError(
            f"output.path: {final} exists and is not a convpipe output; convpipe replaces only its own "
            "outputs: choose another output.path, or remove it yourself",
            key="output.path",
        )
    target_path = staged if path_exists(final) else final
    if path_exists(target_path):  # an abandoned replacement
        if not is_replaceable(target_path):
            raise OutputError(
                f"output.path: {target_path} (where the replacement is built) exists and is not a convpipe "
                "output; remove or rename it",
                key="output.path",
            )
        remove_path(target_path)
    return target_path, _create_target(plan, target_path), set()


def _is_whole(path: str) -> bool:
    """A finished output with every block recorded: the only kind a swap moves into place."""
    record = read_record(path)
    return bool(record and record.get("complete")) and len(BlockRecorder(path).done()) == record.get("blocks")


def _reopen_for_resume(plan: Plan, path: str):
    record = read_record(path)
    if record is None:
        raise ResumeError(
            f"output.path: {path} exists but is not a convpipe output; cannot resume it", key="output.path"
        )
    expected = plan.fingerprint_fields()
    if record.get("fingerprint") != fingerprint(expected):
        recorded = record.get("determined_by", {})
        differing = sorted(k for k in expected if recorded.get(k) != expected[k]) or ["version"]
        raise ResumeError(
            f"output.path: {path} was written by a different run (differs in: {', '.join(differing)}); "
            "cannot resume; pass --overwrite to start again",
            key="output.path",
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
        labels={"c": list(config.kernels.names)} if g.has_kernel_axis else None,
    )
