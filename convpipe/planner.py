"""Planning a run: validate everything against the input, write nothing.

:func:`plan` opens the input lazily, resolves its axes and checks the
config against it; the resulting :class:`Plan` is what ``convpipe validate``
prints (``str(plan)``) and what :func:`convpipe.runner.execute` runs.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from convpipe.axes import Axes, kernel_position, moved_channel, output_axes, resolve_axes, unnamed
from convpipe.config import Config, load_config
from convpipe.errors import ConfigError, ConvpipeError, InputError, StorageError, storage_errors
from convpipe.geometry import StackGeometry, plan_geometry
from convpipe.inputs import InputStack, open_input
from convpipe.metadata import OutputAxis
from convpipe.outputs import check_output_location
from convpipe.outtypes import output_dtype
from convpipe.padding import frame_padding
from convpipe.pyramid import level_shape, levels_for, pyramid_bytes
from convpipe.resources import local_cpus, local_memory_problem, task_count_warning
from convpipe.shards import shard_files, shard_layout


@dataclass(frozen=True)
class Plan:
    """Everything a run will do, resolved and validated."""

    config: Config
    stack: InputStack
    geometry: StackGeometry
    weights: np.ndarray
    axes: Axes
    """The input's axes as the geometry sees them (``channels: each`` may have moved the channel axis)."""
    output_axes: tuple[OutputAxis, ...]
    input_axes: Axes | None = None
    """The input's axes as stored, when ``axes`` differs (``channels: each`` moved the channel axis)."""
    warnings: tuple[str, ...] = ()
    """Lines worth reading before a run (e.g. very many tiny tasks); ``validate`` and ``run`` print them."""
    output_dtype: str = "float32"
    """``output.dtype`` resolved against the input (``auto`` becomes a dtype)."""
    shards: tuple[int, ...] | None = None
    """Zarr v3 shard shape of the output (each block covers whole shards), or None: unsharded."""
    levels: int = 0
    """Pyramid levels below level 0 (``output.pyramid`` resolved against the output's size)."""

    @property
    def dimension_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.output_axes)

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
        responses = out_block * (1 if g.has_kernel_axis else g.n_kernels)
        levels = pyramid_bytes(out_block, self.levels)
        return block_pixels * g.channels * self.stack.dtype.itemsize * 2 + responses + out_block + levels

    def fingerprint_fields(self) -> dict[str, Any]:
        """What determines the output's bytes: a resumed run must match all of it."""
        c, g = self.config, self.geometry
        return {
            "kernels": {"names": list(c.kernels.names), "weights": self.weights.tolist()},
            "stride": list(g.stride),
            "combine": g.combine,
            "padding": list(g.padding),
            "padding_mode": g.padding_mode,
            "dilation": list(g.dilation),
            "dtype": self.output_dtype,
            "input": self.stack.identity(),
            "output": {
                "shape": list(g.output_shape),
                "chunks": list(g.zarr_chunks),
                "format": c.output.format,
                "codec": c.output.codec,
                **({"shards": list(self.shards)} if self.shards else {}),
                **({"pyramid": self.levels} if self.levels else {}),
            },
        }

    def __str__(self) -> str:
        """The plan as ``convpipe validate`` prints it."""
        c, g, s, bank = self.config, self.geometry, self.stack, self.config.kernels
        (kh, kw), (dy, dx), (sy, sx) = g.kernel_shape, g.dilation, g.stride
        array = f" [{s.array_path}]" if s.array_path else ""
        kernels = f"{c.bank_name or 'custom'}: {', '.join(bank.names)}"
        kernel_shape = "x".join(map(str, bank.kernel_shape))
        padding = c.padding if isinstance(c.padding, str) else "explicit"
        padding = f"{padding}: top, bottom, left, right {g.padding}  mode {g.padding_mode}"
        lines = [
            f"config      {c.source}",
            f"input       {s.path}{array}",
            f"  shape     {s.source_shape}  dtype {s.dtype}  stored chunks {s.source_chunks}",
            f"  axes      {(self.input_axes or self.axes).describe(s.source_shape)}",
            f"            {g.frames} frame(s), {g.channels} channel(s) into the core, channels: {c.channels}",
            f"kernels     {kernels}  ({len(bank.names)} x {kernel_shape}, {bank.channels} channel(s))",
            f"stride      {sy} x {sx}   combine {g.combine}",
            f"padding     {padding}   dilation {dy} x {dx}",
            f"processing  chunks {_chunk_text(g.input_chunks)}  halo (0, {kh - 1}) x (0, {kw - 1})",
            f"output      {c.output.path}",
            f"  shape     {g.output_shape}  dtype {self.output_dtype}  dims {list(self.dimension_names)}",
            f"  axes      {_output_axes_text(self.output_axes)}",
            f"  chunks    {g.zarr_chunks}  codec {c.output.codec}  format {c.output.format}",
        ]
        if self.shards:
            lines.append(f"  shards    {self.shards}  ({shard_files(g, self.shards)} shard files)")
        if self.levels:
            bottom = level_shape(g.output_shape, self.levels)
            lines.append(f"  pyramid   {self.levels} level(s) below 0, down to {bottom}")
        memory, threads = self.task_memory(), local_cpus()
        in_flight = f"~{_mib(memory * threads)} in flight with {threads} thread(s)"
        lines += [
            f"tasks       {g.n_tasks}",
            f"memory      ~{_mib(memory)} per task, {in_flight}",
            f"scheduler   {c.compute.scheduler}",
        ]
        return "\n".join(lines)


