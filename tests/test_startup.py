"""Start-up: each command loads only what it needs, and a second run loads its kernel from disk.

The commands that read metadata only (``--help``, ``kernels``, ``validate``,
``inspect``) must not import Dask, Numba, distributed or the
packages Dask's arrays drag in; a run on the local schedulers must not
import distributed. Each case runs the Typer app in a fresh interpreter and
lists the heavy modules found in ``sys.modules`` afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import CONVPIPE, file_stamps, make_config, read_output, run_in_process
from reference import SOBEL, correlate_loop, magnitude

HEAVY = ("dask", "dask.array", "numba", "distributed", "xarray", "pandas", "scipy", "tifffile", "imageio")

PROBE = """
import json, sys
from convpipe.cli import app
try:
    app(sys.argv[1:], prog_name="convpipe")
except SystemExit as stop:
    code = stop.code
print(json.dumps({"code": code, "loaded": sorted(m for m in HEAVY if m in sys.modules)}))
"""


def loaded_by(folder: Path, *arguments: str | Path) -> list[str]:
    """The heavy modules a fresh process has imported after running ``convpipe ARGUMENTS`` (which must succeed)."""
    script = f"HEAVY = {HEAVY!r}\n{PROBE}"
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, arguments)], cwd=folder, capture_output=True, text=True, check=True
    )
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["code"] in (0, None), done.stderr
    return report["loaded"]


@pytest.fixture
def config(tmp_path, sample_zarr) -> Path:
    return make_config(tmp_path / "sobel.yaml", sample_zarr, tmp_path / "out.zarr")


@pytest.mark.parametrize(
    "arguments",
    [("--help",), ("kernels",), ("validate", "sobel.yaml"), ("inspect", "in.zarr"), ("inspect", "done.zarr")],
    ids=["help", "kernels", "validate", "inspect-input", "inspect-output"],
)
def test_metadata_commands_import_no_dask_numba_or_distributed(tmp_path, config, arguments):
    run_in_process(tmp_path / "in.zarr", tmp_path / "done.zarr")  # an output with completion records to inspect
    assert loaded_by(tmp_path, *arguments) == []


@pytest.mark.parametrize("scheduler", ["threads", "synchronous"])
def test_local_run_imports_no_distributed(tmp_path, sample_zarr, scheduler):
    config = make_config(tmp_path / "sobel.yaml", sample_zarr, tmp_path / "out.zarr", scheduler=scheduler)
    loaded = loaded_by(tmp_path, "run", config, "-q")
    assert "distributed" not in loaded
    assert {"dask.array", "numba"} <= set(loaded)  # the probe sees what the run imported
    frames = zarr.open_group(str(sample_zarr), mode="r")["0"][...]
    expected = magnitude(correlate_loop(frames[:, None], SOBEL, (1, 1)))
    np.testing.assert_allclose(read_output(tmp_path / "out.zarr"), expected, rtol=1e-6)


def test_second_run_loads_the_kernel_from_the_disk_cache(tmp_path, sample_zarr):
    """The first run compiles and writes Numba's cache; a second process only reads it (nothing rewritten or added)."""
    cache = tmp_path / "kernels"
    env = {**os.environ, "CONVPIPE_CACHE_DIR": str(cache)}
    config = make_config(tmp_path / "sobel.yaml", sample_zarr, tmp_path / "out.zarr")
    command = [CONVPIPE, "run", str(config), "-q", "--overwrite"]
    subprocess.run(command, env=env, check=True, capture_output=True)
    compiled = file_stamps(cache)
    assert any(name.endswith(".nbi") for name in compiled) and any(name.endswith(".nbc") for name in compiled)
    subprocess.run(command, env=env, check=True, capture_output=True)
    assert file_stamps(cache) == compiled



COUNTS = """
import os, sys
if len(sys.argv) > 1:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
from convpipe.resources import local_cpus
from dask.system import CPU_COUNT
print(local_cpus(), CPU_COUNT)
"""


@pytest.mark.parametrize("masked", [False, True], ids=["all-cpus", "one-cpu-mask"])
def test_planner_counts_cpus_as_dask_does(masked):
    """The plan's thread count (counted without importing Dask) is the one the local schedulers use."""
    command = [sys.executable, "-c", COUNTS] + (["mask"] if masked else [])
    ours, dasks = subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()
    assert ours == dasks
    if masked:
        assert ours == "1"


def test_startup_benchmark_runs_and_checks_the_run_output(tmp_path):
    """``benchmarks/startup.py`` times every row and checks the run's output against its reference."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "startup.py"
    report = tmp_path / "startup.json"
    subprocess.run([sys.executable, str(script), "--repeats", "1", "--json", str(report)], check=True, capture_output=True)
    record = json.loads(report.read_text())
    assert {"convpipe validate configs/sobel.yaml", "convpipe run configs/sobel.yaml --overwrite"} <= set(record["median"])
    assert all(len(values) == 1 and values[0] > 0 for values in record["seconds"].values())
    assert record["worst_relative_error"] < 1e-5
