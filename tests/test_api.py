"""The public verbs: ``load_config``, ``plan``, ``run`` and ``open_output`` do what the commands do."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import CONVPIPE

import convpipe
from convpipe.sample import write_sample


def mapping(source: Path, out: Path) -> dict:
    return {
        "input": {"path": str(source)},
        "kernels": "scharr",
        "stride": [2, 1],
        "combine": "none",
        "output": {"path": str(out)},
        "compute": {"chunks": [16, 24]},
    }


def test_run_with_a_mapping_gives_the_bytes_of_the_command_on_the_same_yaml(tmp_path: Path) -> None:
    source = tmp_path / "in.zarr"
    write_sample(str(source), 3, 40, 50)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(mapping(source, tmp_path / "cli.zarr")))
    result = subprocess.run([CONVPIPE, "run", str(config), "-q"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = convpipe.run(mapping(source, tmp_path / "api.zarr"), progress=False)
    assert summary.shape == (3, 2, 19, 48) and summary.blocks_computed == summary.blocks_total
    cli, api = convpipe.open_output(str(tmp_path / "cli.zarr")), convpipe.open_output(str(tmp_path / "api.zarr"))
    assert cli.values.tobytes() == api.values.tobytes()
    assert api.dims == ("t", "c", "y", "x") and list(api["c"].values) == ["scharr-x", "scharr-y"]
    np.testing.assert_array_equal(api["y"].values, 1 + 2 * np.arange(19))  # window centres, stride 2
    np.testing.assert_array_equal(api["x"].values, 1 + np.arange(48))
    assert api.attrs["convpipe"]["complete"] is True


def test_plan_prints_what_validate_prints(tmp_path: Path) -> None:
    source = tmp_path / "in.zarr"
    write_sample(str(source), 2, 32, 32)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(mapping(source, tmp_path / "out.zarr")))
    result = subprocess.run([CONVPIPE, "validate", str(config)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == str(convpipe.plan(config)) + "\nok: the config is valid\n"
    assert not (tmp_path / "out.zarr").exists()


def test_a_mapping_with_a_mistake_names_the_key(tmp_path: Path) -> None:
    bad = mapping(tmp_path / "in.zarr", tmp_path / "out.zarr") | {"strides": 2}
    with pytest.raises(convpipe.ConvpipeError, match=r"<mapping>: strides: unknown key"):
        convpipe.load_config(bad)


def test_open_output_refuses_what_convpipe_did_not_write(tmp_path: Path) -> None:
    source = tmp_path / "in.zarr"
    write_sample(str(source), 2, 32, 32)
    with pytest.raises(convpipe.ConvpipeError, match="is not a convpipe output"):
        convpipe.open_output(str(source))
