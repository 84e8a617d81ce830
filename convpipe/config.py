"""YAML config -> frozen, validated dataclasses.

Everything a run needs is checked here, once; past :func:`load_config`
nothing re-checks the config. Errors are :class:`~convpipe.errors.ConfigError`
with one line that names the file, the YAML line, the key and what is
expected, e.g. ``configs/x.yaml:7: stride: must be a positive integer or
[sy, sx], got 0``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from convpipe.codecs import CODEC_PIPELINES, CODEC_SETTINGS
from convpipe.errors import ConfigError, ConvpipeError
from convpipe.geometry import COMBINES, DEFAULT_TASK_BYTES, Combine
from convpipe.kernels import BUILTIN_BANKS, KernelBank
from convpipe.outtypes import OUTPUT_DTYPES
from convpipe.padding import Padding, PaddingMode, parse_dilation, parse_padding, parse_padding_mode
from convpipe.paths import local_path, parse_storage_options
from convpipe.pyramid import parse_pyramid
from convpipe.shards import parse_shards
from convpipe.yamldoc import YamlDoc, is_int, is_number, parse_yaml, show, where

SCHEDULERS = ("threads", "processes", "synchronous", "local")
CHANNELS = ("sum", "each")
CODECS = (*CODEC_SETTINGS, "none")
OUTPUT_FORMATS = ("zarr3", "zarr2")


@dataclass(frozen=True)
class InputSpec:
    """Where the input stack lives and how its axes are read."""

    path: str
    array: str | None = None
    channel_axis: int | None = None
    axes: str | None = None
    storage_options: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """fsspec options for a URL path (endpoint, credentials); never written into the output."""


@dataclass(frozen=True)
class OutputSpec:
    """Where and how the result is written."""

    path: str
    overwrite: bool = False
    dtype: str = "float32"
    codec: str = "blosc-lz4"
    format: str = "zarr3"
    storage_options: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """fsspec options for a URL path (endpoint, credentials); never written into the output."""
    shards: tuple[int, ...] | str | None = None
    """Zarr v3 shard shape (one length per output axis), ``"auto"``, or None: no shards (see :mod:`convpipe.shards`)."""
    pyramid: int | str = 0
    """Levels below level 0 (each a 2 x 2 mean of the one below), or ``"auto"``; see :mod:`convpipe.pyramid`."""


@dataclass(frozen=True)
class ComputeSpec:
    """How the work is cut into tasks and where they run."""

    chunks: tuple[int, int] | None = None
    scheduler: str = "threads"
    workers: int | None = None
    threads_per_worker: int | None = None
    retries: int = 2
    connect_timeout: float = 10.0
    task_mib: int = DEFAULT_TASK_BYTES // 2**20
    codec_pipeline: str = "auto"
    """``auto`` | ``zarrs`` | ``zarr``: see :func:`convpipe.codecs.with_codec_pipeline`."""


@dataclass(frozen=True)
class Config:
    """A fully validated run description."""

    input: InputSpec
    kernels: KernelBank
    bank_name: str | None
    stride: tuple[int, int]
    combine: Combine
    output: OutputSpec
    compute: ComputeSpec = field(default_factory=ComputeSpec)
    channels: str = "sum"
    """``sum``: input channels summed (CNN rule); ``each``: every kernel on every channel separately."""
    padding: Padding = "valid"
    padding_mode: PaddingMode = "zeros"
    dilation: tuple[int, int] = (1, 1)
    source: str = "<config>"
    key_lines: dict[tuple, int] = field(default_factory=dict, compare=False, repr=False)
    """YAML line of each key (``("input", "channel_axis")`` -> 4), for later error messages."""

    def error(self, kind: type[ConvpipeError], key: str, message: str) -> ConvpipeError:
        """A ``kind`` error about the dotted ``key``, its text led by the file, the YAML line and the key."""
        return kind(f"{where(self.source, self.key_lines, tuple(key.split('.')))}: {key}: {message}", key=key)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain JSON-able data (for output attributes)."""
        return {
            "input": _without_storage_options(asdict(self.input)),
            "kernels": self.bank_name if self.bank_name else self.kernels.describe(),
            "stride": list(self.stride),
            "combine": self.combine,
            "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
            "padding_mode": self.padding_mode,
            "dilation": list(self.dilation),
            "output": _without_storage_options(asdict(self.output)),
            "compute": asdict(self.compute),
            "channels": self.channels,
        }


