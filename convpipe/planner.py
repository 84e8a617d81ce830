"""Planning a run: validate everything against the input, write nothing.

:func:`make_plan` opens the input lazily, resolves its axes and checks the
config against it; the resulting :class:`Plan` is what ``convpipe validate``
prints (``str(plan)``) and what :func:`convpipe.runner.execute` runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convpipe.config import Config, load_config
from convpipe.errors import ConfigError, ConvpipeError, InputError, StorageError, storage_errors
from convpipe.geometry import StackGeometry, plan_geometry
from convpipe.inputs import InputStack, open_input
from convpipe.metadata import input_axis_names, kernel_axis_position, output_axis_names
from convpipe.outputs import check_output_location
from convpipe.padding import frame_padding


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
        responses = out_block * (1 if g.has_kernel_axis else g.n_kernels)
        return block_pixels * g.channels * self.stack.dtype.itemsize * 2 + responses + out_block

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
            "dtype": c.output.dtype,
            "input": self.stack.identity(),
            "output": {
                "shape": list(g.output_shape),
                "chunks": list(g.zarr_chunks),
                "format": c.output.format,
                "codec": c.output.codec,
            },
        }

    def __str__(self) -> str:
        """The plan as ``convpipe validate`` prints it."""
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
                f"kernels     {bank}: {', '.join(c.kernels.names)}  ({len(c.kernels.names)} x"
                f" {c.kernels.kernel_shape[0]}x{c.kernels.kernel_shape[1]},"
                f" {c.kernels.channels} channel(s))"
            ),
            f"stride      {g.stride[0]} x {g.stride[1]}   combine {g.combine}",
            (
                f"padding     {c.padding if isinstance(c.padding, str) else 'explicit'}:"
                f" top, bottom, left, right {g.padding}  mode {g.padding_mode}"
                f"   dilation {g.dilation[0]} x {g.dilation[1]}"
            ),
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
    from convpipe.execution import local_threads  # imports Dask: only when a plan is printed

    return local_threads()


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _chunk_text(chunks: tuple[tuple[int, ...], ...]) -> str:
    return "(" + ", ".join(str(c[0]) if len(set(c[:-1])) <= 1 else str(c) for c in chunks) + ")"


def plan(config: Config | str | Path | Mapping[str, Any]) -> Plan:
    """The plan of a config (a :class:`Config`, a YAML file or a mapping): what ``convpipe validate`` prints.

    Opens the input lazily and checks the config against it; writes nothing.
    """
    return make_plan(config if isinstance(config, Config) else load_config(config))


def make_plan(config: Config) -> Plan:
    """Open the input and check the config against it; nothing is written.

    Errors name the config file and the YAML line of the key concerned.
    """
    try:
        with storage_errors():
            stack = open_input(config.input.path, config.input.array)
    except StorageError:
        raise  # the storage refused: not a mistake in the config
    except ConvpipeError as exc:
        raise config.error(type(exc), exc.key or "input.path", str(exc)) from None
    ndim = len(stack.shape)
    channel_axis = channel_axis_of(config, ndim)
    names = input_axis_names(ndim, channel_axis, config.input.axes)
    others = [a for a in range(ndim) if a != channel_axis]
    if len(others) < 2:
        raise config.error(
            InputError,
            "input.channel_axis",
            f"the input {stack.shape} has no two spatial axes besides the channel axis",
        )
    channels = 1 if channel_axis is None else stack.shape[channel_axis]
    bank = config.kernels
    if bank.channels not in (1, channels):
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
    frame = (stack.shape[others[-2]], stack.shape[others[-1]])
    try:
        padding = frame_padding(
            config.padding, config.padding_mode, bank.kernel_shape, config.dilation, frame, config.stride
        )
    except InputError as exc:
        raise config.error(InputError, exc.key, str(exc)) from None
    geometry = plan_geometry(
        stack.shape,
        stack.stored_chunks,
        stack.dtype.itemsize,
        np.dtype(config.output.dtype).itemsize,
        channel_axis,
        bank.kernel_shape,
        len(bank.names),
        config.stride,
        config.combine,
        spatial_chunks=config.compute.chunks,
        kernel_position=kernel_axis_position(tuple(names[a] for a in others[:-2])),
        padding=padding,
        padding_mode=config.padding_mode,
        dilation=config.dilation,
    )
    try:
        check_output_location(config.output.path, config.input.path, config.source)
    except ConvpipeError as exc:
        raise config.error(type(exc), "output.path", str(exc)) from None
    weights = bank.for_channels(channels)
    return Plan(config, stack, geometry, weights, output_axis_names(geometry, names))


def channel_axis_of(config: Config, ndim: int) -> int | None:
    """The input's channel axis (normalised), from ``input.channel_axis`` or the ``c`` of ``input.axes``."""
    axis = config.input.channel_axis
    axes = config.input.axes
    if axes is not None and len(axes) != ndim:
        message = f"{axes!r} names {len(axes)} axes but the input has {ndim}"
        raise config.error(ConfigError, "input.axes", message)
    if axis is None:
        return axes.index("c") if axes and "c" in axes else None
    if not -ndim <= axis < ndim:
        raise config.error(
            ConfigError,
            "input.channel_axis",
            f"{axis} is out of range for a {ndim}-D input (valid: {-ndim}..{ndim - 1})",
        )
    axis %= ndim
    if axes is not None and axes[axis] != "c":
        raise config.error(ConfigError, "input.axes", f"{axes!r} must have 'c' at the channel axis {axis}")
    return axis
