"""Plans that cannot run well are refused or flagged before anything starts, with one line."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from reference import SOBEL, correlate_loop
from typer.testing import CliRunner

import convpipe
from convpipe import yamldoc
from convpipe.cli import app
from convpipe.config import parse_config
from convpipe.errors import ConfigError
from convpipe.sample import write_sample



def validate(config: Path):
    return CliRunner().invoke(app, ["validate", str(config)])


def test_a_config_with_too_many_values_is_refused_before_it_is_expanded(monkeypatch) -> None:
    monkeypatch.setattr(yamldoc, "MAX_NODES", 1000)
    weights = str([[1] * 40] * 40)
    text = f"input: {{path: in.zarr}}\nkernels:\n  - name: big\n    weights: {weights}\noutput: {{path: o.zarr}}\n"
    with pytest.raises(ConfigError, match=r"bad.yaml:4: invalid YAML: more than 1,000 values"):
        parse_config(text, "bad.yaml")


def test_a_config_file_too_large_is_refused_unread(monkeypatch) -> None:
    monkeypatch.setattr(yamldoc, "MAX_TEXT", 100)
    with pytest.raises(ConfigError, match=r"big.yaml: the config is 0.0 MiB; a config must stay under"):
        parse_config("# " + "x" * 200 + "\ninput: {path: a}\n", "big.yaml")


def test_very_many_tiny_tasks_are_flagged(tmp_path: Path) -> None:
    write_sample(str(tmp_path / "in.zarr"), 16, 256, 256)
    config = tmp_path / "run.yaml"
    config.write_text("input: {path: in.zarr}\nkernels: sobel\noutput: {path: o.zarr}\ncompute: {chunks: [3, 3]}\n")
    result = validate(config)
    assert result.exit_code == 0, result.output
    [warning] = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert "compute.chunks: 115,600 tasks of ~" in warning and "bytes each" in warning and "Dask's overhead" in warning
    assert convpipe.plan(config).warnings == (warning[len("warning: "):],)


def test_tasks_larger_than_the_memory_are_refused_at_validate(tmp_path: Path) -> None:
    zarr.create_array(str(tmp_path / "huge.zarr"), shape=(1, 200_000, 200_000), chunks=(1, 50_000, 50_000),
                      dtype="uint16")  # 80 GB, nothing stored
    config = tmp_path / "run.yaml"
    config.write_text(
        "input: {path: huge.zarr}\nkernels: sobel\noutput: {path: o.zarr}\n"
        "compute: {chunks: [200000, 200000]}\n"
    )
    result = validate(config)
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {config}:") and "compute.chunks: each task needs ~" in line
    assert "more than the" in line and "available" in line


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_workers_too_small_for_the_tasks_are_refused_before_the_output_exists(tmp_path: Path) -> None:
    port = free_port()
    dask = str(Path(sys.executable).parent / "dask")
    logs = (tmp_path / "scheduler.log").open("w"), (tmp_path / "worker.log").open("w")
    scheduler = subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                  "--dashboard-address", "127.0.0.1:0"], stdout=logs[0], stderr=logs[0])
    worker = subprocess.Popen([dask, "worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1", "--no-nanny",
                               "--memory-limit", "150MB", "--dashboard-address", "127.0.0.1:0"],
                              stdout=logs[1], stderr=logs[1])
    try:
        deadline = time.monotonic() + 60
        while "Registered to" not in (tmp_path / "worker.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        zarr.create_array(str(tmp_path / "big.zarr"), shape=(2, 8192, 8192), chunks=(1, 8192, 8192),
                          dtype="uint16", fill_value=7)
        config = tmp_path / "run.yaml"
        config.write_text(
            f"input: {{path: big.zarr}}\nkernels: sobel\noutput: {{path: o.zarr}}\n"
            f"compute: {{scheduler: 'tcp://127.0.0.1:{port}'}}\n"
        )
        result = CliRunner().invoke(app, ["run", str(config)])
        assert result.exit_code == 2, result.output
        [line] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert "compute.scheduler: the worker tcp://127.0.0.1:" in line and "memory limit of 143 MiB" in line
        assert not (tmp_path / "o.zarr").exists()
    finally:
        for proc in (worker, scheduler):
            proc.kill()
            proc.wait(timeout=30)
        for log in logs:
            log.close()


def test_a_stride_far_larger_than_the_frame_runs_at_once_and_gives_one_column(tmp_path: Path) -> None:
    """The generated code does not grow with the stride: [1, 10**6] used to hang the run."""
    write_sample(str(tmp_path / "in.zarr"), 2, 32, 40)
    summary = convpipe.run(
        {
            "input": {"path": str(tmp_path / "in.zarr")},
            "kernels": "sobel",
            "stride": [1, 10**6],
            "output": {"path": str(tmp_path / "out.zarr")},
        },
        progress=False,
    )
    assert summary.shape == (2, 2, 30, 1)
    frames = zarr.open_group(str(tmp_path / "in.zarr"))["0"][...]
    want = correlate_loop(frames[:, None], SOBEL, (1, 10**6))
    np.testing.assert_array_equal(convpipe.open_output(str(tmp_path / "out.zarr")).values, want)