def _without_storage_options(spec: dict[str, Any]) -> dict[str, Any]:
    """A spec as recorded in the output: storage options may hold credentials, and do not change the result."""
    spec.pop("storage_options", None)
    return spec


# --------------------------------------------------------------------------- value checks


def _path(doc: YamlDoc, value: Any, key: tuple, base: Path | None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise doc.error(key, f"must be a path or URL string, got {show(value)}")
    return resolve_path(value, base)


def _parsed(doc: YamlDoc, parse: Callable[[Any], Any], value: Any, key: tuple) -> Any:
    """``parse(value)``, its ``ValueError`` (a message without the key) turned into an error naming ``key``."""
    try:
        return parse(value)
    except ValueError as exc:
        raise doc.error(key, str(exc)) from None


def _storage_options(doc: YamlDoc, section: dict[str, Any], name: str) -> dict[str, Any]:
    """``<name>.storage_options``: fsspec options, refused beside a local path (they would be ignored)."""
    options = _parsed(doc, parse_storage_options, section.get("storage_options") or {}, (name, "storage_options"))
    if options and local_path(section["path"]) is not None:
        raise doc.error((name, "storage_options"), f"applies to URLs only (s3://...), but {name}.path is a local path")
    return options


def resolve_path(value: str, base: Path | None) -> str:
    """Resolve ``value`` against ``base`` unless it is absolute or a URL."""
    if "://" in value:
        return value
    path = Path(value).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    return str(Path(path).resolve())


# --------------------------------------------------------------------------- kernels


def parse_kernels(doc: YamlDoc, value: Any) -> tuple[KernelBank, str | None]:
    """A built-in bank name, or a list of ``{name, weights}`` -> a :class:`KernelBank`."""
    key = ("kernels",)
    if isinstance(value, str):
        if value not in BUILTIN_BANKS:
            raise doc.error(key, f"unknown bank {value!r}; built-in banks: {', '.join(BUILTIN_BANKS)}")
        return BUILTIN_BANKS[value], value
    if not isinstance(value, list):
        raise doc.error(
            key, f"must be a built-in bank name or a list of {{name, weights}}, got {show(value)}"
        )
    if not value:
        raise doc.error(key, "the kernel bank is empty; give at least one {name, weights}")
    names: list[str] = []
    arrays: list[np.ndarray] = []
    for i, item in enumerate(value):
        item_key = key + (i,)
        entry = doc.mapping(item, item_key, ("name", "weights"))
        if "weights" not in entry:
            raise doc.error(item_key, "missing key 'weights' (a 2-D [kh][kw] or 3-D [C][kh][kw] list)")
        name = entry.get("name", f"kernel{i}")
        if not isinstance(name, str) or not name:
            raise doc.error(item_key + ("name",), f"must be a non-empty string, got {show(name)}")
        if name in names:
            raise doc.error(item_key + ("name",), f"duplicate kernel name {name!r}")
        weights = _weights(doc, entry["weights"], item_key + ("weights",))
        if arrays and weights.shape != arrays[0].shape:
            raise doc.error(
                item_key + ("weights",),
                f"shape {_shape_text(weights)} differs from the first kernel's {_shape_text(arrays[0])}; "
                "all kernels of a bank must have one shape",
            )
        names.append(name)
        arrays.append(weights)
    return KernelBank(tuple(names), np.stack(arrays)), None


def _shape_text(weights: np.ndarray) -> str:
    return "x".join(map(str, weights.shape[1:] if weights.shape[0] == 1 else weights.shape))


def _weights(doc: YamlDoc, value: Any, key: tuple) -> np.ndarray:
    """Nested lists of numbers -> float64 array of shape (C, kh, kw)."""
    expected = "a non-empty 2-D [kh][kw] or 3-D [C][kh][kw] list of numbers"

    def shape_of(v: Any, path: tuple) -> tuple[int, ...]:
        if isinstance(v, np.ndarray):  # weights given as an array in a mapping config
            v = v.tolist()
        if isinstance(v, list):
            if not v:
                raise doc.error(path, f"empty list; expected {expected}")
            shapes = [shape_of(item, path + (j,)) for j, item in enumerate(v)]
            for j, s in enumerate(shapes):
                if s != shapes[0]:
                    raise doc.error(path + (j,), f"ragged weights (row lengths differ); expected {expected}")
            return (len(v),) + shapes[0]
        if is_number(v):
            if abs(v) > sys.float_info.max or not math.isfinite(v):
                raise doc.error(path, f"weights must be finite numbers, got {show(v)}")
            return ()
        raise doc.error(path, f"weights must be numbers, got {show(v)}")

    shape = shape_of(value, key)
    if len(shape) not in (2, 3):
        raise doc.error(key, f"has {len(shape)} dimensions; expected {expected}")
    array = np.asarray(value, dtype=np.float64)
    return array if array.ndim == 3 else array[None]


# --------------------------------------------------------------------------- the config


TOP_KEYS = (
    "input", "kernels", "stride", "combine", "padding", "padding_mode", "dilation", "channels", "output", "compute",
)
INPUT_KEYS, OUTPUT_KEYS, COMPUTE_KEYS = (
    tuple(f.name for f in fields(spec)) for spec in (InputSpec, OutputSpec, ComputeSpec)
)


def load_config(config: str | Path | Mapping[str, Any]) -> Config:
    """Read and validate a YAML config file, or a mapping with the same keys.

    A mapping holds what the YAML file would (plain values, lists for
    weights); its relative paths resolve against the current folder, and
    its errors name the key under the source ``<mapping>``.

    Examples
    --------
    >>> config = load_config({"input": {"path": "in.zarr"}, "kernels": "sobel", "output": {"path": "out.zarr"}})
    >>> config.kernels.names, config.stride
    (('sobel-x', 'sobel-y'), (1, 1))
    """
    if isinstance(config, Mapping):
        return _config_from(dict(config), YamlDoc("<mapping>"), "<mapping>", Path.cwd())
    path = Path(config)
    source = str(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise ConfigError(f"{source}: config file {what}; expected a YAML file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read the config: {exc}") from None
    return parse_config(text, source=source, base=path.resolve().parent)


def parse_config(text: str, source: str = "<config>", base: Path | None = None) -> Config:
    """Validate config ``text``; relative paths resolve against ``base``."""
    raw, doc = parse_yaml(text, source)
    return _config_from(raw, doc, source, base)


def _config_from(raw: Any, doc: YamlDoc, source: str, base: Path | None) -> Config:
    top = doc.mapping(raw, (), TOP_KEYS)
    for required in ("input", "kernels", "output"):
        if required not in top:
            raise doc.error((), f"missing required key {required!r}")

    raw_input = doc.mapping(top["input"], ("input",), INPUT_KEYS)
    if "path" not in raw_input:
        raise doc.error(("input",), "missing required key 'path'")
    array = raw_input.get("array")
    if is_int(array) and array >= 0:
        array = str(array)  # `array: 0` names the OME-Zarr level "0"
    if array is not None and (not isinstance(array, str) or not array):
        raise doc.error(("input", "array"), f"must be an array path inside the group, got {show(array)}")
    channel_axis = raw_input.get("channel_axis")
    if channel_axis is not None and not is_int(channel_axis):
        raise doc.error(("input", "channel_axis"), f"must be an integer axis or null, got {show(channel_axis)}")
    axes = raw_input.get("axes")
    if axes is not None and (not isinstance(axes, str) or not axes.isalpha() or len(set(axes)) != len(axes)):
        raise doc.error(("input", "axes"), f"must be distinct axis letters such as 'tyx' or 'zyx', got {show(axes)}")
    input_spec = InputSpec(
        path=_path(doc, raw_input["path"], ("input", "path"), base),
        array=array,
        channel_axis=None if channel_axis is None else int(channel_axis),
        axes=axes.lower() if axes else None,
        storage_options=_storage_options(doc, raw_input, "input"),
    )

    bank, bank_name = parse_kernels(doc, top["kernels"])
    stride = doc.pair(top.get("stride", 1), ("stride",), "a positive integer or [sy, sx]")
    combine = doc.choice(top.get("combine", "none"), ("combine",), COMBINES)
    if combine == "direction" and len(bank.names) != 2:
        raise doc.error(("combine",), f"direction needs a bank of exactly two kernels, got {len(bank.names)}")
    parsers = {"padding": parse_padding, "padding_mode": parse_padding_mode, "dilation": parse_dilation}
    geometry_keys = {name: _parsed(doc, parse, top[name], (name,)) for name, parse in parsers.items() if name in top}

    raw_output = doc.mapping(top["output"], ("output",), OUTPUT_KEYS)
    if "path" not in raw_output:
        raise doc.error(("output",), "missing required key 'path'")
    output_format = doc.choice(raw_output.get("format", OutputSpec.format), ("output", "format"), OUTPUT_FORMATS)
    output_spec = OutputSpec(
        path=_path(doc, raw_output["path"], ("output", "path"), base),
        overwrite=doc.boolean(raw_output.get("overwrite", OutputSpec.overwrite), ("output", "overwrite")),
        dtype=doc.choice(raw_output.get("dtype", OutputSpec.dtype), ("output", "dtype"), OUTPUT_DTYPES),
        codec=doc.choice(raw_output.get("codec", OutputSpec.codec), ("output", "codec"), CODECS),
        format=output_format,
        storage_options=_storage_options(doc, raw_output, "output"),
        shards=_parsed(doc, lambda v: parse_shards(v, output_format), raw_output.get("shards"), ("output", "shards")),
        pyramid=_parsed(doc, parse_pyramid, raw_output.get("pyramid", OutputSpec.pyramid), ("output", "pyramid")),
    )

    raw_compute = top.get("compute")
    raw_compute = doc.mapping({} if raw_compute is None else raw_compute, ("compute",), COMPUTE_KEYS)
    chunks = raw_compute.get("chunks")
    if chunks is not None:
        chunks = doc.pair(chunks, ("compute", "chunks"), "null or [cy, cx] positive integers")
    scheduler = raw_compute.get("scheduler", ComputeSpec.scheduler)
    if not is_scheduler(scheduler):
        raise doc.error(
            ("compute", "scheduler"),
            f"must be one of {', '.join(SCHEDULERS)} or a scheduler address tcp://HOST:PORT, "
            f"got {show(scheduler)}",
        )
    optional_ints = {}
    for name in ("workers", "threads_per_worker", "task_mib"):
        if raw_compute.get(name) is not None:
            optional_ints[name] = doc.positive_int(raw_compute[name], ("compute", name))
    retries = raw_compute.get("retries", ComputeSpec.retries)
    if not is_int(retries) or retries < 0:
        raise doc.error(("compute", "retries"), f"must be a non-negative integer, got {show(retries)}")
    connect_timeout = raw_compute.get("connect_timeout", ComputeSpec.connect_timeout)
    if not is_number(connect_timeout) or not 0 < connect_timeout < math.inf:
        raise doc.error(
            ("compute", "connect_timeout"), f"must be a positive number of seconds, got {show(connect_timeout)}"
        )
    codec_pipeline = raw_compute.get("codec_pipeline", ComputeSpec.codec_pipeline)
    codec_pipeline = doc.choice(codec_pipeline, ("compute", "codec_pipeline"), CODEC_PIPELINES)
    compute_spec = ComputeSpec(
        chunks=chunks, scheduler=scheduler, retries=int(retries), connect_timeout=float(connect_timeout),
        codec_pipeline=codec_pipeline, **optional_ints,
    )

    return Config(
        input=input_spec,
        kernels=bank,
        bank_name=bank_name,
        stride=stride,
        combine=combine,
        output=output_spec,
        compute=compute_spec,
        channels=doc.choice(top.get("channels", Config.channels), ("channels",), CHANNELS),
        **geometry_keys,  # padding, padding_mode, dilation
        source=source,
        key_lines={key: line for key, line in doc.lines.items() if key},  # a key not written: the file alone
    )


def is_scheduler(value: Any) -> bool:
    """Whether ``value`` names a scheduler: one of :data:`SCHEDULERS` or an address such as ``tcp://HOST:PORT``."""
    return isinstance(value, str) and (value in SCHEDULERS or "://" in value)


def with_scheduler(config: Config, scheduler: str) -> Config:
    """``config`` with ``compute.scheduler`` replaced (the ``--scheduler`` option), checked as in the file."""
    if not is_scheduler(scheduler):
        raise ConfigError(
            f"--scheduler: expected one of {', '.join(SCHEDULERS)} or tcp://HOST:PORT, got {scheduler!r}",
            key="--scheduler",
        )
    return replace(config, compute=replace(config.compute, scheduler=scheduler))
