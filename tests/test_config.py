"""YAML config -> validated dataclasses: every user mistake gives one clear ConfigError.

The bad cases (``cases.BAD_CONFIGS``) state the line the message must point at
and the fragments it must contain; ``test_cli.py`` checks the same cases end to end.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from cases import BAD_CONFIGS, STRIDE_MSG, VALID, Bad, custom
from helpers import check_message
from hypothesis import given
from hypothesis import strategies as st

import convpipe
from convpipe import BUILTIN_BANKS, Config, load_config
from convpipe.config import parse_config
from convpipe.errors import ConfigError
from convpipe.sample import write_sample

REPO = Path(__file__).resolve().parents[1]
SOURCE = "bad.yaml"


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


def test_task_mib_sets_the_task_size(tmp_path):
    """compute.task_mib is the planner's target: a smaller target cuts the same stack into more tasks."""
    write_sample(str(tmp_path / "in.zarr"), 8, 256, 256)
    plans = [
        convpipe.plan(
            {
                "input": {"path": str(tmp_path / "in.zarr")},
                "kernels": "sobel",
                "output": {"path": str(tmp_path / "out.zarr")},
                "compute": {"task_mib": mib},
            }
        )
        for mib in (1, 48)
    ]
    assert plans[0].geometry.n_tasks > plans[1].geometry.n_tasks
    assert plans[0].config.compute.task_mib == 1


@pytest.mark.parametrize("section", ["input", "output"])
@pytest.mark.parametrize("path", ["data/x.zarr", "file:///tmp/x.zarr"])
def test_storage_options_beside_a_local_path_are_refused_at_their_line(section: str, path: str) -> None:
    paths = {"input": "in.zarr", "output": "out.zarr", section: path}
    text = (
        f"input:\n  path: {paths['input']}\nkernels: sobel\noutput:\n  path: {paths['output']}\n"
        .replace(f"path: {path}\n", f"path: {path}\n  storage_options:\n    anon: true\n")
    )
    with pytest.raises(ConfigError) as error:
        parse_config(text, source="c.yaml")
    line = 3 if section == "input" else 6
    assert str(error.value).startswith(f"c.yaml:{line}: {section}.storage_options: applies to URLs only")


def test_storage_options_beside_a_url_are_kept() -> None:
    config = parse_config(
        "input:\n  path: s3://b/in.zarr\n  storage_options: {anon: true}\nkernels: sobel\noutput:\n  path: out.zarr\n"
    )
    assert config.input.storage_options == {"anon": True}


def test_a_mapping_config_takes_numpy_numbers_tuples_and_arrays_as_plain_values() -> None:
    plain = {
        "input": {"path": "in.zarr", "channel_axis": 0},
        "kernels": [{"name": "d", "weights": [[1, 0], [0, -1]]}],
        "stride": [2, 3],
        "dilation": [1, 2],
        "output": {"path": "out.zarr", "format": "zarr3", "shards": [4, 64, 64]},
        "compute": {"task_mib": 8, "retries": 1, "connect_timeout": 5, "chunks": [64, 64]},
    }
    numpy_flavoured = {
        "input": {"path": "in.zarr", "channel_axis": np.int64(0)},
        "kernels": [{"name": "d", "weights": np.array([[1, 0], [0, -1]], dtype=np.int16)}],
        "stride": (np.int32(2), 3),
        "dilation": (1, np.uint8(2)),
        "output": {"path": "out.zarr", "format": "zarr3", "shards": (4, np.int64(64), 64)},
        "compute": {
            "task_mib": np.int64(8), "retries": np.int8(1), "connect_timeout": np.float32(5), "chunks": (64, 64)
        },
    }
    expected, got = load_config(plain), load_config(numpy_flavoured)
    assert (got.input, got.output, got.compute) == (expected.input, expected.output, expected.compute)
    np.testing.assert_array_equal(got.kernels.weights, expected.kernels.weights)
    assert got.to_dict() == expected.to_dict()
    assert all(type(v) is int for v in (*got.stride, *got.dilation, got.input.channel_axis, got.compute.retries))


@pytest.mark.parametrize("value", [True, np.bool_(True), np.float64(2.0)])
def test_a_mapping_config_refuses_bools_and_floats_as_strides(value) -> None:
    with pytest.raises(ConfigError, match="stride: must be a positive integer"):
        load_config({"input": {"path": "in.zarr"}, "kernels": "sobel", "output": {"path": "o.zarr"}, "stride": value})