def _output_axes_text(axes: tuple[OutputAxis, ...]) -> str:
    parts = []
    for a in axes:
        unit = f" {a.unit}" if a.unit else ""
        where = (
            f"scale {a.scale:g}{unit}, offset {a.translation:g}{unit}" if a.type == "space" else a.type or "?"
        )
        parts.append(f"{a.name} ({where})")
    return "  ".join(parts)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _chunk_text(chunks: tuple[tuple[int, ...], ...]) -> str:
    return "(" + ", ".join(str(c[0]) if len(set(c[:-1])) <= 1 else str(c) for c in chunks) + ")"


def plan(config: Config | str | Path | Mapping[str, Any]) -> Plan:
    """The plan of a config (a :class:`Config`, a YAML file or a mapping): what ``convpipe validate`` prints.

    Opens the input lazily and checks the config against it; writes nothing.
    Errors name the config file and the YAML line of the key concerned.
    """
    config = config if isinstance(config, Config) else load_config(config)
    try:
        with storage_errors():
            stack = open_input(config.input.path, config.input.array, config.input.storage_options)
    except StorageError:
        raise  # the storage refused: not a mistake in the config
    except ConvpipeError as exc:
        raise config.error(type(exc), exc.key or "input.path", str(exc)) from None
    try:
        source = stack.axes or unnamed(len(stack.shape))
        axes = resolve_axes(source, stack.shape, config.input.channel_axis, config.input.axes)
    except ConvpipeError as exc:
        raise config.error(type(exc), exc.key or "input.axes", str(exc)) from None
    bank, resolved = config.kernels, axes
    kernel_labels, batch_labels, weights = tuple(bank.names), {}, None
    if config.channels == "each":
        stack, axes, weights, kernel_labels, batch_labels = _each_channel(config, stack, axes)
    channel_axis = axes.channel_axis
    channels = 1 if channel_axis is None else stack.shape[channel_axis]
    if weights is None and bank.channels not in (1, channels):
        hint = (
            f"give [C][kh][kw] weights with C = {channels}"
            if channel_axis is not None
            else f"set input.channel_axis to the axis holding the {bank.channels} channels"
        )
        raise config.error(
            InputError,
            "kernels",
            f"the kernels have {bank.channels} channels but the input has {channels} "
            f"(shape {stack.shape}, input.channel_axis = {channel_axis}); {hint}",
        )
    weights = bank.for_channels(channels) if weights is None else weights
    dtype, problem = output_dtype(config.output.dtype, weights, stack.dtype, config.combine)
    if problem:
        raise config.error(InputError, "output.dtype", f"{dtype}: {problem}")
    (ay, ax) = axes.spatial_axes
    frame = (stack.shape[ay], stack.shape[ax])
    try:
        padding = frame_padding(
            config.padding, config.padding_mode, bank.kernel_shape, config.dilation, frame, config.stride
        )
    except InputError as exc:
        raise config.error(InputError, exc.key, str(exc)) from None
    geometry_of = functools.partial(
        plan_geometry,
        stack.shape,
        stack.stored_chunks,
        stack.dtype.itemsize,
        np.dtype(dtype).itemsize,
        channel_axis,
        bank.kernel_shape,
        len(weights),
        config.stride,
        config.combine,
        spatial_chunks=config.compute.chunks,
        task_bytes=config.compute.task_mib * 2**20,
        kernel_position=kernel_position(axes, axes.batch_axes),
        padding=padding,
        padding_mode=config.padding_mode,
        dilation=config.dilation,
    )
    geometry = geometry_of()
    try:
        levels = levels_for(config.output.pyramid, geometry.output_shape[-2:])
    except ValueError as exc:
        raise config.error(ConfigError, "output.pyramid", str(exc)) from None
    geometry = geometry_of(block_multiple=2**levels) if levels else geometry
    try:
        check_output_location(config.output.path, config.input.path, config.source)
    except ConvpipeError as exc:
        raise config.error(type(exc), "output.path", str(exc)) from None
    outputs = output_axes(axes, geometry, kernel_labels, batch_labels)
    shards = None
    if config.output.shards is not None:
        try:
            names = tuple(a.name for a in outputs)
            geometry, shards = shard_layout(geometry, config.output.shards, np.dtype(dtype).itemsize, names)
        except ValueError as exc:
            raise config.error(ConfigError, "output.shards", str(exc)) from None
    plan = Plan(
        config,
        stack,
        geometry,
        weights,
        axes,
        outputs,
        None if axes is resolved else resolved,
        output_dtype=dtype,
        shards=shards,
        levels=levels,
    )
    if config.compute.scheduler in ("threads", "processes", "synchronous"):
        threads = 1 if config.compute.scheduler == "synchronous" else local_cpus()
        problem = local_memory_problem(plan.task_memory(), threads)
        if problem and shards:  # a task writes whole shards: they set its size
            raise config.error(ConfigError, "output.shards", f"{problem}, or smaller output.shards")
        if problem:
            raise config.error(ConfigError, "compute.chunks", problem)
    warning = task_count_warning(geometry.n_tasks, plan.task_memory())
    return replace(plan, warnings=(warning,)) if warning else plan


