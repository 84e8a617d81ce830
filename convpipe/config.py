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
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
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
from convpipe.yamldoc import YamlDoc, boolean, choice, is_int, is_number, pair, parse_yaml, show, where

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
    """Zarr v3 shard shape (one length per output axis), ``"auto"``, or None: no shards."""
    pyramid: int | str = 0
    """Levels below level 0 (each a 2 x 2 mean of the one below), or ``"auto"``."""


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
            "kernels": self.bank_name or self.kernels.describe(),
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
    """A spec as the output records it: storage options may hold credentials, and do not change the result."""
    spec.pop("storage_options", None)
    return spec


# --------------------------------------------------------------------------- values
# Each parser checks one value and returns it as the spec holds it (None: the default), or raises a
# ValueError whose message the caller leads with the file, the line and the key (see YamlDoc.parsed).


def _chunks(value: Any) -> tuple[int, int] | None:
    return None if value is None else pair("null or [cy, cx] positive integers", value)


def _positive_int(value: Any) -> int | None:
    if value is not None and (not is_int(value) or value < 1):
        raise ValueError(f"must be a positive integer, got {show(value)}")
    return None if value is None else int(value)


def _retries(value: Any) -> int:
    if not is_int(value) or value < 0:
        raise ValueError(f"must be a non-negative integer, got {show(value)}")
    return int(value)


def _seconds(value: Any) -> float:
    if not is_number(value) or not 0 < value < math.inf:
        raise ValueError(f"must be a positive number of seconds, got {show(value)}")
    return float(value)


def _scheduler(value: Any) -> str:
    if not is_scheduler(value):
        expected = f"one of {', '.join(SCHEDULERS)} or a scheduler address tcp://HOST:PORT"
        raise ValueError(f"must be {expected}, got {show(value)}")
    return value


def _array(value: Any) -> str | None:
    if is_int(value) and value >= 0:
        return str(value)  # `array: 0` names the OME-Zarr level "0"
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"must be an array path inside the group, got {show(value)}")
    return value


def _channel_axis(value: Any) -> int | None:
    if value is not None and not is_int(value):
        raise ValueError(f"must be an integer axis or null, got {show(value)}")
    return None if value is None else int(value)


def _axes(value: Any) -> str | None:
    letters = isinstance(value, str) and value.isalpha() and len(set(value)) == len(value)
    if value is not None and not letters:
        raise ValueError(f"must be distinct axis letters such as 'tyx' or 'zyx', got {show(value)}")
    return value.lower() if value else None


def _path(base: Path | None, value: Any) -> str:
    """A URL as it is, a local path resolved against ``base`` (the config's folder) unless absolute."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a path or URL string, got {show(value)}")
    if "://" in value:
        return value
    path = Path(value).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    return str(path.resolve())


def _storage_options(path: str, section: str, value: Any) -> dict[str, Any]:
    """fsspec options, refused beside a local ``path`` (they would be ignored)."""
    options = parse_storage_options(value or {})
    if options and local_path(path) is not None:
        raise ValueError(f"applies to URLs only (s3://...), but {section}.path is a local path")
    return options


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


SETTING_PARSERS = {
    "stride": partial(pair, "a positive integer or [sy, sx]"),
    "combine": partial(choice, COMBINES),
    "padding": parse_padding,
    "padding_mode": parse_padding_mode,
    "dilation": parse_dilation,
    "channels": partial(choice, CHANNELS),
}
COMPUTE_PARSERS = {
    "chunks": _chunks,
    "scheduler": _scheduler,
    "workers": _positive_int,
    "threads_per_worker": _positive_int,
    "task_mib": _positive_int,
    "retries": _retries,
    "connect_timeout": _seconds,
    "codec_pipeline": partial(choice, CODEC_PIPELINES),
}
TOP_KEYS = ("input", "kernels", *SETTING_PARSERS, "output", "compute")
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
    >>> config = load_config({"input": {"path": "in.zarr"}, "kernels": "sobel", "output": {"path": "o.zarr"}})
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
    top = doc.mapping(raw, (), TOP_KEYS, required=("input", "kernels", "output"))
    raw_input = doc.mapping(top["input"], ("input",), INPUT_KEYS, required=("path",))
    input_parsers = {
        "array": _array,
        "channel_axis": _channel_axis,
        "axes": _axes,
        "path": partial(_path, base),
        "storage_options": partial(_storage_options, raw_input["path"], "input"),
    }
    input_spec = InputSpec(**doc.parsed(raw_input, input_parsers, ("input",)))

    bank, bank_name = parse_kernels(doc, top["kernels"])
    # Config has no default for stride and combine: given here as they would be written.
    settings = doc.parsed({"stride": 1, "combine": "none", **top}, SETTING_PARSERS)
    if settings["combine"] == "direction" and len(bank.names) != 2:
        raise doc.error(("combine",), f"direction needs a bank of exactly two kernels, got {len(bank.names)}")

    raw_output = doc.mapping(top["output"], ("output",), OUTPUT_KEYS, required=("path",))
    output_format = raw_output.get("format", OutputSpec.format)  # checked before the shards
    output_parsers = {
        "format": partial(choice, OUTPUT_FORMATS),
        "path": partial(_path, base),
        "overwrite": boolean,
        "dtype": partial(choice, OUTPUT_DTYPES),
        "codec": partial(choice, CODECS),
        "storage_options": partial(_storage_options, raw_output["path"], "output"),
        "shards": lambda value: parse_shards(value, output_format),
        "pyramid": parse_pyramid,
    }
    output_spec = OutputSpec(**doc.parsed(raw_output, output_parsers, ("output",)))

    raw_compute = {} if top.get("compute") is None else top["compute"]
    raw_compute = doc.mapping(raw_compute, ("compute",), COMPUTE_KEYS)
    compute_spec = ComputeSpec(**doc.parsed(raw_compute, COMPUTE_PARSERS, ("compute",)))

    return Config(
        input=input_spec,
        kernels=bank,
        bank_name=bank_name,
        output=output_spec,
        compute=compute_spec,
        **settings,
        source=source,
        key_lines={key: line for key, line in doc.lines.items() if key},  # not the root: its line is no key's
    )


def is_scheduler(value: Any) -> bool:
    """Whether ``value`` names a scheduler: one of :data:`SCHEDULERS` or an address (``tcp://HOST:PORT``)."""
    return isinstance(value, str) and (value in SCHEDULERS or "://" in value)


def with_scheduler(config: Config, scheduler: str) -> Config:
    """``config`` with ``compute.scheduler`` replaced (the ``--scheduler`` option), checked as in the file."""
    if not is_scheduler(scheduler):
        expected = f"one of {', '.join(SCHEDULERS)} or tcp://HOST:PORT"
        raise ConfigError.about("--scheduler", f"expected {expected}, got {scheduler!r}")
    return replace(config, compute=replace(config.compute, scheduler=scheduler))
