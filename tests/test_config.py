"""YAML config -> validated dataclasses: every user mistake gives one clear ConfigError.

Each bad case states the line the message must point at and the fragments it
must contain: the key, the expectation and, where useful, the offending value.
``BAD_CONFIGS`` is reused by ``test_cli.py`` to check the same cases end to end.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from convpipe.config import Config, load_config, parse_config
from convpipe.errors import ConfigError
from convpipe.kernels import BUILTIN_BANKS

REPO = Path(__file__).resolve().parents[1]
SOURCE = "bad.yaml"

VALID = """\
input:
  path: in.zarr
kernels: sobel
output:
  path: out.zarr
"""  # lines 1-5; cases below append from line 6


def custom(weights_block: str, extra: str = "") -> str:
    """A config with a custom bank; ``weights_block`` starts at line 4 (after ``kernels:``)."""
    return (
        "input:\n  path: in.zarr\nkernels:\n"
        + textwrap.dedent(weights_block)
        + extra
        + "output:\n  path: o.zarr\n"
    )


class Bad(NamedTuple):
    text: str
    line: int | None  # the YAML line the message must name, or None for whole-file problems
    fragments: tuple[str, ...]


STRIDE_MSG = "stride: must be a positive integer or [sy, sx]"
CHUNKS_MSG = "compute.chunks: must be null or [cy, cx] positive integers"

BAD_CONFIGS = {
    # --- YAML itself
    "yaml-bad-indent": Bad("input:\n  path: in.zarr\n bad: x\nkernels: sobel\n", 3, ("invalid YAML",)),
    "yaml-unclosed-bracket": Bad(
        "input:\n  path: in.zarr\nkernels: [sobel\noutput:\n  path: out.zarr\n", 4, ("invalid YAML", "']'")
    ),
    "yaml-tab": Bad("input:\n\tpath: in.zarr\n", 2, ("invalid YAML", "'\\t'")),
    "yaml-two-documents": Bad(VALID + "---\nstride: 2\n", 6, ("invalid YAML", "single document")),
    "empty-file": Bad("", None, ("the config is empty", "expected a mapping with input, kernels, output")),
    "only-comments": Bad("# nothing here\n", None, ("the config is empty", "expected a mapping")),
    "top-level-list": Bad(
        "- input\n- output\n", 1, ("must be a mapping with keys input, kernels", "['input'")
    ),
    "top-level-scalar": Bad("sobel\n", 1, ("must be a mapping with keys input, kernels", "'sobel'")),
    "duplicate-key-top": Bad(VALID + "stride: 1\nstride: 2\n", 7, ("stride: duplicate key",)),
    "duplicate-key-nested": Bad(
        "input:\n  path: a.zarr\n  path: b.zarr\nkernels: sobel\noutput:\n  path: o.zarr\n",
        3,
        ("input.path: duplicate key",),
    ),
    "non-scalar-key": Bad(VALID + "[stride]: 2\n", 6, ("keys must be plain names",)),
    "yaml-alias-bomb": Bad(
        "a: &a [x, x, x]\n"
        + "".join(f"{b}: &{b} [*{a}, *{a}, *{a}, *{a}]\n" for a, b in zip("abcdefghi", "bcdefghij")),
        2,
        ("invalid YAML", "aliases (*a) are not allowed"),
    ),
    "yaml-python-tag-scalar": Bad(
        "input:\n  path: !!python/name:os.system\nkernels: sobel\noutput:\n  path: o.zarr\n",
        2,
        ("input.path: unsupported YAML tag !!python/name:os.system",),
    ),
    "yaml-python-tag-mapping": Bad(
        VALID + "compute: !!python/object:os.system {scheduler: threads}\n",
        6,
        ("compute: unsupported YAML tag !!python/object:os.system",),
    ),
    "yaml-set-tag": Bad(VALID + "stride: !!set {2: null}\n", 6, ("stride: unsupported YAML tag !!set",)),
    # --- unknown keys (typos must not be ignored)
    "unknown-key-top": Bad(VALID + "strides: 2\n", 6, ("strides: unknown key", "expected one of", "stride")),
    "unknown-key-input": Bad(
        "input:\n  path: in.zarr\n  chanel_axis: 0\nkernels: sobel\noutput:\n  path: o.zarr\n",
        3,
        ("input.chanel_axis: unknown key", "channel_axis"),
    ),
    "unknown-key-output": Bad(VALID + "  overwrit: true\n", 6, ("output.overwrit: unknown key", "overwrite")),
    "unknown-key-compute": Bad(
        VALID + "compute:\n  schedular: threads\n", 7, ("compute.schedular: unknown key", "scheduler")
    ),
    "unknown-key-kernel": Bad(
        custom("  - name: k\n    weigths: [[1, 2]]\n"),
        5,
        ("kernels[0].weigths: unknown key", "name, weights"),
    ),
    # --- missing keys
    "missing-input": Bad("kernels: sobel\noutput:\n  path: o.zarr\n", 1, ("missing required key 'input'",)),
    "missing-kernels": Bad("input:\n  path: a\noutput:\n  path: o\n", 1, ("missing required key 'kernels'",)),
    "missing-output-path": Bad(
        "input:\n  path: a\nkernels: sobel\noutput:\n  dtype: float32\n",
        4,
        ("output: missing required key 'path'",),
    ),
    "missing-weights": Bad(custom("  - name: k\n"), 4, ("kernels[0]: missing key 'weights'", "[kh][kw]")),
    # --- wrong types
    "input-path-number": Bad(
        "input:\n  path: 3\nkernels: sobel\noutput:\n  path: o\n",
        2,
        ("input.path: must be a path or URL", "got 3"),
    ),
    "input-null": Bad(
        "input:\nkernels: sobel\noutput:\n  path: o\n", 1, ("input: must be a mapping", "path")
    ),
    "output-overwrite-string": Bad(
        VALID + "  overwrite: 'yes'\n", 6, ("output.overwrite: must be true or false", "'yes'")
    ),
    "output-overwrite-yaml11-yes": Bad(  # YAML 1.2: only true/false are booleans
        VALID + "  overwrite: yes\n", 6, ("output.overwrite: must be true or false", "'yes'")
    ),
    "channel-axis-float": Bad(
        "input:\n  path: a\n  channel_axis: 1.5\nkernels: sobel\noutput:\n  path: o\n",
        3,
        ("input.channel_axis: must be an integer axis or null", "1.5"),
    ),
    "channel-axis-bool": Bad(
        "input:\n  path: a\n  channel_axis: true\nkernels: sobel\noutput:\n  path: o\n",
        3,
        ("input.channel_axis: must be an integer axis", "True"),
    ),
    "output-dtype-int16": Bad(
        VALID + "  dtype: int16\n", 6, ("output.dtype: must be one of float32, float64", "'int16'")
    ),
    "output-codec": Bad(VALID + "  codec: lzma\n", 6, ("output.codec: must be one of blosc-lz4", "'lzma'")),
    "combine-max": Bad(VALID + "combine: max\n", 6, ("combine: must be one of none, magnitude", "'max'")),
    "compute-scheduler": Bad(
        VALID + "compute:\n  scheduler: gpu\n",
        7,
        ("compute.scheduler: must be one of threads", "tcp://", "'gpu'"),
    ),
    "compute-not-mapping": Bad(VALID + "compute: []\n", 6, ("compute: must be a mapping", "scheduler")),
    "compute-false": Bad(VALID + "compute: false\n", 6, ("compute: must be a mapping", "False")),
    "compute-workers-0": Bad(
        VALID + "compute:\n  workers: 0\n", 7, ("compute.workers: must be a positive", "0")
    ),
    "compute-connect-timeout-0": Bad(
        VALID + "compute:\n  connect_timeout: 0\n", 7, ("compute.connect_timeout: must be a positive number",)
    ),
    "compute-connect-timeout-inf": Bad(
        VALID + "compute:\n  connect_timeout: .inf\n", 7, ("compute.connect_timeout: must be a positive", "inf")
    ),
    "compute-connect-timeout-text": Bad(
        VALID + "compute:\n  connect_timeout: 10s\n", 7, ("compute.connect_timeout: must be a positive", "'10s'")
    ),
    "compute-retries-neg": Bad(
        VALID + "compute:\n  retries: -1\n", 7, ("compute.retries: must be a non-negative",)
    ),
    # --- stride
    "stride-0": Bad(VALID + "stride: 0\n", 6, (STRIDE_MSG, "got 0")),
    "stride-negative": Bad(VALID + "stride: -2\n", 6, (STRIDE_MSG, "got -2")),
    "stride-float": Bad(VALID + "stride: 1.5\n", 6, (STRIDE_MSG, "got 1.5")),
    "stride-string": Bad(VALID + 'stride: "2"\n', 6, (STRIDE_MSG, "got '2'")),
    "stride-one-item": Bad(VALID + "stride: [1]\n", 6, (STRIDE_MSG, "got [1]")),
    "stride-zero-item": Bad(VALID + "stride: [1, 0]\n", 6, (STRIDE_MSG, "got [1, 0]")),
    "stride-three-items": Bad(VALID + "stride: [1, 1, 1]\n", 6, (STRIDE_MSG, "got [1, 1, 1]")),
    "stride-bool": Bad(VALID + "stride: true\n", 6, (STRIDE_MSG, "got True")),
    "stride-bool-item": Bad(VALID + "stride: [true, 1]\n", 6, (STRIDE_MSG, "got [True, 1]")),
    # --- compute.chunks
    "chunks-zero": Bad(VALID + "compute:\n  chunks: [0, 4]\n", 7, (CHUNKS_MSG, "got [0, 4]")),
    "chunks-string": Bad(VALID + "compute:\n  chunks: auto\n", 7, (CHUNKS_MSG, "got 'auto'")),
    "chunks-one-item": Bad(VALID + "compute:\n  chunks: [64]\n", 7, (CHUNKS_MSG, "got [64]")),
    "chunks-float": Bad(VALID + "compute:\n  chunks: [64, 2.5]\n", 7, (CHUNKS_MSG, "got [64, 2.5]")),
    # --- kernel banks
    "bank-empty": Bad(
        "input:\n  path: a\nkernels: []\noutput:\n  path: o\n", 3, ("kernels: the kernel bank is empty",)
    ),
    "bank-unknown-name": Bad(
        "input:\n  path: a\nkernels: sobol\noutput:\n  path: o\n",
        3,
        ("kernels: unknown bank 'sobol'", "sobel, scharr, prewitt, roberts, laplacian"),
    ),
    "bank-not-list": Bad(
        "input:\n  path: a\nkernels: 3\noutput:\n  path: o\n",
        3,
        ("kernels: must be a built-in bank name or a list",),
    ),
    "weights-ragged": Bad(
        custom("  - name: k\n    weights:\n      - [1, 2]\n      - [3]\n"),
        7,
        ("kernels[0].weights[1]: ragged weights", "2-D [kh][kw] or 3-D [C][kh][kw]"),
    ),
    "weights-ragged-scalar": Bad(
        custom("  - name: k\n    weights: [[1, 2], 3]\n"), 5, ("kernels[0].weights[1]: ragged weights",)
    ),
    "weights-string": Bad(
        custom("  - name: k\n    weights: [[1, a]]\n"),
        5,
        ("kernels[0].weights[0][1]: weights must be numbers", "'a'"),
    ),
    "weights-null": Bad(
        custom("  - name: k\n    weights: [[1, null]]\n"),
        5,
        ("kernels[0].weights[0][1]: weights must be numbers", "None"),
    ),
    "weights-bool": Bad(
        custom("  - name: k\n    weights: [[true, 1]]\n"),
        5,
        ("kernels[0].weights[0][0]: weights must be numbers", "True"),
    ),
    "weights-nan": Bad(
        custom("  - name: k\n    weights: [[1, .nan]]\n"),
        5,
        ("kernels[0].weights[0][1]: weights must be finite", "nan"),
    ),
    "weights-inf": Bad(
        custom("  - name: k\n    weights: [[.inf, 1]]\n"),
        5,
        ("kernels[0].weights[0][0]: weights must be finite", "inf"),
    ),
    "weights-minus-inf": Bad(
        custom("  - name: k\n    weights: [[1, -.inf]]\n"),
        5,
        ("kernels[0].weights[0][1]: weights must be finite",),
    ),
    "weights-overflow-float": Bad(
        custom("  - name: k\n    weights: [[1e400, 1]]\n"),
        5,
        ("kernels[0].weights[0][0]: weights must be finite",),
    ),
    "weights-huge-int": Bad(
        custom("  - name: k\n    weights: [[1" + "0" * 400 + ", 1]]\n"),
        5,
        ("kernels[0].weights[0][0]: weights must be finite",),
    ),
    "weights-empty": Bad(custom("  - name: k\n    weights: []\n"), 5, ("kernels[0].weights: empty list",)),
    "weights-1d": Bad(
        custom("  - name: k\n    weights: [1, 2, 3]\n"),
        5,
        ("kernels[0].weights: has 1 dimensions", "2-D [kh][kw]"),
    ),
    "weights-4d": Bad(
        custom("  - name: k\n    weights: [[[[1, 2]]]]\n"),
        5,
        ("kernels[0].weights: has 4 dimensions", "3-D [C][kh][kw]"),
    ),
    "weights-mapping": Bad(
        custom("  - name: k\n    weights: {a: 1}\n"), 5, ("kernels[0].weights: weights must be numbers",)
    ),
    "kernels-different-shapes": Bad(
        custom("  - name: a\n    weights: [[1, 2], [3, 4]]\n  - name: b\n    weights: [[1, 2, 3]]\n"),
        7,
        ("kernels[1].weights: shape 1x3 differs from the first kernel's 2x2", "one shape"),
    ),
    "kernels-different-channels": Bad(
        custom("  - name: a\n    weights: [[1, 2]]\n  - name: b\n    weights: [[[1, 2]], [[3, 4]]]\n"),
        7,
        ("kernels[1].weights: shape 2x1x2 differs", "one shape"),
    ),
    "kernels-duplicate-names": Bad(
        custom("  - name: edge\n    weights: [[1]]\n  - name: edge\n    weights: [[2]]\n"),
        6,
        ("kernels[1].name: duplicate kernel name 'edge'",),
    ),
    "kernel-name-not-string": Bad(
        custom("  - name: [x]\n    weights: [[1]]\n"), 4, ("kernels[0].name: must be a non-empty string",)
    ),
    "kernel-entry-not-mapping": Bad(
        custom("  - [[1, 2]]\n"), 4, ("kernels[0]: must be a mapping", "name, weights")
    ),
}


def check_message(message: str, source: str, case: Bad) -> None:
    """The message names the file (and line), and holds every expected fragment."""
    prefix = f"{source}:{case.line}: " if case.line is not None else f"{source}: "
    assert message.startswith(prefix), f"{message!r} should start with {prefix!r}"
    for fragment in case.fragments:
        assert fragment in message, f"{fragment!r} missing from {message!r}"
    assert "\n" not in message


@pytest.mark.parametrize("case", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_parse_config_rejects(case: Bad) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(case.text, source=SOURCE)
    check_message(str(info.value), SOURCE, case)


@pytest.mark.parametrize("case", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_load_config_names_the_file(tmp_path: Path, case: Bad) -> None:
    path = tmp_path / "my config.yaml"
    path.write_text(case.text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    check_message(str(info.value), str(path), case)


# --------------------------------------------------------------------------- the file itself


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(
        ConfigError, match=re.escape(f"{path}: config file does not exist; expected a YAML file")
    ):
        load_config(path)


def test_config_path_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=re.escape(f"{tmp_path}: config file is a folder; expected a YAML file")
    ):
        load_config(tmp_path)


def test_config_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"input:\n  path: caf\xe9.zarr\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: cannot read the config")):
        load_config(path)


# --------------------------------------------------------------------------- what a valid config becomes


def test_defaults() -> None:
    config = parse_config(VALID, source="ok.yaml", base=Path("/data"))
    assert isinstance(config, Config)
    assert config.stride == (1, 1)
    assert config.combine == "none"
    assert config.output.dtype == "float32"
    assert config.output.codec == "blosc-lz4"
    assert config.output.format == "zarr3"
    assert config.output.overwrite is False
    assert config.compute.scheduler == "threads"
    assert config.compute.chunks is None
    assert config.compute.retries == 2
    assert config.input.array is None and config.input.channel_axis is None
    assert config.bank_name == "sobel"
    assert config.kernels is BUILTIN_BANKS["sobel"]
    assert config.source == "ok.yaml"


def test_compute_null_means_defaults() -> None:
    config = parse_config(VALID + "compute:\n", source="ok.yaml")
    assert config.compute.scheduler == "threads" and config.compute.chunks is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("stride: 2", (2, 2)), ("stride: [2, 3]", (2, 3)), ("stride: [3, 1]", (3, 1))],
    ids=["int", "pair", "pair-reversed"],
)
def test_stride(text: str, expected: tuple[int, int]) -> None:
    assert parse_config(VALID + text + "\n").stride == expected


def test_explicit_values_are_kept() -> None:
    text = VALID.replace("input:\n", "input:\n  array: 0\n  channel_axis: -1\n") + (
        "  overwrite: true\n  dtype: float64\n  codec: zstd\n  format: zarr2\n"
        "combine: magnitude\ncompute:\n  chunks: [64, 32]\n  scheduler: tcp://10.0.0.1:8786\n"
        "  workers: 2\n  threads_per_worker: 3\n  retries: 0\n  connect_timeout: 2.5\n"
    )
    config = parse_config(text)
    assert config.input.array == "0"
    assert config.input.channel_axis == -1
    assert (config.output.overwrite, config.output.dtype, config.output.codec, config.output.format) == (
        True,
        "float64",
        "zstd",
        "zarr2",
    )
    assert config.combine == "magnitude"
    assert config.compute.chunks == (64, 32)
    assert config.compute.scheduler == "tcp://10.0.0.1:8786"
    assert (config.compute.workers, config.compute.threads_per_worker, config.compute.retries) == (2, 3, 0)
    assert config.compute.connect_timeout == 2.5


def test_2d_weights_get_a_channel_axis() -> None:
    config = parse_config(
        custom(
            "  - name: a\n    weights: [[1, 2, 3], [4, 5, 6]]\n  - weights: [[0, 0, 0], [0, 1e-3, -2.5E+1]]\n"
        )
    )
    assert config.bank_name is None
    assert config.kernels.names == ("a", "kernel1")
    assert config.kernels.weights.shape == (2, 1, 2, 3)
    assert config.kernels.weights.dtype == np.float64
    np.testing.assert_array_equal(
        config.kernels.weights[:, 0], [[[1, 2, 3], [4, 5, 6]], [[0, 0, 0], [0, 0.001, -25.0]]]
    )


@pytest.mark.parametrize("name", ["no", "yes", "on", "off", "y", "n", "NO", "Off"])
def test_kernel_names_that_yaml_1_1_reads_as_booleans_stay_names(name: str) -> None:
    config = parse_config(custom(f"  - name: {name}\n    weights: [[1, 0], [0, -1]]\n"))
    assert config.kernels.names == (name,)


@pytest.mark.parametrize("text, value", [("true", True), ("True", True), ("FALSE", False), ("false", False)])
def test_yaml_booleans_are_true_and_false(text: str, value: bool) -> None:
    assert parse_config(VALID + f"  overwrite: {text}\n").output.overwrite is value


def test_3d_weights_keep_their_channels() -> None:
    config = parse_config(
        custom(
            "  - name: rgb\n    weights:\n      - [[1, 2], [3, 4]]\n      - [[5, 6], [7, 8]]\n      - [[9, 10], [11, 12]]\n"
        )
    )
    assert config.kernels.weights.shape == (1, 3, 2, 2)
    assert config.kernels.channels == 3
    np.testing.assert_array_equal(config.kernels.weights[0], np.arange(1, 13).reshape(3, 2, 2))


@pytest.mark.parametrize("name", list(BUILTIN_BANKS), ids=list(BUILTIN_BANKS))
def test_builtin_banks_by_name(name: str) -> None:
    config = parse_config(VALID.replace("sobel", name))
    assert config.bank_name == name
    assert config.kernels.names == BUILTIN_BANKS[name].names


# --------------------------------------------------------------------------- paths


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_config
) -> None:
    path = write_config(
        tmp_path / "project" / "configs",
        "input:\n  path: ../data/in.zarr\nkernels: sobel\noutput:\n  path: out/result.zarr\n",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(path)
    assert config.input.path == str((tmp_path / "project" / "data" / "in.zarr").resolve())
    assert config.output.path == str((tmp_path / "project" / "configs" / "out" / "result.zarr").resolve())


def test_relative_config_path_from_another_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_config
) -> None:
    write_config(tmp_path / "configs", "input:\n  path: in.zarr\nkernels: sobel\noutput:\n  path: o.zarr\n")
    monkeypatch.chdir(tmp_path)
    config = load_config("configs/config.yaml")
    assert config.input.path == str((tmp_path / "configs" / "in.zarr").resolve())
    assert config.source == "configs/config.yaml"


def test_absolute_and_home_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    text = f"input:\n  path: {tmp_path}/in.zarr\nkernels: sobel\noutput:\n  path: ~/out.zarr\n"
    config = parse_config(text, base=Path("/somewhere/else"))
    assert config.input.path == str((tmp_path / "in.zarr").resolve())
    assert config.output.path == str((tmp_path / "out.zarr").resolve())


@pytest.mark.parametrize(
    "url",
    ["s3://bucket/stacks/movie.zarr", "memory://x.zarr", "gs://b/a b.zarr"],
    ids=["s3", "memory", "space"],
)
def test_url_paths_are_kept_as_is(url: str) -> None:
    config = parse_config(
        f"input:\n  path: '{url}'\nkernels: sobel\noutput:\n  path: '{url}-out'\n", base=Path("/x")
    )
    assert config.input.path == url
    assert config.output.path == url + "-out"


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_shipped_configs_load(name: str) -> None:
    config = load_config(REPO / "configs" / name)
    assert Path(config.input.path).parent == (REPO / "data").resolve()
    assert Path(config.output.path).parent == (REPO / "out").resolve()


# --------------------------------------------------------------------------- properties


@given(sy=st.integers(1, 10**6), sx=st.integers(1, 10**6))
def test_any_positive_stride_pair_is_kept(sy: int, sx: int) -> None:
    assert parse_config(VALID + f"stride: [{sy}, {sx}]\n").stride == (sy, sx)


@given(bad=st.integers(max_value=0), position=st.sampled_from(["{b}", "[{b}, 1]", "[1, {b}]"]))
def test_any_non_positive_stride_is_refused_at_its_line(bad: int, position: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{SOURCE}:6: {STRIDE_MSG}")):
        parse_config(VALID + "stride: " + position.format(b=bad) + "\n", source=SOURCE)


@given(
    weights=st.lists(
        st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=3, max_size=3),
        min_size=2,
        max_size=2,
    )
)
def test_finite_weights_round_trip_exactly(weights: list[list[float]]) -> None:
    rows = ", ".join("[" + ", ".join(repr(v) for v in row) + "]" for row in weights)
    config = parse_config(custom(f"  - name: k\n    weights: [{rows}]\n"))
    np.testing.assert_array_equal(config.kernels.weights[0, 0], np.array(weights))