def _each_channel(config: Config, stack: InputStack, axes: Axes):
    """``channels: each``: the stack, axes, weights and labels that correlate every channel on its own.

    With ``combine: none`` the channel axis stays and the bank becomes C x K
    depthwise kernels (``<channel>/<kernel>``); otherwise the channel axis
    becomes a batch axis, so each channel gets its own combined map.
    """
    bank, channel_axis = config.kernels, axes.channel_axis
    if channel_axis is None:
        raise config.error(InputError, "channels", "each: the input has no channel axis (see input.axes)")
    if bank.channels != 1:
        message = f"channels: each applies 2-D kernels to every channel; these have {bank.channels} channels"
        raise config.error(InputError, "kernels", message)
    channels = stack.shape[channel_axis]
    labels = axes.labels(channels)
    if config.combine == "none":
        names = tuple(f"{c}/{k}" for c in labels for k in bank.names)
        return stack, axes, depthwise_weights(bank.weights, channels), names, {}
    order, moved = moved_channel(axes)
    return (
        stack.transposed(order),
        moved,
        bank.for_channels(1),
        tuple(bank.names),
        {order.index(channel_axis): labels},
    )


def depthwise_weights(weights: np.ndarray, channels: int) -> np.ndarray:
    """``(K, 1, kh, kw)`` kernels -> ``(C*K, C, kh, kw)``: kernel ``k`` on channel ``c`` alone at ``c*K + k``.

    The core skips zero weights, so each response is exactly the 2-D
    correlation of one channel with one kernel.
    """
    k_count = weights.shape[0]
    out = np.zeros((channels * k_count, channels) + weights.shape[2:], dtype=weights.dtype)
    for c in range(channels):
        out[c * k_count : (c + 1) * k_count, c] = weights[:, 0]
    return out
